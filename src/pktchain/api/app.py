"""The REST API: networking-sfc's resources as a Neutron v2.0 server serves them.

`create_app(backend)` builds a FastAPI application with

- ``/v2.0/sfc/{port_pairs,port_pair_groups,flow_classifiers,port_chains,service_graphs}``
  and ``/{id}`` under each: POST 201, GET 200, PUT 200, DELETE 204, bodies
  wrapped as ``{"port_pair": {...}}`` / ``{"port_pairs": [...]}`` (a POST
  of a list creates all or none); lists take filters as query parameters
  (``name=A&name=B``), ``fields=`` selection, ``limit``/``marker``/
  ``page_reverse`` and ``sort_key``/``sort_dir``, as Neutron's API layer does;
- what clients look for on a Neutron server: ``GET /`` (versions),
  ``GET /v2.0``, ``/v2.0/extensions``, ``/v2.0/networks`` and ``/v2.0/ports``
  (the model's ports, read-only);
- pktchain's own: ``/v2.0/pktchain/status``, ``/flows``, ``/counters``;
- the OpenAPI document at ``/openapi.json``.

Requests are read as JSON and handed to the model unchanged, so its
validation is the one judge: its errors become ``{"NeutronError": {"type",
"message", "detail"}}`` with its status (400, 404, 409). What the model never
sees is checked here: content type (415), body size (413), JSON syntax and
the wrapper key (400), the token (401). Changes run through
`Backend.submit`, in a worker thread, so the server keeps answering reads
while the dataplane applies them.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pktchain.api import schemas
from pktchain.api.backend import Backend
from pktchain.functions.sdk.schema import ConfigError
from pktchain.sfc.errors import SfcError
from pktchain.sfc.model import SfcModel
from pktchain.sfc.resources import Port, Resource, ResourceKind

__all__ = ["DEFAULT_NETWORK_ID", "EXTENSIONS", "SFC_KINDS", "ApiError", "create_app"]

API_VERSION = "v2.0"

SFC_KINDS = (
    ResourceKind.PORT_PAIR,
    ResourceKind.PORT_PAIR_GROUP,
    ResourceKind.FLOW_CLASSIFIER,
    ResourceKind.PORT_CHAIN,
    ResourceKind.SERVICE_GRAPH,
)
"""The kinds served under ``/v2.0/sfc/``."""

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
        "alias": "pktchain",
        "name": "pktchain",
        "description": "pktchain node status, flow table and counters.",
    },
)
"""networking-sfc's extensions, as ``GET /v2.0/extensions`` lists them."""

_LIST_CONTROLS = ("fields", "limit", "marker", "page_reverse", "sort_key", "sort_dir")
"""Query parameters of a list that are not filters (Neutron's api/v2/base.py)."""

_JSON_TYPES = ("application/json",)


class ApiError(Exception):
    """A request refused before it reaches the model."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def to_neutron(self) -> dict[str, dict[str, str]]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "HTTPBadRequest", message)


# --- reading requests ------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


async def _json_body(request: Request, max_body: int) -> object:
    """The request's JSON body, or an ApiError naming what is wrong with it."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in _JSON_TYPES:
        raise ApiError(
            415,
            "HTTPUnsupportedMediaType",
            f"Content-Type '{media or '(none)'}' is not supported: send application/json.",
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(max_body)
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_body:
            raise _too_large(max_body)
    if not data.strip():
        raise _bad_request("The request body is empty: a JSON object is required.")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise _bad_request(f"The request body is not valid JSON: {err}.") from None


def _too_large(max_body: int) -> ApiError:
    return ApiError(413, "HTTPRequestEntityTooLarge", f"The request body exceeds {max_body} bytes.")


def _unwrap(body: object, kind: ResourceKind, *, bulk: bool) -> list[Mapping[str, object]]:
    """The resource bodies inside ``{"port_pair": {...}}`` (or, when `bulk`,
    ``{"port_pairs": [...]}``)."""
    singular, plural = kind.value, kind.collection
    accepted = f"'{singular}'" + (f" or '{plural}'" if bulk else "")
    if not isinstance(body, dict) or len(body) != 1:
        raise _bad_request(f"The request body must be an object with one key, {accepted}.")
    ((key, inner),) = body.items()
    if key == singular:
        if not isinstance(inner, dict):
            raise _bad_request(f"Invalid input for {singular}: expected an object.")
        return [inner]
    if bulk and key == plural:
        if not isinstance(inner, list) or not inner:
            raise _bad_request(f"Invalid input for {plural}: expected a non-empty list.")
        for index, item in enumerate(inner):
            if not isinstance(item, dict):
                raise _bad_request(f"Invalid input for {plural}[{index}]: expected an object.")
        return inner
    raise _bad_request(f"Unrecognized key '{key}' in the request body: expected {accepted}.")


def _query(request: Request) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The list filters and the list controls (fields, paging, sorting) of a query."""
    filters: dict[str, list[str]] = {}
    controls: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        target = controls if key in _LIST_CONTROLS else filters
        target.setdefault(key, []).append(value)
    return filters, controls


def _one_value(controls: Mapping[str, list[str]], key: str) -> str | None:
    values = controls.get(key)
    if not values:
        return None
    if len(values) > 1:
        raise _bad_request(f"Invalid input for {key}: given {len(values)} times.")
    return values[0]


def _select(record: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Neutron's ``fields=``: only the attributes asked for (unknown ones are ignored)."""
    if not fields:
        return record
    return {key: value for key, value in record.items() if key in fields}


def _record_key(key: str, record: Mapping[str, Any]) -> tuple[int, Any]:
    value = record.get(key)
    if isinstance(value, dict | list):
        raise _bad_request(f"Invalid input for sort_key: cannot sort on '{key}'.")
    return (0, value) if value is not None else (1, 0)


def _page(
    records: list[dict[str, Any]], controls: Mapping[str, list[str]], shown: set[str]
) -> tuple[list[dict[str, Any]], bool]:
    """Sort and page records as Neutron does; also whether more follow the page."""
    sort_keys = controls.get("sort_key", [])
    sort_dirs = controls.get("sort_dir", [])
    if len(sort_dirs) not in (0, len(sort_keys)):
        raise _bad_request("Invalid input for sort_dir: give one per sort_key.")
    for key in sort_keys:
        if key not in shown:
            raise _bad_request(f"Invalid input for sort_key: unknown attribute '{key}'.")
    directions = sort_dirs or ["asc"] * len(sort_keys)
    for direction in directions:
        if direction not in ("asc", "desc"):
            raise _bad_request(f"Invalid input for sort_dir: '{direction}' is not asc or desc.")
    for key, direction in reversed(list(zip(sort_keys, directions, strict=True))):
        records.sort(key=functools.partial(_record_key, key), reverse=direction == "desc")
    reverse = (_one_value(controls, "page_reverse") or "false").lower()
    if reverse not in ("true", "false"):
        raise _bad_request("Invalid input for page_reverse: expected true or false.")
    if reverse == "true":
        records.reverse()
    marker = _one_value(controls, "marker")
    if marker is not None:
        ids = [record["id"] for record in records]
        if marker not in ids:
            raise ApiError(404, "HTTPNotFound", f"Invalid input for marker: {marker} not found.")
        records = records[ids.index(marker) + 1 :]
    limit_text = _one_value(controls, "limit")
    if limit_text is None:
        return records, False
    if not limit_text.isdigit():
        raise _bad_request(f"Invalid input for limit: '{limit_text}' is not an integer >= 0.")
    limit = int(limit_text)
    if limit == 0 or len(records) <= limit:
        return records, False
    return records[:limit], True


# --- responses ------------------------------------------------------------------------


def _error_response(status: int, body: dict[str, dict[str, str]]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def _port_record(port: Port) -> dict[str, Any]:
    record = port.to_dict()
    record["network_id"] = port.network_id or DEFAULT_NETWORK_ID
    record["status"] = "ACTIVE" if port.node_port else "DOWN"
    record["admin_state_up"] = True
    record["binding:host_id"] = port.device_id
    record["security_groups"] = []
    record["allowed_address_pairs"] = []
    record["port_security_enabled"] = False
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


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _filter_records(
    records: list[dict[str, Any]], filters: Mapping[str, list[str]], label: str
) -> list[dict[str, Any]]:
    """Filter Neutron records the model does not hold (networks, port extras)."""
    for key in filters:
        if records and key not in records[0]:
            raise _bad_request(f"Invalid input for {key}: unrecognized attribute of {label}.")
    return [
        record
        for record in records
        if all(_text(record.get(key)) in wanted for key, wanted in filters.items())
    ]


def _links(request: Request, collection: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "marker"]
    query.append(("marker", records[-1]["id"]))
    href = str(request.url.include_query_params())
    href = href.split("?", 1)[0] + "?" + "&".join(f"{k}={v}" for k, v in query)
    return {f"{collection}_links": [{"rel": "next", "href": href}]}


# --- the application ------------------------------------------------------------------


def create_app(backend: Backend, *, token: str | None = None, max_body: int = 1 << 20) -> FastAPI:
    """The API over `backend`; with a `token`, every request must carry it in
    ``X-Auth-Token``. Request bodies over `max_body` bytes get a 413."""
    app = FastAPI(
        title="pktchain",
        version="2.0",
        description="networking-sfc-compatible service function chaining API of pktchain.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.token_required = token is not None
    _install_errors(app)
    if token is not None:
        _install_token_check(app, token)
    _add_neutron_routes(app, backend)
    for kind in SFC_KINDS:
        _add_sfc_routes(app, backend, kind, max_body)
    _add_pktchain_routes(app, backend, max_body)
    _install_openapi(app)
    return app


def _install_errors(app: FastAPI) -> None:
    async def sfc_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, SfcError):  # pragma: no cover - registered for SfcError
            raise exc
        return _error_response(exc.status, exc.to_neutron())

    async def api_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError
            raise exc
        return _error_response(exc.status, exc.to_neutron())

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
            raise exc
        types = {404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}
        error = ApiError(exc.status_code, types.get(exc.status_code, "HTTPError"), exc.detail)
        if exc.status_code == 404:
            error.message = f"The resource could not be found: {request.url.path}."
        elif exc.status_code == 405:
            error.message = f"Method {request.method} is not allowed on {request.url.path}."
        response = _error_response(error.status, error.to_neutron())
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, RequestValidationError):  # pragma: no cover
            raise exc
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        error = _bad_request(f"Invalid input: {problems}.")
        return _error_response(error.status, error.to_neutron())

    app.add_exception_handler(SfcError, sfc_error)
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on the request's path (one route per method here)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _child = route.matches(request.scope)
        if match is not Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def _install_token_check(app: FastAPI, token: str) -> None:
    expected = token.encode()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Callable[[Request], Any]) -> Response:
        given = request.headers.get("x-auth-token", "").encode()
        if not hmac.compare_digest(given, expected):
            error = ApiError(
                401,
                "HTTPUnauthorized",
                "Authentication required: a valid X-Auth-Token header is missing.",
            )
            return _error_response(error.status, error.to_neutron())
        response: Response = await call_next(request)
        return response


def _add_neutron_routes(app: FastAPI, backend: Backend) -> None:
    base = f"/{API_VERSION}"

    @app.get("/", tags=["neutron"], summary="API versions")
    async def versions(request: Request) -> dict[str, Any]:
        href = str(request.base_url).rstrip("/") + f"{base}/"
        return {
            "versions": [
                {"id": API_VERSION, "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}
            ]
        }

    @app.get(base, tags=["neutron"], summary="Resources of API v2.0")
    @app.get(f"{base}/", include_in_schema=False)
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

    def extension_record(extension: Mapping[str, Any]) -> dict[str, Any]:
        return {**extension, "updated": _UPDATED, "links": []}

    @app.get(f"{base}/extensions", tags=["neutron"], summary="API extensions")
    async def extensions() -> dict[str, Any]:
        return {"extensions": [extension_record(e) for e in EXTENSIONS]}

    @app.get(f"{base}/extensions/{{alias}}", tags=["neutron"], summary="One API extension")
    async def extension(alias: str) -> dict[str, Any]:
        for candidate in EXTENSIONS:
            if candidate["alias"] == alias:
                return {"extension": extension_record(candidate)}
        raise ApiError(404, "HTTPNotFound", f"Extension {alias} not found.")

    def network_ids(model: SfcModel) -> list[str]:
        ids = [DEFAULT_NETWORK_ID]
        for port in model.state.table(Port).values():
            if port.network_id and port.network_id not in ids:
                ids.append(port.network_id)
        return ids

    @app.get(f"{base}/networks", tags=["neutron"], summary="Networks (the node's switch)")
    async def networks(request: Request) -> dict[str, Any]:
        filters, controls = _query(request)
        records = [_network_record(i) for i in network_ids(backend.model)]
        records = _filter_records(records, filters, "network")
        page, _more = _page(records, controls, set(records[0]) if records else set())
        fields = controls.get("fields")
        return {"networks": [_select(record, fields) for record in page]}

    @app.get(f"{base}/networks/{{network_id}}", tags=["neutron"], summary="One network")
    async def network(network_id: str, request: Request) -> dict[str, Any]:
        if network_id not in network_ids(backend.model):
            raise ApiError(404, "NetworkNotFound", f"Network {network_id} could not be found.")
        _filters, controls = _query(request)
        return {"network": _select(_network_record(network_id), controls.get("fields"))}

    _add_port_routes(app, backend)


def _add_port_routes(app: FastAPI, backend: Backend) -> None:
    base = f"/{API_VERSION}/ports"
    model_keys = {"id", "name", "description", "project_id", "tenant_id", "mac_address"}
    model_keys |= {"device_id", "device_owner", "node_port"}

    @app.get(base, tags=["neutron"], summary="Ports (read-only: the node registers them)")
    async def ports(request: Request) -> Response:
        filters, controls = _query(request)
        in_model = {k: v for k, v in filters.items() if k in model_keys}
        others = {k: v for k, v in filters.items() if k not in model_keys}
        found = backend.model.list(Port, in_model)
        records = _filter_records([_port_record(p) for p in found], others, "port")
        shown = set(records[0]) if records else set()
        page, more = _page(records, controls, shown)
        body: dict[str, Any] = {"ports": [_select(r, controls.get("fields")) for r in page]}
        if more:
            body.update(_links(request, "ports", page))
        return JSONResponse(body)

    @app.get(f"{base}/{{port_id}}", tags=["neutron"], summary="One port")
    async def port(port_id: str, request: Request) -> dict[str, Any]:
        _filters, controls = _query(request)
        found = backend.model.get(Port, port_id)
        return {"port": _select(_port_record(found), controls.get("fields"))}


def _add_sfc_routes(app: FastAPI, backend: Backend, kind: ResourceKind, max_body: int) -> None:
    cls: type[Resource] = kind.resource_class
    singular, collection = kind.value, kind.collection
    base = f"/{API_VERSION}/sfc/{collection}"
    item = f"{base}/{{resource_id}}"
    tags = [collection]
    model = backend.model

    async def list_resources(request: Request) -> Response:
        filters, controls = _query(request)
        found = model.list(cls, {key: values for key, values in filters.items()})
        records = [resource.to_dict() for resource in found]
        shown = set(records[0]) if records else set()
        page, more = _page(records, controls, shown)
        body: dict[str, Any] = {collection: [_select(r, controls.get("fields")) for r in page]}
        if more:
            body.update(_links(request, collection, page))
        return JSONResponse(body)

    async def create_resources(request: Request) -> Response:
        body = await _json_body(request, max_body)
        bulk = isinstance(body, dict) and collection in body
        items = _unwrap(body, kind, bulk=True)

        def create_all() -> list[Resource]:
            with model.transaction() as txn:
                return [txn.create(cls, item) for item in items]

        created = await run_in_threadpool(backend.submit, create_all)
        if bulk:
            return JSONResponse({collection: [r.to_dict() for r in created]}, status_code=201)
        return JSONResponse({singular: created[0].to_dict()}, status_code=201)

    async def show_resource(resource_id: str, request: Request) -> Response:
        _filters, controls = _query(request)
        found = model.get(cls, resource_id)
        return JSONResponse({singular: _select(found.to_dict(), controls.get("fields"))})

    async def update_resource(resource_id: str, request: Request) -> Response:
        body = await _json_body(request, max_body)
        (changes,) = _unwrap(body, kind, bulk=False)
        model.get(cls, resource_id)  # a 404 before anything is submitted
        updated = await run_in_threadpool(
            backend.submit, lambda: model.update(cls, resource_id, changes)
        )
        return JSONResponse({singular: updated.to_dict()})

    async def delete_resource(resource_id: str) -> Response:
        model.get(cls, resource_id)
        await run_in_threadpool(backend.submit, lambda: model.delete(cls, resource_id))
        return Response(status_code=204)

    label = kind.label.lower()
    routes: list[tuple[str, str, str, Callable[..., Any], int, str]] = [
        ("list", base, "GET", list_resources, 200, f"List {label}s"),
        ("create", base, "POST", create_resources, 201, f"Create {label}(s)"),
        ("show", item, "GET", show_resource, 200, f"Show a {label}"),
        ("update", item, "PUT", update_resource, 200, f"Update a {label}"),
        ("delete", item, "DELETE", delete_resource, 204, f"Delete a {label}"),
    ]
    for action, path, method, endpoint, status, summary in routes:
        app.add_api_route(
            path,
            endpoint,
            methods=[method],
            status_code=status,
            tags=list(tags),
            summary=summary,
            operation_id=f"{action}_{collection}",
            response_class=JSONResponse,
        )


def _add_pktchain_routes(app: FastAPI, backend: Backend, max_body: int) -> None:
    base = f"/{API_VERSION}/pktchain"

    @app.get(
        f"{base}/router",
        tags=["pktchain"],
        summary="The router's tables: interfaces, hosts, ARP, NAT, port forwards, counters",
    )
    async def router_tables() -> dict[str, Any]:
        tables = await run_in_threadpool(backend.router_tables)
        if tables is None:
            raise ApiError(404, "HTTPNotFound", "This node runs no router.")
        return {"router": tables}

    @app.post(
        f"{base}/router/{{op}}",
        tags=["pktchain"],
        summary="A router operation, with the messenger's name and arguments",
    )
    async def router_operation(op: str, request: Request) -> dict[str, Any]:
        body = await _json_body(request, max_body)
        if not isinstance(body, dict):
            raise _bad_request("The body must be an object of the operation's arguments.")
        return {"result": await run_in_threadpool(_router_operation, backend, op, body)}

    @app.get(f"{base}/functions", tags=["pktchain"], summary="The node's native functions")
    async def list_functions() -> dict[str, Any]:
        return {"functions": _functions(await run_in_threadpool(backend.functions))}

    @app.get(f"{base}/functions/{{name}}", tags=["pktchain"], summary="One native function")
    async def show_function(name: str) -> dict[str, Any]:
        return {"function": _function(await run_in_threadpool(backend.functions), name)}

    @app.post(
        f"{base}/functions",
        tags=["pktchain"],
        status_code=201,
        summary="Plug in a function: a built-in kind or package.module:ClassName, its config",
    )
    async def add_function(request: Request) -> dict[str, Any]:
        from pktchain.node.function_file import spec_from_mapping

        _functions(await run_in_threadpool(backend.functions))  # 404 without a dataplane
        body = _member(await _json_body(request, max_body), "function")
        try:
            spec = spec_from_mapping(body)
        except ConfigError as exc:
            raise _config_error(exc) from None
        try:
            status = await run_in_threadpool(backend.add_function, spec)
        except ValueError as exc:
            raise ApiError(409, "FunctionInUse", str(exc)) from None
        return {"function": status}

    @app.put(
        f"{base}/functions/{{name}}",
        tags=["pktchain"],
        summary="Reconfigure a running function (functions that allow it)",
    )
    async def reconfigure_function(name: str, request: Request) -> dict[str, Any]:
        _function(await run_in_threadpool(backend.functions), name)
        body = _member(await _json_body(request, max_body), "function")
        unknown = sorted(set(body) - {"config"})
        if unknown or not isinstance(body.get("config"), dict):
            field = unknown[0] if unknown else "config"
            raise _bad_request(f"Invalid input for {field}: only an object `config` may change.")
        try:
            status = await run_in_threadpool(backend.reconfigure_function, name, body["config"])
        except ConfigError as exc:
            raise _config_error(exc) from None
        return {"function": status}

    @app.delete(
        f"{base}/functions/{{name}}",
        tags=["pktchain"],
        status_code=204,
        summary="Unplug a function that no port pair uses",
    )
    async def remove_function(name: str) -> Response:
        _function(await run_in_threadpool(backend.functions), name)
        try:
            await run_in_threadpool(backend.remove_function, name)
        except ValueError as exc:
            raise ApiError(409, "FunctionInUse", str(exc)) from None
        return Response(status_code=204)

    @app.get(f"{base}/status", tags=["pktchain"], summary="Node status")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(backend.status)

    @app.get(f"{base}/flows", tags=["pktchain"], summary="The flow table")
    async def flows(request: Request) -> dict[str, Any]:
        _filters, controls = _query(request)
        text = _one_value(controls, "limit") or "1000"
        if not text.isdigit() or int(text) > 1_000_000:
            raise _bad_request(f"Invalid input for limit: '{text}' is not in 0..1000000.")
        return {"flows": await run_in_threadpool(backend.flows, int(text))}

    @app.get(f"{base}/counters", tags=["pktchain"], summary="Counters per chain, hop, pair, port")
    async def counters() -> dict[str, Any]:
        node = await run_in_threadpool(backend.status)
        steering = node.get("steering", {})
        return {
            "chains": steering.get("chains", []),
            "port_pairs": steering.get("port_pairs", {}),
            "ports": node.get("ports", []),
        }


def _functions(functions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if functions is None:
        raise ApiError(404, "HTTPNotFound", "This server runs no dataplane, so no functions.")
    return functions


def _function(functions: list[dict[str, Any]] | None, name: str) -> dict[str, Any]:
    for function in _functions(functions):
        if function.get("name") == name:
            return function
    raise ApiError(404, "FunctionNotFound", f"Function {name} could not be found.")


def _member(body: Any, key: str) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get(key), dict) or len(body) != 1:
        raise _bad_request(f"The body must be an object with one member, {key!r}, an object.")
    inner: dict[str, Any] = body[key]
    return inner


def _config_error(exc: ConfigError) -> ApiError:
    """A 400 naming every wrong field, as Neutron's "Invalid input for ..." messages do."""
    problems = "; ".join(
        f"Invalid input for {e.field or 'function'}: {e.message}." for e in exc.errors
    )
    return _bad_request(problems)


def _router_operation(backend: Backend, op: str, args: dict[str, Any]) -> object:
    """Check `args` as the messenger does, then make the router call in the node."""
    from pktchain.messenger.ops import (
        apply_command,
        parse_command,
        parse_op,
        router_interface_factory,
        to_json,
    )
    from pktchain.messenger.wire import ErrorType, MessengerError

    control = backend.router_control()
    if control is None:
        raise ApiError(404, "HTTPNotFound", "This node runs no router.")
    try:
        command = parse_command(parse_op(op), args)
    except MessengerError as exc:
        status = 404 if exc.type is ErrorType.UNKNOWN_OP else 400
        where = f"Invalid input for {exc.field}. " if exc.field else ""
        raise ApiError(
            status, "HTTPBadRequest" if status == 400 else "HTTPNotFound", f"{where}{exc.message}"
        ) from None
    make_interface = router_interface_factory()
    try:
        result = backend.submit(lambda: apply_command(command, control, make_interface))
    except (ValueError, LookupError) as exc:
        raise ApiError(409, "RouterRejected", str(exc)) from None
    return to_json(result)


# --- the OpenAPI document ------------------------------------------------------------------

_ERROR_REF = {"$ref": "#/components/schemas/NeutronError"}


def _json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _wrapped(key: str, schema: Mapping[str, Any], *, many: bool = False) -> dict[str, Any]:
    inner = {"type": "array", "items": dict(schema)} if many else dict(schema)
    return {
        "type": "object",
        "properties": {key: inner},
        "required": [key],
        "additionalProperties": False,
    }


def _class_name(kind: ResourceKind) -> str:
    return kind.value.title().replace("_", "")


def _error_responses(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "Malformed request or a rule broken (the message names the field)",
        401: "Missing or wrong X-Auth-Token",
        404: "Not found",
        409: "In use or in conflict",
        413: "Request body too large",
        415: "Content-Type is not application/json",
    }
    return {
        str(status): {"description": texts[status], "content": _json_content(_ERROR_REF)}
        for status in statuses
    }


def _sfc_operations(kind: ResourceKind) -> dict[str, dict[str, Any]]:
    """The request and response schemas of one collection's operations."""
    name = _class_name(kind)
    singular, collection = kind.value, kind.collection
    one = _wrapped(singular, _ref(name))
    many = _wrapped(collection, _ref(name), many=True)
    create_body = {
        "oneOf": [
            _wrapped(singular, _ref(f"{name}Create")),
            _wrapped(collection, _ref(f"{name}Create"), many=True),
        ]
    }
    return {
        "list": {
            "parameters": _list_parameters(),
            "responses": {
                "200": {"description": f"The {collection}", "content": _json_content(many)},
                **_error_responses(400, 401, 404),
            },
        },
        "create": {
            "requestBody": {"required": True, "content": _json_content(create_body)},
            "responses": {
                "201": {
                    "description": "Created",
                    "content": _json_content({"oneOf": [one, many]}),
                },
                **_error_responses(400, 401, 404, 409, 413, 415),
            },
        },
        "show": {
            "parameters": [_fields_parameter()],
            "responses": {
                "200": {"description": f"The {singular}", "content": _json_content(one)},
                **_error_responses(401, 404),
            },
        },
        "update": {
            "requestBody": {
                "required": True,
                "content": _json_content(_wrapped(singular, _ref(f"{name}Update"))),
            },
            "responses": {
                "200": {"description": "Updated", "content": _json_content(one)},
                **_error_responses(400, 401, 404, 409, 413, 415),
            },
        },
        "delete": {
            "responses": {
                "204": {"description": "Deleted"},
                **_error_responses(401, 404, 409),
            },
        },
    }


def _fields_parameter() -> dict[str, Any]:
    return {
        "name": "fields",
        "in": "query",
        "required": False,
        "description": "Attributes to show (repeatable); all when absent.",
        "schema": {"type": "array", "items": {"type": "string"}},
        "style": "form",
        "explode": True,
    }


def _list_parameters() -> list[dict[str, Any]]:
    def repeated(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "array", "items": {"type": "string"}},
            "style": "form",
            "explode": True,
        }

    return [
        repeated("id", "Only these ids (repeatable)."),
        repeated("name", "Only these names (repeatable); any attribute filters the same way."),
        _fields_parameter(),
        {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
        {"name": "marker", "in": "query", "required": False, "schema": {"type": "string"}},
        repeated("sort_key", "Attributes to sort by."),
        repeated("sort_dir", "asc or desc, one per sort_key."),
    ]


def _install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        cached = app.openapi_schema
        if cached is not None:
            return cached
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (model, "validation")
            for table in (schemas.CREATE, schemas.UPDATE)
            for model in table.values()
        ]
        models += [(model, "serialization") for model in schemas.SHOWN.values()]
        models += [(schemas.NeutronError, "serialization")]
        _, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(definitions.get("$defs", {}))
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        specs: dict[str, dict[str, Any]] = {}
        for kind in SFC_KINDS:
            for action, operation_spec in _sfc_operations(kind).items():
                specs[f"{action}_{kind.collection}"] = operation_spec
        for path_item in document.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses.update(_error_responses(400))
                spec = specs.get(operation.get("operationId", ""))
                if spec is None:
                    continue
                operation["responses"] = spec["responses"]
                if "requestBody" in spec:
                    operation["requestBody"] = spec["requestBody"]
                if "parameters" in spec:
                    operation["parameters"] = [
                        *operation.get("parameters", []),
                        *spec["parameters"],
                    ]
        for path, path_item in document.get("paths", {}).items():
            for operation in path_item.values():
                operation["responses"].update(_error_responses(401))
                if "{" in path:
                    operation["responses"].update(_error_responses(404))
        paths = document.get("paths", {})
        for operation in paths.get(f"/{API_VERSION}/pktchain/router", {}).values():
            operation["responses"].update(_error_responses(404))  # no router on this node
        function_body = {
            "required": True,
            "description": "{'function': {name, kind, network, config, export}} to create; "
            "{'function': {config}} to reconfigure",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        functions = f"/{API_VERSION}/pktchain/functions"
        for method, operation in paths.get(functions, {}).items():
            codes: tuple[int, ...] = (404,) if method == "get" else (400, 404, 409, 413, 415)
            operation["responses"].update(_error_responses(*codes))
            if method == "post":
                operation["requestBody"] = function_body
        for method, operation in paths.get(f"{functions}/{{name}}", {}).items():
            codes = {"get": (404,), "put": (400, 404, 413, 415), "delete": (404, 409)}[method]
            operation["responses"].update(_error_responses(*codes))
            if method == "put":
                operation["requestBody"] = function_body
        for operation in paths.get(f"/{API_VERSION}/pktchain/router/{{op}}", {}).values():
            operation["responses"].update(_error_responses(400, 404, 409, 413, 415))
            operation["requestBody"] = {
                "required": True,
                "description": "The operation's arguments, as the messenger takes them",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
