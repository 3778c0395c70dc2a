"""The function pages' reference parts come from the declarations and are never stale."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pktchain.functions.sdk import BUILTIN_FUNCTIONS, Function, function_class
from pktchain.functions.sdk.docs import (
    BLOCKS,
    COMMAND,
    DocsError,
    begin_marker,
    blocks,
    end_marker,
    page_text,
    stale_pages,
)
from pktchain.functions.sdk.schema import check
from support import paths

DOCS = paths.ROOT / "docs" / "functions"


@pytest.mark.parametrize("kind", sorted(BUILTIN_FUNCTIONS))
def test_each_builtin_page_is_what_its_declarations_make(kind: str) -> None:
    page = DOCS / f"{kind}.md"
    text = page.read_text(encoding="utf-8")
    made = page_text(text, blocks(function_class(kind), BUILTIN_FUNCTIONS[kind]), str(page))
    assert made == text, f"docs/functions/{kind}.md is stale: run `{COMMAND}` (or `make docs`)"


@pytest.mark.parametrize("kind", sorted(BUILTIN_FUNCTIONS))
def test_every_builtin_counter_says_what_it_counts(kind: str) -> None:
    described = function_class(kind).counter_descriptions()
    missing = [name for name, what in described.items() if not what]
    assert described, kind
    assert missing == [], f"{kind}: describe these counters in COUNTERS: {', '.join(missing)}"


@dataclass(frozen=True)
class PortConfig:
    port: int = field(default=23, metadata=check(minimum=1, maximum=65535, help="the port"))


class Named(Function[PortConfig]):
    KIND = "named"
    Config = PortConfig
    COUNTERS = ("blocked",)  # names alone, as before counters had descriptions


def page(body: str = "") -> str:
    parts = [f"{begin_marker(b)}\nold\n{end_marker(b)}" for b in BLOCKS]
    return "# named\n\n" + "\n\nprose\n\n".join(parts) + body


def test_the_blocks_say_what_the_declarations_say() -> None:
    made = blocks(Named, "tests:Named")
    assert made["summary"] == (
        "`kind: named` · `tests:Named` · interfaces `ingress`, `egress` · live reconfiguration: no"
    )
    assert "| `port` | integer, 1\u201365535 | `23` | the port |" in made["configuration"]
    assert "| `blocked` |  |" in made["counters"]


def test_only_the_blocks_are_rewritten_and_the_prose_stays() -> None:
    text = page("\n\n## Examples\n")
    made = page_text(text, blocks(Named))
    assert "old" not in made
    assert made.count("\n\nprose\n\n") == 2 and made.endswith("## Examples\n")
    assert page_text(made, blocks(Named)) == made


def test_a_page_without_a_blocks_markers_is_refused() -> None:
    text = page().replace(end_marker("counters"), "")
    with pytest.raises(DocsError, match="counters block"):
        page_text(text, blocks(Named), "named.md")


def test_stale_pages_are_named_and_rewritten_on_request(tmp_path: Path) -> None:
    for kind in BUILTIN_FUNCTIONS:
        text = (DOCS / f"{kind}.md").read_text(encoding="utf-8")
        (tmp_path / f"{kind}.md").write_text(text, encoding="utf-8")
    mirror = tmp_path / "mirror.md"
    mirror.write_text(mirror.read_text().replace("copies cut to snaplen", "copies"), "utf-8")
    assert stale_pages(tmp_path) == [str(mirror)]
    assert stale_pages(tmp_path, write=True) == [str(mirror)]
    assert stale_pages(tmp_path) == []
