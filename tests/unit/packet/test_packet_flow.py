"""Flow keys: the 5-tuple, its reverse, and the direction-free canonical form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet

from pktchain.packet import (
    Ethernet,
    FlowKey,
    Icmp,
    IcmpType,
    Icmpv6,
    Icmpv6Type,
    Ipv4,
    Ipv6,
    Udp,
    build,
    flow_key,
    format_ip,
    ip_bytes,
    parse_frame,
)

# Explicit MACs: scapy would otherwise look up (and maybe ARP for) the destination.
MACS = {"dst": "02:00:00:00:00:02", "src": "02:00:00:00:00:01"}
EXAMPLES = settings(max_examples=150, deadline=None)
u16 = st.integers(0, 0xFFFF)


def key_of(pkt: Packet) -> FlowKey | None:
    return flow_key(parse_frame(bytes(pkt)))


@st.composite
def conversations(draw: st.DrawFn) -> tuple[Packet, Packet, tuple[str, str, int, int, int]]:
    """A packet and its reply (scapy-built, maybe tagged), and the request's expected 5-tuple."""
    version = draw(st.sampled_from([4, 6]))
    width = 4 if version == 4 else 16
    a, b = (format_ip(draw(st.binary(min_size=width, max_size=width))) for _ in range(2))
    proto = draw(st.sampled_from(["tcp", "udp", "icmp"]))
    sport, dport = draw(u16), draw(u16)
    tags: list[Packet] = draw(
        st.sampled_from([[], [Dot1Q(vlan=10)], [Dot1AD(vlan=20), Dot1Q(vlan=30)]])
    )

    def frame(src: str, dst: str, upper: Packet) -> Packet:
        ip = IP(src=src, dst=dst) if version == 4 else IPv6(src=src, dst=dst)
        out = Ether(**MACS)
        for tag in tags:
            out = out / tag.copy()
        return out / ip / upper

    if proto == "tcp":
        return (
            frame(a, b, TCP(sport=sport, dport=dport)),
            frame(b, a, TCP(sport=dport, dport=sport, flags="SA")),
            (a, b, 6, sport, dport),
        )
    if proto == "udp":
        return (
            frame(a, b, UDP(sport=sport, dport=dport)),
            frame(b, a, UDP(sport=dport, dport=sport)),
            (a, b, 17, sport, dport),
        )
    if version == 4:
        return (
            frame(a, b, ICMP(type=8, id=sport, seq=dport)),
            frame(b, a, ICMP(type=0, id=sport, seq=dport)),
            (a, b, 1, sport, sport),
        )
    return (
        frame(a, b, ICMPv6EchoRequest(id=sport, seq=dport)),
        frame(b, a, ICMPv6EchoReply(id=sport, seq=dport)),
        (a, b, 58, sport, sport),
    )


@EXAMPLES
@given(conversations())
def test_key_reverse_and_canonical(
    case: tuple[Packet, Packet, tuple[str, str, int, int, int]],
) -> None:
    request, reply, (src, dst, proto, sport, dport) = case
    key = key_of(request)
    back = key_of(reply)
    assert key == FlowKey(ip_bytes(src), ip_bytes(dst), proto, sport, dport)
    assert back == key.reverse()
    assert key.reverse().reverse() == key
    assert key.canonical() == back.canonical()
    assert key.canonical() in (key, back)
    assert len({key.canonical(), back.canonical()}) == 1  # hashable, equal hashes
    assert key.ip_version == (4 if "." in src else 6)


def test_icmp_echo_keys_are_told_apart_by_identifier_not_sequence() -> None:
    def echo(ident: int, seq: int) -> FlowKey | None:
        return flow_key(
            parse_frame(build(Ethernet(), Ipv4(), Icmp(identifier=ident, sequence=seq)))
        )

    assert echo(7, 1) == echo(7, 2)
    assert echo(7, 1) != echo(8, 1)
    v6 = flow_key(
        parse_frame(build(Ethernet(), Ipv6(), Icmpv6(Icmpv6Type.ECHO_REPLY, identifier=5)))
    )
    assert v6 is not None
    assert (v6.proto, v6.sport, v6.dport) == (58, 5, 5)


def test_protocols_without_ports_and_non_ip() -> None:
    error = build(Ethernet(), Ipv4(), Icmp(IcmpType.DEST_UNREACHABLE, identifier=9), bytes(28))
    assert flow_key(parse_frame(error)) == FlowKey(
        ip_bytes("10.0.0.1"), ip_bytes("10.0.0.2"), 1, 0, 0
    )
    gre = build(Ethernet(), Ipv4(proto=47), bytes(8))
    assert flow_key(parse_frame(gre)) == FlowKey(
        ip_bytes("10.0.0.1"), ip_bytes("10.0.0.2"), 47, 0, 0
    )
    assert (
        key_of(Ether(**MACS) / ARP(hwsrc="02:00:00:00:00:01", psrc="192.0.2.1", pdst="192.0.2.2"))
        is None
    )
    assert flow_key(parse_frame(build(Ethernet(), Ipv4(), Udp(length=3)))) is None  # malformed


def test_key_is_a_plain_tuple_and_prints() -> None:
    key = flow_key(parse_frame(build(Ethernet(), Ipv6("2001:db8::1", "2001:db8::2"), Udp(5, 6))))
    assert key is not None
    assert tuple(key) == (ip_bytes("2001:db8::1"), ip_bytes("2001:db8::2"), 17, 5, 6)
    assert str(key) == "[2001:db8::1]:5 -> [2001:db8::2]:6 proto 17"
    assert {key: 1}[FlowKey(*key)] == 1
