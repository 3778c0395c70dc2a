"""Each change of the chaining model is one log event, named by its kind and action."""

from __future__ import annotations

from pktchain.node.chaining import change_event
from pktchain.sfc.model import PortChain, PortPair, PortPairGroup
from support.sfc_model import Sfc


def test_each_change_is_named_by_its_kind_and_action_with_its_links() -> None:
    sfc = Sfc()
    pair = sfc.pair("vm1")
    group = sfc.group("PG1", pair)
    chain = sfc.chain("PC1", [group], [sfc.classifier("FC1")])
    sfc.model.update(PortChain, chain.id, {"description": "web"})
    sfc.model.delete(PortChain, chain.id)
    sfc.model.update(PortPairGroup, group.id, {"port_pairs": []})
    sfc.model.delete(PortPair, pair.id)
    events = [change_event(c) for c in sfc.changes]
    names = [e["event"] for e in events]
    assert names == [
        "neutron_port_added",
        "neutron_port_added",
        "instance_added",
        "group_added",
        "neutron_port_added",
        "classifier_added",
        "chain_applied",
        "chain_changed",
        "chain_removed",
        "group_changed",
        "instance_removed",
    ]
    added = events[2]
    assert added["port_pair"] == "vm1" and added["port_pair_id"] == pair.id
    assert added["ingress"] == pair.ingress and added["egress"] == pair.egress
    assert events[3]["port_pairs"] == [pair.id]
    applied = events[6]
    assert applied["port_chain"] == "PC1" and applied["port_chain_id"] == chain.id
    assert applied["port_pair_groups"] == [group.id]
    assert len(applied["flow_classifiers"]) == 1
    assert events[8]["port_chain"] == "PC1"  # a removed chain's event names it as it was
    assert events[9]["port_pairs"] == []
