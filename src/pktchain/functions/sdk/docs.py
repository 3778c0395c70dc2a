"""The reference parts of the function pages, docs/functions/KIND.md, made from the declarations.

A function declares what a reader needs to know: its kind and class, its
interfaces, whether it owns addresses (``FLOODED``) and may be reconfigured
while it runs (``LIVE``), its configuration (``Config``: each field's type,
default, bounds and help, :func:`~pktchain.functions.sdk.schema.check`) and its
counters (``COUNTERS``, each with what it counts). Those parts of each page
are written here, between markers, so they cannot drift from the code; the
prose around them is written by hand, as Click's element pages keep their
fixed header apart from the description::

    <!-- begin generated: configuration (python -m pktchain.functions.sdk.docs --write) -->
    ...
    <!-- end generated: configuration -->

The blocks are ``summary`` (the line under the title), ``configuration`` (one
table for the configuration, one more for each nested part) and ``counters``.

``python -m pktchain.functions.sdk.docs`` checks the page of every built-in
(exit status 1, naming each stale page), ``--write`` rewrites them, and
``--print KIND`` prints the reference of any function, a user's
``package.module:Class`` included.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import sys
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pktchain.functions.sdk.contract import (
    BUILTIN_FUNCTIONS,
    Function,
    FunctionLoadError,
    function_class,
)
from pktchain.functions.sdk.schema import describe, sections

__all__ = [
    "BLOCKS",
    "COMMAND",
    "DocsError",
    "begin_marker",
    "blocks",
    "default_docs",
    "end_marker",
    "page_text",
    "stale_pages",
]

COMMAND = "python -m pktchain.functions.sdk.docs --write"
"""What regenerates the pages (``make docs`` runs it)."""

BLOCKS = ("summary", "configuration", "counters")


class DocsError(ValueError):
    """A page that cannot be generated: a block's markers are missing or out of order."""


def default_docs() -> Path:
    """docs/functions/ of the source tree this module is in."""
    return Path(__file__).resolve().parents[4] / "docs" / "functions"


def begin_marker(block: str) -> str:
    return f"<!-- begin generated: {block} ({COMMAND}) -->"


def end_marker(block: str) -> str:
    return f"<!-- end generated: {block} -->"


# -- the blocks ---------------------------------------------------------------------


def blocks(function: type[Function], path: str | None = None) -> dict[str, str]:
    """The text of each generated block for `function` (`path`: how it is named to load it)."""
    return {
        "summary": _summary(function, path or function.kind()),
        "configuration": _configuration(function.Config),
        "counters": _counters(function),
    }


def _summary(function: type[Function], path: str) -> str:
    interfaces = ", ".join(f"`{name}`" for name in function.INTERFACES)
    kind = function.kind()
    parts = [
        f"`kind: {kind}`",
        f"`{path}`" if path != kind else "",
        f"interfaces {interfaces}",
        f"live reconfiguration: {'yes' if function.LIVE else 'no'}",
        "owns addresses: receives broadcast and unknown-unicast frames" if function.FLOODED else "",
    ]
    return " · ".join(part for part in parts if part)


def _configuration(config: type[Any]) -> str:
    out: list[str] = []
    for path, cls in sections(config):
        rows = describe(cls)
        if not path:
            if not rows:
                return "No configuration."
        else:
            what = (cls.__doc__ or "").strip().splitlines()
            line = _sentence(what[0] if what else "").replace("``", "`")
            out.append(f"`{path}` ({cls.__name__}): {line}")
            out.append("")
        hints = typing.get_type_hints(cls)
        out.append("| field | type | default | meaning |")
        out.append("|---|---|---|---|")
        for row in rows:
            kind = _type_text(hints[row["name"]]) + _bounds(row)
            out.append(
                f"| `{row['name']}` | {_cell(kind)} | {_cell(_default(row))} "
                f"| {_cell(row.get('help', ''))} |"
            )
        out.append("")
    return "\n".join(out).rstrip("\n")


def _counters(function: type[Function]) -> str:
    described = function.counter_descriptions()
    if not described:
        return "No counters declared."
    lines = ["| counter | counts |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(what)} |" for name, what in described.items()]
    return "\n".join(lines)


def _sentence(text: str) -> str:
    """A docstring's first line to follow a colon: its first word in lower case, unless an
    acronym (``ICMP``)."""
    first = text.split(" ", 1)[0]
    return text if len(first) > 1 and first.isupper() else text[:1].lower() + text[1:]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_NAMES: dict[Any, str] = {
    int: "integer",
    float: "number",
    str: "string",
    bool: "boolean",
    ipaddress.IPv4Address: "IPv4 address",
    ipaddress.IPv6Address: "IPv6 address",
    ipaddress.IPv4Network: "IPv4 network",
    ipaddress.IPv6Network: "IPv6 network",
    type(None): "none",
    Any: "anything",
}


def _type_text(kind: Any) -> str:
    """A field's type in a reader's words: ``list of Rule``, ``one of `tcp`, `udp```."""
    if kind in _NAMES:
        return _NAMES[kind]
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(arg) for arg in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (list, tuple) or kind in (list, tuple):
        return "list of " + (_type_text(args[0]) if args else "anything")
    if origin is dict or kind is dict:
        return "mapping to " + (_type_text(args[1]) if len(args) == 2 else "anything")
    if isinstance(kind, type) and issubclass(kind, Enum):
        return "one of " + ", ".join(f"`{member.value}`" for member in kind)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return kind.__name__
    return getattr(kind, "__name__", str(kind))


def _bounds(row: dict[str, Any]) -> str:
    low, high = row.get("minimum"), row.get("maximum")
    if low is not None and high is not None:
        return f", {low}–{high}"  # noqa: RUF001 - an en dash, as the pages write ranges
    if low is not None:
        return f", ≥ {low}"
    if high is not None:
        return f", ≤ {high}"
    return ""


def _default(row: dict[str, Any]) -> str:
    if row.get("required"):
        return "required"
    value = row.get("default")
    if value is None:
        return "none"
    if isinstance(value, dict):
        return "see below"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value)}`"


# -- the pages ----------------------------------------------------------------------


def page_text(text: str, generated: dict[str, str], page: str = "the page") -> str:
    """`text` with each generated block's content replaced; DocsError when markers are missing."""
    for block, content in generated.items():
        begin, end = begin_marker(block), end_marker(block)
        start = text.find(begin)
        stop = text.find(end, start + 1) if start >= 0 else -1
        if start < 0 or stop < 0:
            raise DocsError(f"{page}: no {begin} ... {end} (the {block} block)")
        text = text[: start + len(begin)] + "\n" + content + "\n" + text[stop:]
    return text


def stale_pages(docs: Path, *, write: bool = False) -> list[str]:
    """The built-ins' pages in `docs` that differ from what the declarations make.

    With `write`, each one is rewritten. DocsError when a page is missing or
    lacks a block's markers.
    """
    stale = []
    for kind, path in BUILTIN_FUNCTIONS.items():
        page = docs / f"{kind}.md"
        try:
            text = page.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DocsError(f"{page}: missing (every built-in function has a page)") from None
        made = page_text(text, blocks(function_class(kind), path), str(page))
        if made != text:
            stale.append(str(page))
            if write:
                page.write_text(made, encoding="utf-8")
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pktchain.functions.sdk.docs",
        description="Check (or --write) the generated parts of docs/functions/*.md.",
    )
    parser.add_argument("--write", action="store_true", help="rewrite the stale pages")
    parser.add_argument(
        "--print",
        dest="kind",
        metavar="KIND",
        help="print the generated parts for KIND (a built-in or package.module:Class)",
    )
    parser.add_argument("--docs", type=Path, default=None, help="the pages' folder")
    args = parser.parse_args(argv)
    if args.kind is not None:
        try:
            function = function_class(args.kind)
        except FunctionLoadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        made = blocks(function, BUILTIN_FUNCTIONS.get(args.kind, args.kind))
        for block, content in made.items():
            print(f"{begin_marker(block)}\n{content}\n{end_marker(block)}\n")
        return 0
    docs = args.docs or default_docs()
    try:
        stale = stale_pages(docs, write=args.write)
    except DocsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for page in stale:
        print(f"{_shown(page)}: {'rewritten' if args.write else f'stale; run {COMMAND}'}")
    return 1 if stale and not args.write else 0


def _shown(page: str) -> str:
    """`page` relative to the working directory when it is under it."""
    path = Path(page)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return page


if __name__ == "__main__":
    raise SystemExit(main())
