"""A cloud controller drives the node's router through the messenger, on real hosts.

The node starts with a router on one inside network and the outside; the
controller then announces a second inside network (a new router NIC), a host
joining it and a port forward, each applied at once; a wrong secret is refused
and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pktchain.lab import Lab, node_host_spec
from pktchain.messenger.client import MessengerClient, MessengerError
from pktchain.node.process import NodeProcess

NodeLab = Callable[..., tuple[Lab, NodeProcess]]
SECRET = b"a shared secret for the test controller"


TOPOLOGY = {
    "lab": "messenger",
    "hosts": {
        "a": node_host_spec("blue", "02:00:00:00:01:0a", "10.0.0.10/24", "10.0.0.1"),
        "b": node_host_spec("green", "02:00:00:00:03:0b", "10.0.1.11/24", "10.0.1.1"),
        "outside": node_host_spec("outside", "02:00:00:00:02:0a", "198.51.100.10/24"),
    },
}

ROUTER = {
    "name": "router",
    "interfaces": {
        "blue": {"network": "blue", "mac": "02:00:00:00:01:01", "address": "10.0.0.1/24"},
        "outside": {
            "network": "outside",
            "mac": "02:00:00:00:02:01",
            "address": "198.51.100.2/24",
            "external": True,
            "gateway": "198.51.100.10",
        },
    },
    "nat": {"internal_networks": ["10.0.0.0/8"]},  # room for networks announced later
}


@pytest.fixture
def controller(node_lab: NodeLab, tmp_path: Path) -> tuple[Lab, NodeProcess, MessengerClient]:
    router = tmp_path / "router.yaml"
    router.write_text(yaml.safe_dump(ROUTER))
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    args = ("--router", str(router), "--messenger", "127.0.0.1:0")
    args += ("--messenger-secret-file", str(secret))
    lab, node = node_lab(TOPOLOGY, args=args)
    port = int(node.status()["messenger"])
    return lab, node, MessengerClient("127.0.0.1", port, SECRET)


def reaches(lab: Lab, host: str, address: str) -> bool:
    return lab.host(host).run(["ping", "-c", "2", "-i", "0.2", "-W", "1", address]).ok


def test_a_network_announced_by_the_controller_is_routed_at_once(
    controller: tuple[Lab, NodeProcess, MessengerClient],
) -> None:
    lab, node, messenger = controller
    assert reaches(lab, "a", "198.51.100.10")
    assert not reaches(lab, "b", "198.51.100.10")  # green has no router yet
    with messenger:
        messenger.call(
            "router_nic_add",
            name="green",
            mac="02:00:00:00:03:01",
            ip="10.0.1.1",
            subnet="10.0.1.0/24",
            network_id="green",
        )
        assert reaches(lab, "b", "198.51.100.10")
        assert reaches(lab, "b", "10.0.0.10")  # and between the inside networks
        hosts = messenger.call("hosts")
    assert {h["ip"] for h in hosts} >= {"10.0.0.10", "10.0.1.11"}
    names = [i["name"] for i in node.router()["interfaces"]]
    assert names == ["blue", "outside", "green"]
    assert "router:green" in {p["name"] for p in node.status()["ports"]}
    # Known to the chaining model too, like any node port: a port pair may name it.
    url = f"{node.api_url()}/v2.0/ports?name=router:green"
    with urllib.request.urlopen(url, timeout=10) as reply:
        (port,) = json.loads(reply.read())["ports"]
    assert port["mac_address"] == "02:00:00:00:03:01" and port["device_id"] == "router"


def test_a_forward_from_the_controller_opens_an_inside_service(
    controller: tuple[Lab, NodeProcess, MessengerClient],
) -> None:
    lab, _node, messenger = controller
    lab.host("a").popen(["python3", "-c", ECHO_SERVER, "10.0.0.10", "7000"])
    lab.host("a").wait_listening(7000, timeout=10)
    probe = ["python3", "-c", ECHO_CLIENT, "198.51.100.2", "7001"]
    assert not lab.host("outside").run(probe, timeout=10).ok
    with messenger:
        messenger.call(
            "port_forward_add",
            proto="tcp",
            external_port=7001,
            inside_ip="10.0.0.10",
            inside_port=7000,
        )
    result = lab.host("outside").run(probe, timeout=10)
    assert result.ok, result.stderr
    assert result.stdout == "hello\n"


def test_a_wrong_secret_is_refused_and_changes_nothing(
    controller: tuple[Lab, NodeProcess, MessengerClient],
) -> None:
    _lab, node, messenger = controller
    intruder = MessengerClient("127.0.0.1", messenger.port, b"not the secret at all, no")
    with intruder, pytest.raises(MessengerError) as refused:
        intruder.call(
            "port_forward_add",
            proto="tcp",
            external_port=2222,
            inside_ip="10.0.0.10",
            inside_port=22,
        )
    assert refused.value.type == "Unauthenticated"
    assert all(f["external_port"] != 2222 for f in node.router()["port_forwards"])


ECHO_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello\\n'); c.close()\n"
)
ECHO_CLIENT = (
    "import socket, sys\n"
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print(c.recv(100).decode(), end='')\n"
)


def test_the_same_operations_through_the_rest_api_and_cli(
    controller: tuple[Lab, NodeProcess, MessengerClient],
) -> None:
    lab, node, _messenger = controller
    lab.host("a").popen(["python3", "-c", ECHO_SERVER, "10.0.0.10", "7000"])
    lab.host("a").wait_listening(7000, timeout=10)
    cli = [sys.executable, "-m", "pktchain", "router"]

    def router(*words: str) -> subprocess.CompletedProcess[str]:
        argv = [*cli, words[0], "--url", node.api_url(), *words[1:]]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    added = router(
        "do",
        "port_forward_add",
        "proto=tcp",
        "external_port=7002",
        "inside_ip=10.0.0.10",
        "inside_port=7000",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["proto"] == "tcp"  # as the operation took it
    probe = ["python3", "-c", ECHO_CLIENT, "198.51.100.2", "7002"]
    assert lab.host("outside").run(probe, timeout=10).stdout == "hello\n"
    shown = router("show", "--json")
    forwards = json.loads(shown.stdout)["port_forwards"]
    assert {(f["external_port"], f["inside_port"]) for f in forwards} >= {(7002, 7000)}
    twice = router(
        "do",
        "port_forward_add",
        "proto=tcp",
        "external_port=7002",
        "inside_ip=10.0.0.10",
        "inside_port=7000",
    )
    assert twice.returncode == 1 and "RouterRejected" in twice.stderr and "409" in twice.stderr
    bad = router(
        "do",
        "port_forward_add",
        "proto=sctp",
        "external_port=7003",
        "inside_ip=10.0.0.10",
        "inside_port=7000",
    )
    assert bad.returncode == 1 and "proto" in bad.stderr and "400" in bad.stderr
    unknown = router("do", "reboot")
    assert unknown.returncode == 1 and "404" in unknown.stderr
