"""The log formats: readable text, and one JSON object per line with an event's fields."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from pktchain.logs import (
    TEXT_FORMAT,
    JsonFormatter,
    LogFormat,
    TextFormatter,
    event,
    fields_of,
    use_format,
)

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own writing into a string, through one handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(f"pktchain.test-logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream, handler
    logger.removeHandler(handler)


def test_an_event_is_one_json_object_with_its_fields(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.warning("port %s is down", "h1:eth0", extra=event("port_down", port="h1:eth0", holds=3))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert list(line)[:4] == ["time", "level", "logger", "message"]
    assert RFC3339.match(line["time"]), line["time"]
    assert abs(datetime.fromisoformat(line["time"]).timestamp() - datetime.now().timestamp()) < 60
    assert line["level"] == "warning"
    assert line["logger"] == logger.name
    assert line["message"] == "port h1:eth0 is down"
    assert line["event"] == "port_down"
    assert line["port"] == "h1:eth0"
    assert line["holds"] == 3


def test_a_plain_line_has_no_event_and_odd_values_become_text(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    logger.info("plain %d", 5)
    logger.info("odd", extra=event("odd", path=Path("/tmp/x"), kind=LogFormat.JSON, many={1, 2}))
    plain, odd = (json.loads(line) for line in stream.getvalue().splitlines())
    assert plain["message"] == "plain 5" and "event" not in plain
    assert set(plain) == {"time", "level", "logger", "message"}
    assert odd["path"] == "/tmp/x"
    assert odd["kind"] == "json"
    assert odd["many"] in ("{1, 2}", "{2, 1}")


def test_a_traceback_is_one_field_of_the_one_line(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(JsonFormatter())
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logger.exception("it broke", extra=event("function_error", function="f1"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # the newlines of the traceback are escaped in the JSON
    line = json.loads(lines[0])
    assert line["level"] == "error"
    assert line["event"] == "function_error"
    assert "RuntimeError: boom" in line["exception"]
    assert "Traceback" in line["exception"]


def test_an_event_field_cannot_overwrite_the_line_s_own() -> None:
    record = logging.makeLogRecord({"msg": "m", "levelname": "INFO", "name": "x"})
    record.__dict__.update({"event": "e", "level": "forged", "time": "forged"})
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "info"
    assert line["time"] != "forged"
    assert line["event"] == "e"


def test_fields_that_a_log_record_holds_already_are_refused() -> None:
    with pytest.raises(ValueError, match=r"port_down.*\['msg', 'name'\]"):
        event("port_down", name="h1", msg="x")
    assert event("port_down", port="h1") == {"event": "port_down", "port": "h1"}


def test_text_keeps_the_readable_message(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    handler.setFormatter(TextFormatter())
    logger.info("port %s attached", "h1:eth0", extra=event("port_added", port="h1:eth0"))
    line = stream.getvalue().rstrip("\n")
    assert re.match(
        rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} {re.escape(logger.name)} INFO "
        r"port h1:eth0 attached$",
        line,
    ), line
    assert TEXT_FORMAT in (TextFormatter()._fmt or "")


def test_use_format_sets_every_handler_of_the_logger(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, stream, handler = captured
    use_format("json", logger)
    assert isinstance(handler.formatter, JsonFormatter)
    logger.info("x", extra=event("e", a=1))
    assert json.loads(stream.getvalue())["a"] == 1
    use_format(LogFormat.TEXT, logger)
    assert isinstance(handler.formatter, TextFormatter)
    with pytest.raises(ValueError, match="log format 'xml': expected one of text, json"):
        use_format("xml", logger)


def test_fields_of_lists_only_the_extras() -> None:
    logger = logging.getLogger("pktchain.test-logs.fields")
    record = logger.makeRecord(
        logger.name, logging.INFO, __file__, 1, "m", (), None, extra=event("e", b=2, a=1)
    )
    assert fields_of(record) == {"event": "e", "b": 2, "a": 1}
