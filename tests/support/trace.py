"""`pktchain trace` as a user runs it, for the netns tests: its JSON, its stages."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from pktchain.node.process import NodeProcess
from support.nsh_fn import pktchain_env


def run_trace(node: NodeProcess, *words: str) -> subprocess.CompletedProcess[str]:
    """`pktchain trace --control ... WORDS` as a user runs it (its output, its status)."""
    return subprocess.run(
        [sys.executable, "-m", "pktchain", "trace", "--control", str(node.control), *words],
        capture_output=True,
        text=True,
        timeout=60,
        env=pktchain_env(),
        check=False,
    )


def trace(node: NodeProcess, *words: str) -> dict[str, Any]:
    """`pktchain trace --control ... WORDS --json`, its JSON."""
    done = run_trace(node, *words, "--json")
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def stages(result: dict[str, Any]) -> list[str]:
    """The stages of the packet itself (not of its copies), in order."""
    return [hop["stage"] for hop in result["hops"] if not hop.get("copy")]
