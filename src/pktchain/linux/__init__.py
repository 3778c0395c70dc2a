"""The Linux kernel interfaces pktchain uses, each in one place.

- :mod:`pktchain.linux.netns`: entering a network namespace, one thread at a time.
- :mod:`pktchain.linux.tuntap`: creating TUN and TAP devices (``/dev/net/tun``).
- :mod:`pktchain.linux.veth`: a host's NIC as a veth pair whose other end is the node's.
- :mod:`pktchain.linux.sockets`: how pktchain's TCP and UDP sockets are set up.
- :mod:`pktchain.linux.packet`: the options of packet (``AF_PACKET``) sockets.
- :mod:`pktchain.linux.mmsg`: many datagrams per system call (``recvmmsg``, ``sendmmsg``).
- :mod:`pktchain.linux.bpf`: eBPF objects (libbpf), their maps, test runs, tc attachment.

These modules use the standard library only (and pyroute2's netlink for tc,
veth pairs and ethtool), and nothing else in pktchain, so that every layer
above (the node, the tunnel, the lab, the pipes) can use them; none of those
opens a namespace, a TUN device, a listening socket or a BPF object its own
way.
"""
