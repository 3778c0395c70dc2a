"""Port security on the per-packet path: a secured port sends only as itself.

A `PortGuard` is a port's `PortSecurity` (`pktchain.sfc.security`) compiled
for the packet loop: for each source MAC the port may use, the IPv4 and IPv6
sources it may use with it, as sets of packed addresses (and, for the allowed
address pairs that are whole CIDRs, as integer network/mask pairs). The
datapath calls `PortGuard.check` on every frame a secured port sends, after
the parse and before anything learns from the frame or forwards it; a frame
it refuses is dropped and counted on the port under one of the
`Spoofed` reasons.

What a secured port may send, as Neutron's port security allows it:

- frames whose Ethernet source is its MAC, or an allowed address pair's;
- IPv4 and IPv6 from an address that MAC may use (a fixed IP with the port's
  MAC, a pair's address with the pair's MAC), and from the IPv6 link-local
  address of that MAC (``fe80::`` + modified EUI-64, RFC 4291 appendix A);
- DHCP discover and request from 0.0.0.0 (UDP 68 → 67, RFC 2131 §4.1), and
  from the unspecified address ``::`` only what duplicate address detection
  sends: neighbour solicitations (RFC 4862 §5.4.2) and MLD reports (RFC 3810
  §5.2.13);
- ARP whose sender hardware and protocol addresses are such a pair, or whose
  sender protocol address is 0.0.0.0 (an RFC 5227 §2.1.1 probe);
- neighbour advertisements only about an address the port may use (the
  target, RFC 4861 §4.4: the ARP reply of IPv6).

Router advertisements (ICMPv6 134) and DHCP server messages (UDP 67 → 68,
DHCPv6 547 → 546) are never a host's to send, whatever their source; other
EtherTypes than IPv4, IPv6 and ARP are not sent either.

The check never raises: it reads the frame through the parse and slices
(which cannot run past the end), so a frame cut short is refused, not an
error. A fused fast-path entry of a secured port holds the source MAC its
first packet passed the check with, and its key holds the IP source: a later
frame that takes it was checked as much (`Datapath._forward`).
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.packet.address import mac_bytes
from pktchain.packet.headers import (
    ARP,
    ETHERNET,
    NEIGHBOR_ADVERTISEMENT,
    EtherType,
    Icmpv6Type,
    IpProto,
)
from pktchain.packet.parse import FrameInfo
from pktchain.sfc.resources import IPNetwork
from pktchain.sfc.security import PortSecurity

__all__ = ["PortGuard", "Spoofed", "fusable", "link_local"]


class Spoofed(StrEnum):
    """Why a secured port's frame was refused; counted on the port as a drop."""

    MAC = "spoofed-mac"  # an Ethernet source the port may not use
    IP = "spoofed-ip"  # an IP source its MAC may not use
    ARP = "spoofed-arp"  # an ARP sender (hardware, protocol) pair not its own
    ND = "spoofed-nd"  # a neighbour advertisement for an address not its own
    RA = "spoofed-ra"  # a router advertisement
    DHCP = "spoofed-dhcp"  # a DHCP or DHCPv6 server message
    ETHERTYPE = "spoofed-ethertype"  # neither IPv4, IPv6 nor ARP


# RFC 2131 §4.1 (BOOTP ports) and RFC 8415 §7.2 (DHCPv6 ports).
DHCP_SERVER_PORT = 67
DHCP_CLIENT_PORT = 68
DHCPV6_SERVER_PORT = 547
DHCPV6_CLIENT_PORT = 546

# The Ethernet source in a frame as ports carry it, after the vnet header.
_ETH_SRC = slice(VNET_HDR_LEN + ETHERNET.offset("src"), VNET_HDR_LEN + ETHERNET.offset("src") + 6)
_MAC = Spoofed.MAC.value
_IP = Spoofed.IP.value
_ARP = Spoofed.ARP.value
_ND = Spoofed.ND.value
_RA = Spoofed.RA.value
_DHCP = Spoofed.DHCP.value
_ETHERTYPE = Spoofed.ETHERTYPE.value
_UDP = int(IpProto.UDP)
_ICMPV6 = int(IpProto.ICMPV6)
_ETH_ARP = int(EtherType.ARP)
_RA_TYPE = bytes((Icmpv6Type.ROUTER_ADVERTISEMENT,))
_NA = int(Icmpv6Type.NEIGHBOR_ADVERTISEMENT)
_FROM_UNSPECIFIED = frozenset(
    (
        Icmpv6Type.NEIGHBOR_SOLICITATION,
        Icmpv6Type.MLD_REPORT,
        Icmpv6Type.MLD_DONE,
        Icmpv6Type.MLDV2_REPORT,
    )
)
_ECHO_TYPES = (
    bytes((Icmpv6Type.ECHO_REQUEST,)),
    bytes((Icmpv6Type.ECHO_REPLY,)),
)
_ANY4 = bytes(4)
_ANY6 = bytes(16)
_SHA = slice(ARP.offset("sha"), ARP.offset("sha") + 6)
_NA_TARGET = NEIGHBOR_ADVERTISEMENT.offset("target")
_NA_SIZE = NEIGHBOR_ADVERTISEMENT.size
_LINK_LOCAL = ipaddress.IPv6Network("fe80::/64")


def link_local(mac: bytes) -> bytes:
    """The IPv6 link-local address of `mac` (RFC 4291 appendix A: modified EUI-64)."""
    iid = bytes((mac[0] ^ 0x02, *mac[1:3], 0xFF, 0xFE, *mac[3:6]))
    return _LINK_LOCAL.network_address.packed[:8] + iid


def fusable(frame: bytes | bytearray, info: FrameInfo) -> bool:
    """Whether a secured port's flow whose first packet is `frame` may have a
    fused fast-path entry.

    The entry's key is the flow's 5-tuple, which for ICMPv6 holds the echo
    identifier and not the type: an entry made by an echo with identifier 0,
    or by any other ICMPv6 message, would carry a router advertisement or a
    neighbour advertisement with the same addresses past the check.
    """
    if info.proto != _ICMPV6:
        return True
    l4 = info.l4
    return l4 >= 0 and frame[l4 : l4 + 1] in _ECHO_TYPES and info.sport != 0


class _Grant:
    """The IP sources one MAC may use: exact addresses, and wider networks."""

    __slots__ = ("v4", "v4_nets", "v6", "v6_nets")

    def __init__(self, mac: bytes, networks: tuple[IPNetwork, ...]) -> None:
        v4: set[bytes] = set()
        v6: set[bytes] = {link_local(mac)}
        v4_nets: list[tuple[int, int]] = []
        v6_nets: list[tuple[int, int]] = []
        for network in networks:
            exact, nets = (v4, v4_nets) if network.version == 4 else (v6, v6_nets)
            if network.num_addresses == 1:
                exact.add(network.network_address.packed)
            else:
                nets.append((int(network.network_address), int(network.netmask)))
        self.v4 = frozenset(v4)
        self.v6 = frozenset(v6)
        self.v4_nets = tuple(v4_nets)
        self.v6_nets = tuple(v6_nets)


def _within(address: bytes, networks: tuple[tuple[int, int], ...]) -> bool:
    value = int.from_bytes(address, "big")
    return any(value & mask == net for net, mask in networks)


class PortGuard:
    """The check of one secured port's frames (see the module)."""

    __slots__ = ("_grants", "security")

    def __init__(self, security: PortSecurity) -> None:
        self.security = security
        self._grants = {
            mac_bytes(mac): _Grant(mac_bytes(mac), networks) for mac, networks in security.grants
        }

    def check(self, frame: bytes | bytearray, info: FrameInfo) -> str | None:
        """Why `frame` (vnet header first, parsed as `info`) may not leave the
        port, as a `Spoofed` value; None when it may."""
        src_mac = frame[_ETH_SRC]
        if isinstance(src_mac, bytearray):
            src_mac = bytes(src_mac)
        grant = self._grants.get(src_mac)
        if grant is None:
            return _MAC
        version = info.ip_version
        if version == 4:
            proto = info.proto
            if proto == _UDP and info.sport == DHCP_SERVER_PORT and info.dport == DHCP_CLIENT_PORT:
                return _DHCP
            src = info.src
            if src in grant.v4 or (grant.v4_nets and _within(src, grant.v4_nets)):
                return None
            if (
                src == _ANY4
                and proto == _UDP
                and info.sport == DHCP_CLIENT_PORT
                and info.dport == DHCP_SERVER_PORT
            ):
                return None
            return _IP
        if version == 6:
            return self._check_ipv6(frame, info, grant)
        if info.ethertype == _ETH_ARP:
            return self._check_arp(frame, info)
        return _ETHERTYPE

    def _check_ipv6(self, frame: bytes | bytearray, info: FrameInfo, grant: _Grant) -> str | None:
        proto = info.proto
        icmp_type = -1
        if proto == _ICMPV6:
            l4 = info.l4
            kind = frame[l4 : l4 + 1] if l4 >= 0 else b""
            if kind == _RA_TYPE:
                return _RA
            if kind:
                icmp_type = kind[0]
        elif (
            proto == _UDP and info.sport == DHCPV6_SERVER_PORT and info.dport == DHCPV6_CLIENT_PORT
        ):
            return _DHCP
        src = info.src
        if src in grant.v6 or (grant.v6_nets and _within(src, grant.v6_nets)):
            if icmp_type == _NA:
                at = info.l4 + _NA_TARGET
                target = bytes(frame[at : at + 16])
                if info.end < info.l4 + _NA_SIZE or not (
                    target in grant.v6 or (grant.v6_nets and _within(target, grant.v6_nets))
                ):
                    return _ND
            return None
        if src == _ANY6 and icmp_type in _FROM_UNSPECIFIED:
            return None
        return _IP

    def _check_arp(self, frame: bytes | bytearray, info: FrameInfo) -> str | None:
        l3 = info.l3
        sha = bytes(frame[l3 + _SHA.start : l3 + _SHA.stop])
        grant = self._grants.get(sha)
        if grant is None:
            return _ARP
        spa = info.src
        if spa in grant.v4 or spa == _ANY4 or (grant.v4_nets and _within(spa, grant.v4_nets)):
            return None
        return _ARP

    def owns(self, mac: bytes) -> bool:
        """Whether the port may send from `mac`."""
        return mac in self._grants
