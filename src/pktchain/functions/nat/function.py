"""The NAPT as a chain function: :class:`~pktchain.functions.nat.napt.Nat` behind the contract.

:class:`NatFunction` puts the sans-IO NAPT of the virtual router (RFC 4787,
5382, 5508, 7857; see docs/nat-conformance.md) between two interfaces:
``ingress`` is the inside, ``egress`` the outside. Packets from the inside are
translated outbound and leave on ``egress``; packets from the outside are
translated inbound and leave on ``ingress``; a hairpinned packet (inside to
the external address) goes back out of ``ingress``.

It is an L3 function in a bump in the wire: it rewrites addresses, ports and
checksums, and leaves the Ethernet header as it is (MAC addresses, VLAN tags)
and the TTL too. It does not answer ARP for the external address: in a chain
the node steers packets to it; standing alone on a link, the hosts around it
must get their frames to it some other way. Frames that are not IP pass
unchanged; IPv6 is dropped (``drop-not-ipv4``).

The ICMP errors the NAT decides to send (3/13 when a session is refused,
RFC 5508 REQ-8; port unreachable for an unsolicited SYN nobody answered,
RFC 5382 REQ-4) go back out of the interface the offending packet came in on,
to the MAC address it came from, within a rate limit.

The fast path: a translated packet of a session the NAT lets a cache keep
(:attr:`~pktchain.functions.nat.result.NatResult.cacheable`: UDP, ICMP echo,
TCP in ESTABLISHED) is forwarded with a lease, one per session and direction.
SYN, FIN and RST still reach the NAT, so its TCP state machine sees them; a
session that leaves ESTABLISHED, or ends, has its leases revoked. Before the
NAT expires a session, the activity the fast path counted on its leases
(``lease.seen``) refreshes it as a packet would have: an outbound packet
always (RFC 4787 REQ-6), an inbound one only for TCP or with
``inbound_refresh``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from pktchain.functions.common.fields import protocol_name
from pktchain.functions.common.icmp import TokenBucket
from pktchain.functions.common.reject import answer_header
from pktchain.functions.nat.config import (
    MIN_ICMP_TIMEOUT,
    MIN_INCOMING_SYN_TIMEOUT,
    MIN_TCP_ESTABLISHED_TIMEOUT,
    MIN_UDP_TIMEOUT,
    Filtering,
    NatConfig,
    NatConfigError,
    UnsolicitedSyn,
)
from pktchain.functions.nat.napt import Nat, NatResult, NatVerdict, Session
from pktchain.functions.nat.result import DropReason, Realm
from pktchain.functions.sdk import (
    Deadlines,
    FlowLease,
    Function,
    Packet,
    Result,
    TableSize,
    drop,
    forward,
    reply,
)
from pktchain.functions.sdk.schema import check
from pktchain.packet.headers import IPV4, IpProto
from pktchain.packet.parse import parse_frame
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN

__all__ = ["NatFunction", "NatFunctionConfig", "PortForward"]

_NAT_DEFAULTS: dict[str, Any] = {
    spec.name: spec.default for spec in dataclasses.fields(NatConfig) if spec.init
}
"""NatConfig's defaults: the schema below takes them from there, not from a copy."""

_INSIDE, _OUTSIDE = "ingress", "egress"
_REALM_IFACE = {Realm.INTERNAL: _INSIDE, Realm.EXTERNAL: _OUTSIDE}
_ICMP = int(IpProto.ICMP)
_IPV4_DST = slice(IPV4.offset("dst"), IPV4.offset("dst") + 4)


def _nat(name: str, help_text: str, **bounds: Any) -> Any:
    """A field with NatConfig's default for ``name``."""
    return field(default=_NAT_DEFAULTS[name], metadata=check(help=help_text, **bounds))


def _protocol_error(value: str) -> str | None:
    return None if value in ("tcp", "udp") else f"must be tcp or udp, got {value!r}"


def _networks_error(value: tuple[ipaddress.IPv4Network, ...]) -> str | None:
    return None if value else "give at least one IPv4 network"


_FILTERINGS = "endpoint-independent, address-dependent or address-and-port-dependent"


@dataclass(frozen=True, slots=True)
class PortForward:
    """A static mapping: ``external_port`` of the external address leads to an inside host."""

    protocol: str = field(metadata=check(test=_protocol_error, help="tcp or udp"))
    external_port: int = field(
        metadata=check(
            minimum=1,
            maximum=0xFFFF,
            help="port of the external address; each (protocol, external_port) once",
        )
    )
    internal_address: ipaddress.IPv4Address = field(
        metadata=check(help="the inside host, an address in internal_networks")
    )
    internal_port: int = field(
        metadata=check(minimum=1, maximum=0xFFFF, help="the inside host's port")
    )


@dataclass(frozen=True, slots=True)
class NatFunctionConfig:
    """NatConfig's fields (same names, defaults and RFC minima), port forwards, ICMP rate."""

    external_address: ipaddress.IPv4Address = field(
        metadata=check(help="the one public IPv4 address every mapping uses")
    )
    internal_networks: tuple[ipaddress.IPv4Network, ...] = field(
        metadata=check(
            test=_networks_error,
            help="subnets whose hosts are translated (at least one); the external address "
            "must not lie in them (RFC 4787 REQ-7)",
        )
    )
    udp_filtering: Filtering = field(
        default=_NAT_DEFAULTS["udp_filtering"],
        metadata=check(help=f"which inbound UDP a mapping admits: {_FILTERINGS} (RFC 4787 REQ-8)"),
    )
    tcp_filtering: Filtering = field(
        default=_NAT_DEFAULTS["tcp_filtering"],
        metadata=check(help=f"which inbound TCP a mapping admits: {_FILTERINGS} (RFC 5382 REQ-3)"),
    )
    udp_timeout: float = _nat(
        "udp_timeout", "UDP session idle timeout, s (RFC 4787 REQ-5)", minimum=MIN_UDP_TIMEOUT
    )
    tcp_established_timeout: float = _nat(
        "tcp_established_timeout",
        "established TCP session idle timeout, s (RFC 5382 REQ-5)",
        minimum=MIN_TCP_ESTABLISHED_TIMEOUT,
    )
    tcp_opening_timeout: float = _nat(
        "tcp_opening_timeout",
        "timeout of a TCP connection being opened, s (RFC 7857 §2.1)",
        minimum=1.0,
    )
    tcp_closing_timeout: float = _nat(
        "tcp_closing_timeout",
        "timeout after both FINs or a RST, s (RFC 7857 §2.1)",
        minimum=1.0,
    )
    tcp_incoming_syn_timeout: float = _nat(
        "tcp_incoming_syn_timeout",
        "how long an unsolicited inbound SYN is held, s (RFC 5382 REQ-4)",
        minimum=MIN_INCOMING_SYN_TIMEOUT,
    )
    icmp_timeout: float = _nat(
        "icmp_timeout", "ICMP query session timeout, s (RFC 5508 REQ-2)", minimum=MIN_ICMP_TIMEOUT
    )
    inbound_refresh: bool = _nat(
        "inbound_refresh", "inbound UDP and ICMP packets refresh their session (RFC 4787 REQ-6a)"
    )
    unsolicited_syn: UnsolicitedSyn = field(
        default=_NAT_DEFAULTS["unsolicited_syn"],
        metadata=check(
            help="an inbound SYN no mapping admits: hold-then-icmp, hold-then-drop or drop "
            "(RFC 5382 REQ-4)"
        ),
    )
    icmp_refusals: bool = _nat(
        "icmp_refusals", "answer a refused session with ICMP 3/13 (RFC 5508 REQ-8, REQ-9)"
    )
    icmp_refusal_rate: float | None = _nat(
        "icmp_refusal_rate",
        "refusals answered with 3/13 per second (RFC 1812 §4.3.2.8); none: no limit",
        minimum=0.001,
    )
    icmp_refusal_burst: int = _nat(
        "icmp_refusal_burst", "refusals answered with 3/13 back to back", minimum=1
    )
    max_sessions: int = _nat("max_sessions", "session table limit", minimum=0)
    max_sessions_per_host: int = _nat(
        "max_sessions_per_host", "sessions one inside host may hold at once", minimum=0
    )
    max_held_syns: int = _nat(
        "max_held_syns", "unsolicited SYNs held at once; more are dropped", minimum=0
    )
    new_sessions_per_host_rate: float | None = _nat(
        "new_sessions_per_host_rate",
        "new sessions one inside host may open per second (token bucket); more are "
        "dropped silently; none: no limit",
        minimum=0.001,
    )
    new_sessions_per_host_burst: int = _nat(
        "new_sessions_per_host_burst", "new sessions one inside host may open at once", minimum=1
    )
    preserve_parity: bool = _nat(
        "preserve_parity",
        "keep the parity of a port that cannot be preserved (RFC 4787 REQ-4)",
    )
    port_seed: int | None = _nat(
        "port_seed", "seed of the port randomization (RFC 7857 §9); none draws one"
    )
    port_forwards: tuple[PortForward, ...] = field(
        default=(), metadata=check(help="static mappings open to any outside host")
    )
    icmp_error_rate: float = field(
        default=100.0,
        metadata=check(
            minimum=0.001, help="ICMP errors the NAT sends per second (RFC 1812 §4.3.2.8)"
        ),
    )
    icmp_error_burst: int = field(
        default=50, metadata=check(minimum=1, help="ICMP errors sent at once")
    )
    status_mappings: int = field(
        default=50,
        metadata=check(minimum=0, maximum=10000, help="mappings listed by status()"),
    )

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            self.nat_config()
        except NatConfigError as exc:
            problems.extend(exc.errors)
        seen: set[tuple[str, int]] = set()
        for index, rule in enumerate(self.port_forwards):
            where = f"port_forwards[{index}]"
            if not any(rule.internal_address in net for net in self.internal_networks):
                problems.append(f"{where}.internal_address: not in internal_networks")
            if (rule.protocol, rule.external_port) in seen:
                problems.append(
                    f"{where}.external_port: {rule.protocol} {rule.external_port} twice"
                )
            seen.add((rule.protocol, rule.external_port))
        if problems:
            raise ValueError("; ".join(problems))

    def nat_config(self) -> NatConfig:
        """The NatConfig these fields describe (raises NatConfigError)."""
        names = {spec.name for spec in dataclasses.fields(NatConfig) if spec.init}
        values = {name: getattr(self, name) for name in names}
        values["external_address"] = str(self.external_address)
        values["internal_networks"] = tuple(str(net) for net in self.internal_networks)
        return NatConfig(**values)


_DROPS = {
    DropReason.MALFORMED: "frames that do not parse",
    DropReason.NOT_IPV4: "IPv6 packets (the NAT is IPv4 only)",
    DropReason.FRAGMENT: "IP fragments (the NAT needs the L4 header)",
    DropReason.UNSUPPORTED_PROTOCOL: "protocols other than TCP, UDP and ICMP",
    DropReason.UNSUPPORTED_ICMP: "ICMP other than echo and the errors it translates",
    DropReason.LOCAL_DESTINATION: "echo requests for the external address",
    DropReason.NOT_INTERNAL_SOURCE: "outbound packets from outside internal_networks",
    DropReason.NOT_EXTERNAL_DESTINATION: "inbound packets not sent to the external address",
    DropReason.BAD_PORT: "TCP or UDP packets with port 0",
    DropReason.NO_MAPPING: "inbound packets no mapping admits",
    DropReason.FILTERED: "inbound packets the mapping's filtering refuses (RFC 4787 REQ-8, "
    "RFC 5382 REQ-3)",
    DropReason.TCP_NO_SESSION: "TCP segments other than a SYN without a session",
    DropReason.SYN_HELD: "unsolicited inbound SYNs held, answered or dropped later "
    "(RFC 5382 REQ-4)",
    DropReason.SYN_HOLD_FULL: "unsolicited inbound SYNs dropped: max_held_syns are held",
    DropReason.SESSION_LIMIT: "new sessions refused: max_sessions",
    DropReason.HOST_SESSION_LIMIT: "new sessions refused: max_sessions_per_host",
    DropReason.HOST_SESSION_RATE: "new sessions dropped: over new_sessions_per_host_rate",
    DropReason.PORTS_EXHAUSTED: "new sessions refused: no external port free",
    DropReason.ICMP_CHECKSUM: "ICMP messages with a wrong checksum (RFC 5508 REQ-3)",
    DropReason.EMBEDDED_CHECKSUM: "ICMP errors quoting an IP header with a wrong checksum "
    "(RFC 5508 REQ-3a)",
    DropReason.EMBEDDED_MALFORMED: "ICMP errors whose quoted packet is unusable",
}
"""What each of the NAT's drop counters counts."""


class _Leases:
    """The leases of one NAT session, one per direction."""

    __slots__ = ("inbound", "outbound")

    def __init__(self) -> None:
        self.outbound: FlowLease | None = None
        self.inbound: FlowLease | None = None


class NatFunction(Function[NatFunctionConfig]):
    """The NAPT between ``ingress`` (inside) and ``egress`` (outside); see the module docstring."""

    KIND: ClassVar[str] = "nat"
    Config: ClassVar[type[Any]] = NatFunctionConfig
    LIVE: ClassVar[bool] = False  # RFC 4787 REQ-11: a NAT's behaviour does not change under it
    INTERFACES: ClassVar[tuple[str, ...]] = (_INSIDE, _OUTSIDE)
    UNKNOWN_INTERFACE: ClassVar[str] = "drop-unknown-interface"
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "translated": "packets translated and forwarded",
        "non-ip-passed": "frames that are not IP, passed without translation",
        "drop-malformed": _DROPS[DropReason.MALFORMED],
        "drop-unknown-interface": "frames on an interface it does not have, refused by the driver",
        **{"drop-" + reason.value: _DROPS[reason] for reason in DropReason},
        "icmp-sent": "ICMP errors sent",
        "drop-icmp-rate-limit": "ICMP errors not sent: over icmp_error_rate",
        "leases-granted": "fast-path leases given to sessions",
        "leases-revoked": "leases revoked (the session left ESTABLISHED, or ended)",
    }

    def __init__(self, config: NatFunctionConfig) -> None:
        super().__init__(config)
        self._nat = Nat(config.nat_config())
        for rule in config.port_forwards:
            self._nat.add_port_forward(
                rule.protocol, rule.external_port, rule.internal_address, rule.internal_port
            )
        self._external = config.external_address.packed
        self._bucket = TokenBucket(config.icmp_error_rate, config.icmp_error_burst)
        self._leases: dict[Session, _Leases] = {}
        self._refresh: Deadlines[Session] = Deadlines()
        """When each leased session is due: its leases' activity is taken in then."""
        # RFC 5382 REQ-4: where an unsolicited SYN came from, to send its port
        # unreachable back the same way when the NAT gives up on it.
        self._held_from: dict[bytes, bytes] = {}

    @property
    def nat(self) -> Nat:
        """The NAPT itself (its tables and counters)."""
        return self._nat

    # -- packets -------------------------------------------------------------

    def process(self, packet: Packet, now: float) -> Result:
        info = packet.info
        if info.error is not None:
            return drop("drop-malformed")
        if not info.ip_version:
            self.counters["non-ip-passed"] += 1
            return forward()
        inside = packet.iface == _INSIDE
        buf = packet.buf
        hairpin = inside and info.dst == self._external
        if inside:
            result = self._nat.translate_outbound(buf, 0, now, info=info, partial=packet.partial)
        else:
            result = self._nat.translate_inbound(buf, 0, now, info=info, partial=packet.partial)
        if result.verdict is NatVerdict.TRANSLATED:
            packet.info = parse_frame(buf, VIRTIO_NET_HDR_LEN)
            self.counters["translated"] += 1
            out = _INSIDE if hairpin else self.peer(packet.iface)
            return forward(out, lease=self._lease(result, outbound=inside))
        reason = "drop-" + (result.reason.value if result.reason is not None else "malformed")
        if result.verdict is NatVerdict.REPLY and result.reply is not None:
            if not self._bucket.take(now):
                self.counters["drop-icmp-rate-limit"] += 1
                return drop(reason)
            self.counters["icmp-sent"] += 1
            return reply(packet, answer_header(buf, info) + result.reply, reason=reason)
        if result.reason is DropReason.SYN_HELD:
            self._remember_sender(info.src, answer_header(buf, info))
        return drop(reason)

    def _remember_sender(self, address: bytes, header: bytes) -> None:
        held = self._held_from
        held.pop(address, None)
        if len(held) >= max(1, self.config.max_held_syns):
            del held[next(iter(held))]
        held[address] = header

    # -- leases --------------------------------------------------------------

    def _lease(self, result: NatResult, *, outbound: bool) -> FlowLease | None:
        session = result.session
        if session is None or result.rewrite is None:
            return None  # an ICMP error: translated one by one
        entry = self._leases.get(session)
        if not result.cacheable:
            # A TCP session being opened or closed: the NAT must see its packets.
            if entry is not None:
                self._end(session)
            return None
        if entry is None:
            entry = self._leases[session] = _Leases()
            self._refresh.set(session, float(session.expires))
        lease = entry.outbound if outbound else entry.inbound
        if lease is None:
            lease = FlowLease()
            if outbound:
                entry.outbound = lease
            else:
                entry.inbound = lease
            self.counters["leases-granted"] += 1
        return lease

    def _end(self, session: Session) -> None:
        """Revoke a session's leases: it ended, or it left the states a cache may keep."""
        entry = self._leases.pop(session, None)
        if entry is None:
            return
        self._refresh.discard(session)
        for lease in (entry.outbound, entry.inbound):
            if lease is not None:
                self.counters["leases-revoked"] += 1
                lease.revoke()

    def _idle_timeout(self, session: Session) -> float:
        config = self.config
        if session.state is not None:
            return config.tcp_established_timeout  # leased TCP sessions are ESTABLISHED
        return config.icmp_timeout if session.mapping.proto == _ICMP else config.udp_timeout

    def _refresh_from_leases(self, now: float) -> None:
        """Refresh the leased sessions due by ``now`` from what the fast path carried."""
        nat, refresh = self._nat, self._refresh
        for session in list(refresh.pop_due(now)):
            entry = self._leases.get(session)
            if entry is None:
                continue
            if not session.alive:
                self._end(session)
                continue
            if session.expires > now:
                refresh.set(session, float(session.expires))  # the slow path refreshed it
                continue
            timeout = self._idle_timeout(session)
            for lease, outbound in ((entry.outbound, True), (entry.inbound, False)):
                if lease is None or not lease.seen:
                    continue
                # Only a refresh that moves the expiry later: touch() arms the
                # timer from the time it is given, and lease.seen may be older
                # than the packet that armed it last.
                if math.ceil(lease.seen + timeout) > session.expires:
                    nat.touch(session, lease.seen, outbound=outbound)
            if session.expires > now:
                refresh.set(session, float(session.expires))

    # -- timers --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        return self._nat.next_deadline()

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        self._refresh_from_leases(now)
        result = self._nat.on_timer(now)
        for session in result.expired:
            self._end(session)
        frames: list[tuple[str, bytes]] = []
        for answer in result.replies:
            packet = answer.reply
            if packet is None or answer.reply_to is None:
                continue
            header = self._held_from.pop(packet[_IPV4_DST], None)
            if header is None or not self._bucket.take(now):
                self.counters["drop-icmp-rate-limit"] += 1
                continue
            self.counters["icmp-sent"] += 1
            frames.append((_REALM_IFACE[answer.reply_to], header + packet))
        return frames

    # -- status --------------------------------------------------------------

    def tables(self) -> dict[str, TableSize]:
        nat = self._nat
        return {
            "nat-sessions": TableSize(nat.session_count(), nat.config.max_sessions),
            "nat-mappings": TableSize(nat.mapping_count()),
            "leases": TableSize(len(self._leases)),
        }

    def status(self) -> dict[str, Any]:
        nat = self._nat
        return {
            **super().status(),
            "nat": nat.counters(),
            "external_address": str(self.config.external_address),
            "session_count": nat.session_count(),
            "mapping_count": nat.mapping_count(),
            "leased_sessions": len(self._leases),
            "mappings": [_plain(m) for m in nat.mappings(self.config.status_mappings)],
        }


def _plain(entry: Any) -> dict[str, Any]:
    row = dataclasses.asdict(entry)
    return {
        key: (protocol_name(value) if isinstance(value, IpProto) else value.value)
        if isinstance(value, Enum)
        else value
        for key, value in row.items()
    }
