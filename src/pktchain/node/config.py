"""Building a `NodeConfig` from the command line and a lab topology file."""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pktchain.api.server import HttpLimits
from pktchain.cluster.record import DEFAULT_LEASE_TTL, parse_underlay
from pktchain.etcd.endpoints import parse_endpoints
from pktchain.etcd.keys import DEFAULT_CLUSTER, check_segment
from pktchain.linux.sched import DEFAULT_LOOP_PRIORITY
from pktchain.messenger.server import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from pktchain.node.daemon import NodeConfig, PortSpec
from pktchain.node.dataplane.limits import DEFAULT_PORT_LIMITS, PortLimits, Rate
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.dataplane.steering import DEFAULT_MAX_FLOWS
from pktchain.node.dataplane.switch import DEFAULT_AGING, DEFAULT_NETWORK
from pktchain.node.function_file import load_functions
from pktchain.node.router_file import load_router

if TYPE_CHECKING:
    from pktchain.lab.topology import HostNic, IPInterface, NodeSpec, Topology


def default_host_nic(*, kernel_fastpath: bool = True) -> HostNic:
    """What the node makes as a host's NIC where neither the topology nor
    ``--host-nic`` says: ``$PKTCHAIN_HOST_NIC`` if set; else a veth pair where
    the kernel fast path can carry it (it needs one: see docs/kernel-fastpath.md);
    else, and with ``--no-kernel-fastpath``, a TAP."""
    from pktchain.lab.topology import HOST_NIC_ENV, HostNic, host_nic_from
    from pktchain.node.dataplane.kfastpath import unavailable

    named = os.environ.get(HOST_NIC_ENV)
    if named:
        return host_nic_from(named, f"${HOST_NIC_ENV}")
    if kernel_fastpath and unavailable() is None:
        return HostNic.VETH
    return HostNic.TAP


def build_config(
    *,
    name: str,
    topology: Path | None = None,
    lab_name: str | None = None,
    node: str | None = None,
    taps: list[str] | tuple[str, ...] = (),
    veths: list[str] | tuple[str, ...] = (),
    host_nic: str | None = None,
    af_packets: list[str] | tuple[str, ...] = (),
    mac_aging: float | None = None,
    max_flows: int | None = None,
    check_frames: bool = True,
    kernel_fastpath: bool = True,
    loop_priority: int | None = DEFAULT_LOOP_PRIORITY,
    control: Path | None = None,
    state: Path | None = None,
    api: str | None = None,
    api_token: str | None = None,
    api_limits: HttpLimits | None = None,
    router: Path | None = None,
    messenger: str | None = None,
    messenger_secret: bytes | None = None,
    messenger_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    messenger_max_connections: int = DEFAULT_MAX_CONNECTIONS,
    functions: Path | None = None,
    etcd: str | Sequence[str] | None = None,
    cluster: str | None = None,
    lease_ttl: float | None = None,
    underlay: str | tuple[str, int] | None = None,
    ha_listen: str | None = None,
    ha_peer: str | None = None,
    ha_secret: bytes | None = None,
    port_limits: PortLimits = DEFAULT_PORT_LIMITS,
) -> NodeConfig:
    """Raises ValueError naming the bad option or topology entry.

    With `node`, the topology is a cluster's and only the ports of that node's
    hosts are taken. `host_nic` ("tap" or "veth") is what the node makes as the
    topology's host NICs where the topology does not say (``--host-nic``).
    """
    endpoints = parse_endpoints(etcd) if etcd is not None else ()
    if endpoints:
        check_segment("node name", name)
    cluster_name = check_segment("--cluster", cluster) if cluster is not None else DEFAULT_CLUSTER
    if lease_ttl is not None and not lease_ttl > 0:
        raise ValueError(f"--lease-ttl {lease_ttl:g}: must be positive")
    if not 0 < messenger_handshake_timeout <= 3600:
        raise ValueError(
            f"--messenger-handshake-timeout {messenger_handshake_timeout:g}: "
            "must be in (0, 3600] seconds"
        )
    if messenger_max_connections < 1:
        raise ValueError(
            f"--messenger-max-connections {messenger_max_connections}: must be at least 1"
        )
    if node is not None and topology is None:
        raise ValueError("--node needs --topology FILE, a topology with `nodes:`")
    from pktchain.lab.topology import host_nic_from

    if host_nic is None:
        nic = default_host_nic(kernel_fastpath=kernel_fastpath)
    else:
        nic = host_nic_from(host_nic, "--host-nic")
    ports = ports_from_topology(topology, lab_name, node, nic) if topology is not None else []
    for kind, option, values in ((PortKind.TAP, "--tap", taps), (PortKind.VETH, "--veth", veths)):
        for value in values:
            where, at, listed = value.partition("@")
            netns, ifname, network = _split(where, option, netns_required=True)
            addresses = _addresses(value, listed, option) if at else ()
            ports.append(PortSpec(kind, ifname, netns=netns, network=network, addresses=addresses))
    for value in af_packets:
        netns, ifname, network = _split(value, "--af-packet", netns_required=False)
        ports.append(PortSpec(PortKind.AF_PACKET, ifname, netns=netns, network=network))
    specs = load_functions(functions) if functions is not None else ()
    given = {"--ha-listen": ha_listen, "--ha-peer": ha_peer, "--ha-secret-file": ha_secret}
    if any(v is not None for v in given.values()):
        missing = [option for option, v in given.items() if v is None]
        if missing:
            raise ValueError(f"a router pair's state sync also needs {', '.join(missing)}")
        if router is None:
            raise ValueError("--ha-listen, --ha-peer: the state sync is the router's (--router)")
    if not ports and router is None and not specs:
        raise ValueError(
            "no ports: give --topology, --tap, --veth, --af-packet, --router or --functions"
        )
    return NodeConfig(
        name=name,
        ports=tuple(ports),
        mac_aging=DEFAULT_AGING if mac_aging is None else mac_aging,
        port_limits=port_limits,
        max_flows=DEFAULT_MAX_FLOWS if max_flows is None else max_flows,
        check_frames=check_frames,
        kernel_fastpath=kernel_fastpath,
        loop_priority=loop_priority,
        control=control,
        state=state,
        api=_api_bind(api, "--api") if api is not None else None,
        api_token=api_token,
        api_limits=api_limits or HttpLimits(),
        router=load_router(router) if router is not None else None,
        messenger=_api_bind(messenger, "--messenger") if messenger is not None else None,
        messenger_secret=messenger_secret,
        messenger_handshake_timeout=messenger_handshake_timeout,
        messenger_max_connections=messenger_max_connections,
        functions=specs,
        etcd=endpoints,
        cluster=cluster_name,
        lease_ttl=DEFAULT_LEASE_TTL if lease_ttl is None else lease_ttl,
        underlay=parse_underlay(underlay) if isinstance(underlay, str) else underlay,
        ha_listen=_ha_address(ha_listen, "--ha-listen") if ha_listen is not None else None,
        ha_peer=_ha_address(ha_peer, "--ha-peer") if ha_peer is not None else None,
        ha_secret=ha_secret,
    )


PORT_LIMIT_OPTIONS = {
    "arp": "arp",
    "icmp": "icmp_router",
    "flood": "flood",
    "slow-path": "slow_path",
}
"""``--port-NAME-rate`` / ``--port-NAME-burst`` → the `PortLimits` field they set."""


def port_limits(rates: Mapping[str, str | None], bursts: Mapping[str, int | None]) -> PortLimits:
    """The `PortLimits` of the ``--port-NAME-rate`` and ``--port-NAME-burst`` options
    (by NAME, a key of `PORT_LIMIT_OPTIONS`; None: not given).

    A rate is frames a second, or ``off`` (no limit); a rate given without a
    burst gets a burst of two seconds' worth. Raises ValueError naming the
    option.
    """
    limits: dict[str, Rate | None] = {}
    for name, field_name in PORT_LIMIT_OPTIONS.items():
        rate, burst = rates.get(name), bursts.get(name)
        default: Rate | None = getattr(DEFAULT_PORT_LIMITS, field_name)
        if rate is None and burst is None:
            limits[field_name] = default
            continue
        if rate is not None and rate.strip().lower() == "off":
            if burst is not None:
                raise ValueError(f"--port-{name}-burst: --port-{name}-rate is off")
            limits[field_name] = None
            continue
        per_second = default.per_second if default is not None else None
        if rate is not None:
            try:
                per_second = float(rate)
            except ValueError:
                raise ValueError(
                    f"--port-{name}-rate {rate!r}: give frames a second, or off"
                ) from None
            if not (math.isfinite(per_second) and per_second > 0):
                raise ValueError(f"--port-{name}-rate {rate}: must be more than 0, or off")
        if per_second is None:
            raise ValueError(f"--port-{name}-burst: give --port-{name}-rate too")
        if burst is None:
            burst = max(1, math.ceil(2 * per_second))
        if burst < 1:
            raise ValueError(f"--port-{name}-burst {burst}: must be 1 or more")
        limits[field_name] = Rate(per_second, burst)
    return PortLimits(**limits)


def _ha_address(value: str, option: str) -> tuple[str, int]:
    from pktchain.node.hasync import SYNC_PORT

    try:
        return parse_underlay(value, default_port=SYNC_PORT)
    except ValueError as exc:
        raise ValueError(f"{option}: {str(exc).removeprefix('underlay ')}") from None


def _api_bind(value: str, option: str) -> str:
    from pktchain.api.server import parse_listen

    parse_listen(value, option)
    return value


def _addresses(value: str, listed: str, option: str) -> tuple[IPInterface, ...]:
    """The ADDRESS/LEN,... of ``--tap ...@ADDRESS/LEN,...`` (or ``--veth``)."""
    addresses: list[IPInterface] = []
    for text in listed.split(","):
        if "/" not in text:
            raise ValueError(f"{option} {value!r}: {text!r} needs a prefix length, e.g. {text}/24")
        try:
            address = ipaddress.ip_interface(text)
        except ValueError:
            raise ValueError(f"{option} {value!r}: {text!r} is not an address/length") from None
        if address in addresses:
            raise ValueError(f"{option} {value!r}: {text} is listed twice")
        addresses.append(address)
    return tuple(addresses)


def _split(value: str, option: str, *, netns_required: bool) -> tuple[str | None, str, str]:
    """[NETNS:]IFNAME[=NETWORK] → (netns, ifname, network)."""
    where, equals, network = value.partition("=")
    if equals and not network:
        raise ValueError(f"{option} {value!r}: expected a network name after '='")
    netns, sep, ifname = where.rpartition(":")
    if not sep:
        if netns_required:
            raise ValueError(f"{option} {value!r}: expected NETNS:IFNAME")
        netns, ifname = "", where
    elif not netns or not ifname:
        raise ValueError(f"{option} {value!r}: expected NETNS:IFNAME")
    if not ifname or len(ifname.encode()) > 15:
        raise ValueError(f"{option} {value!r}: interface name must be 1-15 bytes")
    return netns or None, ifname, network or DEFAULT_NETWORK


def ports_from_topology(
    path: Path,
    lab_name: str | None = None,
    node: str | None = None,
    host_nic: HostNic | None = None,
) -> list[PortSpec]:
    """A port for every interface the topology declares `attach: node`: a TAP or
    a veth pair, as the interface's `nic` or the topology's `host_nic` says,
    else as `host_nic` says (default: a TAP).

    For a cluster topology `node` names the node whose hosts' ports are
    taken; without it, a cluster topology is refused (ValueError). Raises
    `pktchain.lab.TopologyError` (every problem, with its line) for a bad
    file.
    """
    from pktchain.lab import load_topology

    topology = load_topology(path, lab_name=lab_name)
    if node is not None:
        _node_of(topology, node, path)
    elif topology.nodes:
        raise ValueError(
            f"{path} is a cluster topology with nodes {', '.join(topology.nodes)}: "
            "run one of them with --node NODE"
        )
    from pktchain.lab.topology import HostNic

    default = host_nic or HostNic.TAP
    return [
        PortSpec(
            PortKind.VETH if (port.nic or default) is HostNic.VETH else PortKind.TAP,
            port.interface.name,
            netns=port.netns,
            host=port.host,
            setup=port,
            network=port.interface.network,
            port_security=port.interface.port_security,
        )
        for port in topology.node_ports(node)
    ]


#: The port of a node's REST API on the underlay (the port networking-sfc's
#: Neutron serves on).
NODE_API_PORT = 9696


@dataclass(frozen=True)
class ClusterNode:
    """What ``pktchain node --node NODE`` takes from a cluster topology."""

    name: str
    netns: str
    """The node's namespace, which the process enters."""
    etcd: tuple[str, ...]
    """The client URLs of the lab's etcd (empty when the topology runs none)."""
    underlay: tuple[str, int]
    """The node's underlay address and VXLAN-GPE port."""
    api: str
    """Where the REST API is served unless ``--api`` says otherwise."""


def cluster_node(
    path: Path, node: str, *, lab_name: str | None = None, api_token: bool = False
) -> ClusterNode:
    """The settings of node `node` of the cluster topology in `path`.

    The API is served on the node's underlay address when there is an API
    token (the API refuses a non-loopback address without one), and on the
    loopback of the node's namespace otherwise. ValueError if the topology
    has no such node; `pktchain.lab.TopologyError` for a bad file.
    """
    from pktchain.lab import load_topology
    from pktchain.packet.headers import VXLAN_GPE_PORT

    topology = load_topology(path, lab_name=lab_name)
    spec = _node_of(topology, node, path)
    address = str(spec.underlay.ip)
    return ClusterNode(
        name=spec.name,
        netns=spec.netns,
        etcd=(topology.etcd.client_url,) if topology.etcd is not None else (),
        underlay=(address, VXLAN_GPE_PORT),
        api=f"{address}:{NODE_API_PORT}" if api_token else f"127.0.0.1:{NODE_API_PORT}",
    )


def _node_of(topology: Topology, node: str, path: Path) -> NodeSpec:
    if not topology.nodes:
        raise ValueError(f"--node {node}: {path} declares no `nodes:`")
    try:
        return topology.nodes[node]
    except KeyError:
        raise ValueError(
            f"--node {node}: {path} has no such node (nodes: {', '.join(topology.nodes)})"
        ) from None
