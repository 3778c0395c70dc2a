"""The steering plan: what the chaining model compiles to, in the dataplane's terms.

`pktchain.sfc.compile.compile_plan` turns the model's port chains, groups,
pairs and classifiers into a `SteeringPlan` with node port names in place of
model ids; the node's steering (`pktchain.node.dataplane.steering`) applies it
to live traffic. The plan is plain frozen data, so it can be compared, logged
and built in tests without a node.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from pktchain.packet.nsh import path_tag
from pktchain.sfc.resources import LbField

if TYPE_CHECKING:
    from pktchain.packet.parse import FrameInfo

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PathDirection(Enum):
    FORWARD = "forward"
    REVERSE = "reverse"


def pair_tag(pair_id: str) -> int:
    """The 32-bit tag that names a port pair in NSH path metadata (docs/nsh.md):
    the first four bytes of its UUID, or the CRC-32 of an id that is none."""
    try:
        return path_tag(pair_id)
    except ValueError:
        return zlib.crc32(pair_id.encode())


@dataclass(frozen=True)
class PairPlan:
    """A port pair: a service function reached on `ingress`, returning on `egress`.

    `node` is empty for a pair on this node; otherwise the pair sits on that
    node of the cluster, its ports are that node's, and traffic reaches it in
    NSH over the underlay.
    """

    id: str
    name: str
    ingress: str  # node port names
    egress: str
    weight: int = 1
    node: str = ""
    nsh: bool = False
    """An NSH-aware function (correlation "nsh"): it gets and gives back the
    frame in NSH over Ethernet, and decrements the SI itself."""

    @property
    def tag(self) -> int:
        return pair_tag(self.id)


@dataclass(frozen=True)
class GroupPlan:
    id: str
    name: str
    pairs: tuple[PairPlan, ...]
    lb_fields: tuple[LbField, ...] = ()
    tap: bool = False


@dataclass(frozen=True)
class ClassifierPlan:
    """A flow classifier: every field that is set must match."""

    id: str
    name: str
    ip_version: int = 4
    protocol: int | None = None
    source_prefix: IpNetwork | None = None
    destination_prefix: IpNetwork | None = None
    source_ports: tuple[int, int] | None = None
    destination_ports: tuple[int, int] | None = None
    logical_source_port: str | None = None
    logical_destination_port: str | None = None
    l7: tuple[tuple[str, str], ...] = ()
    """(key, value) the flow's first payload must carry: ``http_host``, ``tls_sni``."""

    def matches(self, info: FrameInfo) -> bool:
        """Whether the parsed packet falls in this classifier (ports aside)."""
        return self.mismatch(info) is None

    def mismatch(self, info: FrameInfo) -> str | None:
        """Which field the packet fails, in words (a trace shows it); None when it matches."""
        if info.ip_version != self.ip_version:
            return f"ethertype: IPv{self.ip_version}, the packet is IPv{info.ip_version or '-'}"
        if self.protocol is not None and info.proto != self.protocol:
            return f"protocol: {self.protocol}, the packet's is {info.proto}"
        if self.source_prefix is not None and not _in_prefix(info.src, self.source_prefix):
            return f"source_ip_prefix: {self.source_prefix} does not hold {_address(info.src)}"
        if self.destination_prefix is not None and not _in_prefix(
            info.dst, self.destination_prefix
        ):
            return (
                f"destination_ip_prefix: {self.destination_prefix} "
                f"does not hold {_address(info.dst)}"
            )
        if self.source_ports is not None and not (
            self.source_ports[0] <= info.sport <= self.source_ports[1]
        ):
            low, high = self.source_ports
            return f"source_port_range: {low}-{high} does not hold {info.sport}"
        if self.destination_ports is not None and not (
            self.destination_ports[0] <= info.dport <= self.destination_ports[1]
        ):
            low, high = self.destination_ports
            return f"destination_port_range: {low}-{high} does not hold {info.dport}"
        return None


def _address(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed)) if packed else "-"


@dataclass(frozen=True)
class ChainPlan:
    id: str
    name: str
    spi: int
    groups: tuple[GroupPlan, ...]
    classifiers: tuple[ClassifierPlan, ...] = ()
    symmetric: bool = False
    successors: tuple[str, ...] = ()
    """Chains (by id) that traffic leaving this chain continues into (service graph)."""


@dataclass(frozen=True)
class SteeringPlan:
    chains: tuple[ChainPlan, ...] = ()
    memberships: frozenset[tuple[str, str]] | None = None
    """Every (port pair group id, port pair id) of the model, chained or not; a
    running flow keeps its path while its pairs are still in their groups.
    None: just the groups of `chains`."""

    def members(self) -> frozenset[tuple[str, str]]:
        if self.memberships is not None:
            return self.memberships
        return frozenset(
            (group.id, pair.id)
            for chain in self.chains
            for group in chain.groups
            for pair in group.pairs
        )

    def chain(self, chain_id: str) -> ChainPlan | None:
        for chain in self.chains:
            if chain.id == chain_id:
                return chain
        return None

    def port_names(self) -> set[str]:
        """Every port of this node the plan sends to, receives from, or classifies on."""
        names: set[str] = set()
        for chain in self.chains:
            for group in chain.groups:
                for pair in group.pairs:
                    if not pair.node:
                        names.update((pair.ingress, pair.egress))
            for classifier in chain.classifiers:
                names.update(
                    p
                    for p in (classifier.logical_source_port, classifier.logical_destination_port)
                    if p is not None
                )
        return names


def _in_prefix(address: bytes, prefix: IpNetwork) -> bool:
    return (int.from_bytes(address, "big") & int(prefix.netmask)) == int(prefix.network_address)
