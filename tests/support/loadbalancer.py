"""Shared helpers of the load balancer tests: frames built and read by scapy, the oracle.

Holds no tests. Frames go into :class:`LoadBalancer` as bytes scapy built and
come out as bytes scapy decodes; every checksum of what comes out is compared
with the one scapy computes for the same packet.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from ipaddress import IPv4Address
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.loadbalancer.function import BACKEND, FRONTEND, LoadBalancer
from pktchain.functions.sdk import Driver, Packet, Result, Verdict

FRONT_MAC = "02:00:00:00:10:01"
BACK_MAC = "02:00:00:00:10:02"
VIP = "192.0.2.10"
VIP2 = "192.0.2.20"
SOURCE = "10.1.0.5"
CLIENT = "198.51.100.7"
CLIENT_MAC = "02:aa:00:00:00:01"
ROUTER_MAC = "02:aa:00:00:00:fe"
B1, B2, B3 = "10.1.0.11", "10.1.0.12", "10.1.0.13"
B1_MAC, B2_MAC, B3_MAC = "02:bb:00:00:00:01", "02:bb:00:00:00:02", "02:bb:00:00:00:03"
MACS = {B1: B1_MAC, B2: B2_MAC, B3: B3_MAC}
BACKEND_PORT = 8080


def backend(
    ip: str, *, port: int = BACKEND_PORT, static: bool = True, **extra: Any
) -> dict[str, Any]:
    """A backend mapping; ``static`` gives it its MAC (no ARP needed)."""
    spec: dict[str, Any] = {"ip": ip, "port": port}
    if static:
        spec["mac"] = MACS[ip]
    spec.update(extra)
    return spec


def make_lb(
    backends: list[dict[str, Any]] | None = None,
    *,
    health: dict[str, Any] | None = None,
    services: list[dict[str, Any]] | None = None,
    **overrides: Any,
) -> LoadBalancer:
    """A load balancer for VIP:80/tcp over B1..B3 (static MACs, no health checks)."""
    if services is None:
        services = [
            {
                "vip": VIP,
                "port": 80,
                "backends": backends
                if backends is not None
                else [backend(b) for b in (B1, B2, B3)],
            }
        ]
    config: dict[str, Any] = {
        "frontend_mac": FRONT_MAC,
        "backend_mac": BACK_MAC,
        "source_ip": SOURCE,
        "services": services,
        "health": health if health is not None else {"enabled": False},
        "table_size": 2003,
    }
    config.update(overrides)
    made = LoadBalancer.from_config(config)
    assert isinstance(made, LoadBalancer)
    return made


def settings(lb: LoadBalancer, **changes: Any) -> dict[str, Any]:
    """The load balancer's whole configuration as a mapping, with ``changes`` made."""
    data: dict[str, Any] = plain(lb.config)
    data.update(changes)
    return data


def plain(value: Any) -> Any:
    """A configuration dataclass as the mapping it would be read from."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, IPv4Address):
        return str(value)
    return value


def run(
    lb: LoadBalancer, iface: str, frame: ScapyPacket, now: float = 0.0
) -> tuple[Result, Packet]:
    """Give the load balancer one scapy frame through the driver (which counts drops by
    reason, as in the node); the result and the (rewritten) packet."""
    packet = Packet.from_ethernet(bytes(frame), iface)
    return Driver(lb).process(packet, now)[1], packet


def forwarded(lb: LoadBalancer, iface: str, frame: ScapyPacket, now: float = 0.0) -> Ether:
    """Run a frame that must be forwarded; what went out, decoded by scapy."""
    result, packet = run(lb, iface, frame, now)
    assert result.verdict is Verdict.FORWARD, (result.verdict, result.reason)
    assert result.iface == (BACKEND if iface == FRONTEND else FRONTEND)
    return Ether(packet.ethernet)


def from_client(
    sport: int = 40000,
    flags: str = "S",
    *,
    seq: int = 1000,
    ack: int = 0,
    payload: bytes = b"",
    vip: str = VIP,
    dport: int = 80,
    client: str = CLIENT,
    mac: str = CLIENT_MAC,
    ttl: int = 64,
) -> ScapyPacket:
    return (
        Ether(src=mac, dst=FRONT_MAC)
        / IP(src=client, dst=vip, ttl=ttl)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        / payload
    )


def from_backend(
    ip: str,
    dport: int,
    flags: str = "SA",
    *,
    seq: int = 5000,
    ack: int = 1001,
    payload: bytes = b"",
    sport: int = BACKEND_PORT,
) -> ScapyPacket:
    return (
        Ether(src=MACS[ip], dst=BACK_MAC)
        / IP(src=ip, dst=SOURCE)
        / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        / payload
    )


def udp_from_client(
    sport: int, payload: bytes = b"q", *, vip: str = VIP, dport: int = 53
) -> ScapyPacket:
    return (
        Ether(src=CLIENT_MAC, dst=FRONT_MAC)
        / IP(src=CLIENT, dst=vip)
        / UDP(sport=sport, dport=dport)
        / payload
    )


def arp_request(src_mac: str, src_ip: str, target: str) -> ScapyPacket:
    return Ether(src=src_mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc=src_mac, psrc=src_ip, hwdst="00:00:00:00:00:00", pdst=target
    )


def arp_reply(src_mac: str, src_ip: str, dst_mac: str, dst_ip: str) -> ScapyPacket:
    return Ether(src=src_mac, dst=dst_mac) / ARP(
        op=2, hwsrc=src_mac, psrc=src_ip, hwdst=dst_mac, pdst=dst_ip
    )


def checksums_ok(frame: Ether) -> None:
    """Every checksum of the IP packet equals the one scapy computes afresh."""
    ip = frame[IP]
    fresh = IP(bytes(ip))
    del fresh.chksum
    if hasattr(fresh.payload, "chksum"):
        del fresh.payload.chksum
    rebuilt = IP(bytes(fresh))
    assert ip.chksum == rebuilt.chksum, "IP header checksum"
    if hasattr(ip.payload, "chksum"):
        assert ip.payload.chksum == rebuilt.payload.chksum, f"{ip.payload.name} checksum"


def open_connection(lb: LoadBalancer, sport: int = 40000, now: float = 0.0) -> tuple[str, int]:
    """SYN, SYN-ACK, ACK through the load balancer; (backend ip, snat port) it used."""
    syn = forwarded(lb, FRONTEND, from_client(sport, "S", seq=1000), now)
    ip, snat = syn[IP].dst, syn[TCP].sport
    forwarded(lb, BACKEND, from_backend(ip, snat, "SA", seq=5000, ack=1001), now)
    forwarded(lb, FRONTEND, from_client(sport, "A", seq=1001, ack=5001), now)
    return ip, snat
