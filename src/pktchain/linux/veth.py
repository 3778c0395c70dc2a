"""A host's NIC as one end of a veth pair whose other end stays with the node.

The node makes the pair in its own namespace and moves one end, the host's
NIC, into the host's namespace under the host's interface name; it keeps the
other end (the *node end*) and reads and writes it through a packet socket.
Unlike a TAP, whose other side is a file descriptor, the node end is a
device of the node's namespace: a tc program there can hand a frame straight
to another host with ``bpf_redirect_peer``.

The node end is named from the host's namespace and interface
(:func:`node_end_name`): short, unique, and the same each time, so that a pair
left behind by a node that was killed is found and removed when a node makes
it again. The node's namespace must do nothing with the frames on it: it gets
no address, IPv6 is disabled on it before it comes up (no link-local address,
no router or neighbour solicitations), ARP is off (``IFF_NOARP``: the kernel
answers no ARP request there), reverse-path filtering is strict and
forwarding off (an IPv4 packet whose source is not routed through it, which is
every one, is dropped). Its MTU is the largest a veth takes, so that what the
host sends at the host's MTU, whatever it is, reaches the node; the host's end
keeps the default MTU and the offloads a veth has (checksum, TSO, GSO), less
UDP segmentation, which a TAP port does not offer either.

Deleting either end deletes the pair; so does deleting the host's namespace.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import struct
from pathlib import Path
from typing import Any

from pktchain.linux.netns import entered, netns_path

__all__ = [
    "NODE_END_MTU",
    "VethError",
    "create_veth",
    "interface_mac",
    "link_up",
    "node_end_name",
    "remove_veth",
]

NODE_END_PREFIX = "pcv"
NODE_END_MTU = 65535
"""ETH_MAX_MTU, the largest MTU a veth accepts."""

IFF_NOARP = 0x80  # linux/if.h
SIOCGIFHWADDR = 0x8927  # linux/sockios.h
_IFREQ_HWADDR = struct.Struct("16sH6s8x")


class VethError(OSError):
    """Making, setting up or removing a veth pair failed; keeps the errno, names the pair."""


def node_end_name(netns: str, ifname: str) -> str:
    """The node end's name for host interface `ifname` in `netns`: ``pcv`` and
    12 hex digits of a hash of both (15 bytes, the longest an interface name may be)."""
    digest = hashlib.sha256(f"{netns}\0{ifname}".encode()).hexdigest()
    return NODE_END_PREFIX + digest[:12]


def _sysctl(path: str, value: str) -> None:
    Path(path).write_text(value)


def create_veth(node_end: str, host_netns: str, host_ifname: str) -> int:
    """Make the pair: `node_end` in the calling thread's namespace, `host_ifname`
    in `host_netns`; set the node end up as the module says; return its ifindex.

    A node end of that name left from before (a node that was killed) is
    removed first, with its host end; one that a packet socket is bound to
    (a running node's) is not: `VethError` with EBUSY. Raises `VethError`
    with the errno.
    """
    from pyroute2 import IPRoute, NetlinkError

    where = f"{node_end} <-> {host_netns}/{host_ifname}"
    try:
        peer_fd = os.open(netns_path(host_netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise VethError(
            exc.errno, f"cannot make veth {where}: namespace {host_netns}: {exc.strerror}"
        ) from exc
    ipr: Any = IPRoute()
    step = "make"
    try:
        stale = ipr.link_lookup(ifname=node_end)
        if stale:
            if _bound(int(stale[0])):
                raise VethError(
                    errno.EBUSY,
                    f"cannot make veth {where}: {node_end} exists and a packet socket "
                    "is bound to it (another node serves that port)",
                )
            step = "remove the stale"
            ipr.link("del", index=stale[0])
        step = "make"
        ipr.link(
            "add",
            ifname=node_end,
            kind="veth",
            peer={"ifname": host_ifname, "net_ns_fd": peer_fd},
        )
        index = int(ipr.link_lookup(ifname=node_end)[0])
        step = "set up"
        conf = f"/proc/sys/net/ipv6/conf/{node_end}/disable_ipv6"
        if os.path.exists(conf):  # absent when IPv6 is off altogether
            _sysctl(conf, "1")
        ipv4 = f"/proc/sys/net/ipv4/conf/{node_end}"
        _sysctl(f"{ipv4}/rp_filter", "1")
        _sysctl(f"{ipv4}/forwarding", "0")
        _sysctl(f"{ipv4}/arp_ignore", "8")
        ipr.link("set", index=index, mtu=NODE_END_MTU)
        ipr.link("set", index=index, flags=IFF_NOARP, mask=IFF_NOARP)
        ipr.link("set", index=index, state="up")
        step = "set the offloads of"
        _host_offloads(host_netns, host_ifname)
    except VethError:
        raise
    except NetlinkError as exc:
        _remove_quietly(ipr, node_end)
        code = exc.code
        raise VethError(code, f"cannot {step} veth {where}: {os.strerror(code)}") from exc
    except OSError as exc:
        _remove_quietly(ipr, node_end)
        raise VethError(exc.errno, f"cannot {step} veth {where}: {exc.strerror}") from exc
    finally:
        ipr.close()
        os.close(peer_fd)
    return index


def _bound(ifindex: int) -> bool:
    """Whether a packet socket of the calling thread's namespace is bound to
    interface `ifindex` (/proc/net/packet: sk RefCnt Type Proto Iface ...)."""
    try:
        lines = Path("/proc/thread-self/net/packet").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(f) > 4 and f[4] == str(ifindex) for f in (line.split() for line in lines))


def _remove_quietly(ipr: Any, node_end: str) -> None:
    from pyroute2 import NetlinkError

    try:
        found = ipr.link_lookup(ifname=node_end)
        if found:
            ipr.link("del", index=found[0])
    except NetlinkError:
        pass


def remove_veth(node_end: str, ifindex: int) -> bool:
    """Delete the pair whose node end is `node_end` with index `ifindex`, in the
    calling thread's namespace; False if it is gone already (its host's
    namespace was deleted). Raises `VethError` if the kernel refuses."""
    from pyroute2 import IPRoute, NetlinkError

    ipr: Any = IPRoute()
    try:
        found = ipr.link_lookup(ifname=node_end)
        if not found or int(found[0]) != ifindex:
            return False
        ipr.link("del", index=ifindex)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return False
        raise VethError(
            exc.code, f"cannot remove veth {node_end}: {os.strerror(exc.code)}"
        ) from exc
    finally:
        ipr.close()
    return True


HOST_FEATURES_OFF = (
    "tx-udp-segmentation",
    "tx-gso-list",
    "tx-sctp-segmentation",
    "tx-checksum-sctp",
    "tx-gre-segmentation",
    "tx-gre-csum-segmentation",
    "tx-ipxip4-segmentation",
    "tx-ipxip6-segmentation",
    "tx-udp_tnl-segmentation",
    "tx-udp_tnl-csum-segmentation",
    "tx-vlan-hw-insert",
    "tx-vlan-stag-hw-insert",
)
"""Offloads of a veth that a TAP port does not announce (``TUNSETOFFLOAD``
gives checksum and TCP segmentation only), turned off on the host's end: a
frame they would leave whole (a UDP, SCTP or tunnelled GSO frame, a CRC32c
left to do, a VLAN tag kept aside) is made by the host's kernel, as through a
TAP, before it reaches the node's packet socket, whose virtio-net header can
describe none of them."""


def _host_offloads(netns: str, ifname: str) -> None:
    from pyroute2.ethtool import Ethtool

    with entered(netns):
        ethtool: Any = Ethtool()
    try:
        features = ethtool.get_features(ifname)
        changed = False
        for name in HOST_FEATURES_OFF:
            feature = features.features.get(name)
            if feature is not None and feature.enable and feature.available:
                feature.enable = False
                changed = True
        if changed:
            ethtool.set_features(ifname, features)
    finally:
        ethtool.close()


def interface_mac(netns: str | None, ifname: str) -> str:
    """The MAC address of `ifname` in `netns` (one ``SIOCGIFHWADDR`` ioctl)."""
    with entered(netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        reply = fcntl.ioctl(sock, SIOCGIFHWADDR, _IFREQ_HWADDR.pack(ifname.encode(), 0, b""))
    finally:
        sock.close()
    return bytes(_IFREQ_HWADDR.unpack(reply)[2]).hex(":")


def link_up(ifname: str) -> int:
    """Set `ifname` of the calling thread's namespace up; its ifindex. Raises VethError."""
    from pyroute2 import IPRoute, NetlinkError

    ipr: Any = IPRoute()
    try:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise VethError(errno.ENODEV, f"cannot set {ifname} up: no such interface")
        index = int(found[0])
        ipr.link("set", index=index, state="up")
    except NetlinkError as exc:
        raise VethError(exc.code, f"cannot set {ifname} up: {os.strerror(exc.code)}") from exc
    finally:
        ipr.close()
    return index


def tx_dropped(ifindex: int) -> int | None:
    """The transmit drops counted by interface `ifindex` of the calling thread's
    namespace since it was made (for a TAP: frames its descriptor's queue had
    no room for), or None when it is gone."""
    from pyroute2 import IPRoute, NetlinkError

    ipr: Any = IPRoute()
    try:
        (link,) = ipr.get_links(ifindex)
    except (NetlinkError, ValueError):
        return None
    finally:
        ipr.close()
    stats = link.get_attr("IFLA_STATS64")
    return None if stats is None else int(stats["tx_dropped"])
