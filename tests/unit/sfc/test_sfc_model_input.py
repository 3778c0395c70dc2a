"""Malformed requests to the chaining model, and the classifier overlap test.

Every bad value is a 400 that names the attribute (its path, for nested
ones), whether it comes as JSON would bring it or as a Python value; nothing
else escapes. The overlap test is checked against packets: when it says two
classifiers overlap, a packet built from both matches both; when it says they
do not, no sampled packet matches both.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktchain.sfc import errors as e
from pktchain.sfc.model import (
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    ServiceGraph,
)
from pktchain.sfc.overlap import Match, classifiers_conflict, fields_overlap
from pktchain.sfc.resources import Ethertype, FrozenMap, Protocol
from support.sfc_model import Sfc


@pytest.fixture
def sfc() -> Sfc:
    return Sfc()


def bad(sfc: Sfc, error: type[e.SfcError], field: str, call: Any) -> e.SfcError:
    before = sfc.model.state
    with pytest.raises(error) as caught:
        call()
    raised = caught.value
    assert raised.status == 400
    assert raised.field == field
    assert field in raised.message
    assert sfc.model.state is before
    return raised


# --- attribute names -------------------------------------------------------------------


def test_unknown_attribute(sfc: Sfc) -> None:
    err = bad(sfc, e.UnknownAttribute, "colour", lambda: sfc.model.create(Port, colour="red"))
    assert err.type == "HTTPBadRequest"
    assert err.to_neutron() == {
        "NeutronError": {"type": "HTTPBadRequest", "message": err.message, "detail": ""}
    }


def test_id_is_never_in_a_body(sfc: Sfc) -> None:
    bad(sfc, e.ReadOnlyAttribute, "id", lambda: sfc.model.create(Port, {"id": str(uuid.uuid4())}))
    port = sfc.port("a")
    bad(sfc, e.ReadOnlyAttribute, "id", lambda: sfc.model.update(Port, port.id, id=port.id))


def test_group_id_is_assigned_not_given(sfc: Sfc) -> None:
    bad(sfc, e.ReadOnlyAttribute, "group_id", lambda: sfc.model.create(PortPairGroup, group_id=4))


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (PortPair, "ingress", str(uuid.uuid4())),
        (PortPair, "service_function_parameters", {"weight": 2}),
        (PortPairGroup, "tap_enabled", True),
        (PortPairGroup, "port_pair_group_parameters", {"lb_fields": ["ip_src"]}),
        (FlowClassifier, "protocol", "udp"),
        (FlowClassifier, "logical_source_port", str(uuid.uuid4())),
        (FlowClassifier, "l7_parameters", {}),
        (PortChain, "chain_parameters", {"symmetric": True}),
        (PortChain, "chain_id", 9),
        (ServiceGraph, "port_chains", {}),
        (Port, "tenant_id", "someone-else"),
    ],
)
def test_attributes_networking_sfc_does_not_let_an_update_change(
    sfc: Sfc, cls: type[Any], field: str, value: object
) -> None:
    d = sfc.demo()
    graph = sfc.model.create(ServiceGraph, port_chains={})
    existing = {
        PortPair: d["pp1"],
        PortPairGroup: d["pg1"],
        FlowClassifier: d["fc"],
        PortChain: d["pc1"],
        ServiceGraph: graph,
        Port: d["source"],
    }[cls]
    err = bad(
        sfc, e.ReadOnlyAttribute, field, lambda: sfc.model.update(cls, existing.id, {field: value})
    )
    assert "update" in err.message


def test_required_attributes(sfc: Sfc) -> None:
    port = sfc.port("a")
    bad(sfc, e.MissingAttribute, "egress", lambda: sfc.model.create(PortPair, ingress=port.id))
    bad(sfc, e.MissingAttribute, "port_pair_groups", lambda: sfc.model.create(PortChain))
    bad(sfc, e.MissingAttribute, "port_chains", lambda: sfc.model.create(ServiceGraph))


def test_body_must_be_an_object(sfc: Sfc) -> None:
    bad(sfc, e.InvalidInput, "port", lambda: sfc.model.create(Port, ["not", "a", "dict"]))  # type: ignore[arg-type]


def test_tenant_and_project_must_agree(sfc: Sfc) -> None:
    bad(
        sfc,
        e.InvalidInput,
        "tenant_id",
        lambda: sfc.model.create(Port, project_id="p1", tenant_id="p2"),
    )


# --- values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", 5),
        ("name", "x" * 256),
        ("description", ["list"]),
        ("mac_address", "02:00:00:00:00"),
        ("mac_address", "01:00:5e:00:00:01"),  # multicast
        ("mac_address", "00:00:00:00:00:00"),
        ("fixed_ips[0]", "10.0.0.1"),  # a lone value is a list of one
        ("fixed_ips[0].ip_address", [{"ip_address": "10.0.0.300"}]),
        ("fixed_ips[0].ip_address", [{"subnet_id": "s"}]),
        ("fixed_ips[0].gateway", [{"ip_address": "10.0.0.1", "gateway": "10.0.0.254"}]),
    ],
)
def test_bad_port_values(sfc: Sfc, field: str, value: object) -> None:
    top = re.split(r"[.\[]", field, maxsplit=1)[0]
    bad(sfc, e.InvalidInput, field, lambda: sfc.model.create(Port, {top: value}))


def test_bad_uuids(sfc: Sfc) -> None:
    port = sfc.port("a")
    bad(
        sfc,
        e.InvalidInput,
        "ingress",
        lambda: sfc.model.create(PortPair, ingress="vm1-in", egress=port.id),
    )
    bad(
        sfc,
        e.InvalidInput,
        "ingress",
        lambda: sfc.model.create(PortPair, ingress=42, egress=port.id),
    )
    bad(
        sfc,
        e.InvalidInput,
        "port_pairs[1]",
        lambda: sfc.model.create(PortPairGroup, port_pairs=[str(uuid.uuid4()), "PP2"]),
    )
    bad(sfc, e.InvalidInput, "port_pairs", lambda: sfc.model.create(PortPairGroup, port_pairs=7))
    bad(
        sfc,
        e.InvalidInput,
        "logical_source_port",
        lambda: sfc.model.create(FlowClassifier, logical_source_port="src"),
    )


def test_a_lone_id_is_a_list_of_one(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    assert sfc.model.create(PortPairGroup, port_pairs=pp.id).port_pairs == (pp.id,)


def test_duplicate_ids_in_a_list(sfc: Sfc) -> None:
    pp = sfc.pair("vm1")
    err = bad(
        sfc,
        e.PortChainDuplicateEntry,
        "port_pairs",
        lambda: sfc.model.create(PortPairGroup, port_pairs=[pp.id, pp.id]),
    )
    assert pp.id in err.message
    group = sfc.group("PG", pp)
    bad(
        sfc,
        e.PortChainDuplicateEntry,
        "port_pair_groups",
        lambda: sfc.model.create(PortChain, port_pair_groups=[group.id, group.id]),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_function_parameters", "nsh"),
        ("service_function_parameters.correlation", {"correlation": "mpls"}),
        ("service_function_parameters.correlation", {"correlation": "vxlan"}),
        ("service_function_parameters.weight", {"weight": -1}),
        ("service_function_parameters.weight", {"weight": "heavy"}),
        ("service_function_parameters.weight", {"weight": 1.5}),
        ("service_function_parameters.weight", {"weight": True}),
        ("service_function_parameters.colour", {"colour": "red"}),
    ],
)
def test_bad_service_function_parameters(sfc: Sfc, field: str, value: object) -> None:
    a = sfc.port("a", "vm")
    b = sfc.port("b", "vm")
    bad(
        sfc,
        e.InvalidInput,
        field,
        lambda: sfc.model.create(
            PortPair, ingress=a.id, egress=b.id, service_function_parameters=value
        ),
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port_pair_group_parameters.lb_fields", {"lb_fields": ["ip_proto"]}),
        ("port_pair_group_parameters.lb_fields", {"lb_fields": "ip_src"}),
        ("port_pair_group_parameters.lb_fields", {"lb_fields": ["ip_src", "ip_src"]}),
        ("port_pair_group_parameters.colour", {"colour": 1}),
        (
            "port_pair_group_parameters.ppg_n_tuple_mapping.egress_n_tuple.source_ip_prefix",
            {"ppg_n_tuple_mapping": {"egress_n_tuple": {"source_ip_prefix": "10.0.0.1"}}},
        ),
    ],
)
def test_bad_group_parameters(sfc: Sfc, field: str, value: object) -> None:
    bad(
        sfc,
        e.InvalidInput,
        field,
        lambda: sfc.model.create(PortPairGroup, port_pair_group_parameters=value),
    )


def test_bad_n_tuple_port(sfc: Sfc) -> None:
    value = {"ppg_n_tuple_mapping": {"ingress_n_tuple": {"source_port_range_min": 70000}}}
    bad(
        sfc,
        e.FlowClassifierInvalidPortValue,
        "port_pair_group_parameters.ppg_n_tuple_mapping.ingress_n_tuple.source_port_range_min",
        lambda: sfc.model.create(PortPairGroup, port_pair_group_parameters=value),
    )


def test_tap_enabled_is_a_boolean(sfc: Sfc) -> None:
    bad(
        sfc,
        e.InvalidInput,
        "tap_enabled",
        lambda: sfc.model.create(PortPairGroup, tap_enabled="maybe"),
    )
    assert sfc.model.create(PortPairGroup, tap_enabled="True").tap_enabled is True


@pytest.mark.parametrize(
    ("error", "field", "value"),
    [
        (e.FlowClassifierInvalidProtocol, "protocol", "sctp"),
        (e.FlowClassifierInvalidProtocol, "protocol", "6"),
        (e.FlowClassifierInvalidProtocol, "protocol", 6),
        (e.FlowClassifierInvalidEthertype, "ethertype", "IPv5"),
        (e.FlowClassifierInvalidEthertype, "ethertype", 4),
        (e.FlowClassifierInvalidPortValue, "source_port_range_min", 70000),
        (e.FlowClassifierInvalidPortValue, "source_port_range_min", -1),
        (e.FlowClassifierInvalidPortValue, "destination_port_range_max", "http"),
        (e.FlowClassifierInvalidL7Parameter, "l7_parameters.url", {"url": "/"}),
        (e.InvalidInput, "l7_parameters", "host=a"),
        (e.InvalidInput, "source_ip_prefix", "10.0.0.0/33"),
        (e.InvalidInput, "source_ip_prefix", "10.0.0.1/24"),
        (e.InvalidInput, "source_ip_prefix", "10.0.0.1"),
        (e.InvalidInput, "destination_ip_prefix", "not-a-cidr/8"),
        (e.InvalidInput, "destination_ip_prefix", 10),
        # The text forms of the API's document (pktchain.packet.text), not all that parses:
        (e.InvalidInput, "source_ip_prefix", "10.0.0.0/255.0.0.0"),
        (e.InvalidInput, "source_ip_prefix", "10.0.0.0/08"),
        (e.FlowClassifierInvalidPortValue, "source_port_range_min", "\u0668\u0660"),
        (e.FlowClassifierInvalidPortValue, "source_port_range_min", " 80"),
        (e.FlowClassifierInvalidPortValue, "source_port_range_min", 80.5),
        (e.InvalidInput, "l7_parameters.http_host", {"http_host": " example.org "}),
        (e.InvalidInput, "l7_parameters.http_host", {"http_host": None}),
    ],
)
def test_bad_classifier_values(
    sfc: Sfc, error: type[e.SfcError], field: str, value: object
) -> None:
    src = sfc.port("src")
    top = field.split(".", maxsplit=1)[0]
    raised = bad(
        sfc,
        error,
        field,
        lambda: sfc.model.create(FlowClassifier, {top: value}, logical_source_port=src.id),
    )
    assert raised.type in (error.__name__, "HTTPBadRequest")


def test_integral_numbers_and_the_roots_dot_are_taken(sfc: Sfc) -> None:
    src = sfc.port("src")
    fc = sfc.model.create(
        FlowClassifier,
        logical_source_port=src.id,
        protocol="tcp",
        destination_port_range_min=80.0,  # an integer, as JSON Schema counts
        l7_parameters={"http_host": "WWW.Example.org."},
    )
    assert fc.destination_port_range_min == 80
    assert dict(fc.l7_parameters) == {"http_host": "www.example.org"}


def test_networking_sfc_type_names_for_classifier_errors(sfc: Sfc) -> None:
    src = sfc.port("src")
    with pytest.raises(e.FlowClassifierInvalidProtocol) as caught:
        sfc.model.create(FlowClassifier, protocol="gre", logical_source_port=src.id)
    assert caught.value.type == "FlowClassifierInvalidProtocol"


def test_classifier_values_are_normalized(sfc: Sfc) -> None:
    src = sfc.port("src")
    fc = sfc.model.create(
        FlowClassifier,
        logical_source_port=src.id.upper(),
        ethertype="ipv6",
        protocol="UDP",
        source_port_range_min="53",
        destination_ip_prefix="2001:DB8::/32",
    )
    assert fc.ethertype is Ethertype.IPV6
    assert fc.protocol is Protocol.UDP
    assert fc.protocol.ip_proto(fc.ethertype) == 17
    assert fc.source_port_range_min == 53
    assert fc.destination_ip_prefix == "2001:db8::/32"
    assert fc.destination_network == ipaddress.ip_network("2001:db8::/32")
    assert fc.logical_source_port == src.id


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chain_parameters.correlation", {"correlation": None}),
        ("chain_parameters.correlation", {"correlation": "vxlan"}),
        ("chain_parameters.symmetric", {"symmetric": "sometimes"}),
        ("chain_parameters.weight", {"weight": 1}),
        ("chain_id", 65536),
        ("chain_id", -1),
        ("chain_id", "one"),
    ],
)
def test_bad_chain_values(sfc: Sfc, field: str, value: object) -> None:
    group = sfc.group("PG", sfc.pair("vm1"))
    top = field.split(".", maxsplit=1)[0]
    bad(
        sfc,
        e.InvalidInput,
        field,
        lambda: sfc.model.create(PortChain, {top: value}, port_pair_groups=[group.id]),
    )


def test_bad_graph_values(sfc: Sfc) -> None:
    source = str(uuid.uuid4())
    bad(
        sfc,
        e.InvalidInput,
        "port_chains",
        lambda: sfc.model.create(ServiceGraph, port_chains=[source]),
    )
    bad(
        sfc,
        e.InvalidInput,
        f"port_chains.{source}",
        lambda: sfc.model.create(ServiceGraph, port_chains={source: source}),
    )


# --- overlap ---------------------------------------------------------------------------

PREFIXES = [None, "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "192.168.0.0/24"]
PORT = st.one_of(st.none(), st.integers(0, 20), st.integers(65530, 65535))
SRC = str(uuid.uuid4())


@st.composite
def classifiers(draw: st.DrawFn) -> FlowClassifier:
    def ports() -> tuple[int | None, int | None]:
        low, high = draw(PORT), draw(PORT)
        if low is not None and high is not None and low > high:
            low, high = high, low
        return low, high

    protocol = draw(st.sampled_from([None, Protocol.TCP, Protocol.UDP]))
    smin, smax = ports() if protocol else (None, None)
    dmin, dmax = ports() if protocol else (None, None)
    return FlowClassifier(
        id=str(uuid.uuid4()),
        protocol=protocol,
        source_ip_prefix=draw(st.sampled_from(PREFIXES)),
        destination_ip_prefix=draw(st.sampled_from(PREFIXES)),
        source_port_range_min=smin,
        source_port_range_max=smax,
        destination_port_range_min=dmin,
        destination_port_range_max=dmax,
        logical_source_port=SRC,
        logical_destination_port=draw(st.sampled_from([None, SRC, str(uuid.UUID(int=1))])),
    )


def _accepts(fc: FlowClassifier, packet: dict[str, Any]) -> bool:
    """Whether a classifier matches a concrete packet, field by field."""
    src, dst = fc.source_network, fc.destination_network
    return (
        (fc.protocol is None or fc.protocol is packet["protocol"])
        and (src is None or packet["src"] in src)
        and (dst is None or packet["dst"] in dst)
        and fc.source_ports[0] <= packet["sport"] <= fc.source_ports[1]
        and fc.destination_ports[0] <= packet["dport"] <= fc.destination_ports[1]
    )


def _witness(a: FlowClassifier, b: FlowClassifier) -> dict[str, Any]:
    """A packet in the intersection of two overlapping classifiers."""

    def narrower(x: Any, y: Any) -> Any:
        if x is None:
            return y
        if y is None:
            return x
        return x if x.prefixlen >= y.prefixlen else y

    src = narrower(a.source_network, b.source_network)
    dst = narrower(a.destination_network, b.destination_network)
    return {
        "protocol": a.protocol or b.protocol or Protocol.TCP,
        "src": ipaddress.ip_address("172.16.0.1") if src is None else src.network_address,
        "dst": ipaddress.ip_address("172.16.0.2") if dst is None else dst.network_address,
        "sport": max(a.source_ports[0], b.source_ports[0]),
        "dport": max(a.destination_ports[0], b.destination_ports[0]),
    }


@settings(max_examples=400, deadline=None)
@given(classifiers(), classifiers())
def test_overlap_agrees_with_packets(a: FlowClassifier, b: FlowClassifier) -> None:
    assert fields_overlap(a, b) == fields_overlap(b, a)
    assert classifiers_conflict(a, b) == classifiers_conflict(b, a)
    packet = _witness(a, b)
    both = _accepts(a, packet) and _accepts(b, packet)
    if fields_overlap(a, b):
        assert both
    else:
        # Disjoint in some field: the packet built from both fits one of them at most.
        assert not both
    if classifiers_conflict(a, b):
        assert fields_overlap(a, b)


def test_reverse_match_swaps_the_directions() -> None:
    dest = str(uuid.uuid4())
    fc = FlowClassifier(
        id=str(uuid.uuid4()),
        protocol=Protocol.TCP,
        source_ip_prefix="10.0.0.0/24",
        destination_port_range_min=80,
        destination_port_range_max=80,
        logical_source_port=SRC,
        logical_destination_port=dest,
    )
    reverse = Match.reverse(fc)
    assert reverse.in_port == dest
    assert reverse.destination == ipaddress.ip_network("10.0.0.0/24")
    assert reverse.source is None
    assert reverse.source_ports == (80, 80)
    assert reverse.destination_ports == (0, 65535)
    assert not reverse.overlaps(Match.forward(fc))  # it enters by another port


def test_l7_values_that_differ_are_disjoint() -> None:
    def classifier(**l7: str) -> FlowClassifier:
        return FlowClassifier(
            id=str(uuid.uuid4()), logical_source_port=SRC, l7_parameters=FrozenMap(l7)
        )

    a = classifier(http_host="a.example")
    b = classifier(http_host="b.example")
    c = classifier()
    assert not fields_overlap(a, b)
    assert fields_overlap(a, c)
