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
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = ["JsonFormatter", "LogFormat", "TextFormatter", "event", "use_format"]

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


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            line.setdefault(key, value)  # the four above are not overwritten
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
