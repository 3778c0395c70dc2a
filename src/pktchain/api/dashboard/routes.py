"""The dashboard's routes: the page under ``/ui/``, its data under ``/v2.0/pktchain/``.

The page (``/ui/``: HTML, ES modules, a style sheet, shipped in this package's
``static`` folder) holds no data and is served to anyone, so that a browser
can show the token form; it is read once, when the application is made. Its
data comes from two routes under the API's token like every other:

- ``GET /v2.0/pktchain/dashboard``: one snapshot, ``{"node", "interval",
  "topology", "live", "events"}`` (the chains, the live state, the events kept);
- ``GET /v2.0/pktchain/dashboard/stream``: the live stream, server-sent events
  (`pktchain.api.dashboard.feed`); left out of the OpenAPI document, as a
  response that never ends is no operation a client generator can call.

The page's responses forbid everything but the page's own scripts, styles and
requests (Content-Security-Policy), so that text from the network shown in it
can never run.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from pktchain.api.backend import Backend
from pktchain.api.dashboard.feed import Dashboard, LiveFeed
from pktchain.api.errors import ApiError
from pktchain.api.routes import API_VERSION

__all__ = ["UI_PATH", "dashboard_routes", "page_files"]

UI_PATH = "/ui"
"""Where the page is served; it and what is under it need no token."""

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
}

_FILE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.[a-z]+")


def page_files() -> dict[str, tuple[bytes, str]]:
    """The page's files by name, with their content type."""
    found: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("pktchain.api.dashboard").joinpath("static")
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and _FILE_NAME.fullmatch(entry.name) and suffix in CONTENT_TYPES:
            found[entry.name] = (entry.read_bytes(), CONTENT_TYPES[suffix])
    if "index.html" not in found:
        raise RuntimeError("the dashboard's index.html is missing from the package")
    return found


def dashboard_routes(backend: Backend, dashboard: Dashboard) -> tuple[APIRouter, LiveFeed]:
    """The page and its data routes, and the feed behind the stream (to close it)."""
    router = APIRouter(tags=["pktchain"])
    feed = LiveFeed(dashboard, lambda: backend.model.state)
    files = page_files()

    @router.get(UI_PATH, include_in_schema=False)
    async def page_root() -> Response:
        return RedirectResponse(f"{UI_PATH}/", status_code=308)

    @router.get(f"{UI_PATH}/", include_in_schema=False)
    async def page() -> Response:
        return _file(files, "index.html")

    @router.get(f"{UI_PATH}/{{name}}", include_in_schema=False)
    async def page_file(name: str) -> Response:
        return _file(files, name)

    base = f"/{API_VERSION}/pktchain/dashboard"

    @router.get(base, summary="The dashboard's data: chains, live state, recent events")
    async def snapshot() -> dict[str, Any]:
        events = dashboard.events
        return {
            "node": dashboard.node,
            "interval": dashboard.interval,
            "topology": feed.topology(),
            "live": await feed.read(),
            "events": events.recent() if events is not None else [],
        }

    @router.get(f"{base}/stream", include_in_schema=False)
    async def stream() -> Response:
        return StreamingResponse(
            feed.stream(),
            media_type="text/event-stream",
            # No proxy or browser may hold the events back or keep them.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router, feed


def _file(files: dict[str, tuple[bytes, str]], name: str) -> Response:
    found = files.get(name)
    if found is None:
        raise ApiError(404, "HTTPNotFound", f"The dashboard has no file {name!r}.")
    body, content_type = found
    return Response(body, media_type=content_type, headers=PAGE_HEADERS)
