"""RFC 5382 (NAT behavioural requirements for TCP): one test per REQ, bytes in and out."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, TCPerror

from pktchain.functions.nat.config import NatConfigError
from pktchain.functions.nat.napt import (
    DropReason,
    Filtering,
    NatConfig,
    NatVerdict,
    Realm,
    TcpSessionState,
    UnsolicitedSyn,
)
from support.nat import (
    EXTERNAL,
    INSIDE_A,
    INSIDE_B,
    REMOTE,
    REMOTE_2,
    ROUTER_ON_PATH,
    assert_checksums,
    embedded,
    icmp_error,
    inb,
    make_nat,
    ok,
    out,
    tcp,
)


def test_rfc5382_req1_endpoint_independent_mapping() -> None:
    nat = make_nat()
    first, second = tcp(INSIDE_A, 40000, REMOTE, 80), tcp(INSIDE_A, 40000, REMOTE_2, 443)
    ok(out(nat, first))
    ok(out(nat, second))
    a, b = assert_checksums(first), assert_checksums(second)
    assert (a.src, a[TCP].sport) == (b.src, b[TCP].sport) == (EXTERNAL, 40000)
    assert len(nat.mappings()) == 1


def test_rfc5382_req2_three_way_handshake_data_and_close() -> None:
    nat = make_nat()
    steps = [
        (True, "S"),
        (False, "SA"),
        (True, "A"),
        (True, "PA"),
        (False, "PA"),
        (True, "FA"),
        (False, "FA"),
        (True, "A"),
    ]
    result = None
    for outbound, flags in steps:
        if outbound:
            packet = tcp(INSIDE_A, 40000, REMOTE, 80, flags, payload=b"x" if "P" in flags else b"")
            result = ok(out(nat, packet))
            assert IP(bytes(packet)).src == EXTERNAL
        else:
            packet = tcp(REMOTE, 80, EXTERNAL, 40000, flags)
            result = ok(inb(nat, packet))
            assert IP(bytes(packet)).dst == INSIDE_A
        assert_checksums(packet)
    assert result is not None and result.session is not None
    assert result.session.state is TcpSessionState.BOTH_FIN


def test_rfc5382_req2a_simultaneous_open() -> None:
    nat = make_nat(tcp_filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT)
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 5555, "S")))
    crossing = tcp(REMOTE, 5555, EXTERNAL, 40000, "S")  # a SYN, not a SYN-ACK
    ok(inb(nat, crossing))
    assert IP(bytes(crossing)).dst == INSIDE_A
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 5555, "SA")))
    last = ok(inb(nat, tcp(REMOTE, 5555, EXTERNAL, 40000, "SA")))
    assert last.session is not None and last.session.state is TcpSessionState.ESTABLISHED


def test_rfc5382_req3_tcp_filtering_configurable_apart_from_udp() -> None:
    nat = make_nat(
        tcp_filtering=Filtering.ENDPOINT_INDEPENDENT,
        udp_filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT,
    )
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80)))
    stranger = tcp(REMOTE_2, 1234, EXTERNAL, 40000, "S")
    ok(inb(nat, stranger))  # EIF for TCP (REQ-3a, REQ-3b)
    assert IP(bytes(stranger)).dst == INSIDE_A
    nat_adf = make_nat()
    ok(out(nat_adf, tcp(INSIDE_A, 40000, REMOTE, 80)))
    assert inb(nat_adf, tcp(REMOTE_2, 1234, EXTERNAL, 40000, "S")).reason is (DropReason.SYN_HELD)
    ok(inb(nat_adf, tcp(REMOTE, 8080, EXTERNAL, 40000, "S")))  # same address: ADF admits


def test_rfc5382_req4_unsolicited_syn_held_then_port_unreachable() -> None:
    nat = make_nat()
    syn = tcp(REMOTE, 1234, EXTERNAL, 2222, "S")
    original = bytes(syn)
    assert inb(nat, syn, now=100.0).reason is DropReason.SYN_HELD
    assert nat.next_deadline() == pytest.approx(106.0)
    assert nat.on_timer(105.99).replies == ()  # no answer for at least 6 s
    replies = nat.on_timer(106.0).replies
    assert len(replies) == 1 and replies[0].reply is not None
    assert replies[0].reply_to is Realm.EXTERNAL
    decoded = assert_checksums(replies[0].reply)
    assert (decoded.src, decoded.dst) == (EXTERNAL, REMOTE)
    assert (decoded[ICMP].type, decoded[ICMP].code) == (3, 3)
    assert bytes(embedded(decoded)) == original
    assert nat.next_deadline() is None


def test_rfc5382_req4_outbound_syn_cancels_held_syn() -> None:
    nat = make_nat(tcp_filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT)
    assert inb(nat, tcp(REMOTE, 1234, EXTERNAL, 40000, "S"), now=0.0).reason is (
        DropReason.SYN_HELD
    )
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 1234, "S"), now=2.0))
    timer = nat.on_timer(10.0)
    assert timer.replies == ()  # the held SYN was dropped silently
    assert nat.counters()["unsolicited-syn-superseded"] == 1
    ok(inb(nat, tcp(REMOTE, 1234, EXTERNAL, 40000, "S"), now=3.0))  # the peer's retransmission


def test_rfc5382_req4a_policy_drops_silently() -> None:
    for policy in (UnsolicitedSyn.HOLD_THEN_DROP, UnsolicitedSyn.DROP):
        nat = make_nat(unsolicited_syn=policy)
        result = inb(nat, tcp(REMOTE, 1234, EXTERNAL, 2222, "S"), now=0.0)
        assert result.verdict is NatVerdict.DROPPED
        assert nat.on_timer(60.0).replies == ()


def test_rfc5382_req5_idle_timeouts() -> None:
    nat = make_nat()
    config = nat.config
    assert config.tcp_established_timeout == 2 * 3600 + 4 * 60
    assert config.tcp_opening_timeout == config.tcp_closing_timeout == 240
    ok(out(nat, tcp(INSIDE_A, 40000, REMOTE, 80, "S"), now=0.0))
    assert nat.on_timer(239.0).expired == ()  # transitory: 4 min
    assert len(nat.on_timer(240.0).expired) == 1
    ok(out(nat, tcp(INSIDE_A, 40001, REMOTE, 80, "S"), now=1000.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40001, "SA"), now=1000.0))
    assert nat.on_timer(1000.0 + 7439).expired == ()  # established: 2 h 4 min
    assert len(nat.on_timer(1000.0 + 7440).expired) == 1
    with pytest.raises(NatConfigError, match="tcp_established_timeout"):
        NatConfig(EXTERNAL, ("10.0.0.0/24",), tcp_established_timeout=7439)
    assert NatConfig(EXTERNAL, ("10.0.0.0/24",), tcp_opening_timeout=60).tcp_opening_timeout == 60


def test_rfc5382_req6_no_alg_rewrites_payload() -> None:
    nat = make_nat()
    port_command = b"PORT 10,0,0,5,156,64\r\n"  # an FTP ALG would rewrite this
    packet = tcp(INSIDE_A, 40000, REMOTE, 21, "S")
    ok(out(nat, packet))
    ok(inb(nat, tcp(REMOTE, 21, EXTERNAL, 40000, "SA")))
    data = tcp(INSIDE_A, 40000, REMOTE, 21, "PA", payload=port_command)
    ok(out(nat, data))
    assert bytes(assert_checksums(data)[TCP].payload) == port_command


def test_rfc5382_req7_no_port_overloading() -> None:
    nat = make_nat()
    a, b = tcp(INSIDE_A, 40000, REMOTE, 80), tcp(INSIDE_B, 40000, REMOTE_2, 80)
    ok(out(nat, a))
    ok(out(nat, b))
    port_a, port_b = IP(bytes(a))[TCP].sport, IP(bytes(b))[TCP].sport
    assert port_a != port_b
    assert port_b >= 1024
    assert_checksums(b)


def test_rfc5382_req8_hairpinning_with_external_source() -> None:
    nat = make_nat()
    nat.add_port_forward("tcp", 8022, INSIDE_B, 22)
    syn = tcp(INSIDE_A, 40000, EXTERNAL, 8022, "S")
    ok(out(nat, syn))
    decoded = assert_checksums(syn)
    assert (decoded.src, decoded[TCP].sport) == (EXTERNAL, 40000)  # REQ-8a
    assert (decoded.dst, decoded[TCP].dport) == (INSIDE_B, 22)
    synack = tcp(INSIDE_B, 22, EXTERNAL, 40000, "SA")
    ok(out(nat, synack))
    decoded = assert_checksums(synack)
    assert (decoded.src, decoded[TCP].sport) == (EXTERNAL, 8022)
    assert (decoded.dst, decoded[TCP].dport) == (INSIDE_A, 40000)


def test_rfc5382_req9_icmp_destination_unreachable_translated() -> None:
    nat = make_nat()
    syn = tcp(INSIDE_A, 40000, REMOTE, 80, "S")
    ok(out(nat, syn))
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(syn), icmp_type=3, code=1)
    ok(inb(nat, error))
    decoded = assert_checksums(error)
    assert decoded.dst == INSIDE_A
    assert (embedded(decoded).src, decoded[TCPerror].sport) == (INSIDE_A, 40000)
    assert (embedded(decoded).dst, decoded[TCPerror].dport) == (REMOTE, 80)


def test_rfc5382_req10_icmp_does_not_end_connection() -> None:
    nat = make_nat()
    syn = tcp(INSIDE_A, 40000, REMOTE, 80, "S")
    ok(out(nat, syn, now=0.0))
    ok(inb(nat, tcp(REMOTE, 80, EXTERNAL, 40000, "SA"), now=0.0))
    session = nat.sessions()[0]
    ok(inb(nat, icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(syn), 3, 4), now=5.0))
    after = nat.sessions()
    assert after == [session]
    assert after[0].state is TcpSessionState.ESTABLISHED
