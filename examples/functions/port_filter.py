"""Example user function: drop TCP and UDP packets to some destination ports, forward the
rest with a flow lease (the fast path carries their flows). Load it as ``port_filter:PortFilter``
with this directory on the Python path (README.md here walks through it)."""

from dataclasses import dataclass, field

from pktchain.functions.schema import check
from pktchain.functions.sdk import FlowLease, Function, Packet, Result, drop, forward


def not_ports(ports: list[int]) -> str | None:
    return next((f"{p} is not a port (1 to 65535)" for p in ports if not 0 < p < 65536), None)


@dataclass(frozen=True)
class PortFilterConfig:
    ports: list[int] = field(default_factory=list, metadata=check(test=not_ports))


class PortFilter(Function):
    Config = PortFilterConfig
    COUNTERS = ("blocked-port", "malformed")

    def process(self, packet: Packet, now: float) -> Result:
        blocked = packet.proto in (6, 17) and packet.dport in self.config.ports  # TCP, UDP
        if packet.ok and not blocked:
            return forward(lease=FlowLease())
        reason = "blocked-port" if packet.ok else "malformed"
        self.counters[reason] += 1
        return drop(reason)
