"""Interfaces, addresses and routes inside namespaces, over netlink (pyroute2).

The lab uses these to build a topology, and the pktchain node uses
`configure_interface`, `add_routes` and `configure_node_port` to finish a port
it has created inside a host's namespace (an ``attach: node`` interface).

pyroute2 is untyped; its objects stay inside this module. Every netlink error
becomes a `LabOSError` carrying the kernel's errno and naming
``<namespace>/<interface>``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from pyroute2 import DiagSocket, IPRoute, NetlinkError

from pktchain.lab.errors import LabOSError, WaitTimeoutError
from pktchain.lab.namespaces import entered, netns_path, write_sysctl
from pktchain.lab.topology import IPInterface, NodePort, Route, parse_route
from pktchain.lab.wait import wait_until

IFA_F_NODAD = 0x02  # linux/if_addr.h: no duplicate address detection


class Netlink:
    """A route netlink socket bound to one namespace, with the lab's operations.

    The socket is opened from inside the namespace (`entered`), so it stays
    bound to it; no process is forked.
    """

    def __init__(self, netns: str) -> None:
        self.netns = netns
        with entered(netns):
            try:
                self._ipr: Any = IPRoute()
            except OSError as exc:
                raise LabOSError(exc.errno or errno.EIO, netns, "open netlink in") from exc

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _request(self, operation: str, target: str | None = None) -> Iterator[None]:
        where = self.netns if target is None else f"{self.netns}/{target}"
        try:
            yield
        except NetlinkError as exc:
            raise LabOSError(exc.code, where, operation) from exc

    def index(self, ifname: str) -> int:
        with self._request("look up", ifname):
            found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise LabOSError(errno.ENODEV, f"{self.netns}/{ifname}", "look up")
        return int(found[0])

    def exists(self, ifname: str) -> bool:
        with self._request("look up", ifname):
            return bool(self._ipr.link_lookup(ifname=ifname))

    def create_veth(
        self, ifname: str, peer_netns: str, peer_ifname: str, *, index: int | None = None
    ) -> None:
        """A veth pair: `ifname` here, `peer_ifname` in `peer_netns`.

        Give `index` (an ifindex free here) to make the kernel report carrier
        changes at once: a veth whose ifindex equals its peer's, as happens
        between two fresh namespaces, has its link state changes batched by
        linkwatch, up to a second later (net/core/link_watch.c,
        linkwatch_urgent_event).
        """
        request: dict[str, Any] = {}
        if index is not None:
            request["index"] = index
        peer_fd = os.open(netns_path(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            with self._request(f"create veth to {peer_netns}/{peer_ifname}", ifname):
                self._ipr.link(
                    "add",
                    ifname=ifname,
                    kind="veth",
                    peer={"ifname": peer_ifname, "net_ns_fd": peer_fd},
                    **request,
                )
        finally:
            os.close(peer_fd)

    def create_bridge(self, name: str) -> None:
        with self._request("create bridge", name):
            self._ipr.link("add", ifname=name, kind="bridge")
        self.set_link(name, up=True)

    def set_link(
        self,
        ifname: str,
        *,
        mac: str | None = None,
        mtu: int | None = None,
        master: str | None = None,
        up: bool | None = None,
        gso_max_size: int | None = None,
    ) -> None:
        index = self.index(ifname)
        changes: dict[str, Any] = {}
        if mac is not None:
            changes["address"] = mac
        if mtu is not None:
            changes["mtu"] = mtu
        if gso_max_size is not None:
            changes["gso_max_size"] = gso_max_size
        if master is not None:
            changes["master"] = self.index(master)
        # Address and MTU first: some drivers refuse to change them while up.
        if changes:
            with self._request("set " + ", ".join(sorted(changes)) + " on", ifname):
                self._ipr.link("set", index=index, **changes)
        if up is not None:
            with self._request("set state of", ifname):
                self._ipr.link("set", index=index, state="up" if up else "down")

    def add_address(self, ifname: str, address: IPInterface) -> None:
        """Add an address; already present is fine. IPv6 skips DAD (usable at once)."""
        index = self.index(ifname)
        extra: dict[str, Any] = {}
        if address.version == 6:
            extra["flags"] = IFA_F_NODAD
        try:
            self._ipr.addr(
                "add",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **extra,
            )
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise LabOSError(exc.code, f"{self.netns}/{ifname}", f"add {address} to") from exc

    def addresses(self, ifname: str) -> list[IPInterface]:
        """The addresses on `ifname`, with their prefix lengths."""
        index = self.index(ifname)
        with self._request("list addresses of", ifname):
            messages = self._ipr.get_addr(index=index)
        return [
            ipaddress.ip_interface(f"{message.get('IFA_ADDRESS')}/{message['prefixlen']}")
            for message in messages
        ]

    def remove_address(self, ifname: str, address: IPInterface) -> None:
        """Remove an address; already absent is fine."""
        index = self.index(ifname)
        try:
            self._ipr.addr(
                "del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen
            )
        except NetlinkError as exc:
            if exc.code != errno.EADDRNOTAVAIL:
                raise LabOSError(
                    exc.code, f"{self.netns}/{ifname}", f"remove {address} from"
                ) from exc

    def replace_route(self, route: Route) -> None:
        family = socket.AF_INET if route.to.version == 4 else socket.AF_INET6
        request: dict[str, Any] = {"dst": str(route.to), "family": family}
        if route.via is not None:
            request["gateway"] = str(route.via)
        if route.dev is not None:
            request["oif"] = self.index(route.dev)
        if route.metric is not None:
            request["priority"] = route.metric
        with self._request(f"add route {route} in"):
            self._ipr.route("replace", **request)

    def operstates(self) -> dict[str, str]:
        """Operational state (``UP``, ``DOWN``, ``LOWERLAYERDOWN``...) of each interface."""
        with self._request("list links in"):
            links = self._ipr.get_links()
        return {str(link.get("ifname")): str(link.get("operstate")) for link in links}

    def configure(
        self,
        ifname: str,
        *,
        mac: str | None = None,
        addresses: Iterable[IPInterface] = (),
        mtu: int | None = None,
        up: bool = True,
    ) -> None:
        self.set_link(ifname, mac=mac, mtu=mtu)
        for address in addresses:
            self.add_address(ifname, address)
        if up:
            self.set_link(ifname, up=True)


def _as_interface(address: str | IPInterface) -> IPInterface:
    if isinstance(address, str):
        if "/" not in address:
            raise ValueError(f"{address!r} needs a prefix length")
        return ipaddress.ip_interface(address)
    return address


def interface_addresses(netns: str, ifname: str) -> list[IPInterface]:
    """The addresses on interface `ifname` of `netns`, with their prefix lengths."""
    with Netlink(netns) as netlink:
        return netlink.addresses(ifname)


def limit_gso(netns: str, ifname: str, size: int) -> None:
    """Let the kernel hand `ifname` (in `netns`) GSO super-frames of at most `size` bytes."""
    with Netlink(netns) as netlink:
        netlink.set_link(ifname, gso_max_size=size)


def configure_interface(
    netns: str,
    ifname: str,
    *,
    mac: str | None = None,
    addresses: Iterable[str | IPInterface] = (),
    mtu: int | None = None,
    up: bool = True,
    wait: float = 0.0,
) -> None:
    """Set MAC, MTU and addresses of an existing interface in `netns`, then bring it up.

    Meant for interfaces something else created, such as a port the node has
    moved into a host. Addresses are ``"10.0.0.1/24"`` strings or
    `ipaddress` interfaces; an address already present is left as is.

    With `wait` > 0, also wait up to that many seconds for the interface to be
    operationally up. A TAP device's carrier change can be batched by the
    kernel for up to a second (net/core/link_watch.c), during which frames
    sent to it are dropped.
    """
    parsed = [_as_interface(address) for address in addresses]
    with Netlink(netns) as netlink:
        netlink.configure(ifname, mac=mac, addresses=parsed, mtu=mtu, up=up)
    if up and wait > 0:
        wait_links_up({netns: [ifname]}, timeout=wait)


def add_routes(netns: str, routes: Iterable[Route | Mapping[str, Any]]) -> None:
    """Install routes in `netns`, replacing any to the same destination and metric.

    Each route is a `Route` or a mapping in the YAML form:
    ``{"to": "default", "via": "10.0.0.1"}``, ``{"to": "10.2.0.0/16", "dev": "eth1"}``.
    """
    parsed = [route if isinstance(route, Route) else parse_route(route) for route in routes]
    with Netlink(netns) as netlink:
        for route in parsed:
            netlink.replace_route(route)


def configure_node_port(port: NodePort, *, wait: float = 0.0) -> None:
    """Apply what the topology declares for an ``attach: node`` interface.

    Call it after creating the port inside ``port.netns``: it sets the port's
    own sysctls, its MAC, MTU and addresses, brings it up and installs the
    routes that leave through it. `wait` is as for `configure_interface`.
    """
    iface = port.interface
    for key, value in port.sysctls:
        write_sysctl(port.netns, key, value)
    with Netlink(port.netns) as netlink:
        netlink.configure(iface.name, mac=iface.mac, addresses=iface.addresses, mtu=iface.mtu)
        for route in port.routes:
            netlink.replace_route(route)
    if wait > 0:
        wait_links_up({port.netns: [iface.name]}, timeout=wait)


def wait_links_up(links: Mapping[str, Sequence[str]], *, timeout: float = 5.0) -> None:
    """Wait until every interface listed per namespace is operationally up."""
    pending = {netns: set(names) for netns, names in links.items() if names}
    sockets = {netns: Netlink(netns) for netns in pending}
    try:

        def all_up() -> bool:
            for netns in list(pending):
                states = sockets[netns].operstates()
                pending[netns] = {n for n in pending[netns] if states.get(n) != "UP"}
                if not pending[netns]:
                    del pending[netns]
            return not pending

        try:
            wait_until(all_up, timeout=timeout, what="links up")
        except WaitTimeoutError as exc:
            down = ", ".join(f"{ns}/{name}" for ns, names in pending.items() for name in names)
            raise WaitTimeoutError(f"links still down after {timeout:g} s: {down}") from exc
    finally:
        for netlink in sockets.values():
            netlink.close()


class TcpSocketState(IntEnum):
    """A socket's state as sock_diag reports it (include/net/tcp_states.h).

    A bound, unconnected UDP socket is reported as `CLOSE`.
    """

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12


@dataclass(frozen=True)
class TcpConnection:
    """A TCP socket of a namespace: its two ends, as (address, port), and its state."""

    local: tuple[str, int]
    remote: tuple[str, int]
    state: TcpSocketState


def _sockets(netns: str, protocol: int, states: Iterable[TcpSocketState]) -> list[dict[str, Any]]:
    """The inet_diag messages of the IPv4 and IPv6 sockets of `netns` in `states`."""
    mask = sum(1 << state for state in set(states))
    with entered(netns):
        diag: Any = DiagSocket()
    try:
        diag.bind()
        found: list[dict[str, Any]] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                found += diag.get_sock_stats(family=family, states=mask, protocol=protocol)
            except NetlinkError as exc:
                raise LabOSError(exc.code, netns, "list sockets in") from exc
        return found
    finally:
        diag.close()


def listening(netns: str, port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> bool:
    """True if a socket in `netns` listens on `port` (TCP) or is bound to it (UDP).

    Asks the kernel over sock_diag netlink, so that a server accepting a
    single connection (``iperf3 -1``) is not disturbed by a probe.
    """
    if kind == socket.SOCK_STREAM:
        found = _sockets(netns, socket.IPPROTO_TCP, (TcpSocketState.LISTEN,))
    else:
        found = _sockets(netns, socket.IPPROTO_UDP, (TcpSocketState.CLOSE,))
    return any(entry.get("idiag_sport") == port for entry in found)


def tcp_connections(netns: str, port: int) -> list[TcpConnection]:
    """The TCP connections of `netns` with `port` at either end, in any state but
    LISTEN (TIME_WAIT ones included), from sock_diag netlink."""
    states = [state for state in TcpSocketState if state is not TcpSocketState.LISTEN]
    return [
        TcpConnection(
            (str(entry["idiag_src"]), int(entry["idiag_sport"])),
            (str(entry["idiag_dst"]), int(entry["idiag_dport"])),
            TcpSocketState(entry["idiag_state"]),
        )
        for entry in _sockets(netns, socket.IPPROTO_TCP, states)
        if port in (entry["idiag_sport"], entry["idiag_dport"])
    ]
