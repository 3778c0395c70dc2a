"""Reading request bodies: what the API checks before the model sees a body.

The model is the one judge of a resource's attributes, so the API hands it
the body as received; what is left to check here is the envelope. A body
must be declared ``application/json`` (415), stay within the size limit
(413, counted while it streams in, not only from Content-Length), be JSON
(400, naming the syntax error; NaN and Infinity are refused) and carry the
wrapper networking-sfc puts around a resource, ``{"port_pair": {...}}``
(400, naming the key expected).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from pktchain.api.errors import ApiError, bad_request
from pktchain.sfc.resources import ResourceKind

__all__ = ["json_body", "member", "too_large", "unwrap"]

_JSON_TYPES = ("application/json",)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


async def json_body(request: Request, max_body: int) -> object:
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
        raise too_large(max_body)
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body:
                raise too_large(max_body)
    except ClientDisconnect:
        # Gone before its body was in (or dropped for taking too long to send it):
        # there is nobody to answer.
        raise ApiError(400, "HTTPBadRequest", "The client left before sending its body.") from None
    if not data.strip():
        raise bad_request("The request body is empty: a JSON object is required.")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as err:
        raise bad_request(f"The request body is not valid JSON: {err}.") from None


def too_large(max_body: int) -> ApiError:
    """The 413 of a body over the limit, which it names."""
    return ApiError(
        413,
        "HTTPRequestEntityTooLarge",
        f"The request body exceeds the limit of {max_body} bytes.",
    )


def unwrap(body: object, kind: ResourceKind, *, bulk: bool) -> list[Mapping[str, object]]:
    """The resource bodies inside ``{"port_pair": {...}}`` (or, when `bulk`,
    ``{"port_pairs": [...]}``)."""
    singular, plural = kind.value, kind.collection
    accepted = f"'{singular}'" + (f" or '{plural}'" if bulk else "")
    if not isinstance(body, dict) or len(body) != 1:
        raise bad_request(f"The request body must be an object with one key, {accepted}.")
    ((key, inner),) = body.items()
    if key == singular:
        if not isinstance(inner, dict):
            raise bad_request(f"Invalid input for {singular}: expected an object.")
        return [inner]
    if bulk and key == plural:
        if not isinstance(inner, list) or not inner:
            raise bad_request(f"Invalid input for {plural}: expected a non-empty list.")
        for index, item in enumerate(inner):
            if not isinstance(item, dict):
                raise bad_request(f"Invalid input for {plural}[{index}]: expected an object.")
        return inner
    raise bad_request(f"Unrecognized key '{key}' in the request body: expected {accepted}.")


def member(body: object, key: str) -> dict[str, Any]:
    """The object under `key` of a body that has that one member (pktchain's own bodies)."""
    if not isinstance(body, dict) or not isinstance(body.get(key), dict) or len(body) != 1:
        raise bad_request(f"The body must be an object with one member, {key!r}, an object.")
    inner: dict[str, Any] = body[key]
    return inner
