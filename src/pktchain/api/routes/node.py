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
from pktchain.functions.sdk import BUILTIN_FUNCTIONS
from pktchain.functions.sdk.contract import IMPORT_PATH
from pktchain.messenger.ops import ARGUMENTS, ArgKind, Op
from pktchain.node.function_file import NAME
from pktchain.packet import text

__all__ = ["ROUTER_OPERATION_RULES", "node_routes"]

MAX_FLOWS = 1_000_000
"""The most rows ``/flows`` answers with."""

ROUTER_OPERATION_RULES: dict[Op, str] = {
    Op.ROUTER_NIC_ADD: (
        "`ip` lies in `subnet` and is neither its network nor its broadcast address; "
        "`subnet` has no host bits set; a `gateway` lies in `subnet` and is `ip` itself "
        "on an internal NIC, another address on an external one."
    ),
    Op.VRRP_SET: (
        "Only the settings given change. `advert_interval` is in whole hundredths of a "
        "second, 0.01 to 40.95; a priority of 255 is the address owner's only; a virtual "
        "router that does not run on `interface` with `vrid` is a 409."
    ),
    Op.VRRP_TRACK: "`name` is a tracker a virtual router has (an interface or a gateway).",
}
"""The rules between a router operation's arguments, which its schema states in words."""

_ARGUMENT_SCHEMAS: dict[ArgKind, dict[str, Any]] = {
    ArgKind.NAME: {
        "type": "string",
        "pattern": text.anchored(text.IFNAME),
        "description": "1-15 characters, no /, : or white space, not . or ..",
    },
    ArgKind.MAC: {"type": "string", "pattern": text.anchored(text.UNICAST_MAC)},
    ArgKind.IPV4: {"type": "string", "pattern": text.anchored(text.IPV4)},
    ArgKind.SUBNET: {
        "type": "string",
        "pattern": text.anchored(rf"{text.IPV4}/(?:30|[12]?[0-9])"),
        "description": "An IPv4 network, host bits zero, at most /30.",
    },
    ArgKind.NETWORK_ID: {"type": "string", "maxLength": 64},
    ArgKind.BOOL: {"type": "boolean"},
    ArgKind.MTU: {"type": "integer", "minimum": 68, "maximum": 65535},
    ArgKind.PORT: {"type": "integer", "minimum": 1, "maximum": 65535},
    ArgKind.PROTO: {"type": "string", "pattern": "^(?:[Tt][Cc][Pp]|[Uu][Dd][Pp])$"},
    ArgKind.VRID: {"type": "integer", "minimum": 1, "maximum": 255},
    ArgKind.PRIORITY: {"type": "integer", "minimum": 1, "maximum": 255},
    ArgKind.SECONDS: {"type": "number", "minimum": 0, "maximum": 1000},
    ArgKind.TEXT: {"type": "string", "minLength": 1, "maxLength": 64},
}
"""Each kind of argument as ``pktchain.messenger.ops`` checks it."""


def _json_body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": schema}},
    }
    if description:
        body["description"] = description
    return body


def _operation_schema(op: Op) -> dict[str, Any]:
    """A router operation's arguments: the messenger's table, as a JSON schema."""
    specs = ARGUMENTS[op]
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            spec.name: {**_ARGUMENT_SCHEMAS[spec.kind]}
            | ({"default": spec.default} if spec.default is not None else {})
            for spec in specs
        },
        "required": [spec.name for spec in specs if spec.required],
        "additionalProperties": False,
    }
    if op is Op.HOST_NIC_REMOVE:
        schema["oneOf"] = [{"required": ["mac"]}, {"required": ["ip"]}]
    if op in ROUTER_OPERATION_RULES:
        schema["description"] = ROUTER_OPERATION_RULES[op]
    return schema


def _function_schemas() -> dict[str, Any]:
    """The bodies that create a function and reconfigure one."""
    kind = {
        "anyOf": [
            {"enum": sorted(BUILTIN_FUNCTIONS)},
            {"type": "string", "pattern": text.anchored(IMPORT_PATH.pattern)},
        ],
        "description": "A built-in kind, or package.module:ClassName of an importable class.",
    }
    per_interface = {"type": "object", "additionalProperties": {"type": "string"}}
    config = {
        "type": ["object", "null"],
        "description": "The kind's configuration, checked against its schema "
        "(`pktchain fn KIND --schema`); null: the defaults.",
    }
    create = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": text.anchored(NAME.pattern)},
            "kind": kind,
            "network": {
                "anyOf": [{"type": "string"}, per_interface],
                "description": "The node network of every interface, or one per interface.",
            },
            "config": config,
            "export": {
                "type": ["string", "null"],
                "description": "The file its exported records are written to (JSON lines).",
            },
            "pcap": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}},
                ],
                "description": "Interfaces written to pcap files instead of joining a network.",
            },
        },
        "required": ["name", "kind"],
        "additionalProperties": False,
    }
    reconfigure = {
        "type": "object",
        "properties": {"config": {"type": "object", "description": config["description"]}},
        "required": ["config"],
        "additionalProperties": False,
    }

    def wrapped(inner: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"function": inner},
            "required": ["function"],
            "additionalProperties": False,
        }

    return {"create": wrapped(create), "reconfigure": wrapped(reconfigure)}


_HEX_FRAME = {"type": "string", "pattern": "^(?:[0-9a-fA-F]{2}){14,}$", "maxLength": 131072}
TRACE_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "A packet to dry-run (docs/trace.md): its ingress port and its fields "
    "(FIELD=VALUE words) or a whole frame; or, between the nodes of a cluster, NSH as "
    "another node would send it.",
    "properties": {
        "from": {"type": "string", "minLength": 1, "maxLength": 255},
        "fields": {
            "type": "array",
            "maxItems": 32,
            "items": {"type": "string", "pattern": "^[^=]+=", "maxLength": 1024},
        },
        "frame": _HEX_FRAME,
        "arrival": {
            "type": "object",
            "properties": {
                "from_node": {"type": "string", "minLength": 1, "maxLength": 255},
                "vni": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFF},
                "spi": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFF},
                "si": {"type": "integer", "minimum": 0, "maximum": 255},
                "ttl": {"type": "integer", "minimum": 1, "maximum": 63},
                "tags": {
                    "type": "array",
                    "maxItems": 255,
                    "items": {"type": "integer", "minimum": 0, "maximum": 0xFFFFFFFF},
                },
                "fixed": {"type": "boolean"},
                "frame": _HEX_FRAME,
            },
            "required": ["from_node", "vni", "spi", "si", "ttl", "tags", "frame"],
            "additionalProperties": False,
        },
    },
    "oneOf": [
        {
            "required": ["from", "fields"],
            "not": {"anyOf": [{"required": ["frame"]}, {"required": ["arrival"]}]},
        },
        {
            "required": ["from", "frame"],
            "not": {"anyOf": [{"required": ["fields"]}, {"required": ["arrival"]}]},
        },
        {
            "required": ["arrival"],
            "not": {
                "anyOf": [{"required": ["from"]}, {"required": ["fields"]}, {"required": ["frame"]}]
            },
        },
    ],
    "additionalProperties": False,
}
"""The body of ``POST /v2.0/pktchain/trace``."""

TRACE_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "trace": {
            "type": "object",
            "properties": {
                "hops": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "stage": {"type": "string"},
                            "us": {"type": "number"},
                            "node": {"type": "string"},
                        },
                        "required": ["stage", "us"],
                    },
                },
                "result": {"enum": ["delivered", "dropped"]},
                "egress": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
            },
            "required": ["hops", "result", "egress", "reason"],
        }
    },
    "required": ["trace"],
    "additionalProperties": False,
}


def _trace_request(body: Any) -> dict[str, Any]:
    """The body as TRACE_REQUEST says, or a 400 naming what is wrong."""
    if not isinstance(body, dict):
        raise bad_request("Invalid input: the body is an object.")
    unknown = sorted(set(body) - set(TRACE_REQUEST["properties"]))
    if unknown:
        raise bad_request(f"Invalid input for {unknown[0]}: not a field of a trace.")
    shapes = [{"from", "fields"}, {"from", "frame"}, {"arrival"}]
    if not any(set(body) == shape for shape in shapes):
        raise bad_request(
            "Invalid input for from: give from and fields, from and frame, or arrival alone."
        )
    if not isinstance(body.get("from", ""), str) or ("from" in body and not body["from"]):
        raise bad_request("Invalid input for from: a port's name.")
    fields = body.get("fields", [])
    if (
        not isinstance(fields, list)
        or len(fields) > 32
        or not all(
            isinstance(word, str) and "=" in word[1:] and len(word) <= 1024 for word in fields
        )
    ):
        raise bad_request("Invalid input for fields: at most 32 FIELD=VALUE strings.")
    if "frame" in body and not _is_frame(body["frame"]):
        raise bad_request("Invalid input for frame: an Ethernet frame in hex.")
    if "arrival" in body:
        _check_arrival(body["arrival"])
    return body


def _is_frame(value: Any) -> bool:
    return (
        isinstance(value, str)
        and 28 <= len(value) <= 131072
        and len(value) % 2 == 0
        and all(c in "0123456789abcdefABCDEF" for c in value)
    )


def _check_arrival(arrival: Any) -> None:
    schema = TRACE_REQUEST["properties"]["arrival"]
    if not isinstance(arrival, dict):
        raise bad_request("Invalid input for arrival: an object.")
    unknown = sorted(set(arrival) - set(schema["properties"]))
    missing = [name for name in schema["required"] if name not in arrival]
    if unknown or missing:
        name = (unknown or missing)[0]
        raise bad_request(f"Invalid input for arrival.{name}: see the schema.")
    for name, bounds in schema["properties"].items():
        if name not in arrival or bounds.get("type") != "integer":
            continue
        value = arrival[name]
        if isinstance(value, float) and value.is_integer():
            value = arrival[name] = int(value)  # JSON Schema's integers include 1.0
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or not (bounds["minimum"] <= value <= bounds["maximum"])
        ):
            raise bad_request(f"Invalid input for arrival.{name}: an integer within bounds.")
    node = arrival["from_node"]
    if not isinstance(node, str) or not 1 <= len(node) <= 255:
        raise bad_request("Invalid input for arrival.from_node: a node's name.")
    tags = arrival["tags"]
    if isinstance(tags, list):
        tags = arrival["tags"] = [
            int(tag) if isinstance(tag, float) and tag.is_integer() else tag for tag in tags
        ]
    if (
        not isinstance(tags, list)
        or len(tags) > 255
        or not all(
            isinstance(tag, int) and not isinstance(tag, bool) and 0 <= tag <= 0xFFFFFFFF
            for tag in tags
        )
    ):
        raise bad_request("Invalid input for arrival.tags: up to 255 32-bit integers.")
    if "fixed" in arrival and not isinstance(arrival["fixed"], bool):
        raise bad_request("Invalid input for arrival.fixed: a boolean.")
    if not _is_frame(arrival["frame"]):
        raise bad_request("Invalid input for arrival.frame: an Ethernet frame in hex.")


def node_routes(backend: Backend, max_body: int) -> APIRouter:
    """Status, flows, counters, functions and router of the node behind `backend`."""
    router = APIRouter(tags=["pktchain"])
    base = f"/{API_VERSION}/pktchain"
    function_bodies = _function_schemas()

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

    for op in Op:
        _add_router_operation(router, backend, base, op, max_body)

    @router.post(f"{base}/router/{{op}}", include_in_schema=False)
    async def unknown_operation(op: str) -> dict[str, Any]:
        known = ", ".join(o.value for o in Op)
        raise ApiError(404, "HTTPNotFound", f"{op!r} is not an operation ({known}).")

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
        openapi_extra={"requestBody": _json_body(function_bodies["create"])},
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
        openapi_extra={"requestBody": _json_body(function_bodies["reconfigure"])},
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

    @router.post(
        f"{base}/trace",
        summary="Dry-run a packet through the node: each stage, nothing sent or changed",
        responses={
            200: {
                "description": "The trace (docs/trace.md)",
                "content": {"application/json": {"schema": TRACE_RESPONSE}},
            },
            **error_responses(400, 404, 409, 413, 415),
        },
        openapi_extra={"requestBody": _json_body(TRACE_REQUEST)},
    )
    async def trace(request: Request) -> dict[str, Any]:
        body = _trace_request(await json_body(request, max_body))
        reply = await run_in_threadpool(backend.trace, body)
        if reply is None:
            raise ApiError(404, "HTTPNotFound", "This API server runs no dataplane.")
        if not reply.get("ok"):
            field = reply.get("field")
            if field is None:
                raise ApiError(409, "TraceFailed", str(reply.get("error")))
            raise bad_request(f"Invalid input for {field}: {reply.get('error')}")
        return {"trace": reply["trace"]}

    @router.get(f"{base}/status", summary="Node status")
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(backend.status)

    @router.get(
        f"{base}/flows",
        summary="The flow table",
        responses=error_responses(400),
        openapi_extra={
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "At most this many rows (default 1000).",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_FLOWS},
                }
            ]
        },
    )
    async def flows(request: Request) -> dict[str, Any]:
        _filters, controls = split_query(request)
        limit = one_value(controls, "limit")
        if limit is None:
            limit = "1000"
        if not text.full(text.DIGITS, limit) or int(limit) > MAX_FLOWS:
            raise bad_request(f"Invalid input for limit: '{limit}' is not in 0..{MAX_FLOWS}.")
        return {"flows": await run_in_threadpool(backend.flows, int(limit))}

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


def _add_router_operation(
    router: APIRouter, backend: Backend, base: str, op: Op, max_body: int
) -> None:
    @router.post(
        f"{base}/router/{op.value}",
        operation_id=f"router_{op.value}",
        summary=f"Router operation {op.value}, with the messenger's arguments",
        responses=error_responses(400, 404, 409, 413, 415),
        openapi_extra={"requestBody": _json_body(_operation_schema(op))},
    )
    async def router_operation(request: Request) -> dict[str, Any]:
        body = await json_body(request, max_body)
        if not isinstance(body, dict):
            raise bad_request("The body must be an object of the operation's arguments.")
        return {"result": await run_in_threadpool(_router_operation, backend, op.value, body)}


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
