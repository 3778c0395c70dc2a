"""Connection tracking for the firewall: one TCP state table, query flows, related ICMP errors.

The firewall judges each packet with the *connection state* it has (what a
rule's ``state`` matches, as in Linux conntrack and nftables ``ct state``):

* ``new``: the first packets of a connection, before anything came back;
* ``established``: a packet of a connection whose other end has answered (the
  answer itself included);
* ``related``: an ICMP or ICMPv6 error whose embedded header belongs to a
  tracked connection, sent toward the host that sent the offending packet;
* ``invalid``: a packet that cannot belong to a connection: a TCP segment with
  impossible control bits, a TCP segment other than a SYN without a
  connection, a segment that does not fit the connection's state, an echo
  reply nobody asked for, an error about nothing tracked;
* ``untracked``: ICMP messages that are neither queries nor errors (IPv6
  neighbour discovery, router advertisements, MLD).

TCP is tracked without windows ("loose"): only the control bits move a
connection, through :data:`TCP_TRANSITIONS` below, the one table of TCP states
with the RFC 9293 section each row follows. UDP, ICMP echo and other protocols
have two states, unanswered and answered. Each state has an idle timeout
(:class:`Timeouts`); the table has a size limit, and when it is full the oldest
unanswered connection makes room (answered ones are never evicted).

The :class:`Tracker` is sans-IO: :meth:`Tracker.classify` looks a packet up
without changing anything, and :meth:`Tracker.commit` applies what the packet
does once the firewall has accepted it, so that a dropped packet moves no
state (the host behind the firewall never saw it). Timers are lazy: a packet
only stamps ``last_seen``; :meth:`Tracker.expire` files a connection again when
it finds it still busy. A connection's fast-path lease (the firewall's) counts
as activity through ``lease.seen``.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from pktchain.functions.sdk import Deadlines, FlowLease
from pktchain.functions.sdk.schema import check
from pktchain.packet.headers import (
    ICMP,
    IPV6,
    IPV6_EXTENSION,
    IPV6_FRAGMENT,
    IcmpType,
    Icmpv6Type,
    IpProto,
    TcpFlag,
)
from pktchain.packet.parse import FrameInfo

__all__ = [
    "TCP_TRANSITIONS",
    "ConnState",
    "Connection",
    "ConntrackTcpState",
    "FlowTuple",
    "Segment",
    "TcpEvent",
    "Timeouts",
    "Tracker",
    "Tracking",
    "embedded_flow",
    "segment_of",
]

FlowTuple = tuple[bytes, bytes, int, int, int]
"""(source address, destination address, protocol, source port, destination port);
the ports are the identifier for ICMP echo and 0 for protocols without ports."""


class ConnState(Enum):
    """The state a packet has with respect to the tracked connections (rules match it)."""

    NEW = "new"
    ESTABLISHED = "established"
    RELATED = "related"
    INVALID = "invalid"
    UNTRACKED = "untracked"


class ConntrackTcpState(Enum):
    """Where a tracked TCP connection is, as seen from the middle of the path.

    "Original" is the side that sent the first SYN, "reply" the other side.
    """

    SYN_SENT = "syn-sent"  # the original SYN went through
    SYN_SENT2 = "syn-sent2"  # both sides sent a SYN (simultaneous open)
    SYN_RECEIVED = "syn-received"  # a SYN-ACK went through
    ESTABLISHED = "established"
    FIN_ORIGINAL = "fin-original"  # the original side closed (it sent FIN)
    FIN_REPLY = "fin-reply"  # the reply side closed
    FIN_BOTH = "fin-both"  # both sent FIN; waiting for the last ACK
    TIME_WAIT = "time-wait"  # the last ACK went through
    CLOSED = "closed"  # a RST went through


class Segment(Enum):
    """A TCP segment by the control bits that matter to tracking."""

    SYN = "syn"
    SYN_ACK = "syn-ack"
    ACK = "ack"  # no SYN, FIN or RST: data or a bare acknowledgement
    FIN = "fin"
    RST = "rst"


class TcpEvent(Enum):
    """A segment and its direction (original or reply)."""

    ORIG_SYN = "orig-syn"
    ORIG_SYN_ACK = "orig-syn-ack"
    ORIG_ACK = "orig-ack"
    ORIG_FIN = "orig-fin"
    ORIG_RST = "orig-rst"
    REPLY_SYN = "reply-syn"
    REPLY_SYN_ACK = "reply-syn-ack"
    REPLY_ACK = "reply-ack"
    REPLY_FIN = "reply-fin"
    REPLY_RST = "reply-rst"


_S = ConntrackTcpState
_E = TcpEvent

# RFC 9293, one row per (state, event) that a connection may see. The value is
# the next state, or None when the segment (a SYN) starts a new connection on
# the same 4-tuple. Pairs not listed are invalid: the segment does not fit the
# connection, and the state does not move.
TCP_TRANSITIONS: dict[tuple[ConntrackTcpState, TcpEvent], ConntrackTcpState | None] = {
    # §3.5 figure 6, three-way handshake: SYN, then SYN-ACK from the other side.
    (_S.SYN_SENT, _E.ORIG_SYN): _S.SYN_SENT,  # retransmitted SYN (§3.8.1)
    (_S.SYN_SENT, _E.REPLY_SYN_ACK): _S.SYN_RECEIVED,
    # §3.5 figure 7, simultaneous open: each side sends a SYN, then a SYN-ACK.
    (_S.SYN_SENT, _E.REPLY_SYN): _S.SYN_SENT2,
    (_S.SYN_SENT2, _E.ORIG_SYN): _S.SYN_SENT2,
    (_S.SYN_SENT2, _E.REPLY_SYN): _S.SYN_SENT2,
    (_S.SYN_SENT2, _E.ORIG_SYN_ACK): _S.SYN_RECEIVED,
    (_S.SYN_SENT2, _E.REPLY_SYN_ACK): _S.SYN_RECEIVED,
    # §3.10.7.3: a RST that answers a SYN refuses the connection; either side
    # may also abort the attempt (§3.10.4 ABORT).
    (_S.SYN_SENT, _E.ORIG_RST): _S.CLOSED,
    (_S.SYN_SENT, _E.REPLY_RST): _S.CLOSED,
    (_S.SYN_SENT2, _E.ORIG_RST): _S.CLOSED,
    (_S.SYN_SENT2, _E.REPLY_RST): _S.CLOSED,
    # SYN-RECEIVED: the original side's ACK completes the handshake (figure 6
    # line 4); SYNs and SYN-ACKs seen again are retransmissions (§3.8.1).
    (_S.SYN_RECEIVED, _E.ORIG_ACK): _S.ESTABLISHED,
    (_S.SYN_RECEIVED, _E.REPLY_ACK): _S.SYN_RECEIVED,
    (_S.SYN_RECEIVED, _E.ORIG_SYN): _S.SYN_RECEIVED,
    (_S.SYN_RECEIVED, _E.ORIG_SYN_ACK): _S.SYN_RECEIVED,
    (_S.SYN_RECEIVED, _E.REPLY_SYN_ACK): _S.SYN_RECEIVED,
    # §3.10.7.4 "eighth, check the FIN bit": a FIN in SYN-RECEIVED closes
    # (CLOSE-WAIT); §3.10.4 CLOSE in SYN-RECEIVED sends a FIN (FIN-WAIT-1).
    (_S.SYN_RECEIVED, _E.ORIG_FIN): _S.FIN_ORIGINAL,
    (_S.SYN_RECEIVED, _E.REPLY_FIN): _S.FIN_REPLY,
    (_S.SYN_RECEIVED, _E.ORIG_RST): _S.CLOSED,
    (_S.SYN_RECEIVED, _E.REPLY_RST): _S.CLOSED,
    # ESTABLISHED: data both ways. A SYN-ACK again is a retransmission whose
    # ACK got lost (§3.8.1); a SYN is not: a synchronized connection answers it
    # with a challenge ACK (§3.10.7.4 "fourth", RFC 5961 §4), so it is invalid.
    (_S.ESTABLISHED, _E.ORIG_ACK): _S.ESTABLISHED,
    (_S.ESTABLISHED, _E.REPLY_ACK): _S.ESTABLISHED,
    (_S.ESTABLISHED, _E.ORIG_SYN_ACK): _S.ESTABLISHED,
    (_S.ESTABLISHED, _E.REPLY_SYN_ACK): _S.ESTABLISHED,
    # §3.6 case 1: one side closes; the other may go on sending (half-close).
    (_S.ESTABLISHED, _E.ORIG_FIN): _S.FIN_ORIGINAL,
    (_S.ESTABLISHED, _E.REPLY_FIN): _S.FIN_REPLY,
    # §3.10.7.4 "second, check the RST bit": a RST in a synchronized state closes.
    (_S.ESTABLISHED, _E.ORIG_RST): _S.CLOSED,
    (_S.ESTABLISHED, _E.REPLY_RST): _S.CLOSED,
    # One FIN seen: data and ACKs go on, the FIN may be retransmitted, the
    # other side's FIN closes both directions (§3.6 cases 1 and 2).
    (_S.FIN_ORIGINAL, _E.ORIG_ACK): _S.FIN_ORIGINAL,
    (_S.FIN_ORIGINAL, _E.REPLY_ACK): _S.FIN_ORIGINAL,
    (_S.FIN_ORIGINAL, _E.ORIG_FIN): _S.FIN_ORIGINAL,
    (_S.FIN_ORIGINAL, _E.REPLY_FIN): _S.FIN_BOTH,
    (_S.FIN_ORIGINAL, _E.ORIG_RST): _S.CLOSED,
    (_S.FIN_ORIGINAL, _E.REPLY_RST): _S.CLOSED,
    (_S.FIN_REPLY, _E.ORIG_ACK): _S.FIN_REPLY,
    (_S.FIN_REPLY, _E.REPLY_ACK): _S.FIN_REPLY,
    (_S.FIN_REPLY, _E.REPLY_FIN): _S.FIN_REPLY,
    (_S.FIN_REPLY, _E.ORIG_FIN): _S.FIN_BOTH,
    (_S.FIN_REPLY, _E.ORIG_RST): _S.CLOSED,
    (_S.FIN_REPLY, _E.REPLY_RST): _S.CLOSED,
    # Both FINs seen (LAST-ACK / CLOSING): the ACK of the second FIN ends the
    # exchange (§3.6); the closer that sent it waits in TIME-WAIT (§3.6.1).
    (_S.FIN_BOTH, _E.ORIG_ACK): _S.TIME_WAIT,
    (_S.FIN_BOTH, _E.REPLY_ACK): _S.TIME_WAIT,
    (_S.FIN_BOTH, _E.ORIG_FIN): _S.FIN_BOTH,
    (_S.FIN_BOTH, _E.REPLY_FIN): _S.FIN_BOTH,
    (_S.FIN_BOTH, _E.ORIG_RST): _S.CLOSED,
    (_S.FIN_BOTH, _E.REPLY_RST): _S.CLOSED,
    # TIME-WAIT: retransmitted FINs and ACKs (§3.10.7.4 TIME-WAIT rows); a new
    # SYN may start the next incarnation of the connection (§3.6.1, RFC 6191).
    (_S.TIME_WAIT, _E.ORIG_ACK): _S.TIME_WAIT,
    (_S.TIME_WAIT, _E.REPLY_ACK): _S.TIME_WAIT,
    (_S.TIME_WAIT, _E.ORIG_FIN): _S.TIME_WAIT,
    (_S.TIME_WAIT, _E.REPLY_FIN): _S.TIME_WAIT,
    (_S.TIME_WAIT, _E.ORIG_RST): _S.CLOSED,
    (_S.TIME_WAIT, _E.REPLY_RST): _S.CLOSED,
    (_S.TIME_WAIT, _E.ORIG_SYN): None,
    (_S.TIME_WAIT, _E.REPLY_SYN): None,
    # CLOSED after a RST: segments already in flight still pass as part of the
    # connection; a SYN starts a new one.
    (_S.CLOSED, _E.ORIG_ACK): _S.CLOSED,
    (_S.CLOSED, _E.REPLY_ACK): _S.CLOSED,
    (_S.CLOSED, _E.ORIG_FIN): _S.CLOSED,
    (_S.CLOSED, _E.REPLY_FIN): _S.CLOSED,
    (_S.CLOSED, _E.ORIG_RST): _S.CLOSED,
    (_S.CLOSED, _E.REPLY_RST): _S.CLOSED,
    (_S.CLOSED, _E.ORIG_SYN): None,
    (_S.CLOSED, _E.REPLY_SYN): None,
}

LEASABLE_TCP_STATES = frozenset(
    (ConntrackTcpState.ESTABLISHED, ConntrackTcpState.FIN_ORIGINAL, ConntrackTcpState.FIN_REPLY)
)
"""TCP states in which the fast path may carry the connection: data flows, and
the segments that move the state (SYN, FIN, RST) reach the firewall anyway.
After the second FIN the last ACK must be seen, so the lease ends there."""

_EVENTS = {
    (segment, reply): TcpEvent[("REPLY_" if reply else "ORIG_") + segment.name]
    for segment in Segment
    for reply in (False, True)
}

_FIN = int(TcpFlag.FIN)
_SYN = int(TcpFlag.SYN)
_RST = int(TcpFlag.RST)
_ACK = int(TcpFlag.ACK)
_CONTROL = _FIN | _SYN | _RST | _ACK

# RFC 9293 §3.1 / §3.10.7: the combinations of SYN, FIN, RST and ACK a TCP sends
# (PSH, URG, ECE and CWR do not change what a segment is). Anything else (SYN
# with FIN or RST, FIN without ACK, no control bit at all) is a scan or
# garbage, never part of a connection.
_SEGMENTS: dict[int, Segment] = {
    _SYN: Segment.SYN,
    _SYN | _ACK: Segment.SYN_ACK,
    _ACK: Segment.ACK,
    _FIN | _ACK: Segment.FIN,
    _RST: Segment.RST,
    _RST | _ACK: Segment.RST,
}


def segment_of(flags: int) -> Segment | None:
    """What a TCP segment with control bits ``flags`` is; None for an impossible combination."""
    return _SEGMENTS.get(flags & _CONTROL)


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be more than 0 s"


def _timeout(default: float, help_text: str) -> float:
    return field(default=default, metadata=check(test=_positive, help=help_text))


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Idle timeouts per connection state, in seconds (of the ``now`` the firewall gets)."""

    tcp_syn_sent: float = _timeout(
        120.0, "after a SYN (and a simultaneous open's), until a SYN-ACK answers"
    )
    tcp_syn_received: float = _timeout(60.0, "after a SYN-ACK, until the handshake's ACK")
    tcp_established: float = _timeout(
        7440.0, "established; 2 h 4 min, the floor RFC 5382 REQ-5 sets for middleboxes"
    )
    tcp_fin_wait: float = _timeout(120.0, "after one side's FIN (the other may still send)")
    tcp_closing: float = _timeout(30.0, "after both FINs, until the last ACK")
    tcp_time_wait: float = _timeout(120.0, "after the last ACK (RFC 9293 §3.6.1 TIME-WAIT)")
    tcp_closed: float = _timeout(10.0, "after a RST")
    udp: float = _timeout(30.0, "UDP, nothing answered yet")
    udp_replied: float = _timeout(120.0, "UDP, answered (RFC 4787 REQ-5: at least 2 min)")
    icmp: float = _timeout(30.0, "ICMP/ICMPv6 echo")
    other: float = _timeout(600.0, "other IP protocols (GRE, ESP, SCTP, ...)")

    def for_tcp(self, state: ConntrackTcpState) -> float:
        """The idle timeout of a TCP connection in ``state``."""
        return {
            ConntrackTcpState.SYN_SENT: self.tcp_syn_sent,
            ConntrackTcpState.SYN_SENT2: self.tcp_syn_sent,
            ConntrackTcpState.SYN_RECEIVED: self.tcp_syn_received,
            ConntrackTcpState.ESTABLISHED: self.tcp_established,
            ConntrackTcpState.FIN_ORIGINAL: self.tcp_fin_wait,
            ConntrackTcpState.FIN_REPLY: self.tcp_fin_wait,
            ConntrackTcpState.FIN_BOTH: self.tcp_closing,
            ConntrackTcpState.TIME_WAIT: self.tcp_time_wait,
            ConntrackTcpState.CLOSED: self.tcp_closed,
        }[state]


_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ICMPV6 = int(IpProto.ICMPV6)
_ECHO_REQUEST = {4: int(IcmpType.ECHO_REQUEST), 6: int(Icmpv6Type.ECHO_REQUEST)}
_ECHO_REPLY = {4: int(IcmpType.ECHO_REPLY), 6: int(Icmpv6Type.ECHO_REPLY)}
_ICMPV6_ERRORS = frozenset(
    (
        Icmpv6Type.DEST_UNREACHABLE,
        Icmpv6Type.PACKET_TOO_BIG,
        Icmpv6Type.TIME_EXCEEDED,
        Icmpv6Type.PARAMETER_PROBLEM,
    )
)
"""ICMPv6 error messages (RFC 4443 §2.1: types 0-127; these four are defined)."""


def icmp_error_type(version: int, icmp_type: int) -> bool:
    """Whether an ICMP (v4) or ICMPv6 type is an error message."""
    if version == 4:
        # Imported here: the router's ICMP module brings the frame builders,
        # which `pktchain fn firewall` need not load to start.
        from pktchain.functions.common.icmp import ICMP_ERROR_TYPES

        return icmp_type in ICMP_ERROR_TYPES
    return icmp_type in _ICMPV6_ERRORS


class Connection:
    """One tracked connection; both of its directions find it in the table.

    ``key`` is the 5-tuple of its first packet (the original direction) and
    ``reply_key`` the one of the answers. ``packets``/``bytes`` count what the
    firewall saw itself; the lease counts what the fast path carried.
    """

    __slots__ = (
        "bytes",
        "created",
        "echo_reply_type",
        "echo_type",
        "iface",
        "key",
        "last_seen",
        "lease",
        "lease_bytes",
        "lease_packets",
        "lease_rule",
        "leased",
        "packets",
        "removed",
        "replied",
        "reply_key",
        "tcp",
    )

    def __init__(
        self, key: FlowTuple, iface: str, tcp: ConntrackTcpState | None, now: float
    ) -> None:
        self.key = key
        self.reply_key: FlowTuple = (key[1], key[0], key[2], key[4], key[3])
        self.iface = iface
        """Interface the original direction came in on."""
        self.tcp = tcp
        self.replied = False
        self.created = now
        self.last_seen = now
        self.packets = 0
        self.bytes = 0
        self.lease: FlowLease | None = None
        self.lease_rule = -1
        """The rule that accepted the packet the lease was first given with."""
        self.lease_packets = 0
        self.lease_bytes = 0
        """What of the lease's counts was already added to ``packets``/``bytes``."""
        self.leased = 0
        """Directions the lease was given for: bit 0 original, bit 1 reply."""
        self.echo_type = -1
        """ICMP/ICMPv6 type of the original direction's queries, -1 if not ICMP."""
        self.echo_reply_type = -1
        """ICMP/ICMPv6 type of the answers, -1 if not ICMP."""
        self.removed = False

    @property
    def last_active(self) -> float:
        """The last packet of either direction, the fast path's included."""
        lease = self.lease
        if lease is not None and lease.seen > self.last_seen:
            return lease.seen
        return self.last_seen

    def __repr__(self) -> str:
        state = self.tcp.value if self.tcp is not None else ("replied" if self.replied else "new")
        return f"Connection({self.key!r}, {state})"


class Tracking(NamedTuple):
    """What :meth:`Tracker.classify` found for one packet (nothing changed yet)."""

    state: ConnState
    connection: Connection | None
    """The connection the packet belongs to (for ``related``: the one its error is about)."""
    reply: bool
    """The packet travels in the connection's reply direction."""
    tcp: ConntrackTcpState | None
    """TCP: the state accepting the packet moves the connection to."""
    opens: bool
    """Accepting the packet creates a connection (replacing ``connection`` if set)."""


_INVALID = Tracking(ConnState.INVALID, None, False, None, False)
_UNTRACKED = Tracking(ConnState.UNTRACKED, None, False, None, False)
_NEW_QUERY = Tracking(ConnState.NEW, None, False, None, True)
_NEW_TCP = Tracking(ConnState.NEW, None, False, ConntrackTcpState.SYN_SENT, True)
_PICKUP = Tracking(ConnState.NEW, None, False, ConntrackTcpState.ESTABLISHED, True)


class Tracker:
    """The connection table: classify packets, commit accepted ones, expire idle ones.

    ``release`` is called with a connection whose fast-path lease must end: the
    connection is removed (expired, evicted, replaced) or its TCP state left
    :data:`LEASABLE_TCP_STATES`. ``counters`` receives ``conn-*`` counts.
    """

    def __init__(
        self,
        timeouts: Timeouts,
        limit: int,
        *,
        pickup: bool,
        release: Callable[[Connection], None],
        counters: Counter[str],
    ) -> None:
        self.timeouts = timeouts
        self.limit = limit
        self.pickup = pickup
        self._release = release
        self._counters = counters
        self._table: dict[FlowTuple, Connection] = {}
        self._count = 0
        # Connections nobody answered yet, oldest first: the ones a full table evicts.
        self._unreplied: dict[Connection, None] = {}
        self._deadlines: Deadlines[Connection] = Deadlines()

    def __len__(self) -> int:
        return self._count

    def connections(self) -> Iterator[Connection]:
        """Every tracked connection, oldest first."""
        for key, conn in self._table.items():
            if key is conn.key:  # each connection once: under its original key
                yield conn

    def get(self, key: FlowTuple) -> Connection | None:
        """The connection either of whose directions has 5-tuple ``key``."""
        return self._table.get(key)

    # -- classification (no side effects) ------------------------------------

    def classify(self, buf: bytes | bytearray, info: FrameInfo) -> Tracking:
        """The connection state of the parsed IP packet ``info`` in ``buf``."""
        key: FlowTuple = (info.src, info.dst, info.proto, info.sport, info.dport)
        proto = info.proto
        if proto == _TCP:
            return self._classify_tcp(key, info.tcp_flags)
        if (proto == _ICMP and info.ip_version == 4) or (proto == _ICMPV6 and info.ip_version == 6):
            return self._classify_icmp(buf, info, key)
        conn = self._table.get(key)
        if conn is None:
            return _NEW_QUERY
        reply = key != conn.key
        return Tracking(_answered(conn, reply), conn, reply, None, False)

    def _classify_tcp(self, key: FlowTuple, flags: int) -> Tracking:
        segment = segment_of(flags)
        if segment is None:
            return _INVALID
        conn = self._table.get(key)
        if conn is None or conn.tcp is None:
            if segment is Segment.SYN:
                return _NEW_TCP
            if segment is Segment.ACK and self.pickup:
                return _PICKUP  # a connection already open when tracking started
            return _INVALID  # only a SYN opens a connection (RFC 9293 §3.5)
        reply = key == conn.reply_key and key != conn.key
        event = _EVENTS[segment, reply]
        if (conn.tcp, event) not in TCP_TRANSITIONS:
            return Tracking(ConnState.INVALID, conn, reply, None, False)
        after = TCP_TRANSITIONS[conn.tcp, event]
        if after is None:
            # A new incarnation; it is oriented the way this SYN travels.
            return Tracking(ConnState.NEW, conn, False, ConntrackTcpState.SYN_SENT, True)
        return Tracking(_answered(conn, reply), conn, reply, after, False)

    def _classify_icmp(self, buf: bytes | bytearray, info: FrameInfo, key: FlowTuple) -> Tracking:
        version = info.ip_version
        icmp_type = buf[info.l4]
        if icmp_type == _ECHO_REQUEST[version]:
            conn = self._table.get(key)
            if conn is None:
                return _NEW_QUERY
            if key != conn.key:
                # The other end asks with the same identifier: a different query
                # that this table cannot tell apart from the tracked one.
                return Tracking(ConnState.INVALID, conn, True, None, False)
            return Tracking(_answered(conn, False), conn, False, None, False)
        if icmp_type == _ECHO_REPLY[version]:
            conn = self._table.get(key)
            if conn is None or key != conn.reply_key or key == conn.key:
                return _INVALID  # an answer to no tracked request
            return Tracking(ConnState.ESTABLISHED, conn, True, None, False)
        if icmp_error_type(version, icmp_type):
            embedded = embedded_flow(buf, info)
            if embedded is None:
                return _INVALID
            conn = self._table.get(embedded)
            # The error must travel back to the host that sent the offending
            # packet (RFC 792 / RFC 4443 §2.4): its destination is the embedded source.
            if conn is None or info.dst != embedded[0]:
                return _INVALID
            return Tracking(ConnState.RELATED, conn, embedded == conn.key, None, False)
        return _UNTRACKED

    # -- changes -------------------------------------------------------------

    def commit(
        self, tracking: Tracking, info: FrameInfo, iface: str, size: int, now: float
    ) -> Connection | None:
        """Apply an accepted packet; returns its connection (None: the table is full).

        ``tracking`` is what :meth:`classify` said for this packet. A related
        error or an untracked or invalid packet changes nothing.
        """
        state = tracking.state
        if state in (ConnState.RELATED, ConnState.UNTRACKED, ConnState.INVALID):
            return tracking.connection if state is ConnState.RELATED else None
        conn = tracking.connection
        if tracking.opens:
            if conn is not None:
                self.remove(conn)
            conn = self._open(info, iface, tracking.tcp, now)
            if conn is None:
                return None
        elif conn is None:  # pragma: no cover - classify never returns this
            return None
        conn.last_seen = now
        conn.packets += 1
        conn.bytes += size
        if tracking.reply and not conn.replied:
            conn.replied = True
            self._unreplied.pop(conn, None)
        if tracking.tcp is not None and conn.tcp is not tracking.tcp:
            conn.tcp = tracking.tcp
            if conn.lease is not None and tracking.tcp not in LEASABLE_TCP_STATES:
                self._release(conn)
        due = now + self.timeout(conn)
        filed = self._deadlines.get(conn)
        if filed is None or due < filed:
            self._deadlines.set(conn, due)
        return conn

    def _open(
        self, info: FrameInfo, iface: str, tcp: ConntrackTcpState | None, now: float
    ) -> Connection | None:
        if self._count >= self.limit:
            if not self._unreplied:
                return None
            # Like Linux's early drop: an unanswered connection (a scan, a
            # flood, a peer that is gone) makes room; answered ones are kept.
            oldest = next(iter(self._unreplied))
            self.remove(oldest)
            self._counters["conn-evicted"] += 1
        key: FlowTuple = (info.src, info.dst, info.proto, info.sport, info.dport)
        conn = Connection(key, iface, tcp, now)
        if (info.proto == _ICMP and info.ip_version == 4) or (
            info.proto == _ICMPV6 and info.ip_version == 6
        ):
            conn.echo_type = _ECHO_REQUEST[info.ip_version]
            conn.echo_reply_type = _ECHO_REPLY[info.ip_version]
        self._table[key] = conn
        self._table[conn.reply_key] = conn
        self._unreplied[conn] = None
        self._count += 1
        self._counters["conn-new"] += 1
        return conn

    def remove(self, conn: Connection) -> None:
        """Forget a connection (its lease is released first)."""
        if conn.removed:
            return
        if conn.lease is not None:
            self._release(conn)
        conn.removed = True
        self._deadlines.discard(conn)
        for key in (conn.key, conn.reply_key):
            if self._table.get(key) is conn:
                del self._table[key]
        self._unreplied.pop(conn, None)
        self._count -= 1

    # -- timers --------------------------------------------------------------

    def timeout(self, conn: Connection) -> float:
        """The idle timeout of ``conn`` in its present state."""
        timeouts = self.timeouts
        if conn.tcp is not None:
            return timeouts.for_tcp(conn.tcp)
        proto = conn.key[2]
        if proto == _UDP:
            return timeouts.udp_replied if conn.replied else timeouts.udp
        if proto in (_ICMP, _ICMPV6):
            return timeouts.icmp
        return timeouts.other

    def refile_all(self) -> None:
        """File every connection again (after the timeouts changed)."""
        deadlines = self._deadlines
        deadlines.clear()
        for conn in self.connections():
            deadlines.set(conn, conn.last_active + self.timeout(conn))

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to look at (None: no connection)."""
        return self._deadlines.next()

    def expire(self, now: float) -> list[Connection]:
        """Remove the connections idle for longer than their timeout; returns them."""
        expired: list[Connection] = []
        for conn in list(self._deadlines.pop_due(now)):
            # Activity on the fast path (lease.seen) counts: a busy cached
            # connection is filed again, not expired.
            actual = conn.last_active + self.timeout(conn)
            if actual <= now:
                self.remove(conn)
                expired.append(conn)
            else:
                self._deadlines.set(conn, actual)
        if expired:
            self._counters["conn-expired"] += len(expired)
        return expired


def _answered(conn: Connection, reply: bool) -> ConnState:
    """Established once the other end has answered; the answer itself included."""
    return ConnState.ESTABLISHED if reply or conn.replied else ConnState.NEW


# -- the flow an ICMP error is about ---------------------------------------------

_ICMP_SIZE = ICMP.size
_IPV6_SIZE = IPV6.size
_V6_NEXT_AT = IPV6.offset("next_header")
_V6_SRC_AT = IPV6.offset("src")
_V6_DST_AT = IPV6.offset("dst")
_EXT_LEN = IPV6_EXTENSION.accessor("hdr_ext_len")
_FRAGMENT_OFFSET = IPV6_FRAGMENT.accessor("fragment_offset")
_FRAGMENT_SIZE = IPV6_FRAGMENT.size
_SKIPPED = frozenset((IpProto.HOPOPT, IpProto.ROUTING, IpProto.DSTOPTS))
_PORTS = struct.Struct("!HH")
_ECHO_ID_AT = ICMP.offset("identifier")
_MAX_EXTENSIONS = 8
_V6_ECHO = frozenset((Icmpv6Type.ECHO_REQUEST, Icmpv6Type.ECHO_REPLY))


def embedded_flow(buf: bytes | bytearray, info: FrameInfo) -> FlowTuple | None:
    """The 5-tuple of the packet quoted in the ICMP/ICMPv6 error ``info`` (None: unusable).

    The quote is truncated by design (RFC 792: the IP header and 8 bytes;
    RFC 4443 §2.4 (c): as much as fits in 1280 bytes), so lengths are checked
    against the bytes present, not against the quoted header's own length.
    """
    if info.ip_version == 4:
        from pktchain.functions.common.embedded import (  # see icmp_error_type
            Embedded,
            parse_embedded,
        )

        found = parse_embedded(buf, info.l4, info.end)
        if not isinstance(found, Embedded):
            return None
        return (found.src, found.dst, found.proto, found.sport, found.dport)
    return _embedded_v6(buf, info.l4 + _ICMP_SIZE, info.end)


def _embedded_v6(buf: bytes | bytearray, l3: int, end: int) -> FlowTuple | None:
    if end - l3 < _IPV6_SIZE or buf[l3] >> 4 != 6:
        return None
    src = bytes(buf[l3 + _V6_SRC_AT : l3 + _V6_SRC_AT + 16])
    dst = bytes(buf[l3 + _V6_DST_AT : l3 + _V6_DST_AT + 16])
    proto = buf[l3 + _V6_NEXT_AT]
    p = l3 + _IPV6_SIZE
    # RFC 8200 §4.1: step over extension headers to the upper-layer header.
    for _ in range(_MAX_EXTENSIONS):
        if proto in _SKIPPED:
            if end - p < 2:
                return None
            proto, p = buf[p], p + (_EXT_LEN.read_int(buf, p) + 1) * 8
        elif proto == IpProto.FRAGMENT:
            if end - p < _FRAGMENT_SIZE or _FRAGMENT_OFFSET.read_int(buf, p):
                return None  # a later fragment names no ports
            proto, p = buf[p], p + _FRAGMENT_SIZE
        else:
            break
    else:
        return None
    if proto in (_TCP, _UDP):
        if end - p < _PORTS.size:
            return None
        sport, dport = _PORTS.unpack_from(buf, p)
        return (src, dst, proto, sport, dport)
    if proto == _ICMPV6 and end - p >= _ICMP_SIZE and buf[p] in _V6_ECHO:
        ident = int.from_bytes(buf[p + _ECHO_ID_AT : p + _ECHO_ID_AT + 2], "big")
        return (src, dst, proto, ident, ident)
    if proto in (_ICMPV6, _ICMP):
        return None  # an error about an error, or about something untracked
    return (src, dst, proto, 0, 0)
