"""The server's routing between clients and its TUN, without sockets; scapy checks packets."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.packet import raw

from pktchain.tunnel.counters import Count, Counters, DropReason
from pktchain.tunnel.switch import Local, Switch, learnable

SERVER = bytes([10, 7, 0, 1])
A = bytes([10, 7, 0, 2])
B = bytes([10, 7, 0, 3])


def ping(src: str, dst: str, ttl: int = 64) -> bytes:
    return raw(IP(src=src, dst=dst, ttl=ttl) / ICMP(id=1, seq=1) / b"payload")


def switch() -> Switch[str]:
    return Switch(Counters(), own=(SERVER,))


def test_one_client_gets_everything_from_the_tun_like_the_original() -> None:
    s = switch()
    s.peer_up("a")
    assert s.from_tun(ping("10.7.0.1", "10.9.9.9")) == "a"
    assert s.from_tun(b"garbage") == "a"  # not even parsed: one place to go


def test_no_client_means_not_connected() -> None:
    s = switch()
    assert s.from_tun(ping("10.7.0.1", "10.7.0.2")) is None
    assert s.counters.drops == {DropReason.NOT_CONNECTED: 1}


def test_announced_addresses_route_at_once() -> None:
    s = switch()
    s.peer_up("a", [A])
    s.peer_up("b", [B])
    assert s.from_tun(ping("10.7.0.1", "10.7.0.2")) == "a"
    assert s.from_tun(ping("10.7.0.1", "10.7.0.3")) == "b"
    assert s.from_tun(ping("10.7.0.1", "10.7.0.4")) is None
    assert s.counters.drops == {DropReason.NO_ROUTE: 1}


def test_sources_are_learned_and_the_latest_peer_wins() -> None:
    s = switch()
    s.peer_up("a")
    s.peer_up("b")
    target, _ = s.from_peer(ping("10.7.0.2", "10.7.0.1"), "a")
    assert target is Local.TUN
    assert s.routes == {A: "a"}
    s.peer_up("a2")  # a reconnected: its first packet moves the route
    s.from_peer(ping("10.7.0.2", "10.7.0.1"), "a2")
    assert s.routes == {A: "a2"}
    assert s.counters.counts[Count.ROUTES_MOVED] == 1


def test_between_clients_a_packet_is_relayed_as_a_router_hop() -> None:
    s = switch()
    s.peer_up("a", [A])
    s.peer_up("b", [B])
    target, out = s.from_peer(ping("10.7.0.2", "10.7.0.3", ttl=64), "a")
    assert target == "b"
    relayed = IP(bytes(out))
    assert relayed.ttl == 63
    # The header checksum was updated: scapy, recomputing it, agrees.
    original_checksum = relayed.chksum
    del relayed.chksum
    assert IP(raw(relayed)).chksum == original_checksum
    assert s.counters.counts[Count.RELAYED] == 1


def test_ipv6_hop_limit_is_decremented_too() -> None:
    s = switch()
    a6 = bytes.fromhex("fd000000000000000000000000000002")
    b6 = bytes.fromhex("fd000000000000000000000000000003")
    s.peer_up("a", [a6])
    s.peer_up("b", [b6])
    packet = raw(IPv6(src="fd00::2", dst="fd00::3", hlim=5) / ICMPv6EchoRequest())
    target, out = s.from_peer(packet, "a")
    assert target == "b" and IPv6(bytes(out)).hlim == 4


def test_ttl_one_is_not_relayed() -> None:
    s = switch()
    s.peer_up("a", [A])
    s.peer_up("b", [B])
    target, _ = s.from_peer(ping("10.7.0.2", "10.7.0.3", ttl=1), "a")
    assert target is None
    assert s.counters.drops == {DropReason.TTL_EXPIRED: 1}


def test_a_packet_back_to_its_own_peer_is_a_loop() -> None:
    s = switch()
    s.peer_up("a", [A, B])
    target, _ = s.from_peer(ping("10.7.0.2", "10.7.0.3"), "a")
    assert target is None and s.counters.drops == {DropReason.LOOP: 1}


def test_malformed_packets_from_peers_are_dropped() -> None:
    s = switch()
    s.peer_up("a")
    for junk in (b"", b"\x45\x00", b"\x10" + bytes(30)):
        target, _ = s.from_peer(junk, "a")
        assert target is None
    assert s.counters.drops == {DropReason.MALFORMED: 3}


def test_the_servers_own_multicast_and_unspecified_sources_are_not_learned() -> None:
    s = switch()
    s.peer_up("a")
    for src in ("10.7.0.1", "0.0.0.0", "224.0.0.5"):
        s.from_peer(ping(src, "10.7.0.1"), "a")
    assert s.routes == {}
    assert learnable(A) and not learnable(b"\xff" * 4) and not learnable(b"\xff" + bytes(15))


def test_a_peer_that_goes_takes_its_routes() -> None:
    s = switch()
    s.peer_up("a", [A])
    s.peer_up("b", [B])
    s.peer_down("a")
    assert s.routes == {B: "b"} and s.peers == {"b"}


def test_the_route_table_is_bounded() -> None:
    s: Switch[str] = Switch(Counters(), max_routes=1)
    s.peer_up("a", [A, B])
    assert s.routes == {A: "a"}
    assert s.counters.counts[Count.ROUTES_NOT_LEARNED] == 1
