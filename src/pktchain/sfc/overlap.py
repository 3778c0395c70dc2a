"""When two flow classifiers can match the same packet.

networking-sfc decides conflicts field by field (``flowclassifier_db.py``,
``flowclassifier_basic_conflict`` and ``flowclassifier_conflict``): two
classifiers conflict when every field overlaps, a field left unset (None)
overlapping anything. `fields_overlap` is the basic test (ethertype, protocol,
prefixes, port ranges); `classifiers_conflict` adds the logical source and
destination ports, as networking-sfc does when a classifier is created.

Between chains pktchain compares what the node actually matches: a `Match` is
the traffic one classifier steers in one direction, entering by one port. A
symmetric chain also steers the replies, which enter by the classifier's
logical destination port with source and destination swapped
(`Match.reverse`). Two chains conflict when a match of one overlaps a match of
the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from pktchain.sfc.resources import (
    Ethertype,
    FlowClassifier,
    FrozenMap,
    IPNetwork,
    Protocol,
)


def _either_unset_or_equal(first: object, second: object) -> bool:
    return first is None or second is None or first == second


def _networks_overlap(first: IPNetwork | None, second: IPNetwork | None) -> bool:
    if first is None or second is None:
        return True
    return first.version == second.version and first.overlaps(second)


def _ranges_overlap(first: tuple[int, int], second: tuple[int, int]) -> bool:
    return first[0] <= second[1] and second[0] <= first[1]


def _l7_overlap(first: FrozenMap[str, str], second: FrozenMap[str, str]) -> bool:
    # Traffic cannot match two different values of one L7 key (one Host, one SNI).
    return all(first[key] == second[key] for key in first.keys() & second.keys())


@dataclass(frozen=True)
class Match:
    """The traffic a classifier steers into a chain in one direction."""

    in_port: str | None
    ethertype: Ethertype
    protocol: Protocol | None
    source: IPNetwork | None
    destination: IPNetwork | None
    source_ports: tuple[int, int]
    destination_ports: tuple[int, int]
    l7: FrozenMap[str, str]

    @classmethod
    def forward(cls, fc: FlowClassifier) -> Match:
        """Packets entering by the logical source port."""
        return cls(
            in_port=fc.logical_source_port,
            ethertype=fc.ethertype,
            protocol=fc.protocol,
            source=fc.source_network,
            destination=fc.destination_network,
            source_ports=fc.source_ports,
            destination_ports=fc.destination_ports,
            l7=fc.l7_parameters,
        )

    @classmethod
    def reverse(cls, fc: FlowClassifier) -> Match:
        """Replies, entering by the logical destination port (symmetric chains)."""
        return cls(
            in_port=fc.logical_destination_port,
            ethertype=fc.ethertype,
            protocol=fc.protocol,
            source=fc.destination_network,
            destination=fc.source_network,
            source_ports=fc.destination_ports,
            destination_ports=fc.source_ports,
            l7=fc.l7_parameters,
        )

    def overlaps(self, other: Match) -> bool:
        return _either_unset_or_equal(self.in_port, other.in_port) and self.headers_overlap(other)

    def headers_overlap(self, other: Match) -> bool:
        """Overlap of the packet fields alone, whatever port the packets enter by."""
        return (
            self.ethertype is other.ethertype
            and _either_unset_or_equal(self.protocol, other.protocol)
            and _networks_overlap(self.source, other.source)
            and _networks_overlap(self.destination, other.destination)
            and _ranges_overlap(self.source_ports, other.source_ports)
            and _ranges_overlap(self.destination_ports, other.destination_ports)
            and _l7_overlap(self.l7, other.l7)
        )


def fields_overlap(first: FlowClassifier, second: FlowClassifier) -> bool:
    """networking-sfc's basic conflict: the header fields alone overlap."""
    return Match.forward(first).headers_overlap(Match.forward(second))


def classifiers_conflict(first: FlowClassifier, second: FlowClassifier) -> bool:
    """networking-sfc's full conflict: header fields and both logical ports overlap."""
    return (
        fields_overlap(first, second)
        and _either_unset_or_equal(first.logical_source_port, second.logical_source_port)
        and _either_unset_or_equal(first.logical_destination_port, second.logical_destination_port)
    )
