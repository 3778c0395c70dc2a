"""Labs: topologies of hosts in network namespaces, for tests, demos and benchmarks.

A lab is a set of hosts, each a network namespace named ``pc-<lab>.<host>``,
joined by veths to each other or to bridges (kept in the lab's own
``pc-<lab>.fabric`` namespace, so the root namespace is never touched), with
addresses, routes, sysctls and background commands, as declared in a YAML
topology (see ``docs/lab.md``)::

    from pktchain.lab import Lab

    with Lab.up("examples/lab-two-hosts.yaml") as lab:
        print(lab.host("h1").run(["ping", "-c1", "10.0.0.2"]).stdout)

Interfaces declared ``attach: node`` are left for the pktchain node, which
creates them and then calls `configure_node_port` (or `configure_interface`
and `add_routes`). A topology with ``nodes`` describes several nodes, each a
namespace ``pc-<lab>.<node>`` on an underlay bridge, with an etcd the lab runs
in its fabric; each host names the node that makes its ports.

The names below are imported on first use, so that importing this package
(which the CLI and the pytest plugin do at start) does not load pyroute2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pktchain.lab.errors import (
        CommandFailedError,
        CommandTimeoutError,
        LabError,
        LabExistsError,
        LabOSError,
        TopologyError,
        TopologyIssue,
        WaitTimeoutError,
    )
    from pktchain.lab.lab import (
        CommandResult,
        Lab,
        LabHost,
        Teardown,
        as_topology,
        down,
        down_all,
        running_labs,
    )
    from pktchain.lab.links import (
        TcpConnection,
        TcpSocketState,
        add_routes,
        configure_interface,
        configure_node_port,
        interface_addresses,
        limit_gso,
        listening,
        tcp_connections,
    )
    from pktchain.lab.topology import (
        Attachment,
        BridgePort,
        EtcdSpec,
        Host,
        Interface,
        InterfaceRef,
        NodePort,
        NodeSpec,
        Route,
        Topology,
        load_topology,
        netns_name,
        node_host_spec,
        parse_route,
        parse_topology,
        topology_from_dict,
    )
    from pktchain.lab.wait import wait_until

_EXPORTS = {
    "pktchain.lab.errors": (
        "CommandFailedError",
        "CommandTimeoutError",
        "LabError",
        "LabExistsError",
        "LabOSError",
        "TopologyError",
        "TopologyIssue",
        "WaitTimeoutError",
    ),
    "pktchain.lab.lab": (
        "CommandResult",
        "Lab",
        "LabHost",
        "Teardown",
        "as_topology",
        "down",
        "down_all",
        "running_labs",
    ),
    "pktchain.lab.links": (
        "add_routes",
        "configure_interface",
        "TcpConnection",
        "TcpSocketState",
        "configure_node_port",
        "interface_addresses",
        "limit_gso",
        "listening",
        "tcp_connections",
    ),
    "pktchain.lab.topology": (
        "Attachment",
        "BridgePort",
        "EtcdSpec",
        "Host",
        "Interface",
        "InterfaceRef",
        "NodePort",
        "NodeSpec",
        "Route",
        "Topology",
        "load_topology",
        "netns_name",
        "node_host_spec",
        "parse_route",
        "parse_topology",
        "topology_from_dict",
    ),
    "pktchain.lab.wait": ("wait_until",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Attachment",
    "BridgePort",
    "CommandFailedError",
    "CommandResult",
    "CommandTimeoutError",
    "EtcdSpec",
    "Host",
    "Interface",
    "InterfaceRef",
    "Lab",
    "LabError",
    "LabExistsError",
    "LabHost",
    "LabOSError",
    "NodePort",
    "NodeSpec",
    "Route",
    "TcpConnection",
    "TcpSocketState",
    "Teardown",
    "Topology",
    "TopologyError",
    "TopologyIssue",
    "WaitTimeoutError",
    "add_routes",
    "as_topology",
    "configure_interface",
    "configure_node_port",
    "down",
    "down_all",
    "interface_addresses",
    "limit_gso",
    "listening",
    "load_topology",
    "netns_name",
    "node_host_spec",
    "parse_route",
    "parse_topology",
    "running_labs",
    "tcp_connections",
    "topology_from_dict",
    "wait_until",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
