"""The API's errors, answered as a Neutron server answers them.

Every error leaves the API as ``{"NeutronError": {"type", "message",
"detail"}}`` with its status: the model's `SfcError` (400, 404, 409), an
`ApiError` for what the API itself refuses before the model sees it, and
Starlette's and FastAPI's own errors (unknown path 404, wrong method 405,
failed parameter validation, which Neutron answers as a 400).
`install_error_handlers` puts the handlers on an application, and
`error_responses` declares on a route the errors it may answer, for the
OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pktchain.api.schemas import NeutronError
from pktchain.sfc.errors import SfcError

__all__ = [
    "ApiError",
    "bad_request",
    "error_response",
    "error_responses",
    "install_error_handlers",
]

_MEANINGS = {
    400: "Malformed request or a rule broken (the message names the field)",
    401: "Missing or wrong X-Auth-Token",
    404: "Not found",
    409: "In use or in conflict",
    413: "Request body too large",
    415: "Content-Type is not application/json",
}
"""What each error status means in this API, as the OpenAPI document says it."""


class ApiError(Exception):
    """A request refused before it reaches the model."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message

    def to_neutron(self) -> dict[str, dict[str, str]]:
        return {"NeutronError": {"type": self.type, "message": self.message, "detail": ""}}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "HTTPBadRequest", message)


def error_response(error: ApiError | SfcError) -> JSONResponse:
    return JSONResponse(error.to_neutron(), status_code=error.status)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for these error statuses: each a NeutronError body."""
    return {
        status: {"model": NeutronError, "description": _MEANINGS[status]} for status in statuses
    }


def install_error_handlers(app: FastAPI) -> None:
    async def sfc_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, SfcError):  # pragma: no cover - registered for SfcError
            raise exc
        return error_response(exc)

    async def api_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, ApiError):  # pragma: no cover - registered for ApiError
            raise exc
        return error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # pragma: no cover
            raise exc
        types = {404: "HTTPNotFound", 405: "HTTPMethodNotAllowed"}
        error = ApiError(exc.status_code, types.get(exc.status_code, "HTTPError"), exc.detail)
        if exc.status_code == 404:
            error.message = f"The resource could not be found: {request.url.path}."
        elif exc.status_code == 405:
            error.message = f"Method {request.method} is not allowed on {request.url.path}."
        response = error_response(error)
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
        return error_response(bad_request(f"Invalid input: {problems}."))

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
