"""The node's dataplane: ports, the per-packet path, the fused fast path, steering, switching.

Everything a frame touches between the port it arrives on and the port it
leaves by lives here; the daemon around it (process, control socket, reports,
configuration files) is the rest of ``pktchain.node``.
"""
