"""docs/vrrp-conformance.md names tests that exist: a renamed or removed test fails here."""

from __future__ import annotations

import ast
import re

from support.paths import ROOT

DOC = ROOT / "docs" / "vrrp-conformance.md"
FILES = {
    "P": "tests/unit/packet/test_packet_vrrp.py",
    "I": "tests/unit/functions/router/test_vrrp_instance.py",
    "E": "tests/unit/functions/router/test_vrrp_election.py",
    "C": "tests/unit/functions/router/test_vrrp_config.py",
    "K": "tests/netns/test_vrrp_keepalived.py",
    "R": "tests/unit/functions/router/test_router_vrrp.py",
}


def test_every_test_the_page_names_exists() -> None:
    text = DOC.read_text()
    for letter, path in FILES.items():
        assert f"`{letter}` = `{path.removeprefix('tests/')}`" in text
    defined = {
        letter: {
            node.name
            for node in ast.walk(ast.parse((ROOT / path).read_text()))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
        }
        for letter, path in FILES.items()
    }
    named = re.findall(r"`([PIECKR])::(test_\w+)", text)
    assert len(named) > 50
    missing = [f"{letter}::{name}" for letter, name in named if name not in defined[letter]]
    assert missing == []
    # Every requirement row ends with a test or says why there is none.
    rows = [line for line in text.splitlines() if re.match(r"\| (\d|A)\.[\d.]* \|", line)]
    assert len(rows) >= 35
    for row in rows:
        cell = row.rstrip(" |").rsplit("|", 1)[-1]
        assert "::test_" in cell or "integration: pending" in cell or "n.a." in cell, row
