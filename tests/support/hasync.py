"""Shared code of the state sync tests: a router pair, traffic through it, a channel.

Holds no tests. Two routers with the same configuration (three interfaces, NAT
on ``wan``) stand for a master and its backup; frames are built by scapy with
the 10-byte virtio-net header the router expects. :class:`Channel` carries the
sync protocol's frames between a sender and a receiver in memory, frame by
frame, losing, repeating or reordering them as a test's plan says, on a
virtual clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.router.sync import SyncReceiver, SyncSender
from pktchain.functions.router.sync.wire import LENGTH
from support.router import receive, timers

SECRET = b"0123456789abcdef0123456789abcdef"
LAN0_MAC, LAN1_MAC, WAN_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
H1_MAC, H2_MAC, GW_MAC = "02:aa:00:00:00:01", "02:aa:00:00:00:02", "02:bb:00:00:00:fe"
LAN0_IP, LAN1_IP, WAN_IP, GW_IP = "10.0.0.1", "10.0.1.1", "203.0.113.1", "203.0.113.254"
H1, H2, REMOTE = "10.0.0.5", "10.0.1.7", "198.51.100.7"
VNET = bytes(10)


def make_router(seed: int = 7, **overrides: Any) -> Router:
    """A router with lan0, lan1 and wan (NAT), its interfaces announced, neighbours known."""
    nat_settings = overrides.pop("nat_settings", {})
    settings: dict[str, Any] = {
        "interfaces": (
            RouterInterface("lan0", LAN0_MAC, IPv4Interface(f"{LAN0_IP}/24"), network_id="net-a"),
            RouterInterface("lan1", LAN1_MAC, IPv4Interface(f"{LAN1_IP}/24")),
            RouterInterface("wan", WAN_MAC, IPv4Interface(f"{WAN_IP}/24"), external=True),
        ),
        "upstream_gateway": IPv4Address(GW_IP),
        "nat": NatConfig(WAN_IP, ("10.0.0.0/16",), port_seed=seed, **nat_settings),
    }
    settings.update(overrides)
    router = Router(RouterConfig(**settings))
    timers(router, 0.0)  # the interfaces' announcements
    learn_neighbours(router)
    return router


def learn_neighbours(router: Router, now: float = 0.0) -> None:
    """The two hosts and the gateway ask for the router's address (ARP)."""
    for iface, mac, ip, target in (
        ("lan0", H1_MAC, H1, LAN0_IP),
        ("lan1", H2_MAC, H2, LAN1_IP),
        ("wan", GW_MAC, GW_IP, WAN_IP),
    ):
        request = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(
            op=1, hwsrc=mac, psrc=ip, pdst=target
        )
        receive(router, iface, VNET + bytes(request), now)


def from_h1(payload: Packet) -> bytes:
    return VNET + bytes(Ether(src=H1_MAC, dst=LAN0_MAC) / payload)


def from_h2(payload: Packet) -> bytes:
    return VNET + bytes(Ether(src=H2_MAC, dst=LAN1_MAC) / payload)


def from_wan(payload: Packet) -> bytes:
    return VNET + bytes(Ether(src=GW_MAC, dst=WAN_MAC) / payload)


def outbound_udp(
    src: str, sport: int, dport: int, dst: str = REMOTE, *, df: bool = True
) -> tuple[str, bytes]:
    """A datagram from H1 or H2; with DF clear it is non-atomic, and leaves with an IPv4
    ID of the router's own generator (RFC 7857 §10)."""
    frame = from_h1 if src == H1 else from_h2
    return ("lan0" if src == H1 else "lan1"), frame(
        IP(src=src, dst=dst, flags="DF" if df else 0) / UDP(sport=sport, dport=dport) / b"q"
    )


def outbound_tcp(src: str, sport: int, dport: int, flags: str) -> tuple[str, bytes]:
    frame = from_h1 if src == H1 else from_h2
    return ("lan0" if src == H1 else "lan1"), frame(
        IP(src=src, dst=REMOTE, flags="DF") / TCP(sport=sport, dport=dport, flags=flags, seq=1)
    )


def outbound_echo(src: str, ident: int) -> tuple[str, bytes]:
    frame = from_h1 if src == H1 else from_h2
    return ("lan0" if src == H1 else "lan1"), frame(
        IP(src=src, dst=REMOTE) / ICMP(type=8, id=ident, seq=1) / b"ping"
    )


def send(router: Router, sent: tuple[str, bytes], now: float) -> list[tuple[str, bytes]]:
    """What the router sends for a frame (bytes, the forwarded one first)."""
    iface, frame = sent
    return [(name, bytes(data)) for name, data in receive(router, iface, frame, now)]


def external_port(router: Router, sent: tuple[str, bytes], now: float) -> int:
    """Send an outbound packet; the source port (or echo identifier) it left with."""
    out = send(router, sent, now)
    assert out and out[0][0] == "wan", out
    packet = Ether(out[0][1][10:])
    if ICMP in packet:
        return int(packet[ICMP].id)
    return int(packet[IP].payload.sport)


def reply_to(dport: int, *, proto: str = "udp", sport: int = 53, flags: str = "SA") -> bytes:
    """A packet from REMOTE to the external address and ``dport``."""
    if proto == "udp":
        layer: Packet = UDP(sport=sport, dport=dport) / b"a"
    elif proto == "tcp":
        layer = TCP(sport=sport, dport=dport, flags=flags, seq=9, ack=2)
    else:
        layer = ICMP(type=0, id=dport, seq=1) / b"ping"
    return from_wan(IP(src=REMOTE, dst=WAN_IP) / layer)


# -- the protocol in memory ------------------------------------------------------------


def frames(data: bytes) -> list[bytes]:
    """Whole frames of a byte string the protocol produced."""
    out = []
    at = 0
    while at < len(data):
        (length,) = LENGTH.unpack_from(data, at)
        end = at + LENGTH.size + length
        out.append(data[at:end])
        at = end
    return out


Fate = Callable[[str, bytes], list[int]]
"""For a frame going ``"down"`` (master to backup) or ``"up"``: after how many
ticks each copy arrives ([] drops it, [0, 0] repeats it, [3] delays it)."""


def reliable(_direction: str, _frame: bytes) -> list[int]:
    return [0]


@dataclass
class Channel:
    """A sender and a receiver joined by a frame-by-frame channel on a virtual clock."""

    sender: SyncSender
    receiver: SyncReceiver
    master: Router
    backup: Router
    now: float = 1.0
    tick: float = 0.001
    fate: Fate = reliable
    in_flight: list[tuple[int, str, bytes]] = field(default_factory=list)
    ticks: int = 0
    down_frames: int = 0

    def connect(self) -> None:
        self.sender.connection_made(self.now)
        self.receiver.connection_made(self.now)
        self.in_flight.clear()

    def disconnect(self) -> None:
        self.sender.connection_lost(self.now)
        self.receiver.connection_lost(self.now)
        self.in_flight.clear()

    def step(self) -> None:
        """One tick: deliver what is due, run due timers, collect what is sent."""
        self.ticks += 1
        self.now += self.tick
        due = [item for item in self.in_flight if item[0] <= self.ticks]
        self.in_flight = [item for item in self.in_flight if item[0] > self.ticks]
        for _, direction, frame in due:
            if direction == "down":
                self.receiver.on_bytes(frame, self.now)
            else:
                self.sender.on_bytes(frame, self.now)
        for endpoint in (self.sender, self.receiver):
            deadline = endpoint.next_deadline()
            if deadline is not None and deadline <= self.now:
                endpoint.on_timer(self.now)
        timers(self.master, self.now)
        timers(self.backup, self.now)
        self._collect("down", self.sender.data_to_send())
        self._collect("up", self.receiver.data_to_send())

    def _collect(self, direction: str, data: bytes) -> None:
        for frame in frames(data):
            if direction == "down":
                self.down_frames += 1
            for delay in self.fate(direction, frame):
                self.in_flight.append((self.ticks + 1 + delay, direction, frame))

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step()

    def run_until(self, done: Callable[[], bool], limit: int = 20_000) -> int:
        """Step until ``done()``; the ticks it took (the test fails past ``limit``)."""
        for count in range(limit):
            if done():
                return count
            self.step()
        raise AssertionError(f"not done after {limit} ticks: {self.sender.status()}")

    def converged(self) -> bool:
        """In sync, nothing in flight or pending, and both views equal."""
        return (
            self.sender.in_sync
            and self.sender.unacknowledged == 0
            and not self.master.changes_pending()
            and self.master.export_state() == self.backup.export_state()
        )


def lossy(rng: random.Random, drop: float, duplicate: float, delay: float) -> Fate:
    """A channel that drops, repeats and delays (reorders) frames at random."""

    def fate(_direction: str, _frame: bytes) -> list[int]:
        if rng.random() < drop:
            return []
        copies = [0, 0] if rng.random() < duplicate else [0]
        return [rng.randrange(20) if rng.random() < delay else c for c in copies]

    return fate
