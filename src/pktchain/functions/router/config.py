"""Configuration of the virtual router: its interfaces, upstream gateway, NAT and timers.

A :class:`RouterInterface` is one leg of the router in one subnet, holding the
subnet's gateway address (the thesis's convention: the router is the gateway
of every subnet it is attached to). At most one interface is ``external``: it
holds the public address, the NAT's external address when NAT is on, and
leads to the upstream gateway. :class:`RouterConfig` checks the whole
configuration at once and reports every wrong field in one
:class:`RouterConfigError`, in the style of
:class:`~pktchain.functions.nat.config.NatConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface

from pktchain.functions.common.fields import mac_error
from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.vrrp.config import VrrpConfig
from pktchain.packet.address import mac_bytes

__all__ = [
    "RouterConfig",
    "RouterConfigError",
    "RouterInterface",
    "config_errors",
    "interface_errors",
    "nat_errors",
    "overlap_errors",
    "vrrp_errors",
]

MIN_MTU = 68
"""RFC 791 §3.2: every internet module must forward a 68-byte datagram unfragmented."""


class RouterConfigError(ValueError):
    """A configuration with one or more wrong fields; ``errors`` names each one."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("invalid router configuration: " + "; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class RouterInterface:
    """One router interface: its name (the node's virtual port), MAC and gateway address.

    ``address`` carries the prefix (``10.0.0.1/24``: the router is 10.0.0.1 on
    10.0.0.0/24); a string is accepted and parsed. ``network_id`` is the cloud
    controller's name for the subnet, kept for the messenger and the tables.
    """

    name: str
    mac: str
    address: IPv4Interface
    external: bool = False
    network_id: str = ""
    mtu: int = 1500
    gateway: IPv4Address | None = None
    """External interface: the upstream gateway (the default route's next hop),
    as the controller's NIC announcement gives it. Internal interface: if given,
    the interface's own address (the router is the subnet's gateway)."""

    def __post_init__(self) -> None:
        errors = interface_errors(self)
        if errors:
            raise RouterConfigError(errors)
        if not isinstance(self.address, IPv4Interface):
            object.__setattr__(self, "address", ip_interface(self.address))
        if self.gateway is not None and not isinstance(self.gateway, IPv4Address):
            object.__setattr__(self, "gateway", IPv4Address(str(self.gateway)))
        object.__setattr__(self, "mac", mac_bytes(self.mac).hex(":"))

    @property
    def network(self) -> IPv4Network:
        """The subnet the interface is the gateway of."""
        return self.address.network


def interface_errors(iface: RouterInterface) -> list[str]:
    """Every problem of one interface on its own, each naming its field."""
    errors: list[str] = []
    where = f"interfaces[{iface.name!r}]"
    if not isinstance(iface.name, str) or not iface.name:
        errors.append("name: give a non-empty interface name")
    mac_problem = mac_error(iface.mac, unicast=True)
    if mac_problem is not None:
        errors.append(f"{where}.mac: {mac_problem}")
    address = iface.address
    if not isinstance(address, IPv4Interface):
        try:
            address = ip_interface(str(address))
        except ValueError:
            address = None
        if not isinstance(address, IPv4Interface):
            errors.append(f"{where}.address: not an IPv4 address with prefix: {iface.address!r}")
            address = None
    if address is not None:
        net = address.network
        if net.prefixlen > 30:
            errors.append(f"{where}.address: prefix /{net.prefixlen} leaves no host addresses")
        elif address.ip in (net.network_address, net.broadcast_address):
            errors.append(f"{where}.address: {address.ip} is the subnet's network or broadcast")
        if address.ip.is_multicast or address.ip.is_loopback or address.ip.is_unspecified:
            errors.append(f"{where}.address: {address.ip} cannot be a gateway address")
    if iface.gateway is not None and address is not None:
        try:
            gateway = IPv4Address(str(iface.gateway))
        except ValueError:
            errors.append(f"{where}.gateway: not an IPv4 address: {iface.gateway!r}")
        else:
            net = address.network
            if not iface.external and gateway != address.ip:
                errors.append(
                    f"{where}.gateway: {gateway} must be the interface's own address "
                    f"{address.ip} (the router is the subnet's gateway)"
                )
            elif iface.external and (
                gateway not in net
                or gateway in (address.ip, net.network_address, net.broadcast_address)
            ):
                errors.append(f"{where}.gateway: {gateway} is not another host of {net}")
    if not isinstance(iface.mtu, int) or not MIN_MTU <= iface.mtu <= 0xFFFF:
        errors.append(f"{where}.mtu: {iface.mtu!r} is not in {MIN_MTU}..65535")
    return errors


@dataclass(frozen=True)
class RouterConfig:
    """The router: interfaces, where the outside is, NAT, and the ARP/host/ICMP settings.

    Times are in seconds of the ``now`` given to the router.
    """

    interfaces: tuple[RouterInterface, ...] = ()
    upstream_gateway: IPv4Address | None = None
    """Next hop of the default route, on the external interface's subnet."""
    nat: NatConfig | None = None
    """NAPT on the external interface; its external address is that interface's
    address, or a virtual address of a VRRP instance on it (then the master of
    the pair translates). None: plain routing everywhere."""
    vrrp: tuple[VrrpConfig, ...] = ()
    """Virtual routers (VRRPv3, RFC 5798) on the interfaces: each names an
    interface, and its virtual addresses lie in that interface's subnet
    (docs/vrrp.md)."""
    auto_forward_service_port: int | None = 22
    """Inside TCP port that each tracked host's automatic forwarding port leads
    to (the thesis's SSH port); None turns automatic forwarding off."""
    auto_forward_range: tuple[int, int] = (49152, 65534)
    """External ports handed out as automatic forwarding ports, both ends included."""
    arp_timeout: float = 60.0
    """How long a resolved neighbour is trusted before it is verified again
    (RFC 1122 §2.3.2.1: entries must time out; "on the order of a minute")."""
    arp_retry_interval: float = 1.0
    """Between two requests for one address (RFC 1122 §2.3.2.1: at most one per second)."""
    arp_retries: int = 3
    """Requests sent for an address before it is declared unreachable."""
    arp_queue_limit: int = 8
    """Packets held per unresolved next hop; the oldest goes first (RFC 1122 §2.3.2.2
    asks that at least the latest be kept)."""
    host_aging: float = 600.0
    """A learned host silent this long is probed by ARP and removed if it does not answer."""
    host_limit: int = 4096
    """Hosts tracked at once, learned and announced together (bounded memory)."""
    icmp_error_rate: float = 100.0
    """ICMP errors per second on average (RFC 1812 §4.3.2.8 token bucket)."""
    icmp_error_burst: int = 50
    """ICMP errors sent back to back before the rate applies."""
    fragment_timeout: float = 30.0
    """How long the NAT remembers a fragmented datagram, from the first of its
    fragments seen (whatever its offset; rounded up to the whole second): the
    translation its later fragments get, or the fragments held until the one
    at offset 0 comes, discarded then. RFC 791 §3.2's reassembly timer, kept
    for out-of-order fragments (RFC 4787 REQ-14)."""
    fragment_datagram_limit: int = 1024
    """Fragmented datagrams remembered at once; a new one evicts the oldest
    (RFC 4787 REQ-14a: a flood of fragments costs bounded memory)."""
    fragment_queue_limit: int = 64
    """Fragments held per datagram while its first fragment has not come."""
    fragment_held_bytes: int = 1 << 20
    """Bytes of fragments held for all datagrams together."""
    ip_id_rewrite: bool = True
    """Give translated non-atomic datagrams (DF clear, or fragments) leaving with
    the external address a fresh IPv4 ID, so that IDs stay unique per (source,
    destination, protocol) after translation (RFC 7857 §10, RFC 6864 §5.3.1)."""
    ip_id_memory: int = 4096
    """Rewritten IDs remembered (for ``fragment_timeout``) so that an ICMP error
    quoting such a datagram is given back with the ID its sender chose."""

    def __post_init__(self) -> None:
        errors = config_errors(self)
        if errors:
            raise RouterConfigError(errors)
        if self.upstream_gateway is not None and not isinstance(self.upstream_gateway, IPv4Address):
            object.__setattr__(self, "upstream_gateway", ip_address(self.upstream_gateway))
        object.__setattr__(self, "interfaces", tuple(self.interfaces))
        object.__setattr__(self, "vrrp", tuple(self.vrrp))

    @property
    def external(self) -> RouterInterface | None:
        """The external interface, if any."""
        return next((i for i in self.interfaces if i.external), None)


def overlap_errors(interfaces: tuple[RouterInterface, ...] | list[RouterInterface]) -> list[str]:
    errors: list[str] = []
    seen_names: set[str] = set()
    seen_macs: dict[str, str] = {}
    for i, iface in enumerate(interfaces):
        if iface.name in seen_names:
            errors.append(f"interfaces[{i}].name: {iface.name!r} is used twice")
        seen_names.add(iface.name)
        other = seen_macs.get(iface.mac)
        if other is not None:
            errors.append(f"interfaces[{i}].mac: {iface.mac} is also {other!r}'s MAC")
        seen_macs[iface.mac] = iface.name
        for before in interfaces[:i]:
            if iface.network.overlaps(before.network):
                errors.append(
                    f"interfaces[{i}].address: {iface.network} overlaps {before.name!r}'s "
                    f"{before.network}"
                )
    if sum(1 for iface in interfaces if iface.external) > 1:
        errors.append("interfaces: more than one is external")
    return errors


def nat_errors(
    nat: NatConfig | None,
    interfaces: tuple[RouterInterface, ...] | list[RouterInterface],
    vrrp: tuple[VrrpConfig, ...] = (),
) -> list[str]:
    """Whether the NAT fits the interfaces: its address on the external one (its own
    or a virtual one of `vrrp`), inside covered."""
    if nat is None:
        return []
    errors: list[str] = []
    external = next((i for i in interfaces if i.external), None)
    address = ip_address(nat.external_address)
    virtual = {
        str(a)
        for v in vrrp
        if external and v.interface == external.name
        for a in v.virtual_addresses
    }
    if external is None:
        errors.append("nat: needs an external interface")
    elif str(external.address.ip) != str(address) and str(address) not in virtual:
        errors.append(
            f"nat.external_address: {nat.external_address} is neither the external "
            f"interface's address {external.address.ip} nor a virtual address on it"
        )
    for iface in interfaces:
        if not iface.external and not any(iface.network.subnet_of(n) for n in nat.networks):
            errors.append(
                f"interfaces[{iface.name!r}].address: {iface.network} is not inside "
                "nat.internal_networks (its hosts could not reach the outside)"
            )
    return errors


def config_errors(config: RouterConfig) -> list[str]:
    """Every problem of a configuration, each naming its field."""
    errors: list[str] = []
    interfaces = config.interfaces
    if isinstance(interfaces, RouterInterface) or not all(
        isinstance(i, RouterInterface) for i in interfaces
    ):
        return ["interfaces: give a sequence of RouterInterface"]
    errors.extend(overlap_errors(tuple(interfaces)))
    external = next((i for i in interfaces if i.external), None)
    gateway = config.upstream_gateway
    if gateway is not None:
        try:
            parsed = ip_address(gateway)
        except ValueError:
            parsed = None
        if not isinstance(parsed, IPv4Address):
            errors.append(f"upstream_gateway: not an IPv4 address: {gateway!r}")
        elif external is None:
            errors.append("upstream_gateway: needs an external interface")
        elif parsed not in external.network or parsed == external.address.ip:
            errors.append(
                f"upstream_gateway: {parsed} is not another host of the external "
                f"subnet {external.network}"
            )
    if (
        external is not None
        and external.gateway is not None
        and gateway is not None
        and str(external.gateway) != str(gateway)
    ):
        errors.append(
            f"upstream_gateway: {gateway} differs from the external interface's gateway "
            f"{external.gateway}"
        )
    errors.extend(vrrp_errors(config.vrrp, tuple(interfaces)))
    errors.extend(nat_errors(config.nat, tuple(interfaces), config.vrrp))
    port = config.auto_forward_service_port
    if port is not None and (not isinstance(port, int) or not 1 <= port <= 0xFFFF):
        errors.append(f"auto_forward_service_port: {port!r} is not in 1..65535")
    low_high = config.auto_forward_range
    if (
        len(low_high) != 2
        or not all(isinstance(p, int) for p in low_high)
        or not 1 <= low_high[0] <= low_high[1] <= 0xFFFF
    ):
        errors.append(f"auto_forward_range: {low_high!r} is not (low, high) in 1..65535")
    for name, seconds in (
        ("arp_timeout", config.arp_timeout),
        ("arp_retry_interval", config.arp_retry_interval),
        ("host_aging", config.host_aging),
        ("icmp_error_rate", config.icmp_error_rate),
        ("fragment_timeout", config.fragment_timeout),
    ):
        if not isinstance(seconds, (int, float)) or not seconds > 0:
            errors.append(f"{name}: {seconds!r} must be positive")
    for name, count, minimum in (
        ("arp_retries", config.arp_retries, 1),
        ("arp_queue_limit", config.arp_queue_limit, 0),
        ("host_limit", config.host_limit, 0),
        ("icmp_error_burst", config.icmp_error_burst, 1),
        ("fragment_datagram_limit", config.fragment_datagram_limit, 1),
        ("fragment_queue_limit", config.fragment_queue_limit, 0),
        ("fragment_held_bytes", config.fragment_held_bytes, 0),
        ("ip_id_memory", config.ip_id_memory, 0),
    ):
        if not isinstance(count, int) or count < minimum:
            errors.append(f"{name}: {count!r} must be an integer >= {minimum}")
    if not isinstance(config.ip_id_rewrite, bool):
        errors.append(f"ip_id_rewrite: {config.ip_id_rewrite!r} is not true or false")
    return errors


def vrrp_errors(
    vrrp: tuple[VrrpConfig, ...], interfaces: tuple[RouterInterface, ...] | list[RouterInterface]
) -> list[str]:
    """Whether each virtual router fits its interface: the interface exists, and its
    virtual addresses are hosts of the interface's subnet; only the owner (priority
    255) may name the interface's own address."""
    errors: list[str] = []
    if isinstance(vrrp, VrrpConfig) or not all(isinstance(v, VrrpConfig) for v in vrrp):
        return ["vrrp: give a sequence of VrrpConfig"]
    by_name = {iface.name: iface for iface in interfaces}
    seen: dict[tuple[str, int], int] = {}
    for i, virtual in enumerate(vrrp):
        where = f"vrrp[{i}]"
        key = (virtual.interface, virtual.vrid)
        if key in seen:
            errors.append(
                f"{where}.vrid: {virtual.vrid} on {virtual.interface} is also vrrp[{seen[key]}]"
            )
        seen[key] = i
        iface = by_name.get(virtual.interface)
        if iface is None:
            errors.append(f"{where}.interface: {virtual.interface!r} is not a router interface")
            continue
        network = iface.network
        for address in virtual.virtual_addresses:
            if address not in network or address in (
                network.network_address,
                network.broadcast_address,
            ):
                errors.append(
                    f"{where}.virtual_addresses: {address} is not a host of {iface.name}'s "
                    f"subnet {network}"
                )
            elif address == iface.address.ip and virtual.priority != 255:
                errors.append(
                    f"{where}.virtual_addresses: {address} is {iface.name}'s own address; "
                    "only its owner (priority 255) may name it"
                )
            elif address != iface.address.ip and virtual.priority == 255:
                errors.append(
                    f"{where}.priority: 255 is the owner's, but {address} is not "
                    f"{iface.name}'s address {iface.address.ip}"
                )
        if virtual.source_address is not None and virtual.source_address != iface.address.ip:
            errors.append(
                f"{where}.source_address: {virtual.source_address} is not {iface.name}'s "
                f"address {iface.address.ip}"
            )
    return errors
