"""Packets described by FIELD=VALUE words, frames read back as fields."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from pktchain.packet.describe import (
    DescriptionError,
    FrameFilter,
    PacketSpec,
    header_diff,
    header_fields,
)
from pktchain.packet.parse import parse_frame

MACS = {"eth_src": bytes.fromhex("020000000001"), "eth_dst": bytes.fromhex("020000000002")}


def test_a_tcp_description_builds_the_frame_scapy_decodes() -> None:
    words = ["proto=tcp", "src=10.0.0.1", "dst=10.0.0.10", "sport=40000", "dport=80"]
    spec = PacketSpec.parse(words)
    frame = Ether(spec.frame(**MACS))
    assert frame[IP].src == "10.0.0.1" and frame[IP].dst == "10.0.0.10"
    assert (frame[TCP].sport, frame[TCP].dport, str(frame[TCP].flags)) == (40000, 80, "S")
    assert frame[IP].ttl == 64


def test_defaults_are_a_new_connection_s_first_packet() -> None:
    assert Ether(PacketSpec.parse(["dst=10.0.0.2", "src=10.0.0.1"]).frame(**MACS))[ICMP].type == 8
    assert PacketSpec.parse(["dst=10.0.0.2", "dport=443"]).proto == 6
    udp = Ether(PacketSpec.parse(["dst=10.0.0.2", "src=10.0.0.1", "proto=udp"]).frame(**MACS))
    assert udp[UDP].dport == 53


def test_aliases_ipv6_vlan_flags_and_payload() -> None:
    spec = PacketSpec.parse(
        [
            "ip6.dst=fd00::2",
            "ip6.src=fd00::1",
            "tcp.dport=8080",
            "flags=SA",
            "vlan=7",
            "ttl=3",
            "payload=GET /\\r\\n",
        ]
    )
    frame = Ether(spec.frame(**MACS))
    assert frame[Dot1Q].vlan == 7
    assert frame[IPv6].hlim == 3
    assert str(frame[TCP].flags) == "SA"
    assert bytes(frame[TCP].payload) == b"GET /\r\n"


def test_every_wrong_field_is_named() -> None:
    with pytest.raises(DescriptionError) as caught:
        PacketSpec.parse(["dst=1.2.3", "bogus=1", "flags=Z", "sport=99999", "icmp.type=3"])
    fields = [field for field, _message in caught.value.errors]
    assert fields == ["bogus", "ip.dst", "l4.sport", "tcp.flags", "icmp.type"]
    with pytest.raises(DescriptionError, match=r"ip\.dst: required"):
        PacketSpec.parse(["proto=tcp"])
    with pytest.raises(DescriptionError, match=r"ip\.src: IPv6, but ip\.dst is IPv4"):
        PacketSpec.parse(["dst=10.0.0.1", "src=fd00::1"])
    with pytest.raises(DescriptionError, match="expected FIELD=VALUE"):
        PacketSpec.parse(["dst"])


def test_header_diff_names_what_changed() -> None:
    before = header_fields(
        PacketSpec.parse(["src=10.0.0.1", "dst=10.0.0.10", "sport=40000"]).frame(**MACS)
    )
    after = header_fields(
        PacketSpec.parse(["src=198.51.100.2", "dst=10.0.0.10", "sport=61000"]).frame(**MACS)
    )
    assert header_diff(before, after) == [
        {"field": "ip.src", "from": "10.0.0.1", "to": "198.51.100.2"},
        {"field": "tcp.sport", "from": "40000", "to": "61000"},
    ]


def test_a_filter_matches_the_fields_given_only() -> None:
    frame = PacketSpec.parse(["src=10.0.0.1", "dst=10.0.0.10", "dport=80"]).frame(**MACS)
    info = parse_frame(frame, 0)
    assert FrameFilter.parse(["dst=10.0.0.10"]).matches(frame, info)
    assert FrameFilter.parse(["proto=tcp", "dport=80"]).matches(frame, info)
    assert not FrameFilter.parse(["dport=81"]).matches(frame, info)
    assert not FrameFilter.parse(["proto=icmp"]).matches(frame, info)
    assert FrameFilter.parse([]).matches(frame, info)
    with pytest.raises(DescriptionError, match="payload"):
        FrameFilter.parse(["payload=x"])
