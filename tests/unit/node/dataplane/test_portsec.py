"""Port security's per-packet check: what a secured port may send, and what not.

Frames are built with scapy (an oracle independent of pktchain's codecs),
parsed as the datapath parses them, and given to `PortGuard.check`; the
policy comes from a Neutron port through `pktchain.sfc.security`, as the node
makes it. Arbitrary bytes never make the check raise.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6_Advertise, DHCP6_Solicit
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6MLReport2,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    IPv6,
    IPv6ExtHdrFragment,
)
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Packet, Raw

from pktchain.node.dataplane.portsec import PortGuard, Spoofed, fusable, link_local
from pktchain.packet.parse import FrameInfo, parse_frame
from pktchain.sfc.resources import AddressPair, FixedIp, Port
from pktchain.sfc.security import PortSecurity, exempt_ports, port_security

VNET = bytes(10)
MAC, OTHER_MAC, PAIR_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:0c"
IP4, IP6 = "10.0.0.10", "fd00::10"
LLA = "fe80::ff:fe00:a"  # fe80:: + modified EUI-64 of MAC
BCAST = "ff:ff:ff:ff:ff:ff"


def neutron_port(
    *pairs: AddressPair, enabled: bool = True, ips: tuple[str, ...] = (IP4, IP6)
) -> Port:
    return Port(
        id="port-1",
        mac_address=MAC,
        fixed_ips=tuple(FixedIp(ip) for ip in ips),
        port_security_enabled=enabled,
        allowed_address_pairs=pairs,
    )


def guard(*pairs: AddressPair) -> PortGuard:
    security = port_security(neutron_port(*pairs))
    assert security is not None
    return PortGuard(security)


def check(port_guard: PortGuard, packet: Packet) -> str | None:
    frame = VNET + bytes(packet)
    info = parse_frame(frame, len(VNET))
    assert info.error is None, info.error
    return port_guard.check(frame, info)


def eth(src: str = MAC, dst: str = "02:00:00:00:00:01") -> Ether:
    return Ether(src=src, dst=dst)


def test_the_link_local_address_is_the_modified_eui64_of_the_mac() -> None:
    assert (
        link_local(bytes.fromhex("02000000000a")).hex() == "fe80000000000000" + "000000fffe00000a"
    )
    assert link_local(bytes.fromhex("525400123456")).hex().endswith("505400fffe123456")


@pytest.mark.parametrize(
    "packet",
    [
        eth() / IP(src=IP4, dst="10.0.0.1") / TCP(sport=40000, dport=80),
        eth() / IP(src=IP4, dst="10.0.0.1") / UDP(sport=5000, dport=53),
        eth() / IP(src=IP4, dst="198.51.100.1") / ICMP(),
        eth() / IP(src=IP4, dst="10.0.0.1", flags="MF") / UDP(sport=1, dport=2) / Raw(b"x" * 16),
        eth() / Dot1Q(vlan=10) / IP(src=IP4, dst="10.0.0.1") / UDP(sport=1, dport=2),
        eth() / IPv6(src=IP6, dst="fd00::1") / TCP(sport=40000, dport=80),
        eth() / IPv6(src=LLA, dst="ff02::2") / ICMPv6ND_RS(),
        eth() / IPv6(src=LLA, dst="fe80::1") / ICMPv6EchoRequest(id=7),
        eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6ND_NA(tgt=IP6),
        eth() / IPv6(src=LLA, dst="fe80::1") / ICMPv6ND_NA(tgt=LLA),
        eth() / IPv6(src=IP6, dst="fd00::1") / IPv6ExtHdrFragment(offset=8) / Raw(b"x" * 16),
        # What a host sends before it has an address.
        eth(dst=BCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex("02000000000a"))
        / DHCP(options=[("message-type", "discover"), "end"]),
        eth(dst="33:33:ff:00:00:10") / IPv6(src="::", dst="ff02::1:ff00:10") / ICMPv6ND_NS(tgt=IP6),
        eth(dst="33:33:00:00:00:16") / IPv6(src="::", dst="ff02::16") / ICMPv6MLReport2(),
        eth() / IPv6(src=LLA, dst="ff02::1:2") / UDP(sport=546, dport=547) / DHCP6_Solicit(),
        # ARP as itself: request, reply, announcement, RFC 5227 probe.
        eth(dst=BCAST) / ARP(op=1, hwsrc=MAC, psrc=IP4, pdst="10.0.0.1"),
        eth() / ARP(op=2, hwsrc=MAC, psrc=IP4, hwdst="02:00:00:00:00:01", pdst="10.0.0.1"),
        eth(dst=BCAST) / ARP(op=1, hwsrc=MAC, psrc=IP4, pdst=IP4),
        eth(dst=BCAST) / ARP(op=1, hwsrc=MAC, psrc="0.0.0.0", pdst=IP4),
    ],
    ids=lambda p: p.summary(),
)
def test_a_port_may_send_as_itself(packet: Packet) -> None:
    assert check(guard(), packet) is None


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (eth(src=OTHER_MAC) / IP(src=IP4, dst="10.0.0.1") / UDP(), Spoofed.MAC),
        (eth(src=OTHER_MAC) / ARP(hwsrc=MAC, psrc=IP4, pdst="10.0.0.1"), Spoofed.MAC),
        (eth() / IP(src="10.0.0.11", dst="10.0.0.1") / UDP(), Spoofed.IP),
        (eth() / IP(src="0.0.0.0", dst="10.0.0.1") / UDP(sport=5000, dport=53), Spoofed.IP),
        (eth() / IP(src="0.0.0.0", dst="10.0.0.1") / TCP(), Spoofed.IP),
        (eth() / IPv6(src="fd00::11", dst="fd00::1") / UDP(), Spoofed.IP),
        (eth() / IPv6(src="fe80::1", dst="ff02::1") / ICMPv6ND_RS(), Spoofed.IP),
        (eth() / IPv6(src="::", dst="fd00::1") / ICMPv6EchoRequest(), Spoofed.IP),
        (eth() / IPv6(src="::", dst="fd00::1") / ICMPv6ND_NA(tgt=IP6), Spoofed.IP),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6ND_NA(tgt="fd00::1"), Spoofed.ND),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6ND_NA(tgt="fe80::1"), Spoofed.ND),
        (eth() / IPv6(src=LLA, dst="ff02::1") / ICMPv6ND_RA(), Spoofed.RA),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6ND_RA(), Spoofed.RA),
        (
            eth(dst=BCAST)
            / IP(src=IP4, dst="255.255.255.255")
            / UDP(sport=67, dport=68)
            / BOOTP(op=2)
            / DHCP(options=[("message-type", "offer"), "end"]),
            Spoofed.DHCP,
        ),
        (
            eth() / IPv6(src=LLA, dst="fe80::1") / UDP(sport=547, dport=546) / DHCP6_Advertise(),
            Spoofed.DHCP,
        ),
        (eth(dst=BCAST) / ARP(hwsrc=MAC, psrc="10.0.0.11", pdst="10.0.0.1"), Spoofed.ARP),
        (eth(dst=BCAST) / ARP(hwsrc=MAC, psrc="10.0.0.1", pdst="10.0.0.1"), Spoofed.ARP),
        (eth(dst=BCAST) / ARP(hwsrc=OTHER_MAC, psrc=IP4, pdst="10.0.0.1"), Spoofed.ARP),
        (eth(dst=BCAST) / ARP(op=2, hwsrc=OTHER_MAC, psrc=IP4, pdst=IP4), Spoofed.ARP),
        (eth(dst="01:80:c2:00:00:0e", src=MAC) / Raw(b"\x02" * 46), Spoofed.ETHERTYPE),
        (Ether(src=MAC, dst=BCAST, type=0x88B5) / Raw(b"x" * 46), Spoofed.ETHERTYPE),
    ],
    ids=lambda p: p.summary() if isinstance(p, Packet) else str(p),
)
def test_anything_else_is_refused_with_its_reason(packet: Packet, reason: Spoofed) -> None:
    assert check(guard(), packet) == reason


def test_an_allowed_address_pair_lets_its_address_through_with_its_mac() -> None:
    port_guard = guard(
        AddressPair("10.0.0.99"),  # with the port's MAC (the model fills it in)
        AddressPair("10.0.5.0/24", PAIR_MAC),
        AddressPair("fd00:5::/64", PAIR_MAC),
    )
    assert check(port_guard, eth() / IP(src="10.0.0.99", dst="10.0.0.1") / UDP()) is None
    assert check(port_guard, eth(dst=BCAST) / ARP(hwsrc=MAC, psrc="10.0.0.99")) is None
    pair = eth(src=PAIR_MAC)
    assert check(port_guard, pair / IP(src="10.0.5.200", dst="10.0.0.1") / UDP()) is None
    assert check(port_guard, pair / IPv6(src="fd00:5::7", dst="fd00::1") / UDP()) is None
    assert check(port_guard, pair / ARP(hwsrc=PAIR_MAC, psrc="10.0.5.1")) is None
    # The pair's MAC has its own link-local address too.
    pair_lla = "fe80::ff:fe00:c"
    assert check(port_guard, pair / IPv6(src=pair_lla, dst="ff02::2") / ICMPv6ND_RS()) is None
    # A pair's MAC goes with the pair's addresses only, and the port's with its own.
    assert check(port_guard, pair / IP(src=IP4, dst="10.0.0.1") / UDP()) == Spoofed.IP
    assert check(port_guard, pair / ARP(hwsrc=PAIR_MAC, psrc=IP4)) == Spoofed.ARP
    assert check(port_guard, eth() / IP(src="10.0.5.200", dst="10.0.0.1") / UDP()) == Spoofed.IP
    assert check(port_guard, pair / IP(src="10.0.6.1", dst="10.0.0.1") / UDP()) == Spoofed.IP


def test_a_port_is_secured_only_with_port_security_on_addresses_and_no_port_pair() -> None:
    assert port_security(neutron_port(enabled=False)) is None
    assert port_security(neutron_port(ips=())) is None
    assert port_security(neutron_port(), exempt=frozenset({"port-1"})) is None
    security = port_security(neutron_port(AddressPair("10.0.0.99", MAC)))
    assert isinstance(security, PortSecurity)
    assert security.fixed_ips == (IP4, IP6)
    assert [mac for mac, _ in security.grants] == [MAC]
    assert [str(net) for net in security.grants[0][1]] == [
        "10.0.0.10/32",
        "fd00::10/128",
        "10.0.0.99/32",
    ]


def test_every_port_of_a_port_pair_is_exempt() -> None:
    from pktchain.sfc.model import PortPair, SfcModel

    model = SfcModel()
    ports = [
        model.create(
            Port,
            name=name,
            mac_address=f"02:00:00:00:01:0{n}",
            device_id="vm" if name != "host" else "host",
            fixed_ips=[{"ip_address": f"10.0.1.{n}"}],
        )
        for n, name in enumerate(("in", "out", "host"), start=1)
    ]
    model.create(PortPair, ingress=ports[0].id, egress=ports[1].id)
    assert exempt_ports(model.state) == {ports[0].id, ports[1].id}


def test_a_fused_entry_is_made_only_for_flows_whose_key_implies_the_check() -> None:
    def frame(packet: Packet) -> tuple[bytes, FrameInfo]:
        data = VNET + bytes(packet)
        return data, parse_frame(data, len(VNET))

    for packet, expected in (
        (eth() / IP(src=IP4, dst="10.0.0.1") / UDP(), True),
        (eth() / IPv6(src=IP6, dst="fd00::1") / TCP(), True),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6EchoRequest(id=9), True),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6EchoRequest(id=0), False),
        (eth() / IPv6(src=IP6, dst="fd00::1") / ICMPv6ND_NS(tgt="fd00::1"), False),
    ):
        data, info = frame(packet)
        assert fusable(data, info) is expected, packet.summary()


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.sampled_from(["ip4", "ip6", "arp", "raw"]))
def test_the_check_never_raises_on_arbitrary_bytes(tail: bytes, kind: str) -> None:
    """Whatever follows the Ethernet header (or the header itself, cut short),
    the check answers, even for frames the parse refused."""
    ethertype = {"ip4": b"\x08\x00", "ip6": b"\x86\xdd", "arp": b"\x08\x06", "raw": b""}[kind]
    port_guard = guard(AddressPair("10.0.5.0/24", PAIR_MAC), AddressPair("fd00:5::/64"))
    for src in (MAC, PAIR_MAC, OTHER_MAC):
        frame = VNET + bytes.fromhex("020000000001" + src.replace(":", "")) + ethertype + tail
        for cut in (frame, frame[: len(VNET) + 13], bytearray(frame)):
            info = parse_frame(cut, len(VNET))
            reason = port_guard.check(cut, info)
            assert reason is None or reason in set(Spoofed)
            assert isinstance(fusable(cut, info), bool)
