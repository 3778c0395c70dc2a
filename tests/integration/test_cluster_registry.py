"""The node registry in a real etcd: leases, names, and the cluster view.

Times are measured against etcd's own lease clock: a node that stops
renewing leaves the view once its lease expires, not before the TTL less
one renewal interval, and not later than the TTL plus a margin for etcd's
expiry check and a loaded machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from pktchain.cluster.record import NodeNameTaken, NodeRecord
from pktchain.cluster.registry import NodeRegistration
from pktchain.cluster.view import ClusterView, NodeAction, NodeChange
from pktchain.etcd.client import EtcdClient, EtcdUnreachableError
from pktchain.lab.wait import wait_until
from support.etcd import EtcdServer

WAIT = 10.0
MARGIN = 2.0
"""Seconds past the TTL a dead node may linger: etcd checks leases every 0.5 s."""


@pytest.fixture
def registrations(etcd: EtcdServer) -> Iterator[Callable[..., NodeRegistration]]:
    made: list[NodeRegistration] = []

    def register(name: str, **options: object) -> NodeRegistration:
        record = NodeRecord(name, underlay=("127.0.0.1", 4790), started=time.time())
        registration = NodeRegistration(EtcdClient(etcd.url), record, **options)  # type: ignore[arg-type]
        registration.register()
        made.append(registration)
        return registration

    yield register
    for registration in made:
        registration.close()


@pytest.fixture
def view(etcd: EtcdServer) -> Iterator[tuple[ClusterView, list[NodeChange]]]:
    cluster = ClusterView(EtcdClient(etcd.url))
    heard: list[NodeChange] = []
    cluster.add_listener(heard.append)
    cluster.start()
    yield cluster, heard
    cluster.close()


def test_nodes_join_change_and_leave_the_view(
    registrations: Callable[..., NodeRegistration],
    view: tuple[ClusterView, list[NodeChange]],
) -> None:
    cluster, heard = view
    one = registrations("node1")
    registrations("node2")
    # The view shows a change before its listeners hear it: wait for both.
    wait_until(
        lambda: set(cluster.nodes) == {"node1", "node2"} and len(heard) >= 2,
        timeout=WAIT,
        what="view",
    )
    assert [(c.action, c.name) for c in heard] == [
        (NodeAction.JOINED, "node1"),
        (NodeAction.JOINED, "node2"),
    ]
    assert cluster.nodes["node1"].underlay == ("127.0.0.1", 4790)

    one.update(ports_down=["p1", "p2"], api="http://127.0.0.1:9696")
    assert one.flush(WAIT)
    wait_until(
        lambda: (
            cluster.nodes["node1"].ports_down == ("p1", "p2")
            and heard[-1].action is NodeAction.UPDATED
        ),
        timeout=WAIT,
    )
    update = heard[-1]
    assert update.action is NodeAction.UPDATED and update.old is not None
    assert update.old.ports_down == () and update.record.api == "http://127.0.0.1:9696"
    lease = one.lease

    # A view started now lists both, each joined.
    late = ClusterView(EtcdClient(one.client.endpoints))
    told: list[NodeChange] = []
    late.add_listener(told.append)
    late.start()
    try:
        assert {c.name for c in told} == {"node1", "node2"}
        assert late.nodes["node1"] == cluster.nodes["node1"]
    finally:
        late.close()

    stopped = time.monotonic()
    one.close()
    wait_until(
        lambda: "node1" not in cluster.nodes and heard[-1].action is NodeAction.LEFT,
        timeout=WAIT,
        what="node1 left",
    )
    assert time.monotonic() - stopped < MARGIN  # revoked: gone at once
    assert heard[-1].action is NodeAction.LEFT and heard[-1].name == "node1"
    assert one.lease == 0 and lease != 0


def test_a_second_node_of_the_same_name_is_refused(
    etcd: EtcdServer, registrations: Callable[..., NodeRegistration]
) -> None:
    registrations("node1")
    twin = NodeRegistration(EtcdClient(etcd.url), NodeRecord("node1", api="http://twin"))
    with pytest.raises(NodeNameTaken, match="node node1 is already registered") as caught:
        twin.register()
    assert caught.value.holder is not None and caught.value.holder.underlay == (
        "127.0.0.1",
        4790,
    )
    assert "underlay 127.0.0.1:4790" in str(caught.value)


def test_a_node_that_stops_renewing_leaves_when_its_lease_expires(
    registrations: Callable[..., NodeRegistration],
    view: tuple[ClusterView, list[NodeChange]],
) -> None:
    cluster, heard = view
    dying = registrations("dying")  # the default TTL, 3 s
    assert (dying.ttl, dying.granted_ttl) == (3, 3)
    wait_until(lambda: "dying" in cluster.nodes, timeout=WAIT)
    dying.close(revoke=False)  # as if the process had died
    died = time.monotonic()
    wait_until(
        lambda: "dying" not in cluster.nodes and heard[-1].action is NodeAction.LEFT,
        timeout=3 + MARGIN + 1,
        what="expiry",
    )
    gone_after = time.monotonic() - died
    # Last renewed at most a third of the TTL before it stopped.
    assert 3 - 1 - 0.5 <= gone_after <= 3 + MARGIN, gone_after
    assert heard[-1].action is NodeAction.LEFT


def test_etcd_raises_a_short_ttl_to_its_minimum(
    registrations: Callable[..., NodeRegistration],
) -> None:
    short = registrations("short", ttl=0.5)
    assert short.ttl == 1
    assert short.granted_ttl == 2  # 1.5 election timeouts of 1 s, rounded up


def test_the_registration_and_the_view_outlast_an_etcd_restart(
    etcd: EtcdServer,
    registrations: Callable[..., NodeRegistration],
    view: tuple[ClusterView, list[NodeChange]],
) -> None:
    cluster, heard = view
    node = registrations("node1")
    wait_until(lambda: "node1" in cluster.nodes, timeout=WAIT)
    etcd.kill()
    wait_until(lambda: not cluster.connected, timeout=WAIT, what="the view notices")
    with pytest.raises(EtcdUnreachableError, match=etcd.url):
        ClusterView(EtcdClient(etcd.url)).start()
    node.update(ports_down=["p9"])
    assert not node.flush(0.5)
    etcd.start()
    # etcd renews every lease on taking leadership: the key outlived the restart.
    assert node.flush(WAIT)
    wait_until(
        lambda: "node1" in cluster.nodes and cluster.nodes["node1"].ports_down == ("p9",),
        timeout=WAIT,
        what="the update after the restart",
    )
    assert cluster.connected
    assert [c.action for c in heard].count(NodeAction.LEFT) == 0
    renewed = node.renewals
    wait_until(lambda: node.renewals > renewed, timeout=WAIT, what="renewals go on")
