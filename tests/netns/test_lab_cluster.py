"""Cluster labs in real namespaces: nodes on an underlay, the lab's etcd, teardown,
and `pktchain node --node` inside its node's namespace.

ping (with DF set), curl and `ip -j` are the oracles; traffic only goes
between the namespaces each test makes.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.lab import Lab, LabHost, namespaces, wait_until
from pktchain.lab.journal import journal_path, log_dir, read_journal
from pktchain.node.control import ControlError, request
from pktchain.node.process import NodeProcess, NodeProcessError

LabFactory = Callable[..., Lab]

THREE_NODES: dict[str, Any] = {
    "nodes": {"n1": {}, "n2": {}, "n3": {"underlay": "10.250.0.30"}},
    "hosts": {
        "client": {
            "node": "n1",
            "interfaces": {"eth0": {"attach": "node", "addresses": ["10.0.0.1/24"]}},
        },
        "peer": {
            "node": "n1",
            "interfaces": {"eth0": {"attach": "node", "addresses": ["10.0.0.3/24"]}},
        },
        "server": {
            "node": "n3",
            "interfaces": {"eth0": {"attach": "node", "addresses": ["10.0.0.2/24"]}},
        },
    },
}
UNDERLAY = {"n1": "10.250.0.1", "n2": "10.250.0.2", "n3": "10.250.0.30"}
ETCD = "http://10.250.0.254:2379"


def pktchain(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pktchain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )


def ip_json(host: LabHost, *args: str) -> Any:
    return json.loads(host.run(["ip", "-j", *args], timeout=5).check().stdout)


def curl(host: LabHost, *args: str) -> str:
    return host.run(["curl", "-sS", "--max-time", "5", *args], timeout=10).check().stdout


def etcd_pid(lab_name: str) -> int:
    journal = read_journal(lab_name)
    assert journal is not None
    (etcd,) = [p for p in journal.processes if p.argv and p.argv[0].endswith("etcd")]
    return etcd.pid


def test_nodes_share_an_underlay_with_jumbo_frames(lab_factory: LabFactory) -> None:
    lab = lab_factory(THREE_NODES)
    assert set(lab.nodes) == {"n1", "n2", "n3"}
    for name, address in UNDERLAY.items():
        node = lab.node(name)
        assert node.netns == f"pc-{lab.name}.{name}"
        assert namespaces.netns_exists(node.netns)
        links = {link["ifname"]: link for link in ip_json(node, "addr", "show")}
        assert set(links) == {"lo", "ul0"}
        assert links["ul0"]["mtu"] == 9000 and links["ul0"]["operstate"] == "UP"
        inet = [a for a in links["ul0"]["addr_info"] if a["family"] == "inet"]
        assert [(a["local"], a["prefixlen"]) for a in inet] == [(address, 24)]
    # 8000 bytes of ICMP payload with DF set cross the underlay unfragmented...
    for source, target in (("n1", "n2"), ("n2", "n3"), ("n3", "n1")):
        big = lab.node(source).run(
            ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "8000", UNDERLAY[target]], timeout=10
        )
        assert big.ok, (source, target, big.stdout, big.stderr)
        assert "8008 bytes from" in big.stdout
    # ...and a frame over 9000 bytes is refused, so the MTU is 9000 indeed.
    too_big = lab.node("n1").run(
        ["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "9000", UNDERLAY["n2"]], timeout=10
    )
    assert not too_big.ok
    assert "mtu=9000" in (too_big.stdout + too_big.stderr).lower().replace(" ", "")
    # The hosts wait for their node: the lab made none of their ports.
    assert [link["ifname"] for link in ip_json(lab.host("client"), "link", "show")] == ["lo"]
    # The underlay bridge lives in the fabric, not in the root namespace.
    fabric = lab.topology.fabric_netns
    assert fabric is not None
    bridge = subprocess.run(
        ["ip", "-n", fabric, "-j", "addr", "show", "dev", "underlay"],
        capture_output=True,
        text=True,
        check=True,
    )
    (info,) = json.loads(bridge.stdout)
    assert info["mtu"] == 9000
    assert [a["local"] for a in info["addr_info"] if a["family"] == "inet"] == ["10.250.0.254"]


def test_etcd_answers_every_node_and_goes_with_the_lab(lab_factory: LabFactory) -> None:
    lab = lab_factory(THREE_NODES)
    process = lab.etcd_process
    assert process is not None and process.poll() is None
    fabric = lab.topology.fabric_netns
    assert fabric is not None
    assert namespaces.process_netns(process.pid) == namespaces.netns_id(fabric)
    assert etcd_pid(lab.name) == process.pid
    assert lab.etcd_data_dir.is_dir()

    n1, n3 = lab.node("n1"), lab.node("n3")
    assert json.loads(curl(n1, f"{ETCD}/health")) == {"health": "true"}
    status = json.loads(curl(n3, "-X", "POST", "-d", "{}", f"{ETCD}/v3/maintenance/status"))
    assert status["leader"] == status["header"]["member_id"]
    # What one node writes through the v3 gateway, another reads.
    key, value = base64.b64encode(b"/pktchain/test").decode(), base64.b64encode(b"n1").decode()
    curl(n1, "-X", "POST", "-d", json.dumps({"key": key, "value": value}), f"{ETCD}/v3/kv/put")
    ranged = curl(n3, "-X", "POST", "-d", json.dumps({"key": key}), f"{ETCD}/v3/kv/range")
    found = json.loads(ranged)
    assert [kv["value"] for kv in found["kvs"]] == [value]
    # etcd listens on the underlay only: a host namespace has no route to it.
    assert (
        not lab.host("client")
        .run(["curl", "-sS", "--max-time", "2", f"{ETCD}/health"], timeout=10)
        .ok
    )

    teardown = lab.down()
    assert process.pid in teardown.processes
    assert process.poll() is not None
    assert not lab.etcd_data_dir.exists()
    assert not [ns for ns in namespaces.list_netns() if ns.startswith(f"pc-{lab.name}.")]


def test_a_lab_without_etcd_runs_none(lab_factory: LabFactory) -> None:
    lab = lab_factory({**THREE_NODES, "etcd": False})
    assert lab.etcd_process is None and not lab.processes
    assert lab.node("n1").run(["ping", "-c", "1", "-W", "2", UNDERLAY["n3"]], timeout=10).ok


@pytest.fixture
def cluster_file(tmp_path: Path, unique_name: Callable[[str], str]) -> Iterator[Path]:
    """THREE_NODES under a unique lab name in a file; whatever is left is removed after."""
    name = unique_name("clu")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump({"lab": name, **THREE_NODES}, sort_keys=False))
    yield path
    pktchain("lab", "down", "--lab", name)


def test_cli_up_exec_on_a_node_and_down(cluster_file: Path) -> None:
    name = yaml.safe_load(cluster_file.read_text())["lab"]
    up = pktchain("lab", "up", str(cluster_file))
    assert up.returncode == 0, up.stderr
    assert f"pc-{name}.n3" in up.stdout and "10.250.0.30/24" in up.stdout
    assert f"etcd {ETCD}" in up.stdout
    # The process that made the lab is gone; etcd lives on.
    pid = etcd_pid(name)
    assert namespaces.process_alive(pid)
    health = pktchain("lab", "exec", "--lab", name, "n2", "--", "curl", "-sS", f"{ETCD}/health")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"health": "true"}
    unknown = pktchain("lab", "exec", "--lab", name, "n9", "--", "true")
    assert unknown.returncode == 2
    assert "has no host or node 'n9' (it has: client, n1, n2, n3, peer, server)" in unknown.stderr

    down = pktchain("lab", "down", str(cluster_file))
    assert down.returncode == 0, down.stderr
    assert f"lab {name}: removed 7 namespace(s), 1 process(es)" in down.stdout
    assert not namespaces.process_alive(pid)
    assert not log_dir(name).exists()
    assert not [ns for ns in namespaces.list_netns() if ns.startswith(f"pc-{name}.")]


# `pktchain lab up` SIGKILLed by its own hand the first time it asks etcd for its
# health: etcd runs, its data directory exists, the journal is not marked ready.
CRASHING_UP = """
import os, signal, sys
from pktchain.lab import etcd
def etcd_healthy(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
etcd.etcd_healthy = etcd_healthy
from pktchain.cli import main
sys.exit(main(["lab", "up", sys.argv[1]]))
"""


def test_down_stops_etcd_after_up_was_killed(cluster_file: Path) -> None:
    name = yaml.safe_load(cluster_file.read_text())["lab"]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_UP, str(cluster_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    journal = read_journal(name)
    assert journal is not None and not journal.ready
    pid = etcd_pid(name)
    assert namespaces.process_alive(pid)
    wait_until(
        (log_dir(name) / "etcd" / "member").is_dir,
        timeout=10,
        what="etcd's data directory",
    )
    down = pktchain("lab", "down", "--lab", name)
    assert down.returncode == 0, down.stderr
    assert f"lab {name}: removed 7 namespace(s), 1 process(es)" in down.stdout
    wait_until(lambda: not namespaces.process_alive(pid), timeout=5, what="etcd gone")
    assert not log_dir(name).exists()
    assert not journal_path(name).exists()
    assert not [ns for ns in namespaces.list_netns() if ns.startswith(f"pc-{name}.")]


def test_down_all_stops_etcd(cluster_file: Path) -> None:
    name = yaml.safe_load(cluster_file.read_text())["lab"]
    assert pktchain("lab", "up", str(cluster_file)).returncode == 0
    pid = etcd_pid(name)
    down = pktchain("lab", "down", "--all")
    assert down.returncode == 0, down.stderr
    assert f"lab {name}: removed 7 namespace(s), 1 process(es)" in down.stdout
    assert not namespaces.process_alive(pid)
    assert not log_dir(name).exists()


# -- pktchain node --node -------------------------------------------------------


@pytest.fixture
def cluster_lab(lab_factory: LabFactory, tmp_path: Path) -> tuple[Lab, Path]:
    """THREE_NODES up, and its topology in a file for `pktchain node -t`."""
    lab = lab_factory(THREE_NODES)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(THREE_NODES))
    return lab, path


def test_a_node_runs_in_its_namespace_with_only_its_hosts(
    cluster_lab: tuple[Lab, Path], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    lab, path = cluster_lab
    node = NodeProcess(
        unique_name("n1"),
        topology=path,
        lab_name=lab.name,
        node="n1",
        log_path=tmp_path / "n1.log",
    )
    node.start()
    try:
        assert namespaces.process_netns(node.pid) == namespaces.netns_id(lab.node("n1").netns)
        ports = sorted(port["name"] for port in node.status()["ports"])
        assert ports == ["client:eth0", "peer:eth0"]
        # The TAPs were made inside the hosts from the node's namespace, and
        # the node switches between them.
        client, peer = lab.host("client"), lab.host("peer")
        assert client.run(["ping", "-c", "1", "-W", "2", "10.0.0.3"], timeout=10).ok
        assert peer.run(["ping", "-c", "1", "-W", "2", "10.0.0.1"], timeout=10).ok
        # The server belongs to n3, which is not running: it has no port.
        assert [link["ifname"] for link in ip_json(lab.host("server"), "link", "show")] == ["lo"]
        # Nothing of the node appeared in the root namespace or on the underlay;
        # in the node's own, the node ends of its veth ports, if they are veths,
        # with the TAPs the kernel fast path punts their other frames to.
        veths = [port for port in node.status()["ports"] if port["kind"] == "veth"]
        node_ends = [port["node_ifname"] for port in veths]
        node_ends += [port["punt_ifname"] for port in veths if port["punt_ifname"]]
        links = [link["ifname"] for link in ip_json(lab.node("n1"), "link", "show")]
        assert sorted(links) == sorted(["lo", "ul0", *node_ends])
    finally:
        assert node.stop() == 0


def test_a_node_serves_its_api_on_the_underlay(
    cluster_lab: tuple[Lab, Path], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    lab, path = cluster_lab
    name = unique_name("n3")
    control = tmp_path / "n3.sock"
    argv = [sys.executable, "-m", "pktchain", "node", "-t", str(path), "--lab", lab.name]
    argv += ["--node", "n3", "--name", name, "--control", str(control), "--no-state"]
    token = "cluster-test-token"
    with open(tmp_path / "n3.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PKTCHAIN_API_TOKEN": token},
        )
    try:

        def serving() -> bool:
            if process.poll() is not None:
                raise NodeProcessError(f"node exited: {(tmp_path / 'n3.log').read_text()}")
            try:
                return bool(request(control, "ping", timeout=1.0).get("ok"))
            except (ControlError, OSError):
                return False

        wait_until(serving, timeout=20, what="node n3 serving")
        api = request(control, "status").get("api")
        assert api == f"http://{UNDERLAY['n3']}:9696"
        chains = curl(
            lab.node("n1"),
            "-H",
            f"X-Auth-Token: {token}",
            f"http://{UNDERLAY['n3']}:9696/v2.0/sfc/port_chains",
        )
        assert json.loads(chains) == {"port_chains": []}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_node_refuses_a_cluster_topology_without_node(cluster_lab: tuple[Lab, Path]) -> None:
    lab, path = cluster_lab
    refused = pktchain("node", "-t", str(path), "--lab", lab.name, "--no-state", "--no-api")
    assert refused.returncode == 2
    assert "cluster topology with nodes n1, n2, n3: run one of them with --node" in refused.stderr
    unknown = pktchain(
        "node", "-t", str(path), "--lab", lab.name, "--node", "n7", "--no-state", "--no-api"
    )
    assert unknown.returncode == 2
    assert "--node n7" in unknown.stderr and "(nodes: n1, n2, n3)" in unknown.stderr


def test_node_of_a_lab_that_is_not_up(tmp_path: Path, unique_name: Callable[[str], str]) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(f"lab: {unique_name('down')}\n") + yaml.safe_dump(THREE_NODES))
    result = pktchain("node", "-t", str(path), "--node", "n2", "--no-state", "--no-api")
    assert result.returncode == 2
    assert "is the lab up?" in result.stderr
