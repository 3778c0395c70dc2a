"""Fixtures for tests that run a real `pktchain node` process between lab hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.demo.hapair import PktchainPair
from pktchain.lab import Lab
from pktchain.node.process import NodeProcess, NodeProcessError
from support.nat_lab import INSIDE, OUTSIDE, ROUTER, TOPOLOGY, serve


@pytest.fixture
def node_lab(
    lab_factory: Callable[..., Lab],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[Lab, NodeProcess]]]:
    """``lab, node = node_lab(topology, args=(), state=None)``: a lab and a node serving its
    node ports (chaining state kept in `state`, or in memory).

    The node is stopped with SIGTERM after the test, before the lab goes, and
    must exit 0.
    """
    nodes: list[NodeProcess] = []

    def make(
        topology: dict[str, Any], *, args: tuple[str, ...] = (), state: Path | None = None
    ) -> tuple[Lab, NodeProcess]:
        path = tmp_path / f"topology-{len(nodes)}.yaml"
        path.write_text(yaml.safe_dump(topology, sort_keys=False))
        lab = lab_factory(path)
        node = NodeProcess(
            unique_name("node"),
            topology=path,
            lab_name=lab.name,
            state=state,
            args=args,
            log_path=tmp_path / f"node-{len(nodes)}.log",
        )
        nodes.append(node)
        node.start()
        return lab, node

    yield make

    codes = []
    for node in nodes:
        try:
            codes.append(node.stop())
        except NodeProcessError:
            codes.append(node.kill())
    assert all(code in (0, -9) for code in codes), f"node exit statuses: {codes}"


@pytest.fixture
def router_node(
    node_lab: Callable[..., tuple[Lab, NodeProcess]], tmp_path: Path
) -> Callable[..., tuple[Lab, NodeProcess]]:
    """``lab, node = router_node(topology, router)``: a node running the router that
    the `router` mapping describes (a router file, see docs/router.md) between the
    hosts of `topology`."""

    def make(topology: dict[str, Any], router: dict[str, Any]) -> tuple[Lab, NodeProcess]:
        path = tmp_path / f"router-{len(list(tmp_path.glob('router-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(router))
        return node_lab(topology, args=("--router", str(path)))

    return make


@pytest.fixture
def routed(
    router_node: Callable[..., tuple[Lab, NodeProcess]], tmp_path: Path
) -> tuple[Lab, NodeProcess]:
    """The router of `nat_lab.ROUTER` between an inside and an outside host, each
    serving a page on port 80."""
    lab, node = router_node(TOPOLOGY, ROUTER)
    for host, address in (("inside", INSIDE), ("outside", OUTSIDE)):
        serve(lab.host(host), tmp_path / host, address, 80, f"web on {host}\n")
    return lab, node


@pytest.fixture
def ha_pair(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> Iterator[Callable[..., PktchainPair]]:
    """``pair = ha_pair(**options)``: a running pktchain router pair
    (`pktchain.demo.hapair.PktchainPair` with those options), r1 master and r2
    its backup in sync; its nodes killed and its lab removed after the test."""
    pairs: list[PktchainPair] = []

    def make(**options: Any) -> PktchainPair:
        pair = PktchainPair(make_lab=lab_factory, **options)
        pairs.append(pair)
        pair.setup(tmp_path / f"pair-{len(pairs)}")
        return pair

    yield make

    for pair in pairs:
        pair.teardown()
