"""Native functions in a running node: chained as port pairs, fused, driven over REST.

The functions are loaded by import path from tests/netns/fnlib (on PYTHONPATH
for the node process), as a user's own would be.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pktchain.lab import Lab
from pktchain.node.client import ChainingClient
from pktchain.node.process import NodeProcess
from support.fn_lab import chain, rest
from support.topologies import node_hosts

HERE = Path(__file__).resolve().parent
NodeLab = Callable[..., tuple[Lab, NodeProcess]]
FUNCTIONS = {
    "functions": [
        {"name": f"f{n}", "kind": "fnlib.passes:CountingPass", "config": {"label": f"hop {n}"}}
        for n in (1, 2, 3)
    ]
}


@pytest.fixture
def chained(
    node_lab: NodeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Lab, NodeProcess, ChainingClient]:
    """client -> f1 -> f2 -> f3 -> server for TCP port 5201, a symmetric chain."""
    monkeypatch.setenv("PYTHONPATH", str(HERE), prepend=os.pathsep)
    path = tmp_path / "functions.yaml"
    path.write_text(yaml.safe_dump(FUNCTIONS))
    lab, node = node_lab(
        node_hosts("client", "server"), args=("--functions", str(path), "--api", "127.0.0.1:0")
    )
    api = ChainingClient(node.control)
    chain(
        api,
        ["f1", "f2", "f3"],
        name="three",
        source="client:eth0",
        destination="server:eth0",
        protocol="tcp",
        destination_port_range_min=5201,
        destination_port_range_max=5201,
    )
    return lab, node, api


def test_a_chain_of_native_functions_rides_the_fast_path(
    chained: tuple[Lab, NodeProcess, ChainingClient],
) -> None:
    lab, node, _api = chained
    server = lab.host("server").popen(["iperf3", "-s", "-1", "-B", "10.0.0.2"])
    # The client must not start before the server listens: refused, it would exit at
    # once and leave the one-shot server waiting forever.
    lab.host("server").wait_listening(5201, timeout=10)
    try:
        result = lab.host("client").run(
            ["iperf3", "-c", "10.0.0.2", "-t", "2", "--connect-timeout", "3000", "-J"], timeout=30
        )
    finally:
        server.wait(timeout=10)
    assert result.ok, result.stderr
    # What the server read had crossed the chain; what the client wrote may still
    # have been in its socket buffer, not yet sent, when iperf3 exited.
    received = json.loads(result.stdout)["end"]["sum_received"]["bytes"]
    status = node.status()
    fast = status["fast_path"]
    hops = [hop for chain in status["steering"]["chains"] for hop in chain["hops"]]
    forward = [hop for hop in hops if hop["direction"] == "forward"]
    assert [hop["port_pair_name"] for hop in forward] == ["pp-f1", "pp-f2", "pp-f3"]
    # Every hop counted the data packets, most of them on the fast path.
    assert all(hop["bytes"] >= received for hop in forward), (received, forward)
    _code, listing = rest(node, "GET", "/v2.0/pktchain/functions")
    functions = {f["name"]: f for f in listing["functions"]}
    assert set(functions) == {"f1", "f2", "f3"}
    for function in functions.values():
        assert function["kind"] == "fnlib.passes:CountingPass"
        # Only a few packets per flow went through the function itself.
        assert function["counters"]["calls"] < function["cached_packets"] // 10, function
    assert fast["hits"] > 0 and fast["entries"] >= 2, fast


def test_functions_over_rest_errors_name_the_field_and_in_use_functions_stay(
    chained: tuple[Lab, NodeProcess, ChainingClient],
) -> None:
    _lab, node, api = chained
    code, body = rest(
        node,
        "POST",
        "/v2.0/pktchain/functions",
        {
            "function": {
                "name": "bad",
                "kind": "fnlib.passes:CountingPass",
                "config": {"ttl_floor": 999, "colour": 1},
            }
        },
    )
    assert code == 400
    message = body["NeutronError"]["message"]
    assert "config.ttl_floor" in message and "config.colour" in message
    code, body = rest(
        node,
        "POST",
        "/v2.0/pktchain/functions",
        {"function": {"name": "x", "kind": "nosuch:Thing"}},
    )
    assert code == 400 and "kind" in body["NeutronError"]["message"]
    code, body = rest(
        node,
        "POST",
        "/v2.0/pktchain/functions",
        {"function": {"name": "f4", "kind": "fnlib.passes:CountingPass"}},
    )
    assert code == 201 and body["function"]["ports"] == {
        "ingress": "f4:ingress",
        "egress": "f4:egress",
    }
    assert api.get("ports", api.port_id("f4:ingress"))["name"] == "f4:ingress"
    code, body = rest(
        node, "PUT", "/v2.0/pktchain/functions/f4", {"function": {"config": {"label": "new"}}}
    )
    assert code == 200 and body["function"]["label"] == "new"
    assert rest(node, "DELETE", "/v2.0/pktchain/functions/f1")[0] == 409  # pp1 uses it
    assert rest(node, "DELETE", "/v2.0/pktchain/functions/f4")[0] == 204
    assert rest(node, "GET", "/v2.0/pktchain/functions/f4")[0] == 404


def test_chains_chosen_by_http_host(
    node_lab: NodeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(HERE), prepend=os.pathsep)
    path = tmp_path / "functions.yaml"
    path.write_text(yaml.safe_dump(FUNCTIONS))
    lab, node = node_lab(node_hosts("client", "server"), args=("--functions", str(path)))
    api = ChainingClient(node.control)
    for n, host in ((1, "a.test"), (2, "b.test")):
        chain(
            api,
            [f"f{n}"],
            name=f"to-{host}",
            source="client:eth0",
            destination=None,
            symmetric=False,
            protocol="tcp",
            destination_port_range_min=80,
            destination_port_range_max=80,
            l7_parameters={"http_host": host},
        )
    server = lab.host("server")
    serve = (
        "import http.server as h, socketserver as s; "
        "s.TCPServer(('10.0.0.2', 80), h.SimpleHTTPRequestHandler).serve_forever()"
    )
    server.popen(["python3", "-c", serve], cwd=str(tmp_path))
    server.wait_listening(80, timeout=10)

    def calls() -> dict[str, int]:
        return {f["name"]: f["counters"]["calls"] for f in node.functions()}

    for _ in range(2):
        result = lab.host("client").run(
            [
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "--max-time",
                "5",
                "-H",
                "Host: B.test",
                "http://10.0.0.2/",
            ]
        )
        assert result.ok, result.stderr
    after_b = calls()
    assert after_b["f2"] > 0 and after_b["f1"] == 0, after_b
    result = lab.host("client").run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-H",
            "Host: a.test",
            "http://10.0.0.2/",
        ]
    )
    assert result.ok, result.stderr
    after_a = calls()
    assert after_a["f1"] > 0 and after_a["f2"] == after_b["f2"], after_a
    assert node.status()["steering"]["stats"]["l7_pending"] >= 3  # each handshake went as it was


def test_a_mirror_interface_written_to_a_pcap_file_opens_in_tcpdump(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    capture = tmp_path / "mirror.pcap"
    path = tmp_path / "functions.yaml"
    path.write_text(
        yaml.safe_dump(
            {"functions": [{"name": "m", "kind": "mirror", "pcap": {"mirror": str(capture)}}]}
        )
    )
    lab, node = node_lab(node_hosts("client", "server"), args=("--functions", str(path)))
    chain(
        ChainingClient(node.control),
        ["m"],
        name="mirrored",
        source="client:eth0",
        destination="server:eth0",
        protocol="icmp",
    )
    assert lab.host("client").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    (mirror,) = node.functions()
    assert mirror["pcap"]["mirror"]["frames"] == 6  # three requests, three replies
    listing = subprocess.run(
        ["tcpdump", "-n", "-r", str(capture)], capture_output=True, text=True, check=True
    )
    lines = listing.stdout.splitlines()
    assert sum("ICMP echo request" in line for line in lines) == 3, listing.stdout
    assert sum("ICMP echo reply" in line for line in lines) == 3, listing.stdout
    assert all("10.0.0.1" in line and "10.0.0.2" in line for line in lines)
