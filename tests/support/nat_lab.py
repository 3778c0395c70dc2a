"""The router lab: hosts on both sides of the node's virtual router, and tools to
craft packets in them and capture what reaches their wire.

Two inside hosts (10.0.0.0/24, default route via the router) and two outside
hosts (198.51.100.0/24) sit in two node networks. The first outside host is the
router's upstream gateway and forwards: it answers host unreachable for
`UNREACHABLE` and passes `BEYOND` on to the second outside host, so a probe whose
TTL runs out there draws a time exceeded from beyond the NAT.

Packets are crafted with scapy and sent through a raw socket opened in the
host's namespace; captures are AF_PACKET sockets opened in the namespace
before anything is sent, decoded with scapy.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror
from scapy.layers.l2 import Ether
from scapy.packet import Packet

from pktchain.lab import Lab, LabHost, node_host_spec, wait_until
from pktchain.node.process import NodeProcess
from support.fn_lab import NO_IPV6

INSIDE, INSIDE2 = "10.0.0.10", "10.0.0.11"
OUTSIDE, OUTSIDE2 = "198.51.100.10", "198.51.100.11"
ROUTER_IN, ROUTER_OUT = "10.0.0.1", "198.51.100.2"
UNREACHABLE = "192.0.2.1"  # the outside host answers ICMP host unreachable
BEYOND = "192.0.2.129"  # the outside host forwards it to the second outside host


TOPOLOGY: dict[str, Any] = {
    "lab": "router",
    "hosts": {
        "inside": node_host_spec("inside", "02:00:00:00:01:0a", f"{INSIDE}/24", ROUTER_IN),
        "outside": node_host_spec("outside", "02:00:00:00:02:0a", f"{OUTSIDE}/24"),
    },
}

NAT_TOPOLOGY: dict[str, Any] = copy.deepcopy(TOPOLOGY)
NAT_TOPOLOGY["hosts"]["inside2"] = node_host_spec(
    "inside", "02:00:00:00:01:0b", f"{INSIDE2}/24", ROUTER_IN
)
NAT_TOPOLOGY["hosts"]["outside"].update(
    {
        "routes": [{"to": "192.0.2.128/25", "via": OUTSIDE2}],
        "sysctls": {
            "net.ipv4.ip_forward": "1",
            "net.ipv4.conf.all.send_redirects": "0",
            "net.ipv4.conf.default.send_redirects": "0",
        },
    }
)
# It forwards the router's packets for BEYOND on (from the router's address):
# an appliance outside any chain, so its port security is off (docs/node.md).
NAT_TOPOLOGY["hosts"]["outside"]["interfaces"]["eth0"]["port_security"] = False
NAT_TOPOLOGY["hosts"]["outside2"] = node_host_spec("outside", "02:00:00:00:02:0b", f"{OUTSIDE2}/24")

ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "inside": {"network": "inside", "mac": "02:00:00:00:01:01", "address": f"{ROUTER_IN}/24"},
        "outside": {
            "network": "outside",
            "mac": "02:00:00:00:02:01",
            "address": f"{ROUTER_OUT}/24",
            "external": True,
            "gateway": OUTSIDE,
        },
    },
    "nat": {},
    "port_forwards": [
        {"proto": "tcp", "external_port": 8080, "inside_ip": INSIDE, "inside_port": 80}
    ],
}

# `python -m http.server --bind` resolves its own address (socket.getfqdn): with a
# default route through the router, that DNS query would wander off into the lab.
NO_LOOKUP_SERVER = (
    "import http.server, socketserver, sys\n"
    "socketserver.TCPServer.allow_reuse_address = True\n"
    "address = (sys.argv[1], int(sys.argv[2]))\n"
    "socketserver.TCPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)


def serve(host: LabHost, root: Path, address: str, port: int, page: str) -> None:
    root.mkdir(exist_ok=True)
    (root / "index.html").write_text(page)
    host.popen(["python3", "-c", NO_LOOKUP_SERVER, address, str(port)], cwd=root)
    host.wait_listening(port, timeout=10)


def curl(host: LabHost, url: str) -> str:
    result = host.run(["curl", "-sS", "--max-time", "5", url], timeout=15)
    assert result.ok, result.stderr
    return result.stdout


@dataclass(frozen=True)
class RouterLab:
    """The four hosts of `NAT_TOPOLOGY` and the node whose router joins them."""

    lab: Lab
    node: NodeProcess

    @property
    def inside(self) -> LabHost:
        return self.lab.host("inside")

    @property
    def inside2(self) -> LabHost:
        return self.lab.host("inside2")

    @property
    def outside(self) -> LabHost:
        return self.lab.host("outside")

    @property
    def outside2(self) -> LabHost:
        return self.lab.host("outside2")

    def counters(self) -> dict[str, int]:
        return dict(self.node.router()["counters"])

    def session_count(self) -> int:
        return int(self.node.router()["nat_sessions"])


def without_ipv6(topology: dict[str, Any]) -> dict[str, Any]:
    """`topology` with IPv6 off in every host from the start: no host then sends
    anything on its own (router solicitations, MLD reports some seconds after its
    interface comes up), for tests that compare the node's tables before and after."""
    quiet = copy.deepcopy(topology)
    for host in quiet["hosts"].values():
        host.setdefault("sysctls", {}).update(NO_IPV6)
    return quiet


# -- sending -----------------------------------------------------------------


ADDRESS_OF = {"inside": INSIDE, "inside2": INSIDE2, "outside": OUTSIDE, "outside2": OUTSIDE2}


def address_of(host: LabHost) -> str:
    return ADDRESS_OF[host.name]


def send_ip(host: LabHost, packet: Packet) -> None:
    """Send a crafted IPv4 packet, header included, from `host` (checksums as given)."""
    raw = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        raw.sendto(bytes(packet), (packet[IP].dst, 0))


def send_ips(host: LabHost, packets: list[Packet]) -> None:
    """Send crafted IPv4 packets (fragments, say) from `host`, in the order given."""
    raw = host.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    with raw:
        for packet in packets:
            raw.sendto(bytes(packet), (packet[IP].dst, 0))


def udp_socket(host: LabHost, port: int) -> socket.socket:
    """A UDP socket of `host` bound to its address and `port` (the caller closes it)."""
    sock = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address_of(host), port))
    sock.settimeout(5.0)
    return sock


def tcp_listener(host: LabHost, port: int) -> socket.socket:
    sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address_of(host), port))
    sock.listen(8)
    sock.settimeout(5.0)
    return sock


def tcp_connect(
    host: LabHost, port: int, destination: tuple[str, int], timeout: float = 5.0
) -> socket.socket:
    """A TCP connection from `host`'s `port` (shared with other sockets of that port)."""
    sock = host.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address_of(host), port))
    sock.settimeout(timeout)
    sock.connect(destination)
    return sock


# -- capturing ---------------------------------------------------------------

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
Match = Callable[[Packet], bool]


class Wire:
    """Every IPv4 packet that `host` receives on `ifname` from the moment this is made."""

    def __init__(self, host: LabHost, ifname: str = "eth0") -> None:
        self.host = host
        self._sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind((ifname, 0))
        self._sock.setblocking(False)
        self._packets: list[Packet] = []

    def close(self) -> None:
        self._sock.close()

    def _drain(self) -> None:
        for _ in range(10_000):
            try:
                data, address = self._sock.recvfrom(65535)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            frame = Ether(data)
            if IP in frame:
                self._packets.append(frame[IP])

    def received(self, match: Match = lambda _: True) -> list[Packet]:
        """The packets received so far that `match`."""
        self._drain()
        return [p for p in self._packets if match(p)]

    def wait_for(self, match: Match, *, timeout: float = 5.0, what: str = "packet") -> Packet:
        """The first received packet that matches, waiting up to `timeout` s."""
        found: list[Packet] = []

        def arrived() -> bool:
            found[:] = self.received(match)
            return bool(found)

        wait_until(arrived, timeout=timeout, what=f"{self.host.name} receives {what}")
        return found[0]


def udp_to(port: int, source: str | None = None, sport: int | None = None) -> Match:
    """UDP to destination `port` (and from `source`:`sport` when given)."""

    def match(packet: Packet) -> bool:
        return (
            UDP in packet
            and IPerror not in packet
            and packet[UDP].dport == port
            and (source is None or packet[IP].src == source)
            and (sport is None or packet[UDP].sport == sport)
        )

    return match


def tcp_to(port: int, flags: str | None = None) -> Match:
    def match(packet: Packet) -> bool:
        return (
            TCP in packet
            and IPerror not in packet
            and packet[TCP].dport == port
            and (flags is None or str(packet[TCP].flags) == flags)
        )

    return match


def icmp(kind: int, code: int | None = None) -> Match:
    def match(packet: Packet) -> bool:
        return (
            ICMP in packet
            and packet[ICMP].type == kind
            and (code is None or packet[ICMP].code == code)
        )

    return match


def quoting(packet: Packet) -> tuple[str, int, str, int]:
    """The embedded source and destination (address, port) of an ICMP error."""
    inner = packet[IPerror]
    layer = inner[UDPerror] if UDPerror in inner else inner[TCPerror]
    return inner.src, layer.sport, inner.dst, layer.dport


def checksums_ok(packet: Packet) -> bool:
    """Whether the IP and ICMP checksums of a received ICMP message are right."""
    raw = bytes(packet[IP])
    fresh = IP(raw)
    del fresh.chksum
    del fresh[ICMP].chksum
    rebuilt = IP(bytes(fresh))
    return rebuilt.chksum == packet[IP].chksum and rebuilt[ICMP].chksum == packet[ICMP].chksum


def external_endpoint(wire: Wire, port: int, *, timeout: float = 5.0) -> tuple[str, int]:
    """The source (address, port) of the first UDP packet `wire` receives on `port`."""
    packet = wire.wait_for(udp_to(port), timeout=timeout, what=f"UDP to port {port}")
    return packet[IP].src, packet[UDP].sport


def receive(sock: socket.socket) -> tuple[bytes, tuple[str, int]]:
    data, peer = sock.recvfrom(65535)
    return data, (str(peer[0]), int(peer[1]))
