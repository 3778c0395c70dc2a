"""Example user function (see README.md): drop TCP and UDP packets to one port, forward the rest."""

from dataclasses import dataclass, field

from pktchain.functions.sdk.schema import check
from pktchain.functions.sdk import FlowLeases, Function, Packet, Result, drop, forward


@dataclass(frozen=True)
class PortFilterConfig:
    port: int = field(default=23, metadata=check(minimum=1, maximum=65535))


class PortFilter(Function):
    Config = PortFilterConfig
    COUNTERS = ("blocked-port", "malformed")

    def __init__(self, config: PortFilterConfig | None = None) -> None:
        super().__init__(config)
        self.leases = FlowLeases(limit=65536)  # one lease per flow, bounded: see README.md

    def process(self, packet: Packet, now: float) -> Result:
        blocked = packet.proto in (6, 17) and packet.dport == self.config.port  # TCP, UDP
        if packet.ok and not blocked:
            return forward(lease=self.leases.lease((packet.iface, packet.key)))
        return drop("malformed" if not packet.ok else "blocked-port")  # counted by the driver
