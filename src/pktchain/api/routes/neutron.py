"""The Neutron routes: what clients look for on any Neutron v2.0 server.

``GET /`` (the versions), ``GET /v2.0`` (its resources), the extensions
(networking-sfc's, Neutron's port-security and allowed-address-pairs, and
pktchain's own), the networks (one: the node's switch, plus any network its
ports name) and the ports (the model's: the node registers them, with their
MAC and fixed IPs). The openstack client and keystoneauth read these before
they touch a networking-sfc collection. A port's update (``PUT
/v2.0/ports/{id}``) changes its name, description, ``port_security_enabled``
and ``allowed_address_pairs`` (``openstack port set --allowed-address``,
``--disable-port-security``); the rest is the node's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.concurrency import run_in_threadpool

from pktchain.api import schemas
from pktchain.api.backend import Backend
from pktchain.api.bodies import json_body, unwrap
from pktchain.api.errors import ApiError, bad_request, error_responses
from pktchain.api.listing import filter_records, next_link, page, select_fields, split_query
from pktchain.api.routes import API_VERSION
from pktchain.api.routes.sfc import SFC_KINDS
from pktchain.sfc.model import SfcModel
from pktchain.sfc.resources import Port, ResourceKind

__all__ = ["DEFAULT_NETWORK_ID", "EXTENSIONS", "PORT_UPDATABLE", "neutron_routes", "port_schemas"]

DEFAULT_NETWORK_ID = "8a4f9b1e-3c57-5d2e-9f60-706b74636861"
"""The one network of a node, for ports registered without a network."""

_UPDATED = "2015-10-05T10:00:00-00:00"

EXTENSIONS: tuple[dict[str, Any], ...] = (
    {
        "alias": "sfc",
        "name": "Service Function Chaining",
        "description": "Service Function Chain extension.",
    },
    {
        "alias": "flow_classifier",
        "name": "Flow Classifier",
        "description": "Flow Classifier Extension.",
    },
    {
        "alias": "sfc_service_graph",
        "name": "Service Graph",
        "description": "Service Graph extension.",
    },
    {
        "alias": "sfc_tap",
        "name": "Tap SFC",
        "description": "Tap SFC extension: port pair groups that receive a copy of the traffic.",
    },
    {
        "alias": "port-security",
        "name": "Port Security",
        "description": "Provides port security: a port sends only from its own addresses.",
    },
    {
        "alias": "allowed-address-pairs",
        "name": "Allowed Address Pairs",
        "description": "Provides allowed address pairs: more addresses a port may send from.",
    },
    {
        "alias": "pktchain",
        "name": "pktchain",
        "description": "pktchain node status, flow table and counters.",
    },
)
"""networking-sfc's extensions and Neutron's port security ones, as ``GET
/v2.0/extensions`` lists them."""

PORT_UPDATABLE = frozenset(
    ("name", "description", "port_security_enabled", "allowed_address_pairs")
)
"""What an update of a port may change; its MAC, fixed IPs and attachment are
declared where the node attaches it."""

_REF_TEMPLATE = "#/components/schemas/{model}"


def _port_record(port: Port) -> dict[str, Any]:
    record = port.to_dict()
    record["network_id"] = port.network_id or DEFAULT_NETWORK_ID
    record["status"] = "ACTIVE" if port.node_port else "DOWN"
    record["admin_state_up"] = True
    record["security_groups"] = []
    record["tags"] = []
    return record


def _network_record(network_id: str) -> dict[str, Any]:
    return {
        "id": network_id,
        "name": "pktchain",
        "description": "The node's switch.",
        "project_id": "",
        "tenant_id": "",
        "status": "ACTIVE",
        "admin_state_up": True,
        "subnets": [],
        "shared": True,
        "mtu": 1500,
        "router:external": False,
        "tags": [],
    }


def _network_ids(model: SfcModel) -> list[str]:
    ids = [DEFAULT_NETWORK_ID]
    for port in model.state.table(Port).values():
        if port.network_id and port.network_id not in ids:
            ids.append(port.network_id)
    return ids


def _extension_record(extension: Mapping[str, Any]) -> dict[str, Any]:
    return {**extension, "updated": _UPDATED, "links": []}


def port_schemas() -> dict[str, Any]:
    """The JSON schemas, by name, of the port bodies the port routes declare by ``$ref``."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (schemas.PortUpdate, "validation"),
        (schemas.NeutronPort, "serialization"),
    ]
    _, definitions = models_json_schema(models, ref_template=_REF_TEMPLATE)
    found: dict[str, Any] = definitions.get("$defs", {})
    return found


def _wrapped(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"port": {"$ref": _REF_TEMPLATE.format(model=model.__name__)}},
        "required": ["port"],
        "additionalProperties": False,
    }


def neutron_routes(backend: Backend, max_body: int = 1 << 20) -> APIRouter:
    """Versions, extensions, networks and ports, over `backend`'s model."""
    router = APIRouter(tags=["neutron"])
    base = f"/{API_VERSION}"

    @router.get("/", summary="API versions")
    async def versions(request: Request) -> dict[str, Any]:
        href = str(request.base_url).rstrip("/") + f"{base}/"
        return {
            "versions": [
                {"id": API_VERSION, "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}
            ]
        }

    @router.get(base, summary="Resources of API v2.0")
    @router.get(f"{base}/", include_in_schema=False)
    async def resources(request: Request) -> dict[str, Any]:
        root = str(request.base_url).rstrip("/") + base
        collections = ["networks", "ports"] + [f"sfc/{kind.collection}" for kind in SFC_KINDS]
        return {
            # Not in Neutron's answer: keystoneauth needs it to accept an
            # endpoint that ends in /v2.0 (openstack --os-endpoint .../v2.0).
            "version": {
                "id": API_VERSION,
                "status": "CURRENT",
                "links": [{"href": f"{root}/", "rel": "self"}],
            },
            "resources": [
                {
                    "name": collection.rsplit("/", 1)[-1][:-1],
                    "collection": collection.rsplit("/", 1)[-1],
                    "links": [{"href": f"{root}/{collection}", "rel": "self"}],
                }
                for collection in collections
            ],
        }

    @router.get(f"{base}/extensions", summary="API extensions")
    async def extensions() -> dict[str, Any]:
        return {"extensions": [_extension_record(e) for e in EXTENSIONS]}

    @router.get(
        f"{base}/extensions/{{alias}}",
        summary="One API extension",
        responses=error_responses(400, 404),
    )
    async def extension(alias: str) -> dict[str, Any]:
        for candidate in EXTENSIONS:
            if candidate["alias"] == alias:
                return {"extension": _extension_record(candidate)}
        raise ApiError(404, "HTTPNotFound", f"Extension {alias} not found.")

    @router.get(f"{base}/networks", summary="Networks (the node's switch)")
    async def networks(request: Request) -> dict[str, Any]:
        filters, controls = split_query(request)
        records = [_network_record(i) for i in _network_ids(backend.model)]
        records = filter_records(records, filters, "network")
        listed, _more = page(records, controls, set(records[0]) if records else set())
        fields = controls.get("fields")
        return {"networks": [select_fields(record, fields) for record in listed]}

    @router.get(
        f"{base}/networks/{{network_id}}",
        summary="One network",
        responses=error_responses(400, 404),
    )
    async def network(network_id: str, request: Request) -> dict[str, Any]:
        if network_id not in _network_ids(backend.model):
            raise ApiError(404, "NetworkNotFound", f"Network {network_id} could not be found.")
        _filters, controls = split_query(request)
        return {"network": select_fields(_network_record(network_id), controls.get("fields"))}

    _add_port_routes(router, backend, max_body)
    return router


def _add_port_routes(router: APIRouter, backend: Backend, max_body: int) -> None:
    base = f"/{API_VERSION}/ports"
    model_keys = {"id", "name", "description", "project_id", "tenant_id", "mac_address"}
    model_keys |= {"device_id", "device_owner", "node_port", "binding:host_id"}

    @router.get(base, summary="Ports (the node registers them)")
    async def ports(request: Request) -> Response:
        filters, controls = split_query(request)
        in_model = {k: v for k, v in filters.items() if k in model_keys}
        others = {k: v for k, v in filters.items() if k not in model_keys}
        found = backend.model.list(Port, in_model)
        records = filter_records([_port_record(p) for p in found], others, "port")
        shown = set(records[0]) if records else set()
        listed, more = page(records, controls, shown)
        body: dict[str, Any] = {"ports": [select_fields(r, controls.get("fields")) for r in listed]}
        if more:
            body.update(next_link(request, "ports", listed))
        return JSONResponse(body)

    @router.get(f"{base}/{{port_id}}", summary="One port", responses=error_responses(400, 404))
    async def port(port_id: str, request: Request) -> dict[str, Any]:
        _filters, controls = split_query(request)
        found = backend.model.get(Port, port_id)
        return {"port": select_fields(_port_record(found), controls.get("fields"))}

    @router.put(
        f"{base}/{{port_id}}",
        summary="Update a port: its name, description, port security and allowed address pairs",
        responses={
            200: {
                "description": "Updated",
                "content": {"application/json": {"schema": _wrapped(schemas.NeutronPort)}},
            },
            **error_responses(400, 404, 409, 413, 415),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _wrapped(schemas.PortUpdate)}},
            }
        },
    )
    async def update_port(port_id: str, request: Request) -> Response:
        body = await json_body(request, max_body)
        (changes,) = unwrap(body, ResourceKind.PORT, bulk=False)
        refused = sorted(key for key in changes if key not in PORT_UPDATABLE)
        if refused:
            raise bad_request(
                f"Cannot update {', '.join(refused)} of a port: the node that attaches it "
                f"declares it; an update may change {', '.join(sorted(PORT_UPDATABLE))}."
            )
        model = backend.model
        model.get(Port, port_id)  # a 404 before anything is submitted
        updated = await run_in_threadpool(
            backend.change, lambda: model.update(Port, port_id, changes)
        )
        return JSONResponse({"port": _port_record(updated)})
