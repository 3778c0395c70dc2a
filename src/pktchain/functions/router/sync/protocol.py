"""The state sync protocol without I/O: the master's sender, the backup's receiver.

Reliable in the manner of conntrackd's FTFW mode (docs/ha-sync.md): every
state-carrying message has a sequence number; the backup acknowledges
cumulatively, at most every ``ack_every`` messages or ``ack_delay`` seconds;
the master keeps what is unacknowledged in a bounded window and sends it again
after ``resend_timeout`` or when the backup reports a gap (NACK). A stream
always begins with a snapshot, in chunks, and continues with live changes, so
a backup that (re)connects, asks for it, or falls hopelessly behind is brought
to the master's whole view, never left with a partial one.

Rules, one place:

* **Streams.** The backup's HELLO (on each new connection, resent every
  ``hello_interval`` until answered) carries a fresh nonce. The master answers
  with START (seq 1), echoing it, under a new random stream id; START begins a
  snapshot: SNAPSHOT chunks, then END; CHANGES follow. A START with another
  nonce, and any message of another stream, is refused: an old connection's or
  old stream's frames cannot be replayed into the new one.
* **Snapshot.** At START the backup notes every key it holds; each record of
  the stream crosses its key off; at END what is left is deleted. Until END
  the backup keeps what it had (better than nothing if the master dies
  mid-snapshot). The master walks its keys as they were at START, reading
  each record when its chunk is sent; what changes meanwhile is noted by the
  router and sent after END, so the backup ends at the master's view.
* **Changes.** The master's router notes the keys that change (a set: a key
  changed twice is sent once, with its latest value; a refresh is not a
  change); every ``flush_interval`` the sender takes at most
  ``records_per_message`` keys per message, as long as the window has room,
  and makes at most ``send_burst`` messages at a time (snapshot chunks too).
  A slow backup therefore costs no memory beyond the set of changed keys.
* **Acknowledgement.** The backup applies messages in seq order, holds up to
  ``window`` that arrived early, and asks for the missing ones (NACK, at most
  every ``nack_interval`` for the same gap); a duplicate is refused and
  re-acknowledged at once; an ALIVE naming a seq it lacks reveals a lost tail.
* **Resync.** The master starts a new stream when the backup asks (RESYNC,
  after a message whose records it could not read), and when its window stays
  full without progress for ``stall_timeout``.
* **Liveness.** The master sends ALIVE after ``alive_interval`` of silence
  and the backup answers each with an ACK; a side that hears nothing
  authentic for ``peer_timeout`` asks for its connection to be closed
  (:attr:`wants_close`), and the transport connects again.

Both sides are sans-IO: bytes and ``now`` in (``on_bytes``, ``on_timer``),
bytes out (``data_to_send``), a deadline (``next_deadline``); the transport
(:mod:`pktchain.node.hasync`) calls ``connection_made`` / ``connection_lost``
around each TCP connection. Nothing from the wire raises: each refused frame
is counted under ``refused-<Refusal>``, each skipped record under
``record-<RecordProblem>``, each record the router would not apply under
``apply-<reason>``.
"""

from __future__ import annotations

import bisect
import random
import struct
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

from pktchain.functions.nat.table import SessionRefusal
from pktchain.functions.router.sync.records import (
    MAX_RECORD,
    ApplyRefusal,
    Change,
    Record,
    RecordProblem,
    StateKey,
    Takeover,
    decode_changes,
    encode_changes,
    state_key,
)
from pktchain.functions.router.sync.wire import (
    HEADER,
    MAC_SIZE,
    MAX_FRAME,
    NONCE_SIZE,
    TO_BACKUP,
    TO_MASTER,
    FrameReader,
    Message,
    MessageType,
    Refusal,
    check_secret,
    encode_message,
    u32,
    u64,
)

__all__ = [
    "LagStats",
    "ReceiverSettings",
    "ReplicaSource",
    "ReplicaTarget",
    "SenderSettings",
    "SyncEndpoint",
    "SyncReceiver",
    "SyncSender",
]

_SENDER_READ_LIMIT = 1024
"""The master reads only HELLO, ACK, NACK and RESYNC: a few dozen bytes each."""


class ReplicaSource(Protocol):
    """What the sender needs of the master's router (``Router`` has it)."""

    def track_changes(self, enabled: bool) -> None: ...
    def changes_pending(self) -> bool: ...
    def take_changes(self, limit: int) -> list[Change]: ...
    def snapshot_keys(self) -> list[StateKey]: ...
    def record(self, key: StateKey) -> Record | None: ...


class ReplicaTarget(Protocol):
    """What the receiver needs of the backup's router (``Router`` has it)."""

    def state_keys(self) -> set[StateKey]: ...
    def apply_changes(
        self, changes: Iterable[Change], now: float
    ) -> Counter[ApplyRefusal | SessionRefusal]: ...
    def delete_keys(self, keys: Iterable[StateKey]) -> None: ...
    def takeover(self, now: float) -> Takeover: ...


class SyncEndpoint(Protocol):
    """One side of the protocol, as a transport drives it."""

    @property
    def wants_close(self) -> bool: ...
    def connection_made(self, now: float) -> None: ...
    def connection_lost(self, now: float) -> None: ...
    def on_bytes(self, data: bytes, now: float) -> None: ...
    def data_to_send(self) -> bytes: ...
    def next_deadline(self) -> float | None: ...
    def on_timer(self, now: float) -> None: ...


def _check(settings: object) -> None:
    errors = []
    for spec in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, spec.name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            errors.append(f"{spec.name}: {value!r} is not a positive number")
        elif spec.type in ("int", int) and not isinstance(value, int):
            errors.append(f"{spec.name}: {value!r} is not a whole number")
    if errors:
        raise ValueError("; ".join(errors))


@dataclass(frozen=True)
class SenderSettings:
    """The master's side; times in seconds of the ``now`` it is given."""

    flush_interval: float = 0.005
    """How often changes are collected and sent."""
    records_per_message: int = 128
    """Records in one SNAPSHOT or CHANGES message."""
    window: int = 256
    """Messages sent and not yet acknowledged, kept for resending; when full, changes
    wait (coalesced) in the router."""
    resend_timeout: float = 0.25
    """A message unacknowledged this long is sent again."""
    resend_burst: int = 64
    """Messages sent again at most per timer run or NACK."""
    send_burst: int = 16
    """New messages made at most per call (a timer run or bytes received), so that a
    snapshot of a large table is read from the router a slice at a time, between
    its packets, rather than in one long pause."""
    alive_interval: float = 0.2
    """ALIVE after this much silence."""
    stall_timeout: float = 3.0
    """Messages waiting this long with no acknowledgement progress: a new stream."""
    peer_timeout: float = 2.0
    """Nothing authentic heard for this long: ask for the connection to close."""
    max_frame: int = MAX_FRAME
    """The largest frame the receiver accepts (a message is never larger)."""
    lag_samples: int = 4096
    """Acknowledged messages the lag percentiles are computed over."""

    def __post_init__(self) -> None:
        _check(self)
        needed = self.records_per_message * MAX_RECORD + HEADER.size + MAC_SIZE
        if needed > self.max_frame:
            raise ValueError(
                f"records_per_message: {self.records_per_message} records may need "
                f"{needed} bytes, over max_frame {self.max_frame}"
            )


@dataclass(frozen=True)
class ReceiverSettings:
    """The backup's side; times in seconds of the ``now`` it is given."""

    window: int = 256
    """Messages ahead of the next expected one that are held until it comes."""
    ack_every: int = 16
    """Acknowledge at the latest after this many messages..."""
    ack_delay: float = 0.005
    """... or this long after the first unacknowledged one."""
    nack_interval: float = 0.02
    """A gap is reported again at most this often."""
    hello_interval: float = 0.5
    """HELLO is sent again this often until the master starts a stream."""
    peer_timeout: float = 2.0
    """Nothing authentic heard for this long: ask for the connection to close."""
    resync_holdoff: float = 10.0
    """At most one RESYNC asked for unreadable records in this many seconds."""
    max_frame: int = MAX_FRAME
    """Largest frame accepted; a longer one is refused and the connection closed."""

    def __post_init__(self) -> None:
        _check(self)


_LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class LagStats:
    """Replication lag: from the sender taking a change to the backup acknowledging it.

    The sender takes changes every ``flush_interval``, so a change waits at most
    that long before its lag starts. Kept: the last ``capacity`` acknowledged
    messages (their lag and how many records they held) for weighted
    percentiles, and a histogram of every change since the sender was made.
    """

    def __init__(self, capacity: int) -> None:
        self._recent: deque[tuple[float, int]] = deque(maxlen=capacity)
        self._histogram = [0] * (len(_LAG_BUCKETS) + 1)
        self.changes = 0
        """Changes acknowledged since the sender was made."""
        self.maximum = 0.0

    def add(self, lag: float, records: int) -> None:
        self._recent.append((lag, records))
        self._histogram[bisect.bisect_left(_LAG_BUCKETS, lag)] += records
        self.changes += records
        self.maximum = max(self.maximum, lag)

    def percentile(self, fraction: float) -> float | None:
        """The lag that ``fraction`` (0..1) of the recent changes did not exceed."""
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        total = sum(records for _, records in ordered)
        target = fraction * total
        seen = 0
        for lag, records in ordered:
            seen += records
            if seen >= target:
                return lag
        return ordered[-1][0]

    def histogram(self) -> dict[str, int]:
        """Changes by lag bucket (``le-<seconds>``, then ``more``), since the start."""
        names = [f"le-{bound:g}" for bound in _LAG_BUCKETS] + ["more"]
        return dict(zip(names, self._histogram, strict=True))

    def summary(self) -> dict[str, float | int | None]:
        return {
            "p50": self.percentile(0.5),
            "p99": self.percentile(0.99),
            "max": self.maximum,
            "changes": self.changes,
        }


@dataclass(slots=True)
class _Pending:
    """A sent message waiting for its acknowledgement."""

    frame: bytes
    sent: float
    collected: float | None
    """CHANGES: when its changes were taken from the router (the lag's start)."""
    records: int


def _stream_id(rng: random.Random, old: int) -> int:
    while True:
        stream = rng.getrandbits(64)
        if stream not in (0, old):
            return stream


class SyncSender:
    """The master's side: snapshots and changes of ``router`` to one backup.

    Attach it with the transport; while no backup is connected the router
    notes nothing. Counters: messages, bytes and records sent, ``resent``,
    ``resyncs`` (streams started, the first included), ``stalls``,
    ``acks-received``, ``nacks-received``, ``refused-<reason>``; the lag in
    :attr:`lag`.
    """

    def __init__(
        self,
        router: ReplicaSource,
        secret: bytes,
        settings: SenderSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._router = router
        self._secret = check_secret(secret)
        self.settings = settings or SenderSettings()
        self._rng = rng or random.SystemRandom()
        self._reader = FrameReader(secret, _SENDER_READ_LIMIT)
        self._out = bytearray()
        self._counters: Counter[str] = Counter()
        self.lag = LagStats(self.settings.lag_samples)
        self.connected = False
        self._wants_close = False
        self._heard = 0.0
        self._stream = 0
        self._nonce = b""
        self._next_seq = 1
        self._acked = 0
        self._queue: dict[int, _Pending] = {}
        self._snapshot: list[StateKey] | None = None
        self._snapshot_at = 0
        self._snapshot_records = 0
        self._end_seq = 0
        self._in_sync = False
        self._started = 0.0
        self._flushed = 0.0
        self._sent = 0.0
        self._progress = 0.0
        self.resync_duration: float | None = None
        """How long the last snapshot took, from START to the acknowledgement of END."""

    # -- the transport's calls -------------------------------------------------------

    @property
    def wants_close(self) -> bool:
        """The connection should be closed (unframeable input, or a silent peer)."""
        return self._wants_close

    def connection_made(self, now: float) -> None:
        """A connection to a backup is up: wait for its HELLO."""
        self._reset(now)
        self.connected = True
        self._counters["connections"] += 1

    def connection_lost(self, now: float) -> None:
        """The connection is gone: stop noting changes until the next stream."""
        self._reset(now)

    def _reset(self, now: float) -> None:
        self.connected = False
        self._wants_close = False
        self._reader.reset()
        self._out.clear()
        self._heard = now
        self._stream = 0
        self._nonce = b""
        self._queue.clear()
        self._snapshot = None
        self._in_sync = False
        self._router.track_changes(False)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def on_bytes(self, data: bytes, now: float) -> None:
        if not self.connected:
            return
        self._counters["bytes-received"] += len(data)
        for item in self._reader.feed(data):
            if isinstance(item, Refusal):
                self._refuse(item)
            else:
                self._handle(item, now)
        if self._reader.broken:
            self._wants_close = True
        self._pump(now)

    def next_deadline(self) -> float | None:
        if not self.connected:
            return None
        settings = self.settings
        deadline = self._heard + settings.peer_timeout
        if self._stream:
            deadline = min(
                deadline,
                self._sent + settings.alive_interval,
                self._flushed + settings.flush_interval,
            )
            if self._queue:
                oldest = min(pending.sent for pending in self._queue.values())
                deadline = min(
                    deadline,
                    oldest + settings.resend_timeout,
                    self._progress + settings.stall_timeout,
                )
        return deadline

    def on_timer(self, now: float) -> None:
        if not self.connected:
            return
        settings = self.settings
        if self._stream:
            if self._queue and now - self._progress >= settings.stall_timeout:
                self._counters["stalls"] += 1
                self._start(now, self._nonce)
            elif self._queue:
                self._resend(
                    now,
                    (p for p in self._queue.values() if now - p.sent >= settings.resend_timeout),
                )
            self._pump(now)
            if now - self._sent >= settings.alive_interval:
                self._write(self._message(MessageType.ALIVE, self._next_seq - 1), now)
                self._counters["alive-sent"] += 1
        if now - self._heard >= settings.peer_timeout and not self._wants_close:
            self._counters["peer-timeouts"] += 1
            self._wants_close = True

    # -- state -------------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        """The backup acknowledged the whole snapshot of the current stream."""
        return self._in_sync

    @property
    def unacknowledged(self) -> int:
        """Messages waiting for their acknowledgement."""
        return len(self._queue)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def status(self) -> dict[str, object]:
        """What a person or a benchmark wants to see."""
        return {
            "connected": self.connected,
            "stream": self._stream,
            "in_sync": self._in_sync,
            "sent_seq": self._next_seq - 1,
            "acknowledged_seq": self._acked,
            "unacknowledged": len(self._queue),
            "resync_duration": self.resync_duration,
            "lag": self.lag.summary(),
            "counters": self.counters(),
        }

    # -- from the backup ---------------------------------------------------------------

    def _refuse(self, reason: Refusal) -> None:
        self._counters["refused-" + reason.value] += 1

    def _handle(self, message: Message, now: float) -> None:
        kind = message.type
        if kind not in TO_MASTER:
            return self._refuse(Refusal.WRONG_DIRECTION)
        self._heard = now
        self._counters["messages-received"] += 1
        if kind is MessageType.HELLO:
            if self._stream and message.nonce == self._nonce:
                self._counters["hello-repeated"] += 1  # our START is on its way
                return None
            return self._start(now, message.nonce)
        if kind is MessageType.RESYNC:
            if message.nonce != self._nonce:
                return self._refuse(Refusal.STALE_NONCE)
            if message.stream != self._stream:
                return self._refuse(Refusal.UNKNOWN_STREAM)  # a stream since replaced
            self._counters["resync-requested"] += 1
            return self._start(now, message.nonce)
        if not self._stream or message.stream != self._stream:
            return self._refuse(Refusal.UNKNOWN_STREAM)
        if kind is MessageType.ACK:
            if message.seq >= self._next_seq:
                return self._refuse(Refusal.OUT_OF_WINDOW)
            self._counters["acks-received"] += 1
            if message.seq > self._acked:
                self._acknowledge(message.seq, now)
            return None
        # NACK
        first, last = message.seq, message.last
        if first > last or first == 0:
            return self._refuse(Refusal.MALFORMED)
        if last >= self._next_seq:
            return self._refuse(Refusal.OUT_OF_WINDOW)
        self._counters["nacks-received"] += 1
        self._resend(now, (p for seq, p in self._queue.items() if first <= seq <= last))
        return None

    def _acknowledge(self, seq: int, now: float) -> None:
        queue = self._queue
        for done in [s for s in queue if s <= seq]:
            pending = queue.pop(done)
            if pending.collected is not None:
                self.lag.add(now - pending.collected, pending.records)
        self._acked = seq
        self._progress = now
        if not self._in_sync and self._end_seq and seq >= self._end_seq:
            self._in_sync = True
            self.resync_duration = now - self._started
            self._counters["snapshots-acknowledged"] += 1

    def _resend(self, now: float, pending: Iterable[_Pending]) -> None:
        burst = self.settings.resend_burst
        for count, item in enumerate(pending):
            if count >= burst:
                break
            item.sent = now
            self._write(item.frame, now)
            self._counters["resent"] += 1

    # -- to the backup -----------------------------------------------------------------

    def _start(self, now: float, nonce: bytes) -> None:
        """A new stream: START, the snapshot, then changes."""
        self._counters["resyncs"] += 1
        self._stream = _stream_id(self._rng, self._stream)
        self._nonce = nonce
        self._next_seq = 1
        self._acked = 0
        self._queue.clear()
        self._in_sync = False
        self._end_seq = 0
        self._started = now
        self._progress = now
        self._flushed = now
        self._router.track_changes(True)
        self._snapshot = self._router.snapshot_keys()
        self._snapshot_at = 0
        self._snapshot_records = 0
        self._send(MessageType.START, nonce, now)

    def _pump(self, now: float) -> None:
        """Send snapshot chunks, then changes, while the window has room."""
        if not self._stream:
            return
        settings = self.settings
        limit = settings.records_per_message
        due = now >= self._flushed + settings.flush_interval
        if due:
            self._flushed = now  # the collection tick moves whether or not it collects
        router = self._router
        made = 0
        while len(self._queue) < settings.window and made < settings.send_burst:
            made += 1
            snapshot = self._snapshot
            if snapshot is not None:
                records: list[Record] = []
                while self._snapshot_at < len(snapshot) and len(records) < limit:
                    record = router.record(snapshot[self._snapshot_at])
                    self._snapshot_at += 1
                    if record is not None:
                        records.append(record)
                if records:
                    self._snapshot_records += len(records)
                    payload = self._encode(records)
                    self._send(MessageType.SNAPSHOT, payload, now, None, len(records))
                else:
                    self._snapshot = None
                    self._end_seq = self._send(MessageType.END, u32(self._snapshot_records), now)
                continue
            if not due or not router.changes_pending():
                break
            changes = router.take_changes(limit)
            self._send(MessageType.CHANGES, self._encode(changes), now, now, len(changes))

    def _encode(self, changes: Sequence[Change]) -> bytes:
        try:
            data = encode_changes(changes)
        except (ValueError, struct.error):
            # One record cannot be written (a name over 255 bytes): write the others.
            parts = []
            for change in changes:
                try:
                    parts.append(encode_changes((change,)))
                except (ValueError, struct.error):
                    self._counters["records-unencodable"] += 1
            data = b"".join(parts)
        return data

    def _message(self, kind: MessageType, seq: int, payload: bytes = b"") -> bytes:
        return encode_message(self._secret, Message(kind, self._stream, seq, payload))

    def _send(
        self,
        kind: MessageType,
        payload: bytes,
        now: float,
        collected: float | None = None,
        records: int = 0,
    ) -> int:
        seq = self._next_seq
        self._next_seq += 1
        frame = self._message(kind, seq, payload)
        if not self._queue:
            self._progress = now  # the stall clock runs while something waits
        self._queue[seq] = _Pending(frame, now, collected, records)
        self._write(frame, now)
        self._counters["records-sent"] += records
        return seq

    def _write(self, frame: bytes, now: float) -> None:
        self._out += frame
        self._sent = now
        self._counters["messages-sent"] += 1
        self._counters["bytes-sent"] += len(frame)


class SyncReceiver:
    """The backup's side: applies a master's snapshots and changes to ``router``.

    What it applies is not aged by the router; :meth:`takeover` makes it the
    router's own. Counters: ``messages-received``, ``messages-applied``,
    ``records-applied``, ``acks-sent``, ``nacks-sent``, ``hello-sent``,
    ``snapshots-completed``, ``swept`` (keys deleted at a snapshot's end),
    ``refused-<Refusal>``, ``record-<RecordProblem>``, ``apply-<reason>``.
    """

    def __init__(
        self,
        router: ReplicaTarget,
        secret: bytes,
        settings: ReceiverSettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._router = router
        self._secret = check_secret(secret)
        self.settings = settings or ReceiverSettings()
        self._rng = rng or random.SystemRandom()
        self._reader = FrameReader(secret, self.settings.max_frame)
        self._out = bytearray()
        self._counters: Counter[str] = Counter()
        self.connected = False
        self.taken_over = False
        self._wants_close = False
        self._heard = 0.0
        self._nonce = b""
        self._stream = 0
        self._expected = 1
        self._early: dict[int, Message] = {}
        self._unseen: set[StateKey] | None = None
        self._in_sync = False
        self._hello_due: float | None = None
        self._ack_due: float | None = None
        self._unacked = 0
        self._nack_first = 0
        self._nack_next = 0.0
        self._snapshot_records = 0
        self._resync_next = 0.0

    # -- the transport's calls -------------------------------------------------------

    @property
    def wants_close(self) -> bool:
        return self._wants_close

    def connection_made(self, now: float) -> None:
        """A connection to the master is up: say HELLO with a fresh nonce."""
        self._reset(now)
        if self.taken_over:
            return
        self.connected = True
        self._counters["connections"] += 1
        self._nonce = self._rng.randbytes(NONCE_SIZE)
        self._hello(now)

    def connection_lost(self, now: float) -> None:
        """The connection is gone; the router keeps what it holds until the next stream."""
        self._reset(now)

    def _reset(self, now: float) -> None:
        self.connected = False
        self._wants_close = False
        self._reader.reset()
        self._out.clear()
        self._heard = now
        self._stream = 0
        self._expected = 1
        self._early.clear()
        self._unseen = None
        self._in_sync = False
        self._hello_due = None
        self._ack_due = None
        self._unacked = 0

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def on_bytes(self, data: bytes, now: float) -> None:
        if not self.connected:
            return
        self._counters["bytes-received"] += len(data)
        for item in self._reader.feed(data):
            if isinstance(item, Refusal):
                self._refuse(item)
            else:
                self._handle(item, now)
        if self._reader.broken:
            self._wants_close = True
        if self._unacked >= self.settings.ack_every:
            self._ack()

    def next_deadline(self) -> float | None:
        if not self.connected:
            return None
        deadline = self._heard + self.settings.peer_timeout
        for due in (self._hello_due, self._ack_due):
            if due is not None:
                deadline = min(deadline, due)
        if self._early:
            deadline = min(deadline, self._nack_next)
        return deadline

    def on_timer(self, now: float) -> None:
        if not self.connected:
            return
        if self._hello_due is not None and now >= self._hello_due:
            self._hello(now)
        if self._ack_due is not None and now >= self._ack_due:
            self._ack()
        if self._early and now >= self._nack_next:
            self._nack(self._expected, min(self._early) - 1, now)
        if now - self._heard >= self.settings.peer_timeout and not self._wants_close:
            self._counters["peer-timeouts"] += 1
            self._wants_close = True

    # -- state -------------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        """A snapshot of the current stream was applied whole (changes follow it)."""
        return self._in_sync

    def silent_for(self, now: float) -> float:
        """Seconds since the master was last heard (authentic messages only)."""
        return now - self._heard

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def status(self) -> dict[str, object]:
        return {
            "connected": self.connected,
            "stream": self._stream,
            "in_sync": self._in_sync,
            "applied_seq": self._expected - 1,
            "held_early": len(self._early),
            "taken_over": self.taken_over,
            "counters": self.counters(),
        }

    def takeover(self, now: float) -> Takeover:
        """The backup becomes master: what it applied becomes the router's own.

        Nothing more is applied (frames are refused ``taken-over``) and the
        connection should be closed (:attr:`wants_close`). An unfinished
        snapshot is kept as far as it came: the keys it did not reach are not
        deleted, they age on the new master's timers.
        """
        self.taken_over = True
        self._wants_close = True
        self._stream = 0
        self._early.clear()
        self._unseen = None
        self._hello_due = self._ack_due = None
        return self._router.takeover(now)

    # -- from the master ---------------------------------------------------------------

    def _refuse(self, reason: Refusal) -> None:
        self._counters["refused-" + reason.value] += 1

    def _handle(self, message: Message, now: float) -> None:
        if self.taken_over:
            return self._refuse(Refusal.TAKEN_OVER)
        kind = message.type
        if kind not in TO_BACKUP:
            return self._refuse(Refusal.WRONG_DIRECTION)
        if kind is MessageType.START:
            if message.nonce != self._nonce:
                return self._refuse(Refusal.STALE_NONCE)
            if message.seq != 1:
                return self._refuse(Refusal.MALFORMED)
            self._heard = now
            self._counters["messages-received"] += 1
            if message.stream == self._stream:
                self._refuse(Refusal.DUPLICATE)
                return self._ack()
            return self._begin(message.stream, now)
        if not self._stream or message.stream != self._stream:
            return self._refuse(Refusal.UNKNOWN_STREAM)
        self._heard = now
        self._counters["messages-received"] += 1
        seq, expected = message.seq, self._expected
        if kind is MessageType.ALIVE:
            if seq >= expected:
                self._nack(expected, seq, now)  # the tail was lost
            else:
                self._ack()  # the answer that tells the master we are here
            return None
        if seq < expected:
            self._refuse(Refusal.DUPLICATE)
            return self._ack()  # our acknowledgement was lost
        window = self.settings.window
        if seq >= expected + window:
            self._refuse(Refusal.OUT_OF_WINDOW)
            return self._nack(expected, seq - 1, now)
        if seq > expected:
            if seq in self._early:
                return self._refuse(Refusal.DUPLICATE)
            self._early[seq] = message
            self._counters["held-early"] += 1
            return self._nack(expected, min(self._early) - 1, now)
        self._apply(message, now)
        while self._expected in self._early:
            self._apply(self._early.pop(self._expected), now)
        return None

    def _begin(self, stream: int, now: float) -> None:
        self._counters["streams"] += 1
        self._stream = stream
        self._expected = 2
        self._early.clear()
        self._hello_due = None
        self._in_sync = False
        self._unseen = self._router.state_keys()
        self._snapshot_records = 0
        self._ack()

    def _apply(self, message: Message, now: float) -> None:
        self._expected += 1
        self._counters["messages-applied"] += 1
        self._unacked += 1
        if self._ack_due is None:
            self._ack_due = now + self.settings.ack_delay
        kind = message.type
        if kind is MessageType.END:
            self._end(message, now)
            return
        changes, problems = decode_changes(message.payload)
        unseen = self._unseen
        if kind is MessageType.SNAPSHOT:
            if unseen is None:
                self._counters["snapshot-outside-snapshot"] += 1
                return
            self._snapshot_records += len(changes) + sum(problems.values())
        if unseen is not None:
            unseen.difference_update(state_key(change) for change in changes)
        try:
            refused = self._router.apply_changes(changes, now)
        except (ValueError, KeyError, IndexError, struct.error):
            problems[RecordProblem.APPLY] += 1
            refused = Counter()
        for reason, count in refused.items():
            self._counters["apply-" + reason.value] += count
        self._counters["records-applied"] += len(changes)
        if problems:
            for problem, count in problems.items():
                self._counters["record-" + problem.value] += count
            if set(problems) != {RecordProblem.UNKNOWN_KIND}:
                # Part of the master's state could not be read: this view may be stale.
                self.request_resync(now)

    def _end(self, message: Message, now: float) -> None:
        unseen = self._unseen
        if unseen is None:
            self._counters["end-outside-snapshot"] += 1
            return
        self._unseen = None
        if message.count != self._snapshot_records:
            self._counters["snapshot-count-mismatch"] += 1
        try:
            self._router.delete_keys(unseen)
        except (ValueError, KeyError, IndexError):
            self._counters["record-" + RecordProblem.APPLY.value] += 1
            self.request_resync(now)
        self._counters["swept"] += len(unseen)
        self._counters["snapshots-completed"] += 1
        self._in_sync = True
        self._ack()

    # -- to the master -----------------------------------------------------------------

    def request_resync(self, now: float) -> bool:
        """Ask the master for a new stream (a whole snapshot); False when not now.

        Sent on its own when a message's records could not all be read or
        applied, and at most once per ``resync_holdoff`` seconds, so that a
        record the backup can never read does not make the pair resync forever.
        """
        if not self._stream or now < self._resync_next:
            return False
        self._resync_next = now + self.settings.resync_holdoff
        self._counters["resync-requested"] += 1
        self._send(MessageType.RESYNC, self._stream, 0, self._nonce)
        return True

    def _hello(self, now: float) -> None:
        self._send(MessageType.HELLO, 0, 0, self._nonce)
        self._counters["hello-sent"] += 1
        self._hello_due = now + self.settings.hello_interval

    def _ack(self) -> None:
        self._send(MessageType.ACK, self._stream, self._expected - 1)
        self._counters["acks-sent"] += 1
        self._unacked = 0
        self._ack_due = None

    def _nack(self, first: int, last: int, now: float) -> None:
        if last < first:
            return
        if first == self._nack_first and now < self._nack_next:
            return  # reported already; the master resends within its burst
        self._send(MessageType.NACK, self._stream, first, u64(last))
        self._counters["nacks-sent"] += 1
        self._nack_first = first
        self._nack_next = now + self.settings.nack_interval

    def _send(self, kind: MessageType, stream: int, seq: int, payload: bytes = b"") -> None:
        frame = encode_message(self._secret, Message(kind, stream, seq, payload))
        self._out += frame
        self._counters["messages-sent"] += 1
        self._counters["bytes-sent"] += len(frame)
