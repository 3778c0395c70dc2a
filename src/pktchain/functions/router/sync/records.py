"""The router's replicated state as typed records, and their binary encoding.

A backup router carries its master's flows with the same external ports when it
holds the same hosts, port forwards and NAT sessions (docs/ha-sync.md says what
is replicated and what is not, and why). Each is a record keyed in its own key
space; a change is a record (add or update: the whole current value) or a
:class:`Deletion` of a key:

=========  ==========================================  =====================================
kind       key                                         record
=========  ==========================================  =====================================
HOST       IPv4 address                                :class:`HostRecord`
FORWARD    (protocol, external port)                   :class:`ForwardRecord`
SESSION    (protocol, internal address and port,       :class:`~pktchain.functions.nat.table.
           remote address and port)                    SessionRecord`
=========  ==========================================  =====================================

Records travel as ``struct`` fields, not JSON: a session is 19 bytes against
some 120 of JSON, packs and unpacks with one precompiled ``Struct`` call, and
its bytes are exactly what the message's HMAC covers. Each record on the wire
is ``kind (u8) | length (u16) | body``, all big-endian; the length lets a
receiver skip a kind it does not know (a newer sender) and keeps one bad record
from hiding the others. Bodies (one layout per kind, stated once here):

* HOST: ``ip 4s | mac 6s | state u8 | forward_port u16 (0: none) |
  interface_length u8 | interface | network_id_length u8 | network_id``
  (names in UTF-8);
* HOST_DELETED: ``ip 4s``;
* FORWARD: ``proto u8 | external_port u16 | inside_ip 4s | inside_port u16 |
  automatic u8``;
* FORWARD_DELETED: ``proto u8 | external_port u16``;
* SESSION: ``proto u8 | internal 4s | internal_port u16 | remote 4s |
  remote_port u16 | external_port u16 | tcp_state u8 (0: not TCP)``;
* SESSION_DELETED: ``proto u8 | internal 4s | internal_port u16 | remote 4s |
  remote_port u16``.

Decoding never raises: a record that does not parse is counted under a
:class:`RecordProblem` and skipped.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from pktchain.functions.common.tcp import TcpSessionState
from pktchain.functions.nat.table import SessionKey, SessionRecord
from pktchain.functions.router.hosts import HostState
from pktchain.packet.address import format_ip, format_mac
from pktchain.packet.headers import IpProto

__all__ = [
    "MAX_RECORD",
    "ApplyRefusal",
    "Change",
    "Deletion",
    "ForwardKey",
    "ForwardRecord",
    "HostKey",
    "HostRecord",
    "Record",
    "RecordKind",
    "RecordProblem",
    "RouterState",
    "SessionRecord",
    "StateKey",
    "Takeover",
    "decode_changes",
    "encode_changes",
    "state_key",
]

HostKey = bytes
"""A host's IPv4 address (4 bytes)."""

ForwardKey = tuple[int, int]
"""(IP protocol, external port) of a port forward."""


class RecordKind(IntEnum):
    """The key spaces of the replicated state, in the order a snapshot sends them
    (a session may use a port forward, which may belong to a host)."""

    HOST = 1
    FORWARD = 2
    SESSION = 3


StateKey = tuple[RecordKind, HostKey | ForwardKey | SessionKey]
"""A key of the replicated state, tagged with its key space."""


@dataclass(frozen=True, slots=True)
class HostRecord:
    """A host of an internal subnet, as the router tracks it (``Router.hosts``)."""

    ip: bytes
    mac: bytes
    interface: str
    """The master's interface for the host's subnet (the backup finds its own by address)."""
    network_id: str
    state: HostState
    """STATIC (announced), or ACTIVE / PROBING (learned; aged by the master only)."""
    forward_port: int | None
    """The host's automatic forwarding port (its rule travels as a ForwardRecord)."""

    @property
    def key(self) -> HostKey:
        return self.ip

    def __repr__(self) -> str:
        return (
            f"HostRecord({format_ip(self.ip)} {format_mac(self.mac)} on {self.interface}, "
            f"{self.state.value}, forward {self.forward_port})"
        )


@dataclass(frozen=True, slots=True)
class ForwardRecord:
    """A port forwarding rule: an admin rule or a host's automatic one."""

    proto: int
    """TCP or UDP."""
    external_port: int
    inside_ip: bytes
    inside_port: int
    automatic: bool

    @property
    def key(self) -> ForwardKey:
        return (self.proto, self.external_port)


Record = HostRecord | ForwardRecord | SessionRecord


@dataclass(frozen=True, slots=True)
class Deletion:
    """The key ``key`` of ``kind`` no longer has a value."""

    kind: RecordKind
    key: HostKey | ForwardKey | SessionKey


Change = HostRecord | ForwardRecord | SessionRecord | Deletion


def state_key(change: Change) -> StateKey:
    """The tagged key a change is about."""
    if isinstance(change, Deletion):
        return (change.kind, change.key)
    if isinstance(change, SessionRecord):
        return (RecordKind.SESSION, change.key)
    if isinstance(change, ForwardRecord):
        return (RecordKind.FORWARD, change.key)
    return (RecordKind.HOST, change.key)


@dataclass(frozen=True, slots=True)
class RouterState:
    """A whole snapshot of the replicated state, each part in key order."""

    hosts: tuple[HostRecord, ...]
    forwards: tuple[ForwardRecord, ...]
    sessions: tuple[SessionRecord, ...]

    def records(self) -> list[Record]:
        """Every record, in the order they are applied: hosts, forwards, sessions."""
        return [*self.hosts, *self.forwards, *self.sessions]


@dataclass(frozen=True, slots=True)
class Takeover:
    """What a backup made its own when it took over (``Router.takeover``)."""

    sessions: int
    """Copied NAT sessions that now have a timer of their own, from the takeover."""
    hosts: int
    """Learned hosts whose aging restarted from the takeover."""


class ApplyRefusal(StrEnum):
    """Why a router did not apply a host or port forward record (sessions: the NAT's
    :class:`~pktchain.functions.nat.table.SessionRefusal`)."""

    NO_NAT = "no-nat"
    """A port forward or a session for a router without NAT."""
    HOST_NO_INTERFACE = "host-no-interface"
    """No internal interface of this router has the host's address on its subnet."""
    HOST_TABLE_FULL = "host-table-full"
    FORWARD_INVALID = "forward-invalid"
    """The inside address is not a host of an internal interface or NAT network."""


class RecordProblem(StrEnum):
    """Why a record on the wire was skipped (counted as ``record-<value>``)."""

    TRUNCATED = "truncated"  # shorter than its kind and length say
    LENGTH = "length"  # its length does not fit its kind's layout
    UNKNOWN_KIND = "unknown-kind"
    PROTOCOL = "protocol"  # not a protocol this kind carries
    PORT = "port"  # a port out of range for the protocol
    STATE = "state"  # an unknown host or TCP state code, or one that does not fit
    MAC = "mac"  # not a unicast MAC
    TEXT = "text"  # a name that is empty, too long or not UTF-8
    APPLY = "apply-error"  # read, but applying it failed (a fault here; should stay 0)


class _Wire(IntEnum):
    """The kind byte of each record on the wire."""

    HOST = 1
    HOST_DELETED = 2
    FORWARD = 3
    FORWARD_DELETED = 4
    SESSION = 5
    SESSION_DELETED = 6


_HEAD = struct.Struct("!BH")
_HOST = struct.Struct("!4s6sBH")
_HOST_DELETED = struct.Struct("!4s")
_FORWARD = struct.Struct("!BH4sHB")
_FORWARD_DELETED = struct.Struct("!BH")
_SESSION = struct.Struct("!B4sH4sHHB")
_SESSION_DELETED = struct.Struct("!B4sH4sH")
_MAX_NAME = 255
MAX_RECORD = _HEAD.size + _HOST.size + 2 + 2 * _MAX_NAME
"""The largest record on the wire (a host with the longest names)."""

_TCP, _UDP, _ICMP = int(IpProto.TCP), int(IpProto.UDP), int(IpProto.ICMP)
_FORWARDED = frozenset((_TCP, _UDP))
_SESSIONS = frozenset((_TCP, _UDP, _ICMP))

# Codes on the wire, stated here rather than taken from the enums' order.
_HOST_STATES = {HostState.ACTIVE: 1, HostState.PROBING: 2, HostState.STATIC: 3}
_TCP_STATES = {
    TcpSessionState.CLOSED: 1,
    TcpSessionState.INT_SYN: 2,
    TcpSessionState.EXT_SYN: 3,
    TcpSessionState.ESTABLISHED: 4,
    TcpSessionState.INT_FIN: 5,
    TcpSessionState.EXT_FIN: 6,
    TcpSessionState.BOTH_FIN: 7,
    TcpSessionState.TRANSITORY: 8,
}
_HOST_STATE_OF = {code: state for state, code in _HOST_STATES.items()}
_TCP_STATE_OF = {code: state for state, code in _TCP_STATES.items()}


class _UnreadableError(Exception):
    """A record that does not parse (internal to the decoder)."""

    def __init__(self, problem: RecordProblem) -> None:
        super().__init__(problem.value)
        self.problem = problem


def _name(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > _MAX_NAME:
        raise ValueError(f"name {text[:20]!r}... is over {_MAX_NAME} bytes")
    return bytes((len(data),)) + data


def _encode_one(change: Change) -> bytes:
    if isinstance(change, SessionRecord):
        state = 0 if change.state is None else _TCP_STATES[change.state]
        kind, body = (
            _Wire.SESSION,
            _SESSION.pack(
                change.proto,
                change.internal_address,
                change.internal_port,
                change.remote_address,
                change.remote_port,
                change.external_port,
                state,
            ),
        )
    elif isinstance(change, ForwardRecord):
        kind, body = (
            _Wire.FORWARD,
            _FORWARD.pack(
                change.proto,
                change.external_port,
                change.inside_ip,
                change.inside_port,
                int(change.automatic),
            ),
        )
    elif isinstance(change, HostRecord):
        kind = _Wire.HOST
        body = (
            _HOST.pack(change.ip, change.mac, _HOST_STATES[change.state], change.forward_port or 0)
            + _name(change.interface)
            + _name(change.network_id)
        )
    elif change.kind is RecordKind.SESSION:
        kind, body = _Wire.SESSION_DELETED, _SESSION_DELETED.pack(*change.key)
    elif change.kind is RecordKind.FORWARD:
        kind, body = _Wire.FORWARD_DELETED, _FORWARD_DELETED.pack(*change.key)
    else:
        kind, body = _Wire.HOST_DELETED, _HOST_DELETED.pack(change.key)
    return _HEAD.pack(kind, len(body)) + body


def encode_changes(changes: Iterable[Change]) -> bytes:
    """The wire form of ``changes``, one record after the other.

    Raises ValueError (or struct.error, a ValueError's kin) for a record that
    cannot be represented: the sender's own bug, never the wire's."""
    return b"".join(_encode_one(change) for change in changes)


def _port(value: int, *, zero: bool = False) -> int:
    if value == 0 and not zero:
        raise _UnreadableError(RecordProblem.PORT)
    return value


def _text(body: bytes, at: int) -> tuple[str, int]:
    if at >= len(body):
        raise _UnreadableError(RecordProblem.LENGTH)
    size = body[at]
    end = at + 1 + size
    if end > len(body):
        raise _UnreadableError(RecordProblem.LENGTH)
    try:
        return body[at + 1 : end].decode("utf-8"), end
    except UnicodeDecodeError:
        raise _UnreadableError(RecordProblem.TEXT) from None


def _fixed(layout: struct.Struct, body: bytes) -> tuple[Any, ...]:
    if len(body) != layout.size:
        raise _UnreadableError(RecordProblem.LENGTH)
    return layout.unpack(body)


def _session_ports(proto: int, internal_port: int, remote_port: int) -> None:
    if proto == _ICMP:
        if remote_port != 0:  # an echo session's remote "port" is always 0
            raise _UnreadableError(RecordProblem.PORT)
    elif proto in _SESSIONS:
        _port(internal_port)
        _port(remote_port)
    else:
        raise _UnreadableError(RecordProblem.PROTOCOL)


def _decode_one(kind: int, body: bytes) -> Change:
    if kind == _Wire.SESSION:
        proto, internal, iport, remote, rport, eport, code = _fixed(_SESSION, body)
        _session_ports(proto, iport, rport)
        if proto != _ICMP:
            _port(eport)
        if proto == _TCP:
            state = _TCP_STATE_OF.get(code)
            if state is None:
                raise _UnreadableError(RecordProblem.STATE)
        elif code != 0:
            raise _UnreadableError(RecordProblem.STATE)
        else:
            state = None
        return SessionRecord(proto, internal, iport, remote, rport, eport, state)
    if kind == _Wire.SESSION_DELETED:
        proto, internal, iport, remote, rport = _fixed(_SESSION_DELETED, body)
        _session_ports(proto, iport, rport)
        return Deletion(RecordKind.SESSION, (proto, internal, iport, remote, rport))
    if kind == _Wire.FORWARD:
        proto, eport, inside, iport, automatic = _fixed(_FORWARD, body)
        if proto not in _FORWARDED:
            raise _UnreadableError(RecordProblem.PROTOCOL)
        if automatic not in (0, 1):
            raise _UnreadableError(RecordProblem.STATE)
        return ForwardRecord(proto, _port(eport), inside, _port(iport), bool(automatic))
    if kind == _Wire.FORWARD_DELETED:
        proto, eport = _fixed(_FORWARD_DELETED, body)
        if proto not in _FORWARDED:
            raise _UnreadableError(RecordProblem.PROTOCOL)
        return Deletion(RecordKind.FORWARD, (proto, _port(eport)))
    if kind == _Wire.HOST:
        if len(body) < _HOST.size:
            raise _UnreadableError(RecordProblem.LENGTH)
        ip, mac, code, forward = _HOST.unpack_from(body)
        host_state = _HOST_STATE_OF.get(code)
        if host_state is None:
            raise _UnreadableError(RecordProblem.STATE)
        if mac[0] & 1:
            raise _UnreadableError(RecordProblem.MAC)
        interface, at = _text(body, _HOST.size)
        network_id, at = _text(body, at)
        if at != len(body):
            raise _UnreadableError(RecordProblem.LENGTH)
        if not interface:
            raise _UnreadableError(RecordProblem.TEXT)
        return HostRecord(ip, mac, interface, network_id, host_state, forward or None)
    if kind == _Wire.HOST_DELETED:
        (ip,) = _fixed(_HOST_DELETED, body)
        return Deletion(RecordKind.HOST, ip)
    raise _UnreadableError(RecordProblem.UNKNOWN_KIND)


def decode_changes(data: bytes) -> tuple[list[Change], Counter[RecordProblem]]:
    """The changes in ``data`` and the records skipped, by problem; never raises.

    A record cut short by the end of ``data`` ends the decoding (counted
    TRUNCATED): nothing after it can be framed."""
    changes: list[Change] = []
    problems: Counter[RecordProblem] = Counter()
    at, end = 0, len(data)
    head = _HEAD.size
    while at < end:
        if at + head > end:
            problems[RecordProblem.TRUNCATED] += 1
            break
        kind, length = _HEAD.unpack_from(data, at)
        start = at + head
        at = start + length
        if at > end:
            problems[RecordProblem.TRUNCATED] += 1
            break
        try:
            changes.append(_decode_one(kind, data[start:at]))
        except _UnreadableError as skip:
            problems[skip.problem] += 1
    return changes, problems
