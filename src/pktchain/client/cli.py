"""The resource subcommands: ``pktchain port-pair``, ``port-pair-group``,
``flow-classifier``, ``port-chain``, ``service-graph`` and ``port``.

Each drives a running node's REST API (`pktchain.client.neutron`) with
options named after the openstack client's sfc plugin (``--ingress``,
``--port-pair`` repeatable, ``--no-flow-classifier``, ``--chain-parameters
symmetric=true``, ...). Resources are named by name or id everywhere; the
commands resolve names to ids. Output is a table, or the API's JSON with
``--json``. A refusal of the API is one line (Neutron's message, which names
the attribute) and exit status 1; a mistake in the options exits 2.

Only `argparse` is imported at load time; the client, rich and the model's
enums are imported by the handlers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pktchain.client.options import add_api_options, client_token
from pktchain.errors import UsageError

if TYPE_CHECKING:
    from pktchain.client.neutron import NeutronClient
    from pktchain.sfc.resources import ResourceKind

#: Command name → the resource's singular API name.
COMMANDS = {
    "port-pair": "port_pair",
    "port-pair-group": "port_pair_group",
    "flow-classifier": "flow_classifier",
    "port-chain": "port_chain",
    "service-graph": "service_graph",
    "port": "port",
}

BodyBuilder = Callable[
    ["NeutronClient", argparse.Namespace, "dict[str, Any] | None"], "dict[str, Any]"
]


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_api_options(common)
    common.add_argument("--json", action="store_true", help="print the API's JSON")
    _port_pair(subparsers, common)
    _port_pair_group(subparsers, common)
    _flow_classifier(subparsers, common)
    _port_chain(subparsers, common)
    _service_graph(subparsers, common)
    _port(subparsers, common)


# --------------------------------------------------------------------------
# Parsers


def _group(subparsers: Any, command: str, help: str) -> Any:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        command, help=help, description=f"{help} (docs/cli.md)."
    )
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _action(
    actions: Any, command: str, action: str, common: argparse.ArgumentParser, help: str
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(action, parents=[common], help=help)
    parser.set_defaults(handler=_run, command=command, resource=COMMANDS[command])
    if action == "create":
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--description", help="free text")
    elif action == "list":
        parser.add_argument("--name", dest="filter_name", metavar="NAME", help="only this name")
    elif action in ("show", "set", "unset"):
        parser.add_argument("ref", metavar="NAME_OR_ID")
    elif action == "delete":
        parser.add_argument("refs", metavar="NAME_OR_ID", nargs="+")
    if action == "set":
        parser.add_argument("--name", dest="new_name", metavar="NAME", help="rename")
        parser.add_argument("--description", help="free text")
    return parser


def _standard(actions: Any, command: str, common: argparse.ArgumentParser, label: str) -> None:
    _action(actions, command, "list", common, f"list {label}s")
    _action(actions, command, "show", common, f"show a {label}")
    _action(actions, command, "delete", common, f"delete {label}s")


def _port_pair(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "port-pair", "port pairs: a service function's ports")
    create = _action(actions, "port-pair", "create", common, "create a port pair")
    create.add_argument("--ingress", required=True, metavar="PORT", help="port frames enter by")
    create.add_argument("--egress", required=True, metavar="PORT", help="port frames leave by")
    create.add_argument("--weight", type=int, metavar="N", help="share of new flows (default 1)")
    create.add_argument(
        "--correlation", choices=("none", "nsh"), help="what the function reads (default none)"
    )
    _action(actions, "port-pair", "set", common, "rename or describe a port pair")
    _standard(actions, "port-pair", common, "port pair")


def _port_pair_group(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "port-pair-group", "port pair groups: replicas of a function")
    create = _action(actions, "port-pair-group", "create", common, "create a port pair group")
    create.add_argument("--port-pair", action="append", default=[], metavar="PP", help="repeat")
    create.add_argument("--lb-fields", metavar="F1&F2", help="fields hashed, e.g. ip_src&ip_dst")
    create.add_argument("--tap-enabled", action="store_true", help="receives a copy (tap)")
    update = _action(actions, "port-pair-group", "set", common, "change a port pair group")
    update.add_argument("--port-pair", action="append", default=[], metavar="PP", help="add")
    update.add_argument("--no-port-pair", action="store_true", help="remove all first")
    unset = _action(actions, "port-pair-group", "unset", common, "remove port pairs")
    unset.add_argument("--port-pair", action="append", default=[], metavar="PP", help="remove")
    unset.add_argument("--all-port-pair", action="store_true", help="remove every port pair")
    _standard(actions, "port-pair-group", common, "port pair group")


def _flow_classifier(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "flow-classifier", "flow classifiers: which traffic is chained")
    create = _action(actions, "flow-classifier", "create", common, "create a flow classifier")
    create.add_argument("--ethertype", choices=("IPv4", "IPv6"), help="default IPv4")
    create.add_argument("--protocol", choices=("tcp", "udp", "icmp"))
    create.add_argument("--source-port", metavar="MIN[:MAX]")
    create.add_argument("--destination-port", metavar="MIN[:MAX]")
    create.add_argument("--source-ip-prefix", metavar="CIDR")
    create.add_argument("--destination-ip-prefix", metavar="CIDR")
    create.add_argument("--logical-source-port", metavar="PORT")
    create.add_argument("--logical-destination-port", metavar="PORT")
    _action(actions, "flow-classifier", "set", common, "rename or describe a flow classifier")
    _standard(actions, "flow-classifier", common, "flow classifier")


def _port_chain(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "port-chain", "port chains: classifiers and groups in order")
    create = _action(actions, "port-chain", "create", common, "create a port chain")
    create.add_argument(
        "--port-pair-group", action="append", default=[], metavar="PG", help="in order; repeat"
    )
    create.add_argument("--flow-classifier", action="append", default=[], metavar="FC")
    create.add_argument(
        "--chain-parameters", metavar="K=V,...", help="symmetric=true,correlation=mpls"
    )
    create.add_argument("--chain-id", type=int, metavar="N", help="the chain's SPI")
    update = _action(actions, "port-chain", "set", common, "change a port chain")
    update.add_argument("--port-pair-group", action="append", default=[], metavar="PG")
    update.add_argument("--no-port-pair-group", action="store_true", help="remove all first")
    update.add_argument("--flow-classifier", action="append", default=[], metavar="FC")
    update.add_argument("--no-flow-classifier", action="store_true", help="remove all first")
    unset = _action(actions, "port-chain", "unset", common, "remove groups or classifiers")
    unset.add_argument("--port-pair-group", action="append", default=[], metavar="PG")
    unset.add_argument("--flow-classifier", action="append", default=[], metavar="FC")
    unset.add_argument("--all-flow-classifier", action="store_true")
    _standard(actions, "port-chain", common, "port chain")


def _service_graph(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "service-graph", "service graphs: chains linked to chains")
    create = _action(actions, "service-graph", "create", common, "create a service graph")
    create.add_argument(
        "--branching-point",
        action="append",
        default=[],
        metavar="SRC:DST1,DST2",
        help="a source chain and its destination chains; repeat",
    )
    _action(actions, "service-graph", "set", common, "rename or describe a service graph")
    _standard(actions, "service-graph", common, "service graph")


def _port(subparsers: Any, common: argparse.ArgumentParser) -> None:
    actions = _group(subparsers, "port", "ports: the node's ports, as Neutron ports")
    _action(actions, "port", "list", common, "list ports")
    _action(actions, "port", "show", common, "show a port")


# --------------------------------------------------------------------------
# Running


def _run(args: argparse.Namespace) -> int:
    from pktchain.client.neutron import ClientError, NeutronClient
    from pktchain.sfc.resources import ResourceKind

    kind = ResourceKind(args.resource)
    api = NeutronClient(args.url, client_token(args))
    try:
        return _ACTIONS[args.action](api, kind, args)
    except ClientError as exc:
        print(f"pktchain {args.command} {args.action}: {exc}", file=sys.stderr)
        return 1


def _create(api: NeutronClient, kind: ResourceKind, args: argparse.Namespace) -> int:
    body = _BUILDERS[kind.value](api, args, None)
    body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    _print_resource(api, kind, api.create(kind, body), args.json)
    return 0


def _set(api: NeutronClient, kind: ResourceKind, args: argparse.Namespace) -> int:
    current = api.show(kind, args.ref)
    body = _BUILDERS[kind.value](api, args, current)
    if args.action == "set":
        if args.new_name is not None:
            body["name"] = args.new_name
        if args.description is not None:
            body["description"] = args.description
    if not body:
        raise UsageError(f"{args.command} {args.action}: nothing to change")
    _print_resource(api, kind, api.update(kind, str(current["id"]), body), args.json)
    return 0


def _list(api: NeutronClient, kind: ResourceKind, args: argparse.Namespace) -> int:
    filters = {} if args.filter_name is None else {"name": args.filter_name}
    items = api.list(kind, **filters)
    if args.json:
        _print_json(items)
        return 0
    from pktchain.client.tables import list_table, terminal_console

    terminal_console().print(list_table(kind, items, _names_for(api, kind)))
    return 0


def _show(api: NeutronClient, kind: ResourceKind, args: argparse.Namespace) -> int:
    _print_resource(api, kind, api.show(kind, args.ref), args.json)
    return 0


def _delete(api: NeutronClient, kind: ResourceKind, args: argparse.Namespace) -> int:
    from pktchain.client.neutron import ClientError

    failed = 0
    for ref in args.refs:
        try:
            api.delete(kind, ref)
        except ClientError as exc:
            print(f"pktchain {args.command} delete: {ref}: {exc}", file=sys.stderr)
            failed += 1
        else:
            if not args.json:
                print(f"deleted {kind.value} {ref}")
    return 1 if failed else 0


_ACTIONS: dict[str, Callable[[NeutronClient, ResourceKind, argparse.Namespace], int]] = {
    "create": _create,
    "set": _set,
    "unset": _set,
    "list": _list,
    "show": _show,
    "delete": _delete,
}


def _names_for(api: NeutronClient, kind: ResourceKind) -> dict[str, str]:
    """id → name of every resource `kind`'s resources refer to."""
    from pktchain.client.tables import REFERENCES

    names: dict[str, str] = {}
    for target in dict.fromkeys(REFERENCES.get(kind, {}).values()):
        names.update(api.names(target))
    return names


def _print_resource(
    api: NeutronClient, kind: ResourceKind, resource: dict[str, Any], as_json: bool
) -> None:
    if as_json:
        _print_json(resource)
        return
    from pktchain.client.tables import resource_table, terminal_console

    terminal_console().print(resource_table(kind, resource, _names_for(api, kind)))


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, indent=2))


# --------------------------------------------------------------------------
# Request bodies from options. `current` is the resource being changed by
# set/unset, None on create.


def _port_pair_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    from pktchain.sfc.resources import ResourceKind

    if current is not None:
        return {}
    body: dict[str, Any] = {
        "ingress": api.find_id(ResourceKind.PORT, args.ingress),
        "egress": api.find_id(ResourceKind.PORT, args.egress),
    }
    parameters: dict[str, Any] = {}
    if args.weight is not None:
        parameters["weight"] = args.weight
    if args.correlation is not None:
        parameters["correlation"] = None if args.correlation == "none" else args.correlation
    if parameters:
        body["service_function_parameters"] = parameters
    return body


def _port_pair_group_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    from pktchain.sfc.resources import ResourceKind

    kind = ResourceKind.PORT_PAIR
    if current is None:
        body: dict[str, Any] = {"port_pairs": api.find_ids(kind, args.port_pair)}
        if args.lb_fields is not None:
            fields = [f for f in args.lb_fields.split("&") if f]
            body["port_pair_group_parameters"] = {"lb_fields": fields}
        if args.tap_enabled:
            body["tap_enabled"] = True
        return body
    pairs = _edit_list(
        api,
        kind,
        list(current.get("port_pairs") or []),
        args.port_pair,
        clear=args.action == "set" and args.no_port_pair,
        remove=args.action == "unset",
        remove_all=args.action == "unset" and args.all_port_pair,
    )
    return {} if pairs is None else {"port_pairs": pairs}


def _flow_classifier_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    from pktchain.sfc.resources import ResourceKind

    if current is not None:
        return {}
    body: dict[str, Any] = {}
    for option in ("ethertype", "protocol", "source_ip_prefix", "destination_ip_prefix"):
        value = getattr(args, option)
        if value is not None:
            body[option] = value
    for side in ("source", "destination"):
        text = getattr(args, f"{side}_port")
        if text is not None:
            low, high = port_range(text, f"--{side}-port")
            body[f"{side}_port_range_min"] = low
            body[f"{side}_port_range_max"] = high
    for side in ("source", "destination"):
        port = getattr(args, f"logical_{side}_port")
        if port is not None:
            body[f"logical_{side}_port"] = api.find_id(ResourceKind.PORT, port)
    return body


def _port_chain_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    from pktchain.sfc.resources import ResourceKind

    groups_kind, classifiers_kind = ResourceKind.PORT_PAIR_GROUP, ResourceKind.FLOW_CLASSIFIER
    if current is None:
        if not args.port_pair_group:
            raise UsageError("port-chain create: give at least one --port-pair-group")
        parameters = (
            None if args.chain_parameters is None else chain_parameters(args.chain_parameters)
        )
        body: dict[str, Any] = {
            "port_pair_groups": api.find_ids(groups_kind, args.port_pair_group),
            "flow_classifiers": api.find_ids(classifiers_kind, args.flow_classifier),
        }
        if parameters is not None:
            body["chain_parameters"] = parameters
        if args.chain_id is not None:
            body["chain_id"] = args.chain_id
        return body
    unset = args.action == "unset"
    body = {}
    groups = _edit_list(
        api,
        groups_kind,
        list(current.get("port_pair_groups") or []),
        args.port_pair_group,
        clear=not unset and args.no_port_pair_group,
        remove=unset,
        remove_all=False,
    )
    if groups is not None:
        body["port_pair_groups"] = groups
    classifiers = _edit_list(
        api,
        classifiers_kind,
        list(current.get("flow_classifiers") or []),
        args.flow_classifier,
        clear=not unset and args.no_flow_classifier,
        remove=unset,
        remove_all=unset and args.all_flow_classifier,
    )
    if classifiers is not None:
        body["flow_classifiers"] = classifiers
    return body


def _service_graph_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    from pktchain.sfc.resources import ResourceKind

    if current is not None:
        return {}
    if not args.branching_point:
        raise UsageError("service-graph create: give at least one --branching-point SRC:DST,...")
    chains: dict[str, list[str]] = {}
    kind = ResourceKind.PORT_CHAIN
    for text in args.branching_point:
        source, colon, destinations = text.partition(":")
        targets = [d for d in destinations.split(",") if d]
        if not colon or not source or not targets:
            raise UsageError(f"--branching-point {text!r}: expected SRC_CHAIN:DST_CHAIN[,DST...]")
        chains[api.find_id(kind, source)] = api.find_ids(kind, targets)
    return {"port_chains": chains}


def _port_body(
    api: NeutronClient, args: argparse.Namespace, current: dict[str, Any] | None
) -> dict[str, Any]:
    return {}


_BUILDERS: dict[str, BodyBuilder] = {
    "port_pair": _port_pair_body,
    "port_pair_group": _port_pair_group_body,
    "flow_classifier": _flow_classifier_body,
    "port_chain": _port_chain_body,
    "service_graph": _service_graph_body,
    "port": _port_body,
}


def _edit_list(
    api: NeutronClient,
    kind: ResourceKind,
    ids: list[str],
    refs: Sequence[str],
    *,
    clear: bool,
    remove: bool,
    remove_all: bool,
) -> list[str] | None:
    """The new id list after adding or removing `refs`, or None if untouched."""
    if not refs and not clear and not remove_all:
        return None
    if remove_all:
        return []
    given = api.find_ids(kind, refs)
    if remove:
        return [i for i in ids if i not in given]
    base = [] if clear else ids
    return base + [i for i in given if i not in base]


# --------------------------------------------------------------------------
# Option values


def port_range(text: str, option: str) -> tuple[int, int]:
    """``80`` → (80, 80); ``1000:2000`` → (1000, 2000)."""
    low_text, colon, high_text = text.partition(":")
    try:
        low = int(low_text)
        high = int(high_text) if colon else low
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected PORT or MIN:MAX") from None
    for value in (low, high):
        if not 0 <= value <= 65535:
            raise UsageError(f"{option} {text!r}: ports are 0 to 65535")
    if low > high:
        raise UsageError(f"{option} {text!r}: MIN is above MAX")
    return low, high


_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def chain_parameters(text: str) -> dict[str, Any]:
    """``symmetric=true,correlation=mpls`` → {"symmetric": True, "correlation": "mpls"}."""
    parameters: dict[str, Any] = {}
    for item in text.split(","):
        key, equals, value = item.strip().partition("=")
        if not equals:
            raise UsageError(f"--chain-parameters {item!r}: expected KEY=VALUE")
        if key == "symmetric":
            if value.lower() not in _TRUE + _FALSE:
                raise UsageError(f"--chain-parameters symmetric={value!r}: expected true or false")
            parameters[key] = value.lower() in _TRUE
        elif key == "correlation":
            parameters[key] = value
        else:
            raise UsageError(
                f"--chain-parameters {key!r}: unknown parameter (symmetric, correlation)"
            )
    return parameters
