"""Shared helpers of the function tests (firewall, rate limiter, NAT): frames built by scapy.

Holds no tests. Frames go into a function as bytes that scapy built and come
out as bytes that scapy decodes; checksums of what a function sends are
verified with scapy's own checksum code.
"""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket
from scapy.utils import checksum as scapy_checksum

from pktchain.functions.sdk import Driver, Function, Packet, Result, make_function

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"
CLIENT = "10.0.0.1"
SERVER = "192.0.2.10"
CLIENT6 = "fd00::1"
SERVER6 = "fd00:2::10"


def packet(layer: ScapyPacket, iface: str = "ingress", *, forward: bool = True) -> Packet:
    """A function's packet: ``layer`` (an IP packet) in an Ethernet frame.

    ``forward`` frames go from MAC_A to MAC_B, the others back.
    """
    src, dst = (MAC_A, MAC_B) if forward else (MAC_B, MAC_A)
    return Packet.from_ethernet(bytes(Ether(src=src, dst=dst) / layer), iface)


def raw_packet(frame: bytes, iface: str = "ingress") -> Packet:
    return Packet.from_ethernet(frame, iface)


def make(kind: str, **config: Any) -> Function:
    return make_function(kind, config)


def driven(function: Function, packet: Packet, now: float = 0.0) -> Result:
    """`function`'s result for `packet`, run by the driver the node and ``pktchain fn`` use
    (which refuses unknown interfaces and counts each drop under its reason)."""
    return Driver(function).process(packet, now)[1]


def emitted(result: Result) -> list[tuple[str, Ether]]:
    """The frames a result sends, decoded by scapy."""
    return [(iface, Ether(frame)) for iface, frame in result.emit]


def assert_checksums(frame: bytes) -> None:
    """The IP header and outer transport checksums of ``frame`` are right (scapy's code)."""
    decoded = Ether(frame)
    if IP in decoded:
        ip = decoded[IP]
        header = bytes(ip)[: ip.ihl * 4]
        assert scapy_checksum(header) == 0, "IPv4 header checksum"
        l4 = bytes(ip)[ip.ihl * 4 : ip.len]
        if ip.proto == 1:
            assert scapy_checksum(l4) == 0, "ICMP checksum"
        else:
            pseudo = IP(src=ip.src, dst=ip.dst, proto=ip.proto)
            assert in4_chksum(ip.proto, pseudo, l4) == 0, "TCP/UDP checksum"
    else:
        ip6 = decoded[IPv6]
        l4 = bytes(ip6.payload)[: ip6.plen]
        assert in6_chksum(ip6.nh, ip6, l4) == 0, "TCP/UDP/ICMPv6 checksum"


def tcp(
    flags: str,
    *,
    src: str = CLIENT,
    dst: str = SERVER,
    sport: int = 40000,
    dport: int = 80,
    seq: int = 1000,
    ack: int = 0,
    payload: bytes = b"",
) -> ScapyPacket:
    ip: ScapyPacket = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return ip / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload


def udp(
    *,
    src: str = CLIENT,
    dst: str = SERVER,
    sport: int = 5000,
    dport: int = 53,
    payload: bytes = b"q",
) -> ScapyPacket:
    ip: ScapyPacket = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return ip / UDP(sport=sport, dport=dport) / payload


class TcpConversation:
    """A client on ``ingress`` and a server on ``egress`` talking TCP through a function."""

    def __init__(
        self,
        function: Function,
        *,
        client: str = CLIENT,
        server: str = SERVER,
        sport: int = 40000,
        dport: int = 80,
    ) -> None:
        self.function = function
        self.client, self.server = client, server
        self.sport, self.dport = sport, dport
        self.client_seq, self.server_seq = 1000, 5000

    def client_sends(self, flags: str, now: float = 0.0, payload: bytes = b"") -> Result:
        segment = tcp(
            flags,
            src=self.client,
            dst=self.server,
            sport=self.sport,
            dport=self.dport,
            seq=self.client_seq,
            ack=self.server_seq if "A" in flags else 0,
            payload=payload,
        )
        self.client_seq += len(payload) + ("S" in flags) + ("F" in flags)
        return self.function.process(packet(segment, "ingress"), now)

    def server_sends(self, flags: str, now: float = 0.0, payload: bytes = b"") -> Result:
        segment = tcp(
            flags,
            src=self.server,
            dst=self.client,
            sport=self.dport,
            dport=self.sport,
            seq=self.server_seq,
            ack=self.client_seq if "A" in flags else 0,
            payload=payload,
        )
        self.server_seq += len(payload) + ("S" in flags) + ("F" in flags)
        return self.function.process(packet(segment, "egress", forward=False), now)

    def open(self, now: float = 0.0) -> Result:
        """The three-way handshake; returns the result of the client's ACK."""
        self.client_sends("S", now)
        self.server_sends("SA", now)
        return self.client_sends("A", now)
