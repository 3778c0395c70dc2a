"""Fragments through the router's NAT (RFC 4787 REQ-14) and the IPv4 ID (RFC 7857 §10).

Datagrams are built and cut into fragments by scapy, handed to the router as
frames, and what comes out is decoded by scapy and put back together here (by
offset, checking that nothing is missing); scapy then computes every checksum
of the whole datagram again, so a transport checksum updated in the first
fragment only is checked against the whole datagram it covers.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror, fragment
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet, Raw

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import (
    Router,
    RouterConfig,
    RouterConfigError,
    RouterInterface,
)
from pktchain.functions.sdk import Verdict
from support.router import process, receive, timers

LAN0_MAC, LAN1_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
H1_MAC, H2_MAC, GW_MAC = "02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:bb:00:00:00:fe"
LAN0_IP, LAN1_IP, WAN_IP, GW_IP = "10.0.0.1", "10.0.1.1", "203.0.113.1", "203.0.113.254"
H1, H2, REMOTE = "10.0.0.5", "10.0.1.7", "198.51.100.7"
VNET = bytes(10)
PAYLOAD = bytes(range(256)) * 12  # 3072 bytes: four fragments of 1000


def make_router(*, wan_mtu: int = 1500, **overrides: Any) -> Router:
    interfaces = (
        RouterInterface("lan0", LAN0_MAC, IPv4Interface(f"{LAN0_IP}/24")),
        RouterInterface("lan1", LAN1_MAC, IPv4Interface(f"{LAN1_IP}/24")),
        RouterInterface("wan", WAN_MAC, IPv4Interface(f"{WAN_IP}/24"), external=True, mtu=wan_mtu),
    )
    settings: dict[str, Any] = {
        "interfaces": interfaces,
        "upstream_gateway": IPv4Address(GW_IP),
        "nat": NatConfig(WAN_IP, ("10.0.0.0/16",), port_seed=7),
        "auto_forward_service_port": None,
    }
    settings.update(overrides)
    router = Router(RouterConfig(**settings))
    timers(router, 0.0)  # its interfaces' announcements
    for iface, mac, ip, target in (
        ("lan0", H1_MAC, H1, LAN0_IP),
        ("lan1", H2_MAC, H2, LAN1_IP),
        ("wan", GW_MAC, GW_IP, WAN_IP),
    ):
        request = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=mac, psrc=ip, hwdst="00:00:00:00:00:00", pdst=target
        )
        receive(router, iface, VNET + bytes(request), 0.0)
    return router


SOURCE_MAC = {"lan0": (H1_MAC, LAN0_MAC), "lan1": (H2_MAC, LAN1_MAC), "wan": (GW_MAC, WAN_MAC)}


def frame(iface: str, packet: Packet) -> bytes:
    src, dst = SOURCE_MAC[iface]
    return VNET + bytes(Ether(src=src, dst=dst) / packet)


def send(router: Router, iface: str, packet: Packet, now: float = 1.0) -> list[Packet]:
    """Hand `packet` to the router on `iface`; the IP packets it sends, decoded."""
    return [Ether(data[10:])[IP] for _, data in receive(router, iface, frame(iface, packet), now)]


def send_all(router: Router, iface: str, packets: list[Packet], now: float = 1.0) -> list[Packet]:
    return [out for packet in packets for out in send(router, iface, packet, now)]


def pieces(packet: Packet, size: int = 1000) -> list[Packet]:
    """`packet` cut by scapy into fragments of `size` data bytes, first to last."""
    return [IP(bytes(p)) for p in fragment(packet, fragsize=size)]


def reassemble(fragments: list[Packet]) -> Packet:
    """The datagram the fragments make (RFC 791 §3.2), decoded by scapy; all must be there."""
    keys = {(f.src, f.dst, f.proto, f.id) for f in fragments}
    assert len(keys) == 1, f"fragments of several datagrams: {keys}"
    data: dict[int, bytes] = {}
    last = None
    for piece in fragments:
        payload = bytes(piece[IP].payload)[: piece.len - piece.ihl * 4]
        data.setdefault(piece.frag * 8, payload)
        if not piece.flags.MF:
            last = piece.frag * 8 + len(payload)
    assert last is not None, "no last fragment"
    whole = b""
    while len(whole) < last:
        assert len(whole) in data, f"hole at {len(whole)}"
        whole += data[len(whole)]
    src, dst, proto, ident = keys.pop()
    return IP(bytes(IP(src=src, dst=dst, proto=proto, id=ident) / Raw(whole)))


def checksums_ok(ip: Packet) -> bool:
    """Whether scapy, computing them again, finds the IP and transport checksums."""
    fresh = IP(bytes(ip))
    del fresh.chksum
    del fresh.payload.chksum
    rebuilt = IP(bytes(fresh))
    return bool(rebuilt.chksum == ip.chksum and rebuilt.payload.chksum == ip.payload.chksum)


def fragment_headers_ok(fragments: list[Packet]) -> bool:
    for piece in fragments:
        fresh = IP(bytes(piece))
        del fresh.chksum
        if IP(bytes(fresh)).chksum != piece.chksum:
            return False
    return True


def udp_datagram(src: str = H1, dst: str = REMOTE, *, ident: int = 4242, sport: int = 5000) -> IP:
    return IP(src=src, dst=dst, id=ident) / UDP(sport=sport, dport=7000) / PAYLOAD


# -- RFC 4787 REQ-14: in order and out of order ------------------------------------------


def test_rfc4787_req14_in_order_fragments_are_translated_as_they_come() -> None:
    router = make_router()
    fragments = pieces(udp_datagram())
    out: list[Packet] = []
    for piece in fragments:
        sent = send(router, "lan0", piece)
        assert len(sent) == 1  # nothing waits: each fragment leaves at once
        out += sent
    assert all(p.src == WAN_IP and p.ttl == 63 for p in out) and fragment_headers_ok(out)
    whole = reassemble(out)
    assert whole[UDP].sport == 5000 and bytes(whole[UDP].payload) == PAYLOAD
    assert checksums_ok(whole)  # the first fragment's update is right for the whole
    counters = router.status()["counters"]
    assert counters["fragments-translated"] == 4 and "fragments-held" not in counters


def test_rfc4787_req14_out_of_order_fragments_wait_for_the_first() -> None:
    router = make_router()
    first, *rest = pieces(udp_datagram())
    # Last fragment first: held until the first one comes.
    assert send_all(router, "lan0", rest[::-1]) == []
    out = send(router, "lan0", first, 1.5)
    assert len(out) == 4 and out[0].frag == 0
    whole = reassemble(out)
    assert whole.src == WAN_IP and bytes(whole[UDP].payload) == PAYLOAD and checksums_ok(whole)
    counters = router.status()["counters"]
    assert counters["fragments-held"] == 3 and counters["fragments-released"] == 3
    assert router.fragments().datagrams == 1 and router.fragments().held == 0


@settings(max_examples=60, deadline=None)
@given(st.permutations(range(4)), st.lists(st.integers(0, 3), max_size=4))
def test_rfc4787_req14_any_order_and_duplicates_give_the_same_datagram(
    order: list[int], duplicates: list[int]
) -> None:
    router = make_router()
    fragments = pieces(udp_datagram())
    sequence = [fragments[i] for i in [*order, *duplicates]]
    out = send_all(router, "lan0", sequence)
    # Every copy is forwarded (the receiver discards duplicates), one ID for all.
    assert len(out) == len(sequence) and len({p.id for p in out}) == 1
    whole = reassemble(out)
    assert whole.src == WAN_IP and whole[UDP].sport == 5000
    assert bytes(whole[UDP].payload) == PAYLOAD and checksums_ok(whole)


def test_rfc4787_req14_inbound_fragments_to_a_mapped_port() -> None:
    router = make_router()
    opened = send(router, "lan0", IP(src=H1, dst=REMOTE, flags="DF") / UDP(sport=5000, dport=7000))
    assert opened[0].src == WAN_IP and opened[0][UDP].sport == 5000
    answer = IP(src=REMOTE, dst=WAN_IP, id=999) / UDP(sport=7000, dport=5000) / PAYLOAD
    first, *rest = pieces(answer)
    out = send_all(router, "wan", [rest[1], rest[0], first, rest[2]])
    assert len(out) == 4 and all(p.dst == H1 for p in out)
    assert {p.id for p in out} == {999}  # inbound datagrams keep their ID
    whole = reassemble(out)
    assert whole[UDP].dport == 5000 and bytes(whole[UDP].payload) == PAYLOAD
    assert checksums_ok(whole)


def test_rfc4787_req14_fragmented_echo_both_ways() -> None:
    # ping -s 3000: the identifier is translated in the first fragment, the ICMP
    # checksum (no pseudo-header, RFC 792) covers the whole message.
    router = make_router()
    request = IP(src=H1, dst=REMOTE, id=31) / ICMP(type=8, id=0x1234, seq=1) / PAYLOAD
    out = send_all(router, "lan0", pieces(request)[::-1])
    sent = reassemble(out)
    assert sent.src == WAN_IP and bytes(sent[ICMP].payload) == PAYLOAD and checksums_ok(sent)
    reply = IP(src=REMOTE, dst=WAN_IP, id=77) / ICMP(type=0, id=sent[ICMP].id, seq=1) / PAYLOAD
    back = reassemble(send_all(router, "wan", pieces(reply)[::-1]))
    assert back.dst == H1 and back[ICMP].id == 0x1234 and checksums_ok(back)


def test_rfc4787_req14_hairpinned_fragments() -> None:
    router = make_router()
    router.add_port_forward("udp", 9000, H2, 9000)
    datagram = IP(src=H1, dst=WAN_IP, id=5) / UDP(sport=5000, dport=9000) / PAYLOAD
    out = send_all(router, "lan0", pieces(datagram)[::-1])
    assert len(out) == 4
    whole = reassemble(out)
    assert (whole.src, whole.dst, whole[UDP].sport, whole[UDP].dport) == (WAN_IP, H2, 5000, 9000)
    assert checksums_ok(whole) and bytes(whole[UDP].payload) == PAYLOAD


def test_router_refragments_translated_fragments_for_a_smaller_mtu() -> None:
    router = make_router(wan_mtu=576)
    out = send_all(router, "lan0", pieces(udp_datagram(), size=1400)[::-1])
    assert len(out) > 3 and all(p.len <= 576 for p in out)
    whole = reassemble(out)
    assert bytes(whole[UDP].payload) == PAYLOAD and checksums_ok(whole)
    # A whole datagram with DF clear, fragmented by the router after translation.
    out = send(router, "lan0", udp_datagram(ident=4243, sport=5001))
    assert len(out) > 1 and len({p.id for p in out}) == 1
    whole = reassemble(out)
    assert whole[UDP].sport == 5001 and checksums_ok(whole)


def test_fragments_are_never_leased() -> None:
    router = make_router()
    for _ in range(2):  # a NAT flow is leased from its second packet: not a fragment's
        for piece in pieces(udp_datagram()):
            result, _packet = process(router, "lan0", frame("lan0", piece), 1.0)
            assert result.verdict is Verdict.FORWARD and result.emit == []
            assert result.lease is None


# -- RFC 4787 REQ-14a: bounded ----------------------------------------------------------------


def test_rfc4787_req14a_held_fragments_are_discarded_after_the_timeout() -> None:
    router = make_router(fragment_timeout=30.0)
    _, *rest = pieces(udp_datagram())
    assert send_all(router, "lan0", rest, now=10.0) == []
    assert router.next_deadline() == 40.0
    assert timers(router, 39.9) == [] and router.fragments().held == 3
    assert timers(router, 40.0) == []
    assert router.status()["counters"]["drop-fragment-timeout"] == 3
    assert router.fragments().datagrams == 0 and router.fragments().held_bytes == 0


def test_rfc4787_req14a_a_flood_of_fragments_stays_bounded() -> None:
    router = make_router(fragment_datagram_limit=8)
    flood = [IP(src=H1, dst=REMOTE, id=n, frag=100, proto=17) / (b"f" * 64) for n in range(200)]
    assert send_all(router, "lan0", flood) == []
    state = router.fragments()
    assert state.datagrams == 8 and state.held == 8
    counters = router.status()["counters"]
    assert counters["fragments-held"] == 200
    assert counters["fragment-datagrams-evicted"] == 192
    assert counters["drop-fragment-evicted"] == 192
    # A datagram out of order after the flood still goes through whole.
    first, *rest = pieces(udp_datagram(ident=7))
    out = send_all(router, "lan0", [*rest, first])
    assert checksums_ok(reassemble(out))


def test_rfc4787_req14a_per_datagram_and_byte_limits() -> None:
    router = make_router(fragment_queue_limit=2)
    _, *rest = pieces(udp_datagram())
    assert send_all(router, "lan0", rest) == []
    assert router.status()["counters"]["drop-fragment-queue-full"] == 1
    # Frames of 1044, 1044 and 124 bytes: the second does not fit in 2000.
    router = make_router(fragment_held_bytes=2000)
    assert send_all(router, "lan0", rest) == []
    assert router.status()["counters"]["drop-fragment-memory"] == 1
    assert router.fragments().held_bytes == 1044 + 124


def test_fragments_of_a_refused_datagram_are_dropped() -> None:
    router = make_router()
    # To an external port without a mapping: the NAT refuses the first fragment.
    first, *rest = pieces(IP(src=REMOTE, dst=WAN_IP, id=3) / UDP(sport=1, dport=4444) / PAYLOAD)
    assert send_all(router, "wan", [rest[0], first, rest[1], rest[2]]) == []
    counters = router.status()["counters"]
    assert counters["nat-no-mapping"] == 1
    assert counters["drop-fragment-refused"] == 3  # one held, then discarded; two after


def test_later_fragment_overlapping_the_transport_header_is_dropped() -> None:
    # RFC 1858 §3.2: offset 8 bytes would rewrite TCP's flags and checksum.
    router = make_router()
    overlap = IP(src=H1, dst=REMOTE, id=1, frag=1, proto=6) / (b"\x00" * 24)
    assert send(router, "lan0", overlap) == []
    assert router.status()["counters"]["drop-fragment-overlap"] == 1
    # For UDP, 8 bytes is past the header: held.
    assert send(router, "lan0", IP(src=H1, dst=REMOTE, id=2, frag=1, proto=17) / (b"u" * 8)) == []
    assert router.status()["counters"]["fragments-held"] == 1


def test_fragmented_icmp_error_is_dropped() -> None:
    router = make_router()
    quoted = bytes(IP(src=WAN_IP, dst=REMOTE) / UDP(sport=5000, dport=7000) / PAYLOAD)
    error = IP(src=REMOTE, dst=WAN_IP, id=8) / ICMP(type=3, code=3) / quoted
    assert send_all(router, "wan", pieces(error)) == []
    counters = router.status()["counters"]
    assert counters["drop-fragmented-icmp-error"] == 1
    assert counters["drop-fragment-refused"] == 3


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["lan0", "wan"]),
            st.integers(0, 3),  # IP ID: few, so that datagrams meet
            st.integers(0, 40),  # fragment offset, 8-byte units
            st.booleans(),  # MF
            st.sampled_from([1, 6, 17, 47]),
            st.binary(max_size=64),
        ),
        max_size=12,
    )
)
def test_any_fragments_are_forwarded_held_or_counted_never_raised(
    fragments: list[tuple[str, int, int, bool, int, bytes]],
) -> None:
    router = make_router(fragment_datagram_limit=2, fragment_queue_limit=2)
    router.add_port_forward("udp", 9000, H2, 9000)
    for iface, ident, offset, more, proto, data in fragments:
        src, dst = (H1, REMOTE) if iface == "lan0" else (REMOTE, WAN_IP)
        flags = "MF" if more else 0
        packet = IP(src=src, dst=dst, id=ident, frag=offset, flags=flags, proto=proto) / data
        receive(router, iface, frame(iface, packet), 1.0)
    timers(router, 100.0)
    assert "drop-internal-error" not in router.status()["counters"]
    assert router.fragments().datagrams == 0 and router.fragments().held_bytes == 0


# -- RFC 7857 §10: the IPv4 ID ---------------------------------------------------------------


def test_rfc7857_s10_same_id_from_two_inside_hosts_gets_two_translated_ids() -> None:
    router = make_router()
    fragmented = {
        iface: send_all(router, iface, pieces(udp_datagram(src, ident=4242))[::-1])
        for iface, src in (("lan0", H1), ("lan1", H2))
    }
    ids = {iface: {p.id for p in out} for iface, out in fragmented.items()}
    assert all(len(found) == 1 for found in ids.values())  # one ID per datagram
    assert ids["lan0"] != ids["lan1"]  # the two datagrams stay apart after translation
    for out in fragmented.values():
        assert checksums_ok(reassemble(out))
    # Whole datagrams with DF clear are non-atomic too (RFC 6864 §4).
    whole = [
        send(router, iface, IP(src=src, dst=REMOTE, id=4242) / UDP(sport=6000, dport=7000))[0]
        for iface, src in (("lan0", H1), ("lan1", H2))
    ]
    assert whole[0].id != whole[1].id and all(checksums_ok(p) for p in whole)
    assert router.status()["counters"]["ip-id-rewritten"] == 4


def test_rfc7857_s10_atomic_datagrams_keep_their_id_and_their_lease() -> None:
    router = make_router()
    atomic = IP(src=H1, dst=REMOTE, id=4242, flags="DF") / UDP(sport=6000, dport=7000)
    assert send(router, "lan0", atomic)[0].id == 4242
    assert process(router, "lan0", frame("lan0", atomic), 1.1)[0].lease is not None
    # DF clear: a fresh ID per datagram, which the node's fast path cannot give.
    loose = IP(src=H1, dst=REMOTE, id=4242) / UDP(sport=6001, dport=7000)
    send(router, "lan0", loose)
    result, packet = process(router, "lan0", frame("lan0", loose), 1.1)
    assert result.verdict is Verdict.FORWARD and result.lease is None
    assert checksums_ok(Ether(packet.ethernet)[IP])


def test_rfc7857_s10_ids_toward_one_destination_do_not_repeat() -> None:
    router = make_router()
    ids = [
        send(router, "lan0", IP(src=H1, dst=REMOTE, id=1) / UDP(sport=6000, dport=7000))[0].id
        for _ in range(2000)
    ]
    assert len(set(ids)) == 2000


def test_rfc7857_s10_icmp_error_goes_back_with_the_original_id() -> None:
    router = make_router()
    sent = send(router, "lan0", IP(src=H1, dst=REMOTE, id=555) / UDP(sport=5000, dport=7000))[0]
    assert sent.id != 555
    error = IP(src=REMOTE, dst=WAN_IP) / ICMP(type=3, code=3) / bytes(sent)[:28]
    back = send(router, "wan", error)[0]
    assert back.dst == H1 and back[IPerror].src == H1 and back[UDPerror].sport == 5000
    assert back[IPerror].id == 555  # RFC 5508 REQ-4a: reverted, ID included
    fresh = IP(bytes(back))
    del fresh.chksum, fresh[ICMP].chksum, fresh[IPerror].chksum
    rebuilt = IP(bytes(fresh))
    assert rebuilt[ICMP].chksum == back[ICMP].chksum
    assert rebuilt[IPerror].chksum == back[IPerror].chksum
    assert router.status()["counters"]["ip-id-restored"] == 1


def test_rfc7857_s10_hairpinned_icmp_error_goes_back_with_the_original_id() -> None:
    router = make_router()
    router.add_port_forward("udp", 9000, H2, 9000)
    datagram = IP(src=H1, dst=WAN_IP, id=600) / UDP(sport=5000, dport=9000) / b"x"
    (hairpinned,) = send(router, "lan0", datagram)
    assert (hairpinned.src, hairpinned.dst) == (WAN_IP, H2) and hairpinned.id != 600
    error = IP(src=H2, dst=WAN_IP) / ICMP(type=3, code=3) / bytes(hairpinned)[:28]
    (back,) = send(router, "lan1", error)
    assert back.dst == H1 and back[IPerror].src == H1 and back[IPerror].id == 600
    assert router.status()["counters"]["ip-id-restored"] == 1


def test_rfc7857_s10_rewriting_can_be_turned_off() -> None:
    router = make_router(ip_id_rewrite=False)
    out = send_all(router, "lan0", pieces(udp_datagram(ident=4242))[::-1])
    assert {p.id for p in out} == {4242} and checksums_ok(reassemble(out))
    loose = IP(src=H1, dst=REMOTE, id=9) / UDP(sport=6001, dport=7000)
    send(router, "lan0", loose)
    assert process(router, "lan0", frame("lan0", loose), 1.1)[0].lease is not None


# -- configuration ------------------------------------------------------------------------------


def test_fragment_settings_are_checked_together() -> None:
    with pytest.raises(RouterConfigError) as caught:
        make_router(
            fragment_timeout=0,
            fragment_datagram_limit=0,
            fragment_queue_limit=-1,
            fragment_held_bytes=-1,
            ip_id_memory=-1,
            ip_id_rewrite="yes",
        )
    fields = {error.split(":")[0] for error in caught.value.errors}
    assert fields == {
        "fragment_timeout",
        "fragment_datagram_limit",
        "fragment_queue_limit",
        "fragment_held_bytes",
        "ip_id_memory",
        "ip_id_rewrite",
    }


def test_tcp_first_fragment_needs_a_session_like_a_whole_segment() -> None:
    router = make_router()
    ack = IP(src=H1, dst=REMOTE, id=1) / TCP(sport=40000, dport=80, flags="A") / PAYLOAD
    assert send_all(router, "lan0", pieces(ack)) == []
    assert router.status()["counters"]["nat-tcp-no-session"] == 1
