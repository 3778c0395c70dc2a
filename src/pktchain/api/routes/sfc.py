"""The networking-sfc routes: its five collections under ``/v2.0/sfc/``.

Each collection (port pairs, port pair groups, flow classifiers, port
chains, service graphs) has list and create on ``/v2.0/sfc/<collection>``
and show, update and delete on ``/<id>``, with networking-sfc's bodies:
``{"port_pair": {...}}`` in and out, ``{"port_pairs": [...]}`` for lists; a
POST of a list creates all or none. The body goes to the model as received
(it is the one judge of the attributes), and every change through
`Backend.submit`, in a worker thread, so reads are answered meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from pktchain.api.backend import Backend
from pktchain.api.bodies import json_body, unwrap
from pktchain.api.listing import next_link, page, select_fields, split_query
from pktchain.api.routes import API_VERSION
from pktchain.sfc.resources import Resource, ResourceKind

__all__ = ["SFC_KINDS", "sfc_routes"]

SFC_KINDS = (
    ResourceKind.PORT_PAIR,
    ResourceKind.PORT_PAIR_GROUP,
    ResourceKind.FLOW_CLASSIFIER,
    ResourceKind.PORT_CHAIN,
    ResourceKind.SERVICE_GRAPH,
)
"""The kinds served under ``/v2.0/sfc/``."""


def sfc_routes(backend: Backend, max_body: int) -> APIRouter:
    """Every networking-sfc collection over `backend`'s model."""
    router = APIRouter()
    for kind in SFC_KINDS:
        _add_collection(router, backend, kind, max_body)
    return router


def _add_collection(router: APIRouter, backend: Backend, kind: ResourceKind, max_body: int) -> None:
    cls: type[Resource] = kind.resource_class
    singular, collection = kind.value, kind.collection
    base = f"/{API_VERSION}/sfc/{collection}"
    item = f"{base}/{{resource_id}}"
    model = backend.model

    async def list_resources(request: Request) -> Response:
        filters, controls = split_query(request)
        found = model.list(cls, {key: values for key, values in filters.items()})
        records = [resource.to_dict() for resource in found]
        shown = set(records[0]) if records else set()
        listed, more = page(records, controls, shown)
        fields = controls.get("fields")
        body: dict[str, Any] = {collection: [select_fields(r, fields) for r in listed]}
        if more:
            body.update(next_link(request, collection, listed))
        return JSONResponse(body)

    async def create_resources(request: Request) -> Response:
        body = await json_body(request, max_body)
        bulk = isinstance(body, dict) and collection in body
        items = unwrap(body, kind, bulk=True)

        def create_all() -> list[Resource]:
            with model.transaction() as txn:
                return [txn.create(cls, item) for item in items]

        created = await run_in_threadpool(backend.submit, create_all)
        if bulk:
            return JSONResponse({collection: [r.to_dict() for r in created]}, status_code=201)
        return JSONResponse({singular: created[0].to_dict()}, status_code=201)

    async def show_resource(resource_id: str, request: Request) -> Response:
        _filters, controls = split_query(request)
        found = model.get(cls, resource_id)
        return JSONResponse({singular: select_fields(found.to_dict(), controls.get("fields"))})

    async def update_resource(resource_id: str, request: Request) -> Response:
        body = await json_body(request, max_body)
        (changes,) = unwrap(body, kind, bulk=False)
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
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            status_code=status,
            tags=[collection],
            summary=summary,
            operation_id=f"{action}_{collection}",
            response_class=JSONResponse,
        )
