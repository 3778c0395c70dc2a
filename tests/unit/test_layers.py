"""Imports point down the layers, and no modules import each other round a circle.

Every module under ``src/pktchain`` is parsed with `ast`, not imported: each
``import`` and ``from ... import`` is an edge of the import graph wherever it
stands (at the top, inside a function, under ``if TYPE_CHECKING:``), since a
lazy or type-only import is a dependency all the same. `LAYERS` declares the
layers, bottom to top, as docs/design.md ("Layers") shows them; a module
belongs to the layer of the longest entry that names it or a package holding
it, and may import modules of its own layer and of the layers below.

The imports and cycles known to break the rule are in `ALLOWED_EDGES` and
`ALLOWED_CYCLES`, each with the reason and what removes it. Those lists only
shrink: an entry that no longer happens fails the test until it is deleted.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from support.paths import ROOT as REPO

SRC = REPO / "src"
DESIGN = REPO / "docs" / "design.md"
ROOT = "pktchain"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "base",
        (
            "pktchain",
            "pktchain.errors",
            "pktchain.yamlfile",
            "pktchain.secretfile",
            "pktchain.logs",
            "pktchain.eventloop",
            "pktchain.linux",
            "pktchain.etcd",
        ),
    ),
    ("packet", ("pktchain.packet",)),
    ("function contract", ("pktchain.functions.sdk",)),
    ("shared protocol pieces", ("pktchain.functions.common",)),
    ("functions", ("pktchain.functions",)),
    ("chaining model", ("pktchain.sfc",)),
    ("dataplane", ("pktchain.node.dataplane",)),
    (
        "lab and node inputs",
        (
            "pktchain.lab",
            "pktchain.messenger",
            "pktchain.cluster",
            "pktchain.node.function_file",
            "pktchain.node.router_file",
        ),
    ),
    ("api", ("pktchain.api",)),
    ("processes", ("pktchain.node", "pktchain.tunnel", "pktchain.pipe")),
    ("front ends", ("pktchain.client", "pktchain.apply", "pktchain.demo")),
    ("command line", ("pktchain.cli", "pktchain.__main__")),
)
"""Bottom to top: (name, module or package prefixes). ``pktchain`` alone is the
root package's ``__init__``, not everything under it."""

ALLOWED_EDGES: dict[tuple[str, str], str] = {}
"""Imports that point up, each with why it is still there and what removes it."""

ALLOWED_CYCLES: dict[frozenset[str], str] = {
    frozenset(
        {
            "pktchain.node.dataplane.fastpath",
            "pktchain.node.dataplane.ports",
            "pktchain.node.dataplane.steering",
            "pktchain.node.dataplane.underlay",
        }
    ): "type-only (TYPE_CHECKING): a port holds its flow table and its fused entries, "
    "whose entries name ports; the per-packet path reads both from the port (one "
    "attribute lookup), so the tables stay on it and the annotations name each other "
    "(the steering's entries name the NSH header of the underlay, whose peers are ports)",
}
"""Import cycles (as the set of their modules), each with why it is still there."""


@dataclass(frozen=True)
class Import:
    """One import statement's edge: `source` imports `target` at `line`."""

    source: str
    target: str
    line: int


def _modules() -> dict[str, Path]:
    """Every module under src/pktchain, by dotted name (a package by its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported_names(module: str, path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module named, attribute imported from it or None, line) for each pktchain import."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            for alias in node.names:
                yield name, alias.name, node.lineno


def _imports(modules: Mapping[str, Path]) -> tuple[list[Import], list[str]]:
    """The graph's edges, and the imports of pktchain modules that do not exist."""
    edges: list[Import] = []
    missing: list[str] = []
    for module, path in modules.items():
        for name, attribute, line in _imported_names(module, path):
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            if attribute is not None and f"{name}.{attribute}" in modules:
                target = f"{name}.{attribute}"  # from package import module
            elif name in modules:
                target = name
            else:
                missing.append(f"{module}:{line} imports {name}, which is not a module")
                continue
            if target != module:
                edges.append(Import(module, target, line))
    return edges, missing


def _layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (length of the entry, layer)
    for index, (_name, entries) in enumerate(LAYERS):
        for entry in entries:
            # The root entry is the root package alone; any other holds its submodules.
            holds = module == entry or (entry != ROOT and module.startswith(entry + "."))
            if holds and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return None if best is None else best[1]


def _cycles(edges: list[Import]) -> list[tuple[frozenset[str], list[str]]]:
    """The strongly connected components with more than one module (Tarjan), each
    with one cycle through its first module, to be read in order."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [(frozenset(c), _cycle_through(c, graph)) for c in components]


def _cycle_through(component: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest way from the component's first module back to itself (breadth first)."""
    start = min(component)
    paths: dict[str, list[str]] = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for successor in sorted(graph[node] & component):
            if successor == start:
                return [*paths[node], start]
            if successor not in paths:
                paths[successor] = [*paths[node], successor]
                queue.append(successor)
    raise AssertionError(f"no cycle through {sorted(component)}")


MODULES = _modules()
EDGES, MISSING = _imports(MODULES)


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(module for module in MODULES if _layer_of(module) is None)
    assert not unplaced, "modules in no layer of LAYERS: " + ", ".join(unplaced)


def test_every_import_names_a_module_that_exists() -> None:
    # A former path kept for users (pktchain.functions.MOVED) is not for pktchain itself.
    assert not MISSING, "\n".join(MISSING)


def _upward(edges: list[Import]) -> list[str]:
    """The imports that point up the layers and are not allowed, one line each."""
    found = []
    for edge in edges:
        source, target = _layer_of(edge.source), _layer_of(edge.target)
        if source is None or target is None or target <= source:
            continue
        if (edge.source, edge.target) not in ALLOWED_EDGES:
            found.append(
                f"{edge.source}:{edge.line} ({LAYERS[source][0]}) imports "
                f"{edge.target} ({LAYERS[target][0]})"
            )
    return sorted(found)


def test_no_import_points_up_the_layers() -> None:
    upward = _upward(EDGES)
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    cycles = [
        f"{' -> '.join(cycle)} (modules of the cycle: {', '.join(sorted(members))})"
        for members, cycle in _cycles(EDGES)
        if members not in ALLOWED_CYCLES
    ]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_allow_lists_hold_only_what_still_happens() -> None:
    edges = {(edge.source, edge.target) for edge in EDGES}
    stale = [
        f"{source} -> {target}" for source, target in ALLOWED_EDGES if (source, target) not in edges
    ]
    stale += [
        f"{edge[0]} -> {edge[1]} is no longer upward"
        for edge in ALLOWED_EDGES
        if edge in edges and (_layer_of(edge[1]) or 0) <= (_layer_of(edge[0]) or 0)
    ]
    cycles = {members for members, _cycle in _cycles(EDGES)}
    stale += [f"cycle {sorted(members)}" for members in ALLOWED_CYCLES if members not in cycles]
    assert not stale, "allowed, but no longer happens (delete the entry):\n" + "\n".join(stale)


def test_the_checker_sees_lazy_type_only_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pktchain" / "demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pktchain.demo.b import B\n"
        "def f() -> None:\n    from . import c\n"
    )
    (package / "b.py").write_text("import pktchain.demo.a\n")
    (package / "c.py").write_text("from pktchain.cli import main\nfrom pktchain.gone import x\n")
    modules = {
        name: tmp_path / (name.replace(".", "/") + ".py")
        for name in ("pktchain.demo.a", "pktchain.demo.b", "pktchain.demo.c", "pktchain.cli")
    }
    modules["pktchain.cli"].write_text("")
    edges, missing = _imports(modules)
    assert {(e.source, e.target) for e in edges} == {
        ("pktchain.demo.a", "pktchain.demo.b"),
        ("pktchain.demo.a", "pktchain.demo.c"),
        ("pktchain.demo.b", "pktchain.demo.a"),
        ("pktchain.demo.c", "pktchain.cli"),
    }
    assert missing == ["pktchain.demo.c:2 imports pktchain.gone, which is not a module"]
    assert _cycles(edges) == [
        (
            frozenset({"pktchain.demo.a", "pktchain.demo.b"}),
            ["pktchain.demo.a", "pktchain.demo.b", "pktchain.demo.a"],
        )
    ]
    assert _upward(edges) == ["pktchain.demo.c:1 (front ends) imports pktchain.cli (command line)"]
    front_end, command_line = _layer_of("pktchain.demo.c"), _layer_of("pktchain.cli")
    assert front_end is not None and command_line is not None and front_end < command_line
    assert _layer_of("pktchain.nowhere") is None  # the root entry holds no submodule


def _documented_layers() -> list[tuple[str, tuple[str, ...]]]:
    """The rows of the table in docs/design.md's "Layers" section: (layer, modules)."""
    text = DESIGN.read_text()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].isdigit():
            continue
        rows.append((cells[1], tuple(re.findall(r"`([a-z_.]+)`", cells[2]))))
    return rows


def test_design_document_shows_these_layers() -> None:
    assert _documented_layers() == list(LAYERS)
