"""`pktchain trace` on real nodes: dry runs (nothing sent, nothing changed) and live traces.

Each test builds its hosts in namespaces, starts a node, and asks it through
the command line (`pktchain trace ... --json`) as a user does; the JSON is
checked hop by hop.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pktchain.demo.sfc import DEST_IP, SOURCE_IP, build_demo_chain, sfc_topology, start_web_server
from pktchain.lab import Lab
from pktchain.node.client import ChainingClient
from pktchain.node.control import request
from pktchain.node.process import NodeProcess
from support.nsh_fn import pktchain_env

NodeLab = Callable[..., tuple[Lab, NodeProcess]]


def trace(node: NodeProcess, *words: str) -> dict[str, Any]:
    """`pktchain trace --control ... WORDS --json`, its JSON."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pktchain",
            "trace",
            "--control",
            str(node.control),
            *words,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=pktchain_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def stages(result: dict[str, Any]) -> list[str]:
    return [hop["stage"] for hop in result["hops"] if not hop.get("copy")]


def state(node: NodeProcess, sport: int) -> tuple[Any, ...]:
    """What a dry run of a flow from `sport` must not change: the flow table's rows of
    that flow, the chains' hop counters, the fast path's entries and installs.

    (The hosts' own background traffic, IPv6 neighbour discovery, may change the rest.)
    """
    status = node.status()
    flows = [row for row in request(node.control, "flows")["flows"] if row["sport"] == sport]
    return (flows, status["steering"]["chains"], status["fast_path"]["installed"])


def test_dry_run_on_the_sfc_demo_chain(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = node_lab(sfc_topology("trc", 3))
    start_web_server(lab.host("dest_vm"), tmp_path)
    api = ChainingClient(node.control)
    build_demo_chain(api)
    before = state(node, 40000)
    result = trace(
        node,
        "--from",
        "source_vm:eth0",
        "proto=tcp",
        f"dst={DEST_IP}",
        "sport=40000",
        "dport=80",
    )
    assert state(node, 40000) == before, "a dry run changed the node"
    hops = result["hops"]
    assert hops[0]["stage"] == "ingress"
    assert hops[0]["port"] == "source_vm:eth0"
    assert hops[0]["frame"]["ip.src"] == SOURCE_IP
    assert hops[0]["frame"]["eth.dst"] == "02:00:00:00:00:10"  # dest_vm's, from the model
    steering = next(hop for hop in hops if hop["stage"] == "steering")
    assert steering["decision"] == "classified"
    assert steering["classifiers"] == [{"classifier": "FC_demo", "chain": "PC1", "matched": True}]
    groups = {group["group"]: group for group in steering["groups"]}
    assert set(groups) == {"PG1", "PG2"}
    assert groups["PG1"]["chosen"] in ("PP1", "PP2")
    assert groups["PG2"]["chosen"] == "PP3"
    egresses = [hop for hop in hops if hop["stage"] == "egress" and not hop.get("copy")]
    # Into the first service VM, then PP3's VM, then dest_vm: each hop a real port.
    vm = {"PP1": "vm1", "PP2": "vm2"}[groups["PG1"]["chosen"]]
    assert egresses[0]["port"] == f"{vm}:in"
    assert egresses[0]["frame"]["eth.dst"] == f"02:00:00:00:{vm[-1]}0:01"
    assert result["result"] == "delivered"
    assert result["egress"] == f"{vm}:in"

    # Not the chain's traffic: a classifier that fails names the field.
    other = trace(node, "--from", "source_vm:eth0", "proto=udp", f"dst={DEST_IP}", "dport=53")
    steering = next(hop for hop in other["hops"] if hop["stage"] == "steering")
    assert steering["decision"] == "unsteered"
    assert "protocol" in steering["classifiers"][0]["why"]
    assert other["result"] == "delivered"
    assert other["egress"] == "dest_vm:eth0"
    assert state(node, 40000) == before
