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

import pytest

from pktchain.demo.sfc import DEST_IP, SOURCE_IP, build_demo_chain, sfc_topology, start_web_server
from pktchain.lab import Lab, wait_until
from pktchain.node.client import ChainingClient
from pktchain.node.control import request
from pktchain.node.process import NodeProcess
from support.fn_lab import H1_MAC, H2_MAC, NO_IPV6, chain, plug
from support.nsh_fn import pktchain_env
from support.trace import run_trace, trace

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


NodeLab = Callable[..., tuple[Lab, NodeProcess]]


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


# -- a firewall and a NAT in a chain (tests/netns/test_fn_nat_traffic.py's lab) ----------
NATCHAIN_HOSTS = {
    "h1": ("inside", H1_MAC, "10.0.0.1"),
    "h2": ("outside", H2_MAC, "198.51.100.2"),
}
EXTERNAL = "198.51.100.1"


def natchain(node_lab: NodeLab, firewall_rules: list[dict[str, Any]]) -> tuple[Lab, NodeProcess]:
    hosts = {
        name: {
            "sysctls": NO_IPV6,
            "interfaces": {
                "eth0": {
                    "attach": "node",
                    "network": network,
                    "mac": mac,
                    "addresses": [f"{address}/24"],
                }
            },
        }
        for name, (network, mac, address) in NATCHAIN_HOSTS.items()
    }
    hosts["h1"]["routes"] = [{"to": "198.51.100.0/24", "dev": "eth0"}]
    lab, node = node_lab({"lab": "trcnat", "hosts": hosts})
    plug(
        node,
        {
            "name": "fw1",
            "kind": "firewall",
            "network": "inside",
            "config": {"default": "accept", "rules": firewall_rules},
        },
    )
    plug(
        node,
        {
            "name": "nat1",
            "kind": "nat",
            "network": {"ingress": "inside", "egress": "outside"},
            "config": {"external_address": EXTERNAL, "internal_networks": ["10.0.0.0/24"]},
        },
    )
    chain(ChainingClient(node.control), ["fw1", "nat1"])
    nat_mac = next(p["mac"] for p in node.status()["ports"] if p["name"] == "nat1:egress")
    lab.host("h2").run(
        ["ip", "neigh", "replace", EXTERNAL, "lladdr", nat_mac, "dev", "eth0", "nud", "permanent"],
        check=True,
    )
    lab.host("h1").run(
        [
            "ip",
            "neigh",
            "replace",
            "198.51.100.2",
            "lladdr",
            H2_MAC,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
        check=True,
    )
    return lab, node


def functions_state(node: NodeProcess) -> Any:
    return {
        function["name"]: (
            function.get("tables"),
            function.get("counters"),
            function.get("verdicts"),
        )
        for function in request(node.control, "functions")["functions"]
    }


def test_dry_run_through_a_firewall_and_a_nat_shows_the_snat_rewrite(node_lab: NodeLab) -> None:
    _lab, node = natchain(node_lab, [])
    before = functions_state(node)
    result = trace(
        node, "--from", "h1:eth0", "proto=tcp", "dst=198.51.100.2", "sport=40000", "dport=80"
    )
    assert functions_state(node) == before, "a dry run changed a function"
    functions = [hop for hop in result["hops"] if hop["stage"] == "function"]
    assert [(hop["function"], hop["kind"], hop["verdict"]) for hop in functions] == [
        ("fw1", "firewall", "forward"),
        ("nat1", "nat", "forward"),
    ]
    assert functions[0]["rewrite"] == []
    assert functions[0]["state"] == {"connections": 1}
    rewrite = {
        change["field"]: (change["from"], change["to"]) for change in functions[1]["rewrite"]
    }
    assert rewrite["ip.src"] == ("10.0.0.1", EXTERNAL)
    assert functions[1]["state"]["nat-sessions"] == 1
    egress = [hop for hop in result["hops"] if hop["stage"] == "egress"]
    assert [hop["port"] for hop in egress] == ["h2:eth0"]
    assert egress[0]["frame"]["ip.src"] == EXTERNAL
    assert egress[0]["frame"]["eth.dst"] == H2_MAC
    assert result["result"] == "delivered"
    assert result["egress"] == "h2:eth0"


def test_dry_run_shows_the_firewall_s_drop_and_its_reason(node_lab: NodeLab) -> None:
    _lab, node = natchain(node_lab, [{"action": "drop", "protocol": "tcp", "dport": [23]}])
    before = functions_state(node)
    result = trace(node, "--from", "h1:eth0", "dst=198.51.100.2", "dport=23")
    assert functions_state(node) == before
    assert result["result"] == "dropped"
    assert result["egress"] is None
    assert result["reason"].startswith("fw1: ")
    last = [hop for hop in result["hops"] if hop["stage"] == "function"][-1]
    assert (last["function"], last["verdict"]) == ("fw1", "drop")
    assert not [hop for hop in result["hops"] if hop["stage"] == "egress"]
    # The text form says the same in words.
    done = run_trace(node, "--from", "h1:eth0", "dst=198.51.100.2", "dport=23")
    assert done.returncode == 0, done.stderr
    assert "function fw1 (firewall) in on ingress: drop" in done.stdout
    assert f"result: dropped: {result['reason']}" in done.stdout


def test_bad_fields_are_named(node_lab: NodeLab) -> None:
    _lab, node = natchain(node_lab, [])
    done = run_trace(node, "--from", "h1:eth0", "dst=198.51.100", "dport=70000")
    assert done.returncode == 2
    assert "ip.dst" in done.stderr and "l4.sport" not in done.stderr
    assert "70000 is out of range" in done.stderr
    done = run_trace(node, "--from", "nowhere", "dst=198.51.100.2")
    assert done.returncode == 2 and "from: no port 'nowhere'" in done.stderr


def test_live_trace_of_real_pings_has_increasing_timestamps(node_lab: NodeLab) -> None:
    lab, node = natchain(node_lab, [])
    tracer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pktchain",
            "trace",
            "--control",
            str(node.control),
            "--live",
            "--from",
            "h1:eth0",
            "proto=icmp",
            "dst=198.51.100.2",
            "--count",
            "4",
            "--timeout",
            "30",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=pktchain_env(),
    )
    try:
        wait_until(
            lambda: tracer.poll() is not None or node.status()["live_trace"],
            timeout=20,
            what="the live trace armed",
        )
        assert tracer.poll() is None, tracer.communicate()
        lab.host("h1").run(["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.51.100.2"], check=True)
        out, err = tracer.communicate(timeout=60)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.communicate()
    assert tracer.returncode == 0, err
    packets = json.loads(out)
    assert len(packets) == 4
    for packet in packets:
        hops = [hop for hop in packet["hops"] if not hop.get("copy")]
        assert hops[0]["stage"] == "ingress" and hops[0]["port"] == "h1:eth0"
        times = [hop["us"] for hop in hops]
        assert times == sorted(times), times
        functions = [hop for hop in hops if hop["stage"] == "function"]
        assert [hop["function"] for hop in functions] == ["fw1", "nat1"]
        for hop in functions:
            assert hop["left_us"] >= hop["us"]
        assert packet["result"] == "delivered" and packet["egress"] == "h2:eth0"
        assert hops[-1]["stage"] in ("egress", "fast-path-install")
    # The flow earns its fused entry (with its second or third packet: the first is
    # classified); the 4th would have taken it, and it was set aside while marked.
    assert any(
        hop["stage"] == "fast-path" and hop["hit"]
        for packet in packets[1:]
        for hop in packet["hops"]
    )
    status = node.status()
    assert not status["live_trace"]
    kernel = status["fast_path"]["kernel"]
    if kernel["active"]:
        # Veth ports: while the trace watched h1, its entries stayed in Python
        # (the kernel's packets never reach a trace); once it ended they went back.
        assert kernel["refused"].get("watched", 0) >= 1, kernel
        assert kernel["entries"] >= 1, kernel
