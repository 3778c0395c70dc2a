"""The virtual router, bytes in and bytes out: ARP, host tracking, forwarding, ICMP, NAT.

Frames are built by scapy (after a 10-byte virtio_net_hdr), given to
:class:`Router`, and what comes out is decoded by scapy, whose own checksum
computation is the oracle for every checksum.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror, defragment
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import (
    HostState,
    NeighborState,
    Router,
    RouterConfig,
    RouterConfigError,
    RouterInterface,
)
from pktchain.functions.sdk import Packet as SdkPacket
from pktchain.functions.sdk import Verdict
from pktchain.packet import parse_frame
from pktchain.packet.checksum import complete_partial_checksum, partial_checksum_seed
from pktchain.packet.virtio import GsoType, needs_csum_header, parse_virtio_net_hdr
from support.router import process, receive, timers

LAN0_MAC, LAN1_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
H1_MAC, H2_MAC, GW_MAC = "02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:bb:00:00:00:fe"
LAN0_IP, LAN1_IP, WAN_IP, GW_IP = "10.0.0.1", "10.0.1.1", "203.0.113.1", "203.0.113.254"
H1, H2, REMOTE = "10.0.0.5", "10.0.1.7", "198.51.100.7"
VNET = bytes(10)


def make_router(*, nat: bool = True, lan1_mtu: int = 1500, **overrides: Any) -> Router:
    interfaces = (
        RouterInterface("lan0", LAN0_MAC, IPv4Interface(f"{LAN0_IP}/24"), network_id="net-a"),
        RouterInterface("lan1", LAN1_MAC, IPv4Interface(f"{LAN1_IP}/24"), mtu=lan1_mtu),
        RouterInterface("wan", WAN_MAC, IPv4Interface(f"{WAN_IP}/24"), external=True),
    )
    settings: dict[str, Any] = {
        "interfaces": interfaces,
        "upstream_gateway": IPv4Address(GW_IP),
        "nat": NatConfig(WAN_IP, ("10.0.0.0/16",), port_seed=7) if nat else None,
    }
    settings.update(overrides)
    return fresh(Router(RouterConfig(**settings)))


def fresh(router: Router) -> Router:
    """A new router, once its first timer sent the announcement of each interface."""
    announcements = timers(router, 0.0)
    assert [name for name, _ in announcements] == [i.name for i in router.interfaces()]
    return router


def frame(packet: Packet, vnet: bytes = VNET) -> bytes:
    return vnet + bytes(packet)


def decode(data: bytes) -> Ether:
    """The Ethernet frame after the 10-byte virtio_net_hdr."""
    return Ether(data[10:])


def from_h1(payload: Packet, dst_mac: str = LAN0_MAC) -> bytes:
    return frame(Ether(src=H1_MAC, dst=dst_mac) / payload)


def from_h2(payload: Packet) -> bytes:
    return frame(Ether(src=H2_MAC, dst=LAN1_MAC) / payload)


def from_wan(payload: Packet) -> bytes:
    return frame(Ether(src=GW_MAC, dst=WAN_MAC) / payload)


def arp_request(src_mac: str, src_ip: str, target: str) -> bytes:
    return frame(
        Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00", pdst=target)
    )


def arp_reply(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> bytes:
    return frame(
        Ether(src=src_mac, dst=dst_mac)
        / ARP(op=2, hwsrc=src_mac, psrc=src_ip, hwdst=dst_mac, pdst=dst_ip)
    )


def learn_all(router: Router, now: float = 0.0) -> None:
    """The three neighbours announce themselves by asking for the router's address."""
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), now)
    receive(router, "lan1", arp_request(H2_MAC, H2, LAN1_IP), now)
    receive(router, "wan", arp_request(GW_MAC, GW_IP, WAN_IP), now)


def ip_checksums_ok(packet: Packet) -> None:
    """Recompute with scapy every checksum of the IP packet and compare."""
    ip = packet[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    layer = fresh.payload
    if hasattr(layer, "chksum"):
        del layer.chksum
    rebuilt = IP(bytes(fresh))
    assert ip.chksum == rebuilt.chksum, "IP header checksum"
    if hasattr(ip.payload, "chksum") and not ip.flags.MF and ip.frag == 0:
        assert ip.payload.chksum == rebuilt.payload.chksum, f"{ip.payload.name} checksum"


def only(outputs: list[tuple[str, bytes]], iface: str | None = None) -> Ether:
    assert len(outputs) == 1, outputs
    name, data = outputs[0]
    if iface is not None:
        assert name == iface
    return decode(data)


# -- ARP --------------------------------------------------------------------------------


def test_arp_request_for_interface_address_is_answered() -> None:
    router = make_router()
    reply = only(receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0), "lan0")
    assert reply[Ether].dst == H1_MAC and reply[Ether].src == LAN0_MAC
    assert reply[ARP].op == 2 and reply[ARP].psrc == LAN0_IP and reply[ARP].hwsrc == LAN0_MAC
    assert reply[ARP].pdst == H1 and reply[ARP].hwdst == H1_MAC
    # Only the receiving interface's address is answered; others are not ours to claim.
    assert receive(router, "lan0", arp_request(H1_MAC, H1, LAN1_IP), 0.0) == []
    assert receive(router, "lan0", arp_request(H1_MAC, H1, "10.0.0.9"), 0.0) == []
    entry = next(e for e in router.arp_table() if e.ip == H1)
    assert entry.mac == H1_MAC and entry.state is NeighborState.REACHABLE


def test_gratuitous_arp_updates_but_never_creates() -> None:
    router = make_router()
    gratuitous = arp_request(H2_MAC, H2, H2)
    receive(router, "lan1", gratuitous, 0.0)
    assert not any(e.ip == H2 for e in router.arp_table())  # RFC 826 merge: not for us
    receive(router, "lan1", arp_request(H2_MAC, H2, LAN1_IP), 0.0)
    moved = "02:aa:00:00:00:99"
    receive(router, "lan1", arp_request(moved, H2, H2), 1.0)
    assert next(e for e in router.arp_table() if e.ip == H2).mac == moved
    # Someone claiming the router's own address is not believed.
    receive(router, "lan1", arp_request(moved, LAN1_IP, LAN1_IP), 1.0)
    assert router.status()["counters"]["drop-arp-address-conflict"] == 1


def test_forwarding_resolves_next_hop_then_flushes_queue() -> None:
    router = make_router()
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    probe = from_h1(IP(src=H1, dst=H2, ttl=64) / UDP(sport=4000, dport=5000) / (b"x" * 20))
    request = only(receive(router, "lan0", probe, 0.0), "lan1")
    assert request[ARP].op == 1 and request[ARP].pdst == H2 and request[ARP].psrc == LAN1_IP
    assert request[Ether].dst == "ff:ff:ff:ff:ff:ff"
    flushed = receive(router, "lan1", arp_reply(H2_MAC, H2, LAN1_MAC, LAN1_IP), 0.5)
    packet = only(flushed, "lan1")
    assert packet[Ether].src == LAN1_MAC and packet[Ether].dst == H2_MAC
    assert packet[IP].ttl == 63 and packet[IP].src == H1 and packet[IP].dst == H2
    ip_checksums_ok(packet)
    # Resolved: the next packet goes straight out.
    assert only(receive(router, "lan0", probe, 1.0), "lan1")[IP].ttl == 63


def test_arp_retries_then_host_unreachable_for_queued_packets() -> None:
    router = make_router(arp_retries=3, arp_retry_interval=1.0)
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    probe = from_h1(IP(src=H1, dst=H2) / UDP(sport=4000, dport=5000) / b"hello")
    receive(router, "lan0", probe, 0.0)
    assert router.next_deadline() == pytest.approx(1.0)
    for now in (1.0, 2.0):
        assert decode(timers(router, now)[0][1])[ARP].pdst == H2
    outputs = timers(router, 3.0)
    error = only(outputs, "lan0")
    assert error[ICMP].type == 3 and error[ICMP].code == 1
    assert error[IP].src == LAN0_IP and error[IP].dst == H1
    assert error[IPerror].dst == H2 and error[UDPerror].dport == 5000
    assert error[IPerror].ttl == 64  # quoted as it arrived
    ip_checksums_ok(error)
    assert not any(e.ip == H2 for e in router.arp_table())
    assert router.status()["counters"]["arp-requests-sent"] == 3


def test_arp_queue_is_bounded_and_keeps_the_latest() -> None:
    router = make_router(arp_queue_limit=2)
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    for port in (1, 2, 3):
        receive(router, "lan0", from_h1(IP(src=H1, dst=H2) / UDP(sport=port, dport=9)), 0.0)
    assert router.status()["counters"]["drop-arp-queue-full"] == 1
    flushed = receive(router, "lan1", arp_reply(H2_MAC, H2, LAN1_MAC, LAN1_IP), 0.1)
    assert [decode(f)[UDP].sport for _, f in flushed] == [2, 3]


def test_arp_entry_expires_is_probed_and_forgotten() -> None:
    router = make_router(arp_timeout=30.0, arp_retries=2)
    learn_all(router)
    assert router.next_deadline() is not None
    probe = timers(router, 30.0)
    assert [decode(f)[ARP].pdst for _, f in probe] == [H1, H2, GW_IP]
    assert {e.state for e in router.arp_table()} == {NeighborState.PROBE}
    # Still usable while probed.
    out = receive(router, "lan0", from_h1(IP(src=H1, dst=H2) / UDP(sport=1, dport=2)), 30.5)
    assert only(out, "lan1")[Ether].dst == H2_MAC
    receive(router, "lan1", arp_reply(H2_MAC, H2, LAN1_MAC, LAN1_IP), 30.6)  # H2 answers
    timers(router, 31.0)
    generation = router.generation
    timers(router, 32.0)
    assert [e.ip for e in router.arp_table()] == [H2]
    assert router.generation > generation


# -- host tracking and automatic port forwarding -------------------------------------


def test_hosts_are_learned_with_an_automatic_forwarding_port_and_age_out() -> None:
    router = make_router(host_aging=100.0, arp_retries=2)
    receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP(sport=1, dport=2)), 5.0)
    (host,) = router.hosts()
    assert (host.mac, host.ip, host.interface, host.network_id) == (H1_MAC, H1, "lan0", "net-a")
    assert host.forward_port == 49152 and host.state is HostState.ACTIVE
    assert host.first_seen == 5.0
    rule = next(m for m in router.nat_table() if m.static)
    assert (rule.external_port, rule.internal_address, rule.internal_port) == (49152, H1, 22)
    # Silent for host_aging: probed by ARP, then forgotten with its port.
    probe = [decode(f) for _, f in timers(router, 105.0)]
    assert any(ARP in p and p[ARP].pdst == H1 for p in probe)
    assert router.hosts()[0].state is HostState.PROBING
    timers(router, 106.0)
    timers(router, 107.0)
    assert router.hosts() == []
    assert not any(m.static for m in router.nat_table())


def test_probed_host_that_answers_stays() -> None:
    router = make_router(host_aging=100.0)
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    timers(router, 100.0)
    receive(router, "lan0", arp_reply(H1_MAC, H1, LAN0_MAC, LAN0_IP), 100.5)
    assert router.hosts()[0].state is HostState.ACTIVE
    assert router.hosts()[0].last_seen == 100.5


def test_announced_host_forwarding_port_reaches_its_service() -> None:
    router = make_router()
    learn_all(router)
    router.remove_host(H1)  # learned above; now announced by the controller instead
    entry = router.add_host(H1_MAC, H1, "net-a")
    assert entry.state is HostState.STATIC and entry.forward_port is not None
    syn = from_wan(IP(src=REMOTE, dst=WAN_IP) / TCP(sport=40000, dport=entry.forward_port))
    packet = only(receive(router, "wan", syn, 1.0), "lan0")
    assert packet[IP].dst == H1 and packet[TCP].dport == 22 and packet[IP].ttl == 63
    assert packet[Ether].dst == H1_MAC
    ip_checksums_ok(packet)
    removed = router.remove_host(H1_MAC)
    assert removed.ip == H1
    assert receive(router, "wan", syn, 2.0) == []
    with pytest.raises(ValueError, match="mac_or_ip"):
        router.remove_host(H1)


def test_add_host_checks_every_field() -> None:
    router = make_router()
    with pytest.raises(ValueError, match="mac:"):
        router.add_host("zz", H1)
    with pytest.raises(ValueError, match="ip:"):
        router.add_host(H1_MAC, "192.168.9.9")
    with pytest.raises(ValueError, match="network_id"):
        router.add_host(H1_MAC, H1, "net-other")
    assert router.hosts() == []


# -- forwarding, TTL and ICMP ------------------------------------------------------------


@pytest.mark.parametrize(
    "probe",
    [
        UDP(sport=43000, dport=33434) / (b"\x00" * 24),  # traceroute default (UDP) mode
        ICMP(type=8, id=0x1234, seq=1) / (b"\x00" * 24),  # traceroute -I
    ],
    ids=["udp", "icmp"],
)
def test_time_exceeded_quotes_the_probe(probe: Packet) -> None:
    router = make_router()
    learn_all(router)
    out = receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE, ttl=1, id=77) / probe), 1.0)
    error = only(out, "lan0")
    assert error[Ether].dst == H1_MAC and error[Ether].src == LAN0_MAC
    assert error[IP].src == LAN0_IP and error[IP].dst == H1
    assert error[ICMP].type == 11 and error[ICMP].code == 0
    quoted = error[IPerror]
    assert (quoted.src, quoted.dst, quoted.ttl, quoted.id) == (H1, REMOTE, 1, 77)
    assert bytes(quoted)[:28] == bytes(IP(src=H1, dst=REMOTE, ttl=1, id=77) / probe)[:28]
    ip_checksums_ok(error)
    assert router.nat_sessions() == []  # the NAT never saw it


def test_destination_unreachable_net_port_protocol() -> None:
    router = make_router(nat=False, upstream_gateway=None)
    learn_all(router)
    net = only(receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP()), 0.0))
    assert (net[ICMP].type, net[ICMP].code) == (3, 0)
    port = only(receive(router, "lan0", from_h1(IP(src=H1, dst=LAN1_IP) / UDP(dport=9)), 0.0))
    assert (port[ICMP].type, port[ICMP].code, port[IP].src) == (3, 3, LAN0_IP)
    assert port[UDPerror].dport == 9
    proto = only(receive(router, "lan0", from_h1(IP(src=H1, dst=LAN0_IP, proto=47) / b"gre!"), 0))
    assert (proto[ICMP].type, proto[ICMP].code) == (3, 2)
    for packet in (net, port, proto):
        ip_checksums_ok(packet)


def test_fragmentation_needed_carries_next_hop_mtu() -> None:
    router = make_router(lan1_mtu=1000)
    learn_all(router)
    big = IP(src=H1, dst=H2, flags="DF") / UDP(sport=1, dport=2) / (b"z" * 1200)
    error = only(receive(router, "lan0", from_h1(big), 0.0), "lan0")
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1000)
    assert error[IPerror].dst == H2
    ip_checksums_ok(error)


def test_too_big_without_df_is_fragmented() -> None:
    router = make_router(lan1_mtu=1000)
    learn_all(router)
    big = IP(src=H1, dst=H2, id=9) / UDP(sport=1, dport=2) / (b"z" * 2400)
    outputs = receive(router, "lan0", from_h1(big), 0.0)
    pieces = [decode(f) for _, f in outputs]
    assert len(pieces) == 3 and all(len(p[IP]) <= 1000 for p in pieces)
    for piece in pieces:
        ip_checksums_ok(piece)
        assert piece[IP].ttl == 63 and piece[Ether].dst == H2_MAC
    (whole,) = defragment([p[IP] for p in pieces])
    assert bytes(whole[UDP].payload) == b"z" * 2400
    ip_checksums_ok(IP(bytes(whole)))  # scapy leaves the reassembled header's sum to fill


def test_echo_replies_for_own_addresses() -> None:
    router = make_router()
    learn_all(router)
    for iface, src_frame, target in (
        ("lan0", from_h1(IP(src=H1, dst=LAN0_IP) / ICMP(id=7, seq=3) / b"abc"), LAN0_IP),
        ("lan0", from_h1(IP(src=H1, dst=WAN_IP) / ICMP(id=7, seq=4) / b"abc"), WAN_IP),
        ("wan", from_wan(IP(src=REMOTE, dst=WAN_IP) / ICMP(id=8, seq=5) / b"abc"), WAN_IP),
    ):
        reply = only(receive(router, iface, src_frame, 0.0), iface)
        assert reply[ICMP].type == 0 and reply[IP].src == target
        assert bytes(reply[ICMP].payload) == b"abc"
        ip_checksums_ok(reply)


def test_icmp_errors_are_rate_limited_by_a_token_bucket() -> None:
    router = make_router(icmp_error_rate=1.0, icmp_error_burst=2)
    learn_all(router)
    probe = from_h1(IP(src=H1, dst=REMOTE, ttl=1) / UDP(dport=33434))
    sent = sum(len(receive(router, "lan0", probe, 10.0)) for _ in range(5))
    assert sent == 2
    assert router.status()["counters"]["icmp-rate-limited"] == 3
    assert len(receive(router, "lan0", probe, 11.0)) == 1  # one token back after 1 s
    assert receive(router, "lan0", probe, 11.0) == []


def test_no_icmp_error_about_errors_broadcasts_or_later_fragments() -> None:
    router = make_router()
    learn_all(router)
    quoted = bytes(IP(src=REMOTE, dst=H1) / UDP())
    error_in = IP(src=H1, dst=REMOTE, ttl=1) / ICMP(type=3, code=3) / quoted
    later_fragment = IP(src=H1, dst=REMOTE, ttl=1, frag=10) / (b"f" * 16)
    for packet in (error_in, later_fragment):
        assert receive(router, "lan0", from_h1(packet), 0.0) == []
    link_broadcast = from_h1(IP(src=H1, dst=REMOTE, ttl=1) / UDP(), dst_mac="ff:ff:ff:ff:ff:ff")
    assert receive(router, "lan0", link_broadcast, 0.0) == []
    directed = from_h1(IP(src=H1, dst="10.0.1.255") / UDP())
    assert receive(router, "lan0", directed, 0.0) == []
    counters = router.status()["counters"]
    assert counters["icmp-suppressed"] == 2
    assert counters["drop-link-broadcast"] == 1
    assert counters["drop-broadcast-destination"] == 1


# -- NAT ---------------------------------------------------------------------------------


def test_nat_outbound_and_reply_inbound() -> None:
    router = make_router()
    learn_all(router)
    query = from_h1(IP(src=H1, dst=REMOTE, ttl=64) / UDP(sport=5353, dport=53) / b"q")
    out = only(receive(router, "lan0", query, 1.0), "wan")
    assert out[Ether].src == WAN_MAC and out[Ether].dst == GW_MAC
    assert out[IP].src == WAN_IP and out[IP].ttl == 63 and out[UDP].sport == 5353
    ip_checksums_ok(out)
    answer = from_wan(IP(src=REMOTE, dst=WAN_IP, ttl=50) / UDP(sport=53, dport=5353) / b"a")
    back = only(receive(router, "wan", answer, 1.5), "lan0")
    assert back[IP].dst == H1 and back[UDP].dport == 5353 and back[IP].ttl == 49
    assert back[Ether].dst == H1_MAC
    ip_checksums_ok(back)
    # Outside hosts cannot reach private addresses directly.
    assert receive(router, "wan", from_wan(IP(src=REMOTE, dst=H1) / UDP()), 2.0) == []
    assert router.status()["counters"]["drop-nat-bypass"] == 1


def test_nat_translates_time_exceeded_from_an_outside_hop() -> None:
    router = make_router()
    learn_all(router)
    probe = IP(src=H1, dst=REMOTE, ttl=2) / UDP(sport=43000, dport=33435)
    sent = only(receive(router, "lan0", from_h1(probe), 1.0), "wan")
    hop = IP(src="192.0.2.9", dst=WAN_IP) / ICMP(type=11, code=0) / bytes(sent[IP])[:28]
    back = only(receive(router, "wan", from_wan(hop), 1.1), "lan0")
    assert back[IP].dst == H1 and back[ICMP].type == 11
    assert back[IPerror].src == H1 and back[UDPerror].sport == 43000
    ip_checksums_ok(back)


def test_hairpin_through_the_external_address() -> None:
    router = make_router()
    learn_all(router)
    router.add_port_forward("tcp", 8080, H2, 80)
    syn = from_h1(IP(src=H1, dst=WAN_IP) / TCP(sport=41000, dport=8080, flags="S"))
    packet = only(receive(router, "lan0", syn, 1.0), "lan1")
    assert packet[IP].src == WAN_IP and packet[TCP].sport == 41000  # external source
    assert packet[IP].dst == H2 and packet[TCP].dport == 80 and packet[IP].ttl == 63
    ip_checksums_ok(packet)


def test_admin_port_forward_add_and_remove() -> None:
    router = make_router()
    learn_all(router)
    rule = router.add_port_forward("udp", 5000, H2, 6000)
    assert rule in router.port_forwards() and not rule.automatic
    datagram = from_wan(IP(src=REMOTE, dst=WAN_IP) / UDP(sport=7, dport=5000) / b"in")
    packet = only(receive(router, "wan", datagram, 1.0), "lan1")
    assert (packet[IP].dst, packet[UDP].dport) == (H2, 6000)
    ip_checksums_ok(packet)
    with pytest.raises(ValueError, match="external_port"):
        router.add_port_forward("udp", 5000, H2, 6001)
    with pytest.raises(ValueError, match="proto"):
        router.add_port_forward("sctp", 5001, H2, 6001)
    with pytest.raises(ValueError, match="inside_ip"):
        router.add_port_forward("udp", 5001, "192.168.1.1", 6001)
    auto = next(f for f in router.port_forwards() if f.automatic)
    with pytest.raises(ValueError, match="automatic"):
        router.remove_port_forward("tcp", auto.external_port)
    router.remove_port_forward("udp", 5000)
    assert receive(router, "wan", datagram, 2.0) == []


def test_nat_refusal_icmp_goes_back_inside() -> None:
    router = make_router(nat=False)
    config = RouterConfig(
        interfaces=router.config.interfaces,
        upstream_gateway=router.config.upstream_gateway,
        nat=NatConfig(WAN_IP, ("10.0.0.0/16",), max_sessions_per_host=1, port_seed=7),
    )
    router = fresh(Router(config))
    learn_all(router)
    receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP(sport=1, dport=2)), 0.0)
    refused = receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP(sport=3, dport=4)), 0)
    error = only(refused, "lan0")
    assert (error[ICMP].type, error[ICMP].code, error[IP].src) == (3, 13, LAN0_IP)


# -- GSO and partial checksums -----------------------------------------------------------


def _gso_frame(src: str, dst: str, sport: int, dport: int, *, size: int, gso_size: int) -> bytes:
    packet = (
        Ether(src=H1_MAC, dst=LAN0_MAC)
        / IP(src=src, dst=dst, flags="DF")
        / TCP(sport=sport, dport=dport, flags="A", seq=1, ack=1)
        / (bytes(range(256)) * (size // 256 + 1))[:size]
    )
    data = bytearray(bytes(packet))
    info = parse_frame(data)
    seed = partial_checksum_seed(info.src, info.dst, 6, info.end - info.l4)
    data[info.l4 + 16 : info.l4 + 18] = seed.to_bytes(2, "big")
    header = needs_csum_header(info, GsoType.TCPV4, gso_size)
    return header.pack() + bytes(data)


def test_gso_frame_with_partial_checksum_is_natted_and_completes_right() -> None:
    router = make_router()
    learn_all(router)
    receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / TCP(sport=40000, dport=80)), 0.0)
    gso = _gso_frame(H1, REMOTE, 40000, 80, size=30000, gso_size=1448)
    ((name, data),) = receive(router, "lan0", gso, 1.0)
    assert name == "wan"
    vnet = parse_virtio_net_hdr(data)
    assert vnet is not None
    assert vnet.gso_type == GsoType.TCPV4 and vnet.needs_csum and vnet.gso_size == 1448
    completed = bytearray(data)
    complete_partial_checksum(completed, vnet.csum_start, vnet.csum_offset, base=10)
    packet = decode(bytes(completed))
    assert packet[IP].src == WAN_IP and packet[IP].ttl == 63
    ip_checksums_ok(packet)


def test_a_gso_frame_that_waited_for_arp_leaves_with_its_virtio_header() -> None:
    router = make_router()
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    gso = _gso_frame(H1, H2, 1000, 2000, size=20000, gso_size=1448)
    result, _ = process(router, "lan0", gso, 0.0)
    assert result.verdict is Verdict.DROP and result.reason == "arp-queued"
    assert [decode(VNET + f)[ARP].pdst for _, f in result.emit] == [H2]  # who has H2?
    answer, _ = process(router, "lan1", arp_reply(H2_MAC, H2, LAN1_MAC, LAN1_IP), 0.1)
    ((name, held),) = answer.emit
    assert name == "lan1" and isinstance(held, SdkPacket)  # sent as the packet it was
    ((name, data),) = receive(router, "lan0", gso, 0.2)  # resolved now: forwarded at once
    vnet = parse_virtio_net_hdr(bytes(held.buf))
    assert vnet == parse_virtio_net_hdr(data)
    assert vnet is not None and vnet.gso_type == GsoType.TCPV4 and vnet.needs_csum
    assert held.ethernet == data[10:] and decode(data)[Ether].dst == H2_MAC


def test_gso_frame_judged_by_gso_size_against_the_mtu() -> None:
    router = make_router(lan1_mtu=1000)
    learn_all(router)
    fits = _gso_frame(H1, H2, 1000, 2000, size=20000, gso_size=900)
    assert only(receive(router, "lan0", fits, 0.0), "lan1")[IP].ttl == 63
    too_big = _gso_frame(H1, H2, 1000, 2000, size=20000, gso_size=1448)
    error = only(receive(router, "lan0", too_big, 0.0), "lan0")
    assert (error[ICMP].type, error[ICMP].code, error[ICMP].nexthopmtu) == (3, 4, 1000)


# -- fast path ---------------------------------------------------------------------------


def test_established_flows_are_leased_to_the_fast_path() -> None:
    router = make_router()
    learn_all(router)
    syn = from_h1(IP(src=H1, dst=REMOTE) / TCP(sport=40000, dport=80, flags="S"))
    assert process(router, "lan0", syn, 0.0)[0].lease is None  # SYN: the NAT must see it
    receive(
        router,
        "wan",
        from_wan(IP(src=REMOTE, dst=WAN_IP) / TCP(sport=80, dport=40000, flags="SA")),
        0.1,
    )
    # DF set, as TCP stacks send it: a translated datagram with DF clear gets a
    # fresh IPv4 ID each time (RFC 7857 §10) and so is never leased.
    ack = from_h1(IP(src=H1, dst=REMOTE, flags="DF") / TCP(sport=40000, dport=80, flags="A"))
    first, _ = process(router, "lan0", ack, 0.2)
    assert first.iface == "wan" and first.lease is None  # the session's first-packet mark
    second, packet = process(router, "lan0", ack, 0.3)
    lease = second.lease
    assert lease is not None and lease.valid and lease.traced and lease.mtu == 1500
    assert Ether(packet.ethernet)[Ether].dst == GW_MAC and Ether(packet.ethernet)[IP].src == WAN_IP
    plain, _ = process(router, "lan0", from_h1(IP(src=H1, dst=H2) / UDP(sport=1, dport=2)), 0.4)
    assert plain.lease is not None and not plain.lease.traced  # routed: leased at once
    assert router.status()["leases"] == 2
    # The gateway's MAC changes: every lease goes.
    receive(router, "wan", arp_request("02:bb:00:00:00:ee", GW_IP, WAN_IP), 0.5)
    assert not lease.valid and not plain.lease.valid and router.status()["leases"] == 0


# -- robustness and configuration -----------------------------------------------------------


def test_garbage_frames_are_counted_drops() -> None:
    router = make_router()
    bad_checksum = bytearray(from_h1(IP(src=H1, dst=H2) / UDP()))
    bad_checksum[10 + 14 + 10] ^= 0xFF
    frames = [
        b"",
        b"\x00" * 9,
        VNET + b"\x01\x02",
        VNET + bytes(range(256)) * 3,
        bytes(bad_checksum),
        from_h1(IP(src=H1, dst=H2) / UDP())[:40],
        frame(Ether(src=H1_MAC, dst="02:99:99:99:99:99") / IP(src=H1, dst=H2) / UDP()),
        from_h1(IP(src="127.0.0.1", dst=H2) / UDP()),
        from_h1(IP(src=H1, dst="224.0.0.5") / UDP()),
        frame(Ether(src=H1_MAC, dst=LAN0_MAC) / IPv6(src="fd00::5", dst="fd00::1") / UDP()),
    ]
    for data in frames:
        assert receive(router, "lan0", data, 0.0) == []
    assert receive(router, "nowhere", frames[4], 0.0) == []
    counters = router.status()["counters"]
    drops = sum(v for k, v in counters.items() if k.startswith("drop-"))
    assert drops == len(frames) + 1
    for reason in (
        "truncated-vnet-header",
        "malformed",
        "ip-checksum",
        "not-our-mac",
        "martian-source",
        "multicast-destination",
        "ipv6",
        "unknown-interface",
    ):
        assert counters[f"drop-{reason}"] >= 1, reason
    assert "drop-internal-error" not in counters


def test_config_reports_every_error_with_its_field() -> None:
    interfaces = (
        RouterInterface("a", LAN0_MAC, IPv4Interface("10.0.0.1/24")),
        RouterInterface("a", LAN0_MAC, IPv4Interface("10.0.0.2/16")),
    )
    with pytest.raises(RouterConfigError) as caught:
        RouterConfig(
            interfaces=interfaces,
            upstream_gateway=IPv4Address("10.0.0.9"),
            arp_retries=0,
            auto_forward_range=(5, 1),
        )
    text = " ".join(caught.value.errors)
    for field in (
        "name",
        "mac",
        "overlaps",
        "upstream_gateway",
        "arp_retries",
        "auto_forward_range",
    ):
        assert field in text, field
    with pytest.raises(RouterConfigError, match="mtu"):
        RouterInterface("x", LAN0_MAC, IPv4Interface("10.9.0.1/24"), mtu=10)


def test_interfaces_added_and_removed_at_runtime() -> None:
    router = make_router()
    router.add_interface(RouterInterface("lan2", "02:00:00:00:00:04", IPv4Interface("10.0.2.1/24")))
    assert router.next_deadline() == 0.0  # its announcement is due (RFC 5227 §3)
    announcement = only(timers(router, 0.0), "lan2")
    assert (announcement[ARP].op, announcement[ARP].psrc, announcement[ARP].pdst) == (
        1,
        "10.0.2.1",
        "10.0.2.1",
    )
    assert announcement[Ether].dst == "ff:ff:ff:ff:ff:ff"
    reply = only(receive(router, "lan2", arp_request(H2_MAC, "10.0.2.9", "10.0.2.1"), 0.0))
    assert reply[ARP].psrc == "10.0.2.1"
    with pytest.raises(ValueError, match="overlaps"):
        router.add_interface(
            RouterInterface("dup", "02:00:00:00:00:05", IPv4Interface("10.0.2.1/25"))
        )
    with pytest.raises(ValueError, match=r"nat\.internal_networks"):
        router.add_interface(
            RouterInterface("out", "02:00:00:00:00:06", IPv4Interface("172.16.0.1/24"))
        )
    router.remove_interface("lan2")
    assert all(h.interface != "lan2" for h in router.hosts())
    with pytest.raises(ValueError, match="external"):
        router.remove_interface("wan")
    assert receive(router, "lan2", arp_request(H2_MAC, "10.0.2.9", "10.0.2.1"), 0.0) == []


def test_external_interface_added_at_runtime_brings_its_gateway() -> None:
    router = Router(RouterConfig())
    router.add_interface(RouterInterface("lan0", LAN0_MAC, IPv4Interface(f"{LAN0_IP}/24")))
    wan = RouterInterface(
        "wan", WAN_MAC, IPv4Interface(f"{WAN_IP}/24"), external=True, gateway=IPv4Address(GW_IP)
    )
    router.add_interface(wan)
    receive(router, "wan", arp_request(GW_MAC, GW_IP, WAN_IP), 0.0)
    receive(router, "lan0", arp_request(H1_MAC, H1, LAN0_IP), 0.0)
    out = only(receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP()), 0.0), "wan")
    assert out[Ether].dst == GW_MAC and out[IP].src == H1  # plain routing: no NAT
    with pytest.raises(RouterConfigError, match="gateway"):
        RouterInterface("x", LAN1_MAC, IPv4Interface("10.0.1.1/24"), gateway=IPv4Address(GW_IP))
    router.remove_interface("wan")
    net = only(receive(router, "lan0", from_h1(IP(src=H1, dst=REMOTE) / UDP()), 1.0), "lan0")
    assert (net[ICMP].type, net[ICMP].code) == (3, 0)
