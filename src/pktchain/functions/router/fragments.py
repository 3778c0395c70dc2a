"""Fragmented datagrams through the NAT, and the IPv4 ID of the datagrams it translates.

The router translates fragments one by one, without reassembling them
(RFC 4787 §11 and REQ-14): the first fragment (offset 0) carries the transport
header, so the NAT translates it as it would the whole datagram, and an
incremental checksum update is right for the whole datagram, whose checksum
it carries. The later fragments carry no transport header; the
:class:`FragmentTable` remembers, per datagram (RFC 791 §3.2's reassembly key:
source, destination, protocol, identification, and the side it came from),
the addresses and ID the first fragment left with, so that each later
fragment gets the same IP-level rewrite. Fragments that arrive before their
first fragment are held, bounded per datagram, in bytes and in time, and
released once it comes ("Received Fragments Out of Order", RFC 4787 §11); a
datagram whose first fragment never comes is discarded after
``fragment_timeout``, and a flood of fragments evicts the oldest datagrams
instead of growing the table (REQ-14a). This module keeps the books; the
router translates, forwards and counts.

Datagram states (one table, as for the neighbour cache in
:mod:`~pktchain.functions.common.arp`):

==========  ================  ==========  ==========================================
state       event             next state  action
==========  ================  ==========  ==========================================
(new)       FIRST_TRANSLATED  TRANSLATED  RECORD: remember the translation and ID
(new)       FIRST_REFUSED     REFUSED     NONE (the NAT counted why)
(new)       LATER             WAITING     HOLD the fragment
WAITING     LATER             WAITING     HOLD the fragment
WAITING     FIRST_TRANSLATED  TRANSLATED  RELEASE: record, then the held fragments follow
WAITING     FIRST_REFUSED     REFUSED     DISCARD the held fragments
TRANSLATED  LATER             TRANSLATED  FOLLOW: the recorded rewrite
TRANSLATED  FIRST_TRANSLATED  TRANSLATED  KEEP the recorded ID (a duplicate first fragment)
TRANSLATED  FIRST_REFUSED     TRANSLATED  NONE (this copy is dropped)
REFUSED     LATER             REFUSED     DROP the fragment
REFUSED     FIRST_TRANSLATED  TRANSLATED  RECORD
REFUSED     FIRST_REFUSED     REFUSED     NONE
any         EXPIRED, EVICTED  (gone)      DISCARD the held fragments, if any
==========  ================  ==========  ==========================================

The IPv4 ID (RFC 7857 §10, RFC 6864 §5.3.1): after source translation, two
inside hosts that used the same ID toward the same destination would send
datagrams with the same (source, destination, protocol, ID), which a receiver
reassembling them could mix up. Non-atomic datagrams (DF clear, or fragments;
RFC 6864 §4) leaving with the external address therefore get an ID from
:class:`IdGenerator`, the hash-based generator of RFC 7739 §5.3 (written for
IPv6 fragment identifications; the same reasoning holds for IPv4): a counter
per (source, destination, protocol) bucket, so IDs toward one destination
repeat only after 65,536 datagrams, starting from a secret random offset, so
they reveal neither the inside hosts' counters nor the traffic to other
destinations. Atomic datagrams (DF set, not fragmented) keep their ID: it has
no meaning (RFC 6864 §4.1). :class:`IdMemory` remembers the IDs it gave so that
an ICMP error quoting such a datagram goes back inside with the ID its sender
chose (RFC 5508 REQ-4a: the embedded packet is translated back).
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "FRAGMENT_TRANSITIONS",
    "Datagram",
    "DatagramState",
    "FragmentAction",
    "FragmentEvent",
    "FragmentKey",
    "FragmentStatus",
    "FragmentTable",
    "Held",
    "HoldOutcome",
    "IdGenerator",
    "IdMemory",
    "TranslatedKey",
]

FragmentKey = tuple[bool, bytes, bytes, int, int]
"""(arrived on the external interface, source, destination, protocol, IP ID) of a
datagram as it arrived."""

TranslatedKey = tuple[bytes, bytes, int, int]
"""(source, destination, protocol, IP ID) of a datagram as it left."""

Held = tuple[str, bytes]
"""A held fragment: the interface it came in on and the frame as it arrived."""


class DatagramState(Enum):
    """Where a fragmented datagram is (see the module's table)."""

    WAITING = "waiting"
    """Later fragments are held; the first one has not come."""
    TRANSLATED = "translated"
    """The first fragment was translated; later ones get the same rewrite."""
    REFUSED = "refused"
    """The NAT refused the first fragment; later ones are dropped."""


class FragmentEvent(Enum):
    """What happens to a datagram."""

    FIRST_TRANSLATED = "first-translated"
    FIRST_REFUSED = "first-refused"
    LATER = "later"  # a fragment with a non-zero offset
    EXPIRED = "expired"  # fragment_timeout after the datagram was first seen
    EVICTED = "evicted"  # the table was full and a new datagram took its place


class FragmentAction(Enum):
    """What the router does on a transition."""

    NONE = "none"
    HOLD = "hold"
    RECORD = "record"
    RELEASE = "release"
    FOLLOW = "follow"
    KEEP = "keep"
    DROP = "drop"
    DISCARD = "discard"


_S = DatagramState
_E = FragmentEvent
_A = FragmentAction
FRAGMENT_TRANSITIONS: dict[
    tuple[DatagramState | None, FragmentEvent], tuple[DatagramState | None, FragmentAction]
] = {
    (None, _E.FIRST_TRANSLATED): (_S.TRANSLATED, _A.RECORD),
    (None, _E.FIRST_REFUSED): (_S.REFUSED, _A.NONE),
    (None, _E.LATER): (_S.WAITING, _A.HOLD),
    (_S.WAITING, _E.LATER): (_S.WAITING, _A.HOLD),
    (_S.WAITING, _E.FIRST_TRANSLATED): (_S.TRANSLATED, _A.RELEASE),
    (_S.WAITING, _E.FIRST_REFUSED): (_S.REFUSED, _A.DISCARD),
    (_S.TRANSLATED, _E.LATER): (_S.TRANSLATED, _A.FOLLOW),
    (_S.TRANSLATED, _E.FIRST_TRANSLATED): (_S.TRANSLATED, _A.KEEP),
    (_S.TRANSLATED, _E.FIRST_REFUSED): (_S.TRANSLATED, _A.NONE),
    (_S.REFUSED, _E.LATER): (_S.REFUSED, _A.DROP),
    (_S.REFUSED, _E.FIRST_TRANSLATED): (_S.TRANSLATED, _A.RECORD),
    (_S.REFUSED, _E.FIRST_REFUSED): (_S.REFUSED, _A.NONE),
    **{(state, event): (None, _A.DISCARD) for state in _S for event in (_E.EXPIRED, _E.EVICTED)},
}
"""(state or None for a new datagram, event) -> (next state or None when forgotten, action)."""


class HoldOutcome(Enum):
    """Whether a fragment could be held."""

    HELD = "held"
    QUEUE_FULL = "queue-full"  # fragment_queue_limit fragments of its datagram already wait
    MEMORY_FULL = "memory-full"  # fragment_held_bytes would be exceeded


@dataclass(frozen=True, slots=True)
class FragmentStatus:
    """How full the fragment table is."""

    datagrams: int
    """Fragmented datagrams remembered (waiting, translated or refused)."""
    held: int
    """Fragments held until their first fragment comes."""
    held_bytes: int
    """Their bytes, frames as they arrived."""


class Datagram:
    """A fragmented datagram the router has seen part of."""

    __slots__ = ("deadline", "dst", "held", "held_bytes", "ident", "src", "state")

    def __init__(self, state: DatagramState, deadline: float) -> None:
        self.state = state
        self.deadline = deadline
        self.src = b""
        """TRANSLATED: the source address the first fragment left with."""
        self.dst = b""
        """TRANSLATED: the destination address the first fragment left with."""
        self.ident = -1
        """TRANSLATED: the IP ID the first fragment left with."""
        self.held: list[Held] = []
        self.held_bytes = 0


class FragmentTable:
    """The datagrams being translated fragment by fragment, oldest first.

    Every datagram lives ``timeout`` seconds from its first fragment seen,
    rounded up to the next whole second (so that expiry runs at most once a
    second, whatever the fragment rate). The timeout is one setting, so the
    table's insertion order is also its deadline order: expiry and eviction
    both take from the front.
    """

    def __init__(
        self, *, timeout: float, datagram_limit: int, queue_limit: int, held_bytes: int
    ) -> None:
        self._timeout = timeout
        self._datagram_limit = datagram_limit
        self._queue_limit = queue_limit
        self._held_bytes_limit = held_bytes
        self._datagrams: dict[FragmentKey, Datagram] = {}
        self.held_bytes = 0
        """Bytes of the fragments held for all datagrams."""

    def __len__(self) -> int:
        return len(self._datagrams)

    def get(self, key: FragmentKey) -> Datagram | None:
        """The datagram of ``key``, if it is remembered."""
        return self._datagrams.get(key)

    def add(
        self, key: FragmentKey, state: DatagramState, now: float
    ) -> tuple[Datagram, Datagram | None]:
        """Remember a new datagram; returns it and the one evicted to make room, if any."""
        evicted: Datagram | None = None
        datagrams = self._datagrams
        if len(datagrams) >= self._datagram_limit:
            evicted = datagrams.pop(next(iter(datagrams)))
            self.held_bytes -= evicted.held_bytes
        datagram = datagrams[key] = Datagram(state, math.ceil(now + self._timeout))
        return datagram, evicted

    def hold(self, datagram: Datagram, iface: str, frame: bytes) -> HoldOutcome:
        """Keep ``frame`` (as it arrived on ``iface``) until the first fragment comes."""
        if len(datagram.held) >= self._queue_limit:
            return HoldOutcome.QUEUE_FULL
        size = len(frame)
        if self.held_bytes + size > self._held_bytes_limit:
            return HoldOutcome.MEMORY_FULL
        datagram.held.append((iface, frame))
        datagram.held_bytes += size
        self.held_bytes += size
        return HoldOutcome.HELD

    def take_held(self, datagram: Datagram) -> list[Held]:
        """The fragments held for ``datagram``, which no longer holds them."""
        held = datagram.held
        datagram.held = []
        self.held_bytes -= datagram.held_bytes
        datagram.held_bytes = 0
        return held

    def expire(self, now: float) -> list[Datagram]:
        """Forget the datagrams whose time is up; returns them (with what they held)."""
        expired: list[Datagram] = []
        datagrams = self._datagrams
        while datagrams:
            key = next(iter(datagrams))
            datagram = datagrams[key]
            if datagram.deadline > now:
                break
            del datagrams[key]
            self.held_bytes -= datagram.held_bytes
            expired.append(datagram)
        return expired

    def next_deadline(self) -> float | None:
        """When the oldest datagram expires (None: none remembered)."""
        datagrams = self._datagrams
        return datagrams[next(iter(datagrams))].deadline if datagrams else None

    def status(self) -> FragmentStatus:
        """How full the table is (counts the held fragments: for people, not per packet)."""
        held = sum(len(d.held) for d in self._datagrams.values())
        return FragmentStatus(len(self._datagrams), held, self.held_bytes)


_ID_BUCKETS = 4096


class IdGenerator:
    """IPv4 IDs for translated non-atomic datagrams (RFC 7739 §5.3's hash-based generator).

    ``next_id(src, dst, proto)``: a keyed hash of the three picks a counter
    among ``buckets`` and a secret offset; the ID is counter + offset and the
    counter moves on. IDs for one (source, destination, protocol) therefore
    repeat only after 65,536 datagrams went through its bucket (RFC 6864 §4:
    unique within the datagram's lifetime), and a receiver cannot read the
    NAT's total traffic from them.
    """

    def __init__(self, rng: random.Random, buckets: int = _ID_BUCKETS) -> None:
        self._key = rng.randbytes(16)
        self._counters = array("H", (rng.randrange(0x10000) for _ in range(buckets)))
        self._buckets = buckets

    def next_id(self, src: bytes, dst: bytes, proto: int) -> int:
        """A fresh ID for a datagram from ``src`` to ``dst`` with protocol ``proto``."""
        digest = hashlib.blake2b(src + dst + bytes((proto,)), digest_size=8, key=self._key)
        value = int.from_bytes(digest.digest(), "big")
        index = value % self._buckets
        counter = self._counters[index]
        self._counters[index] = (counter + 1) & 0xFFFF
        return (counter + (value >> 48)) & 0xFFFF


class IdMemory:
    """The IDs the router gave, for ``lifetime`` seconds and at most ``limit`` of them.

    Keyed by the datagram as it left (:data:`TranslatedKey`), it gives back the
    source and ID it arrived with. Bounded like the fragment table: oldest
    first, the oldest forgotten when full.
    """

    def __init__(self, *, limit: int, lifetime: float) -> None:
        self._limit = limit
        self._lifetime = lifetime
        self._records: dict[TranslatedKey, tuple[float, bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def remember(self, key: TranslatedKey, src: bytes, ident: int, now: float) -> None:
        """``key`` left the router; it arrived from ``src`` with ID ``ident``."""
        if self._limit == 0:
            return
        records = self._records
        records.pop(key, None)  # a reused ID starts a new lifetime, at the back
        while records:
            oldest = next(iter(records))
            if records[oldest][0] > now and len(records) < self._limit:
                break
            del records[oldest]
        records[key] = (now + self._lifetime, src, ident)

    def recall(self, key: TranslatedKey, now: float) -> tuple[bytes, int] | None:
        """(source, ID) that the datagram ``key`` arrived with, if still remembered."""
        record = self._records.get(key)
        if record is None or record[0] <= now:
            return None
        return record[1], record[2]
