"""Real clients drive a running node, and the traffic follows.

The official `openstack` command line (with python-neutronclient's sfc plugin)
runs the networking-sfc demo's create / update / delete sequence against the node's REST API;
after each step, captures inside the service VMs show where HTTP went.
`pktchain apply` brings the same chain from the shipped example file, and a
second run changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pktchain.demo.sfc import STEPS, sfc_topology, start_web_server
from pktchain.lab import Lab
from pktchain.node.process import NodeProcess
from support.fn_lab import capture
from support.openstack_cli import OPENSTACK, Openstack
from support.paths import EXAMPLES
from support.sfc_lab import fetch

NodeLab = Callable[..., tuple[Lab, NodeProcess]]

# The networking-sfc demo's sequence, in the openstack client's words (the demo used the old
# neutron client: `port-chain-update --no-flow-classifier PC1` and so on).
CREATE = (
    "sfc port pair create --ingress vm1:in --egress vm1:out PP1",
    "sfc port pair create --ingress vm2:in --egress vm2:out PP2",
    "sfc port pair create --ingress vm3:in --egress vm3:out PP3",
    "sfc port pair group create --port-pair PP1 --port-pair PP2 PG1",
    "sfc port pair group create --port-pair PP3 PG2",
    "sfc flow classifier create --protocol tcp --destination-port 80:80 "
    "--logical-source-port source_vm:eth0 FC_demo",
    "sfc port chain create --port-pair-group PG1 --port-pair-group PG2 "
    "--flow-classifier FC_demo PC1",
)
UPDATES = (
    (),
    ("sfc port chain set --no-flow-classifier PC1",),
    (
        "sfc port chain set --flow-classifier FC_demo "
        "--no-port-pair-group --port-pair-group PG1 PC1",
    ),
    ("sfc port pair group set --no-port-pair --port-pair PP2 PG1",),
    (
        "sfc port pair group set --port-pair PP1 PG1",
        "sfc port chain set --no-port-pair-group --port-pair-group PG1 --port-pair-group PG2 PC1",
    ),
)


def seen_by_service_vms(lab: Lab, tmp_path: Path, label: str) -> dict[str, int]:
    """HTTP packets each service VM receives while source_vm fetches 20 times."""
    with (
        capture(lab.host("vm1"), "in", tmp_path / f"{label}-vm1.pcap", "tcp port 80") as vm1,
        capture(lab.host("vm2"), "in", tmp_path / f"{label}-vm2.pcap", "tcp port 80") as vm2,
        capture(lab.host("vm3"), "in", tmp_path / f"{label}-vm3.pcap", "tcp port 80") as vm3,
    ):
        fetch(lab, 20)
    return {"vm1": len(vm1), "vm2": len(vm2), "vm3": len(vm3)}


@pytest.mark.skipif(not OPENSTACK.exists(), reason="the openstack CLI is not installed")
def test_the_openstack_client_drives_the_seed_003_sequence(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = node_lab(sfc_topology("sfc"))
    start_web_server(lab.host("dest_vm"), tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    openstack = Openstack(f"{node.api_url()}/v2.0", home, ("--os-auth-type", "none"))
    for command in CREATE:
        openstack(command)
    for (title, _change, expectation), commands in zip(STEPS, UPDATES, strict=True):
        for command in commands:
            openstack(command)
        seen = seen_by_service_vms(lab, tmp_path, title[:1])
        for vm in expectation.busy:
            assert seen[vm] > 0, f"{title}: {vm} saw no HTTP ({seen})"
        for vm in expectation.idle:
            assert seen[vm] == 0, f"{title}: {vm} saw HTTP ({seen})"
    for command in (
        "sfc port chain delete PC1",
        "sfc flow classifier delete FC_demo",
        "sfc port pair group delete PG1 PG2",
        "sfc port pair delete PP1 PP2 PP3",
    ):
        openstack(command)
    assert openstack.json("sfc port chain list") == []
    assert seen_by_service_vms(lab, tmp_path, "deleted") == {"vm1": 0, "vm2": 0, "vm3": 0}


def test_apply_brings_the_example_chain_and_a_second_run_changes_nothing(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = node_lab(sfc_topology("sfc"))
    start_web_server(lab.host("dest_vm"), tmp_path)
    spec = yaml.safe_load((EXAMPLES / "sfc-demo.yaml").read_text())
    spec.pop("topology")  # the test's lab has its own name; its ports are the same
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    argv = [sys.executable, "-m", "pktchain", "apply", "-f", str(path), "--url", node.api_url()]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert "PC1" in first.stdout
    seen = seen_by_service_vms(lab, tmp_path, "applied")
    assert seen["vm1"] > 0 and seen["vm2"] > 0 and seen["vm3"] > 0
    again = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stderr
    assert "PC1" not in again.stdout  # nothing to create, change or delete
    (chain,) = node.status()["steering"]["chains"]
    assert chain["name"] == "PC1" and chain["flows"] == 20
