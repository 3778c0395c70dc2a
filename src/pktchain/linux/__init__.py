"""The Linux kernel interfaces pktchain uses, each in one place.

- :mod:`pktchain.linux.netns`: entering a network namespace, one thread at a time.
- :mod:`pktchain.linux.tuntap`: creating TUN and TAP devices (``/dev/net/tun``).

These modules use the standard library only, and nothing else in pktchain, so
that every layer above (the node, the tunnel, the lab, the pipes) can use them;
none of those enters a namespace or opens a TUN device its own way.
"""
