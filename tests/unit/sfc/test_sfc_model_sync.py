"""What a shared store needs of the model: `sync` to another state, `run` again on
an outdated one, and ports bound to a node (``binding:host_id``)."""

from __future__ import annotations

import pytest

from pktchain.sfc.errors import (
    FlowClassifierInConflict,
    NodePortInUse,
    PortPairPortNotFound,
    StateOutdated,
    UnknownAttribute,
)
from pktchain.sfc.model import Action, Change, FlowClassifier, Port, PortPair, SfcModel, SfcState
from pktchain.sfc.resources import ResourceKind
from support.sfc_model import Sfc


def test_sync_tells_one_change_per_resource_and_runs_no_hook() -> None:
    source = Sfc()
    parts = source.demo()
    target = Sfc()
    hooked: list[tuple[Change, ...]] = []
    target.model.add_precommit_hook(lambda changes, _state: hooked.append(changes))

    changes = target.model.sync(source.model.export())
    assert target.model.export() == source.model.export()
    assert [c.action for c in changes] == [Action.CREATE] * len(source.model.state)
    assert target.changes == list(changes)
    assert hooked == []
    kinds = [c.kind for c in changes]
    assert kinds.index(ResourceKind.PORT_CHAIN) > kinds.index(ResourceKind.PORT_PAIR)

    # Another state: one pair renamed, the chain and a group gone.
    source.model.delete(type(parts["pc1"]), parts["pc1"].id)
    source.model.delete(type(parts["pg2"]), parts["pg2"].id)
    source.model.update(PortPair, parts["pp1"].id, name="renamed")
    target.changes.clear()
    changes = target.model.sync(source.model.export())
    assert [(c.action, c.kind) for c in changes] == [
        (Action.DELETE, ResourceKind.PORT_CHAIN),
        (Action.DELETE, ResourceKind.PORT_PAIR_GROUP),
        (Action.UPDATE, ResourceKind.PORT_PAIR),
    ]
    assert changes[2].new is not None and changes[2].new.name == "renamed"
    assert target.model.export() == source.model.export()
    # The same state again is no change at all.
    before = target.model.state
    assert target.model.sync(source.model.export()) == ()
    assert target.model.state is before


def test_sync_refuses_a_state_that_breaks_a_rule_and_keeps_its_own() -> None:
    sfc = Sfc()
    pair = sfc.pair("vm1")
    data = sfc.model.export()
    data["port_pairs"] = [
        {**data["port_pairs"][0], "ingress": "6d3bd6a8-1111-4c8e-9d7b-3f0a0e6c0001"}
    ]
    before = sfc.model.state
    with pytest.raises(PortPairPortNotFound):
        sfc.model.sync(data)
    assert sfc.model.state is before
    assert sfc.model.get(PortPair, pair.id) == pair


def test_sync_inside_a_transaction_of_the_same_thread_is_refused() -> None:
    model = SfcModel()
    with model.transaction(), pytest.raises(RuntimeError, match="inside a transaction"):
        model.sync({})


class Outdating:
    """A precommit hook that refuses the first `times` commits as outdated, and
    catches the model up by adding a classifier that conflicts with `wanted`."""

    def __init__(self, model: SfcModel, times: int, conflicting: dict[str, object] | None) -> None:
        self.model = model
        self.times = times
        self.conflicting = conflicting
        self.catch_ups = 0
        model.add_precommit_hook(self)

    def __call__(self, changes: tuple[Change, ...], state: SfcState) -> None:
        if self.times:
            self.times -= 1
            raise StateOutdated("outdated", self.catch_up)

    def catch_up(self) -> None:
        self.catch_ups += 1
        if self.conflicting is not None and not self.model.list(FlowClassifier, name="other"):
            data = self.model.export()
            data["flow_classifiers"].append(self.conflicting)
            self.model.sync(data)


def classifier_body(sfc: Sfc, name: str) -> dict[str, object]:
    source = sfc.model.list(Port, name="src")[0]
    return {
        "name": name,
        "logical_source_port": source.id,
        "protocol": "tcp",
        "destination_port_range_min": 80,
        "destination_port_range_max": 80,
    }


def test_an_outdated_change_is_worked_out_again_on_the_caught_up_state() -> None:
    sfc = Sfc()
    sfc.port("src")
    template = Sfc()
    template.model.sync(sfc.model.export())
    other = template.model.create(FlowClassifier, classifier_body(template, "other"))
    hook = Outdating(sfc.model, times=1, conflicting=other.to_dict())
    # The other writer's classifier arrives on catching up; the rule then refuses ours.
    with pytest.raises(FlowClassifierInConflict, match="'other'"):
        sfc.model.create(FlowClassifier, classifier_body(sfc, "mine"))
    assert hook.catch_ups == 1
    assert [fc.name for fc in sfc.model.list(FlowClassifier)] == ["other"]


def test_run_gives_up_after_its_attempts_and_nests_without_multiplying() -> None:
    sfc = Sfc()
    sfc.port("src")
    hook = Outdating(sfc.model, times=2, conflicting=None)
    created = sfc.model.create(FlowClassifier, classifier_body(sfc, "a"))
    assert hook.catch_ups == 2 and sfc.model.get(FlowClassifier, created.id) == created

    hook.times, hook.catch_ups = 10, 0
    with pytest.raises(StateOutdated):
        sfc.model.run(lambda: sfc.model.create(Port, name="p", mac_address="02:00:00:00:09:01"))
    assert hook.catch_ups == 4  # five attempts, the default
    hook.times, hook.catch_ups = 10, 0
    with pytest.raises(StateOutdated):
        sfc.model.run(lambda: sfc.model.delete(FlowClassifier, created.id), attempts=2)
    assert hook.catch_ups == 1
    assert StateOutdated("x", lambda: None).status == 409


def test_ports_are_bound_to_a_node_and_node_ports_are_unique_per_node() -> None:
    model = SfcModel()
    first = model.create(
        Port,
        {"mac_address": "02:00:00:00:00:01", "node_port": "h1:eth0", "binding:host_id": "n1"},
    )
    assert first.binding_host_id == "n1"
    assert first.to_dict()["binding:host_id"] == "n1"
    # The same node port on another node is another port.
    second = model.create(
        Port,
        {"mac_address": "02:00:00:00:00:02", "node_port": "h1:eth0", "binding:host_id": "n2"},
    )
    with pytest.raises(NodePortInUse, match="h1:eth0 on node n2"):
        model.create(
            Port,
            {"mac_address": "02:00:00:00:00:03", "node_port": "h1:eth0", "binding:host_id": "n2"},
        )
    assert model.update(Port, second.id, {"binding:host_id": "n3"}).binding_host_id == "n3"
    assert [p.id for p in model.list(Port, {"binding:host_id": "n1"})] == [first.id]
    assert model.create(Port, mac_address="02:00:00:00:00:04").binding_host_id == ""
    with pytest.raises(UnknownAttribute, match="binding_host_id"):
        model.create(Port, {"mac_address": "02:00:00:00:00:05", "binding_host_id": "x"})
