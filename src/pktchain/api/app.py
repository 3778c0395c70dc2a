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
  (the model's ports; an update changes only their name, description, port
  security and allowed address pairs) (`pktchain.api.routes.neutron`);
- pktchain's own: ``/v2.0/pktchain/status``, ``/flows``, ``/counters``, the
  functions and the router (`pktchain.api.routes.node`);
- the OpenAPI document at ``/openapi.json``;
- the server's metrics for Prometheus at ``/metrics`` (`pktchain.api.metrics`,
  docs/metrics.md), under the same token as the rest.

Requests are read as JSON and handed to the model unchanged, so its
validation is the one judge: its errors become ``{"NeutronError": {"type",
"message", "detail"}}`` with its status (400, 404, 409) (`pktchain.api.errors`).
What the model never sees is checked by the API: content type (415), body
size (413: a declared Content-Length over the limit here, before anything
else; a body that grows past it while read, in `pktchain.api.bodies`), JSON
syntax and the wrapper key (400) (`pktchain.api.bodies`), and here the token
(401; ``X-Auth-Token``, or ``Authorization: Bearer`` as Prometheus sends it).
Changes run through `Backend.submit`, in a worker
thread, so the server keeps answering reads while the dataplane applies them.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from pktchain.api.backend import Backend
from pktchain.api.bodies import too_large
from pktchain.api.errors import (
    ApiError,
    bad_request,
    error_response,
    error_responses,
    install_error_handlers,
)
from pktchain.api.metrics import RequestTimer, metrics_registry, metrics_routes
from pktchain.api.routes.neutron import (
    DEFAULT_NETWORK_ID,
    EXTENSIONS,
    neutron_routes,
    port_schemas,
)
from pktchain.api.routes.node import node_routes
from pktchain.api.routes.sfc import SFC_KINDS, body_schemas, sfc_routes
from pktchain.api.server import DEFAULT_MAX_BODY

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_NETWORK_ID",
    "EXTENSIONS",
    "SFC_KINDS",
    "ApiError",
    "create_app",
]


def create_app(
    backend: Backend,
    *,
    token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    collectors: Iterable[Collector] = (),
) -> FastAPI:
    """The API over `backend`; with a `token`, every request must carry it in
    ``X-Auth-Token`` (or as ``Authorization: Bearer``). Request bodies over
    `max_body` bytes get a 413. ``/metrics`` serves the process's and the
    requests' metrics and those of `collectors` (Prometheus collectors)."""
    if max_body < 1:
        raise ValueError(f"max_body {max_body!r}: must be at least 1 byte")
    app = _Application(
        title="pktchain",
        version="2.0",
        description="networking-sfc-compatible service function chaining API of pktchain.",
        docs_url=None,
        redoc_url=None,
        # Every route: the token check answers before any of them when a token is set,
        # and a body declared too large is refused whatever the route.
        responses=error_responses(401, 413),
    )
    app.state.token_required = token is not None
    install_error_handlers(app)
    if token is not None:
        _install_token_check(app, token)
    app.include_router(neutron_routes(backend, max_body))
    app.include_router(sfc_routes(backend, max_body))
    app.include_router(node_routes(backend, max_body))
    registry, histogram = metrics_registry(collectors)
    app.include_router(metrics_routes(registry))
    app.state.metrics = registry
    # A body declared too large is refused before anything; the timer, outermost,
    # times that refusal too.
    app.add_middleware(_BodyLimit, max_body=max_body)
    app.add_middleware(RequestTimer, histogram=histogram)
    return app


class _BodyLimit:
    """ASGI middleware: a request whose Content-Length exceeds `max_body` gets a 413
    at once, whatever its route, and its body is not read."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (
                    not value.isdigit() or int(value) > self.max_body
                ):
                    response = error_response(
                        too_large(self.max_body)
                        if value.isdigit()
                        else bad_request("Content-Length is not a number.")
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class _Application(FastAPI):
    """FastAPI, with what the routes cannot declare added to its OpenAPI document."""

    def openapi(self) -> dict[str, Any]:
        previous = self.openapi_schema
        document = super().openapi()
        if document is not previous:  # made afresh: the first time, or after a route was added
            _complete_document(document)
        return document


def _complete_document(document: dict[str, Any]) -> None:
    """The two things the route declarations cannot say, put into `document`.

    FastAPI documents a 422 (and its HTTPValidationError schemas) on every
    operation that has a parameter, whatever the route declares, and has no
    way to leave it out; this API never answers 422 (errors.py answers a
    failed validation as Neutron's 400), so it is taken out. And FastAPI
    collects into the components only the models a route takes or returns
    through pydantic, while the networking-sfc routes read and write their
    bodies themselves (the model judges them); the body models their
    declarations refer to by ``$ref`` are added.
    """
    for path_item in document["paths"].values():
        for operation in path_item.values():
            operation["responses"].pop("422", None)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components.update(body_schemas())
    components.update(port_schemas())


def _install_token_check(app: FastAPI, token: str) -> None:
    expected = token.encode()

    @app.middleware("http")
    async def check_token(request: Request, call_next: Callable[[Request], Any]) -> Response:
        given = request.headers.get("x-auth-token")
        if given is None:
            # What Prometheus (and most HTTP clients) send: RFC 6750's bearer token.
            scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
            given = credentials.strip() if scheme.lower() == "bearer" else ""
        if not hmac.compare_digest(given.encode(), expected):
            return error_response(
                ApiError(
                    401,
                    "HTTPUnauthorized",
                    "Authentication required: a valid X-Auth-Token header is missing.",
                )
            )
        response: Response = await call_next(request)
        return response
