"""A sans-IO NAPT for one external IPv4 address: RFC 4787 (UDP), 5382 (TCP), 5508 (ICMP), 7857.

:class:`Nat` is the NAT half of the virtual router. It reads and rewrites IPv4
packets in the caller's buffer and never touches a socket or a clock: ``now``
comes in with every call, timers go out through :meth:`Nat.next_deadline` and
are run by :meth:`Nat.on_timer`, and ICMP errors the NAT wants sent come back
as bytes in the result. Behaviour, in the RFCs' words:

* mapping: endpoint-independent (RFC 4787 REQ-1, RFC 5382 REQ-1), one per
  internal endpoint and protocol (RFC 7857 §5); the internal port is kept when
  free, otherwise a random port of the same range (0-1023 / 1024-65535) and
  parity is taken (RFC 4787 REQ-3, REQ-4; RFC 7857 §8, §9); never two mappings
  on one external port (no port overloading, RFC 4787 REQ-3, RFC 5382 REQ-7);
* filtering: endpoint-independent, address-dependent (the default) or
  address-and-port-dependent, set apart for UDP and TCP (RFC 4787 REQ-8,
  RFC 5382 REQ-3); port forwarding rules are static mappings open to anyone;
* timers: per session, refreshed by outbound packets (RFC 4787 REQ-6), TCP
  timeouts chosen by the state table of :mod:`~pktchain.functions.common.tcp`;
* unsolicited inbound SYNs held at least 6 s, then answered with ICMP port
  unreachable unless an outbound SYN of the same connection came (RFC 5382 REQ-4);
* ICMP echo identifiers mapped like ports (RFC 5508 REQ-1); ICMP errors
  translated both ways with their embedded packet (RFC 5508 REQ-3 to REQ-7),
  never removing or refreshing anything (RFC 4787 REQ-12, RFC 5382 REQ-10);
* hairpinning with the external source address and port (RFC 4787 REQ-9,
  RFC 5382 REQ-8), ICMP errors included (RFC 5508 REQ-7);
* a table limit and a per-internal-host limit: a session beyond them is
  refused with ICMP "communication administratively prohibited" (3/13,
  RFC 5508 REQ-8); and a rate of new sessions per internal host (a token
  bucket each), beyond which a new session is refused silently, so that one
  host's SYN or scan flood costs the NAT a bounded amount of work whatever
  it aims at (RFC 6888 REQ-4 asks carrier-grade NATs for such a threshold).

A backup router keeps a copy of its master's sessions (docs/ha-sync.md): the
master's NAT notes which sessions were opened, changed TCP state or ended
(:meth:`Nat.track_changes`, :meth:`Nat.take_changed`; a refresh is not a
change), the backup's installs them without a timer
(:meth:`Nat.install_session`) and gives them one when it takes over
(:meth:`Nat.adopt_synced`).

The per-flow cache of the node may keep a translated flow
(:attr:`NatResult.cacheable`): it applies :attr:`NatResult.rewrite`, calls
:meth:`Nat.touch` so the session stays alive, evicts the entry once
``session.alive`` is false (or the session appears in
:attr:`NatTimerResult.expired`), and hands every TCP segment with SYN, FIN or
RST back to the NAT. ``now`` must not go backwards between calls.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass

from pktchain.functions.common.embedded import (
    ERROR_TYPES,
    Embedded,
    Unusable,
    build_icmp_error,
    icmp_checksum_ok,
    parse_embedded,
    refresh_icmp_checksum,
    rewrite_embedded,
)
from pktchain.functions.common.fields import ported_protocol
from pktchain.functions.common.rate import TokenBucket
from pktchain.functions.common.tcp import (
    ARMED_LIFETIME,
    Lifetime,
    TcpSessionState,
    tcp_event,
    tcp_transition,
)
from pktchain.functions.nat.config import Filtering, NatConfig, UnsolicitedSyn
from pktchain.functions.nat.result import (
    DropReason,
    FlowRewrite,
    NatResult,
    NatVerdict,
    Realm,
)
from pktchain.functions.nat.table import (
    SYNCED,
    Mapping,
    MappingEntry,
    Session,
    SessionEntry,
    SessionKey,
    SessionRecord,
    SessionRefusal,
)
from pktchain.packet.address import IpLike, WritableBuffer, format_ip, ip_bytes
from pktchain.packet.headers import IcmpType, IpProto, TcpFlag
from pktchain.packet.parse import FrameInfo, parse_ip
from pktchain.packet.rewrite import Side, set_ip, set_port

__all__ = [
    "DropReason",
    "Filtering",
    "FlowRewrite",
    "Mapping",
    "MappingEntry",
    "Nat",
    "NatConfig",
    "NatResult",
    "NatTimerResult",
    "NatVerdict",
    "Realm",
    "Session",
    "SessionEntry",
    "SessionRecord",
    "SessionRefusal",
    "TcpSessionState",
    "UnsolicitedSyn",
]

_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_SYN = int(TcpFlag.SYN)
_ACK = int(TcpFlag.ACK)
_RST = int(TcpFlag.RST)
_ECHO_REQUEST = int(IcmpType.ECHO_REQUEST)
_ECHO_REPLY = int(IcmpType.ECHO_REPLY)
_UNREACHABLE = int(IcmpType.DEST_UNREACHABLE)
_CODE_PORT_UNREACHABLE = 3  # RFC 792
_CODE_ADMIN_PROHIBITED = 13  # RFC 1812 §5.2.7.1
_REFUSALS = frozenset(
    (DropReason.SESSION_LIMIT, DropReason.HOST_SESSION_LIMIT, DropReason.PORTS_EXHAUSTED)
)
_UNADMITTED = frozenset((DropReason.NO_MAPPING, DropReason.FILTERED))
_DROPS = {reason: NatResult(NatVerdict.DROPPED, reason) for reason in DropReason}
_UNFILED = 1 << 62
"""``Session.queued`` of a session on no timer bucket yet (its first ``_arm`` files it)."""


@dataclass(frozen=True, slots=True)
class NatTimerResult:
    """What :meth:`Nat.on_timer` produced: ICMP errors to send, sessions that ended."""

    replies: tuple[NatResult, ...]
    expired: tuple[Session, ...]


class _HeldSyn:
    """An unsolicited inbound SYN kept for RFC 5382 REQ-4."""

    __slots__ = ("deadline", "packet")

    def __init__(self, deadline: float, packet: bytes) -> None:
        self.deadline = deadline
        self.packet = packet


class Nat:
    """The NAPT: feed it packets with :meth:`translate_outbound` / :meth:`translate_inbound`."""

    def __init__(self, config: NatConfig) -> None:
        self._config = config
        self._external = config.external
        self._filtering = {
            _TCP: config.tcp_filtering,
            _UDP: config.udp_filtering,
            # Echo replies need a session: an outside host cannot answer a ping
            # it never saw, whatever the filtering (RFC 5508 §3.1).
            _ICMP: Filtering.ADDRESS_AND_PORT_DEPENDENT,
        }
        self._timeouts = {
            Lifetime.OPENING: config.tcp_opening_timeout,
            Lifetime.INCOMING_SYN: config.tcp_incoming_syn_timeout,
            Lifetime.ESTABLISHED: config.tcp_established_timeout,
            Lifetime.CLOSING: config.tcp_closing_timeout,
        }
        self._query_timeout = {_UDP: config.udp_timeout, _ICMP: config.icmp_timeout}
        self._rng = random.Random(config.port_seed)
        # Internal endpoint -> its dynamic mapping; static ones (port forwarding)
        # are kept apart so that one internal endpoint may be reached through
        # several forwarded ports.
        self._dynamic: dict[tuple[int, bytes, int], Mapping] = {}
        self._static: dict[tuple[int, bytes, int], list[Mapping]] = {}
        self._by_external: dict[tuple[int, int], Mapping] = {}
        self._sessions: dict[SessionKey, Session] = {}
        self._per_host: dict[bytes, int] = {}
        # New-session buckets of the internal hosts that hold sessions. A
        # host's bucket goes with its last session and the next starts full:
        # the table stays as small as the host table, and a host that has
        # held nothing for a while has earned its burst back.
        self._new_buckets: dict[bytes, TokenBucket] = {}
        rate = config.icmp_refusal_rate
        self._refusals = None if rate is None else TokenBucket(rate, config.icmp_refusal_burst)
        # For address-dependent filtering: how many sessions a mapping has with
        # each remote address.
        self._remote_addresses: dict[tuple[Mapping, bytes], int] = {}
        # Session timers: whole-second buckets, filled lazily (a refresh only
        # moves ``Session.expires``; the bucket re-files the session when due).
        self._buckets: dict[int, list[Session]] = {}
        self._bucket_heap: list[int] = []
        # RFC 5382 REQ-4: held SYNs by (external port, remote address, remote
        # port), in arrival order, which is deadline order.
        self._held: dict[tuple[int, bytes, int], _HeldSyn] = {}
        self._counters: dict[str, int] = {}
        # Sessions opened, moved to another TCP state or ended since the last
        # take_changed(); None while nobody replicates the NAT (see track_changes).
        self._changed: set[SessionKey] | None = None

    # -- configuration and tables -------------------------------------------------

    @property
    def config(self) -> NatConfig:
        """The configuration the NAT was made with (fixed: RFC 4787 REQ-11)."""
        return self._config

    def mappings(self, limit: int | None = None) -> list[MappingEntry]:
        """The mappings, static and dynamic, in external port order; the first `limit`."""
        external = format_ip(self._external)
        if limit is None:
            chosen = sorted(self._by_external.items())
        else:
            # A status view of a full table must not sort 100,000 mappings to show ten.
            chosen = heapq.nsmallest(limit, self._by_external.items()) if limit > 0 else []
        return [
            MappingEntry(
                IpProto(m.proto),
                format_ip(m.internal_address),
                m.internal_port,
                external,
                m.external_port,
                m.static,
                m.sessions,
            )
            for _, m in chosen
        ]

    def mapping_count(self) -> int:
        """Number of mappings, static and dynamic."""
        return len(self._by_external)

    def sessions(self) -> list[SessionEntry]:
        """Every live session."""
        return [
            SessionEntry(
                IpProto(s.mapping.proto),
                format_ip(s.mapping.internal_address),
                s.mapping.internal_port,
                s.mapping.external_port,
                format_ip(s.key[3]),
                s.key[4],
                s.state,
                s.expires,
            )
            for s in self._sessions.values()
        ]

    def session_count(self) -> int:
        """Number of live sessions."""
        return len(self._sessions)

    def counters(self) -> dict[str, int]:
        """Packets translated per direction and dropped per :class:`DropReason` value."""
        return dict(self._counters)

    def _count(self, name: str) -> None:
        self._counters[name] = self._counters.get(name, 0) + 1

    def _drop(self, reason: DropReason) -> NatResult:
        self._count(reason.value)
        return _DROPS[reason]

    # -- port forwarding (static mappings) ----------------------------------------

    def add_port_forward(
        self, proto: IpProto | str, external_port: int, internal_address: IpLike, internal_port: int
    ) -> MappingEntry:
        """Forward ``external_port`` of the external address to an inside host's port.

        A static mapping: admits any outside endpoint whatever the filtering,
        never expires, and is the mapping the inside endpoint's own outbound
        sessions use. Raises ValueError naming the wrong field.
        """
        number = _protocol(proto)
        try:
            address = ip_bytes(internal_address)
        except ValueError as exc:
            raise ValueError(f"internal_address: {exc}") from None
        errors = []
        if len(address) != 4 or not self._config.is_internal(address):
            errors.append(f"internal_address: {internal_address!r} is not in internal_networks")
        for name, port in (("external_port", external_port), ("internal_port", internal_port)):
            if not 1 <= port <= 0xFFFF:
                errors.append(f"{name}: {port} is not in 1..65535")
        if (number, external_port) in self._by_external:
            errors.append(f"external_port: {IpProto(number).name} {external_port} is in use")
        if errors:
            raise ValueError("; ".join(errors))
        mapping = Mapping(number, address, internal_port, external_port, static=True)
        self._static.setdefault((number, address, internal_port), []).append(mapping)
        self._by_external[number, external_port] = mapping
        return MappingEntry(
            IpProto(number),
            format_ip(address),
            internal_port,
            format_ip(self._external),
            external_port,
            True,
            0,
        )

    def remove_port_forward(self, proto: IpProto | str, external_port: int) -> tuple[Session, ...]:
        """Remove a forwarding rule and its sessions; returns them (their flows must go).

        Raises KeyError when no rule has that port.
        """
        number = _protocol(proto)
        mapping = self._by_external.get((number, external_port))
        if mapping is None or not mapping.static:
            raise KeyError(f"no {IpProto(number).name} port forward on {external_port}")
        ended = tuple(s for s in self._sessions.values() if s.mapping is mapping)
        for session in ended:
            self._remove(session)
        del self._by_external[number, external_port]
        endpoint = (number, mapping.internal_address, mapping.internal_port)
        rules = self._static[endpoint]
        rules.remove(mapping)
        if not rules:
            del self._static[endpoint]
        return ended

    # -- replication (docs/ha-sync.md) ----------------------------------------------

    def track_changes(self, enabled: bool) -> None:
        """Start afresh, or stop, noting the sessions that change, for :meth:`take_changed`.

        A change is a session opened, moved to another TCP state, or ended
        (expired, or removed with its port forward). A packet that only
        refreshes a session's timer is not one. While off (the default) the
        packet path pays one test of None where a session opens, ends or moves.
        """
        self._changed = set() if enabled else None

    def changes_pending(self) -> bool:
        """Whether sessions changed since they were last taken."""
        return bool(self._changed)

    def take_changed(self, limit: int) -> list[SessionKey]:
        """At most ``limit`` keys of sessions changed since last taken; they are no longer
        noted. A key taken names the session as it is now, or one that ended."""
        changed = self._changed
        if not changed:
            return []
        if len(changed) <= limit:
            keys = list(changed)
            changed.clear()
            return keys
        return [changed.pop() for _ in range(limit)]

    def session_keys(self) -> list[SessionKey]:
        """The keys of every session, in the order they were opened."""
        return list(self._sessions)

    def session_record(self, key: SessionKey) -> SessionRecord | None:
        """The session of ``key`` as another NAT needs it; None when there is none."""
        session = self._sessions.get(key)
        if session is None:
            return None
        mapping = session.mapping
        return SessionRecord(
            mapping.proto,
            mapping.internal_address,
            mapping.internal_port,
            key[3],
            key[4],
            mapping.external_port,
            session.state,
        )

    def install_session(self, record: SessionRecord) -> SessionRefusal | None:
        """Hold a copy of another NAT's session; None when installed, else why not.

        The copy is on no timer (``expires`` is :data:`SYNCED`): this NAT does not
        age it; it goes with :meth:`discard_session`, or gets a timer with
        :meth:`adopt_synced`. The other NAT's view wins: a session of the same key
        on another mapping, or a dynamic mapping of this NAT on the record's
        external port or for its internal endpoint (RFC 4787 REQ-1: one per
        endpoint), ends first; a port forward holding the port for another
        endpoint is not moved (:attr:`SessionRefusal.PORT_CONFLICT`).
        """
        proto = record.proto
        if proto not in self._filtering:
            return SessionRefusal.PROTOCOL
        if (proto == _TCP) != (record.state is not None):
            return SessionRefusal.STATE
        internal, internal_port = record.internal_address, record.internal_port
        if len(internal) != 4 or not self._config.is_internal(internal):
            return SessionRefusal.NOT_INTERNAL
        mapping = self._by_external.get((proto, record.external_port))
        if mapping is not None and (
            mapping.internal_address != internal or mapping.internal_port != internal_port
        ):
            if mapping.static:
                return SessionRefusal.PORT_CONFLICT
            self._end_mapping(mapping)
            mapping = None
        key = record.key
        session = self._sessions.get(key)
        if session is not None and session.mapping is not mapping:
            self._remove(session)
            session = None
        if session is None and len(self._sessions) >= self._config.max_sessions:
            return SessionRefusal.SESSION_LIMIT
        if mapping is None:
            stale = self._dynamic.get((proto, internal, internal_port))
            if stale is not None:
                self._end_mapping(stale)
            mapping = self._add_dynamic(proto, internal, internal_port, record.external_port)
        if session is None:
            session = self._insert(mapping, key, record.state)
        else:
            session.state = record.state
        # Off this NAT's timers: a bucket holding it skips it (queued differs).
        session.queued = _UNFILED
        session.expires = SYNCED
        return None

    def discard_session(self, key: SessionKey) -> bool:
        """End the session of ``key`` (a copy its master ended); False when there is none."""
        session = self._sessions.get(key)
        if session is None:
            return False
        self._remove(session)
        return True

    def free_external_port(self, proto: int, external_port: int) -> int:
        """End the dynamic mapping holding ``external_port``, with its sessions; how many.

        For a port forward copied from another NAT, whose view wins."""
        mapping = self._by_external.get((proto, external_port))
        if mapping is None or mapping.static:
            return 0
        return self._end_mapping(mapping)

    def _end_mapping(self, mapping: Mapping) -> int:
        """Remove every session of ``mapping`` (a dynamic one goes with the last)."""
        ended = [s for s in self._sessions.values() if s.mapping is mapping]
        for session in ended:
            self._remove(session)
        return len(ended)

    def adopt_synced(self, now: float) -> int:
        """Make the copied sessions this NAT's own: each gets a timer from ``now``.

        The timeout is the one its state was last armed with (``ARMED_LIFETIME``;
        the query timeout for UDP and ICMP), as if a packet had just refreshed
        it, so a takeover never ends a flow early. Returns how many were adopted.
        """
        adopted = 0
        for session in self._sessions.values():
            if session.expires == SYNCED:
                self._arm(session, now, self.lifetime(session))
                adopted += 1
        return adopted

    def lifetime(self, session: Session) -> float:
        """The timeout a session in its present state is armed with, in seconds."""
        state = session.state
        if state is None:
            return self._query_timeout[session.mapping.proto]
        return self._timeouts[ARMED_LIFETIME[state]]

    # -- timers --------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` should run next (None: nothing pending)."""
        deadlines = []
        if self._bucket_heap:
            deadlines.append(float(self._bucket_heap[0]))
        if self._held:
            deadlines.append(next(iter(self._held.values())).deadline)
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> NatTimerResult:
        """Expire sessions and held SYNs that are due."""
        replies: list[NatResult] = []
        expired: list[Session] = []
        held = self._held
        while held:
            key = next(iter(held))
            entry = held[key]
            if entry.deadline > now:
                break
            del held[key]
            if self._config.unsolicited_syn is UnsolicitedSyn.HOLD_THEN_ICMP:
                # RFC 5382 REQ-4: no outbound SYN came; port unreachable for the SYN.
                reply = build_icmp_error(
                    entry.packet,
                    0,
                    len(entry.packet),
                    icmp_type=_UNREACHABLE,
                    code=_CODE_PORT_UNREACHABLE,
                    source=self._external,
                )
                self._count("unsolicited-syn-icmp")
                replies.append(NatResult(NatVerdict.REPLY, reply=reply, reply_to=Realm.EXTERNAL))
            else:
                self._count("unsolicited-syn-dropped")
        heap, buckets = self._bucket_heap, self._buckets
        while heap and heap[0] <= now:
            bucket = heapq.heappop(heap)
            for session in buckets.pop(bucket):
                if session.queued != bucket or session.expires < 0:
                    continue  # re-filed in an earlier bucket, or already removed
                if session.expires <= now:
                    self._remove(session)
                    expired.append(session)
                else:
                    self._enqueue(session, session.expires)
        if expired:
            self._counters["sessions-expired"] = self._counters.get("sessions-expired", 0) + len(
                expired
            )
        return NatTimerResult(tuple(replies), tuple(expired))

    def _enqueue(self, session: Session, bucket: int) -> None:
        session.queued = bucket
        entries = self._buckets.get(bucket)
        if entries is None:
            self._buckets[bucket] = [session]
            heapq.heappush(self._bucket_heap, bucket)
        else:
            entries.append(session)

    def _arm(self, session: Session, now: float, timeout: float) -> None:
        expires = math.ceil(now + timeout)
        session.expires = expires
        if expires < session.queued:
            self._enqueue(session, expires)

    def _step_tcp(self, session: Session, flags: int, outbound: bool, now: float) -> None:
        state = session.state
        if state is None:
            return
        new_state, lifetime = tcp_transition(state, tcp_event(flags, outbound))
        if new_state is not state:
            session.state = new_state
            if self._changed is not None:
                self._changed.add(session.key)
        if lifetime is not Lifetime.KEEP:
            self._arm(session, now, self._timeouts[lifetime])

    def touch(self, session: Session, now: float, *, outbound: bool, flags: int = 0) -> bool:
        """Account a packet the flow cache translated; False if the session is gone.

        ``flags`` are the TCP control bits (the cache only passes segments
        without SYN, FIN and RST). Outbound packets refresh the session (RFC 4787
        REQ-6); inbound UDP and ICMP ones only with ``inbound_refresh``.
        """
        if session.expires < 0:
            return False
        if session.state is not None:
            self._step_tcp(session, flags, outbound, now)
        elif outbound or self._config.inbound_refresh:
            self._arm(session, now, self._query_timeout[session.mapping.proto])
        return True

    # -- sessions --------------------------------------------------------------------

    def _mapping_for(self, proto: int, address: bytes, port: int) -> Mapping | None:
        endpoint = (proto, address, port)
        rules = self._static.get(endpoint)
        if rules:
            return rules[0]
        return self._dynamic.get(endpoint)

    def _allocate(self, proto: int, port: int) -> int | None:
        """An external port for a new mapping of internal ``port`` (RFC 4787 REQ-3, REQ-4)."""
        taken = self._by_external
        if (proto, port) not in taken and (port or proto == _ICMP):
            return port  # port preservation
        rng = self._rng
        if proto == _ICMP:
            candidates = [range(0, 0x10000)]
        else:
            low, high = (1, 1023) if port < 1024 else (1024, 0xFFFF)
            if self._config.preserve_parity:
                same = low + (port - low) % 2
                candidates = [range(same, high + 1, 2), range(low + (same == low), high + 1, 2)]
            else:
                candidates = [range(low, high + 1)]
        # RFC 7857 §9 (RFC 6056 §4): start at a random place in the range.
        for ports in candidates:
            count = len(ports)
            start = rng.randrange(count)
            for i in range(count):
                candidate = ports[(start + i) % count]
                if (proto, candidate) not in taken:
                    return candidate
        return None

    def _open(
        self,
        mapping: Mapping | None,
        key: SessionKey,
        state: TcpSessionState | None,
        now: float,
    ) -> Session | DropReason:
        """A new session (and mapping) for ``key``, or why the NAT refuses it."""
        config = self._config
        address = key[1]
        if len(self._sessions) >= config.max_sessions:
            return DropReason.SESSION_LIMIT
        held = self._per_host.get(address, 0)
        if held >= config.max_sessions_per_host:
            return DropReason.HOST_SESSION_LIMIT
        rate = config.new_sessions_per_host_rate
        if rate is not None:
            bucket = self._new_buckets.get(address)
            if bucket is None:
                bucket = TokenBucket(rate, config.new_sessions_per_host_burst)
                self._new_buckets[address] = bucket
            if not bucket.take(now):
                return DropReason.HOST_SESSION_RATE
        proto = key[0]
        if mapping is None:
            port = self._allocate(proto, key[2])
            if port is None:
                if not held:
                    self._new_buckets.pop(address, None)
                return DropReason.PORTS_EXHAUSTED
            mapping = self._add_dynamic(proto, address, key[2], port)
        session = self._insert(mapping, key, state)
        if self._changed is not None:
            self._changed.add(session.key)
        return session

    def _add_dynamic(self, proto: int, address: bytes, port: int, external_port: int) -> Mapping:
        mapping = Mapping(proto, address, port, external_port, static=False)
        self._dynamic[proto, address, port] = mapping
        self._by_external[proto, external_port] = mapping
        return mapping

    def _insert(self, mapping: Mapping, key: SessionKey, state: TcpSessionState | None) -> Session:
        """A new session of ``mapping``, on no timer yet."""
        # The key shares the mapping's objects for the internal endpoint.
        key = (key[0], mapping.internal_address, mapping.internal_port, key[3], key[4])
        session = Session(key, mapping, state)
        self._sessions[key] = session
        mapping.sessions += 1
        address = mapping.internal_address
        self._per_host[address] = self._per_host.get(address, 0) + 1
        if self._filtering[key[0]] is Filtering.ADDRESS_DEPENDENT:
            pair = (mapping, key[3])
            self._remote_addresses[pair] = self._remote_addresses.get(pair, 0) + 1
        session.queued = _UNFILED  # not filed yet: the first _arm files it
        return session

    def _remove(self, session: Session) -> None:
        key = session.key
        mapping = session.mapping
        del self._sessions[key]
        if self._changed is not None:
            self._changed.add(key)
        session.expires = -1
        mapping.sessions -= 1
        address = mapping.internal_address
        left = self._per_host[address] - 1
        if left:
            self._per_host[address] = left
        else:
            del self._per_host[address]
            self._new_buckets.pop(address, None)
        pair = (mapping, key[3])
        count = self._remote_addresses.get(pair)
        if count is not None:
            if count > 1:
                self._remote_addresses[pair] = count - 1
            else:
                del self._remote_addresses[pair]
        if not mapping.sessions and not mapping.static:
            # RFC 7857 §11: a dynamic mapping goes with its last session.
            del self._dynamic[mapping.proto, address, mapping.internal_port]
            del self._by_external[mapping.proto, mapping.external_port]

    def _admits(self, mapping: Mapping, remote: bytes) -> bool:
        """Filtering of an inbound packet that matches a mapping but no session."""
        if mapping.static:
            return True
        filtering = self._filtering[mapping.proto]
        if filtering is Filtering.ENDPOINT_INDEPENDENT:
            return True
        if filtering is Filtering.ADDRESS_DEPENDENT:
            return (mapping, remote) in self._remote_addresses
        return False

    def _outbound_session(  # noqa: PLR0917 - positional: per-packet path
        self, proto: int, src: bytes, sport: int, dst: bytes, dport: int, flags: int, now: float
    ) -> Session | DropReason:
        key = (proto, src, sport, dst, dport)
        session = self._sessions.get(key)
        if session is not None:
            if proto == _TCP:
                self._step_tcp(session, flags, True, now)
            else:
                self._arm(session, now, self._query_timeout[proto])  # RFC 4787 REQ-6
            return session
        if proto == _TCP and (flags & (_SYN | _RST | _ACK)) != _SYN:
            return DropReason.TCP_NO_SESSION  # RFC 6146 §3.5.2.2: only a SYN opens
        opened = self._open(
            self._mapping_for(proto, src, sport),
            key,
            TcpSessionState.CLOSED if proto == _TCP else None,
            now,
        )
        if isinstance(opened, DropReason):
            return opened
        if proto == _TCP:
            self._step_tcp(opened, flags, True, now)
            # RFC 5382 REQ-4: the outbound SYN of a held inbound SYN's connection
            # means a simultaneous open; the held SYN is dropped silently.
            if self._held.pop((opened.mapping.external_port, dst, dport), None) is not None:
                self._count("unsolicited-syn-superseded")
        else:
            self._arm(opened, now, self._query_timeout[proto])
        return opened

    def _inbound_session(  # noqa: PLR0917 - positional: per-packet path
        self, proto: int, dport: int, src: bytes, sport: int, flags: int, now: float
    ) -> Session | DropReason:
        mapping = self._by_external.get((proto, dport))
        if mapping is None:
            return DropReason.NO_MAPPING
        key = (proto, mapping.internal_address, mapping.internal_port, src, sport)
        session = self._sessions.get(key)
        if session is not None and session.mapping is mapping:
            if proto == _TCP:
                self._step_tcp(session, flags, False, now)
            elif self._config.inbound_refresh:  # RFC 4787 REQ-6a
                self._arm(session, now, self._query_timeout[proto])
            return session
        if session is not None or not self._admits(mapping, src):
            return DropReason.FILTERED
        if proto == _TCP and (flags & (_SYN | _RST | _ACK)) != _SYN:
            return DropReason.TCP_NO_SESSION
        opened = self._open(mapping, key, TcpSessionState.CLOSED if proto == _TCP else None, now)
        if isinstance(opened, DropReason):
            return opened
        if proto == _TCP:
            self._step_tcp(opened, flags, False, now)
        else:
            self._arm(opened, now, self._query_timeout[proto])
        return opened

    # -- packets -------------------------------------------------------------------

    def _parse(self, buf: WritableBuffer, offset: int, info: FrameInfo | None) -> FrameInfo:
        return parse_ip(buf, offset) if info is None else info

    def _unusable(self, info: FrameInfo) -> DropReason | None:
        if info.error is not None:
            return DropReason.MALFORMED
        if info.ip_version != 4:
            return DropReason.NOT_IPV4
        if info.fragment:
            return DropReason.FRAGMENT
        return None

    def _refuse(  # noqa: PLR0917 - internal
        self,
        reason: DropReason,
        buf: WritableBuffer,
        info: FrameInfo,
        to: Realm,
        source: bytes,
        now: float,
    ) -> NatResult:
        """Drop, or for a refused session answer 3/13 (RFC 5508 REQ-8) within the
        refusals' rate (RFC 1812 §4.3.2.8)."""
        self._count(reason.value)
        if reason not in _REFUSALS or not self._config.icmp_refusals:
            return _DROPS[reason]
        bucket = self._refusals
        if bucket is not None and not bucket.take(now):
            # A host at its limit that keeps trying (a SYN flood) would have an
            # error built for each attempt, for the router's own limit to discard.
            self._count("refusal-rate-limited")
            return _DROPS[reason]
        reply = build_icmp_error(
            buf,
            info.l3,
            info.end,
            icmp_type=_UNREACHABLE,
            code=_CODE_ADMIN_PROHIBITED,
            source=source,
        )
        return NatResult(NatVerdict.REPLY, reason, reply=reply, reply_to=to)

    def translate_outbound(
        self,
        buf: WritableBuffer,
        offset: int,
        now: float,
        *,
        info: FrameInfo | None = None,
        partial: bool = False,
        reply_from: bytes | None = None,
    ) -> NatResult:
        """Translate an IPv4 packet from the inside, in place.

        ``buf[offset:]`` is the IP packet, or ``info`` is the caller's parse of
        the frame in ``buf`` (then ``offset`` is not used). ``partial`` says the
        TCP/UDP checksum field holds a NEEDS_CSUM pseudo-header seed.
        ``reply_from`` is the source of ICMP errors sent back inside (the
        router's address on that subnet; default the external address).
        Never raises on a bad packet.
        """
        info = self._parse(buf, offset, info)
        unusable = self._unusable(info)
        if unusable is not None:
            return self._drop(unusable)
        src, dst, proto = info.src, info.dst, info.proto
        if not self._config.is_internal(src):
            return self._drop(DropReason.NOT_INTERNAL_SOURCE)
        if proto == _ICMP:
            icmp_type = buf[info.l4]
            if icmp_type in ERROR_TYPES:
                return self._error_outbound(buf, info)
            if icmp_type != _ECHO_REQUEST:
                return self._drop(DropReason.UNSUPPORTED_ICMP)
            if dst == self._external:
                return self._drop(DropReason.LOCAL_DESTINATION)
            sport, dport = info.sport, 0
        elif proto in (_TCP, _UDP):
            sport, dport = info.sport, info.dport
            if not sport or not dport:
                return self._drop(DropReason.BAD_PORT)
        else:
            return self._drop(DropReason.UNSUPPORTED_PROTOCOL)
        opened = self._outbound_session(proto, src, sport, dst, dport, info.tcp_flags, now)
        source = self._external if reply_from is None else reply_from
        if isinstance(opened, DropReason):
            return self._refuse(opened, buf, info, Realm.INTERNAL, source, now)
        mapping = opened.mapping
        external = self._external
        if dst == external:
            return self._hairpin(buf, info, opened, now=now, partial=partial, source=source)
        set_ip(buf, info, Side.SRC, external, partial=partial)
        if mapping.external_port != sport:
            set_port(buf, info, Side.SRC, mapping.external_port, partial=partial)
        self._count("translated-outbound")
        return NatResult(
            NatVerdict.TRANSLATED,
            rewrite=FlowRewrite(proto, (external, mapping.external_port), None),
            session=opened,
            cacheable=_cacheable(opened),
        )

    def _hairpin(
        self,
        buf: WritableBuffer,
        info: FrameInfo,
        outbound: Session,
        *,
        now: float,
        partial: bool,
        source: bytes,
    ) -> NatResult:
        """RFC 4787 REQ-9, RFC 5382 REQ-8: inside to inside through the external address.

        The packet leaves with the sender's external address and port as its
        source, as an outside host would see it.
        """
        external = self._external
        sender = outbound.mapping
        inbound = self._inbound_session(
            info.proto, info.dport, external, sender.external_port, info.tcp_flags, now
        )
        if isinstance(inbound, DropReason):
            return self._refuse(inbound, buf, info, Realm.INTERNAL, source, now)
        target = inbound.mapping
        set_ip(buf, info, Side.SRC, external, partial=partial)
        set_port(buf, info, Side.SRC, sender.external_port, partial=partial)
        set_ip(buf, info, Side.DST, target.internal_address, partial=partial)
        set_port(buf, info, Side.DST, target.internal_port, partial=partial)
        self._count("hairpinned")
        return NatResult(
            NatVerdict.TRANSLATED,
            rewrite=FlowRewrite(
                info.proto,
                (external, sender.external_port),
                (target.internal_address, target.internal_port),
            ),
            session=outbound,
            cacheable=_cacheable(outbound) and _cacheable(inbound),
        )

    def translate_inbound(
        self,
        buf: WritableBuffer,
        offset: int,
        now: float,
        *,
        info: FrameInfo | None = None,
        partial: bool = False,
    ) -> NatResult:
        """Translate an IPv4 packet from the outside, in place (arguments as outbound)."""
        info = self._parse(buf, offset, info)
        unusable = self._unusable(info)
        if unusable is not None:
            return self._drop(unusable)
        src, proto = info.src, info.proto
        if info.dst != self._external:
            return self._drop(DropReason.NOT_EXTERNAL_DESTINATION)
        if proto == _ICMP:
            icmp_type = buf[info.l4]
            if icmp_type in ERROR_TYPES:
                return self._error_inbound(buf, info)
            if icmp_type == _ECHO_REQUEST:
                return self._drop(DropReason.LOCAL_DESTINATION)
            if icmp_type != _ECHO_REPLY:
                return self._drop(DropReason.UNSUPPORTED_ICMP)
            dport, sport = info.dport, 0
        elif proto in (_TCP, _UDP):
            sport, dport = info.sport, info.dport
            if not sport or not dport:
                return self._drop(DropReason.BAD_PORT)
        else:
            return self._drop(DropReason.UNSUPPORTED_PROTOCOL)
        flags = info.tcp_flags
        opened = self._inbound_session(proto, dport, src, sport, flags, now)
        if isinstance(opened, DropReason):
            unsolicited_syn = flags & (_SYN | _ACK | _RST) == _SYN
            if proto == _TCP and unsolicited_syn and opened in _UNADMITTED:
                return self._hold(buf, info, opened, now)
            return self._refuse(opened, buf, info, Realm.EXTERNAL, self._external, now)
        mapping = opened.mapping
        set_ip(buf, info, Side.DST, mapping.internal_address, partial=partial)
        if mapping.internal_port != dport:
            set_port(buf, info, Side.DST, mapping.internal_port, partial=partial)
        self._count("translated-inbound")
        return NatResult(
            NatVerdict.TRANSLATED,
            rewrite=FlowRewrite(proto, None, (mapping.internal_address, mapping.internal_port)),
            session=opened,
            cacheable=_cacheable(opened),
        )

    def _hold(self, buf: WritableBuffer, info: FrameInfo, why: DropReason, now: float) -> NatResult:
        """RFC 5382 REQ-4: keep an unsolicited SYN; answer it only if nothing happens."""
        policy = self._config.unsolicited_syn
        if policy is UnsolicitedSyn.DROP:
            return self._drop(why)
        key = (info.dport, info.src, info.sport)
        if key in self._held:
            return self._drop(DropReason.SYN_HELD)  # a retransmission: the first one waits
        if len(self._held) >= self._config.max_held_syns:
            return self._drop(DropReason.SYN_HOLD_FULL)
        packet = bytes(memoryview(buf)[info.l3 : info.end])
        # Not on the whole-second wheel: the REQ-4 delay is kept exactly.
        self._held[key] = _HeldSyn(now + self._config.tcp_incoming_syn_timeout, packet)
        return self._drop(DropReason.SYN_HELD)

    # -- ICMP errors (RFC 5508 §4.2) --------------------------------------------------

    def _error_outbound(self, buf: WritableBuffer, info: FrameInfo) -> NatResult:
        """An inside host's error about a packet it received (RFC 5508 REQ-5, REQ-7)."""
        embedded = self._embedded(buf, info)
        if isinstance(embedded, DropReason):
            return self._drop(embedded)
        external = self._external
        # The embedded packet went inbound: its destination is the inside endpoint.
        mapping = self._mapping_for(embedded.proto, embedded.dst, embedded.dport)
        if mapping is None:
            return self._drop(DropReason.NO_MAPPING)
        hairpin = info.dst == external
        sender: Mapping | None = None
        if hairpin:
            # RFC 5508 REQ-7: the offending packet was hairpinned from another
            # inside host, whose external endpoint is the embedded source.
            sender = self._by_external.get((embedded.proto, embedded.sport))
            if embedded.src != external or sender is None:
                return self._drop(DropReason.NO_MAPPING)
        rewrite_embedded(buf, embedded, Side.DST, external, mapping.external_port)
        set_ip(buf, info, Side.SRC, external)
        if sender is not None:
            rewrite_embedded(buf, embedded, Side.SRC, sender.internal_address, sender.internal_port)
            set_ip(buf, info, Side.DST, sender.internal_address)
        refresh_icmp_checksum(buf, info.l4, info.end)
        self._count("icmp-error-outbound")
        return NatResult(NatVerdict.TRANSLATED)

    def _error_inbound(self, buf: WritableBuffer, info: FrameInfo) -> NatResult:
        """An outside error about a packet the NAT sent out (RFC 5508 REQ-4)."""
        embedded = self._embedded(buf, info)
        if isinstance(embedded, DropReason):
            return self._drop(embedded)
        # The embedded packet went outbound: its source is the external endpoint.
        mapping = self._by_external.get((embedded.proto, embedded.sport))
        if embedded.src != self._external or mapping is None:
            return self._drop(DropReason.NO_MAPPING)
        rewrite_embedded(buf, embedded, Side.SRC, mapping.internal_address, mapping.internal_port)
        set_ip(buf, info, Side.DST, mapping.internal_address)
        refresh_icmp_checksum(buf, info.l4, info.end)
        self._count("icmp-error-inbound")
        return NatResult(NatVerdict.TRANSLATED)

    def _embedded(self, buf: WritableBuffer, info: FrameInfo) -> Embedded | DropReason:
        if not icmp_checksum_ok(buf, info.l4, info.end):  # RFC 5508 REQ-3
            return DropReason.ICMP_CHECKSUM
        embedded = parse_embedded(buf, info.l4, info.end)
        return DropReason(embedded.value) if isinstance(embedded, Unusable) else embedded


def _cacheable(session: Session) -> bool:
    state = session.state
    return state is None or state is TcpSessionState.ESTABLISHED


def _protocol(proto: IpProto | str) -> int:
    if isinstance(proto, str):
        number = ported_protocol(proto)
        if number is None:
            raise ValueError(f"proto: {proto!r} is not tcp or udp")
        return int(number)
    if proto not in (IpProto.TCP, IpProto.UDP):
        raise ValueError(f"proto: {proto!r} is not TCP or UDP")
    return int(proto)
