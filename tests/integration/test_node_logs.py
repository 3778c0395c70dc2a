"""`pktchain node --log-format json`: every line a JSON object, each change an event.

A real node process runs two native functions (their ports are the node's)
and serves its REST API on loopback; a chain is applied through the API and
removed; the node is stopped, and its whole log is read back line by line.
Its /metrics is checked by promtool on the way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pktchain.node.process import NodeProcess

FUNCTIONS = {
    "functions": [
        {"name": "mon", "kind": "flow-monitor"},
        {"name": "src", "kind": "flow-monitor"},
    ]
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    functions = tmp_path / "functions.yaml"
    functions.write_text(yaml.safe_dump(FUNCTIONS))
    process = NodeProcess(
        f"logs{os.getpid()}",
        args=("--functions", str(functions), "--log-format", "json"),
        log_path=tmp_path / "node.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.kill()


def lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # every line, or it fails here


def test_a_chain_applied_and_removed_through_the_api_is_logged_as_events(
    node: NodeProcess, tmp_path: Path
) -> None:
    with httpx.Client(base_url=node.api_url() + "/v2.0", timeout=10.0) as api:
        ports = {p["name"]: p["id"] for p in api.get("/ports").json()["ports"]}
        pair = api.post(
            "/sfc/port_pairs",
            json={
                "port_pair": {
                    "name": "PP1",
                    "ingress": ports["mon:ingress"],
                    "egress": ports["mon:egress"],
                }
            },
        )
        assert pair.status_code == 201, pair.text
        pair_id = pair.json()["port_pair"]["id"]
        group = api.post(
            "/sfc/port_pair_groups",
            json={"port_pair_group": {"name": "PG1", "port_pairs": [pair_id]}},
        )
        assert group.status_code == 201, group.text
        group_id = group.json()["port_pair_group"]["id"]
        classifier = api.post(
            "/sfc/flow_classifiers",
            json={
                "flow_classifier": {
                    "name": "FC1",
                    "protocol": "udp",
                    "logical_source_port": ports["src:egress"],
                }
            },
        )
        assert classifier.status_code == 201, classifier.text
        classifier_id = classifier.json()["flow_classifier"]["id"]
        chain = api.post(
            "/sfc/port_chains",
            json={
                "port_chain": {
                    "name": "PC1",
                    "port_pair_groups": [group_id],
                    "flow_classifiers": [classifier_id],
                }
            },
        )
        assert chain.status_code == 201, chain.text
        chain_id = chain.json()["port_chain"]["id"]
        for path in (
            f"/sfc/port_chains/{chain_id}",
            f"/sfc/flow_classifiers/{classifier_id}",
            f"/sfc/port_pair_groups/{group_id}",
            f"/sfc/port_pairs/{pair_id}",
        ):
            assert api.delete(path).status_code == 204, path
        metrics = httpx.get(node.api_url() + "/metrics", timeout=10.0)
    assert metrics.status_code == 200
    assert node.stop() == 0

    logged = lines(tmp_path / "node.log")
    for line in logged:
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert datetime.fromisoformat(line["time"]).tzinfo is not None
        assert line["level"] in ("debug", "info", "warning", "error", "critical")
    events = [line for line in logged if "event" in line]
    names = [line["event"] for line in events]
    expected = [
        "port_added",  # mon:ingress
        "function_added",
        "api_started",
        "node_started",
        "instance_added",
        "group_added",
        "classifier_added",
        "chain_applied",
        "chain_removed",
        "classifier_removed",
        "group_removed",
        "instance_removed",
        "port_removed",
        "node_stopped",
    ]
    position = 0
    for name in names:
        if position < len(expected) and name == expected[position]:
            position += 1
    assert position == len(expected), f"events out of order: {names}"
    assert names.count("port_added") == 4 and names.count("function_added") == 2
    by_name = {line["event"]: line for line in events}
    applied = by_name["chain_applied"]
    assert applied["port_chain"] == "PC1" and applied["port_chain_id"] == chain_id
    assert applied["port_pair_groups"] == [group_id]
    assert applied["flow_classifiers"] == [classifier_id]
    assert applied["message"] == f"create Port chain {chain_id}"
    assert by_name["chain_removed"]["port_chain_id"] == chain_id
    added = by_name["instance_added"]
    assert (added["port_pair"], added["ingress"], added["egress"]) == (
        "PP1",
        ports["mon:ingress"],
        ports["mon:egress"],
    )
    port = next(line for line in events if line["event"] == "port_added")
    assert port["port"] == "mon:ingress" and port["port_kind"] == "function"
    assert port["network"] == "default" and port["mac"]
    assert by_name["node_started"]["node"] == node.name
    assert by_name["node_started"]["api"] == by_name["api_started"]["url"]

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics.text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
