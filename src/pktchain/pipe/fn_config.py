"""A function's configuration from the command line of ``pktchain fn``, and its schema as text.

``pktchain fn NAME [--config FILE] [key=value ...]`` builds the mapping that
the function's schema then checks as a whole (:mod:`pktchain.functions.sdk.schema`):

* ``--config FILE``: a JSON or YAML mapping, the function's configuration as
  in the ``config:`` of a functions file. JSON is read by the standard
  library; a file that is not JSON (by its name, or its first character not
  being ``{``) is read as YAML, whose parser costs about 20 ms more of
  start-up, so it is imported only then.
* ``key=value`` words, applied over the file: the value is taken as JSON when
  it parses as JSON (``80``, ``true``, ``null``, ``[1, 2]``, ``{"a": 1}``,
  ``"80"`` for the string), else as the string itself (``drop``,
  ``10.0.0.1``). A dotted key sets a field of a nested mapping
  (``health.interval=5``), keeping the file's other fields there.

Mistakes in the words or the file are :class:`SettingsError` (one message);
wrong fields are found afterwards by the schema, all at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pktchain.functions.sdk.schema import walk

__all__ = ["SettingsError", "config_from", "parse_settings", "read_config_file", "schema_text"]


class SettingsError(ValueError):
    """A configuration file or ``key=value`` word that cannot be read."""


def config_from(path: str | None, words: Sequence[str]) -> dict[str, Any]:
    """The mapping given by ``--config path`` (if any) with the ``key=value`` words over it."""
    config = read_config_file(path) if path is not None else {}
    for keys, value in parse_settings(words):
        _set(config, keys, value)
    return config


def read_config_file(path: str) -> dict[str, Any]:
    """A JSON or YAML mapping from `path`; an empty file is an empty mapping."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"--config {path}: {reason}") from exc
    data: Any
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--config {path}: line {exc.lineno}: {exc.msg}") from exc
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SettingsError(f"--config {path}: {_one_line(str(exc))}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(
            f"--config {path}: expected a mapping of fields, got {type(data).__name__}"
        )
    return data


def parse_settings(words: Sequence[str]) -> list[tuple[list[str], Any]]:
    """``key=value`` words as (key path, value) pairs, in order."""
    settings = []
    for word in words:
        key, sep, text = word.partition("=")
        keys = key.split(".")
        if not sep or not all(keys):
            raise SettingsError(
                f"{word!r}: expected key=value (a field of the configuration, "
                "dotted for a nested one: health.interval=5)"
            )
        settings.append((keys, _value(text)))
    return settings


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set(config: dict[str, Any], keys: list[str], value: Any) -> None:
    node = config
    for depth, key in enumerate(keys[:-1]):
        inner = node.setdefault(key, {})
        if not isinstance(inner, dict):
            where = ".".join(keys[: depth + 1])
            raise SettingsError(f"{'.'.join(keys)}: {where} is already set to {inner!r}")
        node = inner
    node[keys[-1]] = value


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


# -- the schema as text (pktchain fn NAME --help-config) ------------------------


def schema_text(function: type[Any]) -> str:
    """Every field of a function's configuration, nested ones under their path.

    One line per field: its path (``rules[].dport`` for a field of each item
    of a list), type, default or ``required``, bounds, and help.
    """
    config = function.Config
    interfaces = getattr(function, "INTERFACES", None)
    if interfaces is None:  # an NSH-aware function: its transport is the command line's
        lines = [f"{function.kind()}: NSH-aware function"]
    else:
        live = "yes" if function.LIVE else "no"
        lines = [
            f"{function.kind()}: interfaces {', '.join(interfaces)}; live reconfiguration: {live}"
        ]
    rows = list(walk(config))
    if not rows:
        lines.append("no configuration")
        return "\n".join(lines) + "\n"
    width = max(len(path) for path, _ in rows)
    for path, row in rows:
        lines.append(f"  {path:<{width}}  {_describe_row(row)}")
    return "\n".join(lines) + "\n"


def _describe_row(row: dict[str, Any]) -> str:
    kind = str(row["type"]).replace(", Ellipsis]", ", ...]")
    parts = [kind]
    if row.get("required"):
        parts.append("required")
    elif "default" in row and not isinstance(row["default"], dict):
        parts.append(f"default {json.dumps(row['default'])}")
    bounds = [f"{key} {row[key]}" for key in ("minimum", "maximum") if key in row]
    parts.extend(bounds)
    text = ", ".join(parts)
    if row.get("help"):
        text += f": {row['help']}"
    return text
