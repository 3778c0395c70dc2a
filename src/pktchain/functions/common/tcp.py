"""TCP session tracking for the NAPT: one state table, after RFC 6146 §3.5.2.

RFC 7857 §2.1 asks a NAT44 to track TCP with the state machine of RFC 6146
§3.5.2 (written for NAT64), with "internal" and "external" in place of "V6" and
"V4". Its only purpose is to choose each session's idle timeout: a connection
being opened or closed is kept for the transitory timeout, an established one
for the established timeout (RFC 5382 REQ-5). Nothing here drops a packet: a
packet that matches a session is always translated (RFC 5382 REQ-2, any valid
TCP sequence), and packets without a session are handled by the NAT before it
asks this table.
"""

from __future__ import annotations

from enum import Enum

from pktchain.packet.headers import TcpFlag

__all__ = [
    "ARMED_LIFETIME",
    "TCP_TRANSITIONS",
    "Lifetime",
    "TcpEvent",
    "TcpSessionState",
    "state_changing",
    "tcp_event",
    "tcp_transition",
]


class TcpSessionState(Enum):
    """Session states of RFC 6146 §3.5.2.1 (V6 = internal, V4 = external)."""

    CLOSED = "closed"
    INT_SYN = "int-syn"  # V6 INIT: the inside host sent a SYN
    EXT_SYN = "ext-syn"  # V4 INIT: an admitted outside SYN was let in
    ESTABLISHED = "established"
    INT_FIN = "int-fin"  # V6 FIN RCV
    EXT_FIN = "ext-fin"  # V4 FIN RCV
    BOTH_FIN = "both-fin"  # V6 FIN + V4 FIN RCV
    TRANSITORY = "transitory"  # TRANS: after a RST (RFC 7857 §2.2)


class TcpEvent(Enum):
    """A packet of the session, by direction and by the one control bit that matters."""

    INT_SYN = "int-syn"
    EXT_SYN = "ext-syn"
    INT_FIN = "int-fin"
    EXT_FIN = "ext-fin"
    INT_RST = "int-rst"
    EXT_RST = "ext-rst"
    INT_OTHER = "int-other"
    EXT_OTHER = "ext-other"


class Lifetime(Enum):
    """Which timeout a transition (re)arms; KEEP leaves the session's expiry alone."""

    OPENING = "opening"  # TCP_TRANS of RFC 6146 for V6 INIT (RFC 7857 §2.1 "open")
    INCOMING_SYN = "incoming-syn"  # TCP_INCOMING_SYN, 6 s
    ESTABLISHED = "established"  # TCP_EST
    CLOSING = "closing"  # TCP_TRANS after both FINs or a RST (RFC 7857 §2.1 "closing", §2.2)
    KEEP = "keep"


_S = TcpSessionState
_E = TcpEvent
_L = Lifetime

# RFC 6146 §3.5.2.2, one row per (state, event) that moves the session or
# re-arms its timer. Pairs not listed leave the state and the expiry as they are
# (the packet is still translated). Additions to RFC 6146, from RFC 7857 §2.2:
# a RST in a FIN state also leads to TRANSITORY (4 min, then removal).
TCP_TRANSITIONS: dict[tuple[TcpSessionState, TcpEvent], tuple[TcpSessionState, Lifetime]] = {
    # CLOSED: only a SYN opens a session (the NAT drops other packets first).
    (_S.CLOSED, _E.INT_SYN): (_S.INT_SYN, _L.OPENING),
    (_S.CLOSED, _E.EXT_SYN): (_S.EXT_SYN, _L.INCOMING_SYN),
    # V6 INIT: the answer (SYN-ACK, or a SYN in a simultaneous open, RFC 5382 REQ-2a).
    (_S.INT_SYN, _E.EXT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.INT_SYN, _E.INT_SYN): (_S.INT_SYN, _L.OPENING),
    # V4 INIT: the inside host answers the admitted outside SYN.
    (_S.EXT_SYN, _E.INT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    # ESTABLISHED
    (_S.ESTABLISHED, _E.INT_FIN): (_S.INT_FIN, _L.ESTABLISHED),
    (_S.ESTABLISHED, _E.EXT_FIN): (_S.EXT_FIN, _L.ESTABLISHED),
    (_S.ESTABLISHED, _E.INT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.ESTABLISHED, _E.EXT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.ESTABLISHED, _E.INT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.ESTABLISHED, _E.EXT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.ESTABLISHED, _E.INT_OTHER): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.ESTABLISHED, _E.EXT_OTHER): (_S.ESTABLISHED, _L.ESTABLISHED),
    # V6 FIN RCV
    (_S.INT_FIN, _E.EXT_FIN): (_S.BOTH_FIN, _L.CLOSING),
    (_S.INT_FIN, _E.INT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.INT_FIN, _E.EXT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.INT_FIN, _E.INT_FIN): (_S.INT_FIN, _L.ESTABLISHED),
    (_S.INT_FIN, _E.INT_OTHER): (_S.INT_FIN, _L.ESTABLISHED),
    (_S.INT_FIN, _E.EXT_OTHER): (_S.INT_FIN, _L.ESTABLISHED),
    # V4 FIN RCV
    (_S.EXT_FIN, _E.INT_FIN): (_S.BOTH_FIN, _L.CLOSING),
    (_S.EXT_FIN, _E.INT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.EXT_FIN, _E.EXT_RST): (_S.TRANSITORY, _L.CLOSING),
    (_S.EXT_FIN, _E.EXT_FIN): (_S.EXT_FIN, _L.ESTABLISHED),
    (_S.EXT_FIN, _E.INT_OTHER): (_S.EXT_FIN, _L.ESTABLISHED),
    (_S.EXT_FIN, _E.EXT_OTHER): (_S.EXT_FIN, _L.ESTABLISHED),
    # V6 FIN + V4 FIN RCV: everything is translated, nothing re-arms the timer,
    # except a new SYN on the same 5-tuple.
    (_S.BOTH_FIN, _E.INT_SYN): (_S.INT_SYN, _L.OPENING),
    (_S.BOTH_FIN, _E.EXT_SYN): (_S.EXT_SYN, _L.INCOMING_SYN),
    # TRANS: any packet but a RST revives the connection.
    (_S.TRANSITORY, _E.INT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.TRANSITORY, _E.EXT_SYN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.TRANSITORY, _E.INT_FIN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.TRANSITORY, _E.EXT_FIN): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.TRANSITORY, _E.INT_OTHER): (_S.ESTABLISHED, _L.ESTABLISHED),
    (_S.TRANSITORY, _E.EXT_OTHER): (_S.ESTABLISHED, _L.ESTABLISHED),
}


def _armed_lifetimes() -> dict[TcpSessionState, Lifetime]:
    """The lifetime every transition into each state arms (one per state, or the table
    is inconsistent with the use below)."""
    armed: dict[TcpSessionState, set[Lifetime]] = {}
    for (_state, _event), (next_state, lifetime) in TCP_TRANSITIONS.items():
        if lifetime is not Lifetime.KEEP:
            armed.setdefault(next_state, set()).add(lifetime)
    table: dict[TcpSessionState, Lifetime] = {}
    for state in TcpSessionState:
        lifetimes = armed.get(state, {Lifetime.OPENING})
        if len(lifetimes) != 1:
            names = sorted(lifetime.value for lifetime in lifetimes)
            raise RuntimeError(f"TCP_TRANSITIONS arms {state} with {names}")
        (table[state],) = lifetimes
    return table


ARMED_LIFETIME: dict[TcpSessionState, Lifetime] = _armed_lifetimes()
"""The timeout a session in each state was last armed with: every row of
:data:`TCP_TRANSITIONS` that leads into a state and re-arms the timer arms the
same one, and the rows that do not re-arm keep the state. A session copied to
another NAT without its timer (a backup taking over) restarts it with this
lifetime. CLOSED is never entered by a transition (a session leaves it with its
first segment); it is given the opening timeout."""

_SYN = int(TcpFlag.SYN)
_FIN = int(TcpFlag.FIN)
_RST = int(TcpFlag.RST)
_STATE_CHANGING = _SYN | _FIN | _RST


def tcp_event(flags: int, outbound: bool) -> TcpEvent:
    """The event a segment with control bits ``flags`` is; RST wins over SYN and FIN."""
    if flags & _RST:
        return TcpEvent.INT_RST if outbound else TcpEvent.EXT_RST
    if flags & _SYN:
        return TcpEvent.INT_SYN if outbound else TcpEvent.EXT_SYN
    if flags & _FIN:
        return TcpEvent.INT_FIN if outbound else TcpEvent.EXT_FIN
    return TcpEvent.INT_OTHER if outbound else TcpEvent.EXT_OTHER


def tcp_transition(state: TcpSessionState, event: TcpEvent) -> tuple[TcpSessionState, Lifetime]:
    """Next state and timer for ``event`` in ``state`` (unlisted pairs: no change)."""
    return TCP_TRANSITIONS.get((state, event), (state, Lifetime.KEEP))


def state_changing(flags: int) -> bool:
    """Whether a segment carries SYN, FIN or RST, which a flow cache must not absorb."""
    return bool(flags & _STATE_CHANGING)
