"""The pktchain node: ports, the per-packet datapath and the process around them."""
