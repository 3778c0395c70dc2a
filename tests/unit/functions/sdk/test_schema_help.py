"""Every configuration field says what it means: help through check(), describe() and walk()."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pktchain.functions.sdk import BUILTIN_FUNCTIONS, function_class
from pktchain.functions.sdk.schema import check, describe, walk


@pytest.mark.parametrize("kind", sorted(BUILTIN_FUNCTIONS))
def test_every_configuration_field_of_a_builtin_has_help(kind: str) -> None:
    paths = [path for path, _row in walk(function_class(kind).Config)]
    missing = [path for path, row in walk(function_class(kind).Config) if not row.get("help")]
    assert paths, kind
    assert missing == [], f"{kind}: give these fields check(help=...): {', '.join(missing)}"


@dataclass(frozen=True)
class Leaf:
    port: int = field(default=1, metadata=check(minimum=1, help="a port"))


@dataclass(frozen=True)
class Tree:
    leaves: tuple[Leaf, ...] = field(default=(), metadata=check(help="the leaves"))
    root: Leaf = field(default=Leaf(), metadata=check(help="the root"))
    bare: int = 0


def test_help_and_nested_fields_are_described() -> None:
    rows = {row["name"]: row for row in describe(Tree)}
    assert rows["leaves"]["help"] == "the leaves"
    assert rows["leaves"]["fields"] == [
        {"name": "port", "type": "int", "default": 1, "minimum": 1, "help": "a port"}
    ]
    assert "help" not in rows["bare"]


def test_a_walk_names_nested_fields_by_their_path() -> None:
    assert [path for path, _row in walk(Tree)] == [
        "leaves",
        "leaves[].port",
        "root",
        "root.port",
        "bare",
    ]


def test_nested_builtin_fields_are_reached() -> None:
    def paths(kind: str) -> set[str]:
        return {path for path, _row in walk(function_class(kind).Config)}

    assert {"rules[].dport", "timeouts.udp"} <= paths("firewall")
    assert {"services[].backends[].weight", "health.interval"} <= paths("load-balancer")
    assert {"filter.dport", "port_forwards[].internal_port"} <= paths("mirror") | paths("nat")
