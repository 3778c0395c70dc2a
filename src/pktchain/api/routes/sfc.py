"""The networking-sfc routes: its five collections under ``/v2.0/sfc/``.

Each collection (port pairs, port pair groups, flow classifiers, port
chains, service graphs) has list and create on ``/v2.0/sfc/<collection>``
and show, update and delete on ``/<id>``, with networking-sfc's bodies:
``{"port_pair": {...}}`` in and out, ``{"port_pairs": [...]}`` for lists; a
POST of a list creates all or none. The body goes to the model as received
(it is the one judge of the attributes), and every change through
`Backend.submit`, in a worker thread, so reads are answered meanwhile.
Each route declares its bodies, parameters and statuses for the OpenAPI
document, referring to the models of `pktchain.api.schemas`, whose schemas
`body_schemas` gives.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.concurrency import run_in_threadpool

from pktchain.api import schemas
from pktchain.api.backend import Backend
from pktchain.api.bodies import json_body, unwrap
from pktchain.api.errors import error_responses
from pktchain.api.listing import (
    fields_parameter,
    list_parameters,
    next_link,
    page,
    select_fields,
    split_query,
)
from pktchain.api.routes import API_VERSION
from pktchain.sfc.resources import Resource, ResourceKind

__all__ = ["SFC_KINDS", "body_schemas", "sfc_routes"]

SFC_KINDS = (
    ResourceKind.PORT_PAIR,
    ResourceKind.PORT_PAIR_GROUP,
    ResourceKind.FLOW_CLASSIFIER,
    ResourceKind.PORT_CHAIN,
    ResourceKind.SERVICE_GRAPH,
)
"""The kinds served under ``/v2.0/sfc/``."""

_REF_TEMPLATE = "#/components/schemas/{model}"


def sfc_routes(backend: Backend, max_body: int) -> APIRouter:
    """Every networking-sfc collection over `backend`'s model."""
    router = APIRouter()
    for kind in SFC_KINDS:
        router.include_router(_collection_routes(backend, kind, max_body))
    return router


def body_schemas() -> dict[str, Any]:
    """The JSON schemas, by name, of the bodies the routes declare by ``$ref``:
    what a create or an update takes, and a resource as shown."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (table[kind.value], "validation")
        for table in (schemas.CREATE, schemas.UPDATE)
        for kind in SFC_KINDS
    ]
    models += [(schemas.SHOWN[kind.value], "serialization") for kind in SFC_KINDS]
    _, definitions = models_json_schema(models, ref_template=_REF_TEMPLATE)
    found: dict[str, Any] = definitions.get("$defs", {})
    for kind in SFC_KINDS:
        name = schemas.SHOWN[kind.value].__name__
        partial = {key: value for key, value in found[name].items() if key != "required"}
        partial["title"] = f"{name} (fields)"
        partial["description"] = (
            f"A {kind.label.lower()} shown with `fields=`: only the attributes asked for."
        )
        found[_partial_name(name)] = partial
    return found


def _partial_name(name: str) -> str:
    return f"{name}Fields"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF_TEMPLATE.format(model=name)}


def _wrapped(
    key: str, model: type[BaseModel], *, many: bool = False, partial: bool = False
) -> dict[str, Any]:
    """networking-sfc's wrapper, ``{key: resource}``, or ``{key: [resource, ...]}``;
    `partial`: the resource may be shown with only some of its attributes (``fields=``)."""
    ref: dict[str, Any] = _ref(model.__name__)
    if partial:
        ref = {"anyOf": [ref, _ref(_partial_name(model.__name__))]}
    inner: dict[str, Any] = ref
    if many:
        inner = {"type": "array", "items": ref}
        if not partial:
            inner["minItems"] = 1  # a bulk create names at least one resource
    return {
        "type": "object",
        "properties": {key: inner},
        "required": [key],
        "additionalProperties": False,
    }


def _links(singular: str, collection: str, *, listed: bool) -> dict[str, Any]:
    """OpenAPI links from a response holding resources to show, update and delete one."""
    where = f"/{collection}/0/id" if listed else f"/{singular}/id"
    parameters = {"resource_id": f"$response.body#{where}"}
    return {
        f"{verb.capitalize()}{singular.title().replace('_', '')}": {
            "operationId": f"{verb}_{collection}",
            "parameters": parameters,
        }
        for verb in ("show", "update", "delete")
    }


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _collection_routes(backend: Backend, kind: ResourceKind, max_body: int) -> APIRouter:
    """List and create on the collection; show, update and delete on a member."""
    cls: type[Resource] = kind.resource_class
    singular, collection = kind.value, kind.collection
    base = f"/{API_VERSION}/sfc/{collection}"
    item = f"{base}/{{resource_id}}"
    label = kind.label.lower()
    model = backend.model
    router = APIRouter(tags=[collection])

    shown_body = schemas.SHOWN[singular]
    create_body = schemas.CREATE[singular]
    one, many = _wrapped(singular, shown_body), _wrapped(collection, shown_body, many=True)
    some = _wrapped(singular, shown_body, partial=True)
    listed = _wrapped(collection, shown_body, many=True, partial=True)
    listed["properties"][f"{collection}_links"] = {
        "type": "array",
        "description": "On a full page: the link to the next one.",
        "items": {
            "type": "object",
            "properties": {"rel": {"const": "next"}, "href": {"type": "string"}},
            "required": ["rel", "href"],
        },
    }
    sortable = schemas.sortable_attributes(shown_body)
    filters = schemas.filterable_attributes(shown_body)

    @router.get(
        base,
        operation_id=f"list_{collection}",
        summary=f"List {label}s",
        status_code=200,
        responses={
            200: {
                "description": f"The {collection}",
                "content": _json(listed),
                "links": _links(singular, collection, listed=True),
            },
            **error_responses(400, 404),
        },
        openapi_extra={"parameters": list_parameters(filters, sortable)},
    )
    async def list_resources(request: Request) -> Response:
        query, controls = split_query(request)
        found = model.list(cls, {key: values for key, values in query.items()})
        records = [resource.to_dict() for resource in found]
        shown, more = page(records, controls, sortable)
        fields = controls.get("fields")
        body: dict[str, Any] = {collection: [select_fields(r, fields) for r in shown]}
        if more:
            body.update(next_link(request, collection, shown))
        return JSONResponse(body)

    @router.post(
        base,
        operation_id=f"create_{collection}",
        summary=f"Create {label}(s)",
        status_code=201,
        responses={
            201: {
                "description": "Created",
                "content": _json({"oneOf": [one, many]}),
                "links": _links(singular, collection, listed=False),
            },
            **error_responses(400, 404, 409, 413, 415),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": _json(
                    {
                        "oneOf": [
                            _wrapped(singular, create_body),
                            _wrapped(collection, create_body, many=True),
                        ]
                    }
                ),
            }
        },
    )
    async def create_resources(request: Request) -> Response:
        body = await json_body(request, max_body)
        bulk = isinstance(body, dict) and collection in body
        items = unwrap(body, kind, bulk=True)

        def create_all() -> list[Resource]:
            with model.transaction() as txn:
                return [txn.create(cls, item) for item in items]

        # run: worked out again if a shared store finds the state outdated
        created = await run_in_threadpool(backend.change, lambda: model.run(create_all))
        if bulk:
            return JSONResponse({collection: [r.to_dict() for r in created]}, status_code=201)
        return JSONResponse({singular: created[0].to_dict()}, status_code=201)

    @router.get(
        item,
        operation_id=f"show_{collection}",
        summary=f"Show a {label}",
        status_code=200,
        responses={
            200: {"description": f"The {singular}", "content": _json(some)},
            **error_responses(404),
        },
        openapi_extra={"parameters": [fields_parameter()]},
    )
    async def show_resource(resource_id: str, request: Request) -> Response:
        _filters, controls = split_query(request)
        found = model.get(cls, resource_id)
        return JSONResponse({singular: select_fields(found.to_dict(), controls.get("fields"))})

    @router.put(
        item,
        operation_id=f"update_{collection}",
        summary=f"Update a {label}",
        status_code=200,
        responses={
            200: {"description": "Updated", "content": _json(one)},
            **error_responses(400, 404, 409, 413, 415),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": _json(_wrapped(singular, schemas.UPDATE[singular])),
            }
        },
    )
    async def update_resource(resource_id: str, request: Request) -> Response:
        body = await json_body(request, max_body)
        (changes,) = unwrap(body, kind, bulk=False)
        model.get(cls, resource_id)  # a 404 before anything is submitted
        updated = await run_in_threadpool(
            backend.change, lambda: model.update(cls, resource_id, changes)
        )
        return JSONResponse({singular: updated.to_dict()})

    @router.delete(
        item,
        operation_id=f"delete_{collection}",
        summary=f"Delete a {label}",
        status_code=204,
        responses={204: {"description": "Deleted"}, **error_responses(404, 409)},
    )
    async def delete_resource(resource_id: str) -> Response:
        model.get(cls, resource_id)
        await run_in_threadpool(backend.change, lambda: model.delete(cls, resource_id))
        return Response(status_code=204)

    return router
