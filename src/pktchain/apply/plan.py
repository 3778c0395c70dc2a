"""The difference between an apply file and what the API holds, and its execution.

Resources are matched by name. A declared resource the API lacks is
created; one whose attributes differ is updated when networking-sfc lets an
update change every differing attribute, and replaced (deleted, then created
again) when one of them is read-only (a port pair's ports or weight, a
classifier's match, a group's lb_fields, a chain's parameters, a graph's
chains). A chain whose group is replaced, and a graph whose chain is
replaced, are replaced with it, since neither can drop that reference.
With `prune`, resources the file does not declare are deleted.

Execution is ordered so that networking-sfc's rules hold at every step
(a port pair in one group only, no resource deleted while in use):

1. *detach*: every kept resource drops the references it will not keep,
   and those to resources about to be deleted or replaced;
2. *delete* deleted and replaced resources, graphs first, port pairs last;
3. *create* new and replaced resources, port pairs first;
4. *update* changed resources to their declared values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pktchain.apply.spec import (
    KINDS,
    REFERENCES,
    ApplyFile,
    Declared,
    Shape,
    normalize,
    updatable,
)
from pktchain.client.neutron import NeutronClient
from pktchain.lab.errors import TopologyError, TopologyIssue
from pktchain.sfc.errors import InvalidInput
from pktchain.sfc.resources import ResourceKind


class Action(Enum):
    """What apply does to one resource; the value is its mark in the plan."""

    CREATE = "+"
    UPDATE = "~"
    REPLACE = "±"
    DELETE = "-"


@dataclass(frozen=True)
class Difference:
    attribute: str
    old: object
    new: object

    def __str__(self) -> str:
        return f"{self.attribute}: {_show(self.old)} → {_show(self.new)}"


@dataclass(frozen=True)
class Change:
    action: Action
    kind: ResourceKind
    name: str
    differences: tuple[Difference, ...] = ()
    reason: str = ""
    current_id: str | None = None

    def __str__(self) -> str:
        head = f"{self.action.value} {self.kind.value} {self.name}"
        details = "; ".join(str(d) for d in self.differences)
        if self.reason:
            details = f"{details} ({self.reason})" if details else f"({self.reason})"
        return f"{head} {details}" if details else head


@dataclass
class Plan:
    """The changes that bring the API to the file, and how to resolve names."""

    changes: list[Change]
    declared: ApplyFile
    current: dict[ResourceKind, dict[str, dict[str, Any]]]
    """Per kind, name → the API's resource with references as names."""
    ids: dict[ResourceKind, dict[str, str]] = field(default_factory=dict)
    """Per kind (ports too), name → id, kept up to date while applying."""

    @property
    def empty(self) -> bool:
        return not self.changes


class PlanError(TopologyError):
    """The file names ports the running node does not have; every one is listed."""


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------
# Reading the API


def read_current(
    api: NeutronClient,
) -> tuple[dict[ResourceKind, dict[str, dict[str, Any]]], dict[ResourceKind, dict[str, str]]]:
    """Every resource of the five kinds by name, references turned into names,
    and name → id of each kind and of the ports."""
    by_id: dict[ResourceKind, dict[str, str]] = {}
    raw: dict[ResourceKind, list[dict[str, Any]]] = {}
    for kind in (ResourceKind.PORT, *KINDS):
        raw[kind] = api.list(kind)
        by_id[kind] = {str(r["id"]): str(r.get("name") or r["id"]) for r in raw[kind]}
    current: dict[ResourceKind, dict[str, dict[str, Any]]] = {}
    ids: dict[ResourceKind, dict[str, str]] = {}
    for kind, resources in raw.items():
        ids[kind] = {}
        for resource in resources:
            name = str(resource.get("name") or resource["id"])
            ids[kind].setdefault(name, str(resource["id"]))
        if kind is ResourceKind.PORT:
            continue
        current[kind] = {}
        for resource in resources:
            named = dict(resource)
            for attribute, ref in REFERENCES[kind].items():
                named[attribute] = _to_names(ref.shape, resource.get(attribute), by_id[ref.kind])
            current[kind].setdefault(str(resource.get("name") or resource["id"]), named)
    return current, ids


def _to_names(shape: Shape, value: object, names: Mapping[str, str]) -> object:
    if value is None:
        return [] if shape is Shape.LIST else ({} if shape is Shape.GRAPH else None)
    if shape is Shape.ONE:
        return names.get(str(value), str(value))
    if shape is Shape.LIST and isinstance(value, list):
        return [names.get(str(v), str(v)) for v in value]
    if shape is Shape.GRAPH and isinstance(value, Mapping):
        return {
            names.get(str(src), str(src)): [names.get(str(d), str(d)) for d in dsts]
            for src, dsts in value.items()
        }
    return value


# --------------------------------------------------------------------------
# The difference


def compute_plan(
    declared: ApplyFile,
    current: dict[ResourceKind, dict[str, dict[str, Any]]],
    ids: dict[ResourceKind, dict[str, str]],
    *,
    prune: bool = False,
) -> Plan:
    """The changes, in the order they are shown: kinds in dependency order,
    deletions last in reverse order. Raises PlanError for ports the node lacks."""
    missing = [
        TopologyIssue(
            declared.source,
            resource.line_of(attribute),
            f"{resource.kind.collection}.{resource.name}.{attribute}",
            f"the node has no port {name!r}",
        )
        for resource in declared.resources
        for attribute, kind, name in resource.references()
        if kind is ResourceKind.PORT and name not in ids.get(ResourceKind.PORT, {})
    ]
    if missing:
        raise PlanError(missing)
    changes: dict[tuple[ResourceKind, str], Change] = {}
    for resource in declared.resources:
        now = current.get(resource.kind, {}).get(resource.name)
        key = (resource.kind, resource.name)
        if now is None:
            changes[key] = Change(Action.CREATE, resource.kind, resource.name)
            continue
        differences = _differences(resource, now)
        if not differences:
            continue
        fixed = [d.attribute for d in differences if not updatable(resource.kind, d.attribute)]
        action = Action.REPLACE if fixed else Action.UPDATE
        reason = f"{', '.join(fixed)} cannot be updated" if fixed else ""
        changes[key] = Change(
            action, resource.kind, resource.name, tuple(differences), reason, str(now["id"])
        )
    _cascade(declared, changes, current)
    deletions: list[Change] = []
    if prune:
        for kind in reversed(KINDS):
            wanted = declared.of(kind)
            for name, held in current.get(kind, {}).items():
                if name not in wanted:
                    deletions.append(Change(Action.DELETE, kind, name, current_id=str(held["id"])))
    ordered = [changes[(r.kind, r.name)] for r in declared.resources if (r.kind, r.name) in changes]
    return Plan(ordered + deletions, declared, current, {k: dict(v) for k, v in ids.items()})


def _differences(resource: Declared, now: Mapping[str, Any]) -> list[Difference]:
    found: list[Difference] = []
    for attribute, wanted in resource.values.items():
        have: object = now.get(attribute)
        if attribute not in REFERENCES[resource.kind]:
            # An API value the model would not accept is compared as it is.
            with contextlib.suppress(InvalidInput):
                have = normalize(resource.kind, attribute, have)
        if have != wanted:
            found.append(Difference(attribute, have, wanted))
    return found


def _cascade(
    declared: ApplyFile,
    changes: dict[tuple[ResourceKind, str], Change],
    current: Mapping[ResourceKind, Mapping[str, Mapping[str, Any]]],
) -> None:
    """Replace chains whose groups are replaced, and graphs whose chains are."""
    holders = (
        (ResourceKind.PORT_CHAIN, "port_pair_groups", ResourceKind.PORT_PAIR_GROUP),
        (ResourceKind.SERVICE_GRAPH, "port_chains", ResourceKind.PORT_CHAIN),
    )
    for holder, attribute, target in holders:
        replaced = {name for (kind, name), c in changes.items() if kind is target and _gone(c)}
        shape = REFERENCES[holder][attribute].shape
        for name, resource in current.get(holder, {}).items():
            key = (holder, name)
            if name not in declared.of(holder) or (key in changes and _gone(changes[key])):
                continue
            used = set(_names_in(shape, resource.get(attribute)))
            if used & replaced:
                earlier = changes.get(key)
                changes[key] = Change(
                    Action.REPLACE,
                    holder,
                    name,
                    earlier.differences if earlier else (),
                    f"{target.value} {', '.join(sorted(used & replaced))} is replaced",
                    str(resource["id"]),
                )


def _gone(change: Change) -> bool:
    return change.action in (Action.REPLACE, Action.DELETE)


def _names_in(shape: Shape, value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, Mapping):
        names = [str(k) for k in value]
        for destinations in value.values():
            names.extend(str(d) for d in destinations)
        return names
    return [] if value is None else [str(value)]


# --------------------------------------------------------------------------
# Applying


def execute(plan: Plan, api: NeutronClient, report: Callable[[str], None] = print) -> None:
    """Carry out `plan` against `api` in the four phases; raises ClientError on a refusal."""
    gone = {(c.kind, c.name) for c in plan.changes if _gone(c)}
    declared = {(r.kind, r.name): r for r in plan.declared.resources}
    changes = {(c.kind, c.name): c for c in plan.changes}
    # 1. detach
    detached: set[tuple[ResourceKind, str]] = set()
    for kind in KINDS:
        for name, held in plan.current.get(kind, {}).items():
            if (kind, name) in gone:
                continue
            dropped = _detach(kind, held, declared.get((kind, name)), gone)
            if dropped:
                api.update(kind, str(held["id"]), _ids(plan, kind, dropped))
                detached.add((kind, name))
    # 2. delete
    for kind in reversed(KINDS):
        for change in plan.changes:
            if change.kind is kind and _gone(change) and change.current_id is not None:
                api.delete(kind, change.current_id)
                plan.ids.get(kind, {}).pop(change.name, None)
                if change.action is Action.DELETE:
                    report(str(change))
    # 3. create
    for change in plan.changes:
        if change.action in (Action.CREATE, Action.REPLACE):
            wanted = declared[(change.kind, change.name)]
            made = api.create(
                change.kind, _ids(plan, change.kind, {"name": wanted.name, **wanted.values})
            )
            plan.ids.setdefault(change.kind, {})[change.name] = str(made["id"])
            report(str(change))
    # 4. update: the changed attributes, and every reference list detached in 1.
    for resource in plan.declared.resources:
        key = (resource.kind, resource.name)
        update = changes.get(key)
        if update is not None and update.action is not Action.UPDATE:
            update = None
        if update is None and key not in detached:
            continue
        body: dict[str, Any] = {}
        if update is not None:
            body = {d.attribute: resource.values[d.attribute] for d in update.differences}
        for attribute, ref in REFERENCES[resource.kind].items():
            if ref.shape is Shape.LIST and updatable(resource.kind, attribute):
                body[attribute] = resource.values[attribute]
        api.update(
            resource.kind, plan.ids[resource.kind][resource.name], _ids(plan, resource.kind, body)
        )
        if update is not None:
            report(str(update))


def _detach(
    kind: ResourceKind,
    resource: Mapping[str, Any],
    wanted: Declared | None,
    gone: set[tuple[ResourceKind, str]],
) -> dict[str, Any]:
    """The list references `resource` drops before deletions and creations."""
    body: dict[str, Any] = {}
    for attribute, ref in REFERENCES[kind].items():
        if ref.shape is not Shape.LIST or not updatable(kind, attribute):
            continue
        have = [str(n) for n in resource.get(attribute) or []]
        keep = have if wanted is None else [n for n in have if n in wanted.values[attribute]]
        keep = [n for n in keep if (ref.kind, n) not in gone]
        if keep != have and (keep or attribute != "port_pair_groups"):
            body[attribute] = keep
    return body


def _ids(plan: Plan, kind: ResourceKind, body: Mapping[str, Any]) -> dict[str, Any]:
    """`body` with the names of referenced resources replaced by their ids."""
    result = dict(body)
    for attribute, ref in REFERENCES[kind].items():
        if attribute not in body:
            continue
        names = plan.ids.get(ref.kind, {})
        value = body[attribute]
        if ref.shape is Shape.ONE:
            result[attribute] = None if value is None else names.get(value, value)
        elif ref.shape is Shape.LIST:
            result[attribute] = [names.get(v, v) for v in value]
        else:
            result[attribute] = {
                names.get(src, src): [names.get(d, d) for d in dsts] for src, dsts in value.items()
            }
    return result
