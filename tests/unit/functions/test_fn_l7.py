"""The L7 classifier on TCP flows: punts until it has decided, then leases; metadata both ways."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.l7 import L7Classifier
from pktchain.functions.sdk import Driver, FlowLease, Packet, Result, Verdict, make_function
from pktchain.functions.sdk.schema import ConfigError
from pktchain.packet.address import ip_bytes
from pktchain.packet.flow import FlowKey

CLIENT, SERVER = "10.0.0.1", "10.0.1.1"
CLIENT_ISN, SERVER_ISN = 1000, 5000
REQUEST = b"GET / HTTP/1.1\r\nHost: web.test\r\nAccept: */*\r\n\r\n"


def client_hello(name: str) -> bytes:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


HELLO = client_hello("secure.test")


def up(
    flags: str = "PA", payload: bytes = b"", offset: int = 1, sport: int = 40000, dport: int = 443
) -> bytes:
    """Client to server; `offset` counts from the client's ISN (the SYN's own number is 0)."""
    tcp = TCP(sport=sport, dport=dport, flags=flags, seq=CLIENT_ISN + offset, ack=SERVER_ISN + 1)
    return bytes(Ether() / IP(src=CLIENT, dst=SERVER) / tcp / payload)


def down(flags: str = "A", payload: bytes = b"", sport: int = 40000, dport: int = 443) -> bytes:
    tcp = TCP(sport=dport, dport=sport, flags=flags, seq=SERVER_ISN + 1, ack=CLIENT_ISN + 1)
    return bytes(Ether() / IP(src=SERVER, dst=CLIENT) / tcp / payload)


def syn(sport: int = 40000, dport: int = 443) -> bytes:
    tcp = TCP(sport=sport, dport=dport, flags="S", seq=CLIENT_ISN)
    return bytes(Ether() / IP(src=CLIENT, dst=SERVER) / tcp)


def key(sport: int = 40000, dport: int = 443) -> FlowKey:
    return FlowKey(ip_bytes(CLIENT), ip_bytes(SERVER), 6, sport, dport)


def classifier(**config: Any) -> L7Classifier:
    function = make_function("l7-classifier", config)
    assert isinstance(function, L7Classifier)
    return function


def send(function: L7Classifier, frame: bytes, now: float = 1.0) -> Result:
    iface = "ingress" if IP(frame[14:]).src == CLIENT else "egress"
    packet = Packet.from_ethernet(frame, iface)
    result = function.process(packet, now)
    assert packet.ethernet == frame  # never rewritten
    if result.verdict is Verdict.FORWARD:
        assert result.iface == ("egress" if iface == "ingress" else "ingress")
    return result


def handshake(function: L7Classifier, **ports: int) -> list[Result]:
    return [
        send(function, syn(**ports)),
        send(function, down("SA", **ports)),
        send(function, up("A", **ports)),
    ]


# -- deciding -----------------------------------------------------------------------------
def test_punts_until_the_client_hello_then_leases_with_the_sni() -> None:
    function = classifier()
    decided: list[tuple[FlowKey, dict[str, str]]] = []
    function.on_classified = lambda k, m: decided.append((k, m))
    assert [r.verdict for r in handshake(function)] == [Verdict.PUNT] * 3
    assert function.metadata(key()) == {}
    result = send(function, up("PA", HELLO))
    assert result.verdict is Verdict.FORWARD
    assert isinstance(result.lease, FlowLease)
    assert function.metadata(key()) == {"tls_sni": "secure.test"}
    assert function.metadata(key().reverse()) == {"tls_sni": "secure.test"}
    assert decided == [(key(), {"tls_sni": "secure.test"})]
    assert function.counters["tls"] == 1


def test_the_http_host_of_the_first_request() -> None:
    function = classifier()
    handshake(function, dport=80)
    result = send(function, up("PA", REQUEST, dport=80))
    assert result.verdict is Verdict.FORWARD
    assert function.metadata(key(dport=80)) == {"http_host": "web.test"}
    assert function.counters["http"] == 1


def test_after_deciding_both_directions_are_leased() -> None:
    function = classifier()
    handshake(function)
    client_lease = send(function, up("PA", HELLO)).lease
    server_lease = send(function, down("PA", b"\x16\x03\x03...")).lease
    assert client_lease is not None and server_lease is not None
    assert client_lease is not server_lease
    assert send(function, up("PA", b"more", offset=1 + len(HELLO))).lease is client_lease


def test_metadata_takes_a_plain_tuple() -> None:
    function = classifier()
    handshake(function)
    send(function, up("PA", HELLO))
    plain = (ip_bytes(SERVER), ip_bytes(CLIENT), 6, 443, 40000)
    assert function.metadata(plain) == {"tls_sni": "secure.test"}


def test_a_client_hello_split_over_two_segments() -> None:
    function = classifier()
    handshake(function)
    assert send(function, up("A", HELLO[:300])).verdict is Verdict.PUNT
    assert send(function, up("PA", HELLO[300:], offset=301)).verdict is Verdict.FORWARD
    assert function.metadata(key()) == {"tls_sni": "secure.test"}


def test_segments_out_of_order_are_put_back_in_order() -> None:
    function = classifier()
    handshake(function)
    assert send(function, up("PA", HELLO[300:], offset=301)).verdict is Verdict.PUNT
    assert send(function, up("A", HELLO[:300])).verdict is Verdict.FORWARD
    assert function.metadata(key()) == {"tls_sni": "secure.test"}


def test_a_retransmission_overlapping_what_came_is_trimmed() -> None:
    function = classifier()
    handshake(function)
    send(function, up("A", HELLO[:300]))
    send(function, up("A", HELLO[:200]))  # old data again: nothing new
    assert send(function, up("PA", HELLO[250:], offset=251)).verdict is Verdict.FORWARD
    assert function.metadata(key()) == {"tls_sni": "secure.test"}


def test_without_the_syn_the_stream_starts_at_the_first_payload() -> None:
    function = classifier()
    assert send(function, up("A")).verdict is Verdict.PUNT  # mid-flow, no payload: no entry
    assert function.status()["flows"] == 0
    assert send(function, up("PA", REQUEST, offset=77, dport=443)).verdict is Verdict.FORWARD
    assert function.metadata(key()) == {"http_host": "web.test"}


def test_a_payload_that_is_neither_http_nor_tls_is_decided_unclassified() -> None:
    function = classifier()
    handshake(function, dport=22)
    result = send(function, up("PA", b"SSH-2.0-OpenSSH_9.6\r\n", dport=22))
    assert result.verdict is Verdict.FORWARD
    assert result.lease is not None
    assert function.metadata(key(dport=22)) == {}
    assert function.counters["unclassified"] == 1


def test_a_server_speaking_first_decides_the_flow() -> None:
    function = classifier()
    handshake(function, dport=25)
    banner = down("PA", b"220 mail.test ESMTP\r\n", dport=25)
    assert send(function, banner).verdict is Verdict.FORWARD
    assert send(function, up("PA", b"EHLO x\r\n", dport=25)).verdict is Verdict.FORWARD
    assert function.metadata(key(dport=25)) == {}


def test_the_byte_bound_decides_an_endless_header() -> None:
    function = classifier(max_bytes=64)
    handshake(function, dport=80)
    head = b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 30
    assert send(function, up("A", head, dport=80)).verdict is Verdict.PUNT
    more = up("PA", b"a" * 40, offset=1 + len(head), dport=80)
    assert send(function, more).verdict is Verdict.FORWARD
    assert function.counters["byte-limit"] == 1
    assert function.metadata(key(dport=80)) == {}


def test_a_flow_without_payload_is_decided_at_the_decide_timeout() -> None:
    function = classifier(decide_timeout=10)
    decided: list[dict[str, str]] = []
    function.on_classified = lambda _k, m: decided.append(m)
    send(function, syn(), now=1.0)
    assert function.next_deadline() == 11.0
    function.on_timer(11.0)
    assert decided == [{}]
    assert function.counters["decide-timeout"] == 1
    assert send(function, up("PA", REQUEST), now=12.0).verdict is Verdict.FORWARD
    assert function.metadata(key()) == {}  # decided before the payload came


def test_a_decided_flow_is_forgotten_when_idle_and_its_leases_revoked() -> None:
    function = classifier(idle_timeout=60)
    handshake(function)
    lease = send(function, up("PA", HELLO), now=1.0).lease
    assert lease is not None
    assert function.next_deadline() == 61.0
    function.on_timer(61.0)
    assert not lease.valid
    assert function.metadata(key()) == {}
    assert function.counters["expired"] == 1


def test_fast_path_use_keeps_a_decided_flow() -> None:
    function = classifier(idle_timeout=60)
    handshake(function)
    lease = send(function, up("PA", HELLO), now=1.0).lease
    assert lease is not None
    lease.packets, lease.bytes, lease.seen = 10, 10_000, 50.0
    function.on_timer(61.0)
    assert lease.valid
    assert function.next_deadline() == 110.0


def test_a_new_syn_on_a_decided_flow_starts_over() -> None:
    function = classifier()
    handshake(function)
    lease = send(function, up("PA", HELLO)).lease
    assert send(function, syn()).verdict is Verdict.PUNT
    assert lease is not None and not lease.valid
    assert function.metadata(key()) == {}
    send(function, up("PA", client_hello("other.test")))
    assert function.metadata(key()) == {"tls_sni": "other.test"}


def test_a_retransmitted_syn_does_not_start_over() -> None:
    function = classifier()
    send(function, syn())
    send(function, syn())
    assert function.counters["flows"] == 1


# -- what is not classified ------------------------------------------------------------------
def test_udp_is_forwarded_with_a_lease_at_once_reused_for_the_flow() -> None:
    function = classifier()
    decided: list[dict[str, str]] = []
    function.on_classified = lambda _k, m: decided.append(m)
    frame = bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=443) / b"quic")
    result = send(function, frame)
    assert result.verdict is Verdict.FORWARD
    assert result.lease is not None
    assert send(function, frame).lease is result.lease
    back = bytes(Ether() / IP(src=SERVER, dst=CLIENT) / UDP(sport=443, dport=5000) / b"quic")
    assert send(function, back).lease not in (None, result.lease)
    assert function.counters["not-tcp"] == 3
    assert decided == []  # nothing to classify: the hook is for TCP flows


def test_a_udp_flow_is_forgotten_when_idle() -> None:
    function = classifier(idle_timeout=60)
    frame = bytes(Ether() / IP(src=CLIENT, dst=SERVER) / UDP(sport=5000, dport=53) / b"q")
    lease = send(function, frame, now=1.0).lease
    function.on_timer(61.0)
    assert lease is not None and not lease.valid
    assert function.status()["flows"] == 0


def test_ip_fragments_are_forwarded_without_a_lease() -> None:
    function = classifier()
    frame = bytes(Ether() / IP(src=CLIENT, dst=SERVER, frag=100, proto=6) / (b"x" * 24))
    result = send(function, frame)
    assert (result.verdict, result.lease) == (Verdict.FORWARD, None)
    assert function.counters["fragment"] == 1


def test_a_full_table_forwards_new_flows_unclassified() -> None:
    function = classifier(max_flows=1)
    decided: list[tuple[FlowKey, dict[str, str]]] = []
    function.on_classified = lambda k, m: decided.append((k, m))
    send(function, syn(sport=1))
    result = send(function, syn(sport=2))
    assert result.verdict is Verdict.FORWARD
    assert result.lease is None  # untracked: no lease to give again, so the slow path
    assert function.counters["table-full"] == 1
    assert decided == [(key(sport=2), {})]


def test_malformed_frames_are_forwarded_and_counted() -> None:
    function = classifier()
    result = send(function, up("PA", HELLO)[:40])
    assert result.verdict is Verdict.FORWARD
    assert result.lease is None
    assert function.counters["malformed"] == 1


def test_an_unknown_interface_is_a_counted_drop() -> None:
    function = classifier()
    result = Driver(function).process(Packet.from_ethernet(syn(), "mirror"), 0.0)[1]
    assert (result.verdict, result.reason) == (Verdict.DROP, "unknown-interface")
    assert function.counters["unknown-interface"] == 1


def test_status_counts_flows_and_undecided_ones() -> None:
    function = classifier()
    send(function, syn(sport=1))
    handshake(function, sport=2)
    send(function, up("PA", HELLO, sport=2))
    status = function.status()
    assert (status["flows"], status["undecided"]) == (2, 1)
    assert status["counters"]["tls"] == 1


def test_config_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        make_function(
            "l7-classifier",
            {"max_bytes": 8, "max_flows": 0, "decide_timeout": -1, "idle_timeout": "x"},
        )
    fields = sorted(error.field for error in caught.value.errors)
    assert fields == ["decide_timeout", "idle_timeout", "max_bytes", "max_flows"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_arbitrary_payloads_and_frames_never_raise(payload: bytes, frame: bytes) -> None:
    function = classifier(max_bytes=256)
    handshake(function)
    assert send(function, up("PA", payload)).verdict in (Verdict.PUNT, Verdict.FORWARD)
    result = function.process(Packet.from_ethernet(frame, "ingress"), 2.0)
    assert result.verdict in (Verdict.PUNT, Verdict.FORWARD)
    function.on_timer(1000.0)
