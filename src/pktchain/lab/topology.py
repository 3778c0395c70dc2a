"""Lab topologies: the YAML format, its validation and the parsed model.

A topology names a lab, its hosts (one network namespace each), their
interfaces and how each is attached (a veth to another host's interface, a veth
to a bridge of the lab, or a port of the pktchain node that the node creates
later), addresses, routes, sysctls and commands to start in the background.
A cluster topology also declares `nodes`: several pktchain nodes, each a
namespace of its own joined to the others by an underlay network, with an etcd
on that network; each host then says which node makes its node ports.
The format is documented in ``docs/lab.md``.

Parsing is pure: it reads YAML text or a Python mapping and returns frozen
dataclasses, or raises `TopologyError` listing every mistake with its file,
line and field. Names of namespaces and of bridge ports are derived here too,
so that everything the lab will create is known before anything is created.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

from pktchain.lab.errors import TopologyError, TopologyIssue
from pktchain.yamlfile import LineMap, LineSeq, compose, item_line, key_line, kind_of, line_of

IPInterface: TypeAlias = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Every namespace of a lab is named ``pc-<lab>.<suffix>``; lab and host names
#: cannot contain a dot, so the prefix of one lab never matches another's.
NETNS_PREFIX = "pc-"
#: Suffix of the namespace that holds a lab's bridges (a reserved host name).
FABRIC = "fabric"
#: The node network an `attach: node` interface joins when it names none.
DEFAULT_NETWORK = "default"
_NETWORK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

#: `attach` value of an interface that is a port of the pktchain node.
NODE = "node"

#: The underlay joining the nodes of a cluster topology, unless it names another.
DEFAULT_UNDERLAY = ipaddress.IPv4Network("10.250.0.0/24")
#: The underlay's MTU, unless `underlay_mtu` says otherwise: room for a full
#: 1500-byte frame with its NSH and VXLAN-GPE headers, and then some.
DEFAULT_UNDERLAY_MTU = 9000
#: The bridge joining the nodes' underlay interfaces, in the fabric namespace.
UNDERLAY_BRIDGE = "underlay"
#: A node's interface on the underlay, inside the node's namespace.
UNDERLAY_IFNAME = "ul0"
#: etcd's client and peer ports (the IANA ones).
ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
_OFF = frozenset({"false", "no", "off"})
_ON = frozenset({"true", "yes", "on"})

IFNAMSIZ = 16  # linux/if.h; names hold at most 15 characters
_LAB_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,47}\Z")
_HOST_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}\Z")
_IFNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}\Z")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")
_SYSCTL = re.compile(r"net(\.[A-Za-z0-9_-]+)+\Z")


def node_host_spec(
    network: str, mac: str, address: str, gateway: str | None = None
) -> dict[str, Any]:
    """The topology mapping of a host whose one NIC, eth0, is a port of the node.

    `address` carries its prefix ("10.0.0.10/24"); with `gateway`, the host's
    default route goes through it.
    """
    eth0 = {"attach": "node", "network": network, "mac": mac, "addresses": [address]}
    spec: dict[str, Any] = {"interfaces": {"eth0": eth0}}
    if gateway is not None:
        spec["routes"] = [{"to": "default", "via": gateway}]
    return spec


def netns_name(lab: str, host: str) -> str:
    """The namespace name of `host` in `lab`: ``pc-<lab>.<host>``."""
    return f"{NETNS_PREFIX}{lab}.{host}"


def fabric_netns_name(lab: str) -> str:
    """The namespace that holds the bridges of `lab`: ``pc-<lab>.fabric``."""
    return netns_name(lab, FABRIC)


def lab_of_netns(name: str) -> str | None:
    """The lab a namespace belongs to, from its name, or None if it is not a lab's."""
    if not name.startswith(NETNS_PREFIX):
        return None
    lab, dot, rest = name[len(NETNS_PREFIX) :].partition(".")
    if not dot or not rest or not _LAB_NAME.match(lab):
        return None
    return lab


def check_lab_name(name: str) -> str | None:
    """Why `name` is not a valid lab name, or None if it is."""
    if _LAB_NAME.match(name):
        return None
    return (
        f"{name!r} is not a valid lab name "
        "(lowercase letters, digits, '-' and '_', starting with a letter or digit, ≤ 48)"
    )


class HostNic(enum.Enum):
    """What the node makes as a host's NIC for an `attach: node` interface."""

    TAP = "tap"  # a TAP device, its descriptor held by the node
    VETH = "veth"  # a veth pair, its other end in the node's namespace


HOST_NIC_ENV = "PKTCHAIN_HOST_NIC"
"""The environment variable that picks the node's host NIC kind where a
topology does not (``pktchain node --host-nic``'s default)."""


def host_nic_from(value: str, where: str) -> HostNic:
    """`value` ("tap" or "veth") as a `HostNic`; ValueError naming `where` otherwise."""
    try:
        return HostNic(value.strip().lower())
    except ValueError:
        choices = ", ".join(nic.value for nic in HostNic)
        raise ValueError(f"{where}: {value!r} is not a host NIC kind ({choices})") from None


class Attachment(enum.Enum):
    """What the far end of a host interface is."""

    VETH = "veth"  # a veth whose peer is another host's interface
    BRIDGE = "bridge"  # a veth whose peer is a port of a lab bridge
    NODE = "node"  # a port that the pktchain node creates later


@dataclass(frozen=True)
class InterfaceRef:
    """An interface of a host, written ``host.interface`` in YAML."""

    host: str
    interface: str

    def __str__(self) -> str:
        return f"{self.host}.{self.interface}"


@dataclass(frozen=True)
class Interface:
    """A network interface of a host.

    For `Attachment.NODE` the lab creates nothing: it keeps `mac`, `mtu` and
    `addresses` so that the node applies them with `configure_interface` once
    it has created the port.
    """

    name: str
    attachment: Attachment
    peer: InterfaceRef | None = None
    bridge: str | None = None
    mac: str | None = None
    mtu: int | None = None
    addresses: tuple[IPInterface, ...] = ()
    network: str = DEFAULT_NETWORK
    """For `Attachment.NODE`: the node's L2 network (broadcast domain) it joins."""
    port_security: bool = True
    """For `Attachment.NODE`: False registers the port with port security off (an
    appliance that forwards other hosts' traffic without being a port pair's)."""
    nic: HostNic | None = None
    """For `Attachment.NODE`: what the node makes as this NIC (None: the
    topology's `host_nic`, else the node's choice)."""


@dataclass(frozen=True)
class Route:
    """A route of a host.

    `to` is ``0.0.0.0/0`` or ``::/0`` for a default route. `dev` is always set
    in a parsed topology (given, or the interface whose subnet holds `via`);
    it may be None in routes handed straight to `add_routes`, where the kernel
    then picks the device.
    """

    to: IPNetwork
    via: IPAddress | None = None
    dev: str | None = None
    metric: int | None = None

    @property
    def is_default(self) -> bool:
        return self.to.prefixlen == 0

    def __str__(self) -> str:
        parts = ["default" if self.is_default else str(self.to)]
        if self.via is not None:
            parts.append(f"via {self.via}")
        if self.dev is not None:
            parts.append(f"dev {self.dev}")
        if self.metric is not None:
            parts.append(f"metric {self.metric}")
        return " ".join(parts)


@dataclass(frozen=True)
class Host:
    """A host: one network namespace with its interfaces, routes and services."""

    name: str
    netns: str
    interfaces: tuple[Interface, ...] = ()
    routes: tuple[Route, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    node: str | None = None
    """In a cluster topology: the node that makes this host's node ports."""

    def interface(self, name: str) -> Interface:
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        raise KeyError(f"host {self.name!r} has no interface {name!r}")

    def routes_on(self, ifname: str) -> tuple[Route, ...]:
        """The routes that leave through interface `ifname`."""
        return tuple(route for route in self.routes if route.dev == ifname)

    def sysctls_on(self, ifname: str) -> tuple[tuple[str, str], ...]:
        """The sysctls of one interface (``net.ipv6.conf.<ifname>.*`` and the like)."""
        return tuple((k, v) for k, v in self.sysctls if ifname in k.split("."))

    @property
    def host_sysctls(self) -> tuple[tuple[str, str], ...]:
        """The sysctls that name none of the host's interfaces: set before links exist."""
        names = {i.name for i in self.interfaces}
        return tuple((k, v) for k, v in self.sysctls if not names & set(k.split(".")))

    @property
    def interface_sysctls(self) -> tuple[tuple[str, str], ...]:
        """The sysctls of the interfaces the lab creates: set once they exist."""
        names = {i.name for i in self.interfaces if i.attachment is not Attachment.NODE}
        return tuple((k, v) for k, v in self.sysctls if names & set(k.split(".")))

    @property
    def node_interfaces(self) -> tuple[Interface, ...]:
        return tuple(i for i in self.interfaces if i.attachment is Attachment.NODE)

    @property
    def lab_routes(self) -> tuple[Route, ...]:
        """The routes the lab installs: those not leaving through a node port."""
        node_ports = {i.name for i in self.node_interfaces}
        return tuple(route for route in self.routes if route.dev not in node_ports)


@dataclass(frozen=True)
class BridgePort:
    """The fabric end of a veth between a host interface and a lab bridge."""

    bridge: str
    host: str
    interface: str
    port: str  # interface name in the fabric namespace, ≤ 15 characters


@dataclass(frozen=True)
class NodePort:
    """An `attach: node` interface with everything the node needs to set it up."""

    host: str
    netns: str
    interface: Interface
    routes: tuple[Route, ...]
    sysctls: tuple[tuple[str, str], ...] = ()
    node: str | None = None
    """In a cluster topology: the node that makes this port."""
    nic: HostNic | None = None
    """What the node makes as this NIC: the interface's `nic`, else the
    topology's `host_nic`; None when neither says (the node decides)."""


@dataclass(frozen=True)
class NodeSpec:
    """A pktchain node of a cluster topology: a namespace on the underlay.

    The lab makes the namespace ``pc-<lab>.<node>`` and a veth from its
    `ifname` (with the `underlay` address and `mtu`) to the underlay bridge,
    whose end in the fabric is `fabric_port`. The node process enters the
    namespace and makes the node ports of the hosts that name it.
    """

    name: str
    underlay: ipaddress.IPv4Interface
    netns: str
    fabric_port: str
    mtu: int = DEFAULT_UNDERLAY_MTU
    ifname: str = UNDERLAY_IFNAME

    @property
    def host(self) -> Host:
        """The node's namespace seen as a host with one interface on the underlay bridge."""
        ul0 = Interface(
            self.ifname,
            Attachment.BRIDGE,
            bridge=UNDERLAY_BRIDGE,
            mtu=self.mtu,
            addresses=(self.underlay,),
        )
        return Host(self.name, self.netns, interfaces=(ul0,))


@dataclass(frozen=True)
class EtcdSpec:
    """The one-member etcd a cluster lab runs in its fabric, on the underlay bridge."""

    name: str
    """The member's name: the lab's."""
    address: ipaddress.IPv4Interface
    client_port: int = ETCD_CLIENT_PORT
    peer_port: int = ETCD_PEER_PORT

    @property
    def client_url(self) -> str:
        return f"http://{self.address.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address.ip}:{self.peer_port}"


@dataclass(frozen=True)
class Topology:
    """A parsed, validated lab topology.

    Without `nodes` it is the lab of one node: every `attach: node` interface
    is a port of the same node. With `nodes` (a cluster topology), each node
    is a namespace joined to the others by the `underlay` network, and each
    host names its node.
    """

    name: str
    hosts: tuple[Host, ...]
    bridges: tuple[str, ...] = ()
    bridge_ports: tuple[BridgePort, ...] = ()
    source: str = "<topology>"
    nodes: Mapping[str, NodeSpec] = field(default_factory=dict, hash=False)
    """The nodes of a cluster topology, by name, in declaration order (empty: one node)."""
    underlay: ipaddress.IPv4Network | None = None
    """The network joining the nodes; None without `nodes`."""
    underlay_mtu: int = DEFAULT_UNDERLAY_MTU
    etcd: EtcdSpec | None = None
    """The etcd the lab runs for its nodes, or None (no nodes, or `etcd: false`)."""
    host_nic: HostNic | None = None
    """What the node makes as the hosts' `attach: node` NICs unless an
    interface says (None: the node's choice, a TAP unless told otherwise)."""

    @property
    def fabric_netns(self) -> str | None:
        """The namespace holding the bridges and the underlay, or None when there is neither."""
        return fabric_netns_name(self.name) if self.bridges or self.nodes else None

    @property
    def netns_names(self) -> tuple[str, ...]:
        """Every namespace the lab creates: fabric first, then hosts, then nodes."""
        fabric = (self.fabric_netns,) if self.fabric_netns else ()
        hosts = tuple(host.netns for host in self.hosts)
        return fabric + hosts + tuple(node.netns for node in self.nodes.values())

    def node(self, name: str) -> NodeSpec:
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise KeyError(f"lab {self.name!r} has no node {name!r} (nodes: {known})") from None

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"lab {self.name!r} has no host {name!r}")

    def netns_of(self, host: str) -> str:
        return self.host(host).netns

    def veth_pairs(self) -> Iterator[tuple[InterfaceRef, InterfaceRef]]:
        """Each host-to-host veth once, as (end that declared `attach`, other end)."""
        for host in self.hosts:
            for interface in host.interfaces:
                if interface.attachment is Attachment.VETH and interface.peer is not None:
                    here = InterfaceRef(host.name, interface.name)
                    if _declares_pair(self, here, interface.peer):
                        yield here, interface.peer

    def node_ports(self, node: str | None = None) -> tuple[NodePort, ...]:
        """Every interface declared `attach: node`, in declaration order.

        With `node`, only those of the hosts that name that node (KeyError if
        the topology has no such node).
        """
        if node is not None:
            self.node(node)
        return tuple(
            NodePort(
                host.name,
                host.netns,
                interface,
                host.routes_on(interface.name),
                host.sysctls_on(interface.name),
                host.node,
                interface.nic or self.host_nic,
            )
            for host in self.hosts
            if node is None or host.node == node
            for interface in host.node_interfaces
        )

    def renamed(self, name: str) -> Topology:
        """The same topology under another lab name (namespace names follow)."""
        problem = check_lab_name(name)
        if problem is not None:
            raise TopologyError([TopologyIssue(self.source, None, "lab", problem)])
        hosts = tuple(replace(host, netns=netns_name(name, host.name)) for host in self.hosts)
        nodes = {
            key: replace(node, netns=netns_name(name, node.name))
            for key, node in self.nodes.items()
        }
        etcd = None if self.etcd is None else replace(self.etcd, name=name)
        return replace(self, name=name, hosts=hosts, nodes=MappingProxyType(nodes), etcd=etcd)


def _declares_pair(topology: Topology, here: InterfaceRef, peer: InterfaceRef) -> bool:
    """True for exactly one end of each veth pair: the one declared first."""
    order = [InterfaceRef(h.name, i.name) for h in topology.hosts for i in h.interfaces]
    return order.index(here) < order.index(peer)


# --------------------------------------------------------------------------
# Loading: YAML nodes keep their line; Python mappings have none.


def load_topology(path: str | Path, *, lab_name: str | None = None) -> Topology:
    """Read and validate a topology file; `lab_name` overrides its `lab:` name."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TopologyError([TopologyIssue(source, None, "", f"cannot read: {reason}")]) from exc
    return parse_topology(text, source=source, lab_name=lab_name)


def parse_topology(text: str, *, source: str = "<string>", lab_name: str | None = None) -> Topology:
    """Validate YAML text; `source` names it in errors."""
    data, issues = compose(text, source, TopologyError)
    parser = _Parser(source)
    parser.issues.extend(issues)
    return parser.topology(data, lab_name)


def topology_from_dict(
    data: Mapping[str, Any], *, source: str = "<dict>", lab_name: str | None = None
) -> Topology:
    """Validate a topology given as Python data, shaped like the YAML."""
    return _Parser(source).topology(data, lab_name)


def read_lab_name(path: str | Path) -> str:
    """Only the `lab:` name of a topology file, even if the rest of it is wrong."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise TopologyError([TopologyIssue(source, None, "", f"cannot read: {reason}")]) from exc
    data, _ = compose(text, source, TopologyError)
    parser = _Parser(source)
    name = None
    if isinstance(data, Mapping):
        name = parser.lab_name(data)
    else:
        parser.error("", line_of(data), "expected a mapping with `lab:` and `hosts:`")
    if name is None:
        raise TopologyError(parser.issues)
    return name


# --------------------------------------------------------------------------
# Validation


@dataclass
class _RawInterface:
    """An interface before attachments are resolved."""

    host: str
    name: str
    path: str
    line: int | None
    attach: str | None
    attach_line: int | None
    mac: str | None = None
    mtu: int | None = None
    addresses: tuple[IPInterface, ...] = ()
    network: str | None = None
    network_line: int | None = None
    port_security: bool | None = None
    port_security_line: int | None = None
    nic: HostNic | None = None
    nic_line: int | None = None


@dataclass
class _RawHost:
    name: str
    path: str
    line: int | None
    data: Mapping[str, Any]
    interfaces: dict[str, _RawInterface] = field(default_factory=dict)


@dataclass
class _Cluster:
    """What the top level says of the nodes, before the hosts are checked against it."""

    underlay: ipaddress.IPv4Network | None  # None: given, but not an underlay
    mtu: int
    nodes: dict[str, ipaddress.IPv4Interface | None]  # None: no valid address
    etcd: EtcdSpec | None


class _Parser:
    """Walks the data once, recording every issue instead of stopping at the first."""

    TOP_KEYS = (
        "lab",
        "bridges",
        "hosts",
        "nodes",
        "underlay",
        "underlay_mtu",
        "etcd",
        "host_nic",
    )
    CLUSTER_KEYS = ("underlay", "underlay_mtu", "etcd")
    HOST_KEYS = ("node", "interfaces", "routes", "sysctls", "commands")
    NODE_KEYS = ("underlay",)
    ETCD_KEYS = ("address", "client_port", "peer_port")
    INTERFACE_KEYS = ("attach", "addresses", "mac", "mtu", "network", "port_security", "nic")
    ROUTE_KEYS = ("to", "via", "dev", "metric")

    def __init__(self, source: str) -> None:
        self.source = source
        self.issues: list[TopologyIssue] = []
        self.top_keys: frozenset[str] = frozenset()

    def error(self, path: str, line: int | None, message: str) -> None:
        self.issues.append(TopologyIssue(self.source, line, path, message))

    # -- scalars ---------------------------------------------------------

    def text(self, value: Any, path: str, line: int | None) -> str | None:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        self.error(path, line, f"expected a string, got {kind_of(value)}")
        return None

    def integer(self, value: Any, path: str, line: int | None, low: int, high: int) -> int | None:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
            number = int(value)
        if number is None or not low <= number <= high:
            self.error(path, line, f"expected an integer from {low} to {high}, got {value!r}")
            return None
        return number

    def check_keys(self, mapping: Mapping[str, Any], allowed: Sequence[str], path: str) -> None:
        for key in mapping:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.error(
                    where,
                    key_line(mapping, key),
                    f"unknown field (expected one of: {', '.join(allowed)})",
                )

    def mapping(self, value: Any, path: str, line: int | None) -> Mapping[str, Any] | None:
        if value is None:
            return LineMap(line)
        if isinstance(value, Mapping):
            return value
        self.error(path, line, f"expected a mapping, got {kind_of(value)}")
        return None

    def sequence(self, value: Any, path: str, line: int | None) -> Sequence[Any] | None:
        if value is None:
            return LineSeq(line)
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            return value
        self.error(path, line, f"expected a list, got {kind_of(value)}")
        return None

    # -- document --------------------------------------------------------

    def lab_name(self, data: Mapping[str, Any]) -> str | None:
        if "lab" not in data:
            self.error("lab", line_of(data), "missing: every topology names its lab")
            return None
        line = key_line(data, "lab")
        name = self.text(data["lab"], "lab", line)
        if name is None:
            return None
        problem = check_lab_name(name)
        if problem is not None:
            self.error("lab", line, problem)
            return None
        return name

    def topology(self, data: Any, lab_name: str | None) -> Topology:
        if not isinstance(data, Mapping):
            self.error("", line_of(data), "expected a mapping with `lab:` and `hosts:`")
            raise TopologyError(self.issues)
        self.check_keys(data, self.TOP_KEYS, "")
        self.top_keys = frozenset(data)
        if lab_name is None:
            name = self.lab_name(data)
        else:
            name = lab_name
            problem = check_lab_name(name)
            if problem is not None:
                self.error("lab", None, problem)
        bridges = self.bridges(data)
        host_nic = None
        if "host_nic" in data:
            host_nic = self.host_nic(data["host_nic"], "host_nic", key_line(data, "host_nic"))
        raw_hosts = self.hosts(data)
        cluster = self.cluster(data, raw_hosts, name or "invalid")
        if "nodes" in data and UNDERLAY_BRIDGE in bridges:
            self.error(
                "bridges",
                bridges[UNDERLAY_BRIDGE],
                f"{UNDERLAY_BRIDGE!r} is reserved for the bridge joining the nodes",
            )
        interfaces = self.attachments(raw_hosts, bridges)
        hosts: list[Host] = []
        for raw in raw_hosts:
            host_interfaces = tuple(interfaces[raw.name].values())
            hosts.append(
                Host(
                    name=raw.name,
                    netns=netns_name(name or "invalid", raw.name),
                    interfaces=host_interfaces,
                    routes=self.routes(raw, host_interfaces),
                    sysctls=self.sysctls(raw),
                    commands=self.commands(raw),
                    node=self.host_node(raw, cluster, host_interfaces),
                )
            )
        used: set[str] = set()
        ports = self.bridge_ports(hosts, used)
        nodes: dict[str, NodeSpec] = {}
        for node, address in (cluster.nodes if cluster else {}).items():
            if address is None:
                continue  # reported
            port = _port_name(node, UNDERLAY_IFNAME, used)
            used.add(port)
            nodes[node] = NodeSpec(
                node,
                address,
                netns_name(name or "invalid", node),
                port,
                mtu=cluster.mtu if cluster else DEFAULT_UNDERLAY_MTU,
            )
        if self.issues or name is None:
            raise TopologyError(self.issues)
        return Topology(
            name=name,
            hosts=tuple(hosts),
            bridges=tuple(bridges),
            bridge_ports=ports,
            source=self.source,
            nodes=MappingProxyType(nodes),
            underlay=cluster.underlay if cluster else None,
            underlay_mtu=cluster.mtu if cluster else DEFAULT_UNDERLAY_MTU,
            etcd=cluster.etcd if cluster else None,
            host_nic=host_nic,
        )

    # -- nodes -----------------------------------------------------------

    def cluster(
        self, data: Mapping[str, Any], hosts: Sequence[_RawHost], lab: str
    ) -> _Cluster | None:
        """The nodes, their underlay and etcd; None for a one-node topology.

        With a broken `underlay`, the nodes are still listed (without
        addresses) so that the hosts' `node:` can be checked against them.
        """
        if "nodes" not in data:
            for key in self.CLUSTER_KEYS:
                if key in data:
                    self.error(key, key_line(data, key), "only in a topology with `nodes:`")
            return None
        underlay = self.underlay(data)
        mtu = DEFAULT_UNDERLAY_MTU
        if "underlay_mtu" in data:
            mtu = (
                self.integer(
                    data["underlay_mtu"], "underlay_mtu", key_line(data, "underlay_mtu"), 68, 65535
                )
                or DEFAULT_UNDERLAY_MTU
            )
        line = key_line(data, "nodes")
        nodes_map = self.mapping(data["nodes"], "nodes", line)
        if nodes_map is None:
            return None
        if not nodes_map:
            self.error("nodes", line, "a cluster has at least one node")
        host_names = {host.name for host in hosts}
        # name → (given address or None, its path, its line)
        declared: dict[str, tuple[ipaddress.IPv4Address | None, str, int | None]] = {}
        for name, value in nodes_map.items():
            path, nline = f"nodes.{name}", key_line(nodes_map, name)
            if not _HOST_NAME.match(name):
                self.error(
                    path,
                    nline,
                    f"{name!r} is not a valid node name (lowercase letters, digits, "
                    "'-' and '_', starting with a letter, ≤ 32)",
                )
                continue
            if name == FABRIC:
                self.error(path, nline, f"{FABRIC!r} is reserved for the lab's fabric namespace")
                continue
            if name in host_names:
                self.error(
                    path,
                    nline,
                    f"{name!r} is also a host; a node and a host each get the namespace "
                    f"pc-<lab>.{name}, so their names differ",
                )
                continue
            spec = self.mapping(value, path, nline)
            if spec is None:
                continue
            self.check_keys(spec, self.NODE_KEYS, path)
            address = None
            if "underlay" in spec and underlay is not None:
                address = self.underlay_address(
                    spec["underlay"], f"{path}.underlay", key_line(spec, "underlay"), underlay
                )
            declared[name] = (
                address,
                path,
                nline if address is None else key_line(spec, "underlay"),
            )
        etcd = self.etcd(data, underlay, lab)
        if underlay is None:
            return _Cluster(None, mtu, dict.fromkeys(declared), None)
        taken: dict[ipaddress.IPv4Address, str] = {}
        if etcd is not None:
            taken[etcd.address.ip] = "the etcd address"
        for name, (address, path, aline) in declared.items():
            if address is None:
                continue
            if address in taken:  # the first declared keeps it
                self.error(f"{path}.underlay", aline, f"{address} is already {taken[address]}")
                continue
            taken[address] = f"the underlay address of node {name!r}"
        free = (a for a in underlay.hosts() if a not in taken)
        nodes: dict[str, ipaddress.IPv4Interface | None] = {}
        for name, (given, path, aline) in declared.items():
            address = given if given is not None else next(free, None)
            if address is None:
                self.error(path, aline, f"no address left for this node in {underlay}")
            nodes[name] = (
                None
                if address is None
                else ipaddress.IPv4Interface(f"{address}/{underlay.prefixlen}")
            )
        return _Cluster(underlay, mtu, nodes, etcd)

    def underlay(self, data: Mapping[str, Any]) -> ipaddress.IPv4Network | None:
        if "underlay" not in data:
            return DEFAULT_UNDERLAY
        line = key_line(data, "underlay")
        text = self.text(data["underlay"], "underlay", line)
        if text is None:
            return None
        try:
            network = ipaddress.ip_network(text)
        except ValueError as exc:
            self.error("underlay", line, str(exc))
            return None
        if not isinstance(network, ipaddress.IPv4Network):
            self.error("underlay", line, f"{text}: the underlay is an IPv4 network")
            return None
        if network.prefixlen > 30:
            self.error(
                "underlay", line, f"{text} is too small: the nodes and etcd need at least a /30"
            )
            return None
        return network

    def underlay_address(
        self, value: Any, path: str, line: int | None, underlay: ipaddress.IPv4Network
    ) -> ipaddress.IPv4Address | None:
        """An address on the underlay, written plainly or with the underlay's prefix length."""
        text = self.text(value, path, line)
        if text is None:
            return None
        try:
            interface = ipaddress.ip_interface(text if "/" in text else f"{text}/32")
        except ValueError as exc:
            self.error(path, line, str(exc))
            return None
        address = interface.ip
        if not isinstance(address, ipaddress.IPv4Address) or address not in underlay:
            self.error(path, line, f"{text} is not in the underlay {underlay}")
            return None
        if "/" in text and interface.network != underlay:
            self.error(path, line, f"{text}: the underlay is {underlay}; give the address alone")
            return None
        if address in (underlay.network_address, underlay.broadcast_address):
            self.error(path, line, f"{address} is the underlay's network or broadcast address")
            return None
        return address

    def etcd(
        self, data: Mapping[str, Any], underlay: ipaddress.IPv4Network | None, lab: str
    ) -> EtcdSpec | None:
        """The lab's etcd: on by default, at the underlay's last usable address.

        With a broken `underlay` (None), its settings are still checked, and
        None is returned.
        """
        address: ipaddress.IPv4Interface | None = None
        if underlay is not None:
            last = underlay.broadcast_address - 1
            address = ipaddress.IPv4Interface(f"{last}/{underlay.prefixlen}")
        spec: Mapping[str, Any] = {}
        if "etcd" in data:
            line = key_line(data, "etcd")
            value = data["etcd"]
            if value is False or (isinstance(value, str) and value.lower() in _OFF):
                return None
            if value is True or (isinstance(value, str) and value.lower() in _ON):
                pass  # the default etcd
            elif isinstance(value, str):
                self.error(
                    "etcd",
                    line,
                    "expected a mapping (address, client_port, peer_port) or `false`, "
                    f"got {value!r}",
                )
            else:
                spec = self.mapping(value, "etcd", line) or {}
                self.check_keys(spec, self.ETCD_KEYS, "etcd")
        if "address" in spec and underlay is not None:
            given = self.underlay_address(
                spec["address"], "etcd.address", key_line(spec, "address"), underlay
            )
            if given is not None:
                address = ipaddress.IPv4Interface(f"{given}/{underlay.prefixlen}")
        ports = {}
        for key, standard in (("client_port", ETCD_CLIENT_PORT), ("peer_port", ETCD_PEER_PORT)):
            port = None
            if key in spec:
                port = self.integer(spec[key], f"etcd.{key}", key_line(spec, key), 1, 65535)
            ports[key] = port or standard
        if ports["client_port"] == ports["peer_port"]:
            self.error(
                "etcd.peer_port",
                key_line(spec, "peer_port") or key_line(spec, "client_port"),
                f"the client and peer ports are both {ports['client_port']}",
            )
        if address is None:
            return None
        return EtcdSpec(lab, address, ports["client_port"], ports["peer_port"])

    def host_node(
        self, raw: _RawHost, cluster: _Cluster | None, interfaces: Sequence[Interface]
    ) -> str | None:
        """The node a host names, checked against the topology's nodes."""
        data = raw.data
        has_ports = any(i.attachment is Attachment.NODE for i in interfaces)
        if "node" not in data:
            if cluster is not None and has_ports and cluster.nodes:
                self.error(
                    f"{raw.path}.node",
                    raw.line,
                    "missing: with `nodes:`, a host with `attach: node` interfaces names "
                    f"the node that makes them (one of: {', '.join(cluster.nodes)})",
                )
            return None
        line = key_line(data, "node")
        node = self.text(data["node"], f"{raw.path}.node", line)
        if node is None:
            return None
        if "nodes" not in self.top_keys:
            self.error(
                f"{raw.path}.node",
                line,
                "only in a topology with `nodes:`; without it, one node makes every node port",
            )
            return None
        if cluster is not None and node not in cluster.nodes:
            known = ", ".join(cluster.nodes) or "none"
            self.error(f"{raw.path}.node", line, f"no node named {node!r} (nodes: {known})")
            return None
        return node

    def bridges(self, data: Mapping[str, Any]) -> dict[str, int | None]:
        found: dict[str, int | None] = {}
        if "bridges" not in data:
            return found
        items = self.sequence(data["bridges"], "bridges", key_line(data, "bridges"))
        for index, item in enumerate(items or ()):
            path, line = f"bridges[{index}]", item_line(items or (), index)
            name = self.text(item, path, line)
            if name is None:
                continue
            if not _IFNAME.match(name):
                self.error(path, line, f"{name!r} is not a valid interface name{_IFNAME_RULE}")
            elif name in (NODE, "lo"):
                self.error(path, line, f"{name!r} is reserved")
            elif name in found:
                self.error(path, line, f"bridge {name!r} is declared twice")
            else:
                found[name] = line
        return found

    def hosts(self, data: Mapping[str, Any]) -> list[_RawHost]:
        if "hosts" not in data:
            self.error("hosts", line_of(data), "missing: a lab has at least one host")
            return []
        hosts_map = self.mapping(data["hosts"], "hosts", key_line(data, "hosts"))
        if hosts_map is None:
            return []
        if not hosts_map:
            self.error("hosts", key_line(data, "hosts"), "a lab has at least one host")
        result: list[_RawHost] = []
        for name, value in hosts_map.items():
            path, line = f"hosts.{name}", key_line(hosts_map, name)
            if not _HOST_NAME.match(name):
                self.error(
                    path,
                    line,
                    f"{name!r} is not a valid host name (lowercase letters, digits, "
                    "'-' and '_', starting with a letter, ≤ 32)",
                )
                continue
            if name == FABRIC:
                self.error(path, line, f"{FABRIC!r} is reserved for the lab's bridge namespace")
                continue
            host_map = self.mapping(value, path, line)
            if host_map is None:
                continue
            self.check_keys(host_map, self.HOST_KEYS, path)
            raw = _RawHost(name, path, line, host_map)
            self.interfaces(raw)
            result.append(raw)
        return result

    def interfaces(self, host: _RawHost) -> None:
        data = host.data
        if "interfaces" not in data:
            return
        path = f"{host.path}.interfaces"
        interfaces = self.mapping(data["interfaces"], path, key_line(data, "interfaces"))
        for name, value in (interfaces or {}).items():
            ipath, line = f"{path}.{name}", key_line(interfaces or {}, name)
            if not _IFNAME.match(name):
                self.error(ipath, line, f"{name!r} is not a valid interface name{_IFNAME_RULE}")
                continue
            if name == "lo":
                self.error(ipath, line, "'lo' exists in every host and is always up")
                continue
            spec = self.mapping(value, ipath, line)
            if spec is None:
                continue
            self.check_keys(spec, self.INTERFACE_KEYS, ipath)
            attach = None
            if "attach" in spec:
                attach = self.text(spec["attach"], f"{ipath}.attach", key_line(spec, "attach"))
            raw = _RawInterface(
                host=host.name,
                name=name,
                path=ipath,
                line=line,
                attach=attach,
                attach_line=key_line(spec, "attach") if "attach" in spec else line,
            )
            if "mac" in spec:
                raw.mac = self.mac(spec["mac"], f"{ipath}.mac", key_line(spec, "mac"))
            if "mtu" in spec:
                raw.mtu = self.integer(
                    spec["mtu"], f"{ipath}.mtu", key_line(spec, "mtu"), 68, 65535
                )
            if "addresses" in spec:
                raw.addresses = self.addresses(spec, ipath)
            if "network" in spec:
                raw.network_line = key_line(spec, "network")
                network = self.text(spec["network"], f"{ipath}.network", raw.network_line)
                if network is not None and not _NETWORK_NAME.match(network):
                    self.error(
                        f"{ipath}.network",
                        raw.network_line,
                        f"{network!r} is not a network name "
                        "(lowercase letters, digits, '-' and '_', at most 32)",
                    )
                else:
                    raw.network = network
            if "port_security" in spec:
                raw.port_security_line = key_line(spec, "port_security")
                secured = spec["port_security"]
                text = secured.lower() if isinstance(secured, str) else None
                if isinstance(secured, bool):
                    raw.port_security = secured
                elif text in _ON or text in _OFF:
                    raw.port_security = text in _ON
                else:
                    self.error(
                        f"{ipath}.port_security",
                        raw.port_security_line,
                        f"expected true or false, got {secured!r}",
                    )
            if "nic" in spec:
                raw.nic_line = key_line(spec, "nic")
                raw.nic = self.host_nic(spec["nic"], f"{ipath}.nic", raw.nic_line)
            host.interfaces[name] = raw

    def host_nic(self, value: Any, path: str, line: int | None) -> HostNic | None:
        text = self.text(value, path, line)
        if text is None:
            return None
        try:
            return host_nic_from(text, path)
        except ValueError:
            choices = ", ".join(nic.value for nic in HostNic)
            self.error(path, line, f"expected one of {choices}, got {text!r}")
            return None

    def mac(self, value: Any, path: str, line: int | None) -> str | None:
        text = self.text(value, path, line)
        if text is None:
            return None
        mac = text.lower()
        if not _MAC.match(mac):
            self.error(path, line, f"{text!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
            return None
        if int(mac[:2], 16) & 1:
            self.error(path, line, f"{text!r} is a multicast address; an interface needs unicast")
            return None
        return mac

    def addresses(self, spec: Mapping[str, Any], path: str) -> tuple[IPInterface, ...]:
        path = f"{path}.addresses"
        items = self.sequence(spec["addresses"], path, key_line(spec, "addresses"))
        result: list[IPInterface] = []
        for index, item in enumerate(items or ()):
            ipath, line = f"{path}[{index}]", item_line(items or (), index)
            text = self.text(item, ipath, line)
            if text is None:
                continue
            if "/" not in text:
                self.error(ipath, line, f"{text!r} needs a prefix length, e.g. {text}/24")
                continue
            try:
                address = ipaddress.ip_interface(text)
            except ValueError as exc:
                self.error(ipath, line, str(exc))
                continue
            if address in result:
                self.error(ipath, line, f"{text} is listed twice")
                continue
            result.append(address)
        return tuple(result)

    # -- attachments -----------------------------------------------------

    def attachments(
        self, hosts: Sequence[_RawHost], bridges: Mapping[str, int | None]
    ) -> dict[str, dict[str, Interface]]:
        by_host = {host.name: host for host in hosts}
        # Which interface each peer reference points at, to pair implicit ends.
        claimed: dict[tuple[str, str], _RawInterface] = {}
        peers: dict[tuple[str, str], InterfaceRef] = {}
        for host in hosts:
            for raw in host.interfaces.values():
                if raw.attach is None or "." not in raw.attach:
                    continue
                peer = self.peer_ref(raw, by_host)
                if peer is None:
                    continue
                key = (peer.host, peer.interface)
                if key in claimed:
                    first = claimed[key]
                    self.error(
                        f"{raw.path}.attach",
                        raw.attach_line,
                        f"{peer} is already attached to {first.host}.{first.name}",
                    )
                    continue
                claimed[key] = raw
                peers[(raw.host, raw.name)] = peer
        result: dict[str, dict[str, Interface]] = {}
        for host in hosts:
            result[host.name] = {}
            for raw in host.interfaces.values():
                interface = self.attachment(raw, bridges, claimed, peers)
                if interface is not None:
                    result[host.name][raw.name] = interface
        return result

    def peer_ref(self, raw: _RawInterface, hosts: Mapping[str, _RawHost]) -> InterfaceRef | None:
        path = f"{raw.path}.attach"
        peer_host, _, peer_if = (raw.attach or "").partition(".")
        if peer_host not in hosts:
            self.error(path, raw.attach_line, f"{raw.attach!r}: no host named {peer_host!r}")
            return None
        if peer_if not in hosts[peer_host].interfaces:
            self.error(
                path,
                raw.attach_line,
                f"{raw.attach!r}: host {peer_host!r} declares no interface {peer_if!r}",
            )
            return None
        if (peer_host, peer_if) == (raw.host, raw.name):
            self.error(path, raw.attach_line, "an interface cannot be attached to itself")
            return None
        far_attach = hosts[peer_host].interfaces[peer_if].attach
        if far_attach is not None and "." not in far_attach:
            self.error(
                path,
                raw.attach_line,
                f"{raw.attach!r} is itself attached to {far_attach!r}, not to a veth",
            )
            return None
        return InterfaceRef(peer_host, peer_if)

    def attachment(
        self,
        raw: _RawInterface,
        bridges: Mapping[str, int | None],
        claimed: Mapping[tuple[str, str], _RawInterface],
        peers: Mapping[tuple[str, str], InterfaceRef],
    ) -> Interface | None:
        base = Interface(
            raw.name,
            Attachment.NODE,
            mac=raw.mac,
            mtu=raw.mtu,
            addresses=raw.addresses,
            network=raw.network or DEFAULT_NETWORK,
            port_security=raw.port_security is not False,
            nic=raw.nic,
        )
        here = (raw.host, raw.name)
        path = f"{raw.path}.attach"
        if raw.network is not None and raw.attach != NODE:
            self.error(
                f"{raw.path}.network",
                raw.network_line,
                "only an interface with `attach: node` joins a node network",
            )
        if raw.port_security is not None and raw.attach != NODE:
            self.error(
                f"{raw.path}.port_security",
                raw.port_security_line,
                "only an interface with `attach: node` is a port of the node",
            )
        if raw.nic is not None and raw.attach != NODE:
            self.error(
                f"{raw.path}.nic",
                raw.nic_line,
                "only an interface with `attach: node` is made by the node",
            )
        if raw.attach is None:
            other = claimed.get(here)
            if other is None:
                self.error(
                    path,
                    raw.attach_line,
                    "missing: give `attach: HOST.INTERFACE`, a bridge name or `node`, "
                    "or name this interface in another interface's `attach`",
                )
                return None
            return replace(
                base, attachment=Attachment.VETH, peer=InterfaceRef(other.host, other.name)
            )
        if raw.attach == NODE:
            return base
        if "." not in raw.attach:
            if raw.attach not in bridges:
                self.error(
                    path,
                    raw.attach_line,
                    f"{raw.attach!r} is not a bridge listed under `bridges`, "
                    "nor `node`, nor HOST.INTERFACE",
                )
                return None
            return replace(base, attachment=Attachment.BRIDGE, bridge=raw.attach)
        peer = peers.get(here)
        if peer is None:
            return None  # already reported
        # Both ends may name each other; if the far end names a third
        # interface, the pair is ambiguous.
        far = claimed.get(here)
        if far is not None and (far.host, far.name) != (peer.host, peer.interface):
            self.error(
                path,
                raw.attach_line,
                f"{raw.host}.{raw.name} attaches to {peer} but {far.host}.{far.name} "
                "attaches to it",
            )
            return None
        return replace(base, attachment=Attachment.VETH, peer=peer)

    def bridge_ports(self, hosts: Sequence[Host], used: set[str]) -> tuple[BridgePort, ...]:
        """The fabric ends of the hosts' veths to bridges; their names join `used`."""
        ports: list[BridgePort] = []
        for host in hosts:
            for interface in host.interfaces:
                if interface.attachment is not Attachment.BRIDGE or interface.bridge is None:
                    continue
                name = _port_name(host.name, interface.name, used)
                used.add(name)
                ports.append(BridgePort(interface.bridge, host.name, interface.name, name))
        return tuple(ports)

    # -- routes, sysctls, commands ---------------------------------------

    def routes(self, host: _RawHost, interfaces: Sequence[Interface]) -> tuple[Route, ...]:
        data = host.data
        if "routes" not in data:
            return ()
        path = f"{host.path}.routes"
        items = self.sequence(data["routes"], path, key_line(data, "routes"))
        result: list[Route] = []
        for index, item in enumerate(items or ()):
            rpath, line = f"{path}[{index}]", item_line(items or (), index)
            spec = self.mapping(item, rpath, line)
            if spec is None:
                continue
            route = self.route(spec, rpath, line, interfaces)
            if route is None:
                continue
            if any(r.to == route.to and r.metric == route.metric for r in result):
                self.error(rpath, line, f"a route to {route.to} is already declared")
                continue
            result.append(route)
        return tuple(result)

    def route(
        self,
        spec: Mapping[str, Any],
        path: str,
        line: int | None,
        interfaces: Sequence[Interface] | None,
    ) -> Route | None:
        """One route; with `interfaces` (a host's), `dev` is checked and resolved."""
        self.check_keys(spec, self.ROUTE_KEYS, path)
        errors_before = len(self.issues)
        via: IPAddress | None = None
        if "via" in spec:
            text = self.text(spec["via"], f"{path}.via", key_line(spec, "via"))
            if text is not None:
                try:
                    via = ipaddress.ip_address(text)
                except ValueError as exc:
                    self.error(f"{path}.via", key_line(spec, "via"), str(exc))
        to = self.destination(spec, path, line, via)
        dev: str | None = None
        if "dev" in spec:
            dev = self.text(spec["dev"], f"{path}.dev", key_line(spec, "dev"))
            if (
                dev is not None
                and interfaces is not None
                and dev not in {i.name for i in interfaces}
            ):
                self.error(
                    f"{path}.dev", key_line(spec, "dev"), f"no interface {dev!r} on this host"
                )
        metric = None
        if "metric" in spec:
            metric = self.integer(
                spec["metric"], f"{path}.metric", key_line(spec, "metric"), 0, 2**32 - 1
            )
        if to is not None and via is not None and to.version != via.version:
            self.error(f"{path}.via", key_line(spec, "via"), f"{via} is not IPv{to.version}")
        if "via" not in spec and "dev" not in spec:
            self.error(path, line, "a route needs `via`, `dev`, or both")
        if len(self.issues) > errors_before or to is None:
            return None
        if dev is None and via is not None and interfaces is not None:
            dev = _interface_for(via, interfaces)
            if dev is None:
                self.error(
                    f"{path}.via",
                    key_line(spec, "via"),
                    f"{via} is in no subnet of this host's interfaces; add `dev:`",
                )
                return None
        return Route(to=to, via=via, dev=dev, metric=metric)

    def destination(
        self, spec: Mapping[str, Any], path: str, line: int | None, via: IPAddress | None
    ) -> IPNetwork | None:
        if "to" not in spec:
            self.error(f"{path}.to", line, "missing: a destination prefix or `default`")
            return None
        tline = key_line(spec, "to")
        text = self.text(spec["to"], f"{path}.to", tline)
        if text is None:
            return None
        if text == "default":
            if via is None:
                self.error(
                    f"{path}.to",
                    tline,
                    "`default` takes its family from `via`; without `via` write 0.0.0.0/0 or ::/0",
                )
                return None
            return ipaddress.ip_network("0.0.0.0/0" if via.version == 4 else "::/0")
        try:
            return ipaddress.ip_network(text)
        except ValueError as exc:
            self.error(f"{path}.to", tline, str(exc))
            return None

    def sysctls(self, host: _RawHost) -> tuple[tuple[str, str], ...]:
        data = host.data
        if "sysctls" not in data:
            return ()
        path = f"{host.path}.sysctls"
        values = self.mapping(data["sysctls"], path, key_line(data, "sysctls"))
        result: list[tuple[str, str]] = []
        for key, value in (values or {}).items():
            kpath, line = f"{path}.{key}", key_line(values or {}, key)
            if not _SYSCTL.match(key):
                self.error(
                    kpath,
                    line,
                    "only `net.*` sysctls belong to a network namespace; "
                    "others would change the whole machine",
                )
                continue
            text = self.text(int(value) if isinstance(value, bool) else value, kpath, line)
            if text is not None:
                result.append((key, text))
        return tuple(result)

    def commands(self, host: _RawHost) -> tuple[tuple[str, ...], ...]:
        data = host.data
        if "commands" not in data:
            return ()
        path = f"{host.path}.commands"
        items = self.sequence(data["commands"], path, key_line(data, "commands"))
        result: list[tuple[str, ...]] = []
        for index, item in enumerate(items or ()):
            cpath, line = f"{path}[{index}]", item_line(items or (), index)
            argv: list[str] = []
            if isinstance(item, str):
                try:
                    argv = shlex.split(item)
                except ValueError as exc:
                    self.error(cpath, line, f"cannot split into arguments: {exc}")
                    continue
            elif isinstance(item, Sequence):
                for position, arg in enumerate(item):
                    text = self.text(arg, f"{cpath}[{position}]", item_line(item, position))
                    if text is not None:
                        argv.append(text)
                if len(argv) != len(item):
                    continue
            else:
                self.error(cpath, line, f"expected a command line or a list, got {kind_of(item)}")
                continue
            if not argv:
                self.error(cpath, line, "empty command")
                continue
            result.append(tuple(argv))
        return tuple(result)


_IFNAME_RULE = " (1-15 letters, digits, '_', '.', '-')"


def _interface_for(via: IPAddress, interfaces: Iterable[Interface]) -> str | None:
    for interface in interfaces:
        for address in interface.addresses:
            if address.version == via.version and via in address.network:
                return interface.name
    return None


def _port_name(host: str, interface: str, used: set[str]) -> str:
    """A fabric-side interface name, ≤ 15 characters, unique in the lab."""
    name = f"{host}-{interface}"
    if len(name) < IFNAMSIZ and name not in used:
        return name
    digest = hashlib.sha1(f"{host}/{interface}".encode(), usedforsecurity=False).hexdigest()
    for start in range(0, len(digest) - 12):
        name = f"p-{digest[start : start + 12]}"
        if name not in used:
            return name
    raise ValueError("no free bridge port name")  # 28 collisions of a hash: unreachable


def parse_route(spec: Mapping[str, Any], *, source: str = "<route>") -> Route:
    """One route given like a YAML `routes` item: ``{"to": ..., "via": ..., "dev": ...}``."""
    parser = _Parser(source)
    route = parser.route(spec, "route", None, None)
    if route is None or parser.issues:
        raise TopologyError(parser.issues)
    return route
