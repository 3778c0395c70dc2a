"""NAT behaviour beyond the REQ lists: partial checksums, limits, forwarding, timers, flow cache.

Packets are built and checked by scapy; bad input of any shape is a counted
drop, never an exception.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, in4_chksum

from pktchain.functions.nat.config import NatConfigError
from pktchain.functions.nat.napt import (
    DropReason,
    Filtering,
    NatConfig,
    NatVerdict,
    Realm,
    TcpSessionState,
)
from pktchain.packet import (
    Ipv4,
    Side,
    Tcp,
    Udp,
    build,
    complete_partial_checksum,
    parse_ip,
    set_ip,
    set_port,
)
from support.nat import (
    EXTERNAL,
    INSIDE_A,
    INSIDE_B,
    REMOTE,
    REMOTE_2,
    assert_checksums,
    echo,
    inb,
    make_nat,
    ok,
    out,
    raw,
    tcp,
    udp,
)

# -- partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM) ---------------------------------


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_partial_checksum_seed_is_updated(kind: str) -> None:
    nat = make_nat()
    nat.add_port_forward("tcp", 8080, INSIDE_B, 80)
    nat.add_port_forward("udp", 8080, INSIDE_B, 80)
    l4 = (
        Tcp(40000, 8080, flags=0x02, partial=True)
        if kind == "tcp"
        else Udp(40000, 8080, partial=True)
    )
    inbound = bytearray(build(Ipv4(src=REMOTE, dst=EXTERNAL), l4, b"payload" * 20))
    ok(inb(nat, inbound, partial=True))
    l4 = Tcp(80, 40000, flags=0x12, partial=True) if kind == "tcp" else Udp(80, 40000, partial=True)
    outbound = bytearray(build(Ipv4(src=INSIDE_B, dst=REMOTE), l4, b"reply" * 20))
    ok(out(nat, outbound, partial=True))
    for packet, (src, dst) in ((inbound, (REMOTE, INSIDE_B)), (outbound, (EXTERNAL, REMOTE))):
        offset = 16 if kind == "tcp" else 6
        complete_partial_checksum(packet, 20, offset)  # what the kernel or NIC does later
        decoded = assert_checksums(packet)  # scapy: the completed checksum is right
        assert (decoded.src, decoded.dst) == (src, dst)
        expected = in4_chksum(6 if kind == "tcp" else 17, decoded, bytes(packet[20:]))
        assert expected == 0


def test_partial_flag_leaves_a_full_checksum_wrong() -> None:
    # The flag matters: a seed must not be treated as a complete checksum.
    nat_full, nat_partial = make_nat(), make_nat()
    a, b = udp(INSIDE_A, 4000, REMOTE, 53), udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat_full, a))
    ok(out(nat_partial, b, partial=True))
    assert a != b


# -- bad input -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.booleans())
def test_garbage_never_raises(data: bytes, outbound: bool) -> None:
    nat = make_nat()
    packet = bytearray(data)
    result = out(nat, packet) if outbound else inb(nat, packet)
    assert result.verdict in (NatVerdict.DROPPED, NatVerdict.TRANSLATED, NatVerdict.REPLY)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 80), st.integers(0, 255))
def test_truncated_and_corrupted_icmp_errors_never_raise(cut: int, flip: int) -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat, sent))
    error = raw(IP(src=REMOTE, dst=EXTERNAL) / ICMP(type=3, code=3) / bytes(sent))
    error = error[: max(28, len(error) - cut)]
    struct.pack_into("!H", error, 2, len(error))
    error[min(len(error) - 1, 28 + flip % 20)] ^= 0xA5
    result = inb(nat, error)
    assert result.verdict in (NatVerdict.DROPPED, NatVerdict.TRANSLATED)


def test_drops_have_reasons_and_counters() -> None:
    nat = make_nat()
    assert out(nat, bytearray(b"\x45\x00")).reason is DropReason.MALFORMED
    assert out(nat, udp("192.0.2.9", 1, REMOTE, 2)).reason is DropReason.NOT_INTERNAL_SOURCE
    assert inb(nat, udp(REMOTE, 1, "203.0.113.99", 2)).reason is (
        DropReason.NOT_EXTERNAL_DESTINATION
    )
    gre = raw(IP(src=INSIDE_A, dst=REMOTE, proto=47) / (b"\0" * 8))
    assert out(nat, gre).reason is DropReason.UNSUPPORTED_PROTOCOL
    assert out(nat, tcp(INSIDE_A, 1, REMOTE, 2, "A")).reason is DropReason.TCP_NO_SESSION
    assert inb(nat, udp(REMOTE, 1, EXTERNAL, 2)).reason is DropReason.NO_MAPPING
    counters = nat.counters()
    for reason in ("malformed", "not-internal-source", "no-mapping", "tcp-no-session"):
        assert counters[reason] == 1


def test_config_errors_reported_together() -> None:
    with pytest.raises(NatConfigError) as caught:
        NatConfig("not-an-ip", ("nope",), udp_timeout=1, icmp_timeout=1, max_sessions=-1)
    fields = [error.split(":")[0] for error in caught.value.errors]
    assert fields == [
        "external_address",
        "internal_networks",
        "udp_timeout",
        "icmp_timeout",
        "max_sessions",
    ]


# -- limits ------------------------------------------------------------------------------


def test_per_host_limit_refuses_new_sessions_but_keeps_old_ones() -> None:
    nat = make_nat(max_sessions_per_host=2)
    ok(out(nat, udp(INSIDE_A, 1000, REMOTE, 53)))
    ok(out(nat, udp(INSIDE_A, 1001, REMOTE, 53)))
    refused = out(nat, udp(INSIDE_A, 1002, REMOTE, 53))
    assert refused.reason is DropReason.HOST_SESSION_LIMIT
    assert refused.reply is not None
    decoded = assert_checksums(refused.reply)
    assert (decoded[ICMP].type, decoded[ICMP].code, decoded.dst) == (3, 13, INSIDE_A)
    ok(out(nat, udp(INSIDE_A, 1000, REMOTE, 53)))  # established flows keep working
    ok(inb(nat, udp(REMOTE, 53, EXTERNAL, 1001)))
    ok(out(nat, udp(INSIDE_B, 1002, REMOTE, 53)))  # other hosts are not affected


def test_table_limit_on_inbound_session_answers_outside() -> None:
    nat = make_nat(max_sessions=1)
    nat.add_port_forward("udp", 5353, INSIDE_B, 53)
    ok(inb(nat, udp(REMOTE, 1, EXTERNAL, 5353)))
    refused = inb(nat, udp(REMOTE_2, 1, EXTERNAL, 5353))
    assert refused.reason is DropReason.SESSION_LIMIT and refused.reply_to is Realm.EXTERNAL
    assert refused.reply is not None
    assert IP(refused.reply).src == EXTERNAL and IP(refused.reply).dst == REMOTE_2


def test_held_syns_are_bounded() -> None:
    nat = make_nat(max_held_syns=2)
    for port in (1, 2):
        assert inb(nat, tcp(REMOTE, port, EXTERNAL, 9)).reason is DropReason.SYN_HELD
    assert inb(nat, tcp(REMOTE, 3, EXTERNAL, 9)).reason is DropReason.SYN_HOLD_FULL
    assert inb(nat, tcp(REMOTE, 1, EXTERNAL, 9)).reason is DropReason.SYN_HELD  # retransmit
    assert len(nat.on_timer(6.0).replies) == 2


# -- port forwarding ---------------------------------------------------------------------


def test_port_forward_admits_anyone_and_is_used_outbound() -> None:
    nat = make_nat(tcp_filtering=Filtering.ADDRESS_AND_PORT_DEPENDENT)
    entry = nat.add_port_forward("tcp", 2222, INSIDE_B, 22)
    assert (entry.external_port, entry.internal_address, entry.static) == (2222, INSIDE_B, True)
    syn = tcp(REMOTE, 5000, EXTERNAL, 2222, "S")
    ok(inb(nat, syn, now=0.0))
    decoded = assert_checksums(syn)
    assert (decoded.dst, decoded[TCP].dport) == (INSIDE_B, 22)
    synack = tcp(INSIDE_B, 22, REMOTE, 5000, "SA")
    ok(out(nat, synack, now=1.0))
    assert IP(bytes(synack))[TCP].sport == 2222
    assert nat.sessions()[0].state is TcpSessionState.ESTABLISHED
    # Static mappings outlive their sessions.
    nat.on_timer(1.0 + 7440)
    assert nat.sessions() == [] and [m.external_port for m in nat.mappings()] == [2222]


def test_port_forward_two_rules_to_one_service() -> None:
    nat = make_nat()
    nat.add_port_forward("tcp", 2222, INSIDE_B, 22)
    nat.add_port_forward("tcp", 50022, INSIDE_B, 22)  # e.g. the automatic forwarding port
    for port in (2222, 50022):
        ok(inb(nat, tcp(REMOTE, 7000 + port % 7, EXTERNAL, port, "S")))
        answer = tcp(INSIDE_B, 22, REMOTE, 7000 + port % 7, "SA")
        ok(out(nat, answer))
        assert IP(bytes(answer))[TCP].sport == port


def test_port_forward_runtime_add_remove_and_errors() -> None:
    nat = make_nat()
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53)))
    with pytest.raises(ValueError, match="external_port"):
        nat.add_port_forward("udp", 4000, INSIDE_B, 53)  # taken by a dynamic mapping
    with pytest.raises(ValueError, match="internal_address"):
        nat.add_port_forward("udp", 4001, "192.0.2.1", 53)
    with pytest.raises(ValueError, match="proto"):
        nat.add_port_forward("sctp", 4001, INSIDE_B, 53)
    nat.add_port_forward("udp", 4001, INSIDE_B, 53)
    first = ok(inb(nat, udp(REMOTE, 9, EXTERNAL, 4001)))
    ended = nat.remove_port_forward("udp", 4001)
    assert ended == (first.session,) and first.session is not None and not first.session.alive
    assert inb(nat, udp(REMOTE, 9, EXTERNAL, 4001)).reason is DropReason.NO_MAPPING
    with pytest.raises(KeyError):
        nat.remove_port_forward("udp", 4001)
    with pytest.raises(KeyError):
        nat.remove_port_forward("udp", 4000)  # dynamic mappings are not rules


# -- timers and the flow cache ------------------------------------------------------------


def test_next_deadline_and_expiry_listing() -> None:
    nat = make_nat()
    assert nat.next_deadline() is None
    ok(out(nat, udp(INSIDE_A, 1, REMOTE, 2), now=0.5))
    ok(out(nat, echo(INSIDE_A, REMOTE, 3), now=0.5))
    assert nat.next_deadline() == 61.0
    result = nat.on_timer(61.0)
    assert [s.mapping.proto for s in result.expired] == [1]
    assert nat.next_deadline() == 301.0


def test_flow_cache_entry_reproduces_translation_and_touch_refreshes() -> None:
    nat = make_nat()
    ok(out(nat, udp(INSIDE_B, 4000, REMOTE, 53)))
    first = ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53, b"one"), now=0.0))
    assert first.cacheable and first.rewrite is not None and first.session is not None
    # The fast path applies the cached rewrite to a later packet of the flow ...
    cached = udp(INSIDE_A, 4000, REMOTE, 53, b"two")
    info = parse_ip(cached)
    assert first.rewrite.src is not None
    set_ip(cached, info, Side.SRC, first.rewrite.src[0])
    set_port(cached, info, Side.SRC, first.rewrite.src[1])
    # ... and gets what the NAT itself would produce.
    slow = udp(INSIDE_A, 4000, REMOTE, 53, b"two")
    ok(out(nat, slow, now=0.0))
    assert cached == slow
    assert_checksums(cached)
    assert nat.touch(first.session, 250.0, outbound=True)
    assert first.session not in nat.on_timer(300.0).expired  # B's session went, A's stays
    assert first.session.alive
    assert nat.on_timer(550.0).expired == (first.session,)
    assert not nat.touch(first.session, 551.0, outbound=True)


def test_tcp_only_established_is_cacheable() -> None:
    nat = make_nat()
    assert not ok(out(nat, tcp(INSIDE_A, 1, REMOTE, 2, "S"))).cacheable
    assert ok(inb(nat, tcp(REMOTE, 2, EXTERNAL, 1, "SA"))).cacheable


def test_listing_tables() -> None:
    nat = make_nat()
    ok(out(nat, tcp(INSIDE_A, 1234, REMOTE, 80, "S"), now=0.0))
    nat.add_port_forward("udp", 53, INSIDE_B, 53)
    mappings = nat.mappings()
    assert [(m.proto.name, m.external_port, m.static, m.sessions) for m in mappings] == [
        ("TCP", 1234, False, 1),
        ("UDP", 53, True, 0),
    ]
    (session,) = nat.sessions()
    assert (session.remote_address, session.remote_port, session.state) == (
        REMOTE,
        80,
        TcpSessionState.INT_SYN,
    )
    assert nat.session_count() == 1
