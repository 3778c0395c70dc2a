"""Nodes of a cluster lab share their state through the lab's etcd.

Two nodes of a lab topology with `nodes:` run in their own namespaces and
reach the lab's etcd over the underlay; each registers there and registers
its hosts' ports, bound to it; each sees the other, and the other's ports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab
from pktchain.lab.wait import wait_until
from pktchain.node.control import request
from pktchain.node.process import NodeProcess

LabFactory = Callable[..., Lab]

TWO_NODES: dict[str, Any] = {
    "nodes": {"n1": {}, "n2": {}},
    "hosts": {
        "client": {
            "node": "n1",
            "interfaces": {"eth0": {"attach": "node", "addresses": ["10.0.0.1/24"]}},
        },
        "server": {
            "node": "n2",
            "interfaces": {"eth0": {"attach": "node", "addresses": ["10.0.0.2/24"]}},
        },
    },
}
ETCD = "http://10.250.0.254:2379"


def ports(node: NodeProcess) -> list[dict[str, Any]]:
    reply = request(node.control, "sfc", action="list", collection="ports")
    assert reply["ok"], reply
    return list(reply["resources"])


def test_lab_nodes_share_their_state_through_the_labs_etcd(
    lab_factory: LabFactory, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    lab = lab_factory(TWO_NODES)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(TWO_NODES))
    started: list[NodeProcess] = []
    try:
        for node in ("n1", "n2"):
            process = NodeProcess(
                unique_name(node),
                topology=path,
                lab_name=lab.name,
                node=node,
                api=None,
                etcd=ETCD,
                log_path=tmp_path / f"{node}.log",
            )
            started.append(process.start(timeout=30))
        one, two = started
        wait_until(
            lambda: one.status()["cluster"]["nodes"] == sorted([one.name, two.name]),
            timeout=15,
            what="n1 sees n2 in the registry",
        )
        status = two.status()["cluster"]
        assert status["connected"] and status["underlay"] == "10.250.0.2:4790"
        wait_until(lambda: len(ports(one)) == 2, timeout=15, what="n1 has n2's port")
        bound = {port["name"]: port["binding:host_id"] for port in ports(one)}
        assert bound == {"client:eth0": one.name, "server:eth0": two.name}
        assert ports(two) == ports(one)
    finally:
        for process in started:
            assert process.stop() == 0
