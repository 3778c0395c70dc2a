"""The router's flow leases: which flows the node's fast path may carry, and until when."""

from __future__ import annotations

from ipaddress import IPv4Interface

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.router.leases import ROUTED_IDLE_TIMEOUT
from pktchain.functions.sdk import FlowLease, Verdict
from support.router import process, receive, timers

VNET = bytes(10)
INTERFACES = (  # name, router MAC, router address, host MAC, host address
    ("inside", "02:00:00:00:01:01", "10.0.0.1", "02:00:00:00:01:0a", "10.0.0.10"),
    ("lab", "02:00:00:00:03:01", "10.0.3.1", "02:00:00:00:03:0a", "10.0.3.10"),
    ("outside", "02:00:00:00:02:01", "198.51.100.2", "02:00:00:00:02:0a", "198.51.100.10"),
)
MACS = {name: (router_mac, host_mac) for name, router_mac, _, host_mac, _ in INTERFACES}
REMOTE = "198.51.100.10"  # the upstream gateway, and the outside host the tests talk to


def make_router() -> Router:
    """Three interfaces, NAT on the outside one, every host's MAC known (it asked the router's)."""
    router = Router(
        RouterConfig(
            interfaces=tuple(
                RouterInterface(name, mac, IPv4Interface(f"{ip}/24"), external=name == "outside")
                for name, mac, ip, _, _ in INTERFACES
            ),
            upstream_gateway=REMOTE,
            nat=NatConfig("198.51.100.2", ("10.0.0.0/16",), port_seed=7),
            auto_forward_service_port=None,
        )
    )
    timers(router, 0.0)  # the interfaces' announcements
    for name, router_mac, router_ip, host_mac, host_ip in INTERFACES:
        ask = ARP(op=1, hwsrc=host_mac, psrc=host_ip, pdst=router_ip)
        receive(router, name, VNET + bytes(Ether(src=host_mac, dst=router_mac) / ask), 0.0)
    return router


def udp(iface: str, src: str, dst: str, sport: int = 4000, dport: int = 53) -> bytes:
    router_mac, host_mac = MACS[iface]
    # DF set: with DF clear each translated datagram gets its own ID (RFC 7857 §10)
    # and is never leased.
    datagram = IP(src=src, dst=dst, flags="DF") / UDP(sport=sport, dport=dport) / b"q"
    return VNET + bytes(Ether(src=host_mac, dst=router_mac) / datagram)


def tcp(src: str, dst: str, flags: str) -> bytes:
    router_mac, host_mac = MACS["inside"]
    segment = IP(src=src, dst=dst, flags="DF") / TCP(sport=40000, dport=80, flags=flags)
    return VNET + bytes(Ether(src=host_mac, dst=router_mac) / segment)


def lease_of(
    router: Router, frame: bytes, now: float = 1.0, iface: str = "inside"
) -> FlowLease | None:
    result, _packet = process(router, iface, frame, now)
    assert result.verdict is Verdict.FORWARD, (result.verdict, result.reason)
    return result.lease


def test_a_nat_flow_is_leased_with_its_second_packet_and_a_lone_query_costs_nothing() -> None:
    router = make_router()
    assert lease_of(router, udp("inside", "10.0.0.10", REMOTE, sport=1)) is None  # a lone query
    assert router.status()["leases"] == 0
    assert lease_of(router, udp("inside", "10.0.0.10", REMOTE, sport=2)) is None
    lease = lease_of(router, udp("inside", "10.0.0.10", REMOTE, sport=2))
    # Handed over already traced: the node fuses the flow at its next packet.
    assert lease is not None and lease.valid and lease.traced and lease.mtu == 1500
    assert lease_of(router, udp("inside", "10.0.0.10", REMOTE, sport=2)) is lease
    assert router.status()["leases"] == 1


def test_a_routed_flow_without_nat_is_leased_at_once_and_forgotten_when_idle() -> None:
    router = make_router()
    lease = lease_of(router, udp("inside", "10.0.0.10", "10.0.3.10"))
    assert lease is not None and not lease.traced  # the node's second-packet rule applies
    assert lease_of(router, udp("inside", "10.0.0.10", "10.0.3.10")) is lease
    router.on_timer(1.0 + ROUTED_IDLE_TIMEOUT - 1)
    assert lease.valid
    router.on_timer(1.0 + ROUTED_IDLE_TIMEOUT + 1)
    assert not lease.valid and router.status()["leases"] == 0


def test_fast_path_traffic_keeps_a_routed_lease() -> None:
    router = make_router()
    lease = lease_of(router, udp("inside", "10.0.0.10", "10.0.3.10"))
    assert lease is not None
    lease.packets, lease.bytes, lease.seen = 9, 900, 200.0  # as the node counts them
    router.on_timer(1.0 + ROUTED_IDLE_TIMEOUT + 1)
    assert lease.valid
    router.on_timer(200.0 + ROUTED_IDLE_TIMEOUT + 1)
    assert not lease.valid


def test_a_nat_session_the_fast_path_carries_stays_alive_and_ends_with_its_lease() -> None:
    router = make_router()
    frame = udp("inside", "10.0.0.10", REMOTE, sport=5)
    lease_of(router, frame)
    lease = lease_of(router, frame)
    assert lease is not None
    lease.seen = 250.0  # the last packet the fast path carried
    router.on_timer(299.0)  # handed to the NAT: the session now lasts until 250 + 300
    router.on_timer(400.0)  # past the UDP timeout of the last packet the router saw
    assert lease.valid and len(router.nat_sessions()) == 1
    router.on_timer(600.0)  # nothing since 250: the session expires, its lease goes
    assert not lease.valid and router.nat_sessions() == [] and router.status()["leases"] == 0


def test_state_changes_and_control_calls_revoke_the_leases_they_concern() -> None:
    router = make_router()
    routed = lease_of(router, udp("inside", "10.0.0.10", "10.0.3.10"))
    assert routed is not None
    router.add_port_forward("udp", 5353, "10.0.3.10", 53)
    assert routed.valid  # a new rule changes no treatment
    inbound = udp("outside", REMOTE, "198.51.100.2", sport=7, dport=5353)
    assert lease_of(router, inbound, iface="outside") is None  # first packet: the mark
    forwarded = lease_of(router, inbound, iface="outside")
    assert forwarded is not None
    router.remove_port_forward("udp", 5353)  # its sessions end
    assert not forwarded.valid and routed.valid
    router.add_host("02:00:00:00:01:0b", "10.0.0.11")  # a new host changes no treatment
    assert routed.valid
    router.remove_host("10.0.0.10")  # a host leaves, with its neighbour entry
    assert not routed.valid and router.status()["leases"] == 0


def test_segments_that_move_tcp_state_are_not_leased() -> None:
    router = make_router()
    inside, lab = "10.0.0.10", "10.0.3.10"
    assert lease_of(router, tcp(inside, lab, "S")) is None
    established = lease_of(router, tcp(inside, lab, "A"))
    assert established is not None
    assert lease_of(router, tcp(inside, lab, "FA")) is None
    assert lease_of(router, tcp(inside, lab, "R")) is None
