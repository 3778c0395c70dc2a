"""The messenger: the control channel through which a cloud controller drives a router.

As in the virtual-routers thesis (chapter 4), the controller tells the router about its NICs
(MAC, IP, subnet, gateway, network id), about host NICs joining a network and
about NICs removed, and the router applies them at run time and answers. Here
the messages are JSON over TCP, each framed by its length and authenticated
with HMAC-SHA256 under a shared secret, with replay protection; every field is
checked before anything is applied (docs/messenger.md).

- :mod:`pktchain.messenger.wire`: frames, canonical encoding, MACs, replay guard.
- :mod:`pktchain.messenger.ops`: the operations, their arguments and dispatch.
- :mod:`pktchain.messenger.connection`: one connection's protocol, without I/O.
- :mod:`pktchain.messenger.server`: :class:`MessengerServer`, on an event loop.
- :mod:`pktchain.messenger.client`: :class:`MessengerClient`.
- :mod:`pktchain.messenger.cli`: ``pktchain messenger send``.

This module imports nothing, so that the command line starts fast.
"""
