"""Fragments as the codec sees them: a first fragment is not a lying datagram."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw, raw

from pktchain.packet import parse_frame


def test_a_first_udp_fragment_is_consistent_though_its_length_covers_the_datagram() -> None:
    datagram = IP(src="10.0.0.10", dst="198.51.100.10") / UDP(sport=40080, dport=7000)
    first, second = fragment(datagram / Raw(bytes(1283)), fragsize=1256)
    info = parse_frame(raw(Ether() / first))
    assert info.error is None
    assert info.fragment and (info.sport, info.dport) == (40080, 7000)
    later = parse_frame(raw(Ether() / second))
    assert later.error is None and later.fragment and later.l4 == -1


def test_an_unfragmented_datagram_whose_udp_length_lies_is_still_malformed() -> None:
    lying = bytearray(raw(Ether() / IP() / UDP(sport=1, dport=2) / Raw(b"x" * 20)))
    lying[14 + 20 + 4 : 14 + 20 + 6] = (400).to_bytes(2, "big")
    assert parse_frame(bytes(lying)).error is not None
    assert parse_frame(bytes(lying)).error.value == "udp-length"
