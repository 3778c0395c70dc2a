"""`pktchain node --etcd` and `pktchain api serve`: real processes sharing one etcd.

Each node runs a native function (a flow monitor, whose two ports are the
node's), serves its REST API on loopback, and registers in the cluster. What
one node's API changes, every node's API shows; while etcd is away writes get
a 503 and reads go on; the API served apart from any node changes the same
state.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pktchain.lab.wait import wait_until
from pktchain.node.process import NodeProcess
from support.etcd import EtcdServer, free_port

WAIT = 15.0
FUNCTIONS = {"functions": [{"name": "mon", "kind": "flow-monitor"}]}


@pytest.fixture
def functions(tmp_path: Path) -> Path:
    path = tmp_path / "functions.yaml"
    path.write_text(yaml.safe_dump(FUNCTIONS))
    return path


@pytest.fixture
def start_node(
    etcd: EtcdServer, functions: Path, tmp_path: Path
) -> Iterator[Callable[..., NodeProcess]]:
    started: list[NodeProcess] = []

    def start(tag: str, *args: str) -> NodeProcess:
        name = f"et{os.getpid()}{tag}"
        node = NodeProcess(
            name,
            etcd=etcd.url,
            args=("--functions", str(functions), *args),
            log_path=tmp_path / f"{name}.log",
        )
        started.append(node)
        return node.start(timeout=WAIT)

    yield start
    for node in started:
        try:
            node.stop()
        finally:
            node.kill()


def rest(node: NodeProcess) -> httpx.Client:
    return httpx.Client(base_url=node.api_url() + "/v2.0", timeout=10.0)


def ports_of(api: httpx.Client, host: str) -> dict[str, str]:
    found = api.get("/ports", params={"binding:host_id": host}).json()["ports"]
    return {port["name"]: port["id"] for port in found}


def pair_body(ports: dict[str, str], name: str) -> dict[str, Any]:
    return {
        "port_pair": {"name": name, "ingress": ports["mon:ingress"], "egress": ports["mon:egress"]}
    }


def test_nodes_share_the_chaining_state_and_know_each_other(
    start_node: Callable[..., NodeProcess],
) -> None:
    one = start_node("a", "--underlay", "127.0.0.1:4791")
    two = start_node("b", "--underlay", "127.0.0.2")
    wait_until(
        lambda: one.status()["cluster"]["nodes"] == sorted([one.name, two.name]),
        timeout=WAIT,
        what="node a sees node b",
    )
    status = two.status()["cluster"]
    assert status["connected"] and status["underlay"] == "127.0.0.2:4790"
    api_one, api_two = rest(one), rest(two)
    with api_one, api_two:
        # Each node's ports are bound to it, and every node's API lists them all.
        ports_two = ports_of(api_one, two.name)
        assert set(ports_two) == {"mon:ingress", "mon:egress"}
        assert set(ports_of(api_two, one.name)) == {"mon:ingress", "mon:egress"}
        assert len(api_one.get("/ports").json()["ports"]) == 4

        made = api_one.post("/sfc/port_pairs", json=pair_body(ports_two, "PP-b"))
        assert made.status_code == 201, made.text
        pair = made.json()["port_pair"]
        wait_until(
            lambda: api_two.get(f"/sfc/port_pairs/{pair['id']}").status_code == 200,
            timeout=WAIT,
            what="node b has the pair made through node a",
        )
        group = api_two.post(
            "/sfc/port_pair_groups",
            json={"port_pair_group": {"name": "PG", "port_pairs": [pair["id"]]}},
        )
        assert group.status_code == 201, group.text
        wait_until(
            lambda: (
                [g["name"] for g in api_one.get("/sfc/port_pair_groups").json()["port_pair_groups"]]
                == ["PG"]
            ),
            timeout=WAIT,
            what="node a has the group made through node b",
        )
        # The rules hold across nodes: the pair is in a group, wherever it is deleted.
        in_use = api_one.delete(f"/sfc/port_pairs/{pair['id']}")
        assert in_use.status_code == 409
        assert in_use.json()["NeutronError"]["type"] == "PortPairInUse"

    two.stop()
    wait_until(lambda: one.status()["cluster"]["nodes"] == [one.name], timeout=WAIT, what="b left")


def test_etcd_away_writes_get_503_reads_go_on_and_nothing_is_lost(
    etcd: EtcdServer, start_node: Callable[..., NodeProcess]
) -> None:
    one = start_node("a")
    two = start_node("b")
    api_one, api_two = rest(one), rest(two)
    with api_one, api_two:
        wait_until(lambda: len(ports_of(api_one, two.name)) == 2, timeout=WAIT)
        ports_one, ports_two = ports_of(api_two, one.name), ports_of(api_one, two.name)
        assert api_one.post("/sfc/port_pairs", json=pair_body(ports_one, "PP-a")).status_code == 201

        etcd.kill()
        refused = api_one.post("/sfc/port_pairs", json=pair_body(ports_two, "PP-b"))
        assert refused.status_code == 503
        error = refused.json()["NeutronError"]
        assert error["type"] == "ServiceUnavailable" and etcd.url in error["message"]
        listed = api_one.get("/sfc/port_pairs")
        assert listed.status_code == 200
        assert [p["name"] for p in listed.json()["port_pairs"]] == ["PP-a"]
        wait_until(lambda: not one.status()["cluster"]["connected"], timeout=WAIT)

        etcd.start()
        made = api_two.post("/sfc/port_pairs", json=pair_body(ports_two, "PP-b"))
        assert made.status_code == 201, made.text
        wait_until(
            lambda: (
                sorted(p["name"] for p in api_one.get("/sfc/port_pairs").json()["port_pairs"])
                == ["PP-a", "PP-b"]
            ),
            timeout=WAIT,
            what="node a has what node b made after etcd came back",
        )
        assert one.status()["cluster"]["connected"]


def test_a_taken_name_and_a_state_file_are_refused(
    etcd: EtcdServer, start_node: Callable[..., NodeProcess], functions: Path, tmp_path: Path
) -> None:
    one = start_node("a")

    def node(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pktchain", "node", "--functions", str(functions)]
        argv += ["--control", str(tmp_path / "twin.sock"), "--no-api", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    twin = node("--name", one.name, "--etcd", etcd.url)
    assert twin.returncode == 2
    assert f"node {one.name} is already registered in cluster pktchain" in twin.stderr
    with_state = node("--name", "other", "--etcd", etcd.url, "--state", str(tmp_path / "s.db"))
    assert with_state.returncode == 2
    assert "--state and --no-state do not apply with --etcd" in with_state.stderr
    no_etcd = node("--name", "other", "--cluster", "c1")
    assert no_etcd.returncode == 2 and "--cluster needs --etcd" in no_etcd.stderr
    bad = node("--name", "other", "--etcd", "127.0.0.1:2379")
    assert bad.returncode == 2 and "expected http://HOST:PORT" in bad.stderr
    assert one.status()["cluster"]["nodes"] == [one.name]


def test_the_api_served_apart_from_the_nodes(
    etcd: EtcdServer, start_node: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    one = start_node("a")
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pktchain",
            "api",
            "serve",
            "--etcd",
            etcd.url,
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _answers(port), timeout=WAIT, what="pktchain api serve")
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}/v2.0", timeout=10.0)
        with api, rest(one) as node_api:
            ports = ports_of(api, one.name)
            made = api.post("/sfc/port_pairs", json=pair_body(ports, "PP-api"))
            assert made.status_code == 201, made.text
            pair_id = made.json()["port_pair"]["id"]
            wait_until(
                lambda: node_api.get(f"/sfc/port_pairs/{pair_id}").status_code == 200,
                timeout=WAIT,
                what="the node has the pair made through the API server",
            )
            for path in ("/pktchain/status", "/pktchain/flows", "/pktchain/functions"):
                answer = api.get(path)
                assert answer.status_code == 404, path
                assert "runs no" in answer.json()["NeutronError"]["message"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(15) == 0
        finally:
            server.kill()
            server.wait()
            log.close()


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v2.0/sfc/port_pairs").status_code == 200
    except httpx.HTTPError:
        return False
