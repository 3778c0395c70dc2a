"""The C NSH-aware function in a chain that crosses nodes.

n1 holds the client; n2 holds the server and `nshfn`, a host whose two
interfaces are the ports of a pair with ``correlation: nsh``, where
build/nsh-flowcount runs. n2 gives it every frame of the chain in NSH over
Ethernet and takes it back with the SI one less; the function's own stats and
a capture of what it sent (decoded by tshark) show that it was in the path,
both ways.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pktchain.lab import Lab, wait_until
from pktchain.node.control import request
from pktchain.node.process import NodeProcess
from support.fn_lab import capture
from support.nsh_fn import flowcount_binary

TOPOLOGY: dict[str, Any] = {
    "nodes": {"n1": {}, "n2": {}},
    "hosts": {
        "client": {
            "node": "n1",
            "interfaces": {
                "eth0": {"attach": "node", "mac": "02:00:00:00:00:01", "addresses": ["10.0.0.1/24"]}
            },
        },
        "nshfn": {
            "node": "n2",
            "interfaces": {
                "in": {"attach": "node", "mac": "02:00:00:00:0e:01"},
                "out": {"attach": "node", "mac": "02:00:00:00:0e:02"},
            },
        },
        "server": {
            "node": "n2",
            "interfaces": {
                "eth0": {"attach": "node", "mac": "02:00:00:00:00:02", "addresses": ["10.0.0.2/24"]}
            },
        },
    },
}


def sfc(node: NodeProcess, action: str, collection: str, **params: Any) -> dict[str, Any]:
    reply = request(node.control, "sfc", action=action, collection=collection, **params)
    assert reply.get("ok"), reply
    return reply


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Lab, dict[str, NodeProcess], Path]]:
    tmp = tmp_path_factory.mktemp("nshchain")
    topology = tmp / "topology.yaml"
    topology.write_text(json.dumps(TOPOLOGY))
    binary = flowcount_binary()
    lab = Lab.up(topology, name=f"cnf{int(time.time() * 1000) % 100000}")
    nodes: dict[str, NodeProcess] = {}
    function = None
    try:
        etcd = lab.topology.etcd.client_url if lab.topology.etcd else None
        for name in ("n1", "n2"):
            node = NodeProcess(
                f"{lab.name}-{name}",
                topology=topology,
                lab_name=lab.name,
                node=name,
                etcd=etcd,
                log_path=tmp / f"{name}.log",
            )
            nodes[name] = node.start(timeout=30)
        stats = tmp / "flowcount.json"
        function = lab.host("nshfn").popen(
            [str(binary), "--interface", "in", "--egress", "out", "--stats", str(stats)]
        )
        ports = {p["name"]: p["id"] for p in sfc(nodes["n1"], "list", "ports")["resources"]}
        pair = sfc(
            nodes["n1"],
            "create",
            "port_pairs",
            body={
                "name": "flowcount",
                "ingress": ports["nshfn:in"],
                "egress": ports["nshfn:out"],
                "service_function_parameters": {"correlation": "nsh"},
            },
        )["resource"]["id"]
        group = sfc(
            nodes["n1"], "create", "port_pair_groups", body={"name": "g", "port_pairs": [pair]}
        )["resource"]["id"]
        classifier = sfc(
            nodes["n1"],
            "create",
            "flow_classifiers",
            body={
                "name": "fc",
                "logical_source_port": ports["client:eth0"],
                "logical_destination_port": ports["server:eth0"],
            },
        )["resource"]["id"]
        sfc(
            nodes["n1"],
            "create",
            "port_chains",
            body={
                "name": "with-c",
                "port_pair_groups": [group],
                "flow_classifiers": [classifier],
                "chain_parameters": {"symmetric": True, "correlation": "nsh"},
            },
        )
        wait_until(
            lambda: bool(nodes["n2"].status()["steering"]["chains"]),
            timeout=10,
            what="n2 steering the chain",
        )
        # n1, the ingress, puts the pair on n2 in its plan once it knows the pair's
        # ports and n2 is a live peer: until then a new flow passes the group over.
        client = lab.host("client")

        def through_the_function() -> bool:
            client.run(["ping", "-c", "1", "-W", "1", "10.0.0.2"], timeout=5)
            return any(flow["path"] == ["flowcount"] for flow in nodes["n1"].flows())

        wait_until(through_the_function, timeout=15, what="n1 steering through the C function")
        yield lab, nodes, stats
    finally:
        if function is not None:
            function.terminate()
            function.wait(timeout=10)
        for node in nodes.values():
            node.stop()
        lab.down()


def test_the_c_function_is_in_the_path_both_ways(
    chain: tuple[Lab, dict[str, NodeProcess], Path],
) -> None:
    lab, _nodes, stats = chain
    pcap = stats.with_name("function-out.pcap")
    with capture(lab.host("nshfn"), "out", pcap):
        ping = lab.host("client").run(
            ["ping", "-c", "5", "-i", "0.2", "-W", "3", "10.0.0.2"], timeout=20
        )
    assert ping.ok, ping.stdout
    assert " 0% packet loss" in ping.stdout
    # What the function sent back on `out`: the pings, SI one less than the
    # node gave (255 -> 254), its own TLV (class 0xFFF6, type 0x80) added.
    run = subprocess.run(
        [
            "tshark", "-r", str(pcap), "-Y", "nsh", "-T", "fields",
            "-e", "eth.src", "-e", "nsh.spi", "-e", "nsh.si", "-e", "nsh.metadatatype",
        ],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in run.stdout.splitlines()]
    forward = [row for row in rows if int(row[1], 0) < 0x800000]
    assert len(forward) >= 5, rows
    for _src, _spi, si, types in forward:
        assert int(si, 0) == 254
        assert "0x80" in types or "128" in types.split(","), types
    assert (
        subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "_ws.malformed"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        == ""
    )
    # The function's own count: the ping flow, both ways.
    function = lab.host("nshfn")
    pids = function.run(["pgrep", "-f", "nsh-flowcount"], timeout=5).stdout.split()
    assert pids
    function.run(["kill", f"-{signal.SIGUSR1.value}", pids[0]], timeout=5)
    wait_until(lambda: stats.exists() and stats.stat().st_size > 0, timeout=5, what="stats")
    counted = json.loads(stats.read_text())
    assert counted["in"]["packets"] >= 10, counted  # five pings, five replies
    icmp = [flow for flow in counted["flows"] if flow["proto"] == 1]
    assert sum(flow["packets"] for flow in icmp) >= 10, counted
