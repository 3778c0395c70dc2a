"""RFC 4787 (NAT behavioural requirements for unicast UDP): one test per REQ.

Bytes in, bytes out: packets are built by scapy, translated by the NAT in place,
and decoded and checksummed by scapy.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP, UDPerror

from pktchain.functions.nat.config import NatConfigError
from pktchain.functions.nat.napt import DropReason, Filtering, NatConfig, NatVerdict
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
    raw,
    udp,
)


def test_rfc4787_req1_endpoint_independent_mapping() -> None:
    nat = make_nat()
    first, second = udp(INSIDE_A, 40000, REMOTE, 53), udp(INSIDE_A, 40000, REMOTE_2, 123)
    ok(out(nat, first))
    ok(out(nat, second))
    a, b = assert_checksums(first), assert_checksums(second)
    assert (a.src, a[UDP].sport) == (b.src, b[UDP].sport) == (EXTERNAL, 40000)
    assert len(nat.mappings()) == 1
    assert len(nat.sessions()) == 2


def test_rfc4787_req2_paired_address_pooling() -> None:
    # One external address: every session of an internal host uses it (paired).
    nat = make_nat()
    for port in (1000, 2000, 3000):
        packet = udp(INSIDE_A, port, REMOTE, 53)
        ok(out(nat, packet))
        assert IP(bytes(packet)).src == EXTERNAL
    assert {m.external_address for m in nat.mappings()} == {EXTERNAL}


@pytest.mark.parametrize("port", [53, 1023, 1024, 40000, 65535])
def test_rfc4787_req3_no_port_overloading_and_same_range(port: int) -> None:
    nat = make_nat()
    a, b = udp(INSIDE_A, port, REMOTE, 9), udp(INSIDE_B, port, REMOTE, 9)
    ok(out(nat, a))
    ok(out(nat, b))
    port_a, port_b = IP(bytes(a))[UDP].sport, IP(bytes(b))[UDP].sport
    assert port_a == port  # preserved while free
    assert port_b != port_a  # never two mappings on one port
    assert (port_b < 1024) == (port < 1024)  # the range is kept
    assert port_b != 0
    assert_checksums(b)
    # Replies reach the right host by external port.
    back = udp(REMOTE, 9, EXTERNAL, port_b)
    ok(inb(nat, back))
    assert IP(bytes(back)).dst == INSIDE_B


def test_rfc4787_req4_port_parity_preserved() -> None:
    nat = make_nat()
    for port in (5000, 5001):
        ok(out(nat, udp(INSIDE_A, port, REMOTE, 9)))
    for port in (5000, 5001):
        packet = udp(INSIDE_B, port, REMOTE, 9)
        ok(out(nat, packet))
        translated = IP(bytes(packet))[UDP].sport
        assert translated != port
        assert translated % 2 == port % 2


def test_rfc4787_req5_udp_mapping_timer() -> None:
    nat = make_nat()
    assert nat.config.udp_timeout == 300  # REQ-5c: 5 min default
    result = ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53), now=10.0))
    assert nat.on_timer(10.0 + 299).expired == ()
    expired = nat.on_timer(10.0 + 300).expired
    assert expired == (result.session,)
    assert not nat.mappings()
    with pytest.raises(NatConfigError, match="udp_timeout"):
        NatConfig(EXTERNAL, ("10.0.0.0/24",), udp_timeout=119)
    assert NatConfig(EXTERNAL, ("10.0.0.0/24",), udp_timeout=120).udp_timeout == 120  # REQ-5b


def test_rfc4787_req6_outbound_refresh() -> None:
    nat = make_nat()
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53), now=0.0))
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53), now=200.0))  # outbound refresh: True
    ok(inb(nat, udp(REMOTE, 53, EXTERNAL, 4000), now=450.0))  # no inbound refresh by default
    assert nat.on_timer(499.0).expired == ()
    assert len(nat.on_timer(500.0).expired) == 1


def test_rfc4787_req6a_inbound_refresh_option() -> None:
    nat = make_nat(inbound_refresh=True)
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53), now=0.0))
    ok(inb(nat, udp(REMOTE, 53, EXTERNAL, 4000), now=250.0))
    assert nat.on_timer(549.0).expired == ()
    assert len(nat.on_timer(550.0).expired) == 1


def test_rfc4787_req7_external_address_outside_internal_networks() -> None:
    with pytest.raises(NatConfigError, match="REQ-7"):
        NatConfig("10.0.0.1", ("10.0.0.0/24",))


@pytest.mark.parametrize(
    ("filtering", "same_address_other_port", "other_address"),
    [
        (Filtering.ENDPOINT_INDEPENDENT, True, True),
        (Filtering.ADDRESS_DEPENDENT, True, False),
        (Filtering.ADDRESS_AND_PORT_DEPENDENT, False, False),
    ],
)
def test_rfc4787_req8_filtering(
    filtering: Filtering, same_address_other_port: bool, other_address: bool
) -> None:
    nat = make_nat(udp_filtering=filtering)
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 3478)))
    answer = udp(REMOTE, 3478, EXTERNAL, 4000)
    ok(inb(nat, answer))  # the endpoint it sent to always gets through
    assert IP(bytes(answer)).dst == INSIDE_A
    for packet, admitted in (
        (udp(REMOTE, 9999, EXTERNAL, 4000), same_address_other_port),
        (udp(REMOTE_2, 3478, EXTERNAL, 4000), other_address),
    ):
        result = inb(nat, packet)
        if admitted:
            ok(result)
            assert IP(bytes(packet)).dst == INSIDE_A
            assert_checksums(packet)
        else:
            assert result.reason is DropReason.FILTERED


def test_rfc4787_req8_default_is_address_dependent() -> None:
    config = NatConfig(EXTERNAL, ("10.0.0.0/24",))
    assert config.udp_filtering is Filtering.ADDRESS_DEPENDENT
    assert config.tcp_filtering is Filtering.ADDRESS_DEPENDENT


def test_rfc4787_req9_hairpinning_with_external_source() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_B, 6000, REMOTE, 3478)))  # B's mapping: EXTERNAL:6000
    hairpin = udp(INSIDE_A, 5000, EXTERNAL, 6000, b"to B")
    result = ok(out(nat, hairpin))
    decoded = assert_checksums(hairpin)
    assert (decoded.src, decoded[UDP].sport) == (EXTERNAL, 5000)  # REQ-9a
    assert (decoded.dst, decoded[UDP].dport) == (INSIDE_B, 6000)
    assert bytes(decoded[UDP].payload) == b"to B"
    assert result.rewrite is not None and result.rewrite.src and result.rewrite.dst
    # B answers to the external endpoint it saw: back to A the same way.
    answer = udp(INSIDE_B, 6000, EXTERNAL, 5000, b"to A")
    ok(out(nat, answer))
    decoded = assert_checksums(answer)
    assert (decoded.src, decoded[UDP].sport, decoded.dst, decoded[UDP].dport) == (
        EXTERNAL,
        6000,
        INSIDE_A,
        5000,
    )


def test_rfc4787_req10_no_application_level_gateway() -> None:
    nat = make_nat()
    body = f"INVITE sip:x@{REMOTE} SIP/2.0\r\nContact: <sip:a@{INSIDE_A}:5060>\r\n".encode()
    packet = udp(INSIDE_A, 5060, REMOTE, 5060, body)
    ok(out(nat, packet))
    assert bytes(IP(bytes(packet))[UDP].payload) == body


def test_rfc4787_req11_deterministic_refusal_instead_of_overloading() -> None:
    nat = make_nat(preserve_parity=False)
    # Take every low port (1..1023), then one more host needs one.
    for port in range(1, 1024):
        ok(out(nat, udp(INSIDE_A, port, REMOTE, 9)))
    refused = out(nat, udp(INSIDE_B, 80, REMOTE, 9))
    assert refused.verdict is NatVerdict.REPLY
    assert refused.reason is DropReason.PORTS_EXHAUSTED
    # Mapping stays endpoint-independent and filtering unchanged under pressure.
    ok(out(nat, udp(INSIDE_A, 80, REMOTE_2, 9)))
    assert len({m.external_port for m in nat.mappings()}) == len(nat.mappings())
    assert inb(nat, udp(REMOTE_2, 9, EXTERNAL, 81)).reason is DropReason.FILTERED


def test_rfc4787_req12_icmp_does_not_end_mapping() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 33434)
    result = ok(out(nat, sent, now=0.0))
    expires = result.session.expires if result.session else None
    # REQ-12a: the error comes from a router on the path, not from REMOTE.
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(sent), icmp_type=3, code=1)
    ok(inb(nat, error, now=100.0))
    decoded = assert_checksums(error)
    assert decoded.dst == INSIDE_A
    assert decoded[ICMP].type == 3  # REQ-12b: destination unreachable supported
    assert (embedded(decoded).src, decoded[UDPerror].sport) == (INSIDE_A, 4000)
    assert len(nat.mappings()) == 1
    assert result.session is not None and result.session.expires == expires  # not refreshed
    ok(inb(nat, udp(REMOTE, 33434, EXTERNAL, 4000), now=101.0))


def test_rfc4787_req14_fragments_are_left_to_reassembly() -> None:
    # Not met by the NAT alone: it translates whole datagrams; the router
    # reassembles first. A fragment is a counted drop, never a wrong rewrite.
    nat = make_nat()
    packet = raw(IP(src=INSIDE_A, dst=REMOTE, flags="MF") / UDP(sport=1, dport=2) / b"x")
    assert out(nat, packet).reason is DropReason.FRAGMENT
    assert nat.counters()[DropReason.FRAGMENT.value] == 1
