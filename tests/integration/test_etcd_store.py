"""The chaining model's state in a real etcd, shared by several models ("nodes").

Each test starts an etcd of its own on loopback (`support.etcd`). Two models
attached to it through their own `EtcdStore` and client stand for two nodes:
they see each other's changes, the rules hold across them, a write while
etcd is away is refused with a 503 and nothing is lost once it is back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend
from pktchain.etcd.client import EtcdClient
from pktchain.lab.wait import wait_until
from pktchain.sfc.errors import FlowClassifierInConflict, SfcError
from pktchain.sfc.etcd_store import (
    EtcdContentError,
    EtcdMismatchError,
    EtcdStore,
    EtcdTransactionTooLarge,
    EtcdUnavailableError,
)
from pktchain.sfc.model import Action, FlowClassifier, Port, PortPair, SfcModel
from pktchain.sfc.resources import ResourceKind, resource_json
from support.etcd import EtcdServer
from support.sfc_model import Sfc
from support.tcp_proxy import TcpProxy

WAIT = 10.0


class Node:
    """A model kept in step with etcd, as a node keeps its own."""

    def __init__(self, url: str, *, post: Callable[[Callable[[], None]], None] | None = None):
        self.sfc = Sfc()
        self.client = EtcdClient(url)
        self.store = EtcdStore(self.client, post=post)
        self.store.attach(self.sfc.model)

    @property
    def model(self) -> SfcModel:
        return self.sfc.model

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def nodes(etcd: EtcdServer) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(url: str | None = None, **options: object) -> Node:
        node = Node(url or etcd.url, **options)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def same(a: Node, b: Node) -> bool:
    return a.model.export() == b.model.export()


def classifier(source: Port, name: str, port: int = 80) -> dict[str, object]:
    return {
        "name": name,
        "logical_source_port": source.id,
        "protocol": "tcp",
        "destination_port_range_min": port,
        "destination_port_range_max": port,
    }


def test_two_nodes_see_each_others_changes(etcd: EtcdServer, nodes: Callable[..., Node]) -> None:
    a, b = nodes(), nodes()
    parts = a.sfc.demo()
    wait_until(lambda: same(a, b), timeout=WAIT, what="b has a's demo")
    assert [c.action for c in b.sfc.changes] == [Action.CREATE] * len(a.model.state)
    assert a.store.writes == len(a.model.state)

    # What etcd holds: each resource's JSON under its key, the version key last changed
    # by the last change.
    raw = EtcdClient(etcd.url)
    pair = parts["pp1"]
    found = raw.range(a.store.key(ResourceKind.PORT_PAIR, pair.id)).kvs
    assert [kv.value.decode() for kv in found] == [resource_json(pair)]
    version = raw.range(a.store.version_key).kvs[0]
    assert version.mod_revision == a.store.revision
    assert json.loads(version.value) == {"writer": ""}

    b.model.update(PortPair, pair.id, name="renamed")
    wait_until(lambda: a.model.get(PortPair, pair.id).name == "renamed", timeout=WAIT, what="a")
    chain = parts["pc1"]
    a.model.delete(type(chain), chain.id)
    wait_until(lambda: not b.model.state.port_chains, timeout=WAIT, what="b sees the delete")
    assert b.sfc.changes[-1].action is Action.DELETE
    assert same(a, b)
    # A node's own changes come back through its watch and change nothing.
    assert a.sfc.changes.count(a.sfc.changes[-1]) == 1


def test_a_change_on_an_outdated_state_is_refused_by_the_rule_it_breaks(
    nodes: Callable[..., Node],
) -> None:
    held: list[Callable[[], None]] = []
    a = nodes()
    b = nodes(post=held.append)  # b hears of nothing until the test lets it
    source = a.model.create(Port, name="src", mac_address="02:00:00:00:01:01")
    wait_until(lambda: bool(held), timeout=WAIT, what="b's watch")
    for callback in held:
        callback()
    held.clear()
    assert b.model.get(Port, source.id) == source

    x = a.model.create(FlowClassifier, classifier(source, "x"))
    # b still has the state before x: its write's comparison fails, it catches
    # up from what the failed transaction read, and the rule refuses y against x.
    with pytest.raises(FlowClassifierInConflict, match="'x'"):
        b.model.create(FlowClassifier, classifier(source, "y"))
    assert b.store.outdated == 1
    assert b.model.get(FlowClassifier, x.id) == x
    other = b.model.create(FlowClassifier, classifier(source, "z", 81))
    assert b.store.outdated == 1  # made at the first attempt
    for callback in held:  # the watch's late news changes nothing now
        callback()
    created = [c.id for c in b.sfc.changes if c.action is Action.CREATE]
    assert created.count(x.id) == 1
    wait_until(lambda: same(a, b), timeout=WAIT, what="a has z")
    assert a.model.get(FlowClassifier, other.id) == other


def race(source: Port, names: dict[str, SfcModel]) -> dict[str, FlowClassifier | SfcError]:
    """Each model creates, at the same moment, a classifier overlapping the others'."""
    results: dict[str, FlowClassifier | SfcError] = {}
    start = threading.Barrier(len(names))

    def create(name: str, model: SfcModel) -> None:
        start.wait(WAIT)
        try:
            results[name] = model.create(FlowClassifier, classifier(source, name))
        except SfcError as exc:
            results[name] = exc

    threads = [threading.Thread(target=create, args=item) for item in names.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return results


def test_concurrent_conflicting_writes_one_wins_the_other_gets_the_rule(
    nodes: Callable[..., Node],
) -> None:
    a, b = nodes(), nodes()
    for round in range(5):
        source = a.model.create(Port, name=f"src{round}", mac_address=f"02:00:00:00:02:{round:02x}")
        wait_until(lambda s=source: b.model.state.find(Port, s.id) is not None, timeout=WAIT)
        results = race(source, {f"a{round}": a.model, f"b{round}": b.model})
        made = [r for r in results.values() if isinstance(r, FlowClassifier)]
        refused = [r for r in results.values() if isinstance(r, SfcError)]
        assert len(made) == 1 and len(refused) == 1, results
        assert isinstance(refused[0], FlowClassifierInConflict)
        assert made[0].name in refused[0].message
        wait_until(lambda: same(a, b), timeout=WAIT, what="a and b agree")
    assert len(a.model.state.flow_classifiers) == 5


def test_etcd_down_refuses_writes_with_503_reads_go_on_and_nothing_is_lost(
    etcd: EtcdServer, nodes: Callable[..., Node]
) -> None:
    a, b = nodes(), nodes()
    sfc = a.sfc
    left, right = sfc.port("vm1-in", "vm1"), sfc.port("vm1-out", "vm1")
    more = sfc.port("vm2-in", "vm2"), sfc.port("vm2-out", "vm2")
    client = TestClient(create_app(LocalBackend(a.model)))
    body = {"port_pair": {"name": "PP1", "ingress": left.id, "egress": right.id}}
    assert client.post("/v2.0/sfc/port_pairs", json=body).status_code == 201

    etcd.kill()
    state = a.model.state
    refused = client.post(
        "/v2.0/sfc/port_pairs",
        json={"port_pair": {"name": "PP2", "ingress": more[0].id, "egress": more[1].id}},
    )
    assert refused.status_code == 503
    error = refused.json()["NeutronError"]
    assert error["type"] == "ServiceUnavailable"
    assert etcd.url in error["message"] and "not made" in error["message"]
    assert a.model.state is state
    listed = client.get("/v2.0/sfc/port_pairs")
    assert listed.status_code == 200
    assert [p["name"] for p in listed.json()["port_pairs"]] == ["PP1"]

    etcd.start()
    wait_until(lambda: b.model.state.find(Port, more[1].id) is not None, timeout=WAIT)
    by_b = b.model.create(PortPair, name="PP3", ingress=more[0].id, egress=more[1].id)
    wait_until(lambda: a.model.state.find(PortPair, by_b.id) is not None, timeout=WAIT)
    again = client.put(f"/v2.0/sfc/port_pairs/{by_b.id}", json={"port_pair": {"name": "PP3a"}})
    assert again.status_code == 200
    wait_until(lambda: same(a, b), timeout=WAIT, what="a and b agree")
    assert sorted(p.name for p in b.model.list(PortPair)) == ["PP1", "PP3a"]


def test_a_node_cut_off_catches_up_and_lists_again_after_a_compaction(
    etcd: EtcdServer, nodes: Callable[..., Node]
) -> None:
    proxy = TcpProxy(("127.0.0.1", etcd.client_port))
    try:
        a = nodes(proxy.url)
        b = nodes()
        b.sfc.port("kept")
        gone = b.sfc.port("gone")
        wait_until(lambda: same(a, b), timeout=WAIT, what="a follows b")

        proxy.cut()  # a cannot reach etcd; b can
        with pytest.raises(EtcdUnavailableError, match=proxy.url):
            a.model.create(Port, name="refused", mac_address="02:00:00:00:03:01")
        b.model.delete(Port, gone.id)
        late = b.sfc.port("late")
        raw = EtcdClient(etcd.url)
        raw.compact(raw.range(b"/").revision)
        assert a.model.state.find(Port, late.id) is None

        proxy.mend()
        wait_until(lambda: same(a, b), timeout=2 * WAIT, what="a caught up")
        assert a.store.relists >= 1
        assert a.model.state.find(Port, gone.id) is None
        actions = {(c.action, c.id) for c in a.sfc.changes}
        assert (Action.DELETE, gone.id) in actions and (Action.CREATE, late.id) in actions
        a.model.create(Port, name="after", mac_address="02:00:00:00:03:02")
        wait_until(lambda: same(a, b), timeout=WAIT, what="b has a's port")
    finally:
        proxy.close()


def test_a_change_larger_than_an_etcd_transaction_is_refused_whole(
    etcd: EtcdServer,
) -> None:
    model = SfcModel()
    store = EtcdStore(EtcdClient(etcd.url), max_txn_ops=4)
    store.attach(model)
    try:
        with (
            pytest.raises(EtcdTransactionTooLarge, match="4 resources"),
            model.transaction() as txn,
        ):
            for n in range(4):
                txn.create(Port, name=f"p{n}", mac_address=f"02:00:00:00:04:{n:02x}")
        assert len(model.state) == 0
        assert store.read().data["ports"] == []
    finally:
        store.close()


def test_attach_checks_what_etcd_and_the_model_hold(etcd: EtcdServer) -> None:
    client = EtcdClient(etcd.url)
    writer = SfcModel()
    store = EtcdStore(client)
    store.attach(writer)
    writer.create(Port, name="p", mac_address="02:00:00:00:05:01")
    store.close()

    other = SfcModel()
    other.create(Port, name="q", mac_address="02:00:00:00:05:02")
    with pytest.raises(EtcdMismatchError, match="other resources"):
        EtcdStore(client).attach(other)
    loaded = SfcModel()
    assert len(EtcdStore(client).load_into(loaded)) == 1
    detach = EtcdStore(client).attach(loaded)  # the same resources: accepted
    detach()

    client.put(b"/pktchain/pktchain/sfc/ports/not-a-port", b"{")
    with pytest.raises(EtcdContentError, match="sfc/ports/not-a-port does not hold JSON"):
        EtcdStore(client).attach(SfcModel())
    # Another cluster's keys are apart.
    assert len(EtcdStore(client, cluster="other").read()) == 0
