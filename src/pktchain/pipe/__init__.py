"""Packet pipes: network interfaces as pcap or ASCII packet streams on stdin/stdout.

The /dev/stdpkt idea: a network function is a Unix filter, a chain
is a shell pipeline. ``pktchain pipe read`` turns an interface into a stream,
``pktchain pipe write`` turns a stream back into frames on an interface, and
anything in between (awk, sed, tee, a pktchain function) edits the stream.

- :mod:`~pktchain.packet.streams`: the two stream formats, sans-IO (decoders fed
  bytes, encoders returning bytes, format detection);
- :mod:`~pktchain.pipe.stream`: frames from and to file descriptors
  (:class:`~pktchain.pipe.stream.FrameReader`, :class:`~pktchain.pipe.stream.FrameWriter`,
  :func:`~pktchain.pipe.stream.run_filter` for filters);
- :mod:`~pktchain.pipe.iface`: AF_PACKET capture and injection;
- :mod:`~pktchain.pipe.pumps`: interface to stream and stream to interface;
- :mod:`~pktchain.pipe.cli`: the ``pktchain pipe`` commands.

docs/pipes.md describes the formats exactly and how pipes behave. This package
imports nothing itself, so that ``pktchain pipe`` starts fast.
"""
