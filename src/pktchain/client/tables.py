"""Readable tables of chaining resources, for the ``pktchain`` resource commands.

References between resources (a group's port pairs, a chain's groups, a
classifier's ports) are ids in the API; the tables show the names they stand
for, given an id → name map, and fall back to the id when it is unknown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from pktchain.sfc.resources import ResourceKind

#: Per kind, the attributes that hold ids of other resources, and their kind.
REFERENCES: dict[ResourceKind, dict[str, ResourceKind]] = {
    ResourceKind.PORT_PAIR: {"ingress": ResourceKind.PORT, "egress": ResourceKind.PORT},
    ResourceKind.PORT_PAIR_GROUP: {"port_pairs": ResourceKind.PORT_PAIR},
    ResourceKind.FLOW_CLASSIFIER: {
        "logical_source_port": ResourceKind.PORT,
        "logical_destination_port": ResourceKind.PORT,
    },
    ResourceKind.PORT_CHAIN: {
        "port_pair_groups": ResourceKind.PORT_PAIR_GROUP,
        "flow_classifiers": ResourceKind.FLOW_CLASSIFIER,
    },
    ResourceKind.SERVICE_GRAPH: {"port_chains": ResourceKind.PORT_CHAIN},
}

Names = Mapping[str, str]
Column = tuple[str, Callable[[dict[str, Any], Names], str]]


def terminal_console() -> Console:
    """A console that is 120 columns wide when writing to a file or a pipe."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _name(ident: object, names: Names) -> str:
    if ident is None or ident == "":
        return "-"
    return names.get(str(ident)) or str(ident)


def _names(idents: object, names: Names) -> str:
    if not isinstance(idents, Sequence) or isinstance(idents, str) or not idents:
        return "-"
    return ", ".join(_name(i, names) for i in idents)


def _graph(chains: object, names: Names) -> str:
    if not isinstance(chains, Mapping) or not chains:
        return "-"
    return "; ".join(f"{_name(src, names)} → {_names(dst, names)}" for src, dst in chains.items())


def port_ranges(resource: Mapping[str, Any], side: str) -> str:
    low = resource.get(f"{side}_port_range_min")
    high = resource.get(f"{side}_port_range_max")
    if low is None and high is None:
        return "any"
    low, high = (0 if low is None else low), (65535 if high is None else high)
    return str(low) if low == high else f"{low}:{high}"


def classifier_match(resource: Mapping[str, Any]) -> str:
    """``IPv4 tcp any → 10.0.0.0/24:80``: what a flow classifier matches."""
    source = resource.get("source_ip_prefix") or "any"
    destination = resource.get("destination_ip_prefix") or "any"
    protocol = resource.get("protocol") or "any"
    ethertype = resource.get("ethertype") or "IPv4"
    if resource.get("protocol") in ("tcp", "udp"):
        source += f":{port_ranges(resource, 'source')}"
        destination += f":{port_ranges(resource, 'destination')}"
    return f"{ethertype} {protocol} {source} → {destination}"


def _get(key: str) -> Callable[[dict[str, Any], Names], str]:
    def get(resource: dict[str, Any], names: Names) -> str:
        value = resource.get(key)
        return "-" if value is None or value == "" else str(value)

    return get


def _ref(key: str) -> Callable[[dict[str, Any], Names], str]:
    return lambda resource, names: _name(resource.get(key), names)


def _refs(key: str) -> Callable[[dict[str, Any], Names], str]:
    return lambda resource, names: _names(resource.get(key), names)


def _ips(resource: dict[str, Any], names: Names) -> str:
    ips = [str(ip.get("ip_address")) for ip in resource.get("fixed_ips") or [] if ip]
    return ", ".join(ips) or "-"


def _weight(resource: dict[str, Any], names: Names) -> str:
    return str((resource.get("service_function_parameters") or {}).get("weight", 1))


def _lb_fields(resource: dict[str, Any], names: Names) -> str:
    parameters = resource.get("port_pair_group_parameters") or {}
    return "&".join(parameters.get("lb_fields") or []) or "5-tuple"


def _symmetric(resource: dict[str, Any], names: Names) -> str:
    return "yes" if (resource.get("chain_parameters") or {}).get("symmetric") else "no"


_ID: Column = ("id", _get("id"))
_NAME: Column = ("name", _get("name"))

COLUMNS: dict[ResourceKind, tuple[Column, ...]] = {
    ResourceKind.PORT: (
        _NAME,
        _ID,
        ("mac", _get("mac_address")),
        ("addresses", _ips),
        ("device", _get("device_id")),
    ),
    ResourceKind.PORT_PAIR: (
        _NAME,
        _ID,
        ("ingress", _ref("ingress")),
        ("egress", _ref("egress")),
        ("weight", _weight),
    ),
    ResourceKind.PORT_PAIR_GROUP: (
        _NAME,
        _ID,
        ("port pairs", _refs("port_pairs")),
        ("lb fields", _lb_fields),
        ("tap", lambda r, n: "yes" if r.get("tap_enabled") else "no"),
    ),
    ResourceKind.FLOW_CLASSIFIER: (
        _NAME,
        _ID,
        ("match", lambda r, n: classifier_match(r)),
        ("source port", _ref("logical_source_port")),
        ("destination port", _ref("logical_destination_port")),
    ),
    ResourceKind.PORT_CHAIN: (
        _NAME,
        _ID,
        ("chain id", _get("chain_id")),
        ("port pair groups", _refs("port_pair_groups")),
        ("flow classifiers", _refs("flow_classifiers")),
        ("symmetric", _symmetric),
    ),
    ResourceKind.SERVICE_GRAPH: (
        _NAME,
        _ID,
        ("port chains", lambda r, n: _graph(r.get("port_chains"), n)),
    ),
}


def list_table(kind: ResourceKind, resources: Sequence[dict[str, Any]], names: Names) -> Table:
    table = Table(title=f"{kind.collection} ({len(resources)})", title_justify="left")
    columns = COLUMNS[kind]
    for header, _ in columns:
        table.add_column(header, no_wrap=header == "id")
    for resource in resources:
        table.add_row(*(render(resource, names) for _, render in columns))
    return table


def resource_table(kind: ResourceKind, resource: dict[str, Any], names: Names) -> Table:
    """Every attribute of one resource, references shown by name."""
    table = Table(title=f"{kind.value} {resource.get('name') or resource.get('id')}")
    table.add_column("field")
    table.add_column("value")
    references = REFERENCES.get(kind, {})
    for key, value in resource.items():
        if key == "tenant_id":
            continue  # the same as project_id
        if key in references:
            if isinstance(value, Mapping):
                text = _graph(value, names)
            elif isinstance(value, list):
                text = _names(value, names)
            else:
                text = _name(value, names)
        else:
            text = _value(value)
        table.add_row(key, text)
    return table


def _value(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        items = [f"{k}={_value(v)}" for k, v in value.items()]
        return ", ".join(items) or "-"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value) or "-"
    return str(value)
