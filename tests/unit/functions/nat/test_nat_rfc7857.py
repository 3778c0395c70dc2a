"""RFC 7857 (updates to the NAT behavioural requirements): one test per updated behaviour."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP

from pktchain.functions.common.tcp import TCP_TRANSITIONS, Lifetime, TcpEvent, tcp_transition
from pktchain.functions.nat.napt import DropReason, Filtering, TcpSessionState
from support.nat import (
    EXTERNAL,
    INSIDE_A,
    INSIDE_B,
    REMOTE,
    REMOTE_2,
    echo,
    icmp_error,
    inb,
    make_nat,
    ok,
    out,
    tcp,
    udp,
)


def test_rfc7857_s2_1_rfc6146_state_machine_and_separate_timeouts() -> None:
    nat = make_nat(tcp_opening_timeout=100, tcp_closing_timeout=30)
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "S"), now=0.0))
    assert nat.sessions()[0].state is TcpSessionState.INT_SYN
    assert nat.sessions()[0].expires == 100  # the opening timeout
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "SA"), now=1.0))
    assert nat.sessions()[0].state is TcpSessionState.ESTABLISHED
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "FA"), now=2.0))
    assert nat.sessions()[0].state is TcpSessionState.INT_FIN
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "FA"), now=3.0))
    assert nat.sessions()[0].state is TcpSessionState.BOTH_FIN
    assert nat.sessions()[0].expires == 33  # the closing timeout
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "A"), now=4.0))  # last ACK: no refresh
    assert nat.on_timer(32.0).expired == ()
    assert len(nat.on_timer(33.0).expired) == 1
    # The table is the one of RFC 6146 §3.5.2.2 (spot checks).
    assert tcp_transition(TcpSessionState.CLOSED, TcpEvent.EXT_SYN) == (
        TcpSessionState.EXT_SYN,
        Lifetime.INCOMING_SYN,
    )
    assert tcp_transition(TcpSessionState.BOTH_FIN, TcpEvent.INT_OTHER) == (
        TcpSessionState.BOTH_FIN,
        Lifetime.KEEP,
    )
    assert (TcpSessionState.TRANSITORY, TcpEvent.EXT_RST) not in TCP_TRANSITIONS


def test_rfc7857_s2_2_rst_translated_then_session_kept_4_minutes() -> None:
    nat = make_nat()
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "S"), now=0.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "SA"), now=0.0))
    rst = tcp(REMOTE, 80, EXTERNAL, 40000, "R")
    ok(inb(nat, rst, now=10.0))
    assert IP(bytes(rst)).dst == INSIDE_A  # translated by the mapping
    assert nat.sessions()[0].state is TcpSessionState.TRANSITORY
    assert nat.on_timer(249.0).expired == ()
    assert len(nat.on_timer(250.0).expired) == 1
    assert not nat.mappings()


def test_rfc7857_s2_2_traffic_after_rst_revives() -> None:
    nat = make_nat()
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "S"), now=0.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "SA"), now=0.0))
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "R"), now=1.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "A"), now=2.0))
    assert nat.sessions()[0].state is TcpSessionState.ESTABLISHED


def test_rfc7857_s2_1_port_reused_after_close_opens_again() -> None:
    nat = make_nat()
    for flags, outbound in (("S", True), ("SA", False), ("FA", True), ("FA", False)):
        packet = (
            tcp(INSIDE_A, 40000, REMOTE, 80, flags)
            if outbound
            else tcp(REMOTE, 80, EXTERNAL, 40000, flags)
        )
        ok(out(nat, packet, now=0.0) if outbound else inb(nat, packet, now=0.0))
    assert nat.sessions()[0].state is TcpSessionState.BOTH_FIN
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "S"), now=10.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "SA"), now=10.0))
    assert nat.sessions()[0].state is TcpSessionState.ESTABLISHED
    assert nat.sessions()[0].expires == 10 + 7440


def test_rfc7857_s3_no_port_overlapping() -> None:
    # Port overlapping is a MAY; the NAT keeps one mapping per external port.
    nat = make_nat()
    ok(out(nat, udp(INSIDE_A, 7000, REMOTE, 1)))
    second = udp(INSIDE_B, 7000, REMOTE_2, 2)
    ok(out(nat, second))
    assert IP(bytes(second))[UDP].sport != 7000


def test_rfc7857_s4_paired_pooling_for_every_protocol() -> None:
    nat = make_nat()
    packets = [udp(INSIDE_A, 1, REMOTE, 1), tcp(INSIDE_A, 2, REMOTE, 2), echo(INSIDE_A, REMOTE, 3)]
    for packet in packets:
        ok(out(nat, packet))
        assert IP(bytes(packet)).src == EXTERNAL


def test_rfc7857_s5_mapping_per_protocol() -> None:
    nat = make_nat()
    ok(out(nat, udp(INSIDE_A, 5353, REMOTE, 5353)))
    assert {m.proto.name for m in nat.mappings()} == {"UDP"}
    ok(out(nat, tcp(INSIDE_A, 5353, REMOTE, 80)))
    assert sorted(m.proto.name for m in nat.mappings()) == ["TCP", "UDP"]


def test_rfc7857_s6_eif_per_protocol() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_A, 5000, REMOTE, 3478)))
    ok(inb(nat, udp(REMOTE_2, 1, EXTERNAL, 5000)))  # UDP: anyone
    assert inb(nat, tcp(REMOTE_2, 1, EXTERNAL, 5000, "A")).reason is DropReason.NO_MAPPING


def test_rfc7857_s7_eif_mapping_not_held_open_from_outside() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_A, 5000, REMOTE, 3478), now=0.0))
    for t in range(10, 300, 10):
        ok(inb(nat, udp(REMOTE, 3478, EXTERNAL, 5000), now=float(t)))
    expired = nat.on_timer(300.0).expired
    assert [s.remote for s in expired] == [(bytes([198, 51, 100, 7]), 3478)]


def test_rfc7857_s7_1_outbound_errors_and_rst_do_not_refresh() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_A, 5000, REMOTE, 3478), now=0.0))
    arrived = udp(REMOTE, 3478, EXTERNAL, 5000)
    ok(inb(nat, arrived, now=100.0))
    ok(out(nat, icmp_error(INSIDE_A, REMOTE, bytes(arrived)), now=200.0))
    assert nat.sessions()[0].expires == 300
    # A RST answering an admitted inbound SYN does not extend its 6 s session.
    tcp_nat = make_nat()
    tcp_nat.add_port_forward("tcp", 2222, INSIDE_A, 22)
    ok(inb(tcp_nat, tcp(REMOTE, 999, EXTERNAL, 2222, "S"), now=0.0))
    ok(out(tcp_nat, tcp(INSIDE_A, 22, REMOTE, 999, "RA"), now=1.0))
    assert tcp_nat.sessions()[0].expires == 6
    assert len(tcp_nat.on_timer(6.0).expired) == 1


def test_rfc7857_s8_port_parity_may_be_disabled() -> None:
    parities = set()
    for seed in range(20):
        nat = make_nat(preserve_parity=False, port_seed=seed)
        ok(out(nat, udp(INSIDE_A, 5000, REMOTE, 9)))
        packet = udp(INSIDE_B, 5000, REMOTE, 9)
        ok(out(nat, packet))
        parities.add(IP(bytes(packet))[UDP].sport % 2)
    assert parities == {0, 1}


def test_rfc7857_s9_changed_ports_are_random() -> None:
    ports = set()
    for seed in range(10):
        nat = make_nat(port_seed=seed)
        ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80)))
        packet = tcp(INSIDE_B, 40000, REMOTE, 80)
        ok(out(nat, packet))
        ports.add(IP(bytes(packet))[TCP].sport)
    assert len(ports) >= 8  # not a sequence: different each time
    assert all(p % 2 == 0 and p >= 1024 for p in ports)


def test_rfc7857_s11_query_mapping_removed_with_last_session() -> None:
    nat = make_nat()
    ok(out(nat, echo(INSIDE_A, REMOTE, 42), now=0.0))
    ok(out(nat, echo(INSIDE_A, REMOTE_2, 42), now=30.0))
    nat.on_timer(60.0)
    assert len(nat.mappings()) == 1
    nat.on_timer(90.0)
    assert nat.mappings() == []


def test_rfc7857_s12_hairpinned_echo_is_for_the_nat_itself() -> None:
    # With NAPT an echo request to the external address is the router's to
    # answer; hairpinned ICMP errors are translated (test_rfc5508_req7_...).
    nat = make_nat()
    assert out(nat, echo(INSIDE_A, EXTERNAL, 1)).reason is DropReason.LOCAL_DESTINATION
