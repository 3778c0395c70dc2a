"""RFC 5508 (NAT behavioural requirements for ICMP): one test per REQ, bytes in and out."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import ICMP, IP, UDP, ICMPerror, TCPerror, UDPerror

from pktchain.functions.nat.config import NatConfigError
from pktchain.functions.nat.napt import DropReason, Filtering, NatConfig, NatVerdict, Realm
from support.nat import (
    EXTERNAL,
    INSIDE_A,
    INSIDE_B,
    REMOTE,
    ROUTER_ON_PATH,
    assert_checksums,
    echo,
    embedded,
    icmp_error,
    inb,
    make_nat,
    ok,
    out,
    raw,
    tcp,
    udp,
)


def test_rfc5508_req1_echo_identifier_mapped_not_sequence() -> None:
    nat = make_nat()
    a, b = echo(INSIDE_A, REMOTE, ident=77, seq=1), echo(INSIDE_B, REMOTE, ident=77, seq=1)
    ok(out(nat, a))
    ok(out(nat, b))
    da, db = assert_checksums(a), assert_checksums(b)  # REQ-1a: identifier and checksum
    assert da.src == db.src == EXTERNAL
    assert da[ICMP].id == 77 and db[ICMP].id != 77
    assert da[ICMP].seq == db[ICMP].seq == 1  # sequence numbers are not touched
    # Replies with the same sequence number reach each host by identifier.
    for ident, host in ((db[ICMP].id, INSIDE_B), (77, INSIDE_A)):
        reply = echo(REMOTE, EXTERNAL, ident=ident, seq=1, reply=True)
        ok(inb(nat, reply))
        decoded = assert_checksums(reply)
        assert (decoded.dst, decoded[ICMP].id) == (host, 77)


def test_rfc5508_req1_reply_needs_a_query() -> None:
    nat = make_nat()
    ok(out(nat, echo(INSIDE_A, REMOTE, ident=9)))
    stranger = echo("198.51.100.99", EXTERNAL, ident=9, reply=True)
    assert inb(nat, stranger).reason is DropReason.FILTERED


def test_rfc5508_req2_query_timer() -> None:
    nat = make_nat()
    assert nat.config.icmp_timeout == 60
    ok(out(nat, echo(INSIDE_A, REMOTE, ident=9), now=0.0))
    assert nat.on_timer(59.0).expired == ()
    assert len(nat.on_timer(60.0).expired) == 1
    with pytest.raises(NatConfigError, match="icmp_timeout"):
        NatConfig(EXTERNAL, ("10.0.0.0/24",), icmp_timeout=59)
    assert NatConfig(EXTERNAL, ("10.0.0.0/24",), icmp_timeout=90).icmp_timeout == 90  # REQ-2a


def test_rfc5508_req3_bad_icmp_checksum_dropped() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat, sent))
    error = raw(IP(src=ROUTER_ON_PATH, dst=EXTERNAL) / ICMP(type=3, code=3, chksum=0x1234) / sent)
    before = bytes(error)
    assert inb(nat, error).reason is DropReason.ICMP_CHECKSUM
    assert bytes(error) == before


def test_rfc5508_req3a_bad_embedded_ip_checksum_dropped() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat, sent))
    corrupt = bytearray(sent)
    corrupt[10] ^= 0xFF  # embedded IP header checksum
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(corrupt))
    assert inb(nat, error).reason is DropReason.EMBEDDED_CHECKSUM


def test_rfc5508_req3b_embedded_ip_options_skipped() -> None:
    nat = make_nat()
    sent = raw(
        IP(src=INSIDE_A, dst=REMOTE, options=[b"\x94\x04\x00\x00"])  # router alert
        / UDP(sport=4000, dport=53)
        / b"q"
    )
    ok(out(nat, sent))
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(sent))
    ok(inb(nat, error))
    decoded = assert_checksums(error)
    assert embedded(decoded).ihl == 6
    assert (embedded(decoded).src, decoded[UDPerror].sport) == (INSIDE_A, 4000)


def test_rfc5508_req3c_embedded_transport_checksum_not_validated() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat, sent))
    quoted = bytearray(sent)
    quoted[26] ^= 0x55  # embedded UDP checksum wrong: must not matter
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(quoted))
    ok(inb(nat, error))
    decoded = IP(bytes(error))
    assert decoded.dst == INSIDE_A and decoded[UDPerror].sport == 4000


def test_rfc5508_req3d_icmp_extensions_left_out_of_embedded_checksum() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 33434, b"probe")
    ok(out(nat, sent))
    # RFC 4884: original datagram padded to 128 bytes, length in 32-bit words in
    # byte 5, then an extension structure (version 2, checksum, one object).
    padded = bytes(sent).ljust(128, b"\0")
    extension = b"\x20\x00\x00\x00" + struct.pack("!HBB", 8, 1, 1) + b"\x00\x00\x00\x05"
    error = raw(
        IP(src=ROUTER_ON_PATH, dst=EXTERNAL)
        / ICMP(type=11, code=0, length=32)
        / (padded + extension)
    )
    ok(inb(nat, error))
    data = bytes(error)
    decoded = IP(data)
    assert decoded.dst == INSIDE_A
    inner = data[28 : 28 + len(sent)]  # the datagram itself, without padding and extension
    translated = assert_checksums(inner)  # embedded UDP checksum fixed over the datagram only
    assert (translated.src, translated[UDP].sport) == (INSIDE_A, 4000)
    assert data[28 + 128 :] == extension
    from scapy.utils import checksum as scapy_checksum

    assert scapy_checksum(data[20:]) == 0


def test_rfc5508_req4_inbound_error_translated() -> None:
    nat = make_nat()
    sent = udp(INSIDE_A, 4000, REMOTE, 53)
    ok(out(nat, sent))
    error = icmp_error(REMOTE, EXTERNAL, bytes(sent), icmp_type=3, code=3)
    ok(inb(nat, error))
    decoded = assert_checksums(error)
    inner = embedded(decoded)
    assert (inner.src, decoded[UDPerror].sport) == (INSIDE_A, 4000)  # REQ-4a
    assert (decoded[ICMP].type, decoded[ICMP].code) == (3, 3)  # REQ-4b
    assert decoded.dst == inner.src  # REQ-4c
    # Without a mapping for the embedded packet: silently dropped.
    stray = udp(EXTERNAL, 4999, REMOTE, 53)
    assert inb(nat, icmp_error(REMOTE, EXTERNAL, bytes(stray))).reason is DropReason.NO_MAPPING


def test_rfc5508_req5_outbound_error_translated() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53)))
    arrived = udp(REMOTE, 53, EXTERNAL, 4000)
    ok(inb(nat, arrived))  # now addressed to INSIDE_A:4000
    error = icmp_error(INSIDE_A, REMOTE, bytes(arrived), icmp_type=3, code=3)
    ok(out(nat, error))
    decoded = assert_checksums(error)
    inner = embedded(decoded)
    assert (inner.dst, decoded[UDPerror].dport) == (EXTERNAL, 4000)  # REQ-5a
    assert (decoded[ICMP].type, decoded[ICMP].code) == (3, 3)  # REQ-5b
    assert (decoded.src, decoded.dst) == (EXTERNAL, REMOTE)  # REQ-5c
    unmapped = udp(REMOTE, 53, INSIDE_A, 9999)
    assert out(nat, icmp_error(INSIDE_A, REMOTE, bytes(unmapped))).reason is (DropReason.NO_MAPPING)


def test_rfc5508_req6_errors_neither_refresh_nor_delete() -> None:
    nat = make_nat()
    ping = echo(INSIDE_A, REMOTE, ident=5)
    ok(out(nat, ping, now=0.0))
    ok(inb(nat, icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(ping), 11, 0), now=50.0))
    decoded = IP(bytes(nat_error := icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(ping), 3, 1)))
    assert decoded[ICMPerror].id == 5
    ok(inb(nat, nat_error, now=55.0))
    assert IP(bytes(nat_error))[ICMPerror].id == 5 and IP(bytes(nat_error)).dst == INSIDE_A
    assert_checksums(nat_error)
    assert nat.on_timer(59.0).expired == ()
    assert len(nat.on_timer(60.0).expired) == 1  # expires as if no error had come


def test_rfc5508_req7_hairpinned_error() -> None:
    nat = make_nat(udp_filtering=Filtering.ENDPOINT_INDEPENDENT)
    ok(out(nat, udp(INSIDE_B, 6000, REMOTE, 9)))  # B's mapping EXTERNAL:6000
    hairpinned = udp(INSIDE_A, 5000, EXTERNAL, 6000)
    ok(out(nat, hairpinned))  # B receives EXTERNAL:5000 -> INSIDE_B:6000
    error = icmp_error(INSIDE_B, EXTERNAL, bytes(hairpinned), icmp_type=3, code=3)
    ok(out(nat, error))
    decoded = assert_checksums(error)
    inner = embedded(decoded)
    # A sees an error about the packet it sent: INSIDE_A:5000 -> EXTERNAL:6000.
    assert (inner.src, decoded[UDPerror].sport) == (INSIDE_A, 5000)
    assert (inner.dst, decoded[UDPerror].dport) == (EXTERNAL, 6000)
    assert (decoded.src, decoded.dst) == (EXTERNAL, INSIDE_A)  # REQ-7a


def test_rfc5508_req8_refused_session_answered_3_13() -> None:
    nat = make_nat(max_sessions=1)
    ok(out(nat, udp(INSIDE_A, 4000, REMOTE, 53)))
    second = udp(INSIDE_B, 4001, REMOTE, 53)
    original = bytes(second)
    result = out(nat, second, reply_from=bytes([10, 0, 1, 1]))
    assert (result.verdict, result.reason) == (NatVerdict.REPLY, DropReason.SESSION_LIMIT)
    assert result.reply_to is Realm.INTERNAL and result.reply is not None
    decoded = assert_checksums(result.reply)
    assert (decoded.src, decoded.dst) == ("10.0.1.1", INSIDE_B)
    assert (decoded[ICMP].type, decoded[ICMP].code) == (3, 13)
    assert bytes(embedded(decoded)) == original
    assert bytes(second) == original  # the refused packet is left as it was


def test_rfc5508_req9_policy_keeps_nat_silent() -> None:
    nat = make_nat(max_sessions=0, icmp_refusals=False)
    result = out(nat, udp(INSIDE_A, 4000, REMOTE, 53))
    assert (result.verdict, result.reason) == (NatVerdict.DROPPED, DropReason.SESSION_LIMIT)


@pytest.mark.parametrize(("icmp_type", "code"), [(3, 3), (3, 4), (11, 0), (12, 0)])
def test_rfc5508_req10_errors_supported(icmp_type: int, code: int) -> None:
    nat = make_nat()
    probe = tcp(INSIDE_A, 40000, REMOTE, 80, "S")
    ok(out(nat, probe))
    error = icmp_error(ROUTER_ON_PATH, EXTERNAL, bytes(probe), icmp_type, code)
    ok(inb(nat, error))
    decoded = assert_checksums(error)
    assert (decoded[ICMP].type, decoded[ICMP].code) == (icmp_type, code)
    assert decoded[TCPerror].sport == 40000 and embedded(decoded).src == INSIDE_A


@pytest.mark.parametrize("icmp_type", [4, 5, 9, 10, 13, 17, 42])
def test_rfc5508_req11_non_query_and_other_icmp_dropped(icmp_type: int) -> None:
    nat = make_nat()
    packet = raw(IP(src=REMOTE, dst=EXTERNAL) / ICMP(type=icmp_type) / (b"\0" * 28))
    assert inb(nat, packet).reason is DropReason.UNSUPPORTED_ICMP
    packet = raw(IP(src=INSIDE_A, dst=REMOTE) / ICMP(type=icmp_type) / (b"\0" * 28))
    assert out(nat, packet).reason is DropReason.UNSUPPORTED_ICMP


def test_rfc5508_echo_request_to_nat_address_is_local() -> None:
    nat = make_nat()
    assert inb(nat, echo(REMOTE, EXTERNAL, 1)).reason is DropReason.LOCAL_DESTINATION
