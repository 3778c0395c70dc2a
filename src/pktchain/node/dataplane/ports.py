"""Port drivers: the node's only contact with frames on the wire.

A port moves whole frames, each with a `virtio_net_hdr` in front, and counts
them; it knows nothing of switching.  Every driver uses the same 10-byte header,
so a frame read on one port is written to another unchanged, GSO segments and
partial checksums included.

- `TapPort`: a TAP device the node creates inside a host's namespace as that
  host's NIC (`IFF_VNET_HDR` + `TUNSETOFFLOAD`).  The default driver.
- `PacketPort`: an AF_PACKET socket on an existing interface, with
  `PACKET_VNET_HDR` (GSO frames intact) and `PACKET_IGNORE_OUTGOING` (the node
  does not read back what it sent), in promiscuous mode.
- `VethPort`: a veth pair the node makes as a host's NIC
  (`pktchain.linux.veth`): the host's end in the host's namespace, the node's
  end in the node's own, read and written like a `PacketPort`.  A tc program
  on the node's end can carry frames between such ports in the kernel.

A packet socket is read many frames per system call (``recvmmsg``, through
`pktchain.linux.mmsg`), which `receive` returns as a batch; a TAP gives one
frame per ``read``.  Frames are written one per call on every kind of port:
on a packet socket the kernel's own work for each frame (the veth's transmit
and the host stack's receive, run in the sending call) is most of the cost,
and ``sendmmsg`` saved 2 % of it (docs/benchmarks.md, "Packet socket I/O").
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING

from pktchain.linux.mmsg import ReceiveBatch
from pktchain.linux.netns import entered
from pktchain.linux.packet import (
    ETH_P_8021Q,
    ETH_P_ALL,
    PACKET_AUXDATA,
    PACKET_IGNORE_OUTGOING,
    PACKET_STATISTICS,
    PACKET_VNET_HDR,
    SOL_PACKET,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    AuxData,
    set_promiscuous,
)
from pktchain.linux.sockets import receive_buffer
from pktchain.linux.tuntap import VNET_HDR_LEN, open_tap
from pktchain.linux.veth import (
    VethError,
    create_veth,
    interface_mac,
    link_up,
    node_end_name,
    remove_veth,
    tx_dropped,
)
from pktchain.packet.address import Buffer
from pktchain.packet.headers import ETHERNET, VIRTIO_NET_HDR

if TYPE_CHECKING:
    from pktchain.node.dataplane.fastpath import FusedEntry
    from pktchain.node.dataplane.limits import PortPolicer
    from pktchain.node.dataplane.portsec import PortGuard
    from pktchain.node.dataplane.steering import FlowEntry, FlowKey
    from pktchain.node.dataplane.switch import Network

log = logging.getLogger(__name__)

PUNT_PREFIX = "pct"
"""The TAP of a veth port's punted frames: ``pct`` and the node end's digest."""

MAX_FRAME = 65536 + VNET_HDR_LEN + 64
"""Largest read: a 64 KB GSO segment, its Ethernet and VLAN headers, the vnet header."""

PACKET_RCVBUF = 4 << 20
"""Bytes of receive buffer of an AF_PACKET port: a burst of several thousand
frames while the loop is busy elsewhere (the kernel's default, about 200 small
frames, is a millisecond at full speed)."""
RECEIVE_BATCH = 64
"""Frames a packet socket hands over per ``recvmmsg`` at most (the datapath's batch)."""
_TPACKET_STATS = struct.Struct("II")  # struct tpacket_stats {tp_packets, tp_drops}

# The Ethernet header's fields in a frame as ports carry it, after the vnet header.
ETH_DST = VNET_HDR_LEN + ETHERNET.offset("dst")
ETH_SRC = VNET_HDR_LEN + ETHERNET.offset("src")
ETH_TYPE = VNET_HDR_LEN + ETHERNET.offset("ethertype")
ETH_END = VNET_HDR_LEN + ETHERNET.size
_NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM
_HDR_LEN_AT = VIRTIO_NET_HDR.offset("hdr_len")
_CSUM_START_AT = VIRTIO_NET_HDR.offset("csum_start")


def with_vlan_tag(frame: bytes, tci: int, tpid: int = ETH_P_8021Q) -> bytes:
    """`frame` (vnet header first) with an 802.1Q tag put back after its source
    address, its vnet header's offsets moved past it."""
    head = bytearray(frame[:ETH_TYPE])
    if head[0] & _NEEDS_CSUM:
        start = int.from_bytes(head[_CSUM_START_AT : _CSUM_START_AT + 2], "little") + 4
        head[_CSUM_START_AT : _CSUM_START_AT + 2] = start.to_bytes(2, "little")
    hdr_len = int.from_bytes(head[_HDR_LEN_AT : _HDR_LEN_AT + 2], "little")
    if hdr_len:
        head[_HDR_LEN_AT : _HDR_LEN_AT + 2] = (hdr_len + 4).to_bytes(2, "little")
    return b"".join((head, tpid.to_bytes(2, "big"), tci.to_bytes(2, "big"), frame[ETH_TYPE:]))


class PortKind(Enum):
    TAP = "tap"
    VETH = "veth"  # a veth pair made for a host: its end in the node's namespace
    AF_PACKET = "af_packet"
    FUNCTION = "function"  # an interface of a native function in the node
    UNDERLAY = "underlay"  # another node of the cluster, reached over the underlay


class DropReason(Enum):
    """Why a frame was not forwarded.  Each is counted on the port it arrived on
    (`function-error`: on the port it was handed to the function through)."""

    RUNT = "runt"  # shorter than vnet header + Ethernet header
    BAD_SRC_MAC = "bad-src-mac"  # multicast/broadcast or all-zero source address
    STATIC_SRC_MAC = "static-src-mac"  # the address of a function's port or a remote host
    SAME_PORT = "same-port"  # destination was learned on the ingress port
    NO_PORTS = "no-ports"  # nowhere to flood
    FUNCTION_ERROR = "function-error"  # the native function behind the port raised
    FUNCTION_DEPTH = "function-depth"  # sent by a function too deep in a chain of them
    FUNCTION_LOOP = "function-loop"  # sent by a function to its own address: back into it


HOST_PORTS = frozenset({PortKind.TAP, PortKind.VETH, PortKind.AF_PACKET})
"""Ports of interfaces (a host's NIC, or a NIC of the node), not of functions or nodes."""


class SwitchPort:
    """One attachment of the node: a descriptor plus counters.

    `recv()` returns one frame (vnet header included) or raises
    `BlockingIOError` when none is waiting; `receive(limit)` returns up to
    `limit` frames (raising as `recv` does when none is waiting), one call
    for many where the port can; `send(frame)` writes one, and
    `sendv(parts)` writes one frame given in pieces (so that a rewritten
    header goes out in front of the untouched rest of a 64 KB frame without
    copying it).  They are bound once at construction so the packet loop calls
    them without lookups.
    """

    __slots__ = (
        "drops",
        "fast",
        "fd",
        "flooded",
        "flows",
        "forwarded",
        "guard",
        "host",
        "ifname",
        "kind",
        "mac",
        "name",
        "netns",
        "network",
        "policer",
        "recv",
        "rx_bytes",
        "rx_packets",
        "send",
        "sendv",
        "tx_bytes",
        "tx_errors",
        "tx_packets",
    )

    def __init__(
        self,
        *,
        name: str,
        kind: PortKind,
        fd: int,
        recv: Callable[[], bytes],
        send: Callable[[Buffer], int],
        sendv: Callable[[Sequence[Buffer]], int],
        netns: str | None,
        ifname: str,
        host: str | None = None,
        mac: str | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.fd = fd
        self.recv = recv
        self.send = send
        self.sendv = sendv
        self.netns = netns
        self.ifname = ifname
        self.host = host
        self.mac = mac
        self.flooded = True
        """Whether broadcast and unknown-unicast frames of its network reach it."""
        self.network: Network[SwitchPort] | None = None  # set when the datapath adds the port
        # Flow table of a port that service chains steer from (None: switching only).
        self.flows: dict[FlowKey, FlowEntry] | None = None
        # Fused entries of flows that cross native functions (see fastpath.py).
        self.fast: dict[FlowKey, FusedEntry] | None = None
        self.guard: PortGuard | None = None
        """The port security check of its frames (portsec.py); None: not secured."""
        self.policer: PortPolicer | None = None
        """The rate limits of a host port (limits.py); None: not policed."""
        self.rx_packets = 0
        self.rx_bytes = 0
        self.forwarded = 0
        """Frames received here that went on (to a port, a flood, a function, a
        chain's next hop); with the drops, every frame received (see `counters`)."""
        self.tx_packets = 0
        self.tx_bytes = 0
        self.tx_errors: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()

    def receive(self, limit: int) -> list[bytes]:
        """Up to `limit` frames waiting (at least one), oldest first.

        Raises `BlockingIOError` when none is waiting, `OSError` when the
        first read fails (an error after some frames is raised by the next call).
        """
        recv = self.recv
        frames = [recv()]
        for _ in range(limit - 1):
            try:
                frames.append(recv())
            except OSError:
                break
        return frames

    def transmit(self, frame: Buffer) -> None:
        """Write one frame, counting it; a refusal by the kernel is a counted drop."""
        try:
            self.send(frame)
        except OSError as exc:
            self.tx_failed(exc)
            return
        self.tx_packets += 1
        self.tx_bytes += len(frame) - VNET_HDR_LEN

    def transmit_parts(self, parts: Sequence[Buffer], size: int) -> None:
        """Write one frame given in pieces (`size` bytes with the vnet header)."""
        try:
            self.sendv(parts)
        except OSError as exc:
            self.tx_failed(exc)
            return
        self.tx_packets += 1
        self.tx_bytes += size - VNET_HDR_LEN

    def tx_failed(self, exc: OSError) -> None:
        """Count a frame the kernel refused (ENOBUFS, EIO on a down TAP, ...)."""
        self.tx_errors[errno.errorcode.get(exc.errno or 0, str(exc.errno))] += 1

    def close(self) -> None:
        raise NotImplementedError

    def counters(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "host": self.host,
            "netns": self.netns,
            "network": self.network.name if self.network else None,
            "ifname": self.ifname,
            "mac": self.mac,
            "secured": self.guard is not None,
            "policed": self.policer is not None,
            "holds": 0 if self.policer is None else self.policer.holds,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "forwarded": self.forwarded,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "drops": dict(sorted(self.drops.items())),
            "tx_errors": dict(sorted(self.tx_errors.items())),
        }


class TapPort(SwitchPort):
    """A TAP device created by the node in a host's namespace as its NIC."""

    __slots__ = ()

    def __init__(self, *, name: str, ifname: str, netns: str | None, host: str | None) -> None:
        fd = open_tap(ifname, netns=netns)
        super().__init__(
            name=name,
            kind=PortKind.TAP,
            fd=fd,
            recv=partial(os.read, fd, MAX_FRAME),
            send=partial(os.write, fd),
            sendv=partial(os.writev, fd),
            netns=netns,
            ifname=ifname,
            host=host,
        )

    def close(self) -> None:
        # Closing the last descriptor of a non-persistent TAP removes the device.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class PacketPort(SwitchPort):
    """An AF_PACKET socket bound to an existing interface, optionally in a namespace.

    Frames the kernel could not queue on the socket (its buffer full while
    the loop was busy) never reach `recv`: the kernel counts them
    (``PACKET_STATISTICS``), and `counters` reports them as
    `rx_kernel_drops`, so that every frame the interface handed the node is
    accounted for.
    """

    __slots__ = ("_batch", "_sock", "kernel_drops")

    def __init__(
        self,
        *,
        name: str,
        ifname: str,
        netns: str | None,
        host: str | None,
        kind: PortKind = PortKind.AF_PACKET,
        promiscuous: bool = True,
    ) -> None:
        with entered(netns):
            # Protocol 0 receives nothing until bind() names the interface and
            # the protocol: no frame of another interface slips in before.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
                sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)  # 802.1Q tags: `receive`
                if promiscuous:
                    set_promiscuous(sock, ifname)
                receive_buffer(sock, PACKET_RCVBUF)
                sock.bind((ifname, ETH_P_ALL))  # host order: Python converts it
            except OSError:
                sock.close()
                raise
        sock.setblocking(False)
        self._sock = sock
        self._batch = ReceiveBatch(sock.fileno(), RECEIVE_BATCH, MAX_FRAME, control=AuxData.SPACE)
        mac = sock.getsockname()[4].hex(":")
        super().__init__(
            name=name,
            kind=kind,
            fd=sock.fileno(),
            recv=partial(sock.recv, MAX_FRAME),
            send=sock.send,
            sendv=sock.sendmsg,
            netns=netns,
            ifname=ifname,
            host=host,
            mac=mac,
        )
        self.kernel_drops = 0

    def receive(self, limit: int) -> list[bytes]:
        batch = self._batch
        frames = batch.receive(limit)
        words = batch.control_words
        stride = batch.control_stride
        at = AuxData.STATUS
        for i in range(len(frames)):
            if words[at] & TP_STATUS_VLAN_VALID:
                self._tagged(frames, i, at - AuxData.STATUS)
            at += stride
        return frames

    def _tagged(self, frames: list[bytes], index: int, base: int) -> None:
        """Put back the 802.1Q tag the kernel took out of frame `index` (a
        TAP port hands the node tagged frames as they are)."""
        batch = self._batch
        words = batch.control_words
        if (
            batch.control_length(index) < AuxData.SPACE - 4  # left from an earlier call
            or words[base + AuxData.LEVEL] != SOL_PACKET
            or words[base + AuxData.TYPE] != PACKET_AUXDATA
        ):
            return
        status = words[base + AuxData.STATUS]
        vlan = words[base + AuxData.VLAN]
        tpid = vlan >> 16 if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
        frame = frames[index]
        if len(frame) >= ETH_TYPE:
            frames[index] = with_vlan_tag(frame, vlan & 0xFFFF, tpid)

    def read_kernel_drops(self) -> int:
        """Frames the kernel dropped for want of room in the socket, so far."""
        if self.fd >= 0:
            try:
                stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
            except OSError:
                return self.kernel_drops
            # Reading the statistics resets them: they are added up here.
            self.kernel_drops += _TPACKET_STATS.unpack(stats)[1]
        return self.kernel_drops

    def counters(self) -> dict[str, object]:
        counters = super().counters()
        counters["rx_kernel_drops"] = self.read_kernel_drops()
        return counters

    def close(self) -> None:
        self._sock.close()
        self.fd = -1


class VethPort(PacketPort):
    """A veth pair made by the node as a host's NIC (`pktchain.linux.veth`).

    `netns` and `ifname` name the host's end, as for a `TapPort`; the node's
    end, in the node's own namespace, is `node_ifname`, with ifindex
    `node_ifindex` (where a tc program attaches, and what
    ``bpf_redirect_peer`` names to reach this host). `mac` is the host's
    (read again once the host's interface is set up: `refresh_mac`).
    Closing the port deletes the pair.
    """

    __slots__ = ("node_ifindex", "node_ifname", "punt_drops", "punt_ifindex", "punt_ifname")

    def __init__(self, *, name: str, ifname: str, netns: str, host: str | None) -> None:
        node_ifname = node_end_name(netns, ifname)
        node_ifindex = create_veth(node_ifname, netns, ifname)
        try:
            # Not promiscuous: a veth hands its peer every frame whatever its
            # destination, and the node end's flag would only show in `ip link`.
            super().__init__(
                name=name,
                ifname=node_ifname,
                netns=None,
                host=host,
                kind=PortKind.VETH,
                promiscuous=False,
            )
        except BaseException:
            remove_veth(node_ifname, node_ifindex)
            raise
        self.node_ifname = node_ifname
        self.node_ifindex = node_ifindex
        self.punt_ifname: str | None = None
        """The TAP the kernel fast path hands this port's other frames to (`punt`)."""
        self.punt_ifindex = 0
        self.punt_drops = 0
        """What the punt TAP's queue dropped, as last read (`read_kernel_drops`)."""
        self.netns = netns
        self.ifname = ifname
        self.refresh_mac()

    def punt(self) -> int:
        """Read this port from a TAP of the node's namespace instead of its packet
        socket; returns the TAP's ifindex.

        With the kernel fast path on the node end (docs/kernel-fastpath.md), the
        program redirects every frame it does not carry to that TAP, so the node
        reads each of them once (a packet socket bound to every protocol sees
        frames before tc ingress, the redirected ones too), VLAN tags and GSO
        segments whole. The packet socket stays for sending and stops receiving.
        Call it before the port's descriptor is watched: `fd` changes.
        """
        if self.punt_ifname is not None:
            return self.punt_ifindex
        tap = PUNT_PREFIX + self.node_ifname[len(PUNT_PREFIX) :]
        fd = open_tap(tap)
        try:
            # Nothing of the node's own stack may leave by it (it would look
            # like the host's): no IPv6 (router solicitations), no address.
            conf = f"/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"
            if os.path.exists(conf):
                with open(conf, "w", encoding="ascii") as file:
                    file.write("1")
            ifindex = link_up(tap)
            # A socket made and bound with protocol 0 receives nothing (binding
            # the old one to 0 would keep its ETH_P_ALL): it only sends.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            try:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                sock.bind((self.node_ifname, 0))
            except BaseException:
                sock.close()
                raise
        except BaseException:
            os.close(fd)
            raise
        self._sock.close()
        self._sock = sock
        self.send = sock.send
        self.sendv = sock.sendmsg
        self.fd = fd
        self.recv = partial(os.read, fd, MAX_FRAME)
        self.punt_ifname = tap
        self.punt_ifindex = ifindex
        return ifindex

    def receive(self, limit: int) -> list[bytes]:
        if self.punt_ifname is None:
            return super().receive(limit)
        return SwitchPort.receive(self, limit)

    def refresh_mac(self) -> None:
        """Read the host's MAC address again (after its interface was set up)."""
        self.mac = interface_mac(self.netns, self.ifname)

    def read_kernel_drops(self) -> int:
        """As an AF_PACKET port's, and on a punted port the frames that the
        kernel fast path handed the TAP and its queue had no room for."""
        drops = super().read_kernel_drops()
        if self.punt_ifname is not None:
            # The TAP was made for this port: its count is all this port's.
            self.punt_drops = tx_dropped(self.punt_ifindex) or self.punt_drops
        return drops + self.punt_drops

    def counters(self) -> dict[str, object]:
        counters = super().counters()
        counters["node_ifname"] = self.node_ifname
        counters["node_ifindex"] = self.node_ifindex
        counters["punt_ifname"] = self.punt_ifname
        return counters

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.punt_ifname is not None:
            os.close(self.fd)  # the TAP goes with its last descriptor
            self.punt_ifname = None
        super().close()
        # The host's namespace may be gone already, and the pair with it.
        try:
            remove_veth(self.node_ifname, self.node_ifindex)
        except VethError as exc:
            log.warning("port %s: %s", self.name, exc)
