"""Fused entries of every kind, made the way the node makes them, for the kernel fast path's tests.

Each scenario drives a `Datapath` on memory ports (the router with NAT, a
chain of native functions, the load balancer, an address and port translator
for IPv4 and IPv6) until its flows have fused entries, and returns
them as `Fused` records: the port the entry is on, its flow key, the entry,
and the source MAC its flow's frames come from.  `replay` then gives a frame
to the real datapath code of a port holding just that entry, and says what
the Python fast path did with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.router.function import Router
from pktchain.functions.sdk import (
    FlowLease,
    Function,
    Packet,
    Result,
    drop,
    forward,
    function_class,
)
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.fastpath import FusedEntry
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.portsec import PortGuard
from pktchain.node.router_file import parse_router
from pktchain.sfc.resources import FixedIp, Port
from pktchain.sfc.security import port_security
from support import loadbalancer as lbs
from support.memports import H1_MAC, MemoryPort, function_chain

VNET = bytes(10)
FlowKey = tuple[bytes, bytes, int, int, int]


@dataclass
class Fused:
    """One fused entry as the datapath installed it."""

    scenario: str
    port: MemoryPort
    key: FlowKey
    entry: FusedEntry
    src_mac: str
    """The MAC the flow's frames come from."""


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _collect(scenario: str, datapath: Datapath, macs: dict[str, str]) -> list[Fused]:
    found = []
    for port in datapath.ports:
        for key, entry in (port.fast or {}).items():
            assert isinstance(port, MemoryPort)
            found.append(Fused(scenario, port, key, entry, macs[port.name]))
    return found


def _send(datapath: Datapath, port: MemoryPort, frame: ScapyPacket | bytes) -> None:
    port.inbox.append(VNET + bytes(frame))
    datapath.drain(port)


ROUTER = """
name: router
interfaces:
  inside:  {network: inside,  mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
  lab:     {network: lab,     mac: "02:00:00:00:03:01", address: 10.0.3.1/24}
  outside: {network: outside, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
            external: true, gateway: 198.51.100.10}
nat: {}
"""
ROUTER_MACS = {"inside": "02:00:00:00:01:01", "lab": "02:00:00:00:03:01"}
ROUTER_MACS["outside"] = "02:00:00:00:02:01"
ROUTER_HOSTS = {  # network: (host MAC, host address)
    "inside": ("02:00:00:00:01:0a", "10.0.0.10"),
    "lab": ("02:00:00:00:03:0a", "10.0.3.10"),
    "outside": ("02:00:00:00:02:0a", "198.51.100.10"),
}


def router_entries() -> list[Fused]:
    """Routing with TTL decrement (inside -> lab), and NAT out (SNAT) and back (DNAT):
    UDP, TCP, ICMP echo, and a mapping whose port had to change."""
    spec = parse_router(ROUTER)
    router = Router(spec.config)
    datapath = Datapath()
    ports = {network: MemoryPort(network) for network in ROUTER_HOSTS}
    for network, port in ports.items():
        datapath.add_port(port, network)
    host = FunctionHost("router", SdkDriver(router), lambda: 1.0)
    for iface in spec.config.interfaces:
        datapath.add_port(host.add_port(iface.name, iface.mac), spec.networks[iface.name])
    gateways = {"inside": "10.0.0.1", "lab": "10.0.3.1", "outside": "198.51.100.2"}
    for network, (mac, address) in ROUTER_HOSTS.items():
        reply = ARP(
            op=2, hwsrc=mac, psrc=address, hwdst=ROUTER_MACS[network], pdst=gateways[network]
        )
        _send(datapath, ports[network], Ether(src=mac, dst=ROUTER_MACS[network]) / reply)

    def ip(network: str, dst: str) -> ScapyPacket:
        mac, address = ROUTER_HOSTS[network]
        return Ether(src=mac, dst=ROUTER_MACS[network]) / IP(src=address, dst=dst, flags="DF")

    outside = "198.51.100.10"
    for _ in range(3):
        _send(datapath, ports["inside"], ip("inside", "10.0.3.10") / UDP(sport=7, dport=9) / b"r")
        _send(datapath, ports["inside"], ip("inside", outside) / UDP(sport=4000, dport=53) / b"q")
        # Same source port from another inside host: its mapping takes another port.
        _send(datapath, ports["lab"], ip("lab", outside) / UDP(sport=4000, dport=53) / b"q")
        _send(datapath, ports["inside"], ip("inside", outside) / ICMP(id=77) / b"ping")
    external = "198.51.100.2"
    # TCP out through the NAT: the handshake, then data both ways.
    for out_flags, back_flags in (("S", "SA"), ("A", "A"), ("A", "A"), ("A", "A")):
        segment = ip("inside", outside) / TCP(sport=41000, dport=443, flags=out_flags)
        _send(datapath, ports["inside"], segment)
        segment = ip("outside", external) / TCP(sport=443, dport=41000, flags=back_flags)
        _send(datapath, ports["outside"], segment)
    # The replies of the UDP and ICMP flows, to the router's external address.
    mapped = [
        Ether(frame[10:])
        for frame in ports["outside"].sent
        if Ether(frame[10:]).haslayer(UDP) and Ether(frame[10:])[IP].src == external
    ]
    for sport in {packet[UDP].sport for packet in mapped}:
        for _ in range(3):
            _send(datapath, ports["outside"], ip("outside", external) / UDP(sport=53, dport=sport))
    for _ in range(3):
        _send(datapath, ports["outside"], ip("outside", external) / ICMP(type=0, id=77) / b"p")
    macs = {network: mac for network, (mac, _address) in ROUTER_HOSTS.items()}
    return _collect("router", datapath, macs)


def chain_entries() -> list[Fused]:
    """A symmetric chain of native functions that forward unchanged (the steering
    rewrites the MACs through it and back): an entry that sends the frame as it came."""
    functions = [
        function_class("firewall").from_config({"default": "accept"}),
        function_class("flow-monitor").from_config({}),
    ]
    datapath, h1, _h2 = function_chain(functions)
    for _ in range(3):
        frame = Ether(src=H1_MAC, dst="02:00:00:00:00:02") / IP(src="10.0.0.1", dst="10.0.0.2")
        _send(datapath, h1, frame / UDP(sport=5, dport=6) / b"x")
    return _collect("chain", datapath, {"h1": H1_MAC, "h2": "02:00:00:00:00:02"})


def load_balancer_entries() -> list[Fused]:
    """The load balancer's two directions of a TCP connection: to the backend
    (DNAT to it, SNAT to the balancer's source address and port) and back."""
    lb = lbs.make_lb()
    datapath = Datapath()
    client = MemoryPort("client")
    datapath.add_port(client, "front")
    backends = {ip: MemoryPort(f"backend-{ip}") for ip in lbs.MACS}
    for port in backends.values():
        datapath.add_port(port, "back")
    host = FunctionHost("lb", SdkDriver(lb), lambda: 1.0)
    datapath.add_port(host.add_port("frontend", lbs.FRONT_MAC), "front")
    datapath.add_port(host.add_port("backend", lbs.BACK_MAC), "back")
    for ip, port in backends.items():
        _send(datapath, port, _hello(lbs.MACS[ip]))
    _send(datapath, client, _hello(lbs.CLIENT_MAC))
    for port in backends.values():
        port.sent.clear()
    _send(datapath, client, lbs.from_client(40000, "S", seq=1000))
    (chosen,) = [ip for ip, port in backends.items() if port.sent]
    picked = Ether(backends[chosen].sent[-1][10:])
    snat = picked[TCP].sport
    _send(datapath, backends[chosen], lbs.from_backend(chosen, snat, "SA"))
    for n in range(3):
        _send(datapath, client, lbs.from_client(40000, "A", seq=1001 + n, ack=5001, payload=b"d"))
        _send(
            datapath,
            backends[chosen],
            lbs.from_backend(chosen, snat, "A", seq=5001 + n, ack=1002, payload=b"e"),
        )
    macs = {port.name: lbs.MACS[ip] for ip, port in backends.items()}
    macs["client"] = lbs.CLIENT_MAC
    return _collect("load-balancer", datapath, macs)


def _hello(mac: str) -> ScapyPacket:
    return Ether(src=mac, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"x" * 46)


class Translator(Function):
    """a -> b: TTL / hop limit - 1, MACs set, source and destination address and port
    (or ICMP identifier) rewritten by fixed rules; a lease per flow (like a NAT66 or a
    NAT44 with port change, on both versions)."""

    KIND = "translator"
    INTERFACES = ("a", "b")

    def __init__(
        self, rules: dict[int, tuple[bytes | None, int | None, bytes | None, int | None]]
    ) -> None:
        super().__init__(None)
        self.rules = rules
        """IP version: (new source, source port offset, new destination, its port offset)."""
        self.leases: dict[object, FlowLease] = {}

    def process(self, packet: Packet, now: float) -> Result:
        if packet.iface != "a" or not packet.ok:
            return drop("not-from-a")
        key = packet.key
        if not packet.decrement_ttl():
            return drop("ttl")
        packet.set_macs(src=bytes.fromhex("0200000000b1"), dst=bytes.fromhex("020000000002"))
        src, sport_by, dst, dport_by = self.rules[packet.info.ip_version]
        proto = packet.info.proto
        if proto in {6, 17}:
            packet.set_src(src, None if sport_by is None else (packet.sport + sport_by) & 0xFFFF)
            if dst is not None or dport_by is not None:
                dport = None if dport_by is None else (packet.dport + dport_by) & 0xFFFF
                packet.set_dst(dst, dport)
        elif proto in {1, 58}:  # the echo identifier
            packet.set_src(src, None if sport_by is None else (packet.sport + sport_by) & 0xFFFF)
        else:
            packet.set_src(src)
        return forward("b", lease=self.leases.setdefault(key, FlowLease()))


TRANSLATOR_H1 = "02:00:00:00:00:01"


def translator_entries(*, secured: bool = False) -> list[Fused]:
    """IPv4 and IPv6 flows (TCP, UDP, ICMP / ICMPv6 echo, and a protocol without ports)
    through a translator rewriting addresses and ports; on a secured port when `secured`."""
    rules: dict[int, tuple[bytes | None, int | None, bytes | None, int | None]] = {
        4: (bytes([192, 0, 2, 1]), 1000, None, None),
        6: (bytes.fromhex("20010db8000000000000000000000001"), 7, None, 300),
    }
    function = Translator(rules)
    datapath = Datapath()
    h1, h2 = MemoryPort("h1"), MemoryPort("h2")
    datapath.add_port(h1, "left")
    datapath.add_port(h2, "right")
    host = FunctionHost("t", SdkDriver(function), lambda: 1.0)
    datapath.add_port(host.add_port("a", "02:00:00:00:00:a1"), "left")
    datapath.add_port(host.add_port("b", "02:00:00:00:00:b1"), "right")
    _send(datapath, h2, _hello("02:00:00:00:00:02"))
    if secured:
        security = port_security(
            Port(
                id="h1",
                mac_address=TRANSLATOR_H1,
                fixed_ips=(FixedIp("10.0.0.1"), FixedIp("fd00::1")),
            )
        )
        assert security is not None
        datapath.secure(h1, PortGuard(security))
    to_a = Ether(src=TRANSLATOR_H1, dst="02:00:00:00:00:a1")
    v4 = IP(src="10.0.0.1", dst="198.51.100.7", flags="DF")
    v6 = IPv6(src="fd00::1", dst="2001:db8:1::7")
    l4s: list[Callable[[], ScapyPacket]] = [
        lambda: TCP(sport=40000, dport=80, flags="A"),
        lambda: UDP(sport=5000, dport=53) / b"q",
    ]
    for _ in range(3):
        for make in l4s:
            _send(datapath, h1, to_a / v4 / make())
            _send(datapath, h1, to_a / v6 / make())
        _send(datapath, h1, to_a / v4 / ICMP(id=99) / b"ping")
        _send(datapath, h1, to_a / v6 / ICMPv6EchoRequest(id=99) / b"ping")
        _send(datapath, h1, to_a / IP(src="10.0.0.1", dst="198.51.100.7", proto=47) / b"gre!")
    name = "translator-secured" if secured else "translator"
    return _collect(name, datapath, {"h1": TRANSLATOR_H1, "h2": "02:00:00:00:00:02"})


def every_entry() -> list[Fused]:
    """The fused entries of every scenario."""
    return (
        router_entries()
        + chain_entries()
        + load_balancer_entries()
        + translator_entries()
        + translator_entries(secured=True)
    )


@dataclass
class Replay:
    """A port holding one fused entry, on a datapath of its own: what the Python
    fast path does with a frame is what this datapath's `_forward` does."""

    datapath: Datapath
    port: MemoryPort
    fused: Fused

    def send(self, frame: bytes) -> bytes | None:
        """The frame (virtio-net header first) the fast path sent for `frame`, or
        None if it left it to the slow path."""
        before = self.datapath.fast_hits
        out = self.fused.entry.out
        assert isinstance(out, MemoryPort)
        out.sent.clear()
        self.port.inbox.append(frame)
        self.datapath.drain(self.port)
        if self.datapath.fast_hits == before:
            return None
        (sent,) = out.sent
        out.sent.clear()
        return sent


def replay(fused: Fused) -> Replay:
    datapath = Datapath()
    port = MemoryPort(f"replay-{fused.port.name}")
    datapath.add_port(port, "replay")
    port.fast = {fused.key: fused.entry}
    return Replay(datapath, port, fused)


def describe(fused: Fused) -> str:
    src, dst, proto, sport, dport = fused.key
    entry = fused.entry
    return (
        f"{fused.scenario}:{fused.port.name} proto {proto} {src.hex()}:{sport} > "
        f"{dst.hex()}:{dport} -> {entry.out.name} ttl-{entry.ttl} df={entry.df} "
        f"mtu={entry.mtu} addrs={entry.addrs is not None} ports={entry.ports is not None} "
        f"src_mac={entry.src_mac is not None} dst {_mac(entry.dst_mac)}"
    )
