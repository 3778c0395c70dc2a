"""The NAPT as a function (`kind: nat`): interfaces, leases, timers, ICMP it sends, config.

The NAT's own behaviour (RFC 4787, 5382, 5508, 7857) is tested in test_nat_*.py;
these tests are about the wrapper: which interface a packet leaves on, what
happens to its Ethernet header, the leases and how fast-path activity keeps
sessions alive.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.nat.function import NatFunction
from pktchain.functions.sdk import FlowLease, Packet, Result, Verdict, function_class, make_function
from pktchain.functions.sdk.schema import ConfigError
from pktchain.packet.checksum import partial_checksum_seed
from pktchain.packet.layers import Ethernet, Ipv4, Udp, build
from pktchain.packet.parse import parse_frame
from pktchain.packet.virtio import needs_csum_header
from support.fn_frames import (
    MAC_A,
    MAC_B,
    assert_checksums,
    driven,
    emitted,
    packet,
    raw_packet,
)

EXTERNAL = "203.0.113.1"
INSIDE = "10.0.0.5"
INSIDE_2 = "10.0.0.6"
REMOTE = "198.51.100.7"


def nat(**config: Any) -> NatFunction:
    made = make_function(
        "nat",
        {
            "external_address": EXTERNAL,
            "internal_networks": ["10.0.0.0/24"],
            "port_seed": 1,
            **config,
        },
    )
    assert isinstance(made, NatFunction)
    return made


def out_udp(sport: int = 5000, src: str = INSIDE, dst: str = REMOTE, dport: int = 53) -> Packet:
    return packet(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / b"query", "ingress")


def in_udp(dport: int = 5000, src: str = REMOTE, sport: int = 53) -> Packet:
    datagram = IP(src=src, dst=EXTERNAL) / UDP(sport=sport, dport=dport) / b"answer"
    return packet(datagram, "egress", forward=False)


def lease_of(result: Result) -> FlowLease:
    assert result.verdict is Verdict.FORWARD, result
    assert result.lease is not None
    return result.lease


def decoded(given_packet: Packet) -> Ether:
    return Ether(given_packet.ethernet)


# -- loading and configuration -----------------------------------------------------------


def test_the_kind_loads_the_class() -> None:
    assert function_class("nat") is NatFunction
    assert NatFunction.INTERFACES == ("ingress", "egress")


def test_it_cannot_be_reconfigured_while_running() -> None:
    with pytest.raises(ConfigError):
        nat().reconfigure({"external_address": "203.0.113.2", "internal_networks": ["10.0.0.0/24"]})


def test_defaults_are_the_nats_own() -> None:
    config = nat().config
    defaults = NatConfig("192.0.2.1", ("10.0.0.0/8",))
    assert config.udp_timeout == defaults.udp_timeout
    assert config.tcp_established_timeout == defaults.tcp_established_timeout
    assert config.udp_filtering is defaults.udp_filtering


def test_every_wrong_field_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        make_function(
            "nat",
            {
                "internal_networks": [],
                "udp_timeout": 60,
                "icmp_timeout": 10,
                "udp_filtering": "open",
                "port_forwards": [{"protocol": "sctp", "external_port": 0}],
            },
        )
    fields = {error.field for error in caught.value.errors}
    assert fields == {
        "external_address",
        "internal_networks",
        "udp_timeout",
        "icmp_timeout",
        "udp_filtering",
        "port_forwards[0].protocol",
        "port_forwards[0].external_port",
        "port_forwards[0].internal_address",
        "port_forwards[0].internal_port",
    }


def test_rfc_minima_are_stated() -> None:
    with pytest.raises(ConfigError) as caught:
        nat(udp_timeout=119)
    assert "at least 120" in str(caught.value)


def test_the_external_address_must_not_be_inside() -> None:
    with pytest.raises(ConfigError) as caught:
        nat(external_address="10.0.0.1")
    assert "external_address" in str(caught.value)
    assert "REQ-7" in str(caught.value)


def test_a_port_forward_must_lead_inside() -> None:
    rule = {
        "protocol": "tcp",
        "external_port": 8080,
        "internal_address": REMOTE,
        "internal_port": 80,
    }
    with pytest.raises(ConfigError) as caught:
        nat(port_forwards=[rule])
    assert "port_forwards[0].internal_address: not in internal_networks" in str(caught.value)


# -- translation and interfaces ----------------------------------------------------------


def test_outbound_leaves_on_egress_translated_with_its_macs() -> None:
    fn = nat()
    given_packet = out_udp()
    result = fn.process(given_packet, 0.0)
    assert (result.verdict, result.iface) == (Verdict.FORWARD, "egress")
    frame = decoded(given_packet)
    assert (frame.src, frame.dst) == (MAC_A, MAC_B)  # a bump in the wire: L2 untouched
    assert (frame[IP].src, frame[UDP].sport) == (EXTERNAL, 5000)  # port preserved
    assert frame[IP].ttl == 64
    assert_checksums(given_packet.ethernet)
    assert given_packet.info.src == bytes([203, 0, 113, 1])  # the parse follows the rewrite


def test_inbound_answers_leave_on_ingress() -> None:
    fn = nat()
    fn.process(out_udp(), 0.0)
    answer = in_udp()
    result = fn.process(answer, 1.0)
    assert (result.verdict, result.iface) == (Verdict.FORWARD, "ingress")
    assert decoded(answer)[IP].dst == INSIDE
    assert_checksums(answer.ethernet)


def test_hairpinned_packets_go_back_inside() -> None:
    fn = nat(udp_filtering="endpoint-independent")
    fn.process(out_udp(sport=6000, src=INSIDE_2), 0.0)  # INSIDE_2 has 203.0.113.1:6000
    hairpin = out_udp(dst=EXTERNAL, dport=6000)
    result = fn.process(hairpin, 1.0)
    assert (result.verdict, result.iface) == (Verdict.FORWARD, "ingress")
    frame = decoded(hairpin)
    assert (frame[IP].src, frame[IP].dst, frame[UDP].dport) == (EXTERNAL, INSIDE_2, 6000)


def test_a_partial_checksum_seed_is_kept_right() -> None:
    fn = nat()
    frame = build(
        Ethernet(src=MAC_A, dst=MAC_B),
        Ipv4(src=INSIDE, dst=REMOTE),
        Udp(sport=5000, dport=53, partial=True),
        b"offloaded",
    )
    header = needs_csum_header(parse_frame(frame))
    given_packet = Packet(bytearray(header.pack() + frame), "ingress")
    fn.process(given_packet, 0.0)
    seed = int.from_bytes(given_packet.buf[10 + 14 + 20 + 6 : 10 + 14 + 20 + 8], "big")
    external = bytes([203, 0, 113, 1])
    assert seed == partial_checksum_seed(external, bytes([198, 51, 100, 7]), 17, 8 + 9)


def test_a_port_forward_from_the_configuration_admits_outsiders() -> None:
    rule = {
        "protocol": "tcp",
        "external_port": 8080,
        "internal_address": INSIDE,
        "internal_port": 80,
    }
    fn = nat(port_forwards=[rule])
    syn = IP(src=REMOTE, dst=EXTERNAL) / TCP(sport=40000, dport=8080, flags="S")
    given_packet = packet(syn, "egress", forward=False)
    assert fn.process(given_packet, 0.0).iface == "ingress"
    assert (decoded(given_packet)[IP].dst, decoded(given_packet)[TCP].dport) == (INSIDE, 80)


def test_an_inbound_icmp_error_is_translated_without_a_lease() -> None:
    fn = nat()
    query = out_udp()
    fn.process(query, 0.0)
    sent = decoded(query)[IP]
    error = IP(src="192.0.2.99", dst=EXTERNAL) / ICMP(type=11, code=0) / bytes(sent)
    given_packet = packet(error, "egress", forward=False)
    result = fn.process(given_packet, 1.0)
    assert (result.verdict, result.iface, result.lease) == (Verdict.FORWARD, "ingress", None)
    assert decoded(given_packet)[IPerror].src == INSIDE


def test_unsolicited_inbound_is_dropped_with_its_reason() -> None:
    fn = nat()
    result = driven(fn, in_udp(dport=7777), 0.0)
    assert (result.verdict, result.reason) == (Verdict.DROP, "drop-no-mapping")
    assert fn.counters["drop-no-mapping"] == 1


def test_frames_that_are_not_ip_pass_and_ipv6_is_dropped() -> None:
    fn = nat()
    arp = raw_packet(bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=REMOTE)))
    assert fn.process(arp, 0.0).verdict is Verdict.FORWARD
    six = packet(IPv6(src="fd00::1", dst="fd00::2") / UDP(), "ingress")
    assert fn.process(six, 0.0).reason == "drop-not-ipv4"


def test_a_malformed_frame_is_a_counted_drop() -> None:
    fn = nat()
    truncated = bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src=INSIDE, dst=REMOTE) / UDP())[:30]
    assert fn.process(raw_packet(truncated), 0.0).reason == "drop-malformed"


# -- ICMP the NAT sends ------------------------------------------------------------------


def test_a_refused_session_is_answered_3_13_back_to_its_sender() -> None:
    fn = nat(max_sessions=0)
    result = fn.process(out_udp(), 0.0)
    assert (result.verdict, result.reason) == (Verdict.REPLY, "drop-session-limit")
    ((iface, frame),) = emitted(result)
    assert iface == "ingress"
    assert (frame.src, frame.dst) == (MAC_B, MAC_A)
    assert (frame[ICMP].type, frame[ICMP].code) == (3, 13)  # RFC 5508 REQ-8
    assert (frame[IP].src, frame[IP].dst) == (EXTERNAL, INSIDE)
    assert frame[UDPerror].sport == 5000
    assert_checksums(result.emit[0][1])


def test_icmp_errors_are_rate_limited() -> None:
    fn = nat(max_sessions=0, icmp_error_rate=1, icmp_error_burst=1)
    assert fn.process(out_udp(), 0.0).verdict is Verdict.REPLY
    result = fn.process(out_udp(), 0.0)
    assert (result.verdict, result.emit) == (Verdict.DROP, [])
    assert fn.counters["drop-icmp-rate-limit"] == 1


def test_an_unsolicited_syn_is_answered_after_it_was_held() -> None:
    """RFC 5382 REQ-4: held at least 6 s, then port unreachable, back the way it came."""
    fn = nat()
    syn = IP(src=REMOTE, dst=EXTERNAL) / TCP(sport=40000, dport=2222, flags="S")
    result = fn.process(packet(syn, "egress", forward=False), 0.0)
    assert result.reason == "drop-syn-held"
    assert fn.next_deadline() == 6.0
    assert fn.on_timer(5.9) == []
    ((iface, data),) = fn.on_timer(6.0)
    frame = Ether(data)
    assert iface == "egress"
    assert (frame.src, frame.dst) == (MAC_A, MAC_B)
    assert (frame[ICMP].type, frame[ICMP].code) == (3, 3)
    assert frame[IP].dst == REMOTE


# -- leases and timers ----------------------------------------------------------------------


def test_each_direction_of_a_session_has_its_lease() -> None:
    fn = nat()
    outbound = lease_of(fn.process(out_udp(), 0.0))
    inbound = lease_of(fn.process(in_udp(), 1.0))
    assert outbound is not inbound
    assert lease_of(fn.process(out_udp(), 2.0)) is outbound
    assert fn.counters["leases-granted"] == 2


def tcp_segment(flags: str, *, outbound: bool) -> Packet:
    if outbound:
        segment = IP(src=INSIDE, dst=REMOTE) / TCP(sport=40000, dport=80, flags=flags)
        return packet(segment, "ingress")
    segment = IP(src=REMOTE, dst=EXTERNAL) / TCP(sport=80, dport=40000, flags=flags)
    return packet(segment, "egress", forward=False)


def test_a_tcp_session_is_leased_once_established_and_revoked_at_its_fin() -> None:
    fn = nat()
    assert fn.process(tcp_segment("S", outbound=True), 0.0).lease is None
    lease_of(fn.process(tcp_segment("SA", outbound=False), 0.0))
    lease = lease_of(fn.process(tcp_segment("A", outbound=True), 0.0))
    result = fn.process(tcp_segment("FA", outbound=True), 1.0)
    assert result.verdict is Verdict.FORWARD
    assert result.lease is None
    assert not lease.valid


def test_a_session_that_expires_revokes_its_leases() -> None:
    fn = nat()
    lease = lease_of(fn.process(out_udp(), 0.0))
    fn.on_timer(299.0)
    assert lease.valid
    fn.on_timer(300.0)
    assert not lease.valid
    assert fn.nat.session_count() == 0


def test_outbound_fast_path_activity_keeps_the_session() -> None:
    fn = nat()
    lease = lease_of(fn.process(out_udp(), 0.0))
    lease.seen = 200.0  # the node carried an outbound packet at t=200
    fn.on_timer(300.0)
    assert lease.valid
    assert fn.nat.session_count() == 1
    fn.on_timer(500.0)
    assert not lease.valid


def test_inbound_fast_path_activity_does_not_keep_a_udp_session() -> None:
    """RFC 4787 REQ-6: only outbound packets refresh, unless inbound_refresh is set."""
    fn = nat()
    fn.process(out_udp(), 0.0)
    inbound = lease_of(fn.process(in_udp(), 0.0))
    inbound.seen = 200.0
    fn.on_timer(300.0)
    assert not inbound.valid


def test_inbound_refresh_lets_inbound_activity_keep_it() -> None:
    fn = nat(inbound_refresh=True)
    fn.process(out_udp(), 0.0)
    inbound = lease_of(fn.process(in_udp(), 0.0))
    inbound.seen = 200.0
    fn.on_timer(300.0)
    assert inbound.valid


def test_old_fast_path_activity_does_not_shorten_a_session() -> None:
    fn = nat()
    lease = lease_of(fn.process(out_udp(), 0.0))
    lease.seen = 10.0
    fn.process(out_udp(), 100.0)  # the slow path refreshed it later: expiry 400
    fn.on_timer(310.0)
    assert lease.valid
    fn.on_timer(400.0)
    assert not lease.valid


def test_the_status_shows_the_tables() -> None:
    fn = nat()
    fn.process(out_udp(), 0.0)
    status = fn.status()
    assert (status["session_count"], status["mapping_count"], status["leased_sessions"]) == (
        1,
        1,
        1,
    )
    (mapping,) = status["mappings"]
    assert (mapping["proto"], mapping["internal_address"], mapping["external_port"]) == (
        "udp",
        INSIDE,
        5000,
    )
    assert status["nat"]["translated-outbound"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=100), st.sampled_from(["ingress", "egress"]))
def test_arbitrary_bytes_never_raise(data: bytes, iface: str) -> None:
    fn = nat()
    frame = bytes(Ether(src=MAC_A, dst=MAC_B, type=0x0800)) + data
    for candidate in (frame, data):
        result = fn.process(raw_packet(candidate, iface), 1.0)
        assert result.verdict in (Verdict.FORWARD, Verdict.DROP, Verdict.REPLY)
    fn.on_timer(1e6)
    fn.status()
