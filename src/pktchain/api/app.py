"""The REST API: networking-sfc's resources as a Neutron v2.0 server serves them.

`create_app(backend)` builds a FastAPI application with

- ``/v2.0/sfc/{port_pairs,port_pair_groups,flow_classifiers,port_chains,service_graphs}``
  and ``/{id}`` under each: POST 201, GET 200, PUT 200, DELETE 204, bodies
  wrapped as ``{"port_pair": {...}}`` / ``{"port_pairs": [...]}`` (a POST
  of a list creates all or none); lists take filters as query parameters
  (``name=A&name=B``), ``fields=`` selection, ``limit``/``marker``/
  ``page_reverse`` and ``sort_key``/``sort_dir``, as Neutron's API layer does
  (`pktchain.api.routes.sfc`, `pktchain.api.listing`);
- what clients look for on a Neutron server: ``GET /`` (versions),
  ``GET /v2.0``, ``/v2.0/extensions``, ``/v2.0/networks`` and ``/v2.0/ports``
  (the model's ports, read-only) (`pktchain.api.routes.neutron`);
- pktchain's own: ``/v2.0/pktchain/status``, ``/flows``, ``/counters``, the
  functions and the router (`pktchain.api.routes.node`);
- the OpenAPI document at ``/openapi.json``.

Requests are read as JSON and handed to the model unchanged, so its
validation is the one judge: its errors become ``{"NeutronError": {"type",
"message", "detail"}}`` with its status (400, 404, 409) (`pktchain.api.errors`).
What the model never sees is checked by the API: content type (415), body
size (413), JSON syntax and the wrapper key (400) (`pktchain.api.bodies`),
and here the token (401). Changes run through `Backend.submit`, in a worker
thread, so the server keeps answering reads while the dataplane applies them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from pktchain.api import schemas
from pktchain.api.backend import Backend
from pktchain.api.errors import ApiError, error_response, install_error_handlers
from pktchain.api.routes import API_VERSION
from pktchain.api.routes.neutron import DEFAULT_NETWORK_ID, EXTENSIONS, neutron_routes
from pktchain.api.routes.node import node_routes
from pktchain.api.routes.sfc import SFC_KINDS, sfc_routes
from pktchain.sfc.resources import ResourceKind

__all__ = ["DEFAULT_NETWORK_ID", "EXTENSIONS", "SFC_KINDS", "ApiError", "create_app"]


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
    install_error_handlers(app)
    if token is not None:
        _install_token_check(app, token)
    app.include_router(neutron_routes(backend))
    app.include_router(sfc_routes(backend, max_body))
    app.include_router(node_routes(backend, max_body))
    _install_openapi(app)
    return app


def _install_token_check(app: FastAPI, token: str) -> None:
    expected = token.encode()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Callable[[Request], Any]) -> Response:
        given = request.headers.get("x-auth-token", "").encode()
        if not hmac.compare_digest(given, expected):
            return error_response(
                ApiError(
                    401,
                    "HTTPUnauthorized",
                    "Authentication required: a valid X-Auth-Token header is missing.",
                )
            )
        response: Response = await call_next(request)
        return response


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
