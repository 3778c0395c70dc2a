"""Where the repository's own files are, for tests that read examples or run the tree."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's top folder."""

EXAMPLES = ROOT / "examples"
