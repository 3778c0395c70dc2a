"""The service-function-chaining model: networking-sfc's resources and rules as
a Python API, with no I/O.

`SfcModel` holds ports, port pairs, port pair groups, flow classifiers, port
chains and service graphs, and offers create / get / list / update / delete on
each, taking and checking request bodies as networking-sfc does (attribute
names, defaults, which attributes an update may change) and enforcing its
rules between resources (`pktchain.sfc.rules`). The REST layer serves it,
the store persists it, the dataplane follows it.

Every change is all-or-nothing. A change is worked out on a new immutable
`SfcState`; only when every rule holds, and every precommit hook has accepted
it, does the model swap the new state in and tell each listener, in order,
one `Change` (action, kind, old, new) per resource created, updated or
deleted. Several changes can be made as one with `SfcModel.transaction()`
(all of them or none), and a transaction opened with ``dry_run=True`` reports
what it would change without changing anything.

A state shared with other writers (etcd, `pktchain.sfc.etcd_store`) adds two
things: a precommit hook may refuse a change as worked out on an outdated
state (`StateOutdated`), and `SfcModel.run` then catches the model up and
works the change out again (the one-change operations do so by themselves);
and `SfcModel.sync` makes the model hold what the shared store holds,
telling the listeners what changed without running any hook.

    model = SfcModel()
    port = model.create(Port, mac_address="02:00:00:00:00:01", device_id="vm1",
                        node_port="vm1:in")
    ...
    pp = model.create(PortPair, {"name": "PP1", "ingress": a.id, "egress": b.id})
    model.update(PortPairGroup, pg.id, port_pairs=[pp.id])
"""

from __future__ import annotations

import builtins
import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from pktchain.sfc import rules
from pktchain.sfc.attributes import ATTRIBUTES, READ_ONLY, Attribute, canonical_uuid
from pktchain.sfc.errors import (
    AmbiguousName,
    Conflict,
    InvalidInput,
    MissingAttribute,
    ReadOnlyAttribute,
    SfcError,
    StateOutdated,
    UnknownAttribute,
    describe,
)
from pktchain.sfc.resources import (
    RESOURCE_CLASSES,
    FlowClassifier,
    Port,
    PortChain,
    PortPair,
    PortPairGroup,
    Resource,
    ResourceKind,
    ServiceGraph,
)
from pktchain.sfc.state import NOT_FOUND, SfcState

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_PROJECT_ID",
    "Action",
    "Change",
    "FlowClassifier",
    "Listener",
    "Port",
    "PortChain",
    "PortPair",
    "PortPairGroup",
    "PrecommitHook",
    "Resource",
    "ResourceKind",
    "ServiceGraph",
    "SfcError",
    "SfcModel",
    "SfcState",
    "Transaction",
]

R = TypeVar("R", bound=Resource)
T = TypeVar("T")

DEFAULT_PROJECT_ID = "pktchain"
"""The project of resources created without one (pktchain has no Keystone)."""

DEFAULT_ATTEMPTS = 5
"""How many times `SfcModel.run` works a change out before giving up on a
shared state that keeps changing under it."""


class Action(Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True)
class Change:
    """One resource created (old is None), updated, or deleted (new is None)."""

    action: Action
    kind: ResourceKind
    old: Resource | None
    new: Resource | None

    @property
    def resource(self) -> Resource:
        """The resource as it is after the change (as it was, for a delete)."""
        if self.new is not None:
            return self.new
        if self.old is not None:
            return self.old
        raise ValueError("a change names no resource")

    @property
    def id(self) -> str:
        return self.resource.id


Listener = Callable[[Change], None]
"""Told of each change after it is committed, in order."""

PrecommitHook = Callable[[tuple[Change, ...], SfcState], None]
"""Shown the changes and the state they lead to before the commit; raising vetoes them."""

_CHECKS: dict[ResourceKind, Callable[[SfcState, Any, Any], Resource]] = {
    ResourceKind.PORT: rules.check_port,
    ResourceKind.PORT_PAIR: rules.check_port_pair,
    ResourceKind.PORT_PAIR_GROUP: rules.check_port_pair_group,
    ResourceKind.FLOW_CLASSIFIER: rules.check_flow_classifier,
    ResourceKind.PORT_CHAIN: rules.check_port_chain,
    ResourceKind.SERVICE_GRAPH: rules.check_service_graph,
}

_DELETE_CHECKS: dict[ResourceKind, Callable[[SfcState, Any], None]] = {
    ResourceKind.PORT: rules.check_port_delete,
    ResourceKind.PORT_PAIR: rules.check_port_pair_delete,
    ResourceKind.PORT_PAIR_GROUP: rules.check_port_pair_group_delete,
    ResourceKind.FLOW_CLASSIFIER: rules.check_flow_classifier_delete,
    ResourceKind.PORT_CHAIN: rules.check_port_chain_delete,
    ResourceKind.SERVICE_GRAPH: rules.check_service_graph_delete,
}


class _Request(Enum):
    CREATE = "create"
    UPDATE = "update"
    RESTORE = "restore"  # a create that brings the ids the model normally assigns


def _body(
    kind: ResourceKind, body: Mapping[str, object] | None, fields: Mapping[str, object]
) -> dict[str, object]:
    if body is not None and (
        not isinstance(body, Mapping) or not all(isinstance(key, str) for key in body)
    ):
        raise InvalidInput(kind.value, "the request body must be an object.")
    merged = dict(body or {})
    merged.update(fields)
    return merged


def _convert(kind: ResourceKind, body: Mapping[str, object], request: _Request) -> dict[str, Any]:
    """Check attribute names against networking-sfc's allow_post/allow_put and
    convert the values; returns dataclass field values (``tenant_id`` folded
    into ``project_id``)."""
    table = ATTRIBUTES[kind]
    values: dict[str, Any] = {}
    for key, raw in body.items():
        attribute = table.get(key)
        if attribute is None:
            if key in READ_ONLY:
                raise ReadOnlyAttribute(key, kind.label, request.value)
            raise UnknownAttribute(key, kind.label)
        allowed = {
            _Request.CREATE: attribute.allow_post,
            _Request.UPDATE: attribute.allow_put,
            _Request.RESTORE: True,
        }[request]
        if not allowed:
            raise ReadOnlyAttribute(key, kind.label, request.value)
        values[attribute.field_name] = attribute.convert(key, raw)
    if "tenant_id" in values:
        tenant = values.pop("tenant_id")
        if values.setdefault("project_id", tenant) != tenant:
            raise InvalidInput("tenant_id", "tenant_id and project_id differ.")
    if request is not _Request.UPDATE:
        for attribute in table.values():
            _apply_default(kind, attribute, values)
    return values


def _apply_default(kind: ResourceKind, attribute: Attribute, values: dict[str, Any]) -> None:
    if attribute.field_name in values or attribute.name == "tenant_id":
        return
    if attribute.required:
        raise MissingAttribute(attribute.name, kind.label)
    if attribute.default is not None:
        values[attribute.field_name] = attribute.default()


def _filter_text(value: object) -> str:
    """How a value compares in a list filter, whether it came typed or as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Enum):
        value = value.value
    text = str(value)
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered
    return canonical_uuid(text) or text


def _wanted(value: object) -> set[str]:
    items = value if isinstance(value, list | tuple | set | frozenset) else [value]
    return {_filter_text(item) for item in items}


class Transaction:
    """Changes worked out on a private state, committed together or not at all.

    Each operation is itself atomic: one that raises leaves the transaction's
    state as it was, so a caller may catch the error and go on.
    """

    def __init__(self, state: SfcState, project_id: str) -> None:
        self.state = state
        self.changes: list[Change] = []
        self._project_id = project_id

    # --- reading ---------------------------------------------------------------------

    def get(self, cls: type[R], id: str) -> R:
        """The resource with this id, or the kind's NotFound error."""
        return self.state.get(cls, canonical_uuid(id) or id)

    def resolve(self, cls: type[R], name_or_id: str) -> R:
        """The resource with this id or, failing that, this unique name."""
        found = self.state.find(cls, canonical_uuid(name_or_id) or name_or_id)
        if found is not None:
            return found
        named = [r for r in self.state.table(cls).values() if r.name == name_or_id]
        if len(named) > 1:
            raise AmbiguousName(cls.kind.label.lower(), name_or_id, named)
        if not named:
            raise NOT_FOUND[cls.kind](name_or_id)
        return named[0]

    def list(
        self, cls: type[R], filters: Mapping[str, object] | None = None, /, **more: object
    ) -> tuple[R, ...]:
        """Resources in creation order whose attributes match every filter.

        A filter value may be one value or a list of accepted values; values
        compare as their API text, so ``"80"`` matches 80 and ``"true"`` True.
        On a list attribute (a chain's ``port_pair_groups``) a filter matches
        the resources whose list holds the value.
        """
        wanted = {key: _wanted(value) for key, value in {**(filters or {}), **more}.items()}
        for key in wanted:
            if key not in ATTRIBUTES[cls.kind] and key not in READ_ONLY:
                raise UnknownAttribute(key, cls.kind.label)
        found: list[R] = []
        for resource in self.state.table(cls).values():
            shown = resource.to_dict()
            if all(
                self._matches(key, shown.get(key), accepted) for key, accepted in wanted.items()
            ):
                found.append(resource)
        return tuple(found)

    @staticmethod
    def _matches(key: str, value: object, accepted: set[str]) -> bool:
        if isinstance(value, dict):
            raise InvalidInput(key, "cannot filter on an attribute that is an object.")
        if isinstance(value, list):
            return any(_filter_text(item) in accepted for item in value)
        return _filter_text(value) in accepted

    # --- changing ----------------------------------------------------------------------

    def create(
        self,
        cls: type[R],
        body: Mapping[str, object] | None = None,
        /,
        *,
        id: str | None = None,
        **fields: object,
    ) -> R:
        """Create a resource from a request body and/or keyword attributes.

        `id` is normally left to the model (a new UUID); a caller that must
        recreate a resource under a known id gives it.
        """
        return self._create(cls, _body(cls.kind, body, fields), id, _Request.CREATE)

    def _create(
        self, cls: type[R], body: Mapping[str, object], id: str | None, request: _Request
    ) -> R:
        kind = cls.kind
        values = _convert(kind, body, request)
        if id is None:
            new_id = str(uuid.uuid4())
        else:
            checked = canonical_uuid(id)
            if checked is None:
                raise InvalidInput("id", f"'{id}' is not a valid UUID.")
            new_id = checked
            existing = self.state.find(cls, new_id)
            if existing is not None:
                raise Conflict(
                    f"{kind.label} {describe(existing)} already exists.", resources=(new_id,)
                )
        if not values.get("project_id"):
            values["project_id"] = self._project_id
        candidate = cls(id=new_id, **values)
        resource = _CHECKS[kind](self.state, candidate, None)
        self._commit(Change(Action.CREATE, kind, None, resource))
        return resource  # type: ignore[return-value]  # the checks keep the class

    def update(
        self,
        cls: type[R],
        id: str,
        body: Mapping[str, object] | None = None,
        /,
        **fields: object,
    ) -> R:
        """Change the attributes networking-sfc lets an update change.

        Returns the resource as it now is. An update that changes nothing is
        not a change: no listener hears of it.
        """
        kind = cls.kind
        old = self.get(cls, id)
        values = _convert(kind, _body(kind, body, fields), _Request.UPDATE)
        candidate = dataclasses.replace(old, **values)
        if candidate == old:
            return old
        resource = _CHECKS[kind](self.state, candidate, old)
        if resource == old:
            return old  # what the checks fill in made it the same (a pair's MAC)
        self._commit(Change(Action.UPDATE, kind, old, resource))
        return resource  # type: ignore[return-value]

    def delete(self, cls: type[R], id: str) -> R:
        """Remove a resource nothing refers to; returns it as it was."""
        old = self.get(cls, id)
        _DELETE_CHECKS[cls.kind](self.state, old)
        self._commit(Change(Action.DELETE, cls.kind, old, None))
        return old

    def load(self, data: Mapping[str, Sequence[Mapping[str, object]]]) -> None:
        """Recreate resources from their `to_dict()` forms, keyed by collection
        name (``"port_pairs"``, ...), keeping their ids, chain ids and group
        ids. Every rule is checked, in dependency order."""
        collections = {kind.collection: kind for kind in ResourceKind}
        for key in data:
            if key not in collections:
                raise UnknownAttribute(key, "the saved state")
        for kind, cls in RESOURCE_CLASSES.items():
            for record in data.get(kind.collection, ()):
                body = _body(kind, record, {})
                record_id = body.pop("id", None)
                if not isinstance(record_id, str):
                    raise MissingAttribute("id", f"a saved {kind.label.lower()}")
                self._create(cls, body, record_id, _Request.RESTORE)

    def _commit(self, change: Change) -> None:
        if change.new is not None:
            self.state = self.state.with_resource(change.new)
        elif change.old is not None:
            self.state = self.state.without(change.old)
        self.changes.append(change)


class SfcModel:
    """The chaining resources of one pktchain system, and their rules.

    Safe to share between threads: changes are serialized, and readers get
    consistent snapshots (`state`) without waiting.
    """

    def __init__(self, *, project_id: str = DEFAULT_PROJECT_ID) -> None:
        self._state = SfcState()
        self._project_id = project_id
        self._lock = threading.RLock()
        self._open: Transaction | None = None
        self._owner: int | None = None
        self._listeners: list[Listener] = []
        self._precommit: list[PrecommitHook] = []
        self._running = threading.local()

    @property
    def state(self) -> SfcState:
        """The committed state: an immutable snapshot."""
        return self._state

    @property
    def lock(self) -> AbstractContextManager[bool]:
        """The lock every transaction and `sync` hold (re-entrant). A store that
        reads the state and syncs it holds it around both, to make them one step."""
        return self._lock

    # --- subscriptions ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every committed change; returns an unsubscribe function.

        Listeners run in the committing thread, in the order they were added,
        after the new state is in place. They should not raise: an exception
        reaches the caller that made the change (which is committed by then)
        and the listeners after it do not hear of that change.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def add_precommit_hook(self, hook: PrecommitHook) -> Callable[[], None]:
        """Call `hook` with each transaction's changes and resulting state
        before they are committed (to persist them, say); an exception from it
        abandons the transaction and reaches the caller."""
        self._precommit.append(hook)
        return lambda: self._precommit.remove(hook)

    # --- transactions -------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, dry_run: bool = False) -> Iterator[Transaction]:
        """Make several changes as one: all are committed when the block ends
        normally, none if it raises (or if `dry_run`). Other threads' changes
        wait until the block ends."""
        with self._lock:
            if self._open is not None and self._owner == threading.get_ident():
                raise RuntimeError("a transaction is already open in this thread")
            txn = Transaction(self._state, self._project_id)
            self._open, self._owner = txn, threading.get_ident()
            try:
                yield txn
            finally:
                self._open, self._owner = None, None
            if dry_run or not txn.changes:
                return
            changes = tuple(txn.changes)
            for hook in tuple(self._precommit):
                hook(changes, txn.state)
            self._state = txn.state
            for change in changes:
                for listener in tuple(self._listeners):
                    listener(change)

    def _run(self, operation: Callable[[Transaction], R]) -> R:
        open_txn = self._open
        if open_txn is not None and self._owner == threading.get_ident():
            return operation(open_txn)  # part of the transaction this thread has open
        return self.run(lambda: self._in_transaction(operation))

    def _in_transaction(self, operation: Callable[[Transaction], R]) -> R:
        with self.transaction() as txn:
            return operation(txn)

    def run(self, fn: Callable[[], T], *, attempts: int = DEFAULT_ATTEMPTS) -> T:
        """Run `fn`, which changes the model (one operation, or a transaction
        block), again on the current state when a shared store refused it as
        worked out on an outdated one.

        A precommit hook raises `StateOutdated` when another writer changed
        the shared state first; nothing was changed, the error's `catch_up()`
        brings the model up to date, and `fn` runs again: its caller sees the
        change made, or the error a rule gives against what the other writer
        did. After `attempts` tries the last `StateOutdated` (a 409) is raised.
        The one-change operations (`create`, `update`, `delete`) run this way
        by themselves; a `run` inside another of the same thread runs `fn`
        once, and the outer one tries again.
        """
        if getattr(self._running, "active", False):
            return fn()
        self._running.active = True
        try:
            attempt = 1
            while True:
                try:
                    return fn()
                except StateOutdated as exc:
                    if attempt >= attempts:
                        raise
                    attempt += 1
                    exc.catch_up()
        finally:
            self._running.active = False

    def sync(self, data: Mapping[str, Sequence[Mapping[str, object]]]) -> tuple[Change, ...]:
        """Make the model hold exactly the resources of `data`, in its order: what a
        shared store holds, in `export()`'s form (by collection, each with its id).

        The new state is checked as a whole, rule by rule as `load` checks it;
        a broken rule raises its `SfcError` and nothing changes. No precommit
        hook runs, since the change comes from the store. Listeners are told
        one `Change` per resource created, updated or deleted (deletions
        first, dependents before what they use; then creations and updates,
        in dependency order), and the changes are returned.
        """
        with self._lock:
            if self._open is not None and self._owner == threading.get_ident():
                raise RuntimeError("cannot sync the model inside a transaction of this thread")
            built = Transaction(SfcState(), self._project_id)
            built.load(data)
            changes = _differences(self._state, built.state)
            if not changes:
                return ()
            self._state = built.state
            for change in changes:
                for listener in tuple(self._listeners):
                    listener(change)
            return changes

    # --- one-change operations ---------------------------------------------------------------

    def create(
        self,
        cls: type[R],
        body: Mapping[str, object] | None = None,
        /,
        *,
        id: str | None = None,
        **fields: object,
    ) -> R:
        """Create a resource; see `Transaction.create`."""
        return self._run(lambda txn: txn.create(cls, body, id=id, **fields))

    def update(
        self, cls: type[R], id: str, body: Mapping[str, object] | None = None, /, **fields: object
    ) -> R:
        """Update a resource; see `Transaction.update`."""
        return self._run(lambda txn: txn.update(cls, id, body, **fields))

    def delete(self, cls: type[R], id: str) -> R:
        """Delete a resource; see `Transaction.delete`."""
        return self._run(lambda txn: txn.delete(cls, id))

    def load(self, data: Mapping[str, Sequence[Mapping[str, object]]]) -> None:
        """Recreate saved resources in one transaction; see `Transaction.load`."""
        with self.transaction() as txn:
            txn.load(data)

    def get(self, cls: type[R], id: str) -> R:
        return self._reader().get(cls, id)

    def resolve(self, cls: type[R], name_or_id: str) -> R:
        return self._reader().resolve(cls, name_or_id)

    def list(
        self, cls: type[R], filters: Mapping[str, object] | None = None, /, **more: object
    ) -> tuple[R, ...]:
        return self._reader().list(cls, filters, **more)

    def export(self) -> dict[str, builtins.list[dict[str, Any]]]:
        """Every resource as `to_dict()`, by collection, in an order `load` accepts."""
        state = self._state
        return {
            kind.collection: [r.to_dict() for r in state.table(cls).values()]
            for kind, cls in RESOURCE_CLASSES.items()
        }

    def _reader(self) -> Transaction:
        open_txn = self._open
        if open_txn is not None and self._owner == threading.get_ident():
            return open_txn
        return Transaction(self._state, self._project_id)


def _differences(old: SfcState, new: SfcState) -> tuple[Change, ...]:
    """The changes that lead from `old` to `new`: deletions (dependents first),
    then creations and updates (in dependency order)."""
    changes: list[Change] = []
    for kind, cls in reversed(RESOURCE_CLASSES.items()):
        kept = new.table(cls)
        changes.extend(
            Change(Action.DELETE, kind, resource, None)
            for id, resource in old.table(cls).items()
            if id not in kept
        )
    for kind, cls in RESOURCE_CLASSES.items():
        before = old.table(cls)
        for id, resource in new.table(cls).items():
            previous = before.get(id)
            if previous is None:
                changes.append(Change(Action.CREATE, kind, None, resource))
            elif previous != resource:
                changes.append(Change(Action.UPDATE, kind, previous, resource))
    return tuple(changes)
