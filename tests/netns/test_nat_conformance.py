"""NAT conformance on real traffic: RFC 4787 (UDP), 5382 (TCP), 5508 (ICMP), 7857.

One test per requirement that can be seen on the wire in bounded time, named
after it, run through a real node whose router joins two inside and two outside
hosts (`nat_lab.NAT_TOPOLOGY`). Packets come from real sockets and programs or
are crafted with scapy; what each side receives is captured on its interface
and decoded with scapy. docs/nat-conformance.md lists these tests beside the
unit tests, and says why the other requirements are shown by unit tests only.

A packet that must *not* arrive is checked against a later one that must: both
take the same path through the router, so once the second has arrived the first
would have too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from nat_lab import (
    INSIDE,
    INSIDE2,
    NAT_TOPOLOGY,
    OUTSIDE,
    OUTSIDE2,
    ROUTER,
    ROUTER_OUT,
    RouterLab,
    Wire,
    external_endpoint,
    icmp,
    quoting,
    receive,
    send_ip,
    udp_socket,
    udp_to,
)
from scapy.layers.inet import ICMP, IP, UDP

from pktchain.lab import Lab
from pktchain.node.process import NodeProcess

MakeLab = Callable[..., RouterLab]


@pytest.fixture
def nat_lab(router_node: Callable[..., tuple[Lab, NodeProcess]]) -> Iterator[MakeLab]:
    """``net = nat_lab(**nat_settings)``: the four hosts and a router whose NAT has
    the given settings (names of `NatConfig` fields, as in a router file)."""

    def make(**nat: Any) -> RouterLab:
        lab, node = router_node(NAT_TOPOLOGY, {**ROUTER, "nat": nat})
        # The outside host answers host unreachable for these, as a router would.
        lab.host("outside").run(["ip", "route", "add", "unreachable", "192.0.2.0/25"], check=True)
        return RouterLab(lab, node)

    yield make


@pytest.fixture
def net(nat_lab: MakeLab) -> RouterLab:
    """The router with the NAT's default settings."""
    return nat_lab()


def mapped(net: RouterLab, host_name: str, port: int, dport: int = 7000) -> tuple[str, int]:
    """Send one datagram from `host_name`:`port` to the outside host's `dport` and
    return the (address, port) the outside host sees it come from."""
    wire = Wire(net.outside)
    with udp_socket(net.lab.host(host_name), port) as sock:
        sock.sendto(b"map", (OUTSIDE, dport))
        return external_endpoint(wire, dport)


# -- RFC 4787: UDP -------------------------------------------------------------


def test_rfc4787_req1_endpoint_independent_mapping(net: RouterLab) -> None:
    seen = {name: Wire(net.lab.host(name)) for name in ("outside", "outside2")}
    with udp_socket(net.inside, 40000) as sock:
        for host, port in ((OUTSIDE, 7001), (OUTSIDE2, 7001), (OUTSIDE, 7002)):
            sock.sendto(b"eim", (host, port))
        endpoints = {
            external_endpoint(seen["outside"], 7001),
            external_endpoint(seen["outside2"], 7001),
            external_endpoint(seen["outside"], 7002),
        }
    # One mapping for every destination, the port preserved (it was free).
    assert endpoints == {(ROUTER_OUT, 40000)}


def test_rfc4787_req2_paired_address_pooling(net: RouterLab) -> None:
    wires = {name: Wire(net.lab.host(name)) for name in ("outside", "outside2")}
    sources = set()
    with udp_socket(net.inside, 40010) as first, udp_socket(net.inside, 40011) as second:
        first.sendto(b"a", (OUTSIDE, 7000))
        second.sendto(b"b", (OUTSIDE2, 7000))
        for wire in wires.values():
            sources.add(external_endpoint(wire, 7000)[0])
    assert sources == {ROUTER_OUT}


def test_rfc4787_req3_no_port_overloading_and_same_range(net: RouterLab) -> None:
    high = {mapped(net, name, 40020) for name in ("inside", "inside2")}
    low = {mapped(net, name, 700, dport=7001) for name in ("inside", "inside2")}
    # Two inside hosts, one source port: two external ports, the first preserved.
    assert len(high) == 2 and (ROUTER_OUT, 40020) in high
    assert all(port >= 1024 for _, port in high)
    assert len(low) == 2 and (ROUTER_OUT, 700) in low
    assert all(port < 1024 for _, port in low)


def test_rfc4787_req4_port_parity_preserved(net: RouterLab) -> None:
    for port in (40030, 40031):
        ports = {mapped(net, name, port)[1] for name in ("inside", "inside2")}
        assert len(ports) == 2 and port in ports
        assert {p % 2 for p in ports} == {port % 2}


FILTERING_CASES = {
    # mode: (from a new address, from a new port of the same address) admitted?
    "endpoint-independent": (True, True),
    "address-dependent": (False, True),
    "address-and-port-dependent": (False, False),
}


def check_udp_filtering(net: RouterLab, expected: tuple[bool, bool], port: int = 40040) -> None:
    wire = Wire(net.inside)
    outside_wire = Wire(net.outside)
    with udp_socket(net.inside, port) as sock:
        sock.sendto(b"open", (OUTSIDE, 7000))
        _, external = external_endpoint(outside_wire, 7000)
        with udp_socket(net.outside2, 7000) as other_address:
            other_address.sendto(b"other-address", (ROUTER_OUT, external))
        with udp_socket(net.outside, 7001) as other_port:
            other_port.sendto(b"other-port", (ROUTER_OUT, external))
        with udp_socket(net.outside, 7000) as same:
            same.sendto(b"same-endpoint", (ROUTER_OUT, external))
        wire.wait_for(udp_to(port, OUTSIDE, 7000), what="the reply of the contacted endpoint")
    admitted = (
        bool(wire.received(udp_to(port, OUTSIDE2))),
        bool(wire.received(udp_to(port, OUTSIDE, 7001))),
    )
    assert admitted == expected


@pytest.mark.parametrize("mode", list(FILTERING_CASES))
def test_rfc4787_req8_filtering(nat_lab: MakeLab, mode: str) -> None:
    net = nat_lab(udp_filtering=mode)
    check_udp_filtering(net, FILTERING_CASES[mode])


def test_rfc4787_req8_default_is_address_dependent(net: RouterLab) -> None:
    check_udp_filtering(net, FILTERING_CASES["address-dependent"])


def test_rfc4787_req9_hairpinning_with_external_source(net: RouterLab) -> None:
    wire = Wire(net.inside)
    with udp_socket(net.inside, 40050) as first, udp_socket(net.inside2, 40051) as second:
        external1 = mapped_from(net, first)
        external2 = mapped_from(net, second)
        # Each sends to the other's external endpoint (hole punching): the
        # second datagram passes the first one's address-dependent filter.
        first.sendto(b"punch", external2)
        second.sendto(b"hairpin", external1)
        data, peer = receive(first)
    assert data == b"hairpin"
    assert peer == external2 == (ROUTER_OUT, 40051)
    packet = wire.wait_for(udp_to(40050, ROUTER_OUT), what="the hairpinned datagram")
    assert (packet[IP].src, packet[UDP].sport) == external2


def mapped_from(net: RouterLab, sock: socket.socket) -> tuple[str, int]:
    wire = Wire(net.outside)
    sock.sendto(b"map", (OUTSIDE, 7000))
    return external_endpoint(wire, 7000)


def test_rfc4787_req10_no_application_level_gateway(net: RouterLab) -> None:
    # SIP names the inside address in its payload; no ALG rewrites it.
    payload = (
        f"INVITE sip:peer@{OUTSIDE} SIP/2.0\r\nVia: SIP/2.0/UDP {INSIDE}:5060\r\n"
        f"Contact: <sip:me@{INSIDE}:5060>\r\n\r\n"
    ).encode()
    with udp_socket(net.outside, 5060) as peer, udp_socket(net.inside, 5060) as sock:
        sock.sendto(payload, (OUTSIDE, 5060))
        data, source = receive(peer)
    assert data == payload and source == (ROUTER_OUT, 5060)


def test_rfc4787_req11_deterministic_refusal_instead_of_overloading(nat_lab: MakeLab) -> None:
    net = nat_lab(max_sessions=2)
    wire = Wire(net.inside2)
    first = mapped(net, "inside", 40060)
    second = mapped(net, "inside", 40061)
    assert {first, second} == {(ROUTER_OUT, 40060), (ROUTER_OUT, 40061)}
    outside_wire = Wire(net.outside)
    with udp_socket(net.inside2, 40060) as sock:
        sock.sendto(b"third", (OUTSIDE, 7000))
        refusal = wire.wait_for(icmp(3, 13), what="ICMP 3/13")
    assert quoting(refusal) == (INSIDE2, 40060, OUTSIDE, 7000)
    # Refused, not given a port another mapping holds; the old mappings still work.
    assert not outside_wire.received(udp_to(7000))
    assert mapped(net, "inside", 40060) == first


def test_rfc4787_req12_icmp_does_not_end_mapping(net: RouterLab) -> None:
    wire = Wire(net.inside)
    outside_wire = Wire(net.outside)
    with udp_socket(net.inside, 40070) as sock:
        sock.sendto(b"first", (OUTSIDE, 7000))
        sent = outside_wire.wait_for(udp_to(7000), what="the datagram")
        # 12a/12b: a destination unreachable from another outside host than the
        # destination is translated and delivered.
        error = IP(src=OUTSIDE2, dst=ROUTER_OUT) / ICMP(type=3, code=1) / bytes(sent[IP])[:28]
        send_ip(net.outside2, error)
        got = wire.wait_for(icmp(3, 1), what="the translated host unreachable")
        assert quoting(got) == (INSIDE, 40070, OUTSIDE, 7000)
        # The mapping is still there: same external port, replies delivered.
        sock.sendto(b"second", (OUTSIDE, 7001))
        assert external_endpoint(outside_wire, 7001) == (ROUTER_OUT, 40070)
    with udp_socket(net.outside, 7000) as peer:
        peer.sendto(b"reply", (ROUTER_OUT, 40070))
        wire.wait_for(udp_to(40070, OUTSIDE, 7000), what="the reply after the error")
