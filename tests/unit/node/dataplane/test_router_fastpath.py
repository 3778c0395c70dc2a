"""The router on the node's datapath: hosted like any function, its flows fused."""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.router.function import Router
from pktchain.functions.router.leases import ROUTED_IDLE_TIMEOUT
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.router_file import parse_router
from support.memports import MemoryPort

VNET = bytes(10)
ROUTER = """
name: router
interfaces:
  inside:  {network: inside,  mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
  lab:     {network: lab,     mac: "02:00:00:00:03:01", address: 10.0.3.1/24}
  outside: {network: outside, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
            external: true, gateway: 198.51.100.10}
nat: {}
"""
HOSTS = {  # network: (host MAC, host address)
    "inside": ("02:00:00:00:01:0a", "10.0.0.10"),
    "lab": ("02:00:00:00:03:0a", "10.0.3.10"),
    "outside": ("02:00:00:00:02:0a", "198.51.100.10"),
}


def lab() -> tuple[Datapath, dict[str, MemoryPort], Router]:
    spec = parse_router(ROUTER)
    router = Router(spec.config)
    datapath = Datapath()
    ports = {network: MemoryPort(network) for network in HOSTS}
    for network, port in ports.items():
        datapath.add_port(port, network)
    host = FunctionHost("router", SdkDriver(router), lambda: 1.0)
    for iface in spec.config.interfaces:
        datapath.add_port(host.add_port(iface.name, iface.mac), spec.networks[iface.name])
    for network, (mac, address) in HOSTS.items():  # each host answers the router's ARP
        router_mac = next(i.mac for i in spec.config.interfaces if spec.networks[i.name] == network)
        router_ip = next(
            str(i.address.ip) for i in spec.config.interfaces if spec.networks[i.name] == network
        )
        reply = ARP(op=2, hwsrc=mac, psrc=address, hwdst=router_mac, pdst=router_ip)
        ports[network].inbox.append(VNET + bytes(Ether(src=mac, dst=router_mac) / reply))
        datapath.drain(ports[network])
    for port in ports.values():
        port.sent.clear()
    return datapath, ports, router


def udp(network: str, dst: str, sport: int = 4000) -> bytes:
    mac, address = HOSTS[network]
    router_mac = {"inside": "02:00:00:00:01:01", "lab": "02:00:00:00:03:01"}[network]
    return VNET + bytes(
        Ether(src=mac, dst=router_mac)
        / IP(src=address, dst=dst, flags="DF")  # DF clear: each gets its own ID, never cached
        / UDP(sport=sport, dport=53)
        / b"q"
    )


def send(datapath: Datapath, port: MemoryPort, frame: bytes, now: float = 1.0) -> None:
    port.inbox.append(frame)
    datapath.now = now
    datapath.drain(port)


def test_a_nat_flow_is_fused_on_its_second_packet_and_a_one_packet_session_costs_no_entry() -> None:
    datapath, ports, router = lab()
    send(datapath, ports["inside"], udp("inside", "198.51.100.10", sport=1))  # a lone query
    assert router.status()["leases"] == 0 and datapath.fused_entries() == 0
    for _ in range(3):
        send(datapath, ports["inside"], udp("inside", "198.51.100.10", sport=2))
    assert datapath.fused_entries() == 1 and datapath.fast_hits == 1
    assert router.status()["leases"] == 1
    sent = [Ether(frame[10:]) for frame in ports["outside"].sent]
    assert [p[IP].src for p in sent] == ["198.51.100.2"] * 4  # translated, fast or not
    assert len({bytes(p) for p in sent[1:]}) == 1  # the fast path sent what the router did


def test_a_routed_flow_left_idle_loses_its_fused_entry_with_its_lease() -> None:
    datapath, ports, router = lab()
    for _ in range(3):
        send(datapath, ports["inside"], udp("inside", "10.0.3.10"))
    assert datapath.fused_entries() == 1 and len(ports["lab"].sent) == 3
    router.on_timer(1.0 + ROUTED_IDLE_TIMEOUT + 1)
    assert router.status()["leases"] == 0 and datapath.fused_entries() == 0
