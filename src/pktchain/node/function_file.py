"""Native functions a node runs, described in a YAML file (`pktchain node --functions FILE`).

    functions:
      - name: fw1                    # its ports are fw1:ingress, fw1:egress
        kind: firewall               # a built-in, or package.module:ClassName
        network: default             # node network of every interface, or {iface: network}
        config:                      # the function's configuration (its schema)
          default: drop
          rules:
            - {action: accept, protocol: tcp, dport: 80}
        export: /var/log/fw1.jsonl   # where records a function exports go (JSON lines)

Every function is built while the file is read, so every mistake (an unknown
kind, a wrong field anywhere in a configuration) is reported at once, each with
its line, as for lab topologies.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pktchain.functions.sdk import Function, FunctionLoadError, function_class
from pktchain.functions.sdk.schema import ConfigError, FieldError
from pktchain.lab.errors import TopologyError, TopologyIssue
from pktchain.node.dataplane.switch import DEFAULT_NETWORK
from pktchain.yamlfile import compose, item_line, key_line, line_of

FUNCTION_KEYS = ("name", "kind", "network", "config", "export", "pcap")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
"""A function's name (matched whole): its ports are NAME:IFACE."""


@dataclass(frozen=True)
class FunctionSpec:
    """One function to run: what it is, its configuration and where its interfaces go."""

    name: str
    kind: str
    config: Mapping[str, Any] = field(default_factory=dict)
    networks: Mapping[str, str] = field(default_factory=dict)
    """Interface → node network."""
    export: Path | None = None
    pcap: Mapping[str, Path] = field(default_factory=dict)
    """Interfaces written to pcap files instead of joining a network."""

    def build(self) -> Function:
        return function_class(self.kind).from_config(self.config)

    def mac(self, iface: str, node: str = "") -> str:
        """A stable, locally administered unicast MAC for one of its interfaces."""
        digest = hashlib.blake2b(f"{node}/{self.name}/{iface}".encode(), digest_size=5).digest()
        return "02:" + digest.hex(":")


class FunctionFileError(TopologyError):
    """A functions file has mistakes, all listed in `issues` with their lines."""


def load_functions(path: Path) -> tuple[FunctionSpec, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise FunctionFileError(
            [TopologyIssue(str(path), None, "", f"cannot read: {exc.strerror}")]
        ) from exc
    return parse_functions(text, source=str(path))


def parse_functions(text: str, *, source: str = "<functions>") -> tuple[FunctionSpec, ...]:
    data, issues = compose(text, source, FunctionFileError)
    if issues:
        raise FunctionFileError(issues)
    # The composed document keeps every scalar as text, with its line (for
    # errors); configurations take YAML's own types (80 is a number, true a
    # boolean), read from the same text.
    typed = yaml.safe_load(text)
    typed_items = typed.get("functions") if isinstance(typed, Mapping) else None
    errors: list[TopologyIssue] = []

    def error(where: str, line: int | None, message: str) -> None:
        errors.append(TopologyIssue(source, line, where, message))

    items = data.get("functions") if isinstance(data, Mapping) else None
    if isinstance(data, Mapping):
        for key in data:
            if key != "functions":
                error(str(key), key_line(data, key), "unknown field (expected `functions`)")
    if not isinstance(items, Sequence) or isinstance(items, str):
        error("functions", line_of(data), "expected a list of functions")
        raise FunctionFileError(errors)
    specs: list[FunctionSpec] = []
    names: set[str] = set()
    for index, item in enumerate(items):
        where = f"functions[{index}]"
        line = item_line(items, index)
        if not isinstance(item, Mapping):
            error(where, line, "expected a mapping with `name` and `kind`")
            continue
        for key in item:
            if key not in FUNCTION_KEYS:
                error(f"{where}.{key}", key_line(item, key), "unknown field")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            error(f"{where}.name", key_line(item, "name"), f"{name!r} is not a function name")
            continue
        if name in names:
            error(f"{where}.name", key_line(item, "name"), f"{name!r} is declared twice")
        names.add(name)
        kind = item.get("kind")
        if not isinstance(kind, str):
            error(f"{where}.kind", key_line(item, "kind"), "required: a built-in or module:Class")
            continue
        try:
            cls = function_class(kind)
        except FunctionLoadError as exc:
            error(f"{where}.kind", key_line(item, "kind"), str(exc))
            continue
        config = item.get("config") or {}
        if isinstance(typed_items, list) and isinstance(typed_items[index], Mapping):
            typed_config = typed_items[index].get("config") or {}
        else:  # pragma: no cover - both readings of one text have one shape
            typed_config = config
        if not isinstance(config, Mapping) or not isinstance(typed_config, Mapping):
            error(f"{where}.config", key_line(item, "config"), "expected a mapping")
            continue
        try:
            cls.from_config(typed_config)
        except ConfigError as exc:
            for problem in exc.errors:
                error(
                    f"{where}.config.{problem.field}".rstrip("."),
                    _path_line(config, problem.field) or key_line(item, "config"),
                    problem.message,
                )
            continue
        networks = _networks(item.get("network", DEFAULT_NETWORK), cls.INTERFACES)
        if isinstance(networks, str):
            error(f"{where}.network", key_line(item, "network"), networks)
            continue
        pcap = _pcap(item.get("pcap"), cls.INTERFACES)
        if isinstance(pcap, str):
            error(f"{where}.pcap", key_line(item, "pcap"), pcap)
            continue
        export = item.get("export")
        specs.append(
            FunctionSpec(
                name,
                kind,
                dict(typed_config),
                {iface: net for iface, net in networks.items() if iface not in pcap},
                Path(str(export)) if export else None,
                pcap,
            )
        )
    if errors:
        raise FunctionFileError(errors)
    return tuple(specs)


def spec_from_mapping(data: Mapping[str, Any]) -> FunctionSpec:
    """A function spec from an API body; ConfigError lists every wrong field."""
    errors: list[FieldError] = []
    for key in data:
        if key not in FUNCTION_KEYS:
            errors.append(FieldError(str(key), "unknown field"))
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        errors.append(FieldError("name", f"{name!r} is not a function name"))
    kind = data.get("kind")
    cls: type[Function] | None = None
    if not isinstance(kind, str):
        errors.append(FieldError("kind", "required: a built-in or package.module:ClassName"))
    else:
        try:
            cls = function_class(kind)
        except FunctionLoadError as exc:
            errors.append(FieldError("kind", str(exc)))
    config = data.get("config")
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        errors.append(FieldError("config", "expected an object"))
    elif cls is not None:
        try:
            cls.from_config(config)
        except ConfigError as exc:
            errors.extend(
                FieldError(f"config.{e.field}".rstrip("."), e.message) for e in exc.errors
            )
    networks: dict[str, str] | str = {}
    if cls is not None:
        networks = _networks(data.get("network", DEFAULT_NETWORK), cls.INTERFACES)
        if isinstance(networks, str):
            errors.append(FieldError("network", networks))
    export = data.get("export")
    if export is not None and not isinstance(export, str):
        errors.append(FieldError("export", "expected a file path"))
    pcap: dict[str, Path] | str = {}
    if cls is not None:
        pcap = _pcap(data.get("pcap"), cls.INTERFACES)
        if isinstance(pcap, str):
            errors.append(FieldError("pcap", pcap))
    if errors or cls is None or isinstance(networks, str) or isinstance(pcap, str):
        raise ConfigError(errors, subject="function")
    return FunctionSpec(
        str(name),
        str(kind),
        dict(config),
        {iface: net for iface, net in networks.items() if iface not in pcap},
        Path(export) if export else None,
        pcap,
    )


def _pcap(value: Any, interfaces: Sequence[str]) -> dict[str, Path] | str:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return "expected a mapping of interface to pcap file"
    unknown = sorted(set(map(str, value)) - set(interfaces))
    if unknown:
        return f"no interface {', '.join(unknown)} (it has {', '.join(interfaces)})"
    if not all(isinstance(path, str) and path for path in value.values()):
        return "expected a file path for each interface"
    return {str(iface): Path(path) for iface, path in value.items()}


def _networks(value: Any, interfaces: Sequence[str]) -> dict[str, str] | str:
    if isinstance(value, str):
        return dict.fromkeys(interfaces, value)
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(interfaces))
        if unknown:
            return f"no interface {', '.join(unknown)} (it has {', '.join(interfaces)})"
        if not all(isinstance(network, str) for network in value.values()):
            return "expected a network name for each interface"
        return {iface: str(value.get(iface, DEFAULT_NETWORK)) for iface in interfaces}
    return "expected a network name or a mapping of interface to network"


def _path_line(config: Any, path: str) -> int | None:
    """The line of a dotted field path (``rules[2].dport``) inside the config mapping."""
    node = config
    line = None
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("[") and isinstance(node, Sequence) and not isinstance(node, str):
            index = int(part[1:-1])
            if index >= len(node):
                break
            line = item_line(node, index) or line
            node = node[index]
        elif isinstance(node, Mapping) and part in node:
            line = key_line(node, part) or line
            node = node[part]
        else:
            break
    return line
