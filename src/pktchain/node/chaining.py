"""The node's chaining service: the model, kept in step with the steering.

The node owns one `SfcModel`.  Each port the node attaches is registered in it
as a Neutron-style `Port` (a stable id derived from the node and port names,
its MAC, its addresses, its host as `device_id`, the node as
``binding:host_id``), so that port pairs and classifiers can name it.  Every
committed change to the model is compiled and applied to the steering at
once: a change reaches the dataplane before the request that made it is
answered.  In a cluster (`--etcd`) the model holds every node's resources,
and other nodes' changes arrive through the store's watch as changes too.

Requests arrive over the control socket as
``{"op": "sfc", "action": "create|update|delete|get|list", "collection":
"port_pairs", "id": NAME_OR_ID, "body": {...}, "filters": {...}}`` and are
answered with the resource(s) in networking-sfc's JSON shape, or with the
model's error (its Neutron type, message and HTTP status).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pktchain.logs import event
from pktchain.node.dataplane.steering import Steering
from pktchain.sfc.compile import compile_plan
from pktchain.sfc.errors import SfcError
from pktchain.sfc.model import Action, Change, SfcModel
from pktchain.sfc.resources import Port, PortChain, PortPair, PortPairGroup, ResourceKind

if TYPE_CHECKING:
    from pktchain.node.dataplane.ports import SwitchPort

log = logging.getLogger(__name__)

PORT_ID_NAMESPACE = uuid.UUID("5d0c3f5e-6a52-4b1e-9f0e-70a1c8b2e6d4")
"""uuid5 namespace of the ids the node gives its ports (stable across restarts)."""

ACTIONS = ("create", "update", "delete", "get", "list")


def port_id(node: str, port: str) -> str:
    return str(uuid.uuid5(PORT_ID_NAMESPACE, f"{node}/{port}"))


class Chaining:
    def __init__(self, node_name: str, steering: Steering) -> None:
        self.node_name = node_name
        self.steering = steering
        self.model = SfcModel()
        self.peers: Callable[[], Mapping[str, frozenset[str]]] | None = None
        """In a cluster: the live peer nodes, each with the ids of its ports
        that are down (pairs elsewhere are reached over the underlay)."""
        self.post: Callable[[Callable[[], None]], None] | None = None
        """How a change made outside the node's loop reaches the steering (in a
        cluster, the API changes the model in its own thread, so that a slow
        etcd never holds up the packets); None: at once."""
        self._apply_posted = False
        self.down: set[str] = set()
        """This node's ports that are down: their pairs are out of the plan."""
        self.model.add_listener(self._changed)

    # -- ports ---------------------------------------------------------------
    def register_port(
        self, port: SwitchPort, addresses: tuple[str, ...] = (), *, port_security: bool = True
    ) -> Port:
        """Make an attached node port known to the model (again, after a restart).

        `port_security` False turns the port's security off (and its allowed
        address pairs, which need it) each time; True leaves what the model
        has (on, for a new port, or what the API set since).
        """
        fields: dict[str, object] = {
            "name": port.name,
            "mac_address": port.mac or "",
            "fixed_ips": [{"ip_address": address} for address in addresses],
            "device_id": port.host or port.netns or self.node_name,
            "device_owner": "pktchain:node",
            "node_port": port.name,
            "binding:host_id": self.node_name,
        }
        if not port_security:
            fields["allowed_address_pairs"] = []
            fields["port_security_enabled"] = False
        known = self.model.state.find(Port, port_id(self.node_name, port.name))
        if known is None:
            return self.model.create(Port, fields, id=port_id(self.node_name, port.name))
        changed = {k: v for k, v in fields.items() if known.to_dict().get(k) != v}
        changed.pop("device_id", None)  # fixed once pairs may rely on it
        return self.model.update(Port, known.id, changed) if changed else known

    # -- model → steering ----------------------------------------------------
    def _changed(self, change: Change) -> None:
        if change.kind is ResourceKind.PORT and self.peers is None:
            return  # on one node, ports alone change no path
        log.info(
            "%s %s %s",
            change.action.value,
            change.kind.label,
            change.id,
            extra=change_event(change),
        )
        if self.post is None:
            self.apply()
        elif not self._apply_posted:
            self._apply_posted = True  # one compile for all the changes of a request
            self.post(self._posted_apply)

    def _posted_apply(self) -> None:
        self._apply_posted = False
        self.apply()

    def remote_ports(self, peers: Mapping[str, frozenset[str]]) -> dict[str, tuple[str, str]]:
        """The ports on other live nodes: id → (node, node port), given each live
        peer's ports that are down."""
        return {
            port.id: (port.binding_host_id, port.node_port)
            for port in self.model.state.ports.values()
            if port.node_port
            and port.binding_host_id in peers
            and port.binding_host_id != self.node_name
            and port.id not in peers[port.binding_host_id]
        }

    def apply(self) -> None:
        """Compile the model against the ports attached now, and steer by it."""
        if self.peers is None:
            self.steering.apply(compile_plan(self.model.state, self.steering.ports.keys()))
            return
        plan = compile_plan(
            self.model.state,
            [name for name in self.steering.ports if name not in self.down],
            self.remote_ports(self.peers()),
            node=self.node_name,
        )
        self.steering.apply(plan)

    # -- requests ------------------------------------------------------------
    def handle(self, request: Mapping[str, Any]) -> dict[str, Any]:
        action = request.get("action")
        if action not in ACTIONS:
            return _error(400, "HTTPBadRequest", f"action must be one of {', '.join(ACTIONS)}")
        collection = request.get("collection")
        try:
            kind = ResourceKind.from_collection(str(collection))
        except ValueError:
            return _error(404, "HTTPNotFound", f"no collection {collection!r}")
        cls = kind.resource_class
        body = request.get("body") or {}
        if not isinstance(body, dict):
            return _error(400, "HTTPBadRequest", "body must be an object")
        try:
            if action == "list":
                filters = request.get("filters") or {}
                if not isinstance(filters, dict):
                    return _error(400, "HTTPBadRequest", "filters must be an object")
                found = self.model.list(cls, filters)
                return {"ok": True, "resources": [r.to_dict() for r in found]}
            if action == "create":
                return {"ok": True, "resource": self.model.create(cls, body).to_dict()}
            target = self.model.resolve(cls, str(request.get("id", "")))
            if action == "get":
                return {"ok": True, "resource": target.to_dict()}
            if action == "update":
                return {"ok": True, "resource": self.model.update(cls, target.id, body).to_dict()}
            return {"ok": True, "resource": self.model.delete(cls, target.id).to_dict()}
        except SfcError as exc:
            return _error(exc.status, exc.type, exc.message, exc.field)


CHANGE_EVENTS: dict[ResourceKind, str] = {
    ResourceKind.PORT_CHAIN: "chain",
    ResourceKind.PORT_PAIR: "instance",
    ResourceKind.PORT_PAIR_GROUP: "group",
    ResourceKind.FLOW_CLASSIFIER: "classifier",
    ResourceKind.SERVICE_GRAPH: "graph",
    ResourceKind.PORT: "neutron_port",
}
"""The subject of the log event of each kind's changes (docs/node.md, Logs)."""

_CHANGE_VERBS: dict[Action, str] = {
    Action.CREATE: "added",
    Action.UPDATE: "changed",
    Action.DELETE: "removed",
}


def change_event(change: Change) -> dict[str, Any]:
    """The log event of one change of the model: ``chain_applied``, ``chain_changed``,
    ``chain_removed``, ``instance_added`` (a port pair)... with the resource's id and
    name under its kind (``port_chain_id``, ``port_chain``) and what it links."""
    resource = change.resource
    subject = CHANGE_EVENTS[change.kind]
    verb = _CHANGE_VERBS[change.action]
    if change.kind is ResourceKind.PORT_CHAIN and change.action is Action.CREATE:
        verb = "applied"  # a new chain steers its flows from now on
    kind = change.kind.value
    fields: dict[str, Any] = {f"{kind}_id": resource.id, kind: resource.name}
    if isinstance(resource, PortChain):
        fields["port_pair_groups"] = list(resource.port_pair_groups)
        fields["flow_classifiers"] = list(resource.flow_classifiers)
    elif isinstance(resource, PortPairGroup):
        fields["port_pairs"] = list(resource.port_pairs)
    elif isinstance(resource, PortPair):
        fields["ingress"] = resource.ingress
        fields["egress"] = resource.egress
    return event(f"{subject}_{verb}", **fields)


def _error(status: int, kind: str, message: str, field: str = "") -> dict[str, Any]:
    return {"ok": False, "status": status, "type": kind, "error": message, "field": field}
