"""schemathesis hooks for fuzzing the REST API: the rules its document states in words.

The OpenAPI document of the API states every rule on a single value as JSON
Schema, and the few that tie two values together (which JSON Schema cannot
express) in the descriptions of the schemas they belong to
(`pktchain.api.schemas.CROSS_FIELD_RULES`, `ROUTER_OPERATION_RULES`). A
request generated as valid by the schema alone may break one of those, and
the API rightly answers 400. So that `positive_data_acceptance` judges the
API against its whole document, each valid case is brought within those
rules here, changing no more than the rule asks (swap a range's ends, clear
host bits, put the router's address in its subnet):

- a ``tenant_id`` given with a ``project_id`` equals it;
- a classifier's port range has its minimum first; an IP prefix has no host bits;
- ``sort_dir`` has one direction per ``sort_key`` (or none);
- ``router_nic_add``: the NIC's ``ip`` and ``gateway`` lie in its ``subnet``
  as the operation's description says.

And a function created by a valid case writes no files: its ``export`` and
``pcap`` paths, which the node would open wherever they point, are dropped.

Loaded by ``st run`` through the ``hooks`` of tests/support/schemathesis.toml
(``tests`` on ``PYTHONPATH``), and by tests/unit/api/test_api_fuzz.py, which
fuzzes the application in process: importing the module registers the hooks.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import schemathesis
from schemathesis import Case, HookContext

_PREFIX_KEYS = ("source_ip_prefix", "destination_ip_prefix")
_RANGES = (
    ("source_port_range_min", "source_port_range_max"),
    ("destination_port_range_min", "destination_port_range_max"),
)


@schemathesis.hook
def map_case(context: HookContext, case: Case) -> Case:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return case
    path, method = case.operation.path, case.method.upper()
    if isinstance(case.query, dict):
        _one_direction_per_key(case.query)
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return case
    if path.startswith("/v2.0/sfc/") and method == "POST":
        for item in _resources(body):
            _same_project(item)
            _network_prefixes(item)
            _ordered_ranges(item)
            groups = item.get("port_pair_group_parameters")
            mapping = groups.get("ppg_n_tuple_mapping") if isinstance(groups, dict) else None
            if isinstance(mapping, dict):
                for n_tuple in mapping.values():
                    if isinstance(n_tuple, dict):
                        _network_prefixes(n_tuple)
    elif path == "/v2.0/pktchain/router/router_nic_add":
        _nic_in_subnet(body)
    elif path == "/v2.0/pktchain/functions" and isinstance(body.get("function"), dict):
        body["function"].pop("export", None)
        body["function"].pop("pcap", None)
    return case


def _resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The resources of a create body: ``{"port_pair": {...}}`` or ``{"port_pairs": [...]}``."""
    if len(body) != 1:
        return []
    (inner,) = body.values()
    if isinstance(inner, dict):
        return [inner]
    if isinstance(inner, list):
        return [item for item in inner if isinstance(item, dict)]
    return []


def _same_project(item: dict[str, Any]) -> None:
    if "tenant_id" in item and "project_id" in item:
        item["tenant_id"] = item["project_id"]


def _network_prefixes(item: dict[str, Any]) -> None:
    for key in _PREFIX_KEYS:
        value = item.get(key)
        if isinstance(value, str):
            item[key] = str(ipaddress.ip_network(value, strict=False))


def _ordered_ranges(item: dict[str, Any]) -> None:
    for low_key, high_key in _RANGES:
        low, high = item.get(low_key), item.get(high_key)
        if low is not None and high is not None and int(low) > int(high):
            item[low_key], item[high_key] = high, low


def _one_direction_per_key(query: dict[str, Any]) -> None:
    keys, directions = query.get("sort_key"), query.get("sort_dir")
    if directions is None:
        return
    count = len(keys) if isinstance(keys, list) else (0 if keys is None else 1)
    if not isinstance(directions, list):
        directions = [directions]
    if count == 0:
        del query["sort_dir"]
    else:
        query["sort_dir"] = (directions + ["asc"] * count)[:count]


def _nic_in_subnet(args: dict[str, Any]) -> None:
    subnet_text = args.get("subnet")
    if not isinstance(subnet_text, str):
        return
    subnet = ipaddress.IPv4Network(subnet_text, strict=False)
    args["subnet"] = str(subnet)
    hosts = [subnet.network_address + 1, subnet.network_address + 2]
    try:
        ip = ipaddress.IPv4Address(args.get("ip"))
    except ValueError:
        return
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        ip = hosts[0]
        args["ip"] = str(ip)
    if "gateway" in args:
        external = args.get("external") is True
        args["gateway"] = str(next(h for h in hosts if h != ip) if external else ip)
