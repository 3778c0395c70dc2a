"""pktchain's own routes, under ``/v2.0/pktchain/``: the node behind the API.

The node's status document, its flow table and counters (per chain, hop,
port pair and port); its native functions, which can be listed, plugged in,
reconfigured live (those that allow it) and unplugged; and its router's
tables and operations, which take the messenger's operation names and
arguments and are checked as the messenger checks them. A backend without
a dataplane or without a router answers those routes with a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from pktchain.api.backend import Backend
from pktchain.api.bodies import json_body, member
from pktchain.api.errors import ApiError, bad_request, error_responses
from pktchain.api.listing import one_value, split_query
from pktchain.api.routes import API_VERSION
from pktchain.errors import ConfigError

__all__ = ["node_routes"]

_FUNCTION_BODY = (
    "{'function': {name, kind, network, config, export}} to create; "
    "{'function': {config}} to reconfigure"
)
_OPERATION_BODY = "The operation's arguments, as the messenger takes them"


def _object_body(description: str) -> dict[str, Any]:
    """An OpenAPI request body that is a JSON object, checked by the route itself."""
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def node_routes(backend: Backend, max_body: int) -> APIRouter:
    """Status, flows, counters, functions and router of the node behind `backend`."""
    router = APIRouter(tags=["pktchain"])
    base = f"/{API_VERSION}/pktchain"

    @router.get(
        f"{base}/router",
        summary="The router's tables: interfaces, hosts, ARP, NAT, port forwards, counters",
        responses=error_responses(404),
    )
    async def router_tables() -> dict[str, Any]:
        tables = await run_in_threadpool(backend.router_tables)
        if tables is None:
            raise ApiError(404, "HTTPNotFound", "This node runs no router.")
        return {"router": tables}

    @router.post(
        f"{base}/router/{{op}}",
        summary="A router operation, with the messenger's name and arguments",
        responses=error_responses(400, 404, 409, 413, 415),
        openapi_extra={"requestBody": _object_body(_OPERATION_BODY)},
    )
    async def router_operation(op: str, request: Request) -> dict[str, Any]:
        body = await json_body(request, max_body)
        if not isinstance(body, dict):
            raise bad_request("The body must be an object of the operation's arguments.")
        return {"result": await run_in_threadpool(_router_operation, backend, op, body)}

    @router.get(
        f"{base}/functions",
        summary="The node's native functions",
        responses=error_responses(404),
    )
    async def list_functions() -> dict[str, Any]:
        return {"functions": _functions(await run_in_threadpool(backend.functions))}

    @router.get(
        f"{base}/functions/{{name}}",
        summary="One native function",
        responses=error_responses(400, 404),
    )
    async def show_function(name: str) -> dict[str, Any]:
        return {"function": _function(await run_in_threadpool(backend.functions), name)}

    @router.post(
        f"{base}/functions",
        status_code=201,
        summary="Plug in a function: a built-in kind or package.module:ClassName, its config",
        responses=error_responses(400, 404, 409, 413, 415),
        openapi_extra={"requestBody": _object_body(_FUNCTION_BODY)},
    )
    async def add_function(request: Request) -> dict[str, Any]:
        from pktchain.node.function_file import spec_from_mapping

        _functions(await run_in_threadpool(backend.functions))  # 404 without a dataplane
        body = member(await json_body(request, max_body), "function")
        try:
            spec = spec_from_mapping(body)
        except ConfigError as exc:
            raise _config_error(exc) from None
        try:
            status = await run_in_threadpool(backend.add_function, spec)
        except ValueError as exc:
            raise ApiError(409, "FunctionInUse", str(exc)) from None
        return {"function": status}

    @router.put(
        f"{base}/functions/{{name}}",
        summary="Reconfigure a running function (functions that allow it)",
        responses=error_responses(400, 404, 413, 415),
        openapi_extra={"requestBody": _object_body(_FUNCTION_BODY)},
    )
    async def reconfigure_function(name: str, request: Request) -> dict[str, Any]:
        _function(await run_in_threadpool(backend.functions), name)
        body = member(await json_body(request, max_body), "function")
        unknown = sorted(set(body) - {"config"})
        if unknown or not isinstance(body.get("config"), dict):
            field = unknown[0] if unknown else "config"
            raise bad_request(f"Invalid input for {field}: only an object `config` may change.")
        try:
            status = await run_in_threadpool(backend.reconfigure_function, name, body["config"])
        except ConfigError as exc:
            raise _config_error(exc) from None
        return {"function": status}

    @router.delete(
        f"{base}/functions/{{name}}",
        status_code=204,
        summary="Unplug a function that no port pair uses",
        responses=error_responses(400, 404, 409),
    )
    async def remove_function(name: str) -> Response:
        _function(await run_in_threadpool(backend.functions), name)
        try:
            await run_in_threadpool(backend.remove_function, name)
        except ValueError as exc:
            raise ApiError(409, "FunctionInUse", str(exc)) from None
        return Response(status_code=204)

    @router.get(f"{base}/status", summary="Node status")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(backend.status)

    @router.get(f"{base}/flows", summary="The flow table")
    async def flows(request: Request) -> dict[str, Any]:
        _filters, controls = split_query(request)
        text = one_value(controls, "limit") or "1000"
        if not text.isdigit() or int(text) > 1_000_000:
            raise bad_request(f"Invalid input for limit: '{text}' is not in 0..1000000.")
        return {"flows": await run_in_threadpool(backend.flows, int(text))}

    @router.get(f"{base}/counters", summary="Counters per chain, hop, pair, port")
    async def counters() -> dict[str, Any]:
        node = await run_in_threadpool(backend.status)
        steering = node.get("steering", {})
        return {
            "chains": steering.get("chains", []),
            "port_pairs": steering.get("port_pairs", {}),
            "ports": node.get("ports", []),
        }

    return router


def _functions(functions: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if functions is None:
        raise ApiError(404, "HTTPNotFound", "This server runs no dataplane, so no functions.")
    return functions


def _function(functions: list[dict[str, Any]] | None, name: str) -> dict[str, Any]:
    for function in _functions(functions):
        if function.get("name") == name:
            return function
    raise ApiError(404, "FunctionNotFound", f"Function {name} could not be found.")


def _config_error(exc: ConfigError) -> ApiError:
    """A 400 naming every wrong field, as Neutron's "Invalid input for ..." messages do."""
    problems = "; ".join(
        f"Invalid input for {e.field or 'function'}: {e.message}." for e in exc.errors
    )
    return bad_request(problems)


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
