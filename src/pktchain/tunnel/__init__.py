"""``pktchain tunnel``: a TUN tunnel compatible with TunConnector, for many clients.

Each end creates its TUN interface itself, gives it its address, and joins it
to the far end over a TCP connection (or UDP datagrams). On TCP the stream is
the original tool's: a 2-byte big-endian length, then one raw IP packet. By
default the two ends first prove to each other that they hold the same key
(`pktchain.tunnel.auth`); ``--no-auth`` leaves that out, and the bytes on the
wire are then exactly the original's. A server takes many clients and routes
between them by inner destination address; a client reconnects with backoff.

The protocol parts are sans-IO and tested without sockets: `wire` (framing),
`auth` (the handshake), `session` (one connection's protocol), `switch`
(the server's routing). `device`, `stream`, `server`, `client`, `udp` and
`run` move the bytes, on the event loop of :mod:`pktchain.eventloop`.
docs/tunnel.md is the user's description.
"""
