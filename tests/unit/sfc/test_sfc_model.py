"""The chaining model's CRUD, update semantics, atomicity, listeners and id allocation.

The resources come from `support.sfc_model.Sfc`, which the rule and input tests
use too.
"""

from __future__ import annotations

import threading
import uuid

import pytest

from pktchain.sfc import rules
from pktchain.sfc.errors import (
    AmbiguousName,
    Conflict,
    ErrorKind,
    InvalidInput,
    PortChainNotFound,
    PortChainUnavailableChainId,
    PortPairInUse,
    PortPairNotFound,
    PortPairPortNotFound,
    SfcError,
    UnknownAttribute,
)
from pktchain.sfc.model import (
    Action,
    Change,
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    ServiceGraph,
    SfcModel,
    SfcState,
)
from pktchain.sfc.resources import Correlation, Ethertype, LbField, ResourceKind
from support.sfc_model import Sfc


@pytest.fixture
def sfc() -> Sfc:
    return Sfc()


# --- create / get / defaults -----------------------------------------------------------


def test_demo_resources_carry_networking_sfc_attributes(sfc: Sfc) -> None:
    d = sfc.demo()
    assert d["pc1"].port_pair_groups == (d["pg1"].id, d["pg2"].id)
    assert d["pc1"].flow_classifiers == (d["fc"].id,)
    assert d["pc1"].chain_id == 1
    assert (d["pg1"].group_id, d["pg2"].group_id) == (1, 2)
    shown = d["pc1"].to_dict()
    assert shown == {
        "id": d["pc1"].id,
        "name": "PC1",
        "description": "",
        "project_id": "pktchain",
        "tenant_id": "pktchain",
        "port_pair_groups": [d["pg1"].id, d["pg2"].id],
        "flow_classifiers": [d["fc"].id],
        "chain_parameters": {"correlation": "mpls", "symmetric": False},
        "chain_id": 1,
    }
    assert uuid.UUID(d["pc1"].id).version == 4


def test_defaults_follow_networking_sfc(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    assert pp.to_dict()["service_function_parameters"] == {"correlation": None, "weight": 1}
    pg = sfc.group("PG", pp)
    assert pg.to_dict()["port_pair_group_parameters"] == {
        "lb_fields": [],
        "ppg_n_tuple_mapping": {"ingress_n_tuple": {}, "egress_n_tuple": {}},
    }
    assert pg.tap_enabled is False
    fc = sfc.classifier("fc")
    assert fc.ethertype is Ethertype.IPV4
    assert fc.protocol is None
    assert fc.to_dict()["l7_parameters"] == {}
    assert fc.source_ports == (0, 65535)
    port = sfc.model.create(Port, device_id="x")
    assert port.mac_address.startswith("fa:16:3e:")


def test_parameters_are_typed(sfc: Sfc) -> None:
    pp = sfc.pair("vm1", service_function_parameters={"correlation": "nsh", "weight": "3"})
    assert pp.correlation is Correlation.NSH
    assert pp.weight == 3
    pg = sfc.group(
        "PG",
        pp,
        port_pair_group_parameters={
            "lb_fields": ["ip_src", "tcp_dst"],
            "ppg_n_tuple_mapping": {"ingress_n_tuple": {"source_ip_prefix": "10.1.0.0/16"}},
        },
    )
    params = pg.port_pair_group_parameters
    assert params.lb_fields == (LbField.IP_SRC, LbField.TCP_DST)
    assert params.ppg_n_tuple_mapping.ingress_n_tuple.source_ip_prefix == "10.1.0.0/16"
    assert params.ppg_n_tuple_mapping.to_dict()["ingress_n_tuple"] == {
        "source_ip_prefix": "10.1.0.0/16"
    }


def test_tenant_id_and_project_id_are_one_value(sfc: Sfc) -> None:
    port = sfc.model.create(Port, device_id="d", tenant_id="t1")
    assert port.project_id == port.tenant_id == "t1"
    assert port.to_dict()["tenant_id"] == "t1"


def test_get_unknown_id_is_the_kinds_not_found(sfc: Sfc) -> None:
    with pytest.raises(PortPairNotFound) as caught:
        sfc.model.get(PortPair, str(uuid.uuid4()))
    assert caught.value.kind is ErrorKind.NOT_FOUND
    assert caught.value.status == 404
    assert caught.value.to_neutron()["NeutronError"]["type"] == "PortPairNotFound"


def test_ids_are_accepted_in_any_uuid_spelling(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    assert sfc.model.get(PortPair, pp.id.upper()) == pp
    assert sfc.model.get(PortPair, pp.id.replace("-", "")) == pp
    pg = sfc.model.create(PortPairGroup, port_pairs=[pp.id.upper()])
    assert pg.port_pairs == (pp.id,)


def test_create_with_known_id_and_its_reuse(sfc: Sfc) -> None:
    wanted = str(uuid.uuid4())
    port = sfc.model.create(Port, device_id="d", id=wanted)
    assert port.id == wanted
    with pytest.raises(Conflict) as caught:
        sfc.model.create(Port, device_id="e", id=wanted)
    assert wanted in caught.value.message


# --- list / resolve --------------------------------------------------------------------


def test_list_filters_by_name_id_and_values(sfc: Sfc) -> None:
    d = sfc.demo()
    assert sfc.model.list(PortPairGroup, name="PG1") == (d["pg1"],)
    assert sfc.model.list(PortPairGroup, id=[d["pg1"].id, d["pg2"].id]) == (d["pg1"], d["pg2"])
    assert sfc.model.list(PortPairGroup, name=["nope"]) == ()
    assert sfc.model.list(PortPairGroup) == (d["pg1"], d["pg2"])
    # As the REST layer passes them: text.
    assert sfc.model.list(FlowClassifier, {"destination_port_range_min": "80"}) == (d["fc"],)
    assert sfc.model.list(PortPairGroup, tap_enabled="False") == (d["pg1"], d["pg2"])
    assert sfc.model.list(PortChain, chain_id="1") == (d["pc1"],)
    assert sfc.model.list(FlowClassifier, protocol="tcp", name="FC_demo") == (d["fc"],)
    # On a list attribute: the resources whose list holds the value.
    assert sfc.model.list(PortChain, port_pair_groups=d["pg2"].id) == (d["pc1"],)
    assert sfc.model.list(PortPairGroup, port_pairs=d["pp3"].id) == (d["pg2"],)


def test_list_refuses_unknown_and_object_filters(sfc: Sfc) -> None:
    sfc.demo()
    with pytest.raises(UnknownAttribute) as caught:
        sfc.model.list(PortChain, colour="red")
    assert caught.value.field == "colour"
    with pytest.raises(InvalidInput) as caught_object:
        sfc.model.list(PortChain, chain_parameters="x")
    assert caught_object.value.field == "chain_parameters"


def test_resolve_by_id_or_unique_name(sfc: Sfc) -> None:
    d = sfc.demo()
    assert sfc.model.resolve(PortChain, "PC1") == d["pc1"]
    assert sfc.model.resolve(PortChain, d["pc1"].id) == d["pc1"]
    sfc.pair("twin")
    sfc.model.create(PortPair, name="twin", ingress=d["pp1"].egress, egress=d["pp1"].ingress)
    with pytest.raises(AmbiguousName) as caught:
        sfc.model.resolve(PortPair, "twin")
    assert "2 port pairs are named 'twin'" in caught.value.message
    with pytest.raises(PortChainNotFound):
        sfc.model.resolve(PortChain, "PC9")


# --- update ----------------------------------------------------------------------------


def test_update_changes_allowed_fields_and_reports_old_and_new(sfc: Sfc) -> None:
    d = sfc.demo()
    sfc.changes.clear()
    pc = sfc.model.update(PortChain, d["pc1"].id, name="renamed", description="chain one")
    assert (pc.name, pc.description) == ("renamed", "chain one")
    assert pc.port_pair_groups == d["pc1"].port_pair_groups
    assert pc.chain_id == d["pc1"].chain_id
    assert sfc.model.get(PortChain, pc.id) == pc
    [change] = sfc.changes
    assert (change.action, change.kind) == (Action.UPDATE, ResourceKind.PORT_CHAIN)
    assert change.old == d["pc1"]
    assert change.new == pc


def test_demo_steps_as_updates(sfc: Sfc) -> None:
    d = sfc.demo()
    pc = d["pc1"].id
    # Step 2: classifier removed from PC1.
    assert sfc.model.update(PortChain, pc, flow_classifiers=[]).flow_classifiers == ()
    # Step 3: classifier restored, PC1 = [PG1].
    step3 = sfc.model.update(
        PortChain, pc, flow_classifiers=[d["fc"].id], port_pair_groups=[d["pg1"].id]
    )
    assert step3.port_pair_groups == (d["pg1"].id,)
    # Step 4: PG1 = {PP2}; PP1 is free again and can be deleted.
    assert sfc.model.update(PortPairGroup, d["pg1"].id, port_pairs=[d["pp2"].id]).port_pairs == (
        d["pp2"].id,
    )
    assert sfc.model.state.group_of_port_pair(d["pp1"].id) is None
    # Step 5: initial state restored.
    sfc.model.update(PortPairGroup, d["pg1"].id, port_pairs=[d["pp1"].id, d["pp2"].id])
    restored = sfc.model.update(PortChain, pc, port_pair_groups=[d["pg1"].id, d["pg2"].id])
    assert restored == d["pc1"]


def test_update_that_changes_nothing_is_not_a_change(sfc: Sfc) -> None:
    d = sfc.demo()
    before = sfc.model.state
    sfc.changes.clear()
    same = sfc.model.update(PortChain, d["pc1"].id, name="PC1", flow_classifiers=[d["fc"].id])
    assert same == d["pc1"]
    assert sfc.changes == []
    assert sfc.model.state is before


def test_delete_returns_the_resource_and_forgets_it(sfc: Sfc) -> None:
    d = sfc.demo()
    sfc.changes.clear()
    gone = sfc.model.delete(PortChain, d["pc1"].id)
    assert gone == d["pc1"]
    with pytest.raises(PortChainNotFound):
        sfc.model.get(PortChain, d["pc1"].id)
    assert sfc.changes == [Change(Action.DELETE, ResourceKind.PORT_CHAIN, d["pc1"], None)]
    # Now nothing uses the groups and classifier: they go too.
    sfc.model.delete(PortPairGroup, d["pg1"].id)
    sfc.model.delete(FlowClassifier, d["fc"].id)
    sfc.model.delete(PortPair, d["pp1"].id)
    with pytest.raises(PortChainNotFound):
        sfc.model.delete(PortChain, d["pc1"].id)


# --- listeners and atomicity -----------------------------------------------------------


def test_listener_hears_every_change_in_order(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    pg = sfc.group("PG", pp)
    sfc.model.delete(PortPairGroup, pg.id)
    kinds = [(c.action, c.kind) for c in sfc.changes]
    assert kinds == [
        (Action.CREATE, ResourceKind.PORT),
        (Action.CREATE, ResourceKind.PORT),
        (Action.CREATE, ResourceKind.PORT_PAIR),
        (Action.CREATE, ResourceKind.PORT_PAIR_GROUP),
        (Action.DELETE, ResourceKind.PORT_PAIR_GROUP),
    ]
    assert sfc.changes[3].old is None and sfc.changes[3].new == pg
    assert sfc.changes[4].id == pg.id


def test_listener_sees_the_new_state_and_can_unsubscribe(sfc: Sfc) -> None:
    seen: list[bool] = []
    stop = sfc.model.add_listener(lambda c: seen.append(c.id in sfc.model.state.ports))
    sfc.port("a")
    stop()
    sfc.port("b")
    assert seen == [True]


def test_failed_create_leaves_no_trace(sfc: Sfc) -> None:
    d = sfc.demo()
    before = sfc.model.state
    sfc.changes.clear()
    with pytest.raises(PortPairInUse):
        sfc.model.create(PortPairGroup, name="PG3", port_pairs=[d["pp3"].id])
    assert sfc.model.state is before
    assert sfc.changes == []
    assert sfc.model.list(PortPairGroup, name="PG3") == ()


def test_failed_update_leaves_the_resource_as_it_was(sfc: Sfc) -> None:
    d = sfc.demo()
    other = sfc.group("PG3", sfc.pair("vm4"))
    before = sfc.model.state
    with pytest.raises(PortPairInUse):
        # Renaming is fine, taking PP3 from PG2 is not: neither happens.
        sfc.model.update(PortPairGroup, other.id, name="x", port_pairs=[d["pp3"].id])
    assert sfc.model.state is before
    assert sfc.model.get(PortPairGroup, other.id) == other


def test_transaction_commits_all_changes_together(sfc: Sfc) -> None:
    d = sfc.demo()
    sfc.changes.clear()
    with sfc.model.transaction() as txn:
        txn.update(PortChain, d["pc1"].id, port_pair_groups=[d["pg1"].id])
        txn.delete(PortPairGroup, d["pg2"].id)
        txn.delete(PortPair, d["pp3"].id)
        assert sfc.changes == []  # nothing is told before the commit
        assert d["pg2"].id in sfc.model.state.port_pair_groups
    assert [c.action for c in sfc.changes] == [Action.UPDATE, Action.DELETE, Action.DELETE]
    assert d["pg2"].id not in sfc.model.state.port_pair_groups


def test_transaction_that_raises_commits_nothing(sfc: Sfc) -> None:
    d = sfc.demo()
    before = sfc.model.state
    sfc.changes.clear()
    with pytest.raises(PortPairInUse), sfc.model.transaction() as txn:
        txn.update(PortChain, d["pc1"].id, port_pair_groups=[d["pg1"].id])
        txn.delete(PortPairGroup, d["pg2"].id)
        txn.delete(PortPair, d["pp1"].id)  # still in PG1
    assert sfc.model.state is before
    assert sfc.changes == []


def test_failed_operation_inside_a_transaction_leaves_its_state(sfc: Sfc) -> None:
    d = sfc.demo()
    with sfc.model.transaction() as txn:
        txn.delete(PortChain, d["pc1"].id)
        state = txn.state
        with pytest.raises(PortPairInUse):
            txn.delete(PortPair, d["pp1"].id)
        assert txn.state is state
        txn.delete(PortPairGroup, d["pg1"].id)
    assert sfc.model.state.port_chains == {}
    assert list(sfc.model.state.port_pair_groups) == [d["pg2"].id]


def test_dry_run_reports_changes_without_making_them(sfc: Sfc) -> None:
    d = sfc.demo()
    before = sfc.model.state
    with sfc.model.transaction(dry_run=True) as txn:
        txn.delete(PortChain, d["pc1"].id)
        txn.create(PortPairGroup, name="PG9")
    assert [(c.action, c.kind) for c in txn.changes] == [
        (Action.DELETE, ResourceKind.PORT_CHAIN),
        (Action.CREATE, ResourceKind.PORT_PAIR_GROUP),
    ]
    assert sfc.model.state is before


def test_model_calls_inside_a_transaction_join_it(sfc: Sfc) -> None:
    with sfc.model.transaction() as txn:
        port = sfc.model.create(Port, device_id="d")
        assert sfc.model.get(Port, port.id) == port
        assert port.id not in sfc.model.state.ports  # not committed yet
        with pytest.raises(RuntimeError), sfc.model.transaction():
            pass
    assert txn.changes[0].new == port
    assert port.id in sfc.model.state.ports


def test_precommit_hook_sees_the_changes_and_can_veto(sfc: Sfc) -> None:
    seen: list[tuple[tuple[Change, ...], SfcState]] = []

    def hook(changes: tuple[Change, ...], state: SfcState) -> None:
        seen.append((changes, state))
        if any(c.kind is ResourceKind.PORT_PAIR for c in changes):
            raise OSError(28, "No space left on device")

    sfc.model.add_precommit_hook(hook)
    port = sfc.port("a")
    assert seen[0][0][0].new == port
    assert port.id in seen[0][1].ports
    egress = sfc.port("b", device="a")
    before = sfc.model.state
    sfc.changes.clear()
    with pytest.raises(OSError, match="No space"):
        sfc.model.create(PortPair, ingress=port.id, egress=egress.id)
    assert sfc.model.state is before
    assert sfc.changes == []


def test_concurrent_creates_are_serialized() -> None:
    model = SfcModel()
    errors: list[SfcError] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                model.create(Port, device_id=f"d{n}", mac_address=f"02:00:00:00:{n:02x}:{i:02x}")
        except SfcError as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert len(model.state.ports) == 200


# --- id allocation ---------------------------------------------------------------------


def _chains(sfc: Sfc, count: int) -> list[PortChain]:
    groups = [sfc.group(f"PG{i}", sfc.pair(f"vm{i}")) for i in range(count)]
    return [sfc.chain(f"PC{i}", [groups[i]]) for i in range(count)]


def test_chain_id_is_the_lowest_free(sfc: Sfc) -> None:
    chains = _chains(sfc, 3)
    assert [c.chain_id for c in chains] == [1, 2, 3]
    sfc.model.delete(PortChain, chains[1].id)
    group = sfc.group("PGx", sfc.pair("vmx"))
    assert sfc.chain("again", [group]).chain_id == 2
    other = sfc.group("PGy", sfc.pair("vmy"))
    assert sfc.chain("explicit", [other], chain_id=7).chain_id == 7
    last = sfc.group("PGz", sfc.pair("vmz"))
    assert sfc.chain("next", [last]).chain_id == 4


def test_chain_id_runs_out(sfc: Sfc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "MAX_CHAIN_ID", 2)
    _chains(sfc, 2)
    group = sfc.group("PGx", sfc.pair("vmx"))
    with pytest.raises(PortChainUnavailableChainId) as caught:
        sfc.chain("third", [group])
    assert caught.value.status == 400


def test_group_id_is_the_lowest_free(sfc: Sfc) -> None:
    groups = [sfc.group(f"PG{i}", sfc.pair(f"vm{i}")) for i in range(3)]
    assert [g.group_id for g in groups] == [1, 2, 3]
    sfc.model.delete(PortPairGroup, groups[0].id)
    assert sfc.group("PGx").group_id == 1


# --- saved state -----------------------------------------------------------------------


def test_export_and_load_round_trip(sfc: Sfc) -> None:
    d = sfc.demo()
    sfc.model.delete(PortPairGroup, sfc.group("gap").id)  # group ids 1, 2 and a hole
    sfc.group("PG3", sfc.pair("vm9"))
    graph_chain = sfc.chain("PC2", [d["pg2"]])
    sfc.model.create(ServiceGraph, name="SG", port_chains={d["pc1"].id: [graph_chain.id]})
    saved = sfc.model.export()
    restored = SfcModel()
    heard: list[Change] = []
    restored.add_listener(heard.append)
    restored.load(saved)
    assert restored.export() == saved
    assert restored.state.port_pair_groups == sfc.model.state.port_pair_groups
    assert len(heard) == len(sfc.model.state)
    assert all(c.action is Action.CREATE for c in heard)


def test_load_is_all_or_nothing(sfc: Sfc) -> None:
    sfc.demo()
    saved = sfc.model.export()
    saved["port_pairs"][0]["egress"] = str(uuid.uuid4())  # a port that is not saved
    restored = SfcModel()
    with pytest.raises(PortPairPortNotFound) as caught:
        restored.load(saved)
    assert caught.value.status == 404
    assert len(restored.state) == 0
