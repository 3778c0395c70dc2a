"""The messenger's operations: their declared arguments, validation and dispatch.

Each operation states its arguments once, in :data:`ARGUMENTS` (name, kind,
required or default). :func:`parse_command` checks every argument of a request
against that table and the cross-argument rules (the NIC's address inside its
subnet, ...) and returns a frozen command, or raises a
:class:`~pktchain.messenger.wire.MessengerError` naming the first bad field
(``args.<name>``). Nothing reaches the router before the whole request has
passed, and each command is one call of the router's control interface
(:class:`RouterControl`), which is all-or-nothing: a request is applied whole
or not at all.

The vocabulary is the controller messages of the virtual-routers thesis: a router NIC has a ``mac``,
an ``ip``, a ``subnet``, a ``gateway`` and a ``network_id``; a host NIC has a
``mac``, an ``ip`` and a ``network_id``.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any, Protocol, TypeAlias

from pktchain.messenger.wire import ErrorType, MessengerError
from pktchain.packet import text as patterns
from pktchain.packet.address import format_mac, mac_bytes

__all__ = [
    "ARGUMENTS",
    "ArgKind",
    "ArgSpec",
    "Command",
    "HostNicAdd",
    "HostNicRemove",
    "Hosts",
    "InterfaceFactory",
    "Op",
    "Ping",
    "PortForwardAdd",
    "PortForwardRemove",
    "RouterControl",
    "RouterNicAdd",
    "RouterNicRemove",
    "TransportProto",
    "Vrrp",
    "VrrpSet",
    "VrrpTrack",
    "apply_command",
    "parse_command",
    "router_interface_factory",
    "to_json",
]

Json: TypeAlias = Any


class Op(StrEnum):
    """The ``op`` of a request."""

    ROUTER_NIC_ADD = "router_nic_add"
    ROUTER_NIC_REMOVE = "router_nic_remove"
    HOST_NIC_ADD = "host_nic_add"
    HOST_NIC_REMOVE = "host_nic_remove"
    HOSTS = "hosts"
    PORT_FORWARD_ADD = "port_forward_add"
    PORT_FORWARD_REMOVE = "port_forward_remove"
    VRRP = "vrrp"
    VRRP_SET = "vrrp_set"
    VRRP_TRACK = "vrrp_track"
    PING = "ping"


class TransportProto(StrEnum):
    """The protocols a port forwarding rule can name."""

    TCP = "tcp"
    UDP = "udp"


class ArgKind(Enum):
    """How an argument's JSON value is checked and converted."""

    NAME = enum.auto()
    """An interface name: 1-15 characters, no ``/``, ``:`` or whitespace (Linux IFNAMSIZ)."""
    MAC = enum.auto()
    """A unicast Ethernet address ``"02:00:00:00:00:01"`` (``-`` accepted); given as lowercase."""
    IPV4 = enum.auto()
    """A dotted-quad IPv4 address."""
    SUBNET = enum.auto()
    """An IPv4 network in CIDR form, host bits zero, prefix at most /30 (``"10.0.1.0/24"``)."""
    NETWORK_ID = enum.auto()
    """The controller's network identifier: a string of at most 64 characters."""
    BOOL = enum.auto()
    """``true`` or ``false``."""
    MTU = enum.auto()
    """An integer from 68 (RFC 791) to 65535."""
    PORT = enum.auto()
    """A TCP/UDP port, an integer from 1 to 65535."""
    PROTO = enum.auto()
    """``"tcp"`` or ``"udp"``."""
    VRID = enum.auto()
    """A Virtual Router Identifier, an integer from 1 to 255."""
    PRIORITY = enum.auto()
    """A VRRP priority, an integer from 1 to 255 (255: the address owner)."""
    SECONDS = enum.auto()
    """A number of seconds, 0 to 1000 (a VRRP interval or delay)."""
    TEXT = enum.auto()
    """A name of at most 64 characters (a tracker's)."""


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument of an operation."""

    name: str
    kind: ArgKind
    required: bool = True
    default: Json = None


ARGUMENTS: Mapping[Op, tuple[ArgSpec, ...]] = {
    Op.ROUTER_NIC_ADD: (
        ArgSpec("name", ArgKind.NAME),
        ArgSpec("mac", ArgKind.MAC),
        ArgSpec("ip", ArgKind.IPV4),
        ArgSpec("subnet", ArgKind.SUBNET),
        ArgSpec("gateway", ArgKind.IPV4, required=False),
        ArgSpec("network_id", ArgKind.NETWORK_ID, required=False, default=""),
        ArgSpec("external", ArgKind.BOOL, required=False, default=False),
        ArgSpec("mtu", ArgKind.MTU, required=False, default=1500),
    ),
    Op.ROUTER_NIC_REMOVE: (ArgSpec("name", ArgKind.NAME),),
    Op.HOST_NIC_ADD: (
        ArgSpec("mac", ArgKind.MAC),
        ArgSpec("ip", ArgKind.IPV4),
        ArgSpec("network_id", ArgKind.NETWORK_ID, required=False, default=""),
    ),
    Op.HOST_NIC_REMOVE: (
        ArgSpec("mac", ArgKind.MAC, required=False),
        ArgSpec("ip", ArgKind.IPV4, required=False),
    ),
    Op.HOSTS: (),
    Op.PORT_FORWARD_ADD: (
        ArgSpec("proto", ArgKind.PROTO),
        ArgSpec("external_port", ArgKind.PORT),
        ArgSpec("inside_ip", ArgKind.IPV4),
        ArgSpec("inside_port", ArgKind.PORT),
    ),
    Op.PORT_FORWARD_REMOVE: (
        ArgSpec("proto", ArgKind.PROTO),
        ArgSpec("external_port", ArgKind.PORT),
    ),
    Op.VRRP: (),
    Op.VRRP_SET: (
        ArgSpec("interface", ArgKind.NAME),
        ArgSpec("vrid", ArgKind.VRID),
        ArgSpec("priority", ArgKind.PRIORITY, required=False),
        ArgSpec("preempt", ArgKind.BOOL, required=False),
        ArgSpec("preempt_delay", ArgKind.SECONDS, required=False),
        ArgSpec("advert_interval", ArgKind.SECONDS, required=False),
        ArgSpec("accept", ArgKind.BOOL, required=False),
    ),
    Op.VRRP_TRACK: (
        ArgSpec("name", ArgKind.TEXT),
        ArgSpec("ok", ArgKind.BOOL),
    ),
    Op.PING: (),
}
"""Every operation's arguments, in the order docs/messenger.md lists them."""

_NETWORK_ID_MAX = 64
_PREFIX_MAX = 30


def _integer(value: Json, low: int, high: int) -> int:
    # bool is an int in Python but not an integer on the wire; 80.0 is one (as JSON
    # Schema counts), 80.5 is not.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{value} is not in {low}..{high}")
    return value


def _string(value: Json) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _name(value: Json) -> str:
    text = _string(value)
    if not patterns.full(patterns.IFNAME, text):
        raise ValueError(f"{text!r} is not an interface name (1-15 characters, no / : or space)")
    return text


def _mac(value: Json) -> str:
    text = _string(value)
    if not patterns.full(patterns.MAC, text):
        raise ValueError(f"{text!r} is not a MAC address like 02:00:00:00:00:01")
    raw = mac_bytes(text)
    if raw[0] & 1:
        raise ValueError(f"{text!r} is a multicast address, a NIC's MAC is unicast")
    if raw == bytes(6):
        raise ValueError(f"{text!r} is the all-zero address")
    return format_mac(raw)


def _ipv4(value: Json) -> IPv4Address:
    text = _string(value)
    try:
        return IPv4Address(text)
    except ipaddress.AddressValueError:
        raise ValueError(f"{text!r} is not an IPv4 address") from None


def _subnet(value: Json) -> IPv4Network:
    text = _string(value)
    if "/" not in text:
        raise ValueError(f"{text!r} has no prefix length (CIDR form, like 10.0.1.0/24)")
    if not patterns.full(patterns.IPV4_PREFIX, text):
        raise ValueError(f"{text!r} is not an IPv4 subnet in CIDR form, like 10.0.1.0/24")
    try:
        return IPv4Network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IPv4 subnet: {exc}") from None


def _network_id(value: Json) -> str:
    text = _string(value)
    if len(text) > _NETWORK_ID_MAX:
        raise ValueError(f"longer than {_NETWORK_ID_MAX} characters")
    return text


def _bool(value: Json) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not true or false")
    return value


def _seconds(value: Json) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number of seconds")
    if not 0 <= value <= 1000:
        raise ValueError(f"{value} is not in 0..1000 seconds")
    return float(value)


def _text(value: Json) -> str:
    text = _string(value)
    if not 1 <= len(text) <= _NETWORK_ID_MAX:
        raise ValueError(f"{text!r} is not 1 to {_NETWORK_ID_MAX} characters")
    return text


def _proto(value: Json) -> TransportProto:
    text = _string(value)
    try:
        return TransportProto(text.lower())
    except ValueError:
        raise ValueError(f"{text!r} is not tcp or udp") from None


_CONVERTERS: Mapping[ArgKind, Callable[[Json], Any]] = {
    ArgKind.NAME: _name,
    ArgKind.MAC: _mac,
    ArgKind.IPV4: _ipv4,
    ArgKind.SUBNET: _subnet,
    ArgKind.NETWORK_ID: _network_id,
    ArgKind.BOOL: _bool,
    ArgKind.MTU: lambda value: _integer(value, 68, 65535),
    ArgKind.PORT: lambda value: _integer(value, 1, 65535),
    ArgKind.PROTO: _proto,
    ArgKind.VRID: lambda value: _integer(value, 1, 255),
    ArgKind.PRIORITY: lambda value: _integer(value, 1, 255),
    ArgKind.SECONDS: _seconds,
    ArgKind.TEXT: _text,
}


# --------------------------------------------------------------------------
# Commands: one frozen dataclass per operation, fully checked.


@dataclass(frozen=True, slots=True)
class RouterNicAdd:
    """Attach a router NIC: ``address`` is ``ip`` with ``subnet``'s prefix length."""

    name: str
    mac: str
    address: IPv4Interface
    gateway: IPv4Address | None
    network_id: str
    external: bool
    mtu: int


@dataclass(frozen=True, slots=True)
class RouterNicRemove:
    name: str


@dataclass(frozen=True, slots=True)
class HostNicAdd:
    mac: str
    ip: IPv4Address
    network_id: str


@dataclass(frozen=True, slots=True)
class HostNicRemove:
    """Exactly one of ``mac`` and ``ip`` is set."""

    mac: str | None
    ip: IPv4Address | None


@dataclass(frozen=True, slots=True)
class Hosts:
    pass


@dataclass(frozen=True, slots=True)
class PortForwardAdd:
    proto: TransportProto
    external_port: int
    inside_ip: IPv4Address
    inside_port: int


@dataclass(frozen=True, slots=True)
class PortForwardRemove:
    proto: TransportProto
    external_port: int


@dataclass(frozen=True, slots=True)
class Vrrp:
    pass


@dataclass(frozen=True, slots=True)
class VrrpSet:
    """Change a virtual router's settings: only those given (the others stay)."""

    interface: str
    vrid: int
    changes: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class VrrpTrack:
    """Report a tracked object's state to the virtual routers tracking it."""

    name: str
    ok: bool


@dataclass(frozen=True, slots=True)
class Ping:
    pass


Command: TypeAlias = (
    RouterNicAdd
    | RouterNicRemove
    | HostNicAdd
    | HostNicRemove
    | Hosts
    | PortForwardAdd
    | PortForwardRemove
    | Vrrp
    | VrrpSet
    | VrrpTrack
    | Ping
)


def _invalid(name: str, message: str) -> MessengerError:
    return MessengerError(ErrorType.INVALID_ARGUMENT, message, f"args.{name}")


def parse_op(value: Json) -> Op:
    """The :class:`Op` named by a request's ``op``."""
    if not isinstance(value, str):
        raise MessengerError(ErrorType.MALFORMED, f"{value!r} is not a string", "op")
    try:
        return Op(value)
    except ValueError:
        known = ", ".join(op.value for op in Op)
        raise MessengerError(
            ErrorType.UNKNOWN_OP, f"{value!r} is not an operation ({known})", "op"
        ) from None


def parse_command(op: Op, args: Mapping[str, Json]) -> Command:
    """Check ``args`` for ``op`` entirely; the command, or the first bad field."""
    specs = ARGUMENTS[op]
    known = {spec.name for spec in specs}
    for key in args:
        if key not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise _invalid(key, f"unknown argument of {op.value} (expected: {expected})")
    values: dict[str, Any] = {}
    for spec in specs:
        if spec.name not in args:
            if spec.required:
                raise _invalid(spec.name, f"missing (required by {op.value})")
            values[spec.name] = spec.default
            continue
        try:
            values[spec.name] = _CONVERTERS[spec.kind](args[spec.name])
        except ValueError as exc:
            raise _invalid(spec.name, str(exc)) from None
    return _BUILDERS[op](values)


def _router_nic_add(v: dict[str, Any]) -> RouterNicAdd:
    subnet: IPv4Network = v["subnet"]
    ip: IPv4Address = v["ip"]
    gateway: IPv4Address | None = v["gateway"]
    if subnet.prefixlen > _PREFIX_MAX:
        raise _invalid("subnet", f"/{subnet.prefixlen} leaves no host addresses besides the router")
    if ip not in subnet:
        raise _invalid("ip", f"{ip} is not in subnet {subnet}")
    if ip in (subnet.network_address, subnet.broadcast_address):
        raise _invalid("ip", f"{ip} is the network or broadcast address of {subnet}")
    if gateway is not None:
        if gateway not in subnet:
            raise _invalid("gateway", f"{gateway} is not in subnet {subnet}")
        # As in the virtual-routers thesis: on a private network the router's own address is the
        # subnet's gateway; on the external one the gateway is the upstream router.
        if not v["external"] and gateway != ip:
            raise _invalid("gateway", f"{gateway} is not the NIC's ip {ip} (internal NIC)")
        if v["external"] and gateway == ip:
            raise _invalid("gateway", f"{gateway} is the NIC's own ip (external NIC)")
    return RouterNicAdd(
        name=v["name"],
        mac=v["mac"],
        address=IPv4Interface((ip, subnet.prefixlen)),
        gateway=gateway,
        network_id=v["network_id"],
        external=v["external"],
        mtu=v["mtu"],
    )


def _host_nic_remove(v: dict[str, Any]) -> HostNicRemove:
    if v["mac"] is None and v["ip"] is None:
        raise _invalid("mac", "give mac or ip")
    if v["mac"] is not None and v["ip"] is not None:
        raise _invalid("ip", "give mac or ip, not both")
    return HostNicRemove(mac=v["mac"], ip=v["ip"])


_BUILDERS: Mapping[Op, Callable[[dict[str, Any]], Command]] = {
    Op.ROUTER_NIC_ADD: _router_nic_add,
    Op.ROUTER_NIC_REMOVE: lambda v: RouterNicRemove(v["name"]),
    Op.HOST_NIC_ADD: lambda v: HostNicAdd(v["mac"], v["ip"], v["network_id"]),
    Op.HOST_NIC_REMOVE: _host_nic_remove,
    Op.HOSTS: lambda v: Hosts(),
    Op.PORT_FORWARD_ADD: lambda v: PortForwardAdd(
        v["proto"], v["external_port"], v["inside_ip"], v["inside_port"]
    ),
    Op.PORT_FORWARD_REMOVE: lambda v: PortForwardRemove(v["proto"], v["external_port"]),
    Op.VRRP: lambda v: Vrrp(),
    Op.VRRP_SET: lambda v: VrrpSet(
        v["interface"],
        v["vrid"],
        {k: x for k, x in v.items() if k not in ("interface", "vrid") and x is not None},
    ),
    Op.VRRP_TRACK: lambda v: VrrpTrack(v["name"], v["ok"]),
    Op.PING: lambda v: Ping(),
}


# --------------------------------------------------------------------------
# The router side


class RouterControl(Protocol):
    """The control methods of :class:`pktchain.functions.router.function.Router` the
    messenger drives. Each raises ValueError naming the field on bad input and
    changes nothing when it raises. Addresses are passed in their text form
    (MACs lowercase with colons), already checked."""

    def add_interface(self, interface: Any, /) -> object: ...

    def remove_interface(self, name: str, /) -> object: ...

    def add_host(self, mac: str, ip: str, network_id: str = "", /) -> object: ...

    def remove_host(self, mac_or_ip: str, /) -> object: ...

    def hosts(self) -> object: ...

    def add_port_forward(
        self, proto: str, external_port: int, inside_ip: str, inside_port: int, /
    ) -> object: ...

    def remove_port_forward(self, proto: str, external_port: int, /) -> object: ...

    def vrrp(self) -> object: ...

    def vrrp_set(self, interface: str, vrid: int, changes: Mapping[str, Any], /) -> object: ...

    def vrrp_track(self, name: str, ok: bool, /) -> object: ...


InterfaceFactory: TypeAlias = Callable[[RouterNicAdd], object]
"""Makes the object `RouterControl.add_interface` takes from a checked command."""


def router_interface_factory() -> InterfaceFactory:
    """A factory making :class:`pktchain.functions.router.function.RouterInterface` objects.

    The router is imported here, when a server is made without a factory of
    its own, so that the messenger does not depend on it otherwise. A
    ``gateway`` is passed only when ``RouterInterface`` has such a field;
    otherwise an external NIC with a gateway is refused (``args.gateway``)
    rather than the upstream gateway being dropped.
    """
    import importlib
    import inspect

    router_interface: Any = importlib.import_module(
        "pktchain.functions.router.function"
    ).RouterInterface
    takes_gateway = "gateway" in inspect.signature(router_interface).parameters

    def make(nic: RouterNicAdd) -> object:
        extra: dict[str, Any] = {}
        if nic.gateway is not None and takes_gateway:
            extra["gateway"] = nic.gateway
        elif nic.gateway is not None and nic.external:
            # An internal NIC's gateway is its own address (checked already);
            # an external NIC's is the upstream router, which this router
            # takes from its configuration only.
            raise _invalid(
                "gateway", "this router takes its upstream gateway from its configuration"
            )
        return router_interface(
            name=nic.name,
            mac=nic.mac,
            address=nic.address,
            external=nic.external,
            network_id=nic.network_id,
            mtu=nic.mtu,
            **extra,
        )

    return make


def apply_command(
    command: Command, router: RouterControl, make_interface: InterfaceFactory
) -> object:
    """Make the one router call ``command`` stands for; its return value."""
    match command:
        case RouterNicAdd():
            return router.add_interface(make_interface(command))
        case RouterNicRemove(name=name):
            return router.remove_interface(name)
        case HostNicAdd(mac=mac, ip=ip, network_id=network_id):
            return router.add_host(mac, str(ip), network_id)
        case HostNicRemove(mac=mac, ip=ip):
            return router.remove_host(mac if mac is not None else str(ip))
        case Hosts():
            return router.hosts()
        case PortForwardAdd(proto=proto, external_port=ext, inside_ip=ip, inside_port=port):
            return router.add_port_forward(proto.value, ext, str(ip), port)
        case PortForwardRemove(proto=proto, external_port=ext):
            return router.remove_port_forward(proto.value, ext)
        case Vrrp():
            return router.vrrp()
        case VrrpSet(interface=interface, vrid=vrid, changes=changes):
            return router.vrrp_set(interface, vrid, changes)
        case VrrpTrack(name=name, ok=ok):
            return router.vrrp_track(name, ok)
        case Ping():
            return {"pong": True}


_SCALARS = (str, int, float, bool, type(None))
_ADDRESSES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


def to_json(value: object, depth: int = 0) -> Json:
    """A router result as JSON values.

    Dataclasses and named tuples become objects of their fields; enums their
    value, but an integer enum (a protocol number) its name in lower case, as
    the operations take it ("tcp"); addresses, interfaces and networks their
    text; bytes colon-separated hex (a MAC reads as usual); sequences and sets
    lists; mappings objects with string keys. Anything else is given as its
    ``str``.
    """
    if depth > 32:
        raise ValueError("result nested too deeply")
    if isinstance(value, Enum):
        value = value.name.lower() if isinstance(value, int) else value.value
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, _ADDRESSES):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex(":")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)
        }
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: to_json(v, depth + 1) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {str(to_json(k, depth + 1)): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [to_json(item, depth + 1) for item in value]
        if isinstance(value, set | frozenset):
            items.sort(key=str)
        return items
    return str(value)
