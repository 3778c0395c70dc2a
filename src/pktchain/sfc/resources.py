"""The resources of service function chaining, as networking-sfc defines them.

Ports (the Neutron ports of hosts and service functions, registered by the
node or the lab), port pairs, port pair groups, flow classifiers, port chains
and service graphs. Each is a frozen dataclass with networking-sfc's attribute
names, an `id` that is a UUID string, a `name`, a `description` and a
`project_id` (`tenant_id` is the same value, as in Neutron). References
between resources are ids. `to_dict()` gives the networking-sfc JSON
representation, which the REST layer serves and the store persists.

These objects only hold values: the model (`pktchain.sfc.model`) converts
input into them and enforces networking-sfc's rules between them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_CHAIN_ID = 65535
"""Highest chain id (the chain's service path identifier), as in networking-sfc."""

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAME_MAX = 255
DESCRIPTION_MAX = 255
PROJECT_ID_MAX = 255


class ResourceKind(Enum):
    """The kinds of resource, valued by their singular API name."""

    PORT = "port"
    PORT_PAIR = "port_pair"
    PORT_PAIR_GROUP = "port_pair_group"
    FLOW_CLASSIFIER = "flow_classifier"
    PORT_CHAIN = "port_chain"
    SERVICE_GRAPH = "service_graph"

    @property
    def collection(self) -> str:
        """The plural API name: ``port_pairs``, ``flow_classifiers``, ..."""
        return f"{self.value}s"

    @property
    def label(self) -> str:
        """How messages name the kind: ``Port pair group``."""
        return self.value.replace("_", " ").capitalize()

    @property
    def resource_class(self) -> type[Resource]:
        return RESOURCE_CLASSES[self]

    @classmethod
    def from_collection(cls, collection: str) -> ResourceKind:
        """The kind served under ``/v2.0/sfc/<collection>``; ValueError if none."""
        for kind in cls:
            if kind.collection == collection:
                return kind
        raise ValueError(f"no resource collection named {collection!r}")


class Correlation(Enum):
    """How a service function or a chain tells flows apart on the wire."""

    MPLS = "mpls"
    NSH = "nsh"


class Ethertype(Enum):
    IPV4 = "IPv4"
    IPV6 = "IPv6"

    @property
    def ip_version(self) -> int:
        return 4 if self is Ethertype.IPV4 else 6


class Protocol(Enum):
    """The transport protocols a flow classifier matches (networking-sfc's three)."""

    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"

    def ip_proto(self, ethertype: Ethertype) -> int:
        """The IP protocol number; "icmp" is ICMPv6 (58) in an IPv6 classifier."""
        if self is Protocol.ICMP:
            return 1 if ethertype is Ethertype.IPV4 else 58
        return 6 if self is Protocol.TCP else 17


class LbField(Enum):
    """Packet fields a port pair group may hash on to spread flows."""

    ETH_SRC = "eth_src"
    ETH_DST = "eth_dst"
    IP_SRC = "ip_src"
    IP_DST = "ip_dst"
    TCP_SRC = "tcp_src"
    TCP_DST = "tcp_dst"
    UDP_SRC = "udp_src"
    UDP_DST = "udp_dst"


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping that keeps insertion order."""

    __slots__ = ("_items", "_map")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        pairs = tuple(items.items()) if isinstance(items, Mapping) else tuple(items)
        self._map: dict[K, V] = dict(pairs)
        self._items = tuple(self._map.items())

    def __getitem__(self, key: K) -> V:
        return self._map[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._map) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._map!r})"


# --- resources -------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Resource:
    """What every resource has: an id, a name, a description and a project."""

    kind: ClassVar[ResourceKind]

    id: str
    name: str = ""
    description: str = ""
    project_id: str = ""

    @property
    def tenant_id(self) -> str:
        return self.project_id

    def _common(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "project_id": self.project_id,
            "tenant_id": self.project_id,
        }

    def to_dict(self) -> dict[str, Any]:
        """The networking-sfc (or Neutron) JSON representation."""
        return self._common()


@dataclass(frozen=True)
class FixedIp:
    ip_address: str
    subnet_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"subnet_id": self.subnet_id, "ip_address": self.ip_address}


MAX_ADDRESS_PAIRS = 10
"""Allowed address pairs per port, at most (Neutron's ``max_allowed_address_pair``)."""


@dataclass(frozen=True)
class AddressPair:
    """Neutron's allowed address pair: an address, or a CIDR, a port may also
    send from, with the MAC it may use for it.

    `ip_address` is canonical (``10.0.0.9``, ``10.0.0.0/24``); `mac_address`
    is the port's own MAC when the request gave none (the model fills it in,
    as Neutron does when the pair is set).
    """

    ip_address: str
    mac_address: str = ""

    @property
    def network(self) -> IPNetwork:
        """The addresses the pair allows, as a network (a lone address is a /32 or /128)."""
        return ipaddress.ip_network(self.ip_address)

    def to_dict(self) -> dict[str, Any]:
        return {"ip_address": self.ip_address, "mac_address": self.mac_address}


@dataclass(frozen=True, kw_only=True)
class Port(Resource):
    """A Neutron port: a host's or a service function's interface on a node.

    `node_port` is pktchain's name for the attachment, such as ``"h1:eth0"``;
    an empty one means the port is known but not attached anywhere yet (the
    dataplane skips it, as networking-sfc skips unbound ports). `device_id`
    names the device (host namespace, service VM) the port belongs to: a port
    pair's two ports must share one. `binding_host_id` (Neutron's
    ``binding:host_id``) is the node the port sits on, "" when unbound; node
    ports are unique per node.

    Port security (Neutron's ``port_security_enabled``, on by default): a
    port with a MAC and fixed IPs sends only as itself and as its
    `allowed_address_pairs`; `pktchain.sfc.security` says what that allows
    and which ports are exempt.
    """

    kind = ResourceKind.PORT

    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    device_id: str = ""
    device_owner: str = ""
    network_id: str = ""
    node_port: str = ""
    binding_host_id: str = ""
    port_security_enabled: bool = True
    allowed_address_pairs: tuple[AddressPair, ...] = ()

    @property
    def ip_addresses(self) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
        return tuple(ipaddress.ip_address(ip.ip_address) for ip in self.fixed_ips)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "network_id": self.network_id,
            "mac_address": self.mac_address,
            "fixed_ips": [ip.to_dict() for ip in self.fixed_ips],
            "device_id": self.device_id,
            "device_owner": self.device_owner,
            "node_port": self.node_port,
            "binding:host_id": self.binding_host_id,
            "port_security_enabled": self.port_security_enabled,
            "allowed_address_pairs": [pair.to_dict() for pair in self.allowed_address_pairs],
        }


@dataclass(frozen=True)
class ServiceFunctionParameters:
    """`correlation`: None for an SFC-unaware function (plain frames), "nsh"
    for one that reads NSH. `weight`: the function's share of new flows in its
    group; 0 takes no new flows (existing ones stay)."""

    correlation: Correlation | None = None
    weight: int = 1

    def to_dict(self) -> dict[str, Any]:
        corr = None if self.correlation is None else self.correlation.value
        return {"correlation": corr, "weight": self.weight}


@dataclass(frozen=True, kw_only=True)
class PortPair(Resource):
    """One service function instance: where frames enter it and leave it."""

    kind = ResourceKind.PORT_PAIR

    ingress: str
    egress: str
    service_function_parameters: ServiceFunctionParameters = field(
        default_factory=ServiceFunctionParameters
    )

    @property
    def weight(self) -> int:
        return self.service_function_parameters.weight

    @property
    def correlation(self) -> Correlation | None:
        return self.service_function_parameters.correlation

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "ingress": self.ingress,
            "egress": self.egress,
            "service_function_parameters": self.service_function_parameters.to_dict(),
        }


@dataclass(frozen=True)
class NTuple:
    """Header values a port pair group's functions rewrite (the PPG n-tuple
    mapping): traffic leaving the group is classified with these instead of
    the chain classifier's values. None leaves a field as classified."""

    source_ip_prefix: str | None = None
    destination_ip_prefix: str | None = None
    source_port_range_min: int | None = None
    source_port_range_max: int | None = None
    destination_port_range_min: int | None = None
    destination_port_range_max: int | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "source_ip_prefix",
        "destination_ip_prefix",
        "source_port_range_min",
        "source_port_range_max",
        "destination_port_range_min",
        "destination_port_range_max",
    )

    def to_dict(self) -> dict[str, Any]:
        """Only the fields that are set, as networking-sfc stores them."""
        values = ((name, getattr(self, name)) for name in self.FIELDS)
        return {name: value for name, value in values if value is not None}

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in self.FIELDS)


@dataclass(frozen=True)
class NTupleMapping:
    ingress_n_tuple: NTuple = field(default_factory=NTuple)
    egress_n_tuple: NTuple = field(default_factory=NTuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ingress_n_tuple": self.ingress_n_tuple.to_dict(),
            "egress_n_tuple": self.egress_n_tuple.to_dict(),
        }


@dataclass(frozen=True)
class PortPairGroupParameters:
    """`lb_fields`: the fields hashed to pick a port pair for a new flow;
    empty means the dataplane's default, the 5-tuple."""

    lb_fields: tuple[LbField, ...] = ()
    ppg_n_tuple_mapping: NTupleMapping = field(default_factory=NTupleMapping)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lb_fields": [f.value for f in self.lb_fields],
            "ppg_n_tuple_mapping": self.ppg_n_tuple_mapping.to_dict(),
        }


@dataclass(frozen=True, kw_only=True)
class PortPairGroup(Resource):
    """Interchangeable instances of one service function, in order.

    A tap group (`tap_enabled`) receives a copy of the traffic while the
    original goes on. `group_id` is a small integer the model assigns (lowest
    free, from 1), as networking-sfc does.
    """

    kind = ResourceKind.PORT_PAIR_GROUP

    port_pairs: tuple[str, ...] = ()
    port_pair_group_parameters: PortPairGroupParameters = field(
        default_factory=PortPairGroupParameters
    )
    tap_enabled: bool = False
    group_id: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "port_pairs": list(self.port_pairs),
            "port_pair_group_parameters": self.port_pair_group_parameters.to_dict(),
            "tap_enabled": self.tap_enabled,
            "group_id": self.group_id,
        }


@dataclass(frozen=True, kw_only=True)
class FlowClassifier(Resource):
    """Which traffic enters a chain.

    A field left None matches anything. A port range with only one bound set
    is open on the other side (0 or 65535). Prefixes are canonical CIDR strings
    (``10.0.0.0/24``); `source_network` and `destination_network` parse them.
    """

    kind = ResourceKind.FLOW_CLASSIFIER

    ethertype: Ethertype = Ethertype.IPV4
    protocol: Protocol | None = None
    source_port_range_min: int | None = None
    source_port_range_max: int | None = None
    destination_port_range_min: int | None = None
    destination_port_range_max: int | None = None
    source_ip_prefix: str | None = None
    destination_ip_prefix: str | None = None
    logical_source_port: str | None = None
    logical_destination_port: str | None = None
    l7_parameters: FrozenMap[str, str] = field(default_factory=FrozenMap)

    @property
    def source_network(self) -> IPNetwork | None:
        return _network(self.source_ip_prefix)

    @property
    def destination_network(self) -> IPNetwork | None:
        return _network(self.destination_ip_prefix)

    @property
    def source_ports(self) -> tuple[int, int]:
        """The source port range as (low, high), open bounds filled in."""
        return _bounds(self.source_port_range_min, self.source_port_range_max)

    @property
    def destination_ports(self) -> tuple[int, int]:
        return _bounds(self.destination_port_range_min, self.destination_port_range_max)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "ethertype": self.ethertype.value,
            "protocol": None if self.protocol is None else self.protocol.value,
            "source_port_range_min": self.source_port_range_min,
            "source_port_range_max": self.source_port_range_max,
            "destination_port_range_min": self.destination_port_range_min,
            "destination_port_range_max": self.destination_port_range_max,
            "source_ip_prefix": self.source_ip_prefix,
            "destination_ip_prefix": self.destination_ip_prefix,
            "logical_source_port": self.logical_source_port,
            "logical_destination_port": self.logical_destination_port,
            "l7_parameters": dict(self.l7_parameters),
        }


def _network(prefix: str | None) -> IPNetwork | None:
    return None if prefix is None else ipaddress.ip_network(prefix)


def _bounds(low: int | None, high: int | None) -> tuple[int, int]:
    return (0 if low is None else low, 65535 if high is None else high)


@dataclass(frozen=True)
class ChainParameters:
    """`correlation` defaults to "mpls" as in networking-sfc; `symmetric`
    chains carry the replies back through the same instances."""

    correlation: Correlation = Correlation.MPLS
    symmetric: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"correlation": self.correlation.value, "symmetric": self.symmetric}


@dataclass(frozen=True, kw_only=True)
class PortChain(Resource):
    """Classified traffic crosses the groups in order; `chain_id` is its SPI."""

    kind = ResourceKind.PORT_CHAIN

    port_pair_groups: tuple[str, ...]
    flow_classifiers: tuple[str, ...] = ()
    chain_parameters: ChainParameters = field(default_factory=ChainParameters)
    chain_id: int = 0

    @property
    def symmetric(self) -> bool:
        return self.chain_parameters.symmetric

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "port_pair_groups": list(self.port_pair_groups),
            "flow_classifiers": list(self.flow_classifiers),
            "chain_parameters": self.chain_parameters.to_dict(),
            "chain_id": self.chain_id,
        }


@dataclass(frozen=True, kw_only=True)
class ServiceGraph(Resource):
    """Links chains: at the end of a source chain, traffic that matches the
    classifiers of one of its destination chains continues into that chain."""

    kind = ResourceKind.SERVICE_GRAPH

    port_chains: FrozenMap[str, tuple[str, ...]] = field(default_factory=FrozenMap)

    @property
    def chain_ids(self) -> frozenset[str]:
        """Every chain of the graph, source or destination."""
        ids = set(self.port_chains)
        for destinations in self.port_chains.values():
            ids.update(destinations)
        return frozenset(ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self._common(),
            "port_chains": {src: list(dsts) for src, dsts in self.port_chains.items()},
        }


RESOURCE_CLASSES: dict[ResourceKind, type[Resource]] = {
    ResourceKind.PORT: Port,
    ResourceKind.PORT_PAIR: PortPair,
    ResourceKind.PORT_PAIR_GROUP: PortPairGroup,
    ResourceKind.FLOW_CLASSIFIER: FlowClassifier,
    ResourceKind.PORT_CHAIN: PortChain,
    ResourceKind.SERVICE_GRAPH: ServiceGraph,
}
"""Kind to class, in dependency order: each kind refers only to earlier ones."""


def resource_json(resource: Resource) -> str:
    """The resource's `to_dict()` as compact JSON: what the stores keep of it."""
    return json.dumps(resource.to_dict(), separators=(",", ":"), ensure_ascii=False)
