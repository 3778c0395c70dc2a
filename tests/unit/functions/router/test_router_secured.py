"""The router's neighbours for the addresses of secured ports come from the node's bindings.

`Router.secure_neighbors` gives, per interface, the address → MAC of the
ports with port security; no ARP packet can then move such an address to
another MAC or make the router track it elsewhere. Addresses that are not
bound still follow ARP (a host that really changed its MAC).
"""

from __future__ import annotations

from ipaddress import IPv4Interface

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.router.function import (
    NeighborState,
    Router,
    RouterConfig,
    RouterInterface,
)
from support.router import receive, timers

VNET = bytes(10)
LAN0_MAC, LAN1_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
LAN0_IP, LAN1_IP = "10.0.0.1", "10.0.1.1"
H1, H1_MAC = "10.0.0.5", "02:aa:00:00:00:01"
H2, H2_MAC = "10.0.1.7", "02:aa:00:00:00:02"
THIEF_MAC = "02:aa:00:00:00:66"
OTHER = "10.0.0.6"


def make_router() -> Router:
    router = Router(
        RouterConfig(
            interfaces=(
                RouterInterface("lan0", LAN0_MAC, IPv4Interface(f"{LAN0_IP}/24")),
                RouterInterface("lan1", LAN1_MAC, IPv4Interface(f"{LAN1_IP}/24")),
            )
        )
    )
    timers(router, 0.0)  # the interfaces' announcements
    return router


def arp(
    op: int, src_mac: str, src_ip: str, target: str, dst_mac: str = "ff:ff:ff:ff:ff:ff"
) -> bytes:
    return VNET + bytes(
        Ether(src=src_mac, dst=dst_mac) / ARP(op=op, hwsrc=src_mac, psrc=src_ip, pdst=target)
    )


def neighbour(router: Router, ip: str) -> tuple[str | None, NeighborState] | None:
    for entry in router.arp_table():
        if entry.ip == ip:
            return entry.mac, entry.state
    return None


def test_a_bound_address_is_a_permanent_neighbour_with_its_ports_mac() -> None:
    router = make_router()
    router.secure_neighbors("lan0", {H1: H1_MAC, "10.0.1.9": THIEF_MAC, LAN0_IP: THIEF_MAC})
    # Only host addresses of the interface's subnet (not the router's own).
    assert neighbour(router, H1) == (H1_MAC, NeighborState.PERMANENT)
    assert neighbour(router, "10.0.1.9") is None and neighbour(router, LAN0_IP) is None
    # Traffic to it goes at once, without an ARP request.
    ping = VNET + bytes(Ether(src=H2_MAC, dst=LAN1_MAC) / IP(src=H2, dst=H1) / ICMP())
    ((iface, sent),) = receive(router, "lan1", ping, 1.0)
    assert iface == "lan0" and Ether(sent[10:]).dst == H1_MAC


@pytest.mark.parametrize(
    "claim",
    [
        arp(1, THIEF_MAC, H1, H1),  # gratuitous
        arp(1, THIEF_MAC, H1, LAN0_IP),  # asking the router, from the stolen address
        arp(2, THIEF_MAC, H1, LAN0_IP, LAN0_MAC),  # an unsolicited reply
    ],
    ids=["gratuitous", "request", "reply"],
)
def test_no_arp_packet_moves_a_bound_address(claim: bytes) -> None:
    router = make_router()
    router.secure_neighbors("lan0", {H1: H1_MAC})
    receive(router, "lan0", arp(1, H1_MAC, H1, LAN0_IP), 0.0)  # the host itself
    assert receive(router, "lan0", claim, 1.0) == []
    assert neighbour(router, H1) == (H1_MAC, NeighborState.PERMANENT)
    assert router.status()["counters"]["drop-arp-secured"] == 1
    assert [(h.ip, h.mac) for h in router.hosts()] == [(H1, H1_MAC)]


def test_an_ip_packet_from_another_mac_does_not_move_a_bound_host() -> None:
    router = make_router()
    router.secure_neighbors("lan0", {H1: H1_MAC})
    receive(router, "lan0", arp(1, H1_MAC, H1, LAN0_IP), 0.0)
    stolen = Ether(src=THIEF_MAC, dst=LAN0_MAC) / IP(src=H1, dst=LAN0_IP) / ICMP()
    receive(router, "lan0", bytes(10) + bytes(stolen), 1.0)
    assert [(h.ip, h.mac) for h in router.hosts()] == [(H1, H1_MAC)]
    assert router.status()["counters"]["host-secured-mismatch"] == 1


def test_unbound_addresses_follow_arp_and_a_binding_can_go() -> None:
    router = make_router()
    router.secure_neighbors("lan0", {H1: H1_MAC})
    # A host that is not bound really changed its NIC: its gratuitous ARP moves it.
    receive(router, "lan0", arp(1, "02:aa:00:00:00:06", OTHER, LAN0_IP), 0.0)
    receive(router, "lan0", arp(1, THIEF_MAC, OTHER, OTHER), 1.0)
    assert neighbour(router, OTHER) == (THIEF_MAC, NeighborState.REACHABLE)
    generation = router.generation
    router.secure_neighbors("lan0", {})
    assert neighbour(router, H1) is None and router.generation > generation
    receive(router, "lan0", arp(1, THIEF_MAC, H1, LAN0_IP), 2.0)
    assert neighbour(router, H1) == (THIEF_MAC, NeighborState.REACHABLE)


def test_a_binding_survives_the_controller_removing_the_host() -> None:
    router = make_router()
    router.secure_neighbors("lan0", {H1: H1_MAC})
    router.add_host(H1_MAC, H1)
    router.remove_host(H1)
    assert neighbour(router, H1) == (H1_MAC, NeighborState.PERMANENT)


def test_an_unknown_interface_is_refused() -> None:
    with pytest.raises(ValueError, match="iface: no interface 'lan9'"):
        make_router().secure_neighbors("lan9", {H1: H1_MAC})
