"""YAML files read with the line of every key and item, so that errors can name the line.

A configuration file (a lab topology, a router file, a function file, an
``apply`` file) is composed into plain data: mappings become :class:`LineMap`
and sequences :class:`LineSeq`, which remember where each key and item stood;
scalars stay text, so that each field parses its own type. Reading it reports
every problem it can at once as :class:`FileIssue` entries (file, line, field,
message); :class:`FileError` carries them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pktchain.errors import PktchainError

__all__ = [
    "FileError",
    "FileIssue",
    "LineMap",
    "LineSeq",
    "compose",
    "item_line",
    "key_line",
    "kind_of",
    "line_of",
]


@dataclass(frozen=True)
class FileIssue:
    """One mistake in a file: where it is and what is wrong."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class FileError(PktchainError):
    """A file has one or more mistakes, all listed in `issues`."""

    def __init__(self, issues: Sequence[FileIssue]) -> None:
        # In file order, so that a reader fixes them from top to bottom.
        self.issues = tuple(sorted(issues, key=lambda i: (i.line is None, i.line or 0)))
        super().__init__(self._summary())

    def _summary(self) -> str:
        if len(self.issues) == 1:
            return str(self.issues[0])
        source = self.issues[0].source if self.issues else "file"
        lines = [f"{len(self.issues)} errors in {source}:"]
        lines.extend(f"  {issue}" for issue in self.issues)
        return "\n".join(lines)


class LineMap(dict[str, Any]):
    """A YAML mapping with the line of each key."""

    def __init__(self, line: int | None) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[str, int] = {}


class LineSeq(list[Any]):
    """A YAML sequence with the line of each item."""

    def __init__(self, line: int | None) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []


_NULL_TAG = "tag:yaml.org,2002:null"


def _from_node(node: yaml.Node, issues: list[FileIssue], source: str, path: str = "") -> Any:
    """Plain data from a YAML node; scalars stay text so each field parses its own type."""
    line = node.start_mark.line + 1
    if path.count(".") + path.count("[") > 32:
        issues.append(FileIssue(source, line, path, "nesting too deep (recursive alias?)"))
        return None
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == _NULL_TAG else str(node.value)
    if isinstance(node, yaml.SequenceNode):
        seq = LineSeq(line)
        for index, item in enumerate(node.value):
            seq.append(_from_node(item, issues, source, f"{path}[{index}]"))
            seq.item_lines.append(item.start_mark.line + 1)
        return seq
    if isinstance(node, yaml.MappingNode):
        mapping = LineMap(line)
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                issues.append(FileIssue(source, key_line, path, "keys must be plain names"))
                continue
            key = str(key_node.value)
            key_path = f"{path}.{key}" if path else key
            if key in mapping:
                first = mapping.key_lines[key]
                issues.append(
                    FileIssue(source, key_line, key_path, f"duplicate key (first on line {first})")
                )
                continue
            mapping[key] = _from_node(value_node, issues, source, key_path)
            mapping.key_lines[key] = key_line
        return mapping
    raise TypeError(f"unexpected YAML node {node!r}")


def compose(
    text: str, source: str, error: Callable[[list[FileIssue]], Exception] = FileError
) -> tuple[Any, list[FileIssue]]:
    """The document as plain data with lines, and the issues found while reading it.

    A document that is not YAML at all, or empty, raises `error` (the caller's
    own subclass of :class:`FileError`) with the one issue.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        message = " ".join(str(part) for part in (exc.context, exc.problem) if part)
        raise error([FileIssue(source, line, "", f"invalid YAML: {message}")]) from exc
    except yaml.YAMLError as exc:
        raise error([FileIssue(source, None, "", f"invalid YAML: {exc}")]) from exc
    if node is None:
        raise error([FileIssue(source, None, "", "the document is empty")])
    issues: list[FileIssue] = []
    return _from_node(node, issues, source), issues


def line_of(value: Any) -> int | None:
    return value.line if isinstance(value, LineMap | LineSeq) else None


def key_line(mapping: Mapping[str, Any], key: str) -> int | None:
    if isinstance(mapping, LineMap):
        return mapping.key_lines.get(key, mapping.line)
    return None


def item_line(seq: Sequence[Any], index: int) -> int | None:
    if isinstance(seq, LineSeq):
        return seq.item_lines[index]
    return None


def kind_of(value: Any) -> str:
    """How a wrong value reads in an error message: ``nothing``, ``a list``, ``'text'``."""
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):
        return f"{value!r}"
    if isinstance(value, Sequence):
        return "a list"
    return type(value).__name__
