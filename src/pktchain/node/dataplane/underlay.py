"""The underlay: frames between the nodes of a cluster, in NSH over VXLAN-GPE.

Every frame one node sends another travels in one UDP datagram to the peer's
underlay address (port 4790 by default): a VXLAN-GPE header (next protocol
NSH), an NSH (RFC 8300, MD type 1 or 2, next protocol Ethernet) and the inner
Ethernet frame.  docs/nsh.md specifies the format; in short:

- Switched frames (broadcast, unknown or remote unicast of a network) have
  SPI 0 and SI 255; the VXLAN-GPE VNI names the network (`network_vni`).
- Chained frames have the chain's path as SPI (``| REVERSE_SPI`` on the way
  back of a symmetric chain), the hop they go to as SI (255 for the first
  service function, one less for each after it), and the instance chosen at
  every hop, so that later nodes follow the path the ingress node chose: in
  MD type 1's fixed context when the path has at most four hops and the frame
  needs no offload metadata, else in MD type 2's "path" TLV.  The VNI names
  the network the chain's ends are on.
- A frame that the kernel handed over as a GSO super-frame, or with its
  checksum left to finish, carries its virtio-net header in an "offload" TLV,
  so that the receiving node writes it to its port as it came: a 64 KB TCP
  segment crosses whole, and the underlay's IP layer fragments the datagram
  where it exceeds the underlay's MTU.

`PeerPort` is a peer node as a port of one network of this node: the switch
learns remote MACs on it, floods to it, and the steering sends chained frames
through it with their NSH.  `Underlay` owns the UDP socket, knows the peers and
decodes what arrives; the datapath (`Datapath.drain_underlay`) forwards it.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from pktchain.linux.sockets import receive_buffer, udp_drops, udp_socket
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.ports import ETH_DST, ETH_SRC, PortKind, SwitchPort
from pktchain.packet.address import Buffer
from pktchain.packet.headers import VXLAN_GPE_PORT, GpeNextProtocol, NshMdType, NshNextProtocol
from pktchain.packet.nsh import (
    NSH_TTL,
    PKTCHAIN_MD_CLASS,
    REVERSE_SPI,
    SI_START,
    PktchainTlv,
    build_nsh,
    build_vxlan_gpe,
    context_tlv,
    parse_context_tlvs,
    parse_nsh,
    parse_path_tlv,
    parse_vxlan_gpe,
    path_tlv,
)

__all__ = [
    "FIXED_HOPS",
    "INITIAL_SI",
    "INITIAL_TTL",
    "REVERSE_SPI",
    "SPI_SWITCHED",
    "Arrival",
    "NshHeader",
    "PeerPort",
    "Underlay",
    "network_vni",
]

SPI_SWITCHED = 0
"""The SPI of a frame switched between nodes rather than chained."""
INITIAL_SI = SI_START
INITIAL_TTL = NSH_TTL

SO_NO_CHECK = 11  # asm-generic/socket.h: send UDP over IPv4 with no checksum
MAX_DATAGRAM = 65535
MAX_INNER_GSO = 62000
"""The largest GSO super-frame the node lets a host's NIC hand it in a cluster
(`gso_max_size`): with its encapsulation it fits in one UDP datagram."""
SOCKET_BUFFER = 8 << 20
"""Bytes of send and receive buffer (the send buffer is capped at
net.core.wmem_max; the receive buffer goes past rmem_max as root)."""
BATCH = 64

_GPE_SIZE = len(build_vxlan_gpe())
_NSH_SIZE = len(build_nsh(0, SI_START))
_NSH_PROTO = int(GpeNextProtocol.NSH)
_ETHERNET = int(NshNextProtocol.ETHERNET)
_MD1 = int(NshMdType.FIXED)
_MD2 = int(NshMdType.VARIABLE)
FIXED_HOPS = 4
"""The most hops whose tags fit MD type 1's 16-byte fixed context."""
_FIXED_PATH = struct.Struct(f"!{FIXED_HOPS}I")
_PATH = int(PktchainTlv.PATH)
_OFFLOAD = int(PktchainTlv.OFFLOAD)
_OFFLOAD_VALUE = VNET_HDR_LEN
_OFFLOAD_HEAD = context_tlv(PKTCHAIN_MD_CLASS, _OFFLOAD, bytes(_OFFLOAD_VALUE))[:-12]
"""The offload context header's class, type and Length: its value follows per packet."""
_OFFLOAD_TLV = len(_OFFLOAD_HEAD) + (_OFFLOAD_VALUE + 3) // 4 * 4
_NO_OFFLOAD = bytes(VNET_HDR_LEN)
_PAD = bytes(-_OFFLOAD_VALUE % 4)


def network_vni(name: str) -> int:
    """The VXLAN-GPE VNI of a node network: a 24-bit hash of its name, never 0."""
    return (zlib.crc32(name.encode()) & 0xFFFFFF) or 1


class NshHeader:
    """The outer headers of one hop (VXLAN-GPE, NSH with the path), built once.

    `plain` goes in front of a frame without offload metadata sent to another
    node: MD type 1 with the path's tags in the fixed context when it has one
    to four hops, else MD type 2 with the path TLV.  `variable` is MD type 2
    with the path TLV, what NSH-aware functions get (they have room to add
    context headers).  `offload` is MD type 2 with one TLV more, whose value
    (the frame's virtio-net header) follows it per packet.
    """

    __slots__ = ("offload", "plain", "si", "spi", "tags", "ttl", "variable", "vni")

    def __init__(
        self, vni: int, spi: int, si: int, ttl: int = INITIAL_TTL, tags: Sequence[int] = ()
    ) -> None:
        self.vni = vni
        self.spi = spi
        self.si = si
        self.ttl = ttl
        self.tags = tuple(tags)
        path = path_tlv(self.tags) if self.tags else b""
        gpe = build_vxlan_gpe(_NSH_PROTO, vni)
        self.variable = gpe + build_nsh(spi, si, ttl=ttl, tlvs=path)
        self.plain = self.variable
        if 0 < len(self.tags) <= FIXED_HOPS:
            fixed = _FIXED_PATH.pack(*self.tags, *(0,) * (FIXED_HOPS - len(self.tags)))
            self.plain = gpe + build_nsh(spi, si, ttl=ttl, md_type=_MD1, context=fixed)
        # The offload TLV's value comes last, per packet: the NSH's Length
        # counts it already.
        offload = build_nsh(spi, si, ttl=ttl, tlvs=path + _OFFLOAD_HEAD + bytes(12))
        self.offload = gpe + offload[:-12]

    def with_ttl(self, ttl: int) -> NshHeader:
        return NshHeader(self.vni, self.spi, self.si, ttl, self.tags)


def encapsulate(
    header: NshHeader, frame: Buffer, dst: bytes | None = None, tail: Buffer = b""
) -> list[Buffer]:
    """The datagram for `frame` (virtio-net header in front) as pieces to send;
    with `dst`, the inner frame's destination MAC replaced; `tail` goes after
    `frame` (the untouched rest of a frame whose headers were rewritten)."""
    vnet = bytes(frame[:VNET_HDR_LEN])
    view = memoryview(frame)
    if vnet == _NO_OFFLOAD:
        parts: list[Buffer] = [header.plain]
    else:
        parts = [header.offload, vnet, _PAD]
    if dst is None:
        parts.append(view[VNET_HDR_LEN:])
    else:
        parts += (dst, view[ETH_SRC:])
    if tail:
        parts.append(tail)
    return parts


NSH_ETHERTYPE = b"\x89\x4f"


def node_mac(node: str) -> bytes:
    """The MAC a node sends NSH from to its NSH-aware functions (locally
    administered, from its name); they send the frames back to it."""
    digest = zlib.crc32(node.encode()).to_bytes(4, "big")
    return b"\x02\x50" + digest


def encapsulate_ethernet(
    header: NshHeader, frame: Buffer, dst: bytes, macs: bytes
) -> tuple[list[Buffer], int]:
    """`frame` in NSH over Ethernet for a function on a port of this node, as
    pieces and their size: `macs` (destination and source) and EtherType 0x894F
    in front of the NSH (the VXLAN-GPE header left out), the inner frame with
    destination `dst`.  The frame's virtio-net header goes in the offload TLV;
    the one in front is zero (the kernel cannot segment NSH)."""
    vnet = bytes(frame[:VNET_HDR_LEN])
    view = memoryview(frame)
    if vnet == _NO_OFFLOAD:
        parts: list[Buffer] = [_NO_OFFLOAD, macs, NSH_ETHERTYPE, header.variable[_GPE_SIZE:]]
    else:
        parts = [_NO_OFFLOAD, macs, NSH_ETHERTYPE, header.offload[_GPE_SIZE:], vnet, _PAD]
    parts += (dst, view[ETH_SRC:])
    return parts, sum(len(part) for part in parts)


class Arrival(NamedTuple):
    """A datagram from a peer, decoded: the inner frame with its virtio-net header."""

    peer: Peer | None
    """None for a frame an NSH-aware function of this node sent back."""
    vni: int
    spi: int
    si: int
    ttl: int
    tags: tuple[int, ...]
    """The path's tags; with `fixed`, MD type 1's four context words, of which
    the path's hops take the first (the rest zero)."""
    frame: bytes
    fixed: bool = False


class Peer:
    """Another node of the cluster, as this node's underlay sees it."""

    __slots__ = ("address", "alive", "name", "ports", "seen")

    def __init__(self, name: str, address: tuple[str, int], now: float = 0.0) -> None:
        self.name = name
        self.address = address
        self.ports: dict[int, PeerPort] = {}
        """Its port in each of this node's networks, by VNI."""
        self.seen = now
        """When a datagram from it last arrived (its hellos, at least)."""
        self.alive = True


class PeerPort(SwitchPort):
    """A peer node as a port of one network: what the switch sends it is encapsulated."""

    __slots__ = ("header", "peer", "underlay", "vni")

    def __init__(self, underlay: Underlay, peer: Peer, network: str) -> None:
        self.underlay = underlay
        self.peer = peer
        self.vni = network_vni(network)
        self.header = NshHeader(self.vni, SPI_SWITCHED, INITIAL_SI)
        super().__init__(
            name=f"{peer.name}/{network}",
            kind=PortKind.UNDERLAY,
            fd=-1,
            recv=self._nothing,
            send=self._send,
            sendv=self._sendv,
            netns=None,
            ifname=underlay.ifname,
            host=peer.name,
        )

    @staticmethod
    def _nothing() -> bytes:
        raise BlockingIOError  # frames from the peer arrive through the underlay's socket

    def _send(self, frame: Buffer) -> int:
        return self.underlay.sendmsg(encapsulate(self.header, frame), self.peer.address)

    def _sendv(self, parts: Sequence[Buffer]) -> int:
        return self._send(b"".join(parts))

    def transmit_nsh(
        self, header: NshHeader, frame: Buffer, dst: bytes | None = None, tail: Buffer = b""
    ) -> None:
        """Send `frame` (then `tail`) along a chain with `header`, counted; `dst`:
        its inner destination."""
        try:
            self.underlay.sendmsg(encapsulate(header, frame, dst, tail), self.peer.address)
        except OSError as exc:
            self.tx_failed(exc)
            return
        self.tx_packets += 1
        self.tx_bytes += len(frame) + len(tail) - VNET_HDR_LEN

    def close(self) -> None:
        pass


def decode_nsh(data: bytes, offset: int, peer: Peer | None, vni: int) -> Arrival | str:
    """The frame in the NSH at `offset` of `data`, or why it is dropped."""
    nsh = parse_nsh(data, offset)
    if nsh.error is not None:
        return nsh.error.value
    if nsh.next_protocol != _ETHERNET:
        return "nsh-not-ethernet"
    if nsh.oam:
        return "nsh-oam"
    if nsh.ttl == 0:
        return "nsh-ttl-exhausted"
    vnet = _NO_OFFLOAD
    tags: tuple[int, ...] = ()
    if nsh.md_type == _MD1:
        tags = _FIXED_PATH.unpack_from(data, nsh.context)
        if len(data) - nsh.inner < _INNER_MIN:
            return "runt"
        frame = vnet + data[nsh.inner :]
        return Arrival(peer, vni, nsh.spi, nsh.si, nsh.ttl, tags, frame, fixed=True)
    if nsh.md_type == _MD2 and nsh.inner > nsh.context:
        tlvs, _error = parse_context_tlvs(data, nsh.context, nsh.inner)  # parse_nsh checked
        for tlv in tlvs:
            if tlv.md_class != PKTCHAIN_MD_CLASS:
                continue
            if tlv.type == _PATH:
                found = parse_path_tlv(tlv.value)
                if found is None:
                    return "nsh-bad-path"
                tags = found
            elif tlv.type == _OFFLOAD:
                if len(tlv.value) != _OFFLOAD_VALUE:
                    return "nsh-bad-offload"
                vnet = tlv.value
    if len(data) - nsh.inner < _INNER_MIN:
        return "runt"
    return Arrival(peer, vni, nsh.spi, nsh.si, nsh.ttl, tags, vnet + data[nsh.inner :])


DECODED_HEADERS = 4096
"""Outer headers kept decoded at most (the table starts afresh when full)."""
_LENGTH_AT = _GPE_SIZE + 1  # the NSH's Length, in the second byte of its base header
_HEADERS_MIN = _GPE_SIZE + _NSH_SIZE
_INNER_MIN = ETH_SRC - ETH_DST + 8

HELLO_INTERVAL = 0.1
"""Seconds between the hellos a node sends each peer."""
DEAD_AFTER = 0.5
"""Seconds of silence after which a peer is taken for dead (five hellos lost)."""
HELLO_ETHERTYPE = b"\x88\xb5"
"""IEEE 802 local experimental EtherType 1, the inner frame of a hello."""


def _hello_datagram(node: str) -> bytes:
    """A hello: an OAM NSH (O bit set, SPI 0) whose inner Ethernet frame names the node."""
    nsh = build_vxlan_gpe(_NSH_PROTO, 0) + build_nsh(SPI_SWITCHED, INITIAL_SI, oam=True)
    mac = node_mac(node)
    payload = b"pktchain hello " + node.encode()
    inner = b"\xff" * 6 + mac + HELLO_ETHERTYPE + payload + bytes(max(0, 46 - len(payload)))
    return nsh + inner


_HELLO_HEAD = _hello_datagram("x")[: _GPE_SIZE + _NSH_SIZE]
"""What every hello starts with (VXLAN-GPE, NSH with the O bit, SPI 0, SI 255)."""


class Underlay:
    """This node's end of the underlay: one UDP socket, the peers, the counters.

    Datagrams from addresses that are not a known peer's are dropped
    (`unknown-source`), as are malformed ones (under the codec's reason), and
    NSH whose TTL is spent (`nsh-ttl-exhausted`).
    """

    def __init__(
        self,
        node: str,
        address: tuple[str, int] = ("0.0.0.0", VXLAN_GPE_PORT),
        *,
        hello_interval: float = HELLO_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        """Bind the underlay socket to `address` (port 0: any free port)."""
        host, port = address
        self.node = node
        self.hello_interval = hello_interval
        self.dead_after = dead_after
        self.now = 0.0
        self.hellos_sent = 0
        self.hellos_received = 0
        self._decoded: dict[bytes, tuple[int, int, int, int, tuple[int, ...], bytes, bool]] = {}
        """Outer headers already decoded (VXLAN-GPE and NSH, as bytes) and what they say."""
        self._hello = _hello_datagram(node)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # DF clear: a datagram larger than the underlay's MTU is fragmented by
        # the kernel rather than lost.
        sock = udp_socket(family, bind=(host, port), fragment=True)
        receive_buffer(sock, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        if family == socket.AF_INET:
            # A zero UDP checksum, as VXLAN sends (RFC 7348 §5; the inner frame
            # has its own): no sum over a 64 KB datagram on either side.
            sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        self._sock = sock
        self.address: tuple[str, int] = sock.getsockname()[:2]
        self.ifname = f"udp:{self.address[1]}"
        self.fd = sock.fileno()
        self.sendmsg = self._sendmsg
        self.peers: dict[str, Peer] = {}
        self._by_ip: dict[str, Peer] = {}
        self.rx_packets = 0
        self.rx_bytes = 0
        self.drops: Counter[str] = Counter()

    def _sendmsg(self, parts: Sequence[Buffer], address: tuple[str, int]) -> int:
        return self._sock.sendmsg(parts, (), 0, address)

    def set_peers(self, peers: Mapping[str, tuple[str, int]]) -> tuple[list[Peer], list[Peer]]:
        """Make `peers` (name → underlay address) the peers; returns (joined, left).

        A peer whose address changed leaves and joins again.
        """
        left = [
            peer
            for name, peer in self.peers.items()
            if name not in peers or peers[name] != peer.address
        ]
        for peer in left:
            del self.peers[peer.name]
            self._by_ip.pop(peer.address[0], None)
        joined = []
        for name, address in peers.items():
            if name == self.node or name in self.peers:
                continue
            peer = self.peers[name] = Peer(name, address, self.now)
            self._by_ip[address[0]] = peer
            joined.append(peer)
        return joined, left

    def receive(self) -> list[tuple[bytes, str]]:
        """Up to `BATCH` datagrams waiting, with the address each came from."""
        received = []
        recvfrom = self._sock.recvfrom
        for _ in range(BATCH):
            try:
                data, source = recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError:
                self.drops["rx-error"] += 1
                break
            self.rx_packets += 1
            self.rx_bytes += len(data)
            received.append((data, source[0]))
        return received

    def decode(self, data: bytes, source: str) -> Arrival | str | None:
        """The frame `data` carries, or why it is dropped (None: a peer's hello)."""
        peer = self._by_ip.get(source)
        if peer is None:
            return "unknown-source"
        peer.seen = self.now
        if data[: len(_HELLO_HEAD)] == _HELLO_HEAD:
            self.hellos_received += 1
            return None
        # Every packet of one hop of one flow comes with the same outer
        # headers: they are decoded once and looked up after that.
        if len(data) > _HEADERS_MIN:
            end = _GPE_SIZE + (data[_LENGTH_AT] & 0x3F) * 4
            known = self._decoded.get(data[:end])
            if known is not None:
                vni, spi, si, ttl, tags, vnet, fixed = known
                if len(data) - end < _INNER_MIN:
                    return "runt"
                return Arrival(peer, vni, spi, si, ttl, tags, vnet + data[end:], fixed)
        gpe = parse_vxlan_gpe(data)
        if gpe.error is not None:
            return gpe.error.value
        if gpe.next_protocol != _NSH_PROTO:
            return "not-nsh"
        arrival = decode_nsh(data, gpe.inner, peer, gpe.vni)
        if isinstance(arrival, Arrival):
            decoded = self._decoded
            if len(decoded) >= DECODED_HEADERS:
                decoded.clear()
            vnet = arrival.frame[:VNET_HDR_LEN]
            decoded[data[: len(data) - len(arrival.frame) + VNET_HDR_LEN]] = (
                arrival.vni,
                arrival.spi,
                arrival.si,
                arrival.ttl,
                arrival.tags,
                vnet,
                arrival.fixed,
            )
        return arrival

    def send_hellos(self) -> None:
        """Tell every peer this node is alive (every `hello_interval` seconds)."""
        for peer in self.peers.values():
            try:
                self._sock.sendto(self._hello, peer.address)
            except OSError:
                self.drops["hello-tx-error"] += 1
                continue
            self.hellos_sent += 1

    def liveness(self, now: float) -> tuple[list[Peer], list[Peer]]:
        """Peers that fell silent for `dead_after` seconds, and silent ones heard
        again: (gone down, come back); each peer's `alive` follows."""
        down: list[Peer] = []
        up: list[Peer] = []
        for peer in self.peers.values():
            alive = now - peer.seen < self.dead_after
            if alive != peer.alive:
                peer.alive = alive
                (up if alive else down).append(peer)
        return down, up

    def counters(self) -> dict[str, object]:
        return {
            "address": f"{self.address[0]}:{self.address[1]}",
            "peers": {
                name: {
                    "address": f"{p.address[0]}:{p.address[1]}",
                    "alive": p.alive,
                    "silent": round(max(0.0, self.now - p.seen), 3),
                }
                for name, p in self.peers.items()
            },
            "hellos_sent": self.hellos_sent,
            "hellos_received": self.hellos_received,
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "rx_kernel_drops": self.kernel_drops(),
            "drops": dict(sorted(self.drops.items())),
        }

    def kernel_drops(self) -> int:
        """Datagrams the kernel dropped on the socket (its buffer full), so far."""
        if self.fd < 0:
            return 0
        return udp_drops(self._sock) or 0

    def close(self) -> None:
        self._sock.close()
        self.fd = -1
