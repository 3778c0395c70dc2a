"""A router's virtual routers driven at run time: messenger, REST API and CLI, on a node.

One node runs a router with a virtual router on each side, alone on its
LANs, so it is master of both. The controller lowers and raises a priority
through the messenger, the CLI (over the REST API) shows and changes the
same, a tracker is reported, and a wrong argument is refused naming its
field, changing nothing. The inside host's gateway is the virtual address
throughout, and the router's answers for it come from the virtual MAC.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.lab import Lab, node_host_spec, wait_until
from pktchain.messenger.client import MessengerClient, MessengerError
from pktchain.node.process import NodeProcess

NodeLab = Callable[..., tuple[Lab, NodeProcess]]
SECRET = b"a shared secret for the vrrp controller"
VMAC_INSIDE = "00:00:5e:00:01:33"  # VRID 51

TOPOLOGY = {
    "lab": "vrrpctl",
    "hosts": {
        "a": node_host_spec("inside", "02:00:00:00:01:0a", "10.0.0.10/24", "10.0.0.1"),
        "outside": node_host_spec("outside", "02:00:00:00:02:0a", "198.51.100.10/24"),
    },
}

ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "inside": {"network": "inside", "mac": "02:00:00:00:01:01", "address": "10.0.0.2/24"},
        "outside": {
            "network": "outside",
            "mac": "02:00:00:00:02:01",
            "address": "198.51.100.2/24",
            "external": True,
            "gateway": "198.51.100.10",
        },
    },
    "nat": {},
    "vrrp": [
        {
            "vrid": 51,
            "interface": "inside",
            "virtual_addresses": ["10.0.0.1"],
            "priority": 150,
            "advert_interval": 0.1,
            "track": [{"gateway": "198.51.100.10", "weight": 20}],
        },
        {
            "vrid": 52,
            "interface": "outside",
            "virtual_addresses": ["198.51.100.1"],
            "priority": 150,
            "advert_interval": 0.1,
        },
    ],
}


@pytest.fixture
def node(node_lab: NodeLab, tmp_path: Path) -> tuple[Lab, NodeProcess, MessengerClient]:
    router = tmp_path / "router.yaml"
    router.write_text(yaml.safe_dump(ROUTER))
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    args = ("--router", str(router), "--messenger", "127.0.0.1:0")
    args += ("--messenger-secret-file", str(secret))
    lab, process = node_lab(TOPOLOGY, args=args)
    port = int(process.status()["messenger"])
    wait_until(
        lambda: all(v["state"] == "master" for v in process.router()["vrrp"]),
        timeout=10,
        what="the router master of both virtual routers",
    )
    return lab, process, MessengerClient("127.0.0.1", port, SECRET)


def vrrp(process: NodeProcess) -> dict[int, dict[str, Any]]:
    return {row["vrid"]: row for row in process.router()["vrrp"]}


def test_virtual_routers_are_shown_and_changed_through_every_door(
    node: tuple[Lab, NodeProcess, MessengerClient],
) -> None:
    lab, process, messenger = node
    # The gateway answers from the virtual MAC, and routes through the NAT.
    a = lab.host("a")
    assert a.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "198.51.100.10"]).ok
    neigh = a.run(["ip", "neigh", "show", "10.0.0.1"]).stdout
    assert VMAC_INSIDE in neigh, neigh

    # The messenger.
    listed = messenger.call("vrrp")
    assert {row["vrid"]: row["state"] for row in listed} == {51: "master", 52: "master"}
    changed = messenger.call("vrrp_set", interface="outside", vrid=52, priority=90)
    assert changed["priority"] == 90 and changed["effective_priority"] == 90
    assert vrrp(process)[52]["priority"] == 90
    with pytest.raises(MessengerError) as caught:
        messenger.call("vrrp_set", interface="outside", vrid=52, priority=0)
    assert caught.value.field == "args.priority"
    assert vrrp(process)[52]["priority"] == 90  # nothing changed

    # The CLI, over the REST API.
    cli = [sys.executable, "-m", "pktchain", "router"]

    def router(*words: str) -> subprocess.CompletedProcess[str]:
        argv = [*cli, words[0], "--url", process.api_url(), *words[1:]]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)

    done = router("do", "vrrp_set", "interface=outside", "vrid=52", "priority=150")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["priority"] == 150
    shown = json.loads(router("show", "--json").stdout)
    assert {row["vrid"]: row["priority"] for row in shown["vrrp"]} == {51: 150, 52: 150}
    wrong = router("do", "vrrp_set", "interface=outside", "vrid=9", "priority=100")
    assert wrong.returncode == 1 and "409" in wrong.stderr and "VRID 9" in wrong.stderr
    unsettable = router("do", "vrrp_set", "interface=outside", "vrid=52", "advert_interval=0.005")
    assert unsettable.returncode == 1 and "advert_interval" in unsettable.stderr

    # A tracker reported by the controller lowers the priority by its weight.
    tracked = router("do", "vrrp_track", "name=198.51.100.10", "ok=false")
    assert tracked.returncode == 0, tracked.stderr
    # The reply is the state right after the report (a status read later may
    # already have the router's own probe of the gateway in it, below).
    row = {row["vrid"]: row for row in json.loads(tracked.stdout)}[51]
    assert row["effective_priority"] == 130 and row["failed_trackers"] == ["198.51.100.10"]
    # The router's own probe of that gateway (it answers ARP) brings it back.
    wait_until(
        lambda: vrrp(process)[51]["effective_priority"] == 150,
        timeout=10,
        what="the gateway's next answer to the router's probe",
    )
    untracked = router("do", "vrrp_track", "name=10.9.9.9", "ok=false")
    assert untracked.returncode == 1 and "tracks" in untracked.stderr
