"""Keep one shard of the flows: N filter instances, each keeping its own, share the load.

/dev/stdpkt balanced load with ``tee``: every instance receives every frame and
takes its part. ``pktchain fn shard:Shard index=I of=N`` is that part: it
forwards the frames of the flows whose hash falls to shard I of N and drops the
others (counted as ``other-shard``). The hash is of the two endpoints (address
and port) sorted, and the protocol, so both directions of a flow fall to the
same shard and a stateful function behind it sees whole connections. Fragments
are hashed without ports (a later fragment carries none), so a datagram's
fragments stay together. Frames that are not IP (ARP) go to shard 0 only.

    PYTHONPATH=examples/pipes pktchain fn shard:Shard index=0 of=2 < in.pcap > out.pcap
"""

from dataclasses import dataclass, field
from zlib import crc32

from pktchain.functions.sdk.schema import check
from pktchain.functions.sdk import FlowLeases, Function, Packet, Result, drop, forward


@dataclass(frozen=True)
class ShardConfig:
    index: int = field(default=0, metadata=check(minimum=0))
    of: int = field(default=1, metadata=check(minimum=1))

    def __post_init__(self) -> None:
        if self.index >= self.of:
            raise ValueError(f"index must be below of ({self.of}), got {self.index}")


def shard_of(packet: Packet, shards: int) -> int:
    """The shard of `packet`'s flow, the same both ways; 0 for frames that are not IP."""
    info = packet.info
    if not info.ip:
        return 0
    ports = (0, 0) if info.fragment else (info.sport, info.dport)
    ends = sorted([info.src + ports[0].to_bytes(2, "big"), info.dst + ports[1].to_bytes(2, "big")])
    return crc32(b"".join(ends) + bytes([info.proto & 0xFF])) % shards


class Shard(Function):
    Config = ShardConfig
    COUNTERS = ("kept", "other-shard")

    def __init__(self, config: ShardConfig | None = None) -> None:
        super().__init__(config)
        self.leases = FlowLeases()  # a flow's shard never changes: lease it in a node

    def process(self, packet: Packet, now: float) -> Result:
        if shard_of(packet, self.config.of) != self.config.index:
            return drop("other-shard")  # counted by the driver
        self.counters["kept"] += 1
        return forward(lease=self.leases.lease((packet.iface, packet.key)))
