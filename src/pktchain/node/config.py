"""Building a `NodeConfig` from the command line and a lab topology file."""

from __future__ import annotations

from pathlib import Path

from pktchain.cluster.record import DEFAULT_LEASE_TTL, parse_underlay
from pktchain.etcd.endpoints import parse_endpoints
from pktchain.etcd.keys import DEFAULT_CLUSTER, check_segment
from pktchain.node.daemon import NodeConfig, PortSpec
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.dataplane.switch import DEFAULT_AGING, DEFAULT_NETWORK
from pktchain.node.function_file import load_functions
from pktchain.node.router_file import load_router


def build_config(
    *,
    name: str,
    topology: Path | None = None,
    lab_name: str | None = None,
    taps: list[str] | tuple[str, ...] = (),
    af_packets: list[str] | tuple[str, ...] = (),
    mac_aging: float | None = None,
    check_frames: bool = True,
    control: Path | None = None,
    state: Path | None = None,
    api: str | None = None,
    api_token: str | None = None,
    router: Path | None = None,
    messenger: str | None = None,
    messenger_secret: bytes | None = None,
    functions: Path | None = None,
    etcd: str | None = None,
    cluster: str | None = None,
    lease_ttl: float | None = None,
    underlay: str | None = None,
) -> NodeConfig:
    """Raises ValueError naming the bad option or topology entry."""
    endpoints = parse_endpoints(etcd) if etcd is not None else ()
    if endpoints:
        check_segment("node name", name)
    cluster_name = check_segment("--cluster", cluster) if cluster is not None else DEFAULT_CLUSTER
    if lease_ttl is not None and not lease_ttl > 0:
        raise ValueError(f"--lease-ttl {lease_ttl:g}: must be positive")
    ports = ports_from_topology(topology, lab_name) if topology is not None else []
    for value in taps:
        netns, ifname, network = _split(value, "--tap", netns_required=True)
        ports.append(PortSpec(PortKind.TAP, ifname, netns=netns, network=network))
    for value in af_packets:
        netns, ifname, network = _split(value, "--af-packet", netns_required=False)
        ports.append(PortSpec(PortKind.AF_PACKET, ifname, netns=netns, network=network))
    specs = load_functions(functions) if functions is not None else ()
    if not ports and router is None and not specs:
        raise ValueError("no ports: give --topology, --tap, --af-packet, --router or --functions")
    return NodeConfig(
        name=name,
        ports=tuple(ports),
        mac_aging=DEFAULT_AGING if mac_aging is None else mac_aging,
        check_frames=check_frames,
        control=control,
        state=state,
        api=_api_bind(api, "--api") if api is not None else None,
        api_token=api_token,
        router=load_router(router) if router is not None else None,
        messenger=_api_bind(messenger, "--messenger") if messenger is not None else None,
        messenger_secret=messenger_secret,
        functions=specs,
        etcd=endpoints,
        cluster=cluster_name,
        lease_ttl=DEFAULT_LEASE_TTL if lease_ttl is None else lease_ttl,
        underlay=parse_underlay(underlay) if underlay is not None else None,
    )


def _api_bind(value: str, option: str) -> str:
    from pktchain.api.server import parse_listen

    parse_listen(value, option)
    return value


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


def ports_from_topology(path: Path, lab_name: str | None = None) -> list[PortSpec]:
    """A TAP port for every interface the topology declares `attach: node`.

    Raises `pktchain.lab.TopologyError` (every problem, with its line) for a
    bad file.
    """
    from pktchain.lab import load_topology

    topology = load_topology(path, lab_name=lab_name)
    return [
        PortSpec(
            PortKind.TAP,
            port.interface.name,
            netns=port.netns,
            host=port.host,
            setup=port,
            network=port.interface.network,
        )
        for port in topology.node_ports()
    ]
