"""Each of networking-sfc's rules (and pktchain's own) refused with its own error.

Every test triggers one rule, checks the error's class, its HTTP kind and its
NeutronError type, and that the message names the resources involved (by name
and id) so that a user can tell what to fix.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import pytest

from pktchain.sfc import errors as e
from pktchain.sfc.model import (
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    Resource,
    ServiceGraph,
)
from support.sfc_model import Sfc

E = TypeVar("E", bound=e.SfcError)


def refused(
    sfc: Sfc, error: type[E], call: Callable[[], object], *named: Resource | str, status: int
) -> E:
    """Run `call`, expect exactly `error`, check what it says and that the
    model is as it was."""
    before = sfc.model.state
    with pytest.raises(error) as caught:
        call()
    raised = caught.value
    assert type(raised) is error
    assert raised.status == status
    body = raised.to_neutron()["NeutronError"]
    assert body["message"] == raised.message
    for ref in named:
        if isinstance(ref, str):
            assert ref in raised.message
        else:
            assert ref.id in raised.message
            assert ref.name in raised.message
            assert ref.id in raised.resources
    assert sfc.model.state is before
    return raised


@pytest.fixture
def sfc() -> Sfc:
    return Sfc()


# --- ports -----------------------------------------------------------------------------


def test_mac_address_in_use_on_one_network(sfc: Sfc) -> None:
    first = sfc.port("a", mac_address="02:00:00:00:aa:01", network_id="net1")
    err = refused(
        sfc,
        e.MacAddressInUse,
        lambda: sfc.model.create(
            Port, device_id="b", mac_address="02:00:00:00:AA:01", network_id="net1"
        ),
        first,
        "02:00:00:00:aa:01",
        status=409,
    )
    assert err.type == "MacAddressInUse"
    # The same MAC on another network is another port.
    sfc.model.create(Port, device_id="b", mac_address="02:00:00:00:aa:01", network_id="net2")


def test_node_port_in_use(sfc: Sfc) -> None:
    first = sfc.port("a")
    refused(
        sfc,
        e.NodePortInUse,
        lambda: sfc.model.create(Port, device_id="z", node_port=first.node_port),
        first,
        first.node_port,
        status=409,
    )


def test_allowed_address_pairs_need_port_security(sfc: Sfc) -> None:
    port = sfc.port("a", allowed_address_pairs=[{"ip_address": "10.0.9.9"}])
    assert port.allowed_address_pairs[0].mac_address == port.mac_address
    err = refused(
        sfc,
        e.AddressPairAndPortSecurityRequired,
        lambda: sfc.model.update(Port, port.id, port_security_enabled=False),
        port,
        status=409,
    )
    assert err.type == "AddressPairAndPortSecurityRequired"
    refused(
        sfc,
        e.AddressPairAndPortSecurityRequired,
        lambda: sfc.port(
            "b", port_security_enabled=False, allowed_address_pairs=[{"ip_address": "10.0.9.8"}]
        ),
        status=409,
    )
    sfc.model.update(Port, port.id, port_security_enabled=False, allowed_address_pairs=[])


def test_a_pair_given_twice_is_refused(sfc: Sfc) -> None:
    port = sfc.port("a")
    again = [
        {"ip_address": "10.0.9.9"},
        {"ip_address": "10.0.9.9", "mac_address": port.mac_address},
    ]
    refused(
        sfc,
        e.DuplicateAddressPairInRequest,
        lambda: sfc.model.update(Port, port.id, allowed_address_pairs=again),
        "10.0.9.9",
        port.mac_address,
        status=400,
    )


def test_a_saved_port_from_before_port_security_is_secured(sfc: Sfc) -> None:
    port = sfc.port("a")
    saved = {
        k: v
        for k, v in port.to_dict().items()
        if k not in ("port_security_enabled", "allowed_address_pairs")
    }
    sfc.model.delete(Port, port.id)
    sfc.model.load({"ports": [saved]})
    again = sfc.model.get(Port, port.id)
    assert again.port_security_enabled is True and again.allowed_address_pairs == ()


def test_port_in_use_cannot_be_deleted(sfc: Sfc) -> None:
    d = sfc.demo()
    ingress = sfc.model.get(Port, d["pp1"].ingress)
    refused(
        sfc,
        e.PortInUse,
        lambda: sfc.model.delete(Port, ingress.id),
        ingress,
        d["pp1"],
        status=409,
    )
    refused(
        sfc,
        e.PortInUse,
        lambda: sfc.model.delete(Port, d["source"].id),
        d["source"],
        d["fc"],
        status=409,
    )


def test_port_moved_to_another_device_breaks_its_pair(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    egress = sfc.model.get(Port, pp.egress)
    refused(
        sfc,
        e.PortPairIngressEgressDifferentHost,
        lambda: sfc.model.update(Port, egress.id, device_id="elsewhere"),
        pp,
        egress,
        status=400,
    )
    sfc.model.update(Port, egress.id, name="renamed")


# --- port pairs ------------------------------------------------------------------------


def test_port_pair_port_not_found(sfc: Sfc) -> None:
    port = sfc.port("a")
    missing = str(uuid.uuid4())
    err = refused(
        sfc,
        e.PortPairPortNotFound,
        lambda: sfc.model.create(PortPair, ingress=missing, egress=port.id),
        missing,
        "ingress",
        status=404,
    )
    assert err.resources == (missing,)
    refused(
        sfc,
        e.PortPairPortNotFound,
        lambda: sfc.model.create(PortPair, ingress=port.id, egress=missing),
        missing,
        "egress",
        status=404,
    )


def test_port_pair_ports_need_a_device(sfc: Sfc) -> None:
    bare = sfc.model.create(Port, name="bare")
    vm = sfc.port("vm")
    refused(
        sfc,
        e.PortPairIngressNoHost,
        lambda: sfc.model.create(PortPair, ingress=bare.id, egress=vm.id),
        bare,
        status=400,
    )
    refused(
        sfc,
        e.PortPairEgressNoHost,
        lambda: sfc.model.create(PortPair, ingress=vm.id, egress=bare.id),
        bare,
        status=400,
    )


def test_port_pair_ports_on_different_devices(sfc: Sfc) -> None:
    a = sfc.port("a", "vm1")
    b = sfc.port("b", "vm2")
    refused(
        sfc,
        e.PortPairIngressEgressDifferentHost,
        lambda: sfc.model.create(PortPair, ingress=a.id, egress=b.id),
        a,
        b,
        status=400,
    )


def test_port_pair_with_one_port_for_both_directions(sfc: Sfc) -> None:
    a = sfc.port("a", "vm1")
    pp = sfc.model.create(PortPair, ingress=a.id, egress=a.id)
    assert pp.ingress == pp.egress == a.id


def test_port_pair_ingress_egress_in_use(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    ingress = sfc.model.get(Port, pp.ingress)
    egress = sfc.model.get(Port, pp.egress)
    refused(
        sfc,
        e.PortPairIngressEgressInUse,
        lambda: sfc.model.create(PortPair, ingress=pp.ingress, egress=pp.egress),
        pp,
        ingress,
        egress,
        status=400,
    )


def test_port_pair_in_a_group_cannot_be_deleted(sfc: Sfc) -> None:
    d = sfc.demo()
    err = refused(
        sfc,
        e.PortPairInUse,
        lambda: sfc.model.delete(PortPair, d["pp2"].id),
        d["pp2"],
        d["pg1"],
        status=409,
    )
    assert err.type == "PortPairInUse"


# --- port pair groups ------------------------------------------------------------------


def test_group_with_unknown_port_pair(sfc: Sfc) -> None:
    missing = str(uuid.uuid4())
    refused(
        sfc,
        e.PortPairNotFound,
        lambda: sfc.model.create(PortPairGroup, port_pairs=[missing]),
        missing,
        status=404,
    )


def test_port_pair_already_in_another_group(sfc: Sfc) -> None:
    d = sfc.demo()
    refused(
        sfc,
        e.PortPairInUse,
        lambda: sfc.model.create(PortPairGroup, name="PG3", port_pairs=[d["pp3"].id]),
        d["pp3"],
        d["pg2"],
        status=409,
    )
    refused(
        sfc,
        e.PortPairInUse,
        lambda: sfc.model.update(PortPairGroup, d["pg1"].id, port_pairs=[d["pp3"].id]),
        d["pp3"],
        d["pg2"],
        status=409,
    )


def test_port_pairs_of_a_group_share_a_correlation(sfc: Sfc) -> None:
    plain = sfc.pair("vm1")
    aware = sfc.pair("vm2", service_function_parameters={"correlation": "nsh"})
    refused(
        sfc,
        e.InconsistentCorrelations,
        lambda: sfc.group("PG", plain, aware),
        plain,
        aware,
        "nsh",
        status=400,
    )


def test_tap_group_holds_one_port_pair(sfc: Sfc) -> None:
    one, two = sfc.pair("ids1"), sfc.pair("ids2")
    refused(
        sfc,
        e.MultiplePortPairsInTapPPGNotSupported,
        lambda: sfc.group("TAP", one, two, tap_enabled=True),
        one,
        two,
        status=400,
    )
    tap = sfc.group("TAP", one, tap_enabled=True)
    refused(
        sfc,
        e.MultiplePortPairsInTapPPGNotSupported,
        lambda: sfc.model.update(PortPairGroup, tap.id, port_pairs=[one.id, two.id]),
        tap,
        two,
        status=400,
    )


def test_group_in_a_chain_cannot_be_deleted(sfc: Sfc) -> None:
    d = sfc.demo()
    refused(
        sfc,
        e.PortPairGroupInUse,
        lambda: sfc.model.delete(PortPairGroup, d["pg2"].id),
        d["pg2"],
        d["pc1"],
        status=409,
    )


def test_group_change_keeps_its_chains_correlation(sfc: Sfc) -> None:
    d = sfc.demo()
    aware = sfc.pair("vm9", service_function_parameters={"correlation": "nsh"})
    refused(
        sfc,
        e.PortChainInconsistentCorrelations,
        lambda: sfc.model.update(PortPairGroup, d["pg2"].id, port_pairs=[aware.id]),
        d["pc1"],
        d["pg2"],
        aware,
        "mpls",
        status=400,
    )


def test_n_tuple_mapping_keys(sfc: Sfc) -> None:
    err = refused(
        sfc,
        e.PPGParametersInvalidNTupleMappingParameter,
        lambda: sfc.group(
            "PG",
            port_pair_group_parameters={"ppg_n_tuple_mapping": {"ingress_n_tuple": {"vlan": 5}}},
        ),
        "vlan",
        status=400,
    )
    assert err.field == "port_pair_group_parameters.ppg_n_tuple_mapping.ingress_n_tuple.vlan"
    refused(
        sfc,
        e.PPGParametersInvalidNTupleMappingParameter,
        lambda: sfc.group(
            "PG", port_pair_group_parameters={"ppg_n_tuple_mapping": {"sideways_n_tuple": {}}}
        ),
        "sideways_n_tuple",
        status=400,
    )


# --- flow classifiers ------------------------------------------------------------------


def test_port_range_min_above_max(sfc: Sfc) -> None:
    src = sfc.port("src")
    for side in ("source", "destination"):
        err = refused(
            sfc,
            e.FlowClassifierInvalidPortRange,
            lambda side=side: sfc.classifier(  # type: ignore[misc]
                "fc",
                src,
                protocol="tcp",
                **{f"{side}_port_range_min": 90, f"{side}_port_range_max": 80},
            ),
            "90",
            "80",
            status=400,
        )
        assert err.field == f"{side}_port_range"


def test_ports_need_tcp_or_udp(sfc: Sfc) -> None:
    src = sfc.port("src")
    for protocol in (None, "icmp"):
        refused(
            sfc,
            e.FlowClassifierProtocolRequiredWithPorts,
            lambda protocol=protocol: sfc.classifier(  # type: ignore[misc]
                "fc", src, protocol=protocol, destination_port_range_min=80
            ),
            str(protocol),
            status=400,
        )
    assert sfc.classifier("udp", protocol="udp", source_port_range_max=1024).source_ports == (
        0,
        1024,
    )


def test_prefix_must_match_ethertype(sfc: Sfc) -> None:
    src = sfc.port("src")
    err = refused(
        sfc,
        e.FlowClassifierIpPrefixFormatConflictWithEthertype,
        lambda: sfc.classifier("fc", src, source_ip_prefix="2001:db8::/32"),
        "2001:db8::/32",
        "IPv4",
        status=400,
    )
    assert err.field == "source_ip_prefix"
    err = refused(
        sfc,
        e.FlowClassifierIpPrefixFormatConflictWithEthertype,
        lambda: sfc.classifier("fc", src, ethertype="IPv6", destination_ip_prefix="10.0.0.0/8"),
        "10.0.0.0/8",
        "IPv6",
        status=400,
    )
    assert err.field == "destination_ip_prefix"


def test_classifier_port_not_found(sfc: Sfc) -> None:
    missing = str(uuid.uuid4())
    refused(
        sfc,
        e.FlowClassifierPortNotFound,
        lambda: sfc.model.create(FlowClassifier, logical_source_port=missing),
        missing,
        "logical_source_port",
        status=404,
    )
    src = sfc.port("src")
    refused(
        sfc,
        e.FlowClassifierPortNotFound,
        lambda: sfc.model.create(
            FlowClassifier, logical_source_port=src.id, logical_destination_port=missing
        ),
        missing,
        "logical_destination_port",
        status=404,
    )


def test_classifier_needs_a_logical_source_port(sfc: Sfc) -> None:
    err = refused(
        sfc,
        e.FlowClassifierLogicalSourcePortRequired,
        lambda: sfc.model.create(FlowClassifier, name="anywhere", protocol="tcp"),
        "anywhere",
        status=400,
    )
    assert err.type == "FlowClassifierBadRequest"
    assert err.field == "logical_source_port"


def test_classifier_in_conflict_with_an_existing_one(sfc: Sfc) -> None:
    src = sfc.port("src")
    web = sfc.classifier(
        "web", src, protocol="tcp", destination_port_range_min=80, destination_port_range_max=80
    )
    refused(
        sfc,
        e.FlowClassifierInConflict,
        lambda: sfc.classifier(
            "any-tcp-to-10", src, protocol="tcp", destination_ip_prefix="10.0.0.0/8"
        ),
        web,
        "any-tcp-to-10",
        status=400,
    )
    # Disjoint in one field is no conflict.
    sfc.classifier(
        "ssh", src, protocol="tcp", destination_port_range_min=22, destination_port_range_max=22
    )
    sfc.classifier("udp", src, protocol="udp")
    sfc.classifier("v6", src, ethertype="IPv6")
    sfc.classifier("other-port", sfc.port("src2"), protocol="tcp")


def test_classifier_in_a_chain_cannot_be_deleted(sfc: Sfc) -> None:
    d = sfc.demo()
    err = refused(
        sfc,
        e.FlowClassifierInUse,
        lambda: sfc.model.delete(FlowClassifier, d["fc"].id),
        d["fc"],
        d["pc1"],
        status=409,
    )
    assert err.type == "FlowClassifierInUse"


# --- port chains -----------------------------------------------------------------------


def test_chain_needs_a_group(sfc: Sfc) -> None:
    err = refused(
        sfc,
        e.PortPairGroupNotSpecified,
        lambda: sfc.model.create(PortChain, name="PC", port_pair_groups=[]),
        status=400,
    )
    assert err.type == "PortPairGroupNotSpecified"
    d = sfc.demo()
    refused(
        sfc,
        e.PortPairGroupNotSpecified,
        lambda: sfc.model.update(PortChain, d["pc1"].id, port_pair_groups=None),
        status=400,
    )


def test_chain_with_unknown_group_or_classifier(sfc: Sfc) -> None:
    missing = str(uuid.uuid4())
    refused(
        sfc,
        e.PortPairGroupNotFound,
        lambda: sfc.model.create(PortChain, port_pair_groups=[missing]),
        missing,
        status=404,
    )
    group = sfc.group("PG", sfc.pair("vm1"))
    refused(
        sfc,
        e.FlowClassifierNotFound,
        lambda: sfc.model.create(
            PortChain, port_pair_groups=[group.id], flow_classifiers=[missing]
        ),
        missing,
        status=404,
    )


def test_consecutive_tap_groups(sfc: Sfc) -> None:
    tap1 = sfc.group("TAP1", sfc.pair("ids1"), tap_enabled=True)
    tap2 = sfc.group("TAP2", sfc.pair("ids2"), tap_enabled=True)
    fw = sfc.group("FW", sfc.pair("fw"))
    refused(
        sfc,
        e.ConsecutiveTapPPGNotSupported,
        lambda: sfc.chain("PC", [fw, tap1, tap2]),
        tap1,
        tap2,
        "PC",
        status=400,
    )
    # A tap first, last or alone is fine: networking-sfc has no such rule.
    assert sfc.chain("first", [tap1, fw]).port_pair_groups == (tap1.id, fw.id)
    assert sfc.chain("last", [fw, tap2]).port_pair_groups == (fw.id, tap2.id)
    assert sfc.chain("alone", [tap2]).port_pair_groups == (tap2.id,)


def test_identical_group_sequence_in_two_chains(sfc: Sfc) -> None:
    d = sfc.demo()
    refused(
        sfc,
        e.InvalidPortPairGroups,
        lambda: sfc.chain("PC2", [d["pg1"], d["pg2"]]),
        d["pc1"],
        d["pg1"],
        d["pg2"],
        status=409,
    )
    reversed_chain = sfc.chain("PC2", [d["pg2"], d["pg1"]])
    refused(
        sfc,
        e.InvalidPortPairGroups,
        lambda: sfc.model.update(
            PortChain, reversed_chain.id, port_pair_groups=[d["pg1"].id, d["pg2"].id]
        ),
        d["pc1"],
        status=409,
    )


def test_chain_correlation_must_fit_its_port_pairs(sfc: Sfc) -> None:
    aware = sfc.pair("vm1", service_function_parameters={"correlation": "nsh"})
    group = sfc.group("PG", aware)
    refused(
        sfc,
        e.PortChainInconsistentCorrelations,
        lambda: sfc.chain("PC", [group]),  # correlation defaults to mpls
        group,
        aware,
        "nsh",
        "mpls",
        status=400,
    )
    chain = sfc.chain("PC", [group], chain_parameters={"correlation": "nsh"})
    assert chain.chain_parameters.correlation.value == "nsh"


def test_classifier_already_used_by_another_chain(sfc: Sfc) -> None:
    d = sfc.demo()
    refused(
        sfc,
        e.FlowClassifierInUse,
        lambda: sfc.chain("PC2", [d["pg2"]], [d["fc"]]),
        d["fc"],
        d["pc1"],
        status=409,
    )


def test_classifiers_of_two_chains_overlap(sfc: Sfc) -> None:
    d = sfc.demo()
    # Same source port, overlapping traffic; a different logical destination
    # port keeps the classifiers apart at creation but not in the node.
    other_dest = sfc.port("dest2")
    wide = sfc.classifier(
        "wide", d["source"], protocol="tcp", logical_destination_port=other_dest.id
    )
    err = refused(
        sfc,
        e.PortChainFlowClassifierInConflict,
        lambda: sfc.chain("PC2", [d["pg2"]], [wide]),
        wide,
        d["fc"],
        d["pc1"],
        "PC2",
        status=400,
    )
    assert d["source"].id in err.message
    # The same traffic from another source port enters by another port: no conflict.
    elsewhere = sfc.classifier("elsewhere", sfc.port("src2"), protocol="tcp")
    sfc.chain("PC3", [d["pg2"]], [elsewhere])


def test_symmetric_chain_replies_overlap_another_chain(sfc: Sfc) -> None:
    d = sfc.demo()
    sfc.model.update(PortChain, d["pc1"].id, flow_classifiers=[])
    sfc.model.delete(PortChain, d["pc1"].id)
    sym = sfc.chain("SYM", [d["pg1"]], [d["fc"]], chain_parameters={"symmetric": True})
    # Traffic from dest_vm with source port 80 is SYM's reply traffic.
    from_dest = sfc.classifier(
        "from-dest", d["dest"], protocol="tcp", source_port_range_min=80, source_port_range_max=80
    )
    err = refused(
        sfc,
        e.PortChainFlowClassifierInConflict,
        lambda: sfc.chain("PC2", [d["pg2"]], [from_dest]),
        from_dest,
        d["fc"],
        sym,
        status=400,
    )
    assert "reverse" in err.message


def test_symmetric_chain_needs_destination_ports(sfc: Sfc) -> None:
    group = sfc.group("PG", sfc.pair("vm1"))
    one_way = sfc.classifier("one-way", protocol="udp")
    err = refused(
        sfc,
        e.PortChainSymmetricNeedsDestinationPort,
        lambda: sfc.chain("SYM", [group], [one_way], chain_parameters={"symmetric": True}),
        one_way,
        "SYM",
        status=400,
    )
    assert err.type == "SfcBadRequest"
    sym = sfc.chain("SYM", [group], chain_parameters={"symmetric": "true"})
    refused(
        sfc,
        e.PortChainSymmetricNeedsDestinationPort,
        lambda: sfc.model.update(PortChain, sym.id, flow_classifiers=[one_way.id]),
        one_way,
        status=400,
    )


def test_chain_id_in_use(sfc: Sfc) -> None:
    d = sfc.demo()
    err = refused(
        sfc,
        e.PortChainChainIdInConflict,
        lambda: sfc.chain("PC2", [d["pg2"]], chain_id=1),
        d["pc1"],
        "1",
        status=400,
    )
    assert err.field == "chain_id"


def test_chain_in_a_graph_keeps_its_groups_and_classifiers(sfc: Sfc) -> None:
    d = sfc.demo()
    tail = sfc.chain("PC2", [d["pg2"]])
    graph = sfc.model.create(ServiceGraph, name="SG", port_chains={d["pc1"].id: [tail.id]})
    refused(
        sfc,
        e.ServiceGraphPortChainInUse,
        lambda: sfc.model.update(PortChain, d["pc1"].id, port_pair_groups=[d["pg1"].id]),
        d["pc1"],
        graph,
        status=409,
    )
    spare = sfc.classifier("spare", protocol="udp")
    refused(
        sfc,
        e.ServiceGraphPortChainInUse,
        lambda: sfc.model.update(PortChain, tail.id, flow_classifiers=[spare.id]),
        tail,
        graph,
        status=409,
    )
    refused(
        sfc,
        e.ServiceGraphPortChainInUse,
        lambda: sfc.model.delete(PortChain, tail.id),
        tail,
        graph,
        status=409,
    )
    assert sfc.model.update(PortChain, tail.id, name="tail").name == "tail"


# --- service graphs --------------------------------------------------------------------


@pytest.fixture
def chains(sfc: Sfc) -> list[PortChain]:
    """Three chains with disjoint classifiers from one source port."""
    src = sfc.port("src")
    made = []
    for i in range(3):
        group = sfc.group(f"PG{i}", sfc.pair(f"vm{i}"))
        fc = sfc.classifier(
            f"fc{i}",
            src,
            protocol="tcp",
            destination_port_range_min=80 + i,
            destination_port_range_max=80 + i,
        )
        made.append(sfc.chain(f"PC{i}", [group], [fc]))
    return made


def _graph(sfc: Sfc, port_chains: dict[str, list[str]], name: str = "SG") -> ServiceGraph:
    return sfc.model.create(ServiceGraph, name=name, port_chains=port_chains)


def test_graph_links_chains_and_joins_branches(sfc: Sfc, chains: list[PortChain]) -> None:
    a, b, c = chains
    graph = _graph(sfc, {a.id: [c.id], b.id: [c.id]})
    assert graph.port_chains == {a.id: (c.id,), b.id: (c.id,)}
    assert sfc.model.state.graph_of_chain(c.id) == graph


def test_graph_names_chains_by_uuid(sfc: Sfc, chains: list[PortChain]) -> None:
    err = refused(
        sfc,
        e.InvalidUUID,
        lambda: _graph(sfc, {"PC0": [chains[1].id]}),
        "PC0",
        status=400,
    )
    assert err.type == "InvalidUUID"
    refused(sfc, e.InvalidUUID, lambda: _graph(sfc, {chains[0].id: ["PC1"]}), "PC1", status=400)


def test_graph_with_unknown_chain(sfc: Sfc, chains: list[PortChain]) -> None:
    missing = str(uuid.uuid4())
    refused(
        sfc,
        e.PortChainNotFound,
        lambda: _graph(sfc, {chains[0].id: [missing]}),
        missing,
        status=404,
    )


def test_chain_already_in_another_graph(sfc: Sfc, chains: list[PortChain]) -> None:
    a, b, c = chains
    first = _graph(sfc, {a.id: [b.id]}, "first")
    refused(
        sfc,
        e.ServiceGraphInvalidPortChains,
        lambda: _graph(sfc, {c.id: [b.id]}, "second"),
        b,
        first,
        status=409,
    )


def test_graph_chains_share_one_correlation(sfc: Sfc, chains: list[PortChain]) -> None:
    group = sfc.group("NSH", sfc.pair("nsh-vm"))
    nsh_chain = sfc.chain("NSH", [group], chain_parameters={"correlation": "nsh"})
    refused(
        sfc,
        e.ServiceGraphInconsistentEncapsulation,
        lambda: _graph(sfc, {chains[0].id: [nsh_chain.id]}),
        chains[0],
        nsh_chain,
        "nsh",
        "mpls",
        status=400,
    )


def test_destination_listed_twice_at_a_branch(sfc: Sfc, chains: list[PortChain]) -> None:
    a, b, _ = chains
    refused(
        sfc,
        e.ServiceGraphPortChainInConflict,
        lambda: _graph(sfc, {a.id: [b.id, b.id]}),
        a,
        b,
        status=400,
    )


def test_branch_classifiers_must_not_overlap(sfc: Sfc, chains: list[PortChain]) -> None:
    a, b, _ = chains
    # A chain whose classifier (from another port) overlaps b's traffic.
    group = sfc.group("PGx", sfc.pair("vmx"))
    wide = sfc.classifier("wide", sfc.port("elsewhere"), protocol="tcp")
    overlapping = sfc.chain("PCx", [group], [wide])
    b_fc = sfc.model.get(FlowClassifier, b.flow_classifiers[0])
    refused(
        sfc,
        e.ServiceGraphFlowClassifierInConflict,
        lambda: _graph(sfc, {a.id: [b.id, overlapping.id]}),
        a,
        b_fc,
        wide,
        status=400,
    )


def test_graph_loops(sfc: Sfc, chains: list[PortChain]) -> None:
    a, b, c = chains
    err = refused(
        sfc,
        e.ServiceGraphLoopDetected,
        lambda: _graph(sfc, {a.id: [b.id], b.id: [c.id], c.id: [a.id]}),
        a,
        b,
        c,
        status=400,
    )
    assert err.message.count("PC0") == 2  # the cycle is closed in the message
    refused(sfc, e.ServiceGraphLoopDetected, lambda: _graph(sfc, {a.id: [a.id]}), a, status=400)
