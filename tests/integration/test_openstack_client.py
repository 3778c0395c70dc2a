"""The real `openstack` command line (python-openstackclient with
python-neutronclient's sfc plugin) drives the API unchanged.

The API is served on a free loopback port by `ApiServer` over a bare model
holding the networking-sfc demo's ports; each step of the demo's live-update
sequence is run as the `openstack` CLI in a subprocess, and the model is
checked after it. The same sequence against a running node, with its traffic
checked, lives in ``tests/netns``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend
from pktchain.api.server import ApiServer
from pktchain.sfc.model import (
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    ServiceGraph,
    SfcModel,
)
from support.openstack_cli import OPENSTACK, Openstack

PORTS = (
    ("src", "eth0"),
    ("dst", "eth0"),
    ("vm1", "in"),
    ("vm1", "out"),
    ("vm2", "in"),
    ("vm2", "out"),
    ("vm3", "in"),
    ("vm3", "out"),
)

pytestmark = pytest.mark.skipif(not OPENSTACK.exists(), reason="the openstack CLI is not installed")


@pytest.fixture
def model() -> SfcModel:
    model = SfcModel()
    for index, (device, name) in enumerate(PORTS):
        model.create(
            Port,
            name=f"{device}:{name}",
            mac_address=f"02:00:00:00:00:{index + 1:02x}",
            device_id=device,
            node_port=f"{device}:{name}",
            fixed_ips=[{"ip_address": f"10.0.0.{index + 10}"}],
            **{"binding:host_id": "node1" if device != "vm2" else "node2"},
        )
    return model


@pytest.fixture
def server(model: SfcModel) -> Iterator[ApiServer]:
    with ApiServer(create_app(LocalBackend(model)), port=0) as server:
        yield server


@pytest.fixture
def openstack(server: ApiServer, tmp_path: Path) -> Openstack:
    return Openstack(f"{server.url}/v2.0", tmp_path, ("--os-auth-type", "none"))


def ids(model: SfcModel, cls: type[PortPair] | type[PortPairGroup], *names: str) -> tuple[str, ...]:
    return tuple(model.resolve(cls, name).id for name in names)


def test_seed_003_sequence(openstack: Openstack, model: SfcModel) -> None:
    for vm in (1, 2, 3):
        shown = openstack.json(
            f"sfc port pair create --ingress vm{vm}:in --egress vm{vm}:out PP{vm}"
        )
        pair = model.get(PortPair, shown["ID"])
        assert pair.name == f"PP{vm}"
        assert pair.ingress == model.resolve(Port, f"vm{vm}:in").id
        assert pair.egress == model.resolve(Port, f"vm{vm}:out").id
    openstack("sfc port pair group create --port-pair PP1 --port-pair PP2 PG1")
    openstack("sfc port pair group create --port-pair PP3 PG2")
    assert model.resolve(PortPairGroup, "PG1").port_pairs == ids(model, PortPair, "PP1", "PP2")
    assert model.resolve(PortPairGroup, "PG2").port_pairs == ids(model, PortPair, "PP3")
    openstack(
        "sfc flow classifier create --protocol tcp --destination-port 80:80"
        " --source-ip-prefix 10.0.0.10/32 --logical-source-port src:eth0 FC_demo"
    )
    fc = model.resolve(FlowClassifier, "FC_demo")
    assert fc.destination_ports == (80, 80)
    assert fc.source_ip_prefix == "10.0.0.10/32"
    assert fc.logical_source_port == model.resolve(Port, "src:eth0").id
    openstack(
        "sfc port chain create --port-pair-group PG1 --port-pair-group PG2"
        " --flow-classifier FC_demo PC1"
    )
    both_groups = ids(model, PortPairGroup, "PG1", "PG2")
    chain = model.resolve(PortChain, "PC1")
    assert chain.port_pair_groups == both_groups
    assert chain.flow_classifiers == (fc.id,)

    # Remove the classifier: no traffic is steered.
    openstack("sfc port chain set --no-flow-classifier PC1")
    assert model.resolve(PortChain, "PC1").flow_classifiers == ()
    # Restore it with the first group only (`set` adds groups; --no-port-pair-group replaces).
    openstack(
        "sfc port chain set --flow-classifier FC_demo --no-port-pair-group"
        " --port-pair-group PG1 PC1"
    )
    chain = model.resolve(PortChain, "PC1")
    assert chain.port_pair_groups == ids(model, PortPairGroup, "PG1")
    assert chain.flow_classifiers == (fc.id,)
    # Take VM1 out of the first group.
    openstack("sfc port pair group set --no-port-pair --port-pair PP2 PG1")
    assert model.resolve(PortPairGroup, "PG1").port_pairs == ids(model, PortPair, "PP2")
    # Restore the demo: the client sends the union of the pairs, sorted by id.
    openstack("sfc port pair group set --port-pair PP1 PG1")
    restored = set(model.resolve(PortPairGroup, "PG1").port_pairs)
    assert restored == set(ids(model, PortPair, "PP1", "PP2"))
    openstack("sfc port chain set --port-pair-group PG2 PC1")
    assert model.resolve(PortChain, "PC1").port_pair_groups == both_groups

    listed = openstack.json("sfc port pair list")
    assert [row["Name"] for row in listed] == ["PP1", "PP2", "PP3"]
    shown_chain = openstack.json("sfc port chain show PC1")
    assert shown_chain["Port Pair Groups"] == list(both_groups)
    assert shown_chain["Flow Classifiers"] == [fc.id]
    assert openstack("sfc port chain set --description 'networking-sfc demo' PC1") == ""
    assert model.resolve(PortChain, "PC1").description == "networking-sfc demo"

    # A refused change: the client reports the model's message and fails.
    refused = openstack.run("sfc port pair delete PP1")
    assert refused.returncode != 0
    assert "is in use by port pair group 'PG1'" in refused.stderr
    assert len(model.list(PortPair)) == 3

    openstack("sfc port chain delete PC1")
    openstack("sfc flow classifier delete FC_demo")
    openstack("sfc port pair group delete PG1 PG2")
    openstack("sfc port pair delete PP1 PP2 PP3")
    for cls in (PortChain, FlowClassifier, PortPairGroup, PortPair):
        assert model.list(cls) == ()
    assert openstack.json("sfc port chain list") == []


def test_service_graph_and_parameters(openstack: Openstack, model: SfcModel) -> None:
    openstack(
        "sfc port pair create --ingress vm1:in --egress vm1:out"
        " --service-function-parameters weight=3 PP1"
    )
    assert model.resolve(PortPair, "PP1").weight == 3
    openstack(
        "sfc port pair group create --port-pair PP1"
        " --port-pair-group-parameters 'lb-fields=ip_src&ip_dst' PG1"
    )
    group = model.resolve(PortPairGroup, "PG1")
    assert [f.value for f in group.port_pair_group_parameters.lb_fields] == ["ip_src", "ip_dst"]
    openstack("sfc port pair create --ingress vm2:in --egress vm2:out PP2")
    openstack("sfc port pair group create --port-pair PP2 PG2")
    for name, ports in (("FC1", "80:80"), ("FC2", "443:443")):
        openstack(
            f"sfc flow classifier create --protocol tcp --destination-port {ports}"
            f" --logical-source-port src:eth0 {name}"
        )
    openstack("sfc port chain create --port-pair-group PG1 --flow-classifier FC1 PC1")
    openstack("sfc port chain create --port-pair-group PG2 --flow-classifier FC2 PC2")
    graph = openstack.json("sfc service graph create --branching-point PC1:PC2 G1")
    assert graph["Name"] == "G1"
    pc1, pc2 = (model.resolve(PortChain, name).id for name in ("PC1", "PC2"))
    (stored,) = model.list(ServiceGraph)
    assert dict(stored.port_chains) == {pc1: (pc2,)}
    refused = openstack.run("sfc port chain delete PC2")
    assert refused.returncode != 0
    assert "service graph" in refused.stderr
    openstack("sfc service graph delete G1")
    assert model.list(ServiceGraph) == ()


def test_token_through_the_client(model: SfcModel, tmp_path: Path) -> None:
    with ApiServer(create_app(LocalBackend(model), token="s3cret"), port=0) as server:
        endpoint = f"{server.url}/v2.0"
        with_token = ("--os-auth-type", "admin_token", "--os-token", "s3cret")
        assert Openstack(endpoint, tmp_path, with_token).json("sfc port pair list") == []
        anonymous = Openstack(endpoint, tmp_path, ("--os-auth-type", "none"))
        assert anonymous.run("sfc port pair list").returncode != 0
        wrong = ("--os-auth-type", "admin_token", "--os-token", "guess")
        assert Openstack(endpoint, tmp_path, wrong).run("sfc port pair list").returncode != 0


def test_ports_show_the_node_they_sit_on(openstack: Openstack) -> None:
    # Neutron's binding:host_id: the client shows it and filters on it (--host).
    assert openstack.json("port show vm1:in")["binding_host_id"] == "node1"
    on_node2 = openstack.json("port list --host node2")
    assert sorted(port["Name"] for port in on_node2) == ["vm2:in", "vm2:out"]


def test_port_set_allowed_address_and_port_security(openstack: Openstack, model: SfcModel) -> None:
    """`openstack port set --allowed-address` and `--disable-port-security` /
    `--enable-port-security`, as an operator runs them on a Neutron port."""
    shown = openstack.json("port show src:eth0")
    assert shown["port_security_enabled"] is True and shown["allowed_address_pairs"] == []

    openstack("port set --allowed-address ip-address=10.0.0.99 src:eth0")
    openstack(
        "port set --allowed-address ip-address=10.9.0.0/16,mac-address=02:0a:00:00:00:01 src:eth0"
    )
    port = model.resolve(Port, "src:eth0")
    assert [(p.ip_address, p.mac_address) for p in port.allowed_address_pairs] == [
        ("10.0.0.99", "02:00:00:00:00:01"),  # the port's own MAC, as Neutron fills it in
        ("10.9.0.0/16", "02:0a:00:00:00:01"),
    ]
    shown = openstack.json("port show src:eth0")
    assert {"ip_address": "10.9.0.0/16", "mac_address": "02:0a:00:00:00:01"} in shown[
        "allowed_address_pairs"
    ]

    # Unset names a pair as shown: with its MAC.
    openstack(
        "port unset --allowed-address ip-address=10.0.0.99,mac-address=02:00:00:00:00:01 src:eth0"
    )
    port = model.resolve(Port, "src:eth0")
    assert [p.ip_address for p in port.allowed_address_pairs] == ["10.9.0.0/16"]

    # Neutron's rule: no port security off while the port has pairs; the client says why.
    refused = openstack.run("port set --disable-port-security src:eth0")
    assert refused.returncode != 0
    assert "Port Security must be enabled" in refused.stderr
    assert model.resolve(Port, "src:eth0").port_security_enabled is True

    openstack("port set --no-allowed-address --disable-port-security src:eth0")
    port = model.resolve(Port, "src:eth0")
    assert port.port_security_enabled is False and port.allowed_address_pairs == ()
    assert openstack.json("port show src:eth0")["port_security_enabled"] is False

    openstack("port set --enable-port-security src:eth0")
    assert model.resolve(Port, "src:eth0").port_security_enabled is True
    # What the node declares is not the API's to change.
    moved = openstack.run("port set --mac-address 02:00:00:00:09:09 src:eth0")
    assert moved.returncode != 0 and "mac_address" in moved.stderr
