"""Reading and checking a declarative apply file.

The file (format in ``docs/cli.md``) declares chaining resources by name,
in one section per collection (``port_pairs``, ``port_pair_groups``,
``flow_classifiers``, ``port_chains``, ``service_graphs``), each a mapping of
name → attributes with networking-sfc's attribute names; references to other
resources are names (ports by node-port name, ``vm1:in``). An optional
``topology`` holds the lab the resources run on, inline or as a path.

The whole file is checked before anything is sent, and every mistake is
reported at once with its line and field: YAML is read with the lab
topology's line-keeping loader, values are converted by the model's own
attribute converters (so the file accepts exactly what the API accepts), and
the lab part is checked by the lab's topology parser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from pktchain.lab.errors import TopologyError, TopologyIssue
from pktchain.lab.topology import Topology, load_topology, topology_from_dict
from pktchain.sfc.attributes import ATTRIBUTES
from pktchain.sfc.errors import InvalidInput
from pktchain.sfc.resources import FrozenMap, ResourceKind
from pktchain.yamlfile import compose, item_line, key_line, kind_of, line_of

#: The sections of a file, in dependency order (each refers only to earlier ones).
KINDS: tuple[ResourceKind, ...] = (
    ResourceKind.PORT_PAIR,
    ResourceKind.PORT_PAIR_GROUP,
    ResourceKind.FLOW_CLASSIFIER,
    ResourceKind.PORT_CHAIN,
    ResourceKind.SERVICE_GRAPH,
)
TOPOLOGY_KEY = "topology"
TOP_KEYS = (TOPOLOGY_KEY, *(kind.collection for kind in KINDS))


class ApplyFileError(TopologyError):
    """An apply file has one or more mistakes, all listed in `issues` (file order)."""


class Shape(Enum):
    """How an attribute refers to other resources."""

    ONE = "one"  # a name, or null
    LIST = "list"  # a list of names, in order
    GRAPH = "graph"  # a mapping of name → list of names (a service graph's chains)


@dataclass(frozen=True)
class Reference:
    kind: ResourceKind
    shape: Shape


#: Per kind, the attributes that name other resources.
REFERENCES: dict[ResourceKind, dict[str, Reference]] = {
    ResourceKind.PORT_PAIR: {
        "ingress": Reference(ResourceKind.PORT, Shape.ONE),
        "egress": Reference(ResourceKind.PORT, Shape.ONE),
    },
    ResourceKind.PORT_PAIR_GROUP: {
        "port_pairs": Reference(ResourceKind.PORT_PAIR, Shape.LIST),
    },
    ResourceKind.FLOW_CLASSIFIER: {
        "logical_source_port": Reference(ResourceKind.PORT, Shape.ONE),
        "logical_destination_port": Reference(ResourceKind.PORT, Shape.ONE),
    },
    ResourceKind.PORT_CHAIN: {
        "port_pair_groups": Reference(ResourceKind.PORT_PAIR_GROUP, Shape.LIST),
        "flow_classifiers": Reference(ResourceKind.FLOW_CLASSIFIER, Shape.LIST),
    },
    ResourceKind.SERVICE_GRAPH: {
        "port_chains": Reference(ResourceKind.PORT_CHAIN, Shape.GRAPH),
    },
}

#: Attributes the API assigns when a file leaves them out: compared only when given.
ASSIGNED = frozenset({"chain_id"})
#: Attributes a file never gives: the key is the name; the others are the API's.
NOT_DECLARED = frozenset({"name", "project_id", "tenant_id", "group_id"})
#: Defaults the model's converters do not give from an absent value.
DEFAULTS: dict[str, object] = {"tap_enabled": False}


def declarable(kind: ResourceKind) -> tuple[str, ...]:
    """The attributes a file may give for `kind`, in the API's order."""
    return tuple(
        name
        for name, attribute in ATTRIBUTES[kind].items()
        if attribute.allow_post and name not in NOT_DECLARED
    )


def updatable(kind: ResourceKind, attribute: str) -> bool:
    """Whether networking-sfc lets an update change `attribute`."""
    return ATTRIBUTES[kind][attribute].allow_put


def to_json(value: object) -> object:
    """The API's JSON form of a converted attribute value."""
    if isinstance(value, Enum):
        return value.value
    to_dict: Callable[[], object] | None = getattr(value, "to_dict", None)
    if to_dict is not None:
        return to_dict()
    if isinstance(value, FrozenMap | Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    return value


def normalize(kind: ResourceKind, attribute: str, value: object) -> object:
    """`value` (file text or API JSON) in the API's canonical JSON form.

    Both sides of a comparison go through the model's converter, so that
    ``weight: "1"`` in a file equals ``1`` from the API. Raises InvalidInput.
    """
    if value is None and attribute in DEFAULTS:
        value = DEFAULTS[attribute]
    return to_json(ATTRIBUTES[kind][attribute].convert(attribute, value))


@dataclass(frozen=True)
class Declared:
    """One resource of the file: its attributes, with references as names.

    `values` holds every declarable attribute except those of `ASSIGNED` the
    file leaves out: given ones converted to the API's JSON form, absent ones
    as their defaults, so that a comparison with the API is complete.
    """

    kind: ResourceKind
    name: str
    line: int | None
    values: dict[str, Any]
    lines: dict[str, int | None]

    def line_of(self, attribute: str) -> int | None:
        return self.lines.get(attribute, self.line)

    def references(self) -> list[tuple[str, ResourceKind, str]]:
        """(attribute, kind, name) of every resource this one names."""
        found: list[tuple[str, ResourceKind, str]] = []
        for attribute, ref in REFERENCES[self.kind].items():
            for name in referenced_names(ref.shape, self.values.get(attribute)):
                found.append((attribute, ref.kind, name))
        return found


def referenced_names(shape: Shape, value: object) -> list[str]:
    if value is None:
        return []
    if shape is Shape.ONE:
        return [str(value)]
    if shape is Shape.LIST and isinstance(value, list):
        return [str(v) for v in value]
    if shape is Shape.GRAPH and isinstance(value, Mapping):
        names: list[str] = []
        for source, destinations in value.items():
            names.append(str(source))
            names.extend(str(d) for d in destinations)
        return names
    return []


@dataclass(frozen=True)
class ApplyFile:
    """A checked apply file."""

    source: str
    resources: tuple[Declared, ...]
    """Every declared resource, in dependency order, then file order."""
    topology: Topology | None = None
    topology_file: Path | None = None
    """The topology's own file when the file names one (what `pktchain node` needs)."""

    def of(self, kind: ResourceKind) -> dict[str, Declared]:
        return {r.name: r for r in self.resources if r.kind is kind}


def load_apply_file(path: str | Path) -> ApplyFile:
    """Read and check an apply file; ApplyFileError lists every mistake."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ApplyFileError([TopologyIssue(source, None, "", f"cannot read: {reason}")]) from exc
    return parse_apply_file(text, source=source, base=Path(path).parent)


def parse_apply_file(text: str, *, source: str = "<string>", base: Path | None = None) -> ApplyFile:
    """Check YAML text; `base` is where a relative `topology` path starts."""
    data, issues = compose(text, source, ApplyFileError)
    reader = _Reader(source, base or Path.cwd())
    reader.issues.extend(issues)
    result = reader.document(data)
    if reader.issues:
        raise ApplyFileError(reader.issues)
    return result


class _Reader:
    """Walks the data once, recording every issue instead of stopping at the first."""

    def __init__(self, source: str, base: Path) -> None:
        self.source = source
        self.base = base
        self.issues: list[TopologyIssue] = []

    def error(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(TopologyIssue(self.source, line, path, message))

    def document(self, data: Any) -> ApplyFile:
        if not isinstance(data, Mapping):
            self.error("", line_of(data), f"expected a mapping of {', '.join(TOP_KEYS)}")
            return ApplyFile(self.source, ())
        for key in data:
            if key not in TOP_KEYS:
                self.error(
                    key, key_line(data, key), f"unknown section (expected: {', '.join(TOP_KEYS)})"
                )
        topology, topology_file = self.topology(data)
        resources: list[Declared] = []
        for kind in KINDS:
            resources.extend(self.section(data, kind))
        self.check_references(resources)
        return ApplyFile(self.source, tuple(resources), topology, topology_file)

    # -- the lab -----------------------------------------------------------------------

    def topology(self, data: Mapping[str, Any]) -> tuple[Topology | None, Path | None]:
        if TOPOLOGY_KEY not in data:
            return None, None
        value = data[TOPOLOGY_KEY]
        line = key_line(data, TOPOLOGY_KEY)
        try:
            if isinstance(value, str):
                path = self.base / value
                return load_topology(path), path
            if isinstance(value, Mapping):
                return topology_from_dict(value, source=self.source), None
        except TopologyError as exc:
            for issue in exc.issues:
                if issue.source == self.source:
                    field = f"{TOPOLOGY_KEY}.{issue.field}" if issue.field else TOPOLOGY_KEY
                    self.issues.append(dataclasses.replace(issue, field=field))
                else:  # an issue in the topology's own file, which names itself
                    self.issues.append(issue)
            return None, None
        self.error(TOPOLOGY_KEY, line, "expected a lab topology, or the path of its file")
        return None, None

    # -- resources ---------------------------------------------------------------------

    def section(self, data: Mapping[str, Any], kind: ResourceKind) -> list[Declared]:
        key = kind.collection
        if key not in data or data[key] is None:
            return []
        section = data[key]
        if not isinstance(section, Mapping):
            self.error(key, key_line(data, key), f"expected a mapping of name → {kind.value}")
            return []
        declared: list[Declared] = []
        for name, body in section.items():
            resource = self.resource(kind, name, body, key_line(section, name))
            if resource is not None:
                declared.append(resource)
        return declared

    def resource(
        self, kind: ResourceKind, name: str, body: Any, line: int | None
    ) -> Declared | None:
        path = f"{kind.collection}.{name}"
        if len(name) > 255:
            self.error(path, line, "a name has at most 255 characters")
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            self.error(path, line, f"expected the {kind.value}'s attributes, got {kind_of(body)}")
            return None
        allowed = declarable(kind)
        values: dict[str, Any] = {}
        lines: dict[str, int | None] = {}
        for key in body:
            if key not in allowed:
                hint = "the key is the name" if key == "name" else f"expected: {', '.join(allowed)}"
                self.error(f"{path}.{key}", key_line(body, key), f"unknown field ({hint})")
        issues_before = len(self.issues)
        for attribute in allowed:
            given = attribute in body
            where = key_line(body, attribute) if given else line
            lines[attribute] = where
            if not given and attribute in ASSIGNED:
                continue
            if not given and ATTRIBUTES[kind][attribute].required:
                self.error(f"{path}.{attribute}", line, "missing: this field is required")
                continue
            value = body.get(attribute)
            field = f"{path}.{attribute}"
            ref = REFERENCES[kind].get(attribute)
            if ref is not None:
                values[attribute] = self.reference(ref, value, field, where)
                continue
            try:
                values[attribute] = normalize(kind, attribute, value)
            except InvalidInput as exc:
                # The converter names the attribute path it was given; the
                # file's path goes in front of it.
                sub = exc.field[len(attribute) :] if exc.field.startswith(attribute) else ""
                self.error(field + sub, where, exc.reason)
        if len(self.issues) > issues_before:
            return None
        return Declared(kind, name, line, values, lines)

    def reference(self, ref: Reference, value: Any, field: str, line: int | None) -> Any:
        label = ref.kind.value
        if ref.shape is Shape.ONE:
            if value is None:
                return None
            if not isinstance(value, str) or not value:
                self.error(field, line, f"expected the name of a {label}, got {kind_of(value)}")
            return value
        if ref.shape is Shape.LIST:
            if value is None:
                return []
            if not isinstance(value, Sequence) or isinstance(value, str):
                self.error(field, line, f"expected a list of {label} names, got {kind_of(value)}")
                return []
            names: list[str] = []
            for index, item in enumerate(value):
                at = item_line(value, index)
                if not isinstance(item, str) or not item:
                    self.error(f"{field}[{index}]", at, f"expected a {label} name")
                elif item in names:
                    self.error(f"{field}[{index}]", at, f"{item!r} is listed twice")
                else:
                    names.append(item)
            if not names and field.endswith(".port_pair_groups"):
                self.error(field, line, "a port chain needs at least one port pair group")
            return names
        if not isinstance(value, Mapping) or not value:
            self.error(field, line, "expected a mapping of source chain → [destination chains]")
            return {}
        graph: dict[str, list[str]] = {}
        for source, destinations in value.items():
            source_line = key_line(value, source)
            if not isinstance(destinations, Sequence) or isinstance(destinations, str):
                self.error(f"{field}.{source}", source_line, "expected a list of chain names")
                continue
            graph[source] = [str(d) for d in destinations if d is not None]
            if not graph[source]:
                self.error(f"{field}.{source}", source_line, "expected at least one chain")
        return graph

    def check_references(self, resources: Sequence[Declared]) -> None:
        """Names of the file's own kinds must be declared in it (ports are the node's)."""
        for kind in KINDS:
            names = [r.name for r in resources if r.kind is kind]
            for resource in resources:
                for attribute, target, name in resource.references():
                    if target is kind and name not in names:
                        self.error(
                            f"{resource.kind.collection}.{resource.name}.{attribute}",
                            resource.line_of(attribute),
                            f"no {target.value} {name!r} in this file "
                            f"(declare it under {target.collection})",
                        )
