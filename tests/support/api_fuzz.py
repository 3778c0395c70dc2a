"""Fuzzing a live node's REST API with schemathesis, from the API's own OpenAPI document.

`api_node` starts a `pktchain node` on loopback with every kind of route
behind its API: native functions (two flow monitors, whose ports give the
chaining model ports to name) and a router (for the router's operations);
it needs no namespace. `run_schemathesis` runs ``st run`` against it with
every check and every phase (examples, coverage, fuzzing, stateful), the
settings of `CONFIG` and the hooks of `support.api_fuzz_hooks`, and returns
the run's counts from schemathesis' JSON report. The suite runs a bounded
campaign (tests/integration/test_api_conformance.py); bench/fuzz_api.py runs
the big one (docs/robustness.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pktchain.node.process import NodeProcess

SUPPORT = Path(__file__).resolve().parent
CONFIG = SUPPORT / "schemathesis.toml"
PHASES = ("examples", "coverage", "fuzzing", "stateful")

ROUTER = {
    "name": "router",
    "interfaces": {
        "blue": {"network": "blue", "mac": "02:00:00:00:01:01", "address": "10.0.0.1/24"},
        "outside": {
            "network": "outside",
            "mac": "02:00:00:00:02:01",
            "address": "198.51.100.2/24",
            "external": True,
            "gateway": "198.51.100.10",
        },
    },
    "nat": {"internal_networks": ["10.0.0.0/8"]},
}
FUNCTIONS = {
    "functions": [{"name": "mon", "kind": "flow-monitor"}, {"name": "mon2", "kind": "flow-monitor"}]
}


@contextmanager
def api_node(name: str, workdir: Path, *, args: tuple[str, ...] = ()) -> Iterator[NodeProcess]:
    """A node serving its API on a free loopback port, with functions and a router."""
    router, functions = workdir / "router.yaml", workdir / "functions.yaml"
    router.write_text(yaml.safe_dump(ROUTER))
    functions.write_text(yaml.safe_dump(FUNCTIONS))
    node = NodeProcess(
        name,
        control=workdir / f"{name}.sock",
        args=("--router", str(router), "--functions", str(functions), *args),
        log_path=workdir / f"{name}.log",
    )
    node.start(timeout=30)
    try:
        yield node
    finally:
        try:
            node.stop()
        finally:
            node.kill()


@dataclass(frozen=True)
class FuzzResult:
    """What one ``st run`` did: its counts, and its output for the failures."""

    exit_code: int
    operations: int
    generated: int
    with_failures: int
    unique_failures: int
    errored: int
    phases: dict[str, str]
    seconds: float
    failures: list[dict[str, Any]]
    output: str

    def summary(self) -> str:
        phases = ", ".join(f"{name} {status}" for name, status in self.phases.items())
        return (
            f"{self.operations} operations, {self.generated} test cases, "
            f"{self.unique_failures} unique failures, {self.errored} errors in "
            f"{self.seconds:.0f} s ({phases})"
        )


def run_schemathesis(
    url: str,
    report: Path,
    *,
    examples: int,
    seed: int,
    phases: tuple[str, ...] = PHASES,
    workers: int = 1,
    timeout: float | None = None,
    extra: tuple[str, ...] = (),
) -> FuzzResult:
    """``st run`` against the API at `url` (no ``/v2.0``) with every check."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(CONFIG),
        "--no-color",
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        ",".join(phases),
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        str(workers),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *extra,
    ]
    # The hooks module is all st needs from here: it talks to the node over HTTP.
    env = dict(os.environ, PYTHONPATH=str(SUPPORT.parent))
    # In the report's directory: st keeps its cache (.schemathesis/) where it runs.
    done = subprocess.run(
        command,
        env=env,
        cwd=report.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if not report.exists():
        raise RuntimeError(
            f"st run wrote no report (status {done.returncode}):\n{done.stdout}{done.stderr}"
        )
    data = json.loads(report.read_text())
    cases = data["test_cases"]
    return FuzzResult(
        exit_code=done.returncode,
        operations=data["operations"]["tested"],
        generated=cases["generated"],
        with_failures=cases["with_failures"],
        unique_failures=cases["unique_failures"],
        errored=cases["errored"],
        phases={name: phase["status"] for name, phase in data["phases"].items()},
        seconds=data["running_time"],
        failures=data["failures"],
        output=done.stdout + done.stderr,
    )
