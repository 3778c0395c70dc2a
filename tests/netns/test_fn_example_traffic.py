"""The example user function in a chain, from its YAML file, on real traffic.

The node loads examples/functions/port-filter.yaml as a user would (the
directory on PYTHONPATH, the class named by import path); a chain steers
everything between h1 and h2 through it. The web page still comes, on the
fast path; a connection to the blocked port 23 never opens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import paths
from support.fn_lab import H2, NodeLab, curl, function_status, start_from_file

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


EXAMPLES = paths.EXAMPLES / "functions"


def test_the_port_filter_blocks_its_port_and_leaves_the_rest_to_the_fast_path(
    node_lab: NodeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLES), prepend=os.pathsep)
    path = EXAMPLES / "port-filter.yaml"
    lab, node = start_from_file(node_lab, tmp_path, path, page_size=1_000_000)
    h2 = lab.host("h2")
    h2.popen(["python3", "-m", "http.server", "23", "--bind", H2], cwd=tmp_path)
    h2.wait_listening(23, timeout=10)
    assert curl(lab)["body"] == 1_000_000
    blocked = lab.host("h1").run(
        ["curl", "-sS", "--connect-timeout", "2", f"http://{H2}:23/"], timeout=20
    )
    assert blocked.returncode == 28, blocked.stderr  # curl: the connection timed out
    counters = function_status(node, "pf1")["counters"]
    assert counters["blocked-port"] >= 1  # the SYN, and its retransmissions
    assert counters["malformed"] == 0
    assert node.status()["fast_path"]["hits"] > 0
