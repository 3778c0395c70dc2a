"""A do-nothing function for bench/chain_fastpath.py: the cost of a hop, nothing else.

Loaded by the node from this directory as ``chain_functions:Pass``: it forwards
every packet to its other interface with one flow lease per flow, so after a
flow's second packet the fast path carries it and the function is not called.
"""

from __future__ import annotations

from pktchain.functions.sdk import FlowLease, Function, Packet, Result, forward


class Pass(Function):
    KIND = "pass"

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.leases: dict[tuple[str, tuple[bytes, bytes, int, int, int]], FlowLease] = {}

    def process(self, packet: Packet, now: float) -> Result:
        lease = self.leases.get((packet.iface, packet.key))
        if lease is None or not lease.valid:
            lease = self.leases[packet.iface, packet.key] = FlowLease()
        return forward(lease=lease)
