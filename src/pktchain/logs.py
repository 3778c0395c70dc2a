"""Log lines: readable text, or one JSON object per line for log collectors.

A state change an operator acts on (a port going down, a chain applied, a
virtual router becoming master) is logged once as an *event*: a record whose
extras name it with a stable ``event`` and carry its fields::

    log.warning("port %s is down", name, extra=event("port_down", port=name))

The text format (`TextFormatter`, the default) prints the message as ever;
the JSON format (`JsonFormatter`, ``pktchain node --log-format json``) prints
one object per line with ``time`` (RFC 3339, UTC), ``level``, ``logger``,
``message``, and for an event its ``event`` and fields; a traceback goes
under ``exception``. docs/node.md ("Logs") lists the events.

`EventFeed` is a log handler that hands each event, as the JSON format's
object, to whoever follows the node's events live (the dashboard's stream,
docs/dashboard.md): every follower has a bounded queue of its own, where the
oldest event makes room for a new one and is counted as dropped, so that a
slow follower never holds up the thread that logged.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "EventFeed",
    "EventSubscription",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "event",
    "event_line",
    "use_format",
]

TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
"""The text lines' layout (what ``pktchain -v`` has always printed)."""

# The attributes every LogRecord has: whatever else a record holds came as extras.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def event(name: str, /, **fields: Any) -> dict[str, Any]:
    """The extras of an event record: its stable `name` and its fields.

    ValueError for a field a log record holds already (``name``, ``msg``,
    ``args``...), which logging would refuse only when the line is written."""
    clashes = sorted(set(fields) & _STANDARD)
    if clashes:
        raise ValueError(f"event {name}: field names taken by the log record: {clashes}")
    return {"event": name, **fields}


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The extras of `record` (an event's name and fields), in the order given."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _line(record: logging.LogRecord) -> dict[str, Any]:
    line: dict[str, Any] = {
        "time": _rfc3339(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    for key, value in fields_of(record).items():
        line.setdefault(key, value)  # the four above are not overwritten
    return line


def event_line(record: logging.LogRecord) -> dict[str, Any]:
    """`record` as the JSON format writes it, without a traceback, as JSON values
    (an address, a path or an enum in a field becomes its text)."""
    loaded: dict[str, Any] = json.loads(json.dumps(_line(record), default=str))
    return loaded


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line = _line(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an address, a path or an enum in a field is written as text.
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The readable line: time, logger, level and message (events print their message)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)


def _rfc3339(created: float) -> str:
    stamp = datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt is LogFormat.JSON else TextFormatter()


def use_format(fmt: LogFormat | str, logger: logging.Logger | None = None) -> None:
    """Write every line of the handlers of `logger` (the root's by default) in `fmt`.

    ValueError naming the format if it is neither text nor json."""
    try:
        chosen = LogFormat(fmt)
    except ValueError:
        raise ValueError(
            f"log format {fmt!r}: expected one of {', '.join(f.value for f in LogFormat)}"
        ) from None
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        handler.setFormatter(formatter(chosen))


class EventSubscription:
    """One follower's queue of events: at most `capacity`, the oldest dropped first.

    `wake` is called, in the thread that logged, after each event is queued:
    it must be quick and must not log.
    """

    def __init__(
        self, capacity: int, wake: Callable[[], None], backlog: list[dict[str, Any]]
    ) -> None:
        if capacity < 1:
            raise ValueError(f"event queue capacity {capacity!r}: must be at least 1")
        self.capacity = capacity
        self._wake = wake
        self._queue: deque[dict[str, Any]] = deque(backlog[-capacity:])
        self._lock = threading.Lock()
        self._dropped = 0
        self.dropped_total = 0
        """Events this follower lost to a full queue, since it subscribed."""

    def put(self, line: dict[str, Any]) -> None:
        with self._lock:
            if len(self._queue) >= self.capacity:
                self._queue.popleft()
                self._dropped += 1
                self.dropped_total += 1
            self._queue.append(line)
        self._wake()

    def take(self) -> tuple[list[dict[str, Any]], int]:
        """The events queued (oldest first), and how many were dropped since the last take."""
        with self._lock:
            lines = list(self._queue)
            self._queue.clear()
            dropped, self._dropped = self._dropped, 0
        return lines, dropped


class EventFeed(logging.Handler):
    """A log handler that hands every event record to its subscribers.

    Records without an ``event`` (the node's other lines) are ignored. The
    last `history` events are kept, and a new subscriber starts with them.
    Attach it to the ``pktchain`` logger; its level is INFO unless given.
    """

    def __init__(self, *, history: int = 200, level: int = logging.INFO) -> None:
        super().__init__(level)
        if history < 0:
            raise ValueError(f"event history {history!r}: must not be negative")
        self._recent: deque[dict[str, Any]] = deque(maxlen=history)
        self._subscribers: tuple[EventSubscription, ...] = ()
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if not isinstance(getattr(record, "event", None), str):
            return
        line = event_line(record)
        with self._mutex:
            self._recent.append(line)
            subscribers = self._subscribers
        for subscriber in subscribers:
            subscriber.put(line)

    def recent(self) -> list[dict[str, Any]]:
        """The events kept, oldest first."""
        with self._mutex:
            return list(self._recent)

    def subscribe(self, wake: Callable[[], None], capacity: int = 256) -> EventSubscription:
        """A new follower, its queue holding the kept events to begin with."""
        with self._mutex:
            subscription = EventSubscription(capacity, wake, list(self._recent))
            self._subscribers = (*self._subscribers, subscription)
        return subscription

    def unsubscribe(self, subscription: EventSubscription) -> None:
        with self._mutex:
            self._subscribers = tuple(s for s in self._subscribers if s is not subscription)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
