"""A function for the node tests, loaded by import path (fnlib.passes:CountingPass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pktchain.functions.sdk import FlowLease, Function, Packet, Result, forward
from pktchain.functions.sdk.schema import check


@dataclass(frozen=True)
class CountingPassConfig:
    label: str = "pass"
    ttl_floor: int = field(default=0, metadata=check(minimum=0, maximum=255))


class CountingPass(Function):
    """Forwards everything to the other interface, one lease per flow; counts calls."""

    Config = CountingPassConfig
    COUNTERS = ("calls",)
    LIVE = True

    def __init__(self, config: CountingPassConfig | None = None) -> None:
        super().__init__(config)
        self.leases: dict[tuple[str, tuple[bytes, bytes, int, int, int]], FlowLease] = {}

    def process(self, packet: Packet, now: float) -> Result:
        self.counters["calls"] += 1
        lease = self.leases.setdefault((packet.iface, packet.key), FlowLease())
        return forward(lease=lease)

    def apply_config(self, config: CountingPassConfig) -> None:
        super().apply_config(config)
        for lease in self.leases.values():
            lease.revoke()
        self.leases.clear()

    def status(self) -> dict[str, object]:
        status = super().status()
        status["label"] = self.config.label
        status["cached_packets"] = sum(lease.packets for lease in self.leases.values())
        return status
