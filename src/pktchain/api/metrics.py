"""``GET /metrics``: the server's metrics in Prometheus' text format.

Each application has a registry of its own (`metrics_registry`), holding the
process's collectors (CPU, memory, descriptors, garbage collection, the
Python version), the histogram of the API's own requests, and whatever its
owner collects (a node: its dataplane, `pktchain.node.metrics`).

`RequestTimer` is the ASGI middleware that times every HTTP request into
``pktchain_api_request_duration_seconds``, labelled by method, route template
(``/v2.0/sfc/port_pairs/{id}``, never the path itself, so that ids do not
make new series) and status. A request that matched no route (a 404 of an
unknown path, a 401 refused before routing, a 413 refused before reading) is
under the route ``""``. docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["METRICS_PATH", "RequestTimer", "metrics_registry", "metrics_routes"]

METRICS_PATH = "/metrics"

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text format `generate_latest` writes, as every Prometheus server reads it."""

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods kept as they are in the label; any other is ``other`` (a client cannot
make new series by inventing methods)."""


def metrics_registry(collectors: Iterable[Collector] = ()) -> tuple[CollectorRegistry, Histogram]:
    """A registry with the process's collectors, the request histogram (returned
    too) and `collectors`."""
    registry = CollectorRegistry()
    # The process-wide collectors read /proc and the interpreter: each registry may
    # hold them (they keep no state), so several applications in one process each
    # serve them.
    process: tuple[Collector, ...] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)
    for collector in process:
        registry.register(collector)
    histogram = Histogram(
        "pktchain_api_request_duration_seconds",
        "Time the API took to answer a request, from its first byte to its response's last.",
        labelnames=("method", "route", "status"),
        registry=registry,
    )
    for collector in collectors:
        registry.register(collector)
    return registry, histogram


class RequestTimer:
    """ASGI middleware: every HTTP request timed into `histogram` (see the module)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before any response: the server answers 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            method = scope.get("method", "")
            route = scope.get("route")
            self.histogram.labels(
                method if method in METHODS else "other",
                str(getattr(route, "path", "")),
                str(status),
            ).observe(time.perf_counter() - started)


def metrics_routes(registry: CollectorRegistry) -> APIRouter:
    router = APIRouter()

    @router.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        # Collecting waits for the node's loop to read its state: in a worker thread,
        # so that the server answers other requests meanwhile.
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE)

    return router
