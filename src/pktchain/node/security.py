"""The node's secured ports: the model's port security applied to its dataplane.

Each host port the node attached (a TAP or AF_PACKET port) has a Neutron port
in the model; `pktchain.sfc.security` says whether that port is secured and
what it may send as. `SecuredPorts.apply` gives every such port the check
(`PortGuard`) its Neutron port asks for, replacing a check only when what
it allows changed (a new check flushes the port's fused entries), and tells
the router which MAC owns each address of a secured port on the network of
each of its interfaces: the router's neighbour for such an address is the
port's binding, never what an ARP packet claims.

The node calls `apply` after every change of a port or a port pair (a port
pair exempts its ports), in its loop; native functions' and other nodes'
ports are the node's own and never checked.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pktchain.node.chaining import port_id
from pktchain.node.dataplane.ports import HOST_PORTS
from pktchain.node.dataplane.portsec import PortGuard
from pktchain.sfc.security import exempt_ports, port_security

if TYPE_CHECKING:
    from pktchain.functions.router.function import Router
    from pktchain.node.dataplane.datapath import Datapath
    from pktchain.node.dataplane.ports import SwitchPort
    from pktchain.sfc.model import SfcModel

__all__ = ["SecuredPorts"]

log = logging.getLogger(__name__)

_HOST_PORTS = HOST_PORTS


class SecuredPorts:
    """Keeps the checks of a node's host ports, and its router's bindings, as the model says."""

    def __init__(self, node_name: str, model: SfcModel, datapath: Datapath) -> None:
        self.node_name = node_name
        self.model = model
        self.datapath = datapath
        self.router: Router | None = None
        self.router_ports: Mapping[str, SwitchPort] = {}
        """The router's interfaces, by name, as ports of the node's networks."""
        self._bindings: dict[str, tuple[SwitchPort, dict[str, str]]] = {}
        """What the router was last told, by interface (with the interface's
        port then: an interface added again under its name is told anew)."""

    def apply(self) -> list[str]:
        """Check each host port as its Neutron port says; returns the ports whose check changed."""
        state = self.model.state
        exempt = exempt_ports(state)
        changed: list[str] = []
        for port in self.datapath.ports:
            if port.kind not in _HOST_PORTS:
                continue
            found = state.ports.get(port_id(self.node_name, port.name))
            security = None if found is None else port_security(found, exempt)
            current = None if port.guard is None else port.guard.security
            if security == current:
                continue
            self.datapath.secure(port, None if security is None else PortGuard(security))
            changed.append(port.name)
            if security is None:
                log.info("port %s: not secured", port.name)
            else:
                log.info(
                    "port %s: secured (%s; %d MACs)",
                    port.name,
                    ", ".join(str(net) for _mac, nets in security.grants for net in nets),
                    len(security.grants),
                )
        self._tell_router()
        return changed

    def bindings(self, network: object) -> dict[str, str]:
        """IPv4 address → MAC of the secured ports' fixed IPs in `network`."""
        found: dict[str, str] = {}
        for port in self.datapath.ports:
            guard = port.guard
            if guard is None or port.network is not network:
                continue
            for address in guard.security.fixed_ips:
                if ipaddress.ip_address(address).version == 4:
                    found[address] = guard.security.mac
        return found

    def _tell_router(self) -> None:
        router = self.router
        if router is None:
            return
        for iface, port in self.router_ports.items():
            bindings = self.bindings(port.network)
            if self._bindings.get(iface) == (port, bindings):
                continue
            router.secure_neighbors(iface, bindings)
            self._bindings[iface] = (port, bindings)
        for gone in self._bindings.keys() - self.router_ports.keys():
            del self._bindings[gone]
