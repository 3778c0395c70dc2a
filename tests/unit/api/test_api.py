"""The REST API over a bare model: CRUD and wrapping of every collection,
filters, field selection and paging, the Neutron resources clients look
for, error mapping, malformed requests, the token, the OpenAPI document and
the server thread.

`lab` is the networking-sfc demo's ports (source and destination VMs, three service
VMs with an in and an out port), registered in the model as the node would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from fastapi.testclient import TestClient

from pktchain.api.app import DEFAULT_NETWORK_ID, create_app
from pktchain.api.backend import LocalBackend
from pktchain.api.server import ApiServer, ApiServerError
from pktchain.sfc.model import Port, PortPair, PortPairGroup, SfcModel

T = TypeVar("T")

SFC = "/v2.0/sfc"
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


class CountingBackend(LocalBackend):
    """A local backend that counts the changes submitted to it."""

    def __init__(self, model: SfcModel) -> None:
        super().__init__(model)
        self.submitted = 0

    def submit(self, fn: Callable[[], T]) -> T:
        self.submitted += 1
        return super().submit(fn)


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
        )
    return model


@pytest.fixture
def backend(model: SfcModel) -> CountingBackend:
    return CountingBackend(model)


@pytest.fixture
def client(backend: CountingBackend) -> Iterator[TestClient]:
    with TestClient(create_app(backend)) as client:
        yield client


def port(model: SfcModel, name: str) -> str:
    return model.resolve(Port, name).id


def created(response: httpx.Response, key: str) -> Any:
    """The resource (or, under a plural key, the list of them) a POST created."""
    assert response.status_code == 201, response.text
    return response.json()[key]


def error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    body: dict[str, str] = response.json()["NeutronError"]
    assert set(body) == {"type", "message", "detail"}
    return body


def make_pair(client: TestClient, model: SfcModel, vm: str, name: str = "") -> dict[str, Any]:
    body = {"name": name or f"PP-{vm}", "ingress": port(model, f"{vm}:in")}
    body["egress"] = port(model, f"{vm}:out")
    pair: dict[str, Any] = created(
        client.post(f"{SFC}/port_pairs", json={"port_pair": body}), "port_pair"
    )
    return pair


def make_group(client: TestClient, name: str, *pairs: str) -> dict[str, Any]:
    body = {"port_pair_group": {"name": name, "port_pairs": list(pairs)}}
    group: dict[str, Any] = created(
        client.post(f"{SFC}/port_pair_groups", json=body), "port_pair_group"
    )
    return group


def make_classifier(client: TestClient, model: SfcModel, name: str = "FC") -> dict[str, Any]:
    body = {
        "name": name,
        "protocol": "tcp",
        "destination_port_range_min": 80,
        "destination_port_range_max": 80,
        "source_ip_prefix": "10.0.0.10/32",
        "logical_source_port": port(model, "src:eth0"),
    }
    response = client.post(f"{SFC}/flow_classifiers", json={"flow_classifier": body})
    classifier: dict[str, Any] = created(response, "flow_classifier")
    return classifier


def make_chain(client: TestClient, name: str, groups: list[str], fcs: list[str]) -> dict[str, Any]:
    body = {"port_chain": {"name": name, "port_pair_groups": groups, "flow_classifiers": fcs}}
    chain: dict[str, Any] = created(client.post(f"{SFC}/port_chains", json=body), "port_chain")
    return chain


@pytest.fixture
def demo(client: TestClient, model: SfcModel) -> dict[str, dict[str, Any]]:
    """The networking-sfc demo's chain: PC1 = PG1 (PP1, PP2) then PG2 (PP3), classifier FC."""
    pp1, pp2, pp3 = (make_pair(client, model, f"vm{i}", f"PP{i}") for i in (1, 2, 3))
    pg1 = make_group(client, "PG1", pp1["id"], pp2["id"])
    pg2 = make_group(client, "PG2", pp3["id"])
    fc = make_classifier(client, model)
    pc = make_chain(client, "PC1", [pg1["id"], pg2["id"]], [fc["id"]])
    return {"PP1": pp1, "PP2": pp2, "PP3": pp3, "PG1": pg1, "PG2": pg2, "FC": fc, "PC1": pc}


# --- the Neutron documents clients read --------------------------------------------------


def test_version_document(client: TestClient) -> None:
    versions = client.get("/").json()["versions"]
    assert versions[0]["id"] == "v2.0"
    assert versions[0]["status"] == "CURRENT"
    assert versions[0]["links"][0]["href"].endswith("/v2.0/")


def test_v2_lists_resources_and_its_own_version(client: TestClient) -> None:
    body = client.get("/v2.0").json()
    collections = {resource["collection"] for resource in body["resources"]}
    assert {"ports", "networks", "port_pairs", "port_chains", "service_graphs"} <= collections
    assert body["version"]["id"] == "v2.0"


def test_extensions_are_networking_sfcs(client: TestClient) -> None:
    extensions = client.get("/v2.0/extensions").json()["extensions"]
    aliases = {extension["alias"] for extension in extensions}
    assert {"sfc", "flow_classifier", "sfc_service_graph", "sfc_tap"} <= aliases
    assert client.get("/v2.0/extensions/sfc").json()["extension"]["alias"] == "sfc"
    assert error(client.get("/v2.0/extensions/lbaas"), 404)["type"] == "HTTPNotFound"


def test_one_network(client: TestClient) -> None:
    networks = client.get("/v2.0/networks").json()["networks"]
    assert [network["id"] for network in networks] == [DEFAULT_NETWORK_ID]
    shown = client.get(f"/v2.0/networks/{DEFAULT_NETWORK_ID}?fields=id&fields=status").json()
    assert shown == {"network": {"id": DEFAULT_NETWORK_ID, "status": "ACTIVE"}}
    assert client.get(f"/v2.0/networks?id={uuid.uuid4()}").json() == {"networks": []}
    assert error(client.get(f"/v2.0/networks/{uuid.uuid4()}"), 404)["type"] == "NetworkNotFound"


def test_ports_are_the_models(client: TestClient, model: SfcModel) -> None:
    ports = client.get("/v2.0/ports").json()["ports"]
    assert [p["name"] for p in ports] == [f"{d}:{n}" for d, n in PORTS]
    first = ports[0]
    assert first["mac_address"] == "02:00:00:00:00:01"
    assert first["fixed_ips"] == [{"subnet_id": "", "ip_address": "10.0.0.10"}]
    assert first["device_id"] == "src"
    assert first["status"] == "ACTIVE"
    assert first["admin_state_up"] is True
    assert first["network_id"] == DEFAULT_NETWORK_ID
    vm1_in = port(model, "vm1:in")
    assert client.get(f"/v2.0/ports/{vm1_in}").json()["port"]["name"] == "vm1:in"


def test_port_lookup_as_clients_find_by_name(client: TestClient, model: SfcModel) -> None:
    # openstacksdk's find: GET by the name as an id (404), then list by name.
    missing = client.get("/v2.0/ports/vm1:in")
    assert error(missing, 404)["type"] == "PortNotFound"
    found = client.get("/v2.0/ports", params={"name": "vm1:in"}).json()["ports"]
    assert [p["id"] for p in found] == [port(model, "vm1:in")]
    two = client.get("/v2.0/ports", params=[("name", "vm1:in"), ("name", "vm2:in")])
    assert len(two.json()["ports"]) == 2
    assert client.get("/v2.0/ports?status=ACTIVE&device_id=vm3").json()["ports"][0]["name"]
    assert error(client.get("/v2.0/ports?colour=red"), 400)["message"].count("colour")


def test_ports_are_not_created_through_the_api(client: TestClient) -> None:
    response = client.post("/v2.0/ports", json={"port": {"name": "x"}})
    assert error(response, 405)["type"] == "HTTPMethodNotAllowed"


def test_ports_show_their_port_security(client: TestClient, model: SfcModel) -> None:
    shown = client.get(f"/v2.0/ports/{port(model, 'src:eth0')}").json()["port"]
    assert shown["port_security_enabled"] is True
    assert shown["allowed_address_pairs"] == []
    aliases = {e["alias"] for e in client.get("/v2.0/extensions").json()["extensions"]}
    assert {"port-security", "allowed-address-pairs"} <= aliases


def test_a_port_update_sets_allowed_address_pairs_and_port_security(
    client: TestClient, model: SfcModel, backend: CountingBackend
) -> None:
    src = port(model, "src:eth0")
    pairs = [
        {"ip_address": "10.0.0.99"},
        {"ip_address": "10.9.0.0/16", "mac_address": "02:AA:00:00:00:01"},
    ]
    response = client.put(f"/v2.0/ports/{src}", json={"port": {"allowed_address_pairs": pairs}})
    assert response.status_code == 200, response.text
    # A pair given without a MAC gets the port's, as Neutron stores it.
    expected = [
        {"ip_address": "10.0.0.99", "mac_address": "02:00:00:00:00:01"},
        {"ip_address": "10.9.0.0/16", "mac_address": "02:aa:00:00:00:01"},
    ]
    assert response.json()["port"]["allowed_address_pairs"] == expected
    assert model.get(Port, src).to_dict()["allowed_address_pairs"] == expected
    assert backend.submitted == 1
    # Port security cannot go while the port has pairs (Neutron's rule) ...
    off = client.put(f"/v2.0/ports/{src}", json={"port": {"port_security_enabled": False}})
    assert error(off, 409)["type"] == "AddressPairAndPortSecurityRequired"
    assert model.get(Port, src).port_security_enabled is True
    # ... but goes with them in one update.
    both = {"port_security_enabled": "false", "allowed_address_pairs": []}
    response = client.put(f"/v2.0/ports/{src}", json={"port": both})
    assert response.status_code == 200, response.text
    assert response.json()["port"]["port_security_enabled"] is False
    assert model.get(Port, src).allowed_address_pairs == ()


@pytest.mark.parametrize(
    ("body", "status", "kind", "names"),
    [
        ({"mac_address": "02:00:00:00:09:09"}, 400, "HTTPBadRequest", "mac_address"),
        ({"fixed_ips": []}, 400, "HTTPBadRequest", "fixed_ips"),
        ({"port_security_enabled": "maybe"}, 400, "HTTPBadRequest", "port_security_enabled"),
        (
            {"allowed_address_pairs": [{"ip_address": "10.0.0.300"}]},
            400,
            "HTTPBadRequest",
            "allowed_address_pairs[0].ip_address",
        ),
        (
            {"allowed_address_pairs": [{"ip_address": "10.0.0.1/24"}]},
            400,
            "HTTPBadRequest",
            "host bits",
        ),
        (
            {"allowed_address_pairs": [{"ip_address": "10.0.0.9", "mac": "x"}]},
            400,
            "HTTPBadRequest",
            "allowed_address_pairs[0].mac",
        ),
        (
            {
                "allowed_address_pairs": [
                    {"ip_address": "10.0.0.9", "mac_address": "01:00:5e:0:0:1"}
                ]
            },
            400,
            "HTTPBadRequest",
            "mac_address",
        ),
        (
            {"allowed_address_pairs": [{"ip_address": f"10.0.1.{n}"} for n in range(11)]},
            400,
            "AllowedAddressPairExhausted",
            "maximum 10",
        ),
        (
            {
                "allowed_address_pairs": [
                    {"ip_address": "10.0.1.1"},
                    {"ip_address": "10.0.1.1", "mac_address": "02:00:00:00:00:01"},
                ]
            },
            400,
            "DuplicateAddressPairInRequest",
            "10.0.1.1",
        ),
    ],
)
def test_a_port_update_names_what_it_refuses(
    client: TestClient,
    model: SfcModel,
    *,
    body: dict[str, Any],
    status: int,
    kind: str,
    names: str,
) -> None:
    src = port(model, "src:eth0")
    before = model.get(Port, src)
    found = error(client.put(f"/v2.0/ports/{src}", json={"port": body}), status)
    assert found["type"] == kind
    assert names in found["message"]
    assert model.get(Port, src) == before


def test_a_port_update_of_an_unknown_port_is_a_404(client: TestClient) -> None:
    response = client.put(f"/v2.0/ports/{uuid.uuid4()}", json={"port": {"name": "x"}})
    assert error(response, 404)["type"] == "PortNotFound"


# --- CRUD and wrapping ---------------------------------------------------------------------


def test_port_pair_crud(client: TestClient, model: SfcModel, backend: CountingBackend) -> None:
    pair = make_pair(client, model, "vm1", "PP1")
    assert pair["ingress"] == port(model, "vm1:in")
    assert pair["service_function_parameters"] == {"correlation": None, "weight": 1}
    assert pair["tenant_id"] == pair["project_id"] == "pktchain"
    url = f"{SFC}/port_pairs/{pair['id']}"
    assert client.get(url).json() == {"port_pair": pair}
    assert client.get(f"{SFC}/port_pairs").json() == {"port_pairs": [pair]}
    updated = client.put(url, json={"port_pair": {"name": "first", "description": "vm1"}})
    assert updated.status_code == 200
    assert updated.json()["port_pair"] == {**pair, "name": "first", "description": "vm1"}
    assert model.get(PortPair, pair["id"]).name == "first"
    deleted = client.delete(url)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert error(client.get(url), 404)["type"] == "PortPairNotFound"
    assert model.list(PortPair) == ()
    assert backend.submitted == 3  # create, update, delete: reads never go through submit


def test_every_collection_crud(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    pc = demo["PC1"]
    assert pc["chain_parameters"] == {"correlation": "mpls", "symmetric": False}
    assert pc["chain_id"] == 1
    assert demo["PG1"]["group_id"] == 1
    assert demo["FC"]["destination_port_range_min"] == 80
    graph_chain = make_chain(client, "PC2", [demo["PG2"]["id"]], [])
    graph = client.post(
        f"{SFC}/service_graphs",
        json={"service_graph": {"name": "G", "port_chains": {pc["id"]: [graph_chain["id"]]}}},
    )
    sg = created(graph, "service_graph")
    assert sg["port_chains"] == {pc["id"]: [graph_chain["id"]]}
    for collection, key, resource in (
        ("service_graphs", "service_graph", sg),
        ("port_chains", "port_chain", pc),
        ("flow_classifiers", "flow_classifier", demo["FC"]),
        ("port_pair_groups", "port_pair_group", demo["PG1"]),
    ):
        url = f"{SFC}/{collection}/{resource['id']}"
        assert client.get(url).json() == {key: resource}
        renamed = client.put(url, json={key: {"name": f"renamed-{key}"}})
        assert renamed.json()[key]["name"] == f"renamed-{key}"
        listed = client.get(f"{SFC}/{collection}").json()[collection]
        assert resource["id"] in {item["id"] for item in listed}
    for collection, resource in (
        ("service_graphs", sg),
        ("port_chains", pc),
        ("port_chains", graph_chain),
        ("flow_classifiers", demo["FC"]),
        ("port_pair_groups", demo["PG1"]),
        ("port_pair_groups", demo["PG2"]),
        ("port_pairs", demo["PP1"]),
    ):
        assert client.delete(f"{SFC}/{collection}/{resource['id']}").status_code == 204


def test_live_updates_of_the_seed_demo(
    client: TestClient, model: SfcModel, demo: dict[str, dict[str, Any]]
) -> None:
    pc_url = f"{SFC}/port_chains/{demo['PC1']['id']}"
    pg1, pg2 = demo["PG1"]["id"], demo["PG2"]["id"]
    no_fc = client.put(pc_url, json={"port_chain": {"flow_classifiers": []}})
    assert no_fc.json()["port_chain"]["flow_classifiers"] == []
    body = {"port_chain": {"flow_classifiers": [demo["FC"]["id"]], "port_pair_groups": [pg1]}}
    assert client.put(pc_url, json=body).json()["port_chain"]["port_pair_groups"] == [pg1]
    pg_url = f"{SFC}/port_pair_groups/{pg1}"
    only_pp2 = client.put(pg_url, json={"port_pair_group": {"port_pairs": [demo["PP2"]["id"]]}})
    assert only_pp2.json()["port_pair_group"]["port_pairs"] == [demo["PP2"]["id"]]
    assert model.get(PortPairGroup, pg1).port_pairs == (demo["PP2"]["id"],)
    restore = {"port_pair_group": {"port_pairs": [demo["PP1"]["id"], demo["PP2"]["id"]]}}
    assert client.put(pg_url, json=restore).status_code == 200
    body = {"port_chain": {"port_pair_groups": [pg1, pg2]}}
    assert client.put(pc_url, json=body).json()["port_chain"]["port_pair_groups"] == [pg1, pg2]


def test_bulk_create_is_all_or_nothing(client: TestClient, model: SfcModel) -> None:
    pairs = [
        {"name": f"PP{i}", "ingress": port(model, f"vm{i}:in"), "egress": port(model, f"vm{i}:out")}
        for i in (1, 2)
    ]
    response = client.post(f"{SFC}/port_pairs", json={"port_pairs": pairs})
    assert [p["name"] for p in created(response, "port_pairs")] == ["PP1", "PP2"]
    again = [{**pairs[0], "name": "PP3", "ingress": port(model, "vm3:in")}, pairs[1]]
    again[0]["egress"] = port(model, "vm3:out")
    refused = client.post(f"{SFC}/port_pairs", json={"port_pairs": again})
    assert error(refused, 400)["type"] == "PortPairIngressEgressInUse"
    assert [p.name for p in model.list(PortPair)] == ["PP1", "PP2"]


# --- filters, fields, paging ----------------------------------------------------------------


def test_filters(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    url = f"{SFC}/port_pairs"
    by_name = client.get(url, params={"name": "PP2"}).json()["port_pairs"]
    assert [p["id"] for p in by_name] == [demo["PP2"]["id"]]
    both = client.get(url, params=[("name", "PP1"), ("name", "PP3")]).json()["port_pairs"]
    assert [p["name"] for p in both] == ["PP1", "PP3"]
    by_id = client.get(url, params={"id": demo["PP3"]["id"].upper()}).json()["port_pairs"]
    assert [p["name"] for p in by_id] == ["PP3"]
    assert client.get(url, params={"name": "nope"}).json() == {"port_pairs": []}
    groups = client.get(f"{SFC}/port_pair_groups", params={"port_pairs": demo["PP3"]["id"]})
    assert [g["name"] for g in groups.json()["port_pair_groups"]] == ["PG2"]
    chains = client.get(f"{SFC}/port_chains", params={"chain_id": "1"}).json()["port_chains"]
    assert [c["name"] for c in chains] == ["PC1"]
    unknown = error(client.get(url, params={"colour": "red"}), 400)
    assert "colour" in unknown["message"]
    on_object = error(client.get(url, params={"service_function_parameters": "x"}), 400)
    assert "service_function_parameters" in on_object["message"]


def test_fields_selection(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    listed = client.get(f"{SFC}/port_pairs", params=[("fields", "id"), ("fields", "name")])
    assert listed.json()["port_pairs"][0] == {"id": demo["PP1"]["id"], "name": "PP1"}
    shown = client.get(f"{SFC}/port_chains/{demo['PC1']['id']}?fields=port_pair_groups")
    assert shown.json() == {"port_chain": {"port_pair_groups": demo["PC1"]["port_pair_groups"]}}


def test_paging_and_sorting(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    url = f"{SFC}/port_pairs"
    first = client.get(url, params={"limit": 2}).json()
    assert [p["name"] for p in first["port_pairs"]] == ["PP1", "PP2"]
    assert first["port_pairs_links"][0]["rel"] == "next"
    rest = client.get(url, params={"limit": 2, "marker": demo["PP2"]["id"]}).json()
    assert [p["name"] for p in rest["port_pairs"]] == ["PP3"]
    assert "port_pairs_links" not in rest
    down = client.get(url, params={"sort_key": "name", "sort_dir": "desc"}).json()
    assert [p["name"] for p in down["port_pairs"]] == ["PP3", "PP2", "PP1"]
    assert "limit" in error(client.get(url, params={"limit": "x"}), 400)["message"]
    assert (
        "sort_dir"
        in error(client.get(url, params={"sort_key": "name", "sort_dir": "up"}), 400)["message"]
    )
    assert "sort_key" in error(client.get(url, params={"sort_key": "colour"}), 400)["message"]
    bad_marker = client.get(url, params={"marker": str(uuid.uuid4())})
    assert "marker" in error(bad_marker, 404)["message"]


# --- the model's errors, as networking-sfc maps them ------------------------------------------


def test_not_found_errors(client: TestClient, model: SfcModel) -> None:
    missing = str(uuid.uuid4())
    body = {"port_pair": {"ingress": missing, "egress": port(model, "vm1:out")}}
    refused = error(client.post(f"{SFC}/port_pairs", json=body), 404)
    assert refused["type"] == "PortPairPortNotFound"
    assert missing in refused["message"]
    for collection in ("port_pairs", "port_pair_groups", "flow_classifiers", "port_chains"):
        url = f"{SFC}/{collection}/{missing}"
        assert error(client.get(url), 404)["type"].endswith("NotFound")
        key = collection[:-1]
        assert error(client.put(url, json={key: {"name": "x"}}), 404)["type"].endswith("NotFound")
        assert error(client.delete(url), 404)["type"].endswith("NotFound")
    groups = {"port_pair_group": {"port_pairs": [missing]}}
    assert error(client.post(f"{SFC}/port_pair_groups", json=groups), 404)["type"] == (
        "PortPairNotFound"
    )


def test_conflict_errors(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    in_use = {
        "port_pairs": ("PP1", "PortPairInUse"),
        "port_pair_groups": ("PG1", "PortPairGroupInUse"),
        "flow_classifiers": ("FC", "FlowClassifierInUse"),
    }
    for collection, (name, neutron_type) in in_use.items():
        refused = error(client.delete(f"{SFC}/{collection}/{demo[name]['id']}"), 409)
        assert refused["type"] == neutron_type
        assert demo[name]["id"] in refused["message"]
    again = {"port_chain": {"port_pair_groups": [demo["PG1"]["id"], demo["PG2"]["id"]]}}
    assert error(client.post(f"{SFC}/port_chains", json=again), 409)["type"] == (
        "InvalidPortPairGroups"
    )
    steal = {"port_pair_group": {"port_pairs": [demo["PP1"]["id"]]}}
    assert error(client.post(f"{SFC}/port_pair_groups", json=steal), 409)["type"] == (
        "PortPairInUse"
    )


def test_bad_request_errors(
    client: TestClient, model: SfcModel, demo: dict[str, dict[str, Any]]
) -> None:
    body = {
        "flow_classifier": {
            "protocol": "tcp",
            "destination_port_range_min": 80,
            "destination_port_range_max": 80,
            "source_ip_prefix": "10.0.0.10/32",
            "logical_source_port": port(model, "src:eth0"),
        }
    }
    conflict = error(client.post(f"{SFC}/flow_classifiers", json=body), 400)
    assert conflict["type"] == "FlowClassifierInConflict"
    body["flow_classifier"]["destination_port_range_min"] = 90
    body["flow_classifier"]["destination_port_range_max"] = 81
    assert error(client.post(f"{SFC}/flow_classifiers", json=body), 400)["type"] == (
        "FlowClassifierInvalidPortRange"
    )
    no_groups: dict[str, Any] = {"port_chain": {"port_pair_groups": []}}
    assert error(client.post(f"{SFC}/port_chains", json=no_groups), 400)["type"] == (
        "PortPairGroupNotSpecified"
    )
    same_pair = {"port_pair": {"ingress": demo["PP1"]["ingress"], "egress": demo["PP1"]["egress"]}}
    assert error(client.post(f"{SFC}/port_pairs", json=same_pair), 400)["type"] == (
        "PortPairIngressEgressInUse"
    )
    read_only = {"port_pair": {"ingress": demo["PP1"]["egress"]}}
    url = f"{SFC}/port_pairs/{demo['PP1']['id']}"
    assert "ingress" in error(client.put(url, json=read_only), 400)["message"]


# --- malformed requests: a 4xx naming the field -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"port_pair": {"ingress": "nope", "egress": "x"}}, "ingress"),
        ({"port_pair": {"ingress": 5}}, "ingress"),
        ({"port_pair": {"colour": "red"}}, "colour"),
        ({"port_pair": {"id": str(uuid.uuid4())}}, "id"),
        ({"port_pair": {"name": 5}}, "name"),
        ({"port_pair": {"name": "x" * 300}}, "name"),
        ({"port_pair": {"service_function_parameters": {"weight": "heavy"}}}, "weight"),
        ({"port_pair": {"service_function_parameters": {"wieght": 2}}}, "wieght"),
        ({"port_pair": {"service_function_parameters": []}}, "service_function_parameters"),
        ({"flow_classifier": {"source_ip_prefix": "10.0.0.300/24"}}, "source_ip_prefix"),
        ({"flow_classifier": {"source_ip_prefix": "10.0.0.1"}}, "source_ip_prefix"),
        ({"flow_classifier": {"destination_port_range_min": 70000}}, "destination_port_range_min"),
        ({"flow_classifier": {"source_port_range_max": -1}}, "source_port_range_max"),
        ({"flow_classifier": {"protocol": 6}}, "protocol"),
        ({"flow_classifier": {"ethertype": "IPX"}}, "ethertype"),
        ({"flow_classifier": {"logical_source_port": "p1in"}}, "logical_source_port"),
        ({"flow_classifier": {"l7_parameters": {"url": "/"}}}, "l7_parameters"),
        ({"port_chain": {"port_pair_groups": "x" * 40}}, "port_pair_groups"),
        ({"port_chain": {"port_pair_groups": [1]}}, "port_pair_groups"),
        ({"port_chain": {"chain_id": 70000, "port_pair_groups": []}}, "chain_id"),
        ({"port_chain": {"chain_parameters": {"symmetric": "maybe"}}}, "symmetric"),
        ({"port_pair_group": {"tap_enabled": "sometimes"}}, "tap_enabled"),
        ({"port_pair_group": {"port_pair_group_parameters": {"lb_fields": ["x"]}}}, "lb_fields"),
        ({"service_graph": {"port_chains": {"nope": []}}}, "nope"),
        ({"service_graph": {"port_chains": []}}, "port_chains"),
    ],
)
def test_malformed_bodies_name_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    (key,) = body
    refused = error(client.post(f"{SFC}/{key}s", json=body), 400)
    assert field in refused["message"], refused


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"port_pair": ', "JSON"),
        (b"", "empty"),
        (b"[]", "port_pair"),
        (b'"port_pair"', "port_pair"),
        (b'{"port_pairs": {}}', "port_pairs"),
        (b'{"port_pairs": []}', "port_pairs"),
        (b'{"port_pairs": [1]}', "port_pairs[0]"),
        (b'{"port_pair": []}', "port_pair"),
        (b'{"portpair": {}}', "portpair"),
        (b'{"port_pair": {}, "extra": 1}', "port_pair"),
        (b'{"port_pair": {"name": NaN}}', "NaN"),
        (b'{"port_pair": {"name": "\xff"}}', "JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_malformed_json_names_the_problem(client: TestClient, content: bytes, field: str) -> None:
    response = client.post(
        f"{SFC}/port_pairs", content=content, headers={"Content-Type": "application/json"}
    )
    refused = error(response, 400)
    assert field in refused["message"], refused


def test_update_takes_one_resource(client: TestClient, demo: dict[str, dict[str, Any]]) -> None:
    url = f"{SFC}/port_pairs/{demo['PP1']['id']}"
    refused = error(client.put(url, json={"port_pairs": [{"name": "x"}]}), 400)
    assert "port_pairs" in refused["message"]


def test_huge_body_is_413(backend: CountingBackend) -> None:
    client = TestClient(create_app(backend, max_body=1000))
    body = {"port_pair": {"description": "x" * 2000}}
    assert error(client.post(f"{SFC}/port_pairs", json=body), 413)["type"] == (
        "HTTPRequestEntityTooLarge"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 200

    streamed = client.post(
        f"{SFC}/port_pairs", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert backend.submitted == 0


def test_content_type_must_be_json(client: TestClient) -> None:
    body = json.dumps({"port_pair": {"name": "x"}})
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post(
            f"{SFC}/port_pairs", content=body, headers={"Content-Type": content_type}
        )
        assert "Content-Type" in error(response, 415)["message"]
    charset = client.post(
        f"{SFC}/port_pairs",
        content=body,
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert error(charset, 400)["type"] == "HTTPBadRequest"  # read, then refused by the model


def test_unknown_paths_and_methods(client: TestClient) -> None:
    assert error(client.get("/v2.0/sfc/port_pears"), 404)["type"] == "HTTPNotFound"
    assert error(client.patch(f"{SFC}/port_pairs"), 405)["type"] == "HTTPMethodNotAllowed"
    assert error(client.get(f"{SFC}/port_pairs/not-a-uuid"), 404)["type"] == "PortPairNotFound"


# --- token ---------------------------------------------------------------------------------------


def test_token_checked_on_every_request(backend: CountingBackend) -> None:
    client = TestClient(create_app(backend, token="s3cret"))
    for path in ("/", "/v2.0/extensions", f"{SFC}/port_pairs", "/openapi.json"):
        assert error(client.get(path), 401)["type"] == "HTTPUnauthorized"
        assert client.get(path, headers={"X-Auth-Token": "wrong"}).status_code == 401
        assert client.get(path, headers={"X-Auth-Token": "s3cret"}).status_code == 200
    refused = client.post(f"{SFC}/port_pairs", json={"port_pair": {}})
    assert refused.status_code == 401
    assert backend.submitted == 0


# --- pktchain's own endpoints ------------------------------------------------------------------


def test_status_flows_counters(client: TestClient) -> None:
    status = client.get("/v2.0/pktchain/status").json()
    assert status["node"] == "local"
    assert {p["name"] for p in status["ports"]} == {f"{d}:{n}" for d, n in PORTS}
    assert client.get("/v2.0/pktchain/flows?limit=5").json() == {"flows": []}
    assert "limit" in error(client.get("/v2.0/pktchain/flows?limit=-1"), 400)["message"]
    counters = client.get("/v2.0/pktchain/counters").json()
    assert set(counters) == {"chains", "port_pairs", "ports"}


# --- OpenAPI -------------------------------------------------------------------------------------


def test_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for collection in ("port_pairs", "port_pair_groups", "flow_classifiers", "port_chains"):
        assert set(paths[f"{SFC}/{collection}"]) == {"get", "post"}
        assert set(paths[f"{SFC}/{collection}/{{resource_id}}"]) == {"get", "put", "delete"}
    create = paths[f"{SFC}/port_pairs"]["post"]
    assert set(create["responses"]) >= {"201", "400", "404", "409", "413", "415"}
    schemas = document["components"]["schemas"]
    assert schemas["PortPairCreate"]["additionalProperties"] is False
    assert "ingress" in schemas["PortPairCreate"]["required"]
    assert "HTTPValidationError" not in schemas


SFC_COLLECTIONS = {
    "port_pairs": "PortPair",
    "port_pair_groups": "PortPairGroup",
    "flow_classifiers": "FlowClassifier",
    "port_chains": "PortChain",
    "service_graphs": "ServiceGraph",
}
SFC_OPERATIONS = {
    # action: (method, on an item, success status, error statuses)
    "list": ("get", False, "200", {"400", "401", "404", "413"}),
    "create": ("post", False, "201", {"400", "401", "404", "409", "413", "415"}),
    "show": ("get", True, "200", {"401", "404", "413"}),
    "update": ("put", True, "200", {"400", "401", "404", "409", "413", "415"}),
    "delete": ("delete", True, "204", {"401", "404", "409", "413"}),
}
ROUTER_OPERATIONS = (
    "router_nic_add",
    "router_nic_remove",
    "host_nic_add",
    "host_nic_remove",
    "hosts",
    "port_forward_add",
    "port_forward_remove",
    "vrrp",
    "vrrp_set",
    "vrrp_track",
    "ping",
)
OTHER_OPERATIONS = {
    # (method, path): every status documented (413: a body declared too large, any route)
    ("get", "/"): {"200", "401", "413"},
    ("get", "/v2.0"): {"200", "401", "413"},
    ("get", "/v2.0/extensions"): {"200", "401", "413"},
    ("get", "/v2.0/extensions/{alias}"): {"200", "400", "401", "404", "413"},
    ("get", "/v2.0/networks"): {"200", "401", "413"},
    ("get", "/v2.0/networks/{network_id}"): {"200", "400", "401", "404", "413"},
    ("get", "/v2.0/ports"): {"200", "401", "413"},
    ("get", "/v2.0/ports/{port_id}"): {"200", "400", "401", "404", "413"},
    ("put", "/v2.0/ports/{port_id}"): {"200", "400", "401", "404", "409", "413", "415"},
    ("get", "/v2.0/pktchain/status"): {"200", "401", "413"},
    ("get", "/v2.0/pktchain/flows"): {"200", "400", "401", "413"},
    ("get", "/v2.0/pktchain/counters"): {"200", "401", "413"},
    ("get", "/v2.0/pktchain/router"): {"200", "401", "404", "413"},
    **{
        ("post", f"/v2.0/pktchain/router/{op}"): {"200", "400", "401", "404", "409", "413", "415"}
        for op in ROUTER_OPERATIONS
    },
    ("get", "/v2.0/pktchain/functions"): {"200", "401", "404", "413"},
    ("post", "/v2.0/pktchain/functions"): {"201", "400", "401", "404", "409", "413", "415"},
    ("post", "/v2.0/pktchain/trace"): {"200", "400", "401", "404", "409", "413", "415"},
    ("get", "/v2.0/pktchain/functions/{name}"): {"200", "400", "401", "404", "413"},
    ("put", "/v2.0/pktchain/functions/{name}"): {"200", "400", "401", "404", "413", "415"},
    ("delete", "/v2.0/pktchain/functions/{name}"): {"204", "400", "401", "404", "409", "413"},
}


def wrapper(key: str, schema: str, *, many: bool = False, partial: bool = False) -> dict[str, Any]:
    """A networking-sfc body: one member, `key`, holding the resource (or a list of
    them, at least one in a body sent or a resource created); `partial`: as shown with
    ``fields=``, the resource's own schema or its `...Fields` one, which requires nothing."""
    ref: dict[str, Any] = {"$ref": f"#/components/schemas/{schema}"}
    if partial:
        ref = {"anyOf": [ref, {"$ref": f"#/components/schemas/{schema}Fields"}]}
    inner: dict[str, Any] = ref
    if many:
        inner = {"type": "array", "items": ref} | ({} if partial else {"minItems": 1})
    return {
        "type": "object",
        "properties": {key: inner},
        "required": [key],
        "additionalProperties": False,
    }


def json_schema(part: dict[str, Any]) -> Any:
    return part["content"]["application/json"]["schema"]


def refs(node: object) -> set[str]:
    """Every $ref in a part of the document."""
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(value) for value in node))
    return set()


@pytest.fixture
def openapi(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_openapi_sfc_collections(openapi: dict[str, Any]) -> None:
    """Every networking-sfc collection has its five operations, with the bodies,
    parameters and statuses networking-sfc has."""
    paths = openapi["paths"]
    for collection, schema in SFC_COLLECTIONS.items():
        singular = collection[:-1]
        base, item = paths[f"{SFC}/{collection}"], paths[f"{SFC}/{collection}/{{resource_id}}"]
        assert set(base) == {"get", "post"}
        assert set(item) == {"get", "put", "delete"}
        for action, (method, on_item, success, errors) in SFC_OPERATIONS.items():
            operation = (item if on_item else base)[method]
            assert operation["operationId"] == f"{action}_{collection}"
            assert operation["tags"] == [collection]
            assert set(operation["responses"]) == {success, *errors}, (collection, action)
            for status in errors:
                assert json_schema(operation["responses"][status]) == {
                    "$ref": "#/components/schemas/NeutronError"
                }
            if on_item:
                assert operation["parameters"][0]["name"] == "resource_id"
                assert operation["parameters"][0]["in"] == "path"
        one, many = wrapper(singular, schema), wrapper(collection, schema, many=True)
        listed, create = base["get"], base["post"]
        show, update, delete = item["get"], item["put"], item["delete"]
        page = json_schema(listed["responses"]["200"])
        assert page["properties"].pop(f"{collection}_links")["type"] == "array"
        assert page == wrapper(collection, schema, many=True, partial=True)
        names = [p["name"] for p in listed["parameters"]]
        assert names[:2] == ["id", "name"]  # then a filter per attribute that holds no object
        assert names[-6:] == ["fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir"]
        assert set(openapi["components"]["schemas"][f"{schema}Fields"]) >= {"properties"}
        assert "required" not in openapi["components"]["schemas"][f"{schema}Fields"]
        assert create["requestBody"]["required"] is True
        assert json_schema(create["requestBody"]) == {
            "oneOf": [
                wrapper(singular, f"{schema}Create"),
                wrapper(collection, f"{schema}Create", many=True),
            ]
        }
        assert json_schema(create["responses"]["201"]) == {"oneOf": [one, many]}
        assert json_schema(show["responses"]["200"]) == wrapper(singular, schema, partial=True)
        assert [p["name"] for p in show["parameters"]] == ["resource_id", "fields"]
        assert update["requestBody"]["required"] is True
        assert json_schema(update["requestBody"]) == wrapper(singular, f"{schema}Update")
        assert json_schema(update["responses"]["200"]) == one
        assert "content" not in delete["responses"]["204"]


def test_openapi_other_operations(openapi: dict[str, Any]) -> None:
    """The Neutron and pktchain operations and their statuses; bodies where they take one."""
    operations = {
        (method, path): operation
        for path, item in openapi["paths"].items()
        if not path.startswith(f"{SFC}/")
        for method, operation in item.items()
    }
    assert {key: set(op["responses"]) for key, op in operations.items()} == OTHER_OPERATIONS
    with_body = {key for key, operation in operations.items() if "requestBody" in operation}
    assert with_body == {
        ("put", "/v2.0/ports/{port_id}"),
        *(("post", f"/v2.0/pktchain/router/{op}") for op in ROUTER_OPERATIONS),
        ("post", "/v2.0/pktchain/functions"),
        ("put", "/v2.0/pktchain/functions/{name}"),
        ("post", "/v2.0/pktchain/trace"),
    }
    port_update = operations["put", "/v2.0/ports/{port_id}"]
    assert json_schema(port_update["requestBody"]) == wrapper("port", "PortUpdate")
    assert json_schema(port_update["responses"]["200"]) == wrapper("port", "NeutronPort")
    for key in with_body - {("put", "/v2.0/ports/{port_id}")}:
        body = operations[key]["requestBody"]
        assert body["required"] is True
        schema = json_schema(body)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
    forward = json_schema(
        operations["post", "/v2.0/pktchain/router/port_forward_add"]["requestBody"]
    )
    assert set(forward["required"]) == {"proto", "external_port", "inside_ip", "inside_port"}
    function = json_schema(operations["post", "/v2.0/pktchain/functions"]["requestBody"])
    assert function["required"] == ["function"]
    assert function["properties"]["function"]["required"] == ["name", "kind"]


def test_openapi_errors_are_neutrons(openapi: dict[str, Any]) -> None:
    """Every operation may answer 401 (the token), none a 422 (validation errors are
    Neutron's 400), and every $ref names a schema of the document."""
    schemas = openapi["components"]["schemas"]
    assert {"HTTPValidationError", "ValidationError"}.isdisjoint(schemas)
    assert set(schemas["NeutronError"]["required"]) == {"NeutronError"}
    for item in openapi["paths"].values():
        for operation in item.values():
            assert "401" in operation["responses"]
            assert "422" not in operation["responses"]
    prefix = "#/components/schemas/"
    for ref in refs(openapi):
        assert ref.startswith(prefix)
        assert ref.removeprefix(prefix) in schemas, ref


# --- the server ---------------------------------------------------------------------------


def test_server_serves_on_loopback(backend: CountingBackend) -> None:
    with ApiServer(create_app(backend), port=0) as server:
        assert server.port != 0
        response = httpx.get(f"{server.url}/v2.0/extensions", timeout=5)
        assert response.status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/", timeout=2)


def test_server_refuses_other_addresses_without_token(backend: CountingBackend) -> None:
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.org"):
        with pytest.raises(ApiServerError, match="token"):
            ApiServer(create_app(backend), host=host, port=0).start()


def test_server_reports_address_in_use(backend: CountingBackend) -> None:
    with ApiServer(create_app(backend), port=0) as first, pytest.raises(OSError):
        ApiServer(create_app(backend), port=first.port).start()
