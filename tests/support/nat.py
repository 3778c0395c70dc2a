"""Shared helpers of the NAT tests: packets built and checked by scapy, the independent oracle.

Holds no tests. Packets go into the NAT as bytes built by scapy and come out as
bytes decoded by scapy; every checksum of the result (embedded ones included)
is verified with scapy's own checksum functions.
"""

from __future__ import annotations

from typing import Any

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, in4_chksum
from scapy.packet import Packet
from scapy.utils import checksum as scapy_checksum

from pktchain.functions.nat.napt import Nat, NatConfig, NatResult, NatVerdict

EXTERNAL = "203.0.113.1"
INSIDE_A = "10.0.0.5"
INSIDE_B = "10.0.1.7"
REMOTE = "198.51.100.7"
REMOTE_2 = "198.51.100.8"
ROUTER_ON_PATH = "192.0.2.254"


def make_nat(**overrides: Any) -> Nat:
    """A NAT for 203.0.113.1 with two inside subnets and a fixed port seed."""
    settings: dict[str, Any] = {
        "external_address": EXTERNAL,
        "internal_networks": ("10.0.0.0/24", "10.0.1.0/24"),
        "port_seed": 7,
    }
    settings.update(overrides)
    return Nat(NatConfig(**settings))


def raw(packet: Packet) -> bytearray:
    """The wire bytes of a scapy packet, writable."""
    return bytearray(bytes(packet))


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"data") -> bytearray:
    return raw(IP(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload)


def tcp(
    src: str, sport: int, dst: str, dport: int, flags: str = "S", *, payload: bytes = b""
) -> bytearray:
    return raw(
        IP(src=src, dst=dst, flags="DF")
        / TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=0 if "A" not in flags else 5)
        / payload
    )


def echo(src: str, dst: str, ident: int, seq: int = 1, reply: bool = False) -> bytearray:
    return raw(IP(src=src, dst=dst) / ICMP(type=0 if reply else 8, id=ident, seq=seq) / b"ping")


def icmp_error(
    sender: str, dst: str, offending: bytes, icmp_type: int = 3, code: int = 3
) -> bytearray:
    """An ICMP error from ``sender`` to ``dst`` quoting the whole ``offending`` datagram."""
    return raw(IP(src=sender, dst=dst) / ICMP(type=icmp_type, code=code) / offending)


def out(nat: Nat, packet: bytearray, now: float = 0.0, **kw: Any) -> NatResult:
    return nat.translate_outbound(packet, 0, now, **kw)


def inb(nat: Nat, packet: bytearray, now: float = 0.0, **kw: Any) -> NatResult:
    return nat.translate_inbound(packet, 0, now, **kw)


def ok(result: NatResult) -> NatResult:
    assert result.verdict is NatVerdict.TRANSLATED, result
    return result


def assert_checksums(data: bytes | bytearray) -> IP:
    """Verify every checksum of an IPv4 packet with scapy, recursing into ICMP errors."""
    data = bytes(data)
    ihl = (data[0] & 0x0F) * 4
    assert scapy_checksum(data[:ihl]) == 0, "IPv4 header checksum"
    decoded = IP(data)
    total = decoded.len
    l4 = data[ihl:total]
    if decoded.proto == 6:
        assert in4_chksum(6, decoded, l4) == 0, "TCP checksum"
    elif decoded.proto == 17:
        if decoded[UDP].chksum != 0:
            assert in4_chksum(17, decoded, l4) == 0, "UDP checksum"
    elif decoded.proto == 1:
        assert scapy_checksum(l4) == 0, "ICMP checksum"
        if decoded[ICMP].type in (3, 11, 12):
            assert_checksums(l4[8:])
    return decoded


def embedded(decoded: IP) -> IPerror:
    """The datagram quoted by a decoded ICMP error."""
    inner: IPerror = decoded[IPerror]
    return inner
