"""A live node's REST API against its own OpenAPI document: schemathesis, every check,
every phase (examples, coverage, fuzzing, stateful), bounded.

The node runs functions and a router, so that every route has something
behind it (`support.api_fuzz.api_node`). A fixed seed and a fixed number of
cases per operation keep the run the same each time and within about a
minute; bench/fuzz_api.py runs the long campaign (docs/robustness.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.api_fuzz import PHASES, api_node, run_schemathesis

pytestmark = pytest.mark.slow

EXAMPLES = 25
SEED = 20261207


def test_the_api_does_what_its_document_says(tmp_path: Path) -> None:
    with api_node(f"conf{os.getpid()}", tmp_path) as node:
        result = run_schemathesis(
            node.api_url(), tmp_path / "report.json", examples=EXAMPLES, seed=SEED
        )
    assert result.operations == 56  # with the trace and the dashboard's snapshot
    assert result.generated > 56 * EXAMPLES
    assert result.phases == dict.fromkeys(PHASES[1:], "success") | {"examples": "skip"}
    assert (result.unique_failures, result.errored) == (0, 0), result.output
    assert result.exit_code == 0, result.output
