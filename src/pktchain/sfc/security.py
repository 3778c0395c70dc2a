"""Port security as Neutron defines it: what a port may send as, and which ports are exempt.

A port is secured when its ``port_security_enabled`` is true (the default),
it has a MAC and at least one fixed IP (there is something to hold it to),
and it is not a port of a service function. A secured port may send with
its own MAC from its fixed IPs, and from each of its allowed address pairs
with the pair's MAC (the port's own when the pair named none); a pair's
address may be a whole CIDR. `PortSecurity` is that, worked out once per
port; the dataplane compiles it into the per-packet check
(`pktchain.node.dataplane.portsec`).

Service functions forward other hosts' traffic, so the ports of every port
pair (ingress and egress, whatever chain uses it, if any) are exempt, as are
ports with port security turned off (an appliance that is not a port pair's,
a host that must be let through as it is).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Container
from dataclasses import dataclass

from pktchain.sfc.resources import IPNetwork, Port
from pktchain.sfc.state import SfcState

__all__ = ["PortSecurity", "exempt_ports", "port_security", "security_by_port"]


@dataclass(frozen=True)
class PortSecurity:
    """What one secured port may send as.

    `grants` holds, for each source MAC the port may use (its own first),
    the networks its IP sources may come from with that MAC: the fixed IPs
    (single addresses) and the pairs' addresses.
    """

    mac: str
    grants: tuple[tuple[str, tuple[IPNetwork, ...]], ...]
    fixed_ips: tuple[str, ...]
    """The port's own addresses (its fixed IPs), which it owns: the router's
    neighbour for each is this port's MAC, whatever ARP says."""


def exempt_ports(state: SfcState) -> frozenset[str]:
    """The ids of ports that service functions use: every port pair's ingress and egress."""
    ids: set[str] = set()
    for pair in state.port_pairs.values():
        ids.add(pair.ingress)
        ids.add(pair.egress)
    return frozenset(ids)


def port_security(port: Port, exempt: Container[str] = ()) -> PortSecurity | None:
    """What `port` may send as, or None when it is not secured (see the module)."""
    if not port.port_security_enabled or not port.mac_address or not port.fixed_ips:
        return None
    if port.id in exempt:
        return None
    grants: dict[str, list[IPNetwork]] = {port.mac_address: []}
    for fixed in port.fixed_ips:
        grants[port.mac_address].append(ipaddress.ip_network(fixed.ip_address))
    for pair in port.allowed_address_pairs:
        mac = pair.mac_address or port.mac_address
        networks = grants.setdefault(mac, [])
        if pair.network not in networks:
            networks.append(pair.network)
    return PortSecurity(
        mac=port.mac_address,
        grants=tuple((mac, tuple(networks)) for mac, networks in grants.items()),
        fixed_ips=tuple(fixed.ip_address for fixed in port.fixed_ips),
    )


def security_by_port(state: SfcState) -> dict[str, PortSecurity | None]:
    """Every port's security (None: not secured), by port id."""
    exempt = exempt_ports(state)
    return {port.id: port_security(port, exempt) for port in state.ports.values()}
