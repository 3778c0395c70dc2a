"""A client of a running node's chaining service, over its control socket.

    api = ChainingClient(control_path("pktchain"))
    pp1 = api.create("port_pairs", name="PP1", ingress=api.port_id("vm1:in"),
                     egress=api.port_id("vm1:out"))
    api.update("port_chains", "PC1", flow_classifiers=[])

Resources come back as networking-sfc's JSON dicts; a refusal raises
`ChainingRequestError` with the model's Neutron error type and HTTP status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pktchain.node.control import request


class ChainingRequestError(Exception):
    def __init__(self, status: int, kind: str, message: str, field: str = "") -> None:
        super().__init__(f"{kind}: {message}")
        self.status = status
        self.type = kind
        self.message = message
        self.field = field


class ChainingClient:
    def __init__(self, control: Path) -> None:
        self.control = control

    def _call(self, action: str, collection: str, **params: Any) -> dict[str, Any]:
        reply = request(self.control, "sfc", action=action, collection=collection, **params)
        if not reply.get("ok"):
            raise ChainingRequestError(
                int(reply.get("status", 500)),
                str(reply.get("type", "Error")),
                str(reply.get("error", "")),
                str(reply.get("field", "")),
            )
        return reply

    def create(self, collection: str, **body: Any) -> dict[str, Any]:
        return dict(self._call("create", collection, body=body)["resource"])

    def update(self, collection: str, name_or_id: str, **body: Any) -> dict[str, Any]:
        return dict(self._call("update", collection, id=name_or_id, body=body)["resource"])

    def delete(self, collection: str, name_or_id: str) -> dict[str, Any]:
        return dict(self._call("delete", collection, id=name_or_id)["resource"])

    def get(self, collection: str, name_or_id: str) -> dict[str, Any]:
        return dict(self._call("get", collection, id=name_or_id)["resource"])

    def list(self, collection: str, **filters: Any) -> list[dict[str, Any]]:
        return list(self._call("list", collection, filters=filters)["resources"])

    def port_id(self, name: str) -> str:
        """The id of the node port called `name` (e.g. "vm1:in")."""
        return str(self.get("ports", name)["id"])
