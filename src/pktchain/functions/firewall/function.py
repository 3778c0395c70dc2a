"""A stateful firewall function: ordered rules over the 5-tuple and the connection state.

:class:`Firewall` is a bump in the wire with two interfaces, ``ingress`` and
``egress``. Each IP packet gets the action of the first rule it matches, or the
default action:

* a rule matches on the interface the packet came in on (``direction``), the
  IP protocol, source and destination networks (IPv4 and IPv6), port ranges,
  the ICMP / ICMPv6 type and code, and the connection state (a set of
  ``new``, ``established``, ``related``, ``invalid``, ``untracked``; see
  :mod:`pktchain.functions.firewall.conntrack`);
* ``accept`` forwards the packet unchanged to the other interface, ``drop``
  discards it silently, ``reject`` discards it and answers the sender (a TCP
  RST, or an ICMP unreachable of the configured kind, see
  :mod:`pktchain.functions.common.reject`), within a rate limit;
* every rule counts packets and bytes; every drop has a named reason.

Connection tracking sees only accepted packets: a dropped SYN-ACK does not
move a connection. Fragments: the first fragment is judged like any packet
and its verdict is kept, keyed by the datagram's identification, for the later
fragments (which name no ports, RFC 1858); a later fragment whose first one
was not seen is dropped. Frames that are not IP (ARP) pass by default.

The fast path: once a connection is established (answered, and for TCP past
the handshake), an accepted packet is forwarded with the connection's
:class:`~pktchain.functions.sdk.FlowLease`, one for both directions, so the
node carries the rest of the connection without calling the firewall (SYN,
FIN and RST segments still come here). The lease is revoked when the
connection closes (second FIN, RST), when it expires (idle time judged with
``lease.seen``, the fast path's activity), and on reconfiguration when the new
rules would judge one of its directions differently: every leased connection
is judged again, and only those leases end.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self

from pktchain.functions.common.fields import (
    PROTOCOLS,
    Direction,
    protocol_name,
    protocol_number,
)
from pktchain.functions.common.reject import (
    RejectWith,
    icmp_unreachable,
    reply_allowed,
    tcp_reset,
)
from pktchain.functions.firewall.conntrack import (
    LEASABLE_TCP_STATES,
    Connection,
    ConnState,
    FlowTuple,
    Timeouts,
    Tracker,
    Tracking,
)
from pktchain.functions.sdk import (
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
from pktchain.packet.address import format_ip
from pktchain.packet.headers import IPV4, IPV6, IPV6_EXTENSION, IPV6_FRAGMENT, IpProto
from pktchain.packet.parse import FrameInfo

if TYPE_CHECKING:
    from pktchain.functions.common.icmp import TokenBucket

__all__ = [
    "PROTOCOLS",
    "Action",
    "ConnState",
    "Direction",
    "Firewall",
    "FirewallConfig",
    "FirewallDrop",
    "NonIp",
    "RejectWith",
    "Rule",
    "Timeouts",
]


class Action(Enum):
    """What a rule (or the default) does with a packet."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


class NonIp(Enum):
    """What becomes of frames that are not IP (ARP, LLDP, ...)."""

    ACCEPT = "accept"
    DROP = "drop"


class FirewallDrop(StrEnum):
    """Why the firewall did not forward a packet; counted as ``drop-<value>``."""

    MALFORMED = "malformed"
    UNKNOWN_INTERFACE = "unknown-interface"
    NON_IP = "non-ip"
    RULE = "rule"
    POLICY = "policy"
    TABLE_FULL = "table-full"
    FRAGMENT = "fragment"
    REJECT_SUPPRESSED = "reject-suppressed"
    REJECT_RATE_LIMIT = "reject-rate-limit"

    @property
    def counter(self) -> str:
        return "drop-" + self.value


_DROPS = {
    FirewallDrop.MALFORMED: "frames that do not parse",
    FirewallDrop.UNKNOWN_INTERFACE: "frames on an interface it does not have, refused by the "
    "driver",
    FirewallDrop.NON_IP: "frames that are not IP, with non_ip: drop",
    FirewallDrop.RULE: "packets a rule with action drop matched",
    FirewallDrop.POLICY: "packets no rule matched, with default: drop",
    FirewallDrop.TABLE_FULL: "accepted packets that would open a connection when the table "
    "has no room for it",
    FirewallDrop.FRAGMENT: "later fragments whose first one was refused or not seen",
    FirewallDrop.REJECT_SUPPRESSED: "rejected packets that may not be answered (an ICMP "
    "error; to or from a multicast or broadcast address; RFC 1812 §4.3.2.7)",
    FirewallDrop.REJECT_RATE_LIMIT: "rejected packets not answered: answers over reject_rate",
}
"""What each drop counter counts."""


_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- configuration -----------------------------------------------------------------


def _protocol_number(value: str | int) -> int | None:
    try:
        return protocol_number(value)
    except ValueError:
        return None


def _protocol_error(value: str | int) -> str | None:
    try:
        protocol_number(value)
    except ValueError as exc:
        return str(exc)
    return None


def _port_range(value: int | str) -> tuple[int, int] | None:
    if isinstance(value, int):
        return (value, value) if 0 <= value <= 0xFFFF else None
    low, sep, high = value.partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        return None
    if 0 <= first <= last <= 0xFFFF:
        return (first, last)
    return None


def _ports_error(values: tuple[int | str, ...]) -> str | None:
    wrong = [v for v in values if _port_range(v) is None]
    if wrong:
        return f"not a port or a range LOW-HIGH within 0-65535: {', '.join(map(repr, wrong))}"
    return None


@dataclass(frozen=True, slots=True)
class Rule:
    """One firewall rule: every field given must match; fields left out match anything."""

    action: Action = field(metadata=check(help="accept, drop or reject"))
    name: str = field(default="", metadata=check(help="a label shown with the rule's counters"))
    direction: Direction = field(
        default=Direction.ANY,
        metadata=check(help="ingress, egress (the interface the packet came in on) or any"),
    )
    protocol: int | str | None = field(
        default=None,
        metadata=check(
            help="tcp, udp, icmp, icmpv6, gre, esp, ah, sctp, or 0-255", test=_protocol_error
        ),
    )
    source: tuple[Network, ...] = field(
        default=(),
        metadata=check(
            help="source networks, IPv4 and/or IPv6 (10.0.0.0/8, fd00::/8, 192.0.2.7); "
            "one or a list"
        ),
    )
    destination: tuple[Network, ...] = field(
        default=(), metadata=check(help="destination networks, as source")
    )
    sport: tuple[int | str, ...] = field(
        default=(),
        metadata=check(
            help='source ports and ranges (22, "8000-8080"); need protocol tcp or udp',
            test=_ports_error,
        ),
    )
    dport: tuple[int | str, ...] = field(
        default=(), metadata=check(help="destination ports and ranges, as sport", test=_ports_error)
    )
    icmp_type: int | None = field(
        default=None,
        metadata=check(
            help="ICMP or ICMPv6 type; needs protocol icmp or icmpv6", minimum=0, maximum=255
        ),
    )
    icmp_code: int | None = field(
        default=None,
        metadata=check(help="ICMP or ICMPv6 code; needs icmp_type", minimum=0, maximum=255),
    )
    state: tuple[ConnState, ...] = field(
        default=(),
        metadata=check(
            help="connection states: new, established, related, invalid, untracked; one or a list"
        ),
    )
    reject_with: RejectWith | None = field(
        default=None,
        metadata=check(
            help="the ICMP unreachable this rule's reject sends (only with action reject); "
            "none: the firewall's"
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        number = None if self.protocol is None else _protocol_number(self.protocol)
        if (self.sport or self.dport) and number not in (_TCP, _UDP):
            problems.append("sport/dport: need protocol tcp or udp")
        if self.icmp_type is not None and number not in (_ICMP, _ICMPV6):
            problems.append("icmp_type: needs protocol icmp or icmpv6")
        if self.icmp_code is not None and self.icmp_type is None:
            problems.append("icmp_code: needs icmp_type")
        versions = _versions(self.source) & _versions(self.destination)
        if number == _ICMP:
            versions &= {4}
        elif number == _ICMPV6:
            versions &= {6}
        if not versions:
            problems.append(
                "source/destination/protocol: no IP version in common, the rule never matches"
            )
        if self.reject_with is not None and self.action is not Action.REJECT:
            problems.append("reject_with: only for action reject")
        if problems:
            raise ValueError("; ".join(problems))


LISTED_RULE_FIELDS = ("source", "destination", "sport", "dport", "state")
"""Rule fields that take a list, and one value as a list of one (``dport: 80``)."""


def _one_as_list(data: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``data`` with each single value of LISTED_RULE_FIELDS put in a list."""
    rules = data.get("rules") if isinstance(data, Mapping) else None
    if data is None or not isinstance(rules, list | tuple):
        return data
    fixed = [
        {
            key: [value] if key in LISTED_RULE_FIELDS and isinstance(value, str | int) else value
            for key, value in rule.items()
        }
        if isinstance(rule, Mapping)
        else rule
        for rule in rules
    ]
    return {**data, "rules": fixed}


def _versions(networks: tuple[Network, ...]) -> set[int]:
    return {net.version for net in networks} if networks else {4, 6}


@dataclass(frozen=True, slots=True)
class FirewallConfig:
    """The firewall's configuration: rules in order, the default, tracking limits."""

    rules: tuple[Rule, ...] = field(
        default=(),
        metadata=check(help="the rules, in order: the first one a packet matches decides"),
    )
    default: Action = field(
        default=Action.DROP, metadata=check(help="accept, drop or reject a packet no rule matches")
    )
    reject_with: RejectWith = field(
        default=RejectWith.ADMIN_PROHIBITED,
        metadata=check(
            help="the ICMP unreachable a reject sends for what is not TCP: admin-prohibited "
            "(RFC 1812 §5.2.7.1), port-unreachable, host-unreachable or net-unreachable"
        ),
    )
    reject_rate: float = field(
        default=100.0,
        metadata=check(
            help="answers to rejected packets per second (token bucket, RFC 1812 §4.3.2.8)",
            minimum=0.001,
        ),
    )
    reject_burst: int = field(default=100, metadata=check(help="answers sent at once", minimum=1))
    non_ip: NonIp = field(
        default=NonIp.ACCEPT,
        metadata=check(help="accept or drop frames that are not IP (ARP, LLDP)"),
    )
    tcp_pickup: bool = field(
        default=False,
        metadata=check(
            help="track a TCP connection met mid-stream (after a restart) as established "
            "instead of invalid"
        ),
    )
    max_connections: int = field(
        default=65536,
        metadata=check(
            help="connection table limit; when full, the oldest unanswered connection makes room",
            minimum=1,
        ),
    )
    timeouts: Timeouts = field(
        default_factory=Timeouts,
        metadata=check(help="idle timeouts per connection state, in seconds"),
    )
    status_connections: int = field(
        default=50, metadata=check(help="connections listed by status()", minimum=0, maximum=10000)
    )


# -- matching ----------------------------------------------------------------------


class _Facts(NamedTuple):
    """What rules look at in one packet (or in one direction of a tracked connection)."""

    direction: Direction
    version: int
    src: int
    dst: int
    proto: int
    sport: int
    dport: int
    icmp_type: int  # -1 when not ICMP / ICMPv6
    icmp_code: int
    state: ConnState


class _Matcher:
    """A rule compiled for matching: integers and tuples instead of objects."""

    __slots__ = (
        "action",
        "destinations",
        "direction",
        "dports",
        "icmp_code",
        "icmp_type",
        "proto",
        "reject_with",
        "sources",
        "sports",
        "states",
    )

    def __init__(self, rule: Rule, reject_with: RejectWith) -> None:
        self.action = rule.action
        self.direction = None if rule.direction is Direction.ANY else rule.direction
        number = None if rule.protocol is None else _protocol_number(rule.protocol)
        self.proto = -1 if number is None else number
        self.sources = _networks(rule.source)
        self.destinations = _networks(rule.destination)
        self.sports = tuple(r for r in map(_port_range, rule.sport) if r is not None)
        self.dports = tuple(r for r in map(_port_range, rule.dport) if r is not None)
        self.icmp_type = -1 if rule.icmp_type is None else rule.icmp_type
        self.icmp_code = -1 if rule.icmp_code is None else rule.icmp_code
        self.states = frozenset(rule.state)
        self.reject_with = rule.reject_with or reject_with

    def matches(self, facts: _Facts) -> bool:
        if self.direction is not None and facts.direction is not self.direction:
            return False
        if self.proto >= 0 and facts.proto != self.proto:
            return False
        if self.states and facts.state not in self.states:
            return False
        if self.sources and not _address_in(self.sources, facts.version, facts.src):
            return False
        if self.destinations and not _address_in(self.destinations, facts.version, facts.dst):
            return False
        if self.sports and not _port_in(self.sports, facts.sport):
            return False
        if self.dports and not _port_in(self.dports, facts.dport):
            return False
        if self.icmp_type >= 0 and facts.icmp_type != self.icmp_type:
            return False
        return self.icmp_code < 0 or facts.icmp_code == self.icmp_code


def _networks(networks: tuple[Network, ...]) -> tuple[tuple[int, int, int], ...]:
    return tuple((net.version, int(net.netmask), int(net.network_address)) for net in networks)


def _address_in(networks: tuple[tuple[int, int, int], ...], version: int, address: int) -> bool:
    return any(v == version and address & mask == net for v, mask, net in networks)


def _port_in(ranges: tuple[tuple[int, int], ...], port: int) -> bool:
    return any(low <= port <= high for low, high in ranges)


# -- fragments ---------------------------------------------------------------------

FRAGMENT_TIMEOUT = 60.0
"""How long a first fragment's verdict is kept (RFC 8200 §4.5: reassembly gives
up 60 s after the first fragment arrives)."""

FRAGMENT_LIMIT = 4096
"""Datagrams whose verdict is kept at once; the oldest is forgotten first."""

_V4_ID = IPV4.accessor("identification")
_V6_NEXT_AT = IPV6.offset("next_header")
_EXT_LEN = IPV6_EXTENSION.accessor("hdr_ext_len")
_V6_FRAG_ID = IPV6_FRAGMENT.accessor("identification")
_V6_EXTENSIONS = frozenset((IpProto.HOPOPT, IpProto.ROUTING, IpProto.DSTOPTS))

FragmentKey = tuple[bytes, bytes, int, int]


def _fragment_key(buf: bytearray, info: FrameInfo) -> FragmentKey | None:
    """(source, destination, protocol, identification) of a fragment's datagram."""
    l3 = info.l3
    if info.ip_version == 4:
        return (info.src, info.dst, info.proto, _V4_ID.read_int(buf, l3))
    # RFC 8200 §4.5: the identification is in the fragment header, after any
    # hop-by-hop, routing or destination options headers (the parser walked
    # the same chain, so it is well formed).
    next_header, p = buf[l3 + _V6_NEXT_AT], l3 + IPV6.size
    for _ in range(9):
        if next_header == IpProto.FRAGMENT:
            return (info.src, info.dst, info.proto, _V6_FRAG_ID.read_int(buf, p))
        if next_header not in _V6_EXTENSIONS or p + 2 > info.end:
            return None
        next_header, p = buf[p], p + (_EXT_LEN.read_int(buf, p) + 1) * 8
    return None


class _Fragments:
    """Verdicts of first fragments, for the later fragments of the same datagram."""

    __slots__ = ("_verdicts",)

    def __init__(self) -> None:
        # Insertion order is deadline order: every entry lives FRAGMENT_TIMEOUT.
        self._verdicts: dict[FragmentKey, tuple[float, bool]] = {}

    def remember(self, key: FragmentKey, accepted: bool, now: float) -> None:
        verdicts = self._verdicts
        verdicts.pop(key, None)
        if len(verdicts) >= FRAGMENT_LIMIT:
            del verdicts[next(iter(verdicts))]
        verdicts[key] = (now + FRAGMENT_TIMEOUT, accepted)

    def accepted(self, key: FragmentKey) -> bool | None:
        entry = self._verdicts.get(key)
        return None if entry is None else entry[1]

    def next_deadline(self) -> float | None:
        verdicts = self._verdicts
        return verdicts[next(iter(verdicts))][0] if verdicts else None

    def expire(self, now: float) -> None:
        verdicts = self._verdicts
        while verdicts:
            key = next(iter(verdicts))
            if verdicts[key][0] > now:
                break
            del verdicts[key]


# -- the function ------------------------------------------------------------------

_STATE_COUNTERS = {state: "state-" + state.value for state in ConnState}
_STATES = {
    ConnState.NEW: "a connection's packets before anything came back",
    ConnState.ESTABLISHED: "packets of a connection whose other end has answered",
    ConnState.RELATED: "ICMP errors about a tracked connection, travelling back to its sender",
    ConnState.INVALID: "packets that fit no connection (impossible TCP flags, a segment "
    "without its connection, an unasked echo reply)",
    ConnState.UNTRACKED: "ICMP that is neither a query nor an error (neighbour discovery, MLD)",
}


class Firewall(Function[FirewallConfig]):
    """The stateful firewall (see the module docstring)."""

    KIND: ClassVar[str] = "firewall"
    Config: ClassVar[type[Any]] = FirewallConfig
    LIVE: ClassVar[bool] = True
    INTERFACES: ClassVar[tuple[str, ...]] = ("ingress", "egress")
    UNKNOWN_INTERFACE: ClassVar[str] = FirewallDrop.UNKNOWN_INTERFACE.counter
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "accepted": "packets forwarded",
        "rejected": "rejected packets that were answered (a RST or an ICMP unreachable)",
        **{reason.counter: _DROPS[reason] for reason in FirewallDrop},
        "reject-tcp-reset": "answers that were a TCP RST",
        "reject-icmp": "answers that were an ICMP or ICMPv6 unreachable",
        "non-ip-passed": "frames that are not IP, passed without judging",
        "fragments-passed": "later fragments passed on their first fragment's verdict",
        **{
            _STATE_COUNTERS[state]: f"packets judged {state.value}: {what}"
            for state, what in _STATES.items()
        },
        "conn-new": "connections entered in the table",
        "conn-expired": "connections expired for idleness",
        "conn-evicted": "unanswered connections evicted to make room",
        "leases-granted": "fast-path leases given to established connections",
        "leases-revoked": "leases revoked (the connection closed or expired, or new rules "
        "judge it differently)",
    }

    def __init__(self, config: FirewallConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._directions = {
            self.INTERFACES[0]: Direction.INGRESS,
            self.INTERFACES[1]: Direction.EGRESS,
        }
        self._tracker = Tracker(
            cfg.timeouts,
            cfg.max_connections,
            pickup=cfg.tcp_pickup,
            release=self._release,
            counters=self.counters,
        )
        self._fragments = _Fragments()
        self._bucket: TokenBucket | None = None  # made by the first reject
        self._rules: tuple[Rule, ...] = ()
        self._stateful = False
        """Whether any rule matches on connection state (see _lease)."""
        self._matchers: list[_Matcher] = []
        # Per rule, then the default last: packets and bytes judged here (the
        # fast path's are added from the leases, see _harvest).
        self._packets: list[int] = [0]
        self._bytes: list[int] = [0]
        self._compile(cfg)

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None = None) -> Self:
        return super().from_config(_one_as_list(data))

    def reconfigure(self, data: Mapping[str, Any]) -> None:
        super().reconfigure(_one_as_list(data) or {})

    # -- packets -------------------------------------------------------------

    def process(self, packet: Packet, now: float) -> Result:
        info = packet.info
        if info.error is not None:
            return self._drop(FirewallDrop.MALFORMED)
        direction = self._directions[packet.iface]
        if not info.ip_version:
            if self.config.non_ip is NonIp.ACCEPT:
                self.counters["non-ip-passed"] += 1
                return forward()
            return self._drop(FirewallDrop.NON_IP)
        buf = packet.buf
        fragment = _fragment_key(buf, info) if info.fragment else None
        if info.l4 < 0 and info.fragment:
            return self._later_fragment(fragment)
        tracking = self._tracker.classify(buf, info)
        self.counters[_STATE_COUNTERS[tracking.state]] += 1
        icmp_type = icmp_code = -1
        if (info.proto == _ICMP and info.ip_version == 4) or (
            info.proto == _ICMPV6 and info.ip_version == 6
        ):
            # Only ICMP of its own IP version has a type and code the codec
            # checked are there: protocol 1 in IPv6 (or 58 in IPv4) is some
            # other protocol, and may end where its header would begin.
            icmp_type, icmp_code = buf[info.l4], buf[info.l4 + 1]
        facts = _Facts(
            direction,
            info.ip_version,
            int.from_bytes(info.src, "big"),
            int.from_bytes(info.dst, "big"),
            info.proto,
            info.sport,
            info.dport,
            icmp_type,
            icmp_code,
            tracking.state,
        )
        index = self._judge(facts)
        size = len(packet)
        self._packets[index] += 1
        self._bytes[index] += size
        action, reject_with = self._action(index)
        if action is Action.ACCEPT:
            conn = self._tracker.commit(tracking, info, packet.iface, size, now)
            if conn is None and tracking.opens:
                if fragment is not None:
                    self._fragments.remember(fragment, False, now)
                return self._drop(FirewallDrop.TABLE_FULL)
            self.counters["accepted"] += 1
            if fragment is not None:
                self._fragments.remember(fragment, True, now)
                return forward()  # fragments always come here: no lease
            lease = None if conn is None else self._lease(conn, tracking, index)
            return forward(lease=lease)
        if fragment is not None:
            self._fragments.remember(fragment, False, now)
        if action is Action.DROP:
            return self._drop(
                FirewallDrop.POLICY if index == len(self._matchers) else FirewallDrop.RULE
            )
        return self._reject(packet, reject_with, now)

    def _later_fragment(self, key: FragmentKey | None) -> Result:
        accepted = None if key is None else self._fragments.accepted(key)
        if not accepted:
            return self._drop(FirewallDrop.FRAGMENT)
        self.counters["fragments-passed"] += 1
        return forward()

    def _judge(self, facts: _Facts) -> int:
        """Index of the first rule ``facts`` match; ``len(rules)`` for the default."""
        for index, matcher in enumerate(self._matchers):
            if matcher.matches(facts):
                return index
        return len(self._matchers)

    def _action(self, index: int) -> tuple[Action, RejectWith]:
        if index < len(self._matchers):
            matcher = self._matchers[index]
            return matcher.action, matcher.reject_with
        return self.config.default, self.config.reject_with

    def _drop(self, reason: FirewallDrop) -> Result:
        return drop(reason.counter)

    def _reject(self, packet: Packet, kind: RejectWith, now: float) -> Result:
        buf, info = packet.buf, packet.info
        if not reply_allowed(buf, info):
            return self._drop(FirewallDrop.REJECT_SUPPRESSED)
        bucket = self._bucket
        if bucket is None:
            from pktchain.functions.common.icmp import TokenBucket

            bucket = self._bucket = TokenBucket(self.config.reject_rate, self.config.reject_burst)
        if not bucket.take(now):
            return self._drop(FirewallDrop.REJECT_RATE_LIMIT)
        if info.proto == _TCP:
            self.counters["reject-tcp-reset"] += 1
            return reply(packet, tcp_reset(buf, info), reason="rejected")
        self.counters["reject-icmp"] += 1
        return reply(packet, icmp_unreachable(buf, info, kind), reason="rejected")

    # -- leases --------------------------------------------------------------

    def _lease(self, conn: Connection, tracking: Tracking, index: int) -> FlowLease | None:
        """The connection's lease for an accepted packet, if the fast path may carry it.

        A connection is leased once the other end has answered, and TCP only in
        the states where data flows. Except when no rule looks at connection
        state: then no later packet of a UDP or ICMP flow can be judged
        differently until the rules change, so the flow is leased from its
        first packet (a one-way stream rides the fast path too).
        """
        stateless = conn.tcp is None and not self._stateful
        if not stateless and (tracking.state is not ConnState.ESTABLISHED or not conn.replied):
            return None
        if conn.tcp is not None and conn.tcp not in LEASABLE_TCP_STATES:
            return None
        lease = conn.lease
        if lease is None:
            lease = conn.lease = FlowLease()
            conn.lease_rule = index
            self.counters["leases-granted"] += 1
        conn.leased |= 2 if tracking.reply else 1
        return lease

    def _harvest(self, conn: Connection) -> None:
        """Move what the fast path counted on the lease to the connection and its rule."""
        lease = conn.lease
        if lease is None:
            return
        packets = lease.packets - conn.lease_packets
        octets = lease.bytes - conn.lease_bytes
        conn.lease_packets, conn.lease_bytes = lease.packets, lease.bytes
        conn.packets += packets
        conn.bytes += octets
        conn.last_seen = max(conn.last_seen, lease.seen)
        if 0 <= conn.lease_rule < len(self._packets):
            self._packets[conn.lease_rule] += packets
            self._bytes[conn.lease_rule] += octets

    def _release(self, conn: Connection) -> None:
        """End a connection's lease: its later packets come through the firewall again."""
        lease = conn.lease
        if lease is None:
            return
        self._harvest(conn)
        conn.lease = None
        conn.leased = 0
        conn.lease_packets = conn.lease_bytes = 0
        self.counters["leases-revoked"] += 1
        lease.revoke()

    # -- timers --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (self._tracker.next_deadline(), self._fragments.next_deadline())
            if d is not None
        ]
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        self._tracker.expire(now)
        self._fragments.expire(now)
        return []

    # -- configuration -------------------------------------------------------

    def apply_config(self, config: FirewallConfig) -> None:
        """Take new rules and settings; revoke the leases the new rules judge differently."""
        old = self.config
        for conn in self._tracker.connections():
            self._harvest(conn)  # fast-path counts so far belong to the old rules
        self.config = config
        tracker = self._tracker
        tracker.limit = config.max_connections
        tracker.pickup = config.tcp_pickup
        if config.timeouts != old.timeouts:
            tracker.timeouts = config.timeouts
            tracker.refile_all()
        if (config.reject_rate, config.reject_burst) != (old.reject_rate, old.reject_burst):
            self._bucket = None
        self._compile(config)
        for conn in list(tracker.connections()):
            if conn.lease is not None:
                self._judge_again(conn)

    def _judge_again(self, conn: Connection) -> None:
        """Keep a connection's lease only if the rules accept each leased direction."""
        rule = -1
        for bit, reply_direction in ((1, False), (2, True)):
            if not conn.leased & bit:
                continue
            index = self._judge(self._connection_facts(conn, reply_direction))
            if self._action(index)[0] is not Action.ACCEPT:
                self._release(conn)
                return
            if rule < 0:
                rule = index
        conn.lease_rule = rule

    def _connection_facts(self, conn: Connection, reply_direction: bool) -> _Facts:
        key: FlowTuple = conn.reply_key if reply_direction else conn.key
        first, second = self.INTERFACES
        came_in = conn.iface if not reply_direction else (second if conn.iface == first else first)
        # Echo: requests one way, replies the other (RFC 792, RFC 4443 §4).
        icmp_type = conn.echo_reply_type if reply_direction else conn.echo_type
        return _Facts(
            self._directions.get(came_in, Direction.INGRESS),
            4 if len(key[0]) == 4 else 6,
            int.from_bytes(key[0], "big"),
            int.from_bytes(key[1], "big"),
            key[2],
            key[3],
            key[4],
            icmp_type,
            0 if icmp_type >= 0 else -1,
            ConnState.ESTABLISHED,
        )

    def _compile(self, config: FirewallConfig) -> None:
        """Build the matchers; a rule kept from the old list keeps its counters."""
        carried: dict[tuple[Rule, int], tuple[int, int]] = {}
        seen: dict[Rule, int] = {}
        for index, rule in enumerate(self._rules):
            nth = seen[rule] = seen.get(rule, -1) + 1
            carried[rule, nth] = (self._packets[index], self._bytes[index])
        packets: list[int] = []
        octets: list[int] = []
        seen = {}
        for rule in config.rules:
            nth = seen[rule] = seen.get(rule, -1) + 1
            kept = carried.get((rule, nth), (0, 0))
            packets.append(kept[0])
            octets.append(kept[1])
        packets.append(self._packets[-1])
        octets.append(self._bytes[-1])
        self._rules = config.rules
        self._matchers = [_Matcher(rule, config.reject_with) for rule in config.rules]
        self._stateful = any(rule.state for rule in config.rules)
        self._packets, self._bytes = packets, octets

    # -- status --------------------------------------------------------------

    def tables(self) -> dict[str, TableSize]:
        return {"connections": TableSize(len(self._tracker), self.config.max_connections)}

    def status(self) -> dict[str, Any]:
        tracker = self._tracker
        for conn in tracker.connections():
            self._harvest(conn)
        shown: list[dict[str, Any]] = []
        limit = self.config.status_connections
        for conn in tracker.connections():
            if len(shown) >= limit:
                break
            shown.append(self._connection_view(conn))
        return {
            **super().status(),
            "rules": [
                {
                    "index": index,
                    **_rule_view(rule),
                    "packets": self._packets[index],
                    "bytes": self._bytes[index],
                }
                for index, rule in enumerate(self._rules)
            ],
            "default": {
                "action": self.config.default.value,
                "packets": self._packets[-1],
                "bytes": self._bytes[-1],
            },
            "connection_count": len(tracker),
            "max_connections": tracker.limit,
            "connections": shown,
        }

    def _connection_view(self, conn: Connection) -> dict[str, Any]:
        src, dst, proto, sport, dport = conn.key
        if conn.tcp is not None:
            state = conn.tcp.value
        else:
            state = "replied" if conn.replied else "unreplied"
        return {
            "protocol": protocol_name(proto),
            "source": format_ip(src),
            "sport": sport,
            "destination": format_ip(dst),
            "dport": dport,
            "interface": conn.iface,
            "state": state,
            "packets": conn.packets,
            "bytes": conn.bytes,
            "leased": conn.lease is not None,
            # Unix times: `now` is monotonic, `clock_offset` dates it.
            "last_seen": round(conn.last_active + self.clock_offset, 3),
            "expires": round(conn.last_active + self._tracker.timeout(conn) + self.clock_offset, 3),
        }


def _rule_view(rule: Rule) -> dict[str, Any]:
    """The rule's fields that are set, as plain data."""
    view: dict[str, Any] = {}
    for spec in fields(rule):
        value = getattr(rule, spec.name)
        if spec.name != "action" and value in ((), None, "", Direction.ANY):
            continue
        view[spec.name] = _plain(value)
    return view


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    return value
