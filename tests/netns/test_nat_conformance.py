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

import contextlib
import copy
import errno
import json
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, IPOption_NOP, fragment
from scapy.utils import checksum

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.node.process import NodeProcess
from support.nat_lab import (
    BEYOND,
    INSIDE,
    INSIDE2,
    NAT_TOPOLOGY,
    OUTSIDE,
    OUTSIDE2,
    ROUTER,
    ROUTER_IN,
    ROUTER_OUT,
    UNREACHABLE,
    RouterLab,
    Wire,
    address_of,
    checksums_ok,
    curl,
    external_endpoint,
    icmp,
    quoting,
    receive,
    send_ip,
    send_ips,
    serve,
    tcp_connect,
    tcp_listener,
    tcp_to,
    udp_socket,
    udp_to,
)

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


MakeLab = Callable[..., RouterLab]


@pytest.fixture
def nat_lab(router_node: Callable[..., tuple[Lab, NodeProcess]]) -> MakeLab:
    """``net = nat_lab(outside_mtu=None, router=None, node_args=(), **nat_settings)``:
    the four hosts and a router whose NAT has the given settings (names of
    `NatConfig` fields, as in a router file), whose outside interface has the given
    MTU, with the `RouterConfig` settings of `router` (a mapping, as in a router
    file), in a node run with `node_args` more."""

    def make(
        *,
        outside_mtu: int | None = None,
        router: dict[str, Any] | None = None,
        node_args: tuple[str, ...] = (),
        **nat: Any,
    ) -> RouterLab:
        spec = copy.deepcopy(ROUTER)
        spec["nat"] = nat
        spec.update(router or {})
        if outside_mtu is not None:
            spec["interfaces"]["outside"]["mtu"] = outside_mtu
        lab, node = router_node(NAT_TOPOLOGY, spec, args=node_args)
        # The outside host answers host unreachable for these, as a router would.
        lab.host("outside").run(["ip", "route", "add", "unreachable", "192.0.2.0/25"], check=True)
        return RouterLab(lab, node)

    return make


@pytest.fixture
def net(nat_lab: MakeLab) -> RouterLab:
    """The router with the NAT's default settings."""
    return nat_lab()


def mapped(net: RouterLab, host_name: str, port: int, dport: int = 7000) -> tuple[str, int]:
    """Send one datagram from `host_name`:`port` to the outside host's `dport` and
    return the (address, port) the outside host sees it come from."""
    wire = Wire(net.outside)
    with udp_socket(net.outside, dport), udp_socket(net.lab.host(host_name), port) as sock:
        sock.sendto(b"map", (OUTSIDE, dport))
        return external_endpoint(wire, dport)


def router_answers(host: LabHost) -> None:
    """Ping the router's outside address from `host` with a crafted echo and wait
    for the answer: the router has then dealt with everything `host` sent before
    (one interface, read in order), including a packet that had to wait for ARP."""
    wire = Wire(host)
    send_ip(host, IP(src=address_of(host), dst=ROUTER_OUT) / ICMP(id=0x4787, seq=1))
    wire.wait_for(
        lambda p: ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 0x4787,
        what="the router's echo reply",
    )


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
        # Another host, another way in (after ARP): its datagram is not ordered
        # with the outside host's, so wait until the router has judged it.
        router_answers(net.outside2)
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
    with udp_socket(net.outside, 7000):
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


def test_rfc4787_req13_fragmenting_and_fragmentation_needed(nat_lab: MakeLab) -> None:
    net = nat_lab(outside_mtu=1280)
    wire, outside_wire = Wire(net.inside), Wire(net.outside)
    payload = bytes(range(256)) * 5 + b"end"
    with udp_socket(net.outside, 7000) as peer, udp_socket(net.inside, 40080):
        # REQ-13a: DF clear, too big for the outside link: fragmented by the
        # router, and whole again at the outside host with the translated source.
        udp = UDP(sport=40080, dport=7000) / payload
        send_ip(net.inside, IP(src=INSIDE, dst=OUTSIDE, flags=0) / udp)
        data, source = receive(peer)
        assert data == payload and source == (ROUTER_OUT, 40080)
        fragments = outside_wire.received(lambda p: p[IP].src == ROUTER_OUT and p[IP].proto == 17)
        assert len(fragments) >= 2 and all(len(p[IP]) <= 1280 for p in fragments)
        # DF set, too big for the outside link: fragmentation needed with the
        # next-hop MTU, from the router, quoting the untranslated datagram.
        udp = UDP(sport=40080, dport=7001) / payload
        send_ip(net.inside, IP(src=INSIDE, dst=OUTSIDE, flags="DF") / udp)
        needed = wire.wait_for(icmp(3, 4), what="fragmentation needed")
    assert needed[IP].src == ROUTER_IN and needed[ICMP].nexthopmtu == 1280
    assert quoting(needed) == (INSIDE, 40080, OUTSIDE, 7001) and checksums_ok(needed)
    assert not outside_wire.received(udp_to(7001))


FRAGMENTED = bytes(range(256)) * 12  # 3072 bytes: four fragments of 1000


def test_rfc4787_req14_fragments_in_and_out_of_order(nat_lab: MakeLab) -> None:
    # The flood of fragments below is the router's to bound, not the node's: the
    # inside port's slow-path limit (docs/node.md, "Rate limits") would drop most of it.
    net = nat_lab(router={"fragment_timeout": 2}, node_args=("--port-slow-path-rate", "off"))
    # In order, both ways: the hosts' kernels fragment a 3000-byte ping at MTU
    # 1500; the reply comes back in fragments through the NAT too.
    ping = net.inside.run(["ping", "-c", "1", "-W", "3", "-s", "3000", OUTSIDE], timeout=10)
    assert ping.ok, ping.stdout
    outside_wire = Wire(net.outside)
    with udp_socket(net.outside, 7000) as peer, udp_socket(net.inside, 40140) as sock:
        # Out of order, outbound: the last fragment first. The outside kernel
        # reassembles and checks the UDP checksum the NAT updated in the first.
        datagram = IP(src=INSIDE, dst=OUTSIDE, id=0x1414) / UDP(sport=40140, dport=7000)
        send_ips(net.inside, fragment(datagram / FRAGMENTED, fragsize=1000)[::-1])
        assert receive(peer) == (FRAGMENTED, (ROUTER_OUT, 40140))
        # Out of order, inbound, to the mapped port.
        answer = IP(src=OUTSIDE, dst=ROUTER_OUT, id=0x1415) / UDP(sport=7000, dport=40140)
        send_ips(net.outside, fragment(answer / FRAGMENTED, fragsize=1000)[::-1])
        assert receive(sock) == (FRAGMENTED, (OUTSIDE, 7000))
    sent = outside_wire.received(lambda p: p[IP].src == ROUTER_OUT and p[IP].proto == 17)
    assert len(sent) == 4 and sent[0].frag == 0  # the first, then those that waited for it
    counters = net.counters()
    assert counters["fragments-held"] >= 6 and counters["fragments-released"] >= 6
    # REQ-14a: fragments whose first never comes cost bounded memory (1024
    # datagrams by default: the oldest are evicted) and go after fragment_timeout.
    flood = [
        IP(src=INSIDE, dst=OUTSIDE, id=n, frag=100, proto=17) / (b"f" * 64) for n in range(1500)
    ]
    # Sent in bursts the host's TAP queue always holds, each waited for, so
    # every fragment reaches the router even on a loaded machine.
    for start in range(0, len(flood), 250):
        held = net.counters().get("fragments-held", 0)
        send_ips(net.inside, flood[start : start + 250])
        wait_until(
            lambda held=held: net.counters().get("fragments-held", 0) >= held + 250,
            timeout=10,
            what=f"fragments {start}-{start + 249} of the flood held",
        )
    wait_until(
        lambda: net.counters().get("drop-fragment-evicted", 0) >= 1500 - 1024,
        timeout=10,
        what="the oldest held fragments evicted",
    )
    with udp_socket(net.outside, 7001) as peer:
        datagram = IP(src=INSIDE, dst=OUTSIDE, id=0x1416) / UDP(sport=40140, dport=7001)
        send_ips(net.inside, fragment(datagram / FRAGMENTED, fragsize=1000)[::-1])
        assert receive(peer) == (FRAGMENTED, (ROUTER_OUT, 40140))

    def all_discarded() -> bool:
        counters = net.counters()
        discarded = counters.get("drop-fragment-evicted", 0)
        return discarded + counters.get("drop-fragment-timeout", 0) == 1500

    wait_until(all_discarded, timeout=10, what="the flood discarded after fragment_timeout")


# -- RFC 5382: TCP -------------------------------------------------------------


def accept_peer(listener: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    conn, peer = listener.accept()
    conn.settimeout(5.0)
    return conn, (str(peer[0]), int(peer[1]))


def test_rfc5382_req1_endpoint_independent_mapping(net: RouterLab) -> None:
    peers = []
    with tcp_listener(net.outside, 80) as one, tcp_listener(net.outside2, 80) as two:
        for address, listener in ((OUTSIDE, one), (OUTSIDE2, two)):
            with tcp_connect(net.inside, 41000, (address, 80)):
                conn, peer = accept_peer(listener)
                conn.close()
                peers.append(peer)
    assert peers == [(ROUTER_OUT, 41000), (ROUTER_OUT, 41000)]


def test_rfc5382_req2_three_way_handshake_data_and_close(net: RouterLab, tmp_path: Path) -> None:
    serve(net.outside, tmp_path / "web", OUTSIDE, 80, "web on outside\n")
    assert curl(net.inside, f"http://{OUTSIDE}/") == "web on outside\n"
    net.outside.popen(["iperf3", "-s", "-1", "-B", OUTSIDE])
    net.outside.wait_listening(5201)
    result = net.inside.run(
        ["iperf3", "-c", OUTSIDE, "-t", "1", "--connect-timeout", "3000", "-J"], timeout=20
    )
    assert result.ok, result.stdout[-500:]
    received = json.loads(result.stdout)["end"]["sum_received"]["bytes"]
    assert received > 1_000_000


def connected(sock: socket.socket) -> bool:
    _, writable, _ = select.select([], [sock], [], 0)
    return bool(writable) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def test_rfc5382_req2a_simultaneous_open(net: RouterLab) -> None:
    remote = net.outside.socket(socket.AF_INET, socket.SOCK_STREAM)
    local = net.inside.socket(socket.AF_INET, socket.SOCK_STREAM)
    with remote, local:
        remote.bind((OUTSIDE, 41010))
        local.bind((INSIDE, 41011))
        for sock in (remote, local):
            sock.setblocking(False)
        # The outside SYN comes first (held by the NAT), then the inside one.
        assert remote.connect_ex((ROUTER_OUT, 41011)) == errno.EINPROGRESS
        assert local.connect_ex((OUTSIDE, 41010)) == errno.EINPROGRESS
        wait_until(
            lambda: connected(remote) and connected(local), timeout=8, what="simultaneous open"
        )
        for sock in (remote, local):
            sock.settimeout(5.0)
        local.sendall(b"from inside")
        assert remote.recv(100) == b"from inside"
        remote.sendall(b"from outside")
        assert local.recv(100) == b"from outside"


def test_rfc5382_req3_tcp_filtering_configurable_apart_from_udp(nat_lab: MakeLab) -> None:
    net = nat_lab(tcp_filtering="endpoint-independent", udp_filtering="address-and-port-dependent")
    wire = Wire(net.inside)
    with (
        tcp_listener(net.outside, 80) as listener,
        tcp_connect(net.inside, 41020, (OUTSIDE, 80)),
        udp_socket(net.inside, 41021) as sock,
    ):
        accept_peer(listener)[0].close()
        sock.sendto(b"open", (OUTSIDE, 7000))
        with udp_socket(net.outside2, 7000) as other:
            # TCP: endpoint-independent, a SYN from another host is let in.
            syn = TCP(sport=7100, dport=41020, flags="S")
            send_ip(net.outside2, IP(src=OUTSIDE2, dst=ROUTER_OUT) / syn)
            wire.wait_for(tcp_to(41020, "S"), what="the SYN of another outside host")
            # UDP: address-and-port-dependent, the same host's datagram is not.
            other.sendto(b"filtered", (ROUTER_OUT, 41021))
            router_answers(net.outside2)
        with udp_socket(net.outside, 7000) as peer:
            peer.sendto(b"reply", (ROUTER_OUT, 41021))
            wire.wait_for(udp_to(41021, OUTSIDE, 7000), what="the reply")
    assert not wire.received(udp_to(41021, OUTSIDE2))


def test_rfc5382_req4_unsolicited_syn_held_then_port_unreachable(net: RouterLab) -> None:
    wire, outside_wire = Wire(net.inside), Wire(net.outside)
    start = time.monotonic()
    send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / TCP(sport=7200, dport=41030, flags="S"))
    answer = outside_wire.wait_for(icmp(3, 3), timeout=10, what="port unreachable")
    held = time.monotonic() - start
    assert held >= 6.0, f"answered after {held:.2f} s"
    assert answer[IP].src == ROUTER_OUT and quoting(answer) == (OUTSIDE, 7200, ROUTER_OUT, 41030)
    assert checksums_ok(answer)
    assert not wire.received(tcp_to(41030)) and not outside_wire.received(tcp_to(7200))


def test_rfc5382_req4a_policy_drops_silently(nat_lab: MakeLab) -> None:
    net = nat_lab(unsolicited_syn="drop")
    outside_wire = Wire(net.outside)
    send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / TCP(sport=7210, dport=41031, flags="S"))
    send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(id=0x5382, seq=1))
    outside_wire.wait_for(icmp(0), what="the router's echo reply")
    assert not outside_wire.received(lambda p: ICMP in p and p[ICMP].type == 3)
    assert not outside_wire.received(tcp_to(7210))
    # A held SYN would be answered only 6 s later: the counters tell it now.
    counters = net.counters()
    assert counters.get("nat-syn-held", 0) == 0 and counters["nat-no-mapping"] >= 1


def test_rfc5382_req5_idle_timeouts(nat_lab: MakeLab) -> None:
    # Timeouts of 2 s leave the test room to see both sessions on a loaded machine.
    net = nat_lab(tcp_opening_timeout=2, tcp_closing_timeout=2)
    with (
        tcp_listener(net.outside, 80) as listener,
        tcp_connect(net.inside, 41040, (OUTSIDE, 80)) as kept,
    ):
        conn, _ = accept_peer(listener)
        with conn:
            with tcp_connect(net.inside, 41041, (OUTSIDE, 80)) as closed:
                other, _ = accept_peer(listener)
                other.close()
                closed.shutdown(socket.SHUT_WR)
                assert closed.recv(10) == b""
            wait_until(lambda: net.session_count() == 2, timeout=3, what="both sessions")
            # The closed connection goes after its transitory timeout...
            wait_until(lambda: net.session_count() == 1, timeout=8, what="closed one expired")
            # ...the established one, idle as long, is kept and carries data.
            kept.sendall(b"still here")
            assert conn.recv(100) == b"still here"
            conn.sendall(b"yes")
            assert kept.recv(100) == b"yes"
            assert net.session_count() == 1


def test_rfc5382_req6_no_alg_rewrites_payload(net: RouterLab) -> None:
    command = b"PORT 10,0,0,10,160,150\r\nEPRT |1|10.0.0.10|41110|\r\n"
    with (
        tcp_listener(net.outside, 21) as listener,
        tcp_connect(net.inside, 41050, (OUTSIDE, 21)) as sock,
    ):
        conn, peer = accept_peer(listener)
        with conn:
            sock.sendall(command)
            data = b""
            while len(data) < len(command):
                chunk = conn.recv(1000)
                assert chunk
                data += chunk
    assert data == command and peer == (ROUTER_OUT, 41050)


def test_rfc5382_req7_no_port_overloading(net: RouterLab) -> None:
    peers = []
    with (
        tcp_listener(net.outside, 80) as listener,
        tcp_connect(net.inside, 41060, (OUTSIDE, 80)),
        tcp_connect(net.inside2, 41060, (OUTSIDE, 80)),
    ):
        for _ in range(2):
            conn, peer = accept_peer(listener)
            conn.close()
            peers.append(peer)
    assert (ROUTER_OUT, 41060) in peers and len(set(peers)) == 2
    assert all(port >= 1024 for _, port in peers)


def test_rfc5382_req8_hairpinning_with_external_source(net: RouterLab) -> None:
    # inside2 reaches inside's web port through the external address (the admin
    # forward 8080 → inside:80): inside sees it come from inside2's mapping.
    with (
        tcp_listener(net.inside, 80) as listener,
        tcp_connect(net.inside2, 41070, (ROUTER_OUT, 8080)) as sock,
    ):
        conn, peer = accept_peer(listener)
        with conn:
            sock.sendall(b"hello")
            assert conn.recv(100) == b"hello"
            conn.sendall(b"back")
            assert sock.recv(100) == b"back"
            assert sock.getpeername() == (ROUTER_OUT, 8080)
    assert peer == (ROUTER_OUT, 41070)


def test_rfc5382_req9_icmp_destination_unreachable_translated(net: RouterLab) -> None:
    wire = Wire(net.inside)
    with pytest.raises(OSError) as failure:
        tcp_connect(net.inside, 41080, (UNREACHABLE, 80), timeout=5)
    assert failure.value.errno == errno.EHOSTUNREACH
    error = wire.wait_for(icmp(3, 1), what="host unreachable")
    assert error[IP].src == OUTSIDE and error[IP].dst == INSIDE
    assert quoting(error) == (INSIDE, 41080, UNREACHABLE, 80)
    assert checksums_ok(error)


def test_rfc5382_req10_icmp_does_not_end_connection(net: RouterLab) -> None:
    wire, outside_wire = Wire(net.inside), Wire(net.outside)
    with (
        tcp_listener(net.outside, 80) as listener,
        tcp_connect(net.inside, 41090, (OUTSIDE, 80)) as sock,
    ):
        conn, _ = accept_peer(listener)
        with conn:
            sock.sendall(b"one")
            assert conn.recv(100) == b"one"
            segment = outside_wire.wait_for(lambda p: TCP in p and bytes(p[TCP].payload) == b"one")
            error = IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=1) / bytes(segment[IP])[:28]
            send_ip(net.outside, error)
            got = wire.wait_for(icmp(3, 1), what="the translated error")
            assert quoting(got) == (INSIDE, 41090, OUTSIDE, 80)
            sock.sendall(b"two")
            assert conn.recv(100) == b"two"
            conn.sendall(b"three")
            assert sock.recv(100) == b"three"
    mappings = [m for m in net.node.router()["nat"] if m["internal_port"] == 41090]
    assert mappings and mappings[0]["external_port"] == 41090


# -- RFC 5508: ICMP ------------------------------------------------------------


def test_rfc5508_req1_echo_identifier_mapped_not_sequence(net: RouterLab) -> None:
    assert net.inside.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", OUTSIDE]).ok
    wires = {name: Wire(net.lab.host(name)) for name in ("inside", "inside2")}
    outside_wire = Wire(net.outside)
    for host, address in ((net.inside, INSIDE), (net.inside2, INSIDE2)):
        send_ip(host, IP(src=address, dst=OUTSIDE) / ICMP(id=0x4242, seq=7) / b"query")
    for address, wire in zip((INSIDE, INSIDE2), wires.values(), strict=True):
        reply = wire.wait_for(icmp(0), what="the echo reply")
        assert (reply[IP].dst, reply[ICMP].id, reply[ICMP].seq) == (address, 0x4242, 7)
        assert checksums_ok(reply)
    requests = outside_wire.received(icmp(8))
    assert len(requests) == 2 and {p[IP].src for p in requests} == {ROUTER_OUT}
    assert len({p[ICMP].id for p in requests}) == 2 and {p[ICMP].seq for p in requests} == {7}
    assert all(checksums_ok(p) for p in requests)


@contextlib.contextmanager
def error_quoting_mapping(net: RouterLab, port: int) -> Iterator[tuple[socket.socket, bytes, Wire]]:
    """Open a UDP mapping from inside:`port` to the outside host's 7000 (where a
    socket listens) and give the inside socket, the first 28 bytes of the
    datagram as the outside host got it, and a capture of the inside host."""
    wire, outside_wire = Wire(net.inside), Wire(net.outside)
    with udp_socket(net.outside, 7000), udp_socket(net.inside, port) as sock:
        sock.sendto(b"quoted", (OUTSIDE, 7000))
        sent = outside_wire.wait_for(udp_to(7000), what="the datagram")
        yield sock, bytes(sent[IP])[:28], wire


def test_rfc5508_req3_bad_icmp_checksum_dropped(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41100) as (_sock, quote, wire):
        bad = IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3, chksum=0x1234) / quote
        send_ip(net.outside, bad)
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=1) / quote)
        wire.wait_for(icmp(3, 1), what="the good error")
    assert not wire.received(icmp(3, 3))


def test_rfc5508_req3a_bad_embedded_ip_checksum_dropped(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41101) as (_sock, quote, wire):
        broken = bytearray(quote)
        broken[10] ^= 0xFF
        bad = IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3) / bytes(broken)
        send_ip(net.outside, bad)
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=1) / quote)
        wire.wait_for(icmp(3, 1), what="the good error")
    assert not wire.received(icmp(3, 3))


def test_rfc5508_req3b_embedded_ip_options_skipped(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41102) as (_sock, quote, wire):
        sent = IP(quote)
        embedded = IP(src=sent.src, dst=sent.dst, ttl=sent.ttl, options=[IPOption_NOP()] * 4)
        embedded = embedded / UDP(sport=sent[UDP].sport, dport=7000, len=14, chksum=0)
        send_ip(
            net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3) / bytes(embedded)
        )
        got = wire.wait_for(icmp(3, 3), what="the translated error")
    assert got[IPerror].ihl == 6 and quoting(got) == (INSIDE, 41102, OUTSIDE, 7000)
    assert checksums_ok(got)


def test_rfc5508_req3c_embedded_transport_checksum_not_validated(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41103) as (_sock, quote, wire):
        broken = bytearray(quote)
        broken[26:28] = b"\xde\xad"
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3) / bytes(broken))
        got = wire.wait_for(icmp(3, 3), what="the translated error")
    assert quoting(got) == (INSIDE, 41103, OUTSIDE, 7000) and checksums_ok(got)


def icmp_extension(data: bytes) -> bytes:
    """An RFC 4884 §7 extension structure holding one object (class 2, c-type 1)."""
    body = struct.pack("!HBB", 4 + len(data), 2, 1) + data
    header = struct.pack("!BBH", 0x20, 0, 0)
    return struct.pack("!BBH", 0x20, 0, checksum(header + body)) + body


def test_rfc5508_req3d_icmp_extensions_left_out_of_embedded_checksum(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41104) as (_sock, quote, wire):
        sent = IP(quote)
        # The whole datagram, with a right UDP checksum, padded to 128 bytes
        # (RFC 4884 §4.1), then an extension structure with one object.
        udp = UDP(sport=sent[UDP].sport, dport=7000) / b"quoted"
        datagram = bytes(IP(src=sent.src, dst=sent.dst) / udp)
        original = datagram.ljust(128, b"\0")
        extension = icmp_extension(b"ext-data")
        error = ICMP(type=3, code=3, length=len(original) // 4) / (original + extension)
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / error)
        got = wire.wait_for(icmp(3, 3), what="the translated error")
    message = bytes(got[IP])[got[IP].ihl * 4 :]
    body = message[8:]
    assert checksums_ok(got) and body[128:] == extension
    embedded = IP(body[: len(datagram)])
    assert (embedded.src, embedded[UDP].sport) == (INSIDE, 41104)
    recomputed = embedded.copy()
    del recomputed[UDP].chksum
    assert IP(bytes(recomputed))[UDP].chksum == embedded[UDP].chksum


def test_rfc5508_req4_inbound_error_translated(net: RouterLab) -> None:
    wire = Wire(net.inside)
    with udp_socket(net.inside, 41110) as sock:
        sock.sendto(b"closed port", (OUTSIDE, 9))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 2)
        sock.sendto(b"expires beyond", (BEYOND, 33434))
        unreachable = wire.wait_for(icmp(3, 3), what="port unreachable")
        exceeded = wire.wait_for(icmp(11, 0), what="time exceeded")
    # 4a: embedded packet reverted; 4b: type and code kept; 4c: outer destination.
    assert quoting(unreachable) == (INSIDE, 41110, OUTSIDE, 9)
    assert quoting(exceeded) == (INSIDE, 41110, BEYOND, 33434)
    for error in (unreachable, exceeded):
        assert (error[IP].src, error[IP].dst) == (OUTSIDE, INSIDE) and checksums_ok(error)
    # traceroute sees the hop beyond the NAT.
    argv = ["traceroute", "-n", "-N", "1", "-w", "2", "-q", "1", "-m", "2", BEYOND]
    result = net.inside.run(argv, timeout=30)
    assert result.ok, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == [ROUTER_IN, OUTSIDE]


def test_rfc5508_req5_outbound_error_translated(net: RouterLab) -> None:
    outside_wire = Wire(net.outside)
    with udp_socket(net.inside, 41120) as sock:
        sock.sendto(b"open", (OUTSIDE, 7000))
        _, external = external_endpoint(outside_wire, 7000)
    # The inside socket is gone: the inside host answers port unreachable.
    with udp_socket(net.outside, 7000) as peer:
        peer.sendto(b"to a closed port", (ROUTER_OUT, external))
        error = outside_wire.wait_for(icmp(3, 3), what="port unreachable from inside")
    assert (error[IP].src, error[IP].dst) == (ROUTER_OUT, OUTSIDE)
    assert quoting(error) == (OUTSIDE, 7000, ROUTER_OUT, external) and checksums_ok(error)


def test_rfc5508_req6_errors_neither_refresh_nor_delete(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41130) as (sock, quote, wire):
        before = net.session_count()
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3) / quote)
        wire.wait_for(icmp(3, 3), what="the translated error")
        assert net.session_count() == before
        with udp_socket(net.outside, 7000) as peer:
            peer.sendto(b"still mapped", (ROUTER_OUT, 41130))
            assert receive(sock) == (b"still mapped", (OUTSIDE, 7000))


def test_rfc5508_req7_hairpinned_error(net: RouterLab) -> None:
    wire = Wire(net.inside2)
    first = udp_socket(net.inside, 41140)
    with first, udp_socket(net.inside2, 41141) as second:
        external1 = mapped_from(net, first)
        external2 = mapped_from(net, second)
        filtered = net.counters().get("nat-filtered", 0)
        first.sendto(b"punch", external2)
        # The punch opens first's mapping to second's endpoint (and is filtered at
        # second's): it must have crossed the NAT before second sends (the node
        # reads the two hosts' ports in either order).
        wait_until(
            lambda: net.counters().get("nat-filtered", 0) > filtered,
            timeout=5,
            what="the punch through the NAT",
        )
        first.close()
        # Hairpinned to a closed port: inside's port unreachable is hairpinned back.
        second.sendto(b"to a closed port", external1)
        error = wire.wait_for(icmp(3, 3), what="the hairpinned error")
    assert (error[IP].src, error[IP].dst) == (ROUTER_OUT, INSIDE2)
    assert quoting(error) == (INSIDE2, 41141, *external1) and checksums_ok(error)


def test_rfc5508_req8_refused_session_answered_3_13(nat_lab: MakeLab) -> None:
    net = nat_lab(max_sessions_per_host=2)
    wire = Wire(net.inside)
    with udp_socket(net.inside, 41150) as sock, udp_socket(net.outside, 7000) as peer:
        for port in (7001, 7002, 7000):
            sock.sendto(b"session", (OUTSIDE, port))
        refusal = wire.wait_for(icmp(3, 13), what="ICMP 3/13")
        assert refusal[IP].src == ROUTER_IN and checksums_ok(refusal)
        assert quoting(refusal) == (INSIDE, 41150, OUTSIDE, 7000)
        # Established sessions keep working; another host is not limited.
        with udp_socket(net.outside, 7001) as first:
            first.sendto(b"reply", (ROUTER_OUT, 41150))
            assert receive(sock) == (b"reply", (OUTSIDE, 7001))
        address, port = mapped(net, "inside2", 41150)
        assert address == ROUTER_OUT and port != 41150
        assert not peer_received(peer)


def peer_received(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


def test_rfc5508_req9_policy_keeps_nat_silent(nat_lab: MakeLab) -> None:
    net = nat_lab(max_sessions_per_host=1, icmp_refusals=False)
    wire = Wire(net.inside)
    # The peer listens before anything is sent, so the outside host has no
    # reason to answer "port unreachable" itself: any ICMP 3 would be the NAT's.
    with udp_socket(net.inside, 41160) as sock, udp_socket(net.outside, 7001) as peer:
        sock.sendto(b"first", (OUTSIDE, 7001))
        assert receive(peer)[0] == b"first"
        sock.sendto(b"refused", (OUTSIDE, 7002))
        # Sent after the refused one, on its way: once it is through, a refusal
        # the NAT sent would be on the inside wire already.
        sock.sendto(b"second", (OUTSIDE, 7001))
        assert receive(peer)[0] == b"second"
        peer.sendto(b"reply", (ROUTER_OUT, 41160))
        wire.wait_for(udp_to(41160, OUTSIDE, 7001), what="the reply")
    assert not wire.received(icmp(3))
    assert net.counters().get("nat-host-session-limit", 0) >= 1


def test_rfc5508_req10_errors_supported(net: RouterLab) -> None:
    kinds = ((3, 3), (11, 0), (12, 0))
    with error_quoting_mapping(net, 41170) as (_sock, quote, wire):
        for kind, code in kinds:
            send_ip(
                net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=kind, code=code) / quote
            )
        for kind, code in kinds:
            got = wire.wait_for(icmp(kind, code), what=f"ICMP {kind}/{code}")
            assert quoting(got) == (INSIDE, 41170, OUTSIDE, 7000) and checksums_ok(got)
    assert net.inside.run(["ping", "-c", "1", "-W", "2", OUTSIDE]).ok


def test_rfc5508_req11_non_query_and_other_icmp_dropped(net: RouterLab) -> None:
    with error_quoting_mapping(net, 41180) as (_sock, quote, wire):
        for kind in (4, 5):  # source quench, redirect
            send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=kind, code=0) / quote)
        send_ip(net.outside, IP(src=OUTSIDE, dst=ROUTER_OUT) / ICMP(type=3, code=3) / quote)
        wire.wait_for(icmp(3, 3), what="the destination unreachable sent after them")
    assert not wire.received(lambda p: ICMP in p and p[ICMP].type in (4, 5))


# -- RFC 7857 --------------------------------------------------------------------


def sessions_of(net: RouterLab, port: int) -> int:
    return sum(m["sessions"] for m in net.node.router()["nat"] if m["internal_port"] == port)


def test_rfc7857_s2_1_rfc6146_state_machine_and_separate_timeouts(nat_lab: MakeLab) -> None:
    net = nat_lab(tcp_opening_timeout=2, tcp_closing_timeout=6)
    with tcp_listener(net.outside, 80) as listener:
        with tcp_connect(net.inside, 41190, (OUTSIDE, 80)) as sock:
            conn, _ = accept_peer(listener)
            conn.close()
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(10) == b""
        closed_at = time.monotonic()
        # A SYN nobody answers: the session stays in the opening state.
        send_ip(net.inside, IP(src=INSIDE, dst=BEYOND) / TCP(sport=41191, dport=80, flags="S"))
        wait_until(lambda: sessions_of(net, 41191) == 1, timeout=3, what="opening session")
        wait_until(lambda: sessions_of(net, 41191) == 0, timeout=5, what="opening expired")
        assert sessions_of(net, 41190) == 1 and time.monotonic() - closed_at < 6
        wait_until(lambda: sessions_of(net, 41190) == 0, timeout=9, what="closing expired")
        assert time.monotonic() - closed_at >= 6


def test_rfc7857_s2_2_rst_translated_then_session_kept(net: RouterLab) -> None:
    wire = Wire(net.inside)
    with (
        tcp_listener(net.outside, 80) as listener,
        tcp_connect(net.inside, 41200, (OUTSIDE, 80)) as sock,
    ):
        conn, _ = accept_peer(listener)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        reset = wire.wait_for(lambda p: TCP in p and "R" in str(p[TCP].flags), what="RST")
        assert (reset[IP].src, reset[TCP].sport, reset[IP].dst, reset[TCP].dport) == (
            OUTSIDE,
            80,
            INSIDE,
            41200,
        )
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
    assert sessions_of(net, 41200) == 1


def test_rfc7857_s4_paired_pooling_for_every_protocol(net: RouterLab) -> None:
    outside_wire = Wire(net.outside)
    with tcp_listener(net.outside, 80) as listener, tcp_connect(net.inside, 41210, (OUTSIDE, 80)):
        accept_peer(listener)[0].close()
    assert mapped(net, "inside", 41210)[0] == ROUTER_OUT
    send_ip(net.inside, IP(src=INSIDE, dst=OUTSIDE) / ICMP(id=41210))
    outside_wire.wait_for(icmp(8), what="the echo request")
    sources = {p[IP].src for p in outside_wire.received(lambda p: p[IP].src != OUTSIDE)}
    protocols = {p[IP].proto for p in outside_wire.received()}
    assert sources == {ROUTER_OUT} and {1, 6, 17} <= protocols


def test_rfc7857_s5_mapping_per_protocol(net: RouterLab) -> None:
    # inside2 holds UDP port 41220; inside still gets TCP port 41220.
    assert mapped(net, "inside2", 41220) == (ROUTER_OUT, 41220)
    with tcp_listener(net.outside, 80) as listener, tcp_connect(net.inside, 41220, (OUTSIDE, 80)):
        conn, peer = accept_peer(listener)
        conn.close()
    assert peer == (ROUTER_OUT, 41220)
    assert mapped(net, "inside", 41220) != (ROUTER_OUT, 41220)


def test_rfc7857_s6_eif_per_protocol(nat_lab: MakeLab) -> None:
    net = nat_lab(udp_filtering="endpoint-independent")
    wire = Wire(net.inside)
    with udp_socket(net.inside, 41230):
        assert mapped(net, "inside", 41230) == (ROUTER_OUT, 41230)
        # The UDP mapping admits anyone, for UDP only: a SYN to the port is not let in.
        syn = TCP(sport=7300, dport=41230, flags="S")
        send_ip(net.outside2, IP(src=OUTSIDE2, dst=ROUTER_OUT) / syn)
        with udp_socket(net.outside2, 7300) as other:
            other.sendto(b"udp is open", (ROUTER_OUT, 41230))
            wire.wait_for(udp_to(41230, OUTSIDE2, 7300), what="the UDP datagram")
    assert not wire.received(tcp_to(41230))


def test_rfc7857_s12_hairpinned_echo_is_for_the_nat_itself(net: RouterLab) -> None:
    wire, wire2 = Wire(net.inside), Wire(net.inside2)
    assert net.inside.run(["ping", "-c", "1", "-W", "2", ROUTER_OUT]).ok
    send_ip(net.inside, IP(src=INSIDE, dst=ROUTER_OUT) / ICMP(id=0x7857, seq=1))
    reply = wire.wait_for(lambda p: ICMP in p and p[ICMP].type == 0 and p[ICMP].id == 0x7857)
    assert reply[IP].src == ROUTER_OUT and checksums_ok(reply)
    assert not wire2.received(icmp(8))


def test_rfc7857_s10_ip_id_unique_after_translation(net: RouterLab) -> None:
    hosts = ((net.inside, INSIDE, b"A"), (net.inside2, INSIDE2, b"B"))
    wire = Wire(net.outside)
    with udp_socket(net.outside, 7000) as peer:
        # Two inside hosts, one ID, one destination: the datagrams would be one
        # to the outside host's reassembly after source translation. Sent with
        # their fragments interleaved, both arrive whole.
        pieces = [
            fragment(
                IP(src=address, dst=OUTSIDE, id=0x4242)
                / UDP(sport=40150, dport=7000)
                / (tag * 3000),
                fragsize=1000,
            )
            for _, address, tag in hosts
        ]
        for first, second in zip(*pieces, strict=True):
            send_ip(net.inside, first)
            send_ip(net.inside2, second)
        got = {receive(peer)[0] for _ in hosts}
        assert got == {b"A" * 3000, b"B" * 3000}
        # Whole datagrams with DF clear are non-atomic too; with DF set they are
        # atomic and keep their ID (RFC 6864 §4).
        for host, address, _ in hosts:
            for flags, ident in ((0, 0x4343), ("DF", 0x4444)):
                datagram = IP(src=address, dst=OUTSIDE, id=ident, flags=flags)
                send_ip(host, datagram / UDP(sport=40151, dport=7000) / b"whole")
        for _ in range(4):
            assert receive(peer)[0] == b"whole"
    arrived = wire.received(lambda p: p[IP].src == ROUTER_OUT and p[IP].proto == 17)
    fragmented = [p for p in arrived if p.flags.MF or p.frag]
    by_id: dict[int, int] = {}
    for piece in fragmented:
        by_id[piece.id] = by_id.get(piece.id, 0) + 1
    assert sorted(by_id.values()) == [4, 4]  # two IDs, one per datagram
    loose = [
        p.id
        for p in arrived
        if UDP in p and p[UDP].sport != 0 and not p.flags.DF and not p.flags.MF and not p.frag
    ]
    assert len(loose) == 2 and loose[0] != loose[1]
    assert [p.id for p in arrived if p.flags.DF] == [0x4444, 0x4444]
    assert net.counters()["ip-id-rewritten"] >= 4


def test_rfc7857_s10_df_clear_datagram_of_a_fast_path_flow_gets_its_own_id(
    net: RouterLab,
) -> None:
    wire = Wire(net.outside)

    def send(flags: str) -> None:
        datagram = IP(src=INSIDE, dst=OUTSIDE, id=0x5151, flags=flags)
        send_ip(net.inside, datagram / UDP(sport=40152, dport=7000) / flags.encode())

    with udp_socket(net.outside, 7000) as peer:
        # DF-set datagrams until the fast path carries one (the flow's entry is
        # made by its second or third: the first may wait for ARP).
        sent = 0
        while net.node.status()["fast_path"]["hits"] == 0 and sent < 5:
            send("DF")
            assert receive(peer)[0] == b"DF"
            sent += 1
        assert net.node.status()["fast_path"]["hits"] >= 1
        rewritten = net.counters().get("ip-id-rewritten", 0)
        send("")
        assert receive(peer)[0] == b""
    assert net.counters()["ip-id-rewritten"] == rewritten + 1
    arrived = wire.received(lambda p: UDP in p and p[UDP].dport == 7000)
    assert [p.id for p in arrived if p.flags.DF] == [0x5151] * sent
    (loose,) = [p for p in arrived if not p.flags.DF]
    assert loose[IP].src == ROUTER_OUT  # the outside socket got it: its checksums were right
