"""Packets described by their fields, and frames shown as fields: what a trace speaks.

`PacketSpec.parse(["proto=tcp", "dst=10.0.0.10", "dport=80"])` reads a
packet's description as ``FIELD=VALUE`` words (the names ovn-trace and
Wireshark use: ``ip.src``, ``tcp.dport``, ``eth.dst``...; short forms
``src``, ``dport``... too); every wrong word is reported at once, each naming
its field (`DescriptionError`). Fields left out get the values of a new
connection's first packet (`FIELDS` lists them with their defaults); the
MACs are left to the caller, which knows the network (`PacketSpec.frame`).

`header_fields(frame)` reads a frame back as the same names, and
`header_diff(before, after)` says which changed: how a trace shows what a
function rewrote (``ip.src 10.0.0.1 -> 198.51.100.2``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pktchain.packet.address import format_ip, format_mac, mac_bytes
from pktchain.packet.headers import IcmpType, Icmpv6Type, IpProto, TcpFlag
from pktchain.packet.layers import Ethernet, Icmp, Icmpv6, Ipv4, Ipv6, Layer, Tcp, Udp, Vlan, build
from pktchain.packet.parse import FrameInfo, parse_frame

__all__ = [
    "ALIASES",
    "FIELDS",
    "DescriptionError",
    "FrameFilter",
    "PacketSpec",
    "header_diff",
    "header_fields",
    "tcp_flag_letters",
]

FIELDS: dict[str, str] = {
    "eth.src": "source MAC (default: the MAC of the ingress port's host)",
    "eth.dst": "destination MAC (default: the destination's, from the node's tables)",
    "vlan": "802.1Q VLAN id, 0-4095 (default: untagged)",
    "ip.src": "source IPv4 or IPv6 address (default: the ingress port's own address)",
    "ip.dst": "destination address (required)",
    "ip.proto": "tcp, udp, icmp, icmp6 or a number (default: tcp with ports or flags, else icmp)",
    "ip.ttl": "TTL / hop limit (default 64)",
    "tcp.flags": "TCP flags as letters S A F R P U E C (default S: a connection's first packet)",
    "l4.sport": "TCP/UDP source port (default 40000)",
    "l4.dport": "TCP/UDP destination port (default 80 for TCP, 53 for UDP)",
    "icmp.type": "ICMP type (default echo request: 8, or 128 for ICMPv6)",
    "icmp.code": "ICMP code (default 0)",
    "icmp.id": "ICMP echo identifier (default 1)",
    "payload": "the L4 payload as text, with \\r \\n \\t \\\\ and \\xHH escapes (default none)",
}
"""Every field a description may set, with its meaning and default."""

ALIASES: dict[str, str] = {
    "src": "ip.src",
    "dst": "ip.dst",
    "ip6.src": "ip.src",
    "ip6.dst": "ip.dst",
    "proto": "ip.proto",
    "ttl": "ip.ttl",
    "hlim": "ip.ttl",
    "ip6.hlim": "ip.ttl",
    "flags": "tcp.flags",
    "sport": "l4.sport",
    "dport": "l4.dport",
    "tcp.sport": "l4.sport",
    "tcp.dport": "l4.dport",
    "udp.sport": "l4.sport",
    "udp.dport": "l4.dport",
    "tcp.src": "l4.sport",
    "tcp.dst": "l4.dport",
    "udp.src": "l4.sport",
    "udp.dst": "l4.dport",
    "icmp6.type": "icmp.type",
    "icmp6.code": "icmp.code",
    "vlan.vid": "vlan",
}
"""Other names of the fields (ovn-trace's and the short ones)."""

PROTOCOLS = {"tcp": IpProto.TCP, "udp": IpProto.UDP, "icmp": IpProto.ICMP, "icmp6": IpProto.ICMPV6}
PROTOCOL_NAMES: dict[int, str] = {int(number): name for name, number in PROTOCOLS.items()}
_FLAG_LETTERS = {
    "F": TcpFlag.FIN,
    "S": TcpFlag.SYN,
    "R": TcpFlag.RST,
    "P": TcpFlag.PSH,
    "A": TcpFlag.ACK,
    "U": TcpFlag.URG,
    "E": TcpFlag.ECE,
    "C": TcpFlag.CWR,
}
DEFAULT_SPORT = 40000


class DescriptionError(ValueError):
    """A packet description with wrong fields: `errors` holds (field, message) for each."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors))


def tcp_flag_letters(flags: int) -> str:
    """TCP flags as letters (``SA`` for SYN+ACK), ``.`` for none."""
    return "".join(letter for letter, bit in _FLAG_LETTERS.items() if flags & bit) or "."


def _int(value: str, low: int, high: int) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ValueError(f"not a number: {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{number} is out of range {low}-{high}")
    return number


def _payload(text: str) -> bytes:
    try:
        return text.encode("latin-1").decode("unicode_escape").encode("latin-1")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise ValueError(f"bad escape or character: {exc.reason}") from None


@dataclass(frozen=True)
class PacketSpec:
    """A packet described by its fields; None where the caller's tables decide."""

    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    src: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    eth_src: bytes | None = None
    eth_dst: bytes | None = None
    vlan: int | None = None
    proto: int = IpProto.ICMP
    ttl: int = 64
    sport: int = DEFAULT_SPORT
    dport: int = 80
    tcp_flags: int = TcpFlag.SYN
    icmp_type: int = IcmpType.ECHO_REQUEST
    icmp_code: int = 0
    icmp_id: int = 1
    payload: bytes = b""

    @property
    def version(self) -> int:
        return self.dst.version

    @classmethod
    def parse(cls, words: Iterable[str]) -> PacketSpec:
        """A spec from ``FIELD=VALUE`` words; DescriptionError naming every wrong field."""
        given: dict[str, str] = {}
        errors: list[tuple[str, str]] = []
        for word in words:
            name, sep, value = word.partition("=")
            name = name.strip().lower()
            if not sep or not name:
                errors.append((word, "expected FIELD=VALUE"))
                continue
            field = ALIASES.get(name, name)
            if field not in FIELDS:
                errors.append((name, f"unknown field (known: {', '.join(FIELDS)})"))
                continue
            if field in given:
                errors.append((name, "given twice"))
                continue
            given[field] = value.strip() if field != "payload" else value
        try:
            spec = cls.from_fields(given)
        except DescriptionError as exc:
            raise DescriptionError(errors + exc.errors) from None
        if errors:
            raise DescriptionError(errors)
        return spec

    @classmethod
    def from_fields(cls, given: Mapping[str, str]) -> PacketSpec:
        """A spec from canonical field names (see `FIELDS`) to their text values."""
        errors: list[tuple[str, str]] = []
        values: dict[str, Any] = {}
        for field in given:
            if field not in FIELDS:
                errors.append((field, "unknown field"))

        def check(field: str, convert: Any) -> None:
            if field in given:
                try:
                    values[field] = convert(given[field])
                except ValueError as exc:
                    errors.append((field, str(exc)))

        check("ip.dst", ipaddress.ip_address)
        check("ip.src", ipaddress.ip_address)
        check("eth.src", mac_bytes)
        check("eth.dst", mac_bytes)
        check("vlan", lambda v: _int(v, 0, 4095))
        check("ip.ttl", lambda v: _int(v, 0, 255))
        check("l4.sport", lambda v: _int(v, 0, 65535))
        check("l4.dport", lambda v: _int(v, 0, 65535))
        check("icmp.type", lambda v: _int(v, 0, 255))
        check("icmp.code", lambda v: _int(v, 0, 255))
        check("icmp.id", lambda v: _int(v, 0, 65535))
        check("payload", _payload)

        def protocol(value: str) -> int:
            named = PROTOCOLS.get(value.lower())
            return named if named is not None else _int(value, 0, 255)

        def flags(value: str) -> int:
            bits = 0
            for letter in value.upper():
                if letter not in _FLAG_LETTERS:
                    raise ValueError(f"unknown flag {letter!r} (use {''.join(_FLAG_LETTERS)})")
                bits |= _FLAG_LETTERS[letter]
            return bits

        check("ip.proto", protocol)
        check("tcp.flags", flags)
        dst = values.get("ip.dst")
        src = values.get("ip.src")
        if dst is None and "ip.dst" not in given:
            errors.append(("ip.dst", "required: the destination address"))
        if dst is not None and src is not None and src.version != dst.version:
            errors.append(("ip.src", f"IPv{src.version}, but ip.dst is IPv{dst.version}"))
        version = dst.version if dst is not None else 4
        proto = values.get("ip.proto")
        if proto is None:
            l4_given = {"l4.sport", "l4.dport", "tcp.flags"} & set(given)
            proto = IpProto.TCP if l4_given else (IpProto.ICMP if version == 4 else IpProto.ICMPV6)
        if "tcp.flags" in given and proto != IpProto.TCP:
            errors.append(("tcp.flags", "only for proto=tcp"))
        for field in ("l4.sport", "l4.dport"):
            if field in given and proto not in (IpProto.TCP, IpProto.UDP):
                errors.append((field, "only for proto=tcp or proto=udp"))
        icmp_proto = IpProto.ICMP if version == 4 else IpProto.ICMPV6
        for field in ("icmp.type", "icmp.code", "icmp.id"):
            if field in given and proto != icmp_proto:
                errors.append((field, f"only for proto={'icmp' if version == 4 else 'icmp6'}"))
        if proto in (IpProto.ICMP, IpProto.ICMPV6) and proto != icmp_proto:
            errors.append(("ip.proto", f"{PROTOCOL_NAMES[proto]} does not go over IPv{version}"))
        if errors or dst is None:
            raise DescriptionError(errors)
        echo = IcmpType.ECHO_REQUEST if version == 4 else Icmpv6Type.ECHO_REQUEST
        return cls(
            dst=dst,
            src=src,
            eth_src=values.get("eth.src"),
            eth_dst=values.get("eth.dst"),
            vlan=values.get("vlan"),
            proto=int(proto),
            ttl=values.get("ip.ttl", 64),
            sport=values.get("l4.sport", DEFAULT_SPORT),
            dport=values.get("l4.dport", 53 if proto == IpProto.UDP else 80),
            tcp_flags=values.get("tcp.flags", TcpFlag.SYN),
            icmp_type=values.get("icmp.type", echo),
            icmp_code=values.get("icmp.code", 0),
            icmp_id=values.get("icmp.id", 1),
            payload=values.get("payload", b""),
        )

    def frame(self, *, eth_src: bytes, eth_dst: bytes, src: bytes | None = None) -> bytes:
        """The Ethernet frame; the MACs and the source address (where the spec has none)
        come from the caller."""
        source = self.src.packed if self.src is not None else src
        if source is None:
            raise DescriptionError([("ip.src", "not given, and the port has no address")])
        if len(source) != len(self.dst.packed):
            raise DescriptionError(
                [("ip.src", f"the port's address is not IPv{self.version}: give ip.src")]
            )
        layers: list[Layer | bytes] = [Ethernet(dst=eth_dst, src=eth_src)]
        if self.vlan is not None:
            layers.append(Vlan(vid=self.vlan))
        if self.version == 4:
            layers.append(Ipv4(src=source, dst=self.dst.packed, ttl=self.ttl, proto=self.proto))
        else:
            layers.append(
                Ipv6(src=source, dst=self.dst.packed, hop_limit=self.ttl, next_header=self.proto)
            )
        if self.proto == IpProto.TCP:
            layers.append(Tcp(sport=self.sport, dport=self.dport, flags=self.tcp_flags, seq=1))
        elif self.proto == IpProto.UDP:
            layers.append(Udp(sport=self.sport, dport=self.dport))
        elif self.proto == IpProto.ICMP:
            layers.append(
                Icmp(type=self.icmp_type, code=self.icmp_code, identifier=self.icmp_id, sequence=1)
            )
        elif self.proto == IpProto.ICMPV6:
            layers.append(
                Icmpv6(
                    type=self.icmp_type, code=self.icmp_code, identifier=self.icmp_id, sequence=1
                )
            )
        layers.append(self.payload)
        return build(*layers)


def header_fields(frame: bytes | bytearray, offset: int = 0) -> dict[str, str]:
    """The fields of the frame at `offset` by the names a description uses (`FIELDS`)."""
    info = parse_frame(frame, offset)
    return fields_of(frame, info)


def fields_of(frame: bytes | bytearray, info: FrameInfo) -> dict[str, str]:
    """`header_fields` of an already parsed frame."""
    fields: dict[str, str] = {}
    if info.l2 >= 0:
        fields["eth.dst"] = format_mac(bytes(frame[info.l2 : info.l2 + 6]))
        fields["eth.src"] = format_mac(bytes(frame[info.l2 + 6 : info.l2 + 12]))
    if info.vlans:
        at = info.vlans[0]
        fields["vlan"] = str(int.from_bytes(frame[at : at + 2], "big") & 0x0FFF)
    if not info.ip_version:
        fields["eth.type"] = f"0x{info.ethertype:04x}"
        return fields
    fields["ip.src"] = format_ip(info.src)
    fields["ip.dst"] = format_ip(info.dst)
    fields["ip.proto"] = PROTOCOL_NAMES.get(info.proto, str(info.proto))
    ttl_at = info.l3 + (8 if info.ip_version == 4 else 7)
    if ttl_at < len(frame):
        fields["ip.ttl"] = str(frame[ttl_at])
    if info.l4 < 0:
        return fields
    if info.proto in (IpProto.TCP, IpProto.UDP):
        name = "tcp" if info.proto == IpProto.TCP else "udp"
        fields[f"{name}.sport"] = str(info.sport)
        fields[f"{name}.dport"] = str(info.dport)
        if info.proto == IpProto.TCP:
            fields["tcp.flags"] = tcp_flag_letters(info.tcp_flags)
    elif info.proto in (IpProto.ICMP, IpProto.ICMPV6) and info.l4 + 2 <= len(frame):
        fields["icmp.type"] = str(frame[info.l4])
        fields["icmp.code"] = str(frame[info.l4 + 1])
        if info.sport:
            fields["icmp.id"] = str(info.sport)
    return fields


def header_diff(before: Mapping[str, str], after: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each field that changed, was added or went: ``{"field", "from", "to"}`` (None: absent)."""
    names = list(before) + [name for name in after if name not in before]
    return [
        {"field": name, "from": before.get(name), "to": after.get(name)}
        for name in names
        if before.get(name) != after.get(name)
    ]


class FrameFilter:
    """Which frames a live trace marks: the fields given must all match (none: any IP packet).

    The same ``FIELD=VALUE`` words as a description (`FIELDS`), with no
    defaults: a field left out matches anything.
    """

    def __init__(self, given: Mapping[str, str], spec: PacketSpec | None) -> None:
        self.given = dict(given)
        self._spec = spec

    @classmethod
    def parse(cls, words: Iterable[str]) -> FrameFilter:
        given: dict[str, str] = {}
        errors: list[tuple[str, str]] = []
        for word in words:
            name, sep, value = word.partition("=")
            name = name.strip().lower()
            field = ALIASES.get(name, name)
            if not sep or field not in FIELDS:
                errors.append((name or word, "unknown field" if sep else "expected FIELD=VALUE"))
                continue
            if field == "payload":
                errors.append((name, "a live trace does not match payloads"))
                continue
            given[field] = value.strip()
        # The values are checked as a description's (ip.dst stands in when not given).
        probe = dict(given)
        probe.setdefault("ip.dst", "0.0.0.0" if ":" not in given.get("ip.src", "") else "::")
        try:
            spec = PacketSpec.from_fields(probe)
        except DescriptionError as exc:
            errors += exc.errors
            spec = None
        if errors:
            raise DescriptionError(errors)
        return cls(given, spec)

    def matches(self, frame: bytes | bytearray, info: FrameInfo) -> bool:
        spec = self._spec
        given = self.given
        if spec is None or info.error is not None or not info.ip_version:
            return False
        checks: tuple[tuple[str, Callable[[], bool]], ...] = (
            ("ip.dst", lambda: info.dst == spec.dst.packed),
            ("ip.src", lambda: spec.src is not None and info.src == spec.src.packed),
            ("ip.proto", lambda: info.proto == spec.proto),
            ("l4.sport", lambda: info.sport == spec.sport),
            ("l4.dport", lambda: info.dport == spec.dport),
            ("tcp.flags", lambda: info.tcp_flags & spec.tcp_flags == spec.tcp_flags),
            ("eth.src", lambda: bytes(frame[info.l2 + 6 : info.l2 + 12]) == spec.eth_src),
            ("eth.dst", lambda: bytes(frame[info.l2 : info.l2 + 6]) == spec.eth_dst),
            ("icmp.type", lambda: info.l4 >= 0 and frame[info.l4] == spec.icmp_type),
            ("icmp.code", lambda: info.l4 >= 0 and frame[info.l4 + 1] == spec.icmp_code),
            ("icmp.id", lambda: info.sport == spec.icmp_id),
            ("ip.ttl", lambda: frame[info.l3 + (8 if info.ip_version == 4 else 7)] == spec.ttl),
            (
                "vlan",
                lambda: (
                    bool(info.vlans)
                    and int.from_bytes(frame[info.vlans[0] : info.vlans[0] + 2], "big") & 0x0FFF
                    == spec.vlan
                ),
            ),
        )
        return all(check() for field, check in checks if field in given)
