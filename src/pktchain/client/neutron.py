"""An HTTP client of the networking-sfc-compatible REST API a pktchain node serves.

    api = NeutronClient("http://127.0.0.1:9696")
    pp1 = api.create(ResourceKind.PORT_PAIR, {"name": "PP1",
                     "ingress": api.find_id(ResourceKind.PORT, "vm1:in"),
                     "egress": api.find_id(ResourceKind.PORT, "vm1:out")})
    api.update(ResourceKind.PORT_CHAIN, "PC1", {"flow_classifiers": []})

It follows the Neutron v2.0 contract: ``/v2.0/sfc/<collection>[/<id>]`` for the
chaining resources and ``/v2.0/ports`` for ports, bodies wrapped in the
singular name (``{"port_pair": {...}}``), lists in the plural, filters as
query parameters, errors as ``{"NeutronError": {"type", "message",
"detail"}}``. Any resource argument may be a name or an id: names are
resolved with ``?name=`` as the openstack client's ``find`` does.

Only the standard library is used (`urllib.request`, `json`), so that the
command line that builds on it starts fast.
"""

from __future__ import annotations

import builtins
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pktchain.sfc.resources import ResourceKind

DEFAULT_URL = "http://127.0.0.1:9696"
API_PREFIX = "/v2.0"
SFC_PREFIX = "/v2.0/sfc"
DEFAULT_TIMEOUT = 30.0


class ClientError(Exception):
    """Base class of the errors of `NeutronClient`."""


class ApiError(ClientError):
    """The API refused a request: its HTTP status and Neutron error type and message.

    Neutron's messages name the attribute at fault (``Invalid input for
    ingress. Reason: ...``), so `str()` of this error is the line to show.
    """

    def __init__(self, status: int, type: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.message} ({self.type}, HTTP {self.status})"


class ApiUnreachableError(ClientError):
    """Nothing answers at the API's address."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"no pktchain API at {url}: is `pktchain node` running? ({reason})")
        self.url = url
        self.reason = reason


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def collection_path(kind: ResourceKind) -> str:
    """``/v2.0/ports`` for ports, ``/v2.0/sfc/<collection>`` for the rest."""
    prefix = API_PREFIX if kind is ResourceKind.PORT else SFC_PREFIX
    return f"{prefix}/{kind.collection}"


class NeutronClient:
    """Create, list, show, update and delete resources of one API endpoint."""

    def __init__(
        self, url: str = DEFAULT_URL, token: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.url = url.rstrip("/")
        # Accept the endpoint with its version too, as the openstack client is given it.
        if self.url.endswith(API_PREFIX):
            self.url = self.url[: -len(API_PREFIX)]
        self.token = token
        self.timeout = timeout

    # -- the five operations ---------------------------------------------------------

    def create(self, kind: ResourceKind, body: Mapping[str, Any]) -> dict[str, Any]:
        reply = self._request("POST", collection_path(kind), {kind.value: dict(body)})
        return _unwrap(reply, kind.value)

    def list(self, kind: ResourceKind, **filters: str) -> builtins.list[dict[str, Any]]:
        query = f"?{urllib.parse.urlencode(filters)}" if filters else ""
        reply = self._request("GET", collection_path(kind) + query)
        items = reply.get(kind.collection) if isinstance(reply, dict) else None
        if not isinstance(items, list):
            raise ApiError(502, "BadResponse", f"the API's answer has no '{kind.collection}' list")
        return [dict(item) for item in items if isinstance(item, dict)]

    def show(self, kind: ResourceKind, ref: str) -> dict[str, Any]:
        """The resource named or identified by `ref`."""
        if is_uuid(ref):
            try:
                return self._get(kind, ref)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        return self._get(kind, self.find_id(kind, ref))

    def update(self, kind: ResourceKind, ref: str, body: Mapping[str, Any]) -> dict[str, Any]:
        path = f"{collection_path(kind)}/{self.find_id(kind, ref)}"
        return _unwrap(self._request("PUT", path, {kind.value: dict(body)}), kind.value)

    def delete(self, kind: ResourceKind, ref: str) -> None:
        self._request("DELETE", f"{collection_path(kind)}/{self.find_id(kind, ref)}")

    # -- names -----------------------------------------------------------------------

    def find_id(self, kind: ResourceKind, ref: str) -> str:
        """The id of the resource called `ref`, or `ref` itself if it is an id.

        A name matching no resource, or several, is a 404 / 409 `ApiError`
        that says so, as the server would for an unknown id.
        """
        if is_uuid(ref):
            return ref
        matches = self.list(kind, name=ref)
        # A server that ignores the filter still gives the right answer.
        matches = [item for item in matches if item.get("name") == ref]
        if not matches:
            label = kind.label.lower()
            raise ApiError(404, f"{_class_name(kind)}NotFound", f"no {label} named '{ref}'")
        if len(matches) > 1:
            raise ApiError(
                409,
                "AmbiguousName",
                f"{len(matches)} {kind.collection} are named '{ref}': give the id",
            )
        return str(matches[0]["id"])

    def find_ids(self, kind: ResourceKind, refs: Sequence[str]) -> builtins.list[str]:
        return [self.find_id(kind, ref) for ref in refs]

    def names(self, kind: ResourceKind) -> dict[str, str]:
        """id → name of every resource of `kind` (for showing references readably)."""
        return {str(item["id"]): str(item.get("name") or "") for item in self.list(kind)}

    # -- HTTP ------------------------------------------------------------------------

    def call(self, method: str, path: str, body: object = None) -> Any:
        """Any request under the API's base URL (e.g. pktchain's own endpoints)."""
        return self._request(method, path, body)

    def _get(self, kind: ResourceKind, ident: str) -> dict[str, Any]:
        return _unwrap(self._request("GET", f"{collection_path(kind)}/{ident}"), kind.value)

    def _request(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc.code, exc.read()) from None
        except urllib.error.URLError as exc:
            raise ApiUnreachableError(self.url, _reason(exc.reason)) from None
        except (TimeoutError, ConnectionError) as exc:
            raise ApiUnreachableError(self.url, _reason(exc)) from None
        if not payload:
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise ApiError(502, "BadResponse", f"{method} {path}: the answer is not JSON") from None


def _class_name(kind: ResourceKind) -> str:
    return "".join(part.capitalize() for part in kind.value.split("_"))


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _unwrap(reply: Any, key: str) -> dict[str, Any]:
    if isinstance(reply, dict) and isinstance(reply.get(key), dict):
        return dict(reply[key])
    raise ApiError(502, "BadResponse", f"the API's answer has no '{key}' object")


def _api_error(status: int, payload: bytes) -> ApiError:
    """The Neutron error in a refusal's body, or what can be said without one."""
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = None
    error = body.get("NeutronError") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(
            status,
            str(error.get("type") or "Error"),
            str(error.get("message") or f"HTTP {status}"),
            str(error.get("detail") or ""),
        )
    # FastAPI's own refusals (e.g. a malformed body) carry "detail".
    if isinstance(body, dict) and "detail" in body:
        return ApiError(status, "HTTPError", _detail_text(body["detail"]))
    text = payload.decode("utf-8", "replace").strip().splitlines()[:1]
    return ApiError(status, "HTTPError", text[0] if text else f"HTTP {status}")


def _detail_text(detail: object) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{where}: {item.get('msg', '')}" if where else str(item.get("msg")))
        if parts:
            return "; ".join(parts)
    return str(detail)
