"""The node's per-packet path: read a batch from a port, check, learn, forward.

This is the code every frame runs through, so its loop (`Datapath._forward`)
is written for CPython's speed rather than for elegance: attribute lookups are
hoisted out of the loop, counters are plain integers, and the common cases (a
known unicast destination on another port, a flow with a fused entry) are
handled inline: one parse, two dict lookups and one write.  Anything rarer
leaves the loop for a named method: the flow table of a steered port
(`_steer`), tap copies (`_tap`), a native function (`_through_function`), a
flood (`flood`), the trace of a journey through functions (`_journey`,
`_fuse`).  Nothing raises out of the loop: a bad frame is a counted drop with
a named reason.

The parse (`pktchain.packet.parse_frame`, about 0.7 µs) is also the ingress
check: a frame whose IPv4, IPv6, ARP or L4 header is inconsistent is dropped
under the codec's reason.  Other EtherTypes are switched as they are: a switch
does not judge protocols it does not speak.

A native function is called from here, not through its port: a frame switched
or steered to a function's port is handed to the function at once, and each
frame it answers with is forwarded at once as if the function's port had
received it, one level deeper (at most `MAX_DEPTH`).  So a packet crosses a
whole chain of functions within one call, which is what lets the datapath
trace its journey and fuse it into one fast-path entry (fastpath.py).

A function gets its frame as a bytearray of its own, its packet's buffer,
which it rewrites in place: one copy of the frame per function, made here.  A
frame from a real port (bytes, which nothing rewrites) is copied into one,
with the destination MAC of a steering hop written into the copy; a frame a
function forwarded comes back as that bytearray, which the datapath owns again
and hands on as it is (the next hop's MAC written in place).  So a packet
crossing a chain of N functions is copied N times at most: once on the way
in, and once more for each function a flood or a tap reaches.  The frame as it
came in stays as it was, for the trace that fuses the journey.

Frames carry their `virtio_net_hdr` in front (`VNET_HDR_LEN` bytes), so the
Ethernet destination starts at offset 10 and the source at 16.
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.fastpath import (
    IPV4_DF,
    IPV4_FLAGS_AT,
    PUNT_TCP_FLAGS,
    FusedEntry,
    Trace,
    apply_fused,
    fuse,
    on_revoke_remove,
)
from pktchain.node.dataplane.kfastpath import FlowKey, KernelFastPath, KernelHit, KernelTable
from pktchain.node.dataplane.limits import (
    DEFAULT_PORT_LIMITS,
    HOLD_SHARE,
    HOLD_STRIKES,
    PortLimits,
    PortPolicer,
    RateDrop,
)
from pktchain.node.dataplane.ports import (
    ETH_DST,
    ETH_END,
    ETH_SRC,
    ETH_TYPE,
    DropReason,
    PortKind,
    SwitchPort,
)
from pktchain.node.dataplane.portsec import fusable
from pktchain.node.dataplane.steering import Steering, is_icmp_error, syn_isn
from pktchain.node.dataplane.switch import (
    DEFAULT_AGING,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_NETWORK,
    STATIC,
    MacTable,
    Network,
)
from pktchain.node.dataplane.underlay import (
    SPI_SWITCHED,
    PeerPort,
    decode_nsh,
    encapsulate_ethernet,
)
from pktchain.packet.headers import VIRTIO_NET_HDR
from pktchain.packet.parse import FLOW_END, FLOW_START, FrameInfo, parse_frame

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Protocol

    from pktchain.functions.sdk import FlowLease
    from pktchain.node.dataplane.functions import FunctionPort
    from pktchain.node.dataplane.portsec import PortGuard
    from pktchain.node.dataplane.steering import Flow, FlowEntry, HopCounters
    from pktchain.node.dataplane.switch import MacEntry
    from pktchain.node.dataplane.underlay import Arrival, NshHeader, Peer, Underlay

if TYPE_CHECKING:

    class LiveForward(Protocol):
        """What the datapath hands each batch to while a live trace is armed."""

        def forward(
            self, port: SwitchPort, frames: Sequence[bytes], trace: None, depth: int
        ) -> None: ...


__all__ = [
    "BATCH",
    "DEFAULT_MAX_FUSED",
    "ETH_DST",
    "ETH_END",
    "ETH_SRC",
    "ETH_TYPE",
    "MAX_DEPTH",
    "ZERO_MAC",
    "Datapath",
]

BATCH = 64
"""Frames read from one port before the loop looks at the others (fairness)."""

ZERO_MAC = bytes(6)

_RUNT = DropReason.RUNT.value
_BAD_SRC = DropReason.BAD_SRC_MAC.value
_SAME_PORT = DropReason.SAME_PORT.value
_NO_PORTS = DropReason.NO_PORTS.value
_TOO_DEEP = DropReason.FUNCTION_DEPTH.value
_RATE_ARP = RateDrop.ARP.value
_RATE_ICMP = RateDrop.ICMP_ROUTER.value
_RATE_FLOOD = RateDrop.FLOOD.value
_RATE_SLOW = RateDrop.SLOW_PATH.value
_ICMPS = (1, 58)  # ICMP, ICMPv6
_ICMP_V4 = 1
_LOOP = DropReason.FUNCTION_LOOP.value
_STATIC_SRC = DropReason.STATIC_SRC_MAC.value
_SYN = 0x02
_SYN_ACK = 0x12
_FUNCTION = PortKind.FUNCTION
_HOST_NICS = (PortKind.TAP, PortKind.VETH)
_UNDERLAY = PortKind.UNDERLAY
_NSH_ETHERTYPE = b"\x89\x4f"
_GSO_TYPE_AT = VIRTIO_NET_HDR.offset("gso_type")
_GSO_SIZE_AT = VIRTIO_NET_HDR.offset("gso_size")

MAX_DEPTH = 16
"""How many native functions one frame may cross within one call (a bound on
frames sent round in circles between functions)."""

DEFAULT_MAX_FUSED = 262_144
"""Fused fast-path entries per port, at most."""


def _ip_size(frame: bytes | bytearray, info: FrameInfo) -> int:
    """The IP packet's size, or for a GSO frame the size of each segment it stands for."""
    if frame[_GSO_TYPE_AT]:
        # The virtio_net_hdr's fields are little-endian (its layout, VIRTIO_NET_HDR).
        gso_size = frame[_GSO_SIZE_AT] | frame[_GSO_SIZE_AT + 1] << 8
        return info.payload - info.l3 + gso_size
    return info.end - info.l3


def _lease_of(flow: Flow) -> FlowLease:
    """The lease that ends a fused entry with the steering flow it passed (made on first use)."""
    if flow.lease is None:
        from pktchain.functions.sdk import FlowLease

        flow.lease = FlowLease()
    return flow.lease


def _owned(frame: bytes | bytearray) -> bytearray:
    """`frame` as a buffer to hand to a function: a bytearray the datapath holds
    (a function forwarded it) as it is, a frame from a port copied, once."""
    return frame if isinstance(frame, bytearray) else bytearray(frame)


def _with_dst(frame: bytes | bytearray, mac: bytes) -> bytearray:
    """`frame` with its Ethernet destination replaced by `mac`, as a buffer the
    datapath owns: rewritten in place if it is one already, else one copy."""
    owned = _owned(frame)
    owned[ETH_DST:ETH_SRC] = mac
    return owned


class Datapath:
    """Learning-switch forwarding between the node's ports, with chain steering.

    A port whose `flows` table is set (the steering gives it one when a chain
    uses it) has each IP packet looked up by its 5-tuple first: a hit says
    where the flow goes next (a function's port, with the destination MAC
    rewritten, plus any tap copies) or that it continues with normal
    switching; a miss asks the steering to classify the flow.
    """

    def __init__(
        self,
        *,
        mac_aging: float = DEFAULT_AGING,
        mac_table_size: int = DEFAULT_MAX_ENTRIES,
        check_frames: bool = True,
        port_limits: PortLimits = DEFAULT_PORT_LIMITS,
    ) -> None:
        self.ports: list[SwitchPort] = []
        self.networks: dict[str, Network[SwitchPort]] = {}
        self.mac_aging = mac_aging
        self.mac_table_size = mac_table_size
        self.check_frames = check_frames
        self.port_limits = port_limits
        """The rate limits each host port gets (limits.py)."""
        self.router_addresses: frozenset[bytes] = frozenset()
        """The router's own IPv4/IPv6 addresses (packed): ICMP to them from a
        host port takes a token of the port's `icmp_router` bucket."""
        self.steering: Steering | None = None
        self.underlay: Underlay | None = None
        """Set on a node of a cluster: its peers are ports of every network."""
        self.end_nsh: NshHeader | None = None
        """Handed from `_steer` to the switching that follows it: the NSH of the
        end of a path that crosses nodes (see `FlowEntry.nsh`)."""
        self.now = 0.0
        self.max_fused = DEFAULT_MAX_FUSED
        self.fast_hits = 0
        """Frames that came in and that a fast path carried: Python's, and the
        kernel's once `kernel_credit` has counted them (``kernel.hit_packets`` of it)."""
        self.fast_misses = 0
        """Frames that came in (on a port, from another node) that no fast path
        carried; with `fast_hits`, every frame that came in."""
        self.delivered = 0
        """Frames handed to native functions."""
        self.fused = 0
        self.fuse_refused: Counter[str] = Counter()
        self.uncredited: list[FusedEntry] = []
        """Fused entries whose packets are not yet counted where they are read."""
        self.kernel: KernelFastPath | None = None
        """The kernel fast path (kfastpath.py), when the node runs it: the fused
        entries of the ports it is on are mirrored into the kernel (`KernelTable`)."""
        self.live: LiveForward | None = None
        """An armed live trace (`pktchain trace --live`): while set, each batch read
        from a port goes through it, which records the frames it marks; None (the
        rule) costs the loop one test per batch."""

    def network(self, name: str = DEFAULT_NETWORK) -> Network[SwitchPort]:
        """The network called `name`, created on first use (and joined by every peer)."""
        network = self.networks.get(name)
        if network is None:
            table: MacTable[SwitchPort] = MacTable(self.mac_aging, self.mac_table_size)
            network = self.networks[name] = Network(name, table)
            if self.underlay is not None:
                for peer in self.underlay.peers.values():
                    self._join(peer, network)
        return network

    # -- the underlay ---------------------------------------------------------
    def add_peer(self, peer: Peer) -> None:
        """A node joined the cluster: it becomes a port of each network."""
        for network in list(self.networks.values()):
            self._join(peer, network)

    def _join(self, peer: Peer, network: Network[SwitchPort]) -> None:
        if self.underlay is None:  # pragma: no cover - callers check
            return
        port = PeerPort(self.underlay, peer, network.name)
        peer.ports[port.vni] = port
        self.ports.append(port)
        port.network = network
        network.ports.append(port)

    def remove_peer(self, peer: Peer) -> None:
        """A node left the cluster: its ports go, and what was learned on them."""
        for port in peer.ports.values():
            self.remove_port(port)
        peer.ports.clear()

    def pin_remote(self, mac: bytes, node: str) -> bool:
        """Know `mac` as behind node `node` in every network, without learning or
        ageing (a port of that node, from the cluster's registry); False if the
        node is not a peer."""
        peer = None if self.underlay is None else self.underlay.peers.get(node)
        if peer is None:
            return False
        for port in peer.ports.values():
            if port.network is not None:
                port.network.macs.learn(mac, port, STATIC)
        return True

    def drain_underlay(self, underlay: Underlay) -> int:
        """Forward the datagrams waiting on the underlay; returns how many were read."""
        received = underlay.receive()
        drops = underlay.drops
        underlay.now = self.now
        for data, source in received:
            arrival = underlay.decode(data, source)
            if arrival is None:
                continue  # a hello
            if isinstance(arrival, str):
                drops[arrival] += 1
                continue
            port = None if arrival.peer is None else arrival.peer.ports.get(arrival.vni)
            if port is None:
                drops["unknown-network"] += 1
                continue
            if arrival.spi == SPI_SWITCHED:
                self._forward(port, (arrival.frame,), None, 0)
            else:
                self._arrive(port, arrival)
        if self.uncredited:
            self.credit()
        return len(received)

    def _send_nsh(
        self, out: SwitchPort, entry: FlowEntry, header: NshHeader, frame: bytes | bytearray
    ) -> None:
        """Send `frame` along its path in NSH: to another node over the
        underlay, or to an NSH-aware function over Ethernet."""
        # The frame goes with its destination restored if it still has the
        # rewrite that took it into this node's last function.
        restore = entry.restore_from
        dst = None
        if restore is not None and frame[ETH_DST:ETH_SRC] == restore:
            dst = entry.restore_to
        if out.kind is _UNDERLAY:
            cast(PeerPort, out).transmit_nsh(header, frame, dst)
            return
        inner_dst = dst if dst is not None else bytes(frame[ETH_DST:ETH_SRC])
        parts, size = encapsulate_ethernet(header, frame, inner_dst, entry.mac)
        if out.kind is _FUNCTION:
            self._through_function(cast("FunctionPort", out), bytearray(b"".join(parts)), None, 0)
        else:
            out.transmit_parts(parts, size)

    @staticmethod
    def _send_fused_nsh(fused: FusedEntry, frame: bytes | bytearray, info: FrameInfo) -> None:
        out = cast(PeerPort, fused.out)
        if fused.nsh is None:  # pragma: no cover - the caller checks
            return
        if fused.identity:
            out.transmit_nsh(fused.nsh, frame)
        else:
            # The rewritten headers, then the untouched rest: a 64 KB segment
            # is not copied.
            head = apply_fused(fused, frame, info)
            out.transmit_nsh(fused.nsh, head, tail=memoryview(frame)[info.payload :])

    def _nsh_return(self, port: SwitchPort, frame: bytes | bytearray) -> None:
        """NSH an NSH-aware function sent back on `port`: on along its path."""
        arrival = decode_nsh(bytes(frame), ETH_END, None, 0)
        if isinstance(arrival, str):
            port.drops[arrival] += 1
            return
        self._arrive(port, arrival)

    def _switch(self, port: SwitchPort, frame: bytes | bytearray) -> None:
        """Switch a frame at the end of its path here, learning nothing: its
        source is not behind `port` (another node's, or a function's)."""
        network = port.network
        if network is None:  # pragma: no cover - every added port has a network
            return
        if frame[ETH_DST] & 1:
            self.flood(port, network, frame, None, 0)
            return
        found = network.macs.entries.get(bytes(frame[ETH_DST:ETH_SRC]))
        if found is None:
            self.flood(port, network, frame, None, 0)
            return
        out = found.port
        if out is port:
            port.drops[_SAME_PORT] += 1
            return
        port.forwarded += 1
        if out.kind is _FUNCTION:
            self._through_function(cast("FunctionPort", out), _owned(frame), None, 0)
        else:
            out.transmit(frame)

    @staticmethod
    def _fast_fits(fused: FusedEntry, frame: bytes, info: FrameInfo) -> bool:
        """Whether a frame may take `fused` (the checks of the loop in `_forward`)."""
        return (
            frame[ETH_DST:ETH_SRC] == fused.dst_mac
            and not info.fragment
            and not info.tcp_flags & PUNT_TCP_FLAGS
            and (not fused.ttl or frame[info.l3 + fused.ttl_at] > fused.ttl)
            and (not fused.df or bool(frame[info.l3 + IPV4_FLAGS_AT] & IPV4_DF))
            and (not fused.mtu or _ip_size(frame, info) <= fused.mtu)
            and (fused.dst_entry is None or fused.dst_entry.port is fused.out)
        )

    def _arrive(self, port: SwitchPort, arrival: Arrival) -> None:
        """A chained frame from another node (`port` is its peer port) or back
        from an NSH-aware function (`port` is its egress): on along its path,
        as its entry says."""
        frame = arrival.frame
        if arrival.peer is not None:
            port.rx_packets += 1
            port.rx_bytes += len(frame) - VNET_HDR_LEN
        drops = port.drops
        info = parse_frame(frame, VNET_HDR_LEN)
        if info.error is not None:
            drops[info.error.value] += 1
            return
        if not info.ip_version:
            drops["nsh-not-ip"] += 1
            return
        steering = self.steering
        if steering is None:
            drops["nsh-no-chains"] += 1
            return
        key = info[FLOW_START:FLOW_END]
        akey = (arrival.spi << 8 | arrival.si, key)
        fused = steering.arrival_fast.get(akey)
        if fused is not None and self._fast_fits(fused, frame, info):
            if not fused.packets:
                self.uncredited.append(fused)
            fused.packets += 1
            fused.bytes += len(frame) - VNET_HDR_LEN
            fused.seen = self.now
            self.fast_hits += 1
            port.forwarded += 1
            if fused.nsh is not None:
                self._send_fused_nsh(fused, frame, info)
            elif fused.identity:
                fused.out.transmit(frame)
            else:
                fused.out.transmit_parts(
                    (apply_fused(fused, frame, info), memoryview(frame)[info.payload :]),
                    len(frame),
                )
            return
        self.fast_misses += 1
        if self.uncredited:
            self.credit()
        entry = steering.arrivals.get(akey)
        if entry is None:
            joined = steering.arrive(arrival, port, info, key)
            if isinstance(joined, str):
                drops[joined] += 1
                return
            entry = joined
        flow = entry.flow
        flow.seen = self.now
        flow.packets += 1
        if entry.drop is not None:
            drops[entry.drop] += 1
            return
        hop = entry.hop
        if hop is not None:
            hop.packets += 1
            hop.bytes += len(frame) - VNET_HDR_LEN
        out = entry.out
        if out is None:
            restore = entry.restore_from
            if restore is not None and frame[ETH_DST:ETH_SRC] == restore:
                frame = _with_dst(frame, entry.restore_to)  # type: ignore[assignment]
            self._switch(port, frame)
        elif entry.nsh is not None:
            # Passed on without a function here: the TTL is the frame's own,
            # so that frames sent round between nodes die out.
            if arrival.ttl <= 1:
                drops["nsh-ttl-exhausted"] += 1
                return
            header = entry.nsh
            if out.kind is _UNDERLAY and header.ttl != arrival.ttl - 1:
                header = header.with_ttl(arrival.ttl - 1)
            port.forwarded += 1
            self._send_nsh(out, entry, header, frame)
        elif out.kind is _FUNCTION:
            port.forwarded += 1
            trace = None
            if not info.fragment and info.l4 >= 0:
                # The journey from here may be fused: later frames of the flow
                # then skip every function of this node (`arrival_fast`).
                trace = Trace(port, frame, info, akey)
                trace.revokers.append(_lease_of(flow))
                trace.flows.append(flow)
                if hop is not None:
                    trace.hops.append(hop)
            self._through_function(
                cast("FunctionPort", out), _with_dst(frame, entry.mac), trace, 0, entry
            )
        else:
            port.forwarded += 1
            out.transmit_parts(
                (frame[:ETH_DST] + entry.mac, memoryview(frame)[ETH_SRC:]), len(frame)
            )

    def add_port(self, port: SwitchPort, network: str = DEFAULT_NETWORK) -> None:
        self.ports.append(port)
        if port.kind in _HOST_NICS or (port.kind is PortKind.AF_PACKET and port.netns):
            # A host's port; not a NIC of the node's own namespace (limits.py).
            port.policer = PortPolicer(self.port_limits)
        port.network = self.network(network)
        port.network.ports.append(port)
        if port.kind is _FUNCTION and port.mac:
            # A native function's address is known from the start and never
            # ages out (a static entry): frames to it are not flooded.
            port.network.macs.learn(bytes.fromhex(port.mac.replace(":", "")), port, STATIC)

    def secure(self, port: SwitchPort, guard: PortGuard | None) -> None:
        """Check `port`'s frames with `guard` from now on (None: no more).

        The port's fused entries go, since they were made under the check it
        had; and so do the addresses learned on it that it may no longer send
        from.
        """
        port.guard = guard
        if port.fast:
            port.fast.clear()  # a KernelTable takes the kernel's entries with it
        port.fast = None
        if port.network is not None and guard is not None:
            port.network.macs.forget_port(port, keep=guard.owns)

    def remove_port(self, port: SwitchPort) -> None:
        if port.fast:
            port.fast.clear()
        for other in self.ports:  # entries that leave by it go with it
            table = other.fast
            if table and other is not port:
                for key in [key for key, entry in table.items() if entry.out is port]:
                    del table[key]
        if self.kernel is not None:
            ifindex = getattr(port, "node_ifindex", 0)
            if ifindex in self.kernel.attached:
                self.kernel.forget_device(ifindex)
        if self.steering is not None:
            self.steering.forget_port(port)
        self.ports.remove(port)
        if port.network is not None:
            port.network.ports.remove(port)
            port.network.macs.forget_port(port)

    def drain(self, port: SwitchPort) -> int:
        """Process up to `BATCH` frames waiting on `port`; returns how many were read."""
        try:
            frames = port.receive(BATCH)
        except BlockingIOError:
            return 0
        except OSError as exc:
            # e.g. ENETDOWN while the host's interface is down: nothing to read.
            port.drops["rx-" + errno.errorcode.get(exc.errno or 0, "error").lower()] += 1
            return 0
        if frames:
            forward = self._forward if self.live is None else self.live.forward
            policer = port.policer
            if policer is None:
                forward(port, frames, None, 0)
            else:
                dropped = policer.dropped
                forward(port, frames, None, 0)
                # Judged per BATCH frames read, however many reads they took: a node
                # that wakes for every few frames sees a storm in small batches.
                policer.window_read += len(frames)
                policer.window_dropped += policer.dropped - dropped
                if policer.window_read >= BATCH:
                    if policer.window_dropped >= policer.window_read * HOLD_SHARE:
                        policer.strikes += 1
                        if policer.strikes >= HOLD_STRIKES:
                            policer.hold = True  # the node holds the port (limits.py)
                    else:
                        policer.strikes = 0
                    policer.window_read = policer.window_dropped = 0
        return len(frames)

    def _forward(
        self,
        port: SwitchPort,
        frames: Iterable[bytes | bytearray],
        trace: Trace | None,
        depth: int,
        via: FlowEntry | None = None,
    ) -> None:
        """Forward each of `frames`, received on `port`.

        A frame of a flow with a fused entry on this port takes the fast path
        (see fastpath.py); any other is checked, learned, steered, switched.
        `depth` counts the native functions the frames have come through
        within this call (0: they came in on `port` from outside), `trace` is
        their journey's, if it is being traced.  A frame from a real port is
        bytes; one a function forwarded (or that steering rewrote) is a
        bytearray the datapath owns (see the module).  `via` is the steering
        entry that sent the packet the function answers with these frames
        into it (`_steer`): the path they may go on along.
        """
        network = port.network
        if network is None:  # pragma: no cover - every added port has a network
            return
        if trace is not None and trace.ended:
            trace = None  # an earlier frame of the journey ended it
        macs = network.macs
        entries = macs.entries
        check = self.check_frames
        table = port.flows
        guard = port.guard
        policer = port.policer
        drops = port.drops
        now = self.now
        uncredited = self.uncredited
        kernel = self.kernel
        # Switched flows between two ports the kernel fast path is on get an
        # entry of their own (see `_fuse_switched`); not those a chain steers.
        switched = (
            kernel is not None
            and table is None
            and not depth
            and getattr(port, "node_ifindex", 0) in kernel.attached
        )
        # A bytearray's slices are bytearrays, which cannot be dict keys: where
        # frames may be bytearrays (a function's port, whose frames come from
        # functions; a steered port, where a restored destination is written
        # into a copy) the MAC keys are made bytes.  Frames from a real port
        # that switches only are bytes: nothing is added to their path.
        owned = port.kind is _FUNCTION or table is not None
        hits = 0
        received_before = port.rx_packets
        for received in frames:
            frame = received
            size = len(frame)
            port.rx_packets += 1
            port.rx_bytes += size - VNET_HDR_LEN
            if size < ETH_END:
                drops[_RUNT] += 1
                continue
            fast = port.fast  # entries are installed while a batch runs
            info = None
            fused = None
            if check or table is not None or fast is not None or guard is not None:
                info = parse_frame(frame, VNET_HDR_LEN)
                if info.error is not None:
                    if check or guard is not None:
                        drops[info.error.value] += 1
                        continue
                    info = None  # not checking: switch it, but it cannot be steered

            if fast is not None and info is not None and info.ip_version:
                fused = fast.get(info[FLOW_START:FLOW_END])
                if (
                    fused is not None
                    and frame[ETH_DST:ETH_SRC] == fused.dst_mac
                    and not info.fragment
                    and not info.tcp_flags & PUNT_TCP_FLAGS
                    and (not fused.ttl or frame[info.l3 + fused.ttl_at] > fused.ttl)
                    and (not fused.df or frame[info.l3 + IPV4_FLAGS_AT] & IPV4_DF)
                    and (not fused.mtu or _ip_size(frame, info) <= fused.mtu)
                    and (fused.dst_entry is None or fused.dst_entry.port is fused.out)
                    and (fused.src_mac is None or frame[ETH_SRC:ETH_TYPE] == fused.src_mac)
                ):
                    # Counted on the entry; credit() hands the counts on.
                    if not fused.packets:
                        uncredited.append(fused)
                    fused.packets += 1
                    fused.bytes += size - VNET_HDR_LEN
                    fused.seen = now
                    if fused.nsh is not None:
                        self._send_fused_nsh(fused, frame, info)
                    elif fused.identity:
                        fused.out.transmit(frame)
                    else:
                        fused.out.transmit_parts(
                            (apply_fused(fused, frame, info), memoryview(frame)[info.payload :]),
                            size,
                        )
                    hits += 1
                    continue

            if uncredited:
                self.credit()  # the slow path may read what the fast path counted
            if fused is not None:
                self.kernel_credit_related(fused)  # and what the kernel counted

            if guard is not None and info is not None:
                refused = guard.check(frame, info)
                if refused is not None:
                    drops[refused] += 1
                    continue

            # ARP (EtherType 0x0806; the second byte tells IPv4 and IPv6 apart at once).
            if policer is not None and frame[ETH_TYPE + 1] == 6 and frame[ETH_TYPE] == 8:
                bucket = policer.arp
                if bucket is not None and not bucket.take(now):
                    drops[_RATE_ARP] += 1
                    policer.dropped += 1
                    continue

            src = frame[ETH_SRC:ETH_TYPE]
            if owned:
                src = bytes(src)
            src_entry = entries.get(src)  # type: ignore[arg-type]  # bytes: see `owned`
            moved = None
            if src_entry is not None and src_entry.port is not port:
                if src_entry.seen == STATIC and port.kind is not _FUNCTION:
                    # The address of a native function's port, or of a host
                    # the cluster places on another node: a frame from a
                    # host's port that claims it would move it there and take
                    # its traffic (and let it age out). It is dropped instead.
                    # (A function forwards other hosts' frames: from its ports
                    # the address is not learned, the entry stays.)
                    drops[_STATIC_SRC] += 1
                    continue
                moved, src_entry = src_entry, None  # learned elsewhere: learned here anew
            if src_entry is None and (frame[ETH_SRC] & 1 or src == ZERO_MAC):
                drops[_BAD_SRC] += 1
                continue

            if table is not None and frame[ETH_TYPE:ETH_END] == _NSH_ETHERTYPE:
                self._nsh_return(port, frame)
                continue
            end_nsh = None
            if table is not None and info is not None and info.ip_version:
                steered = self._steer(port, frame, info, src_entry, trace, depth, via)
                if steered is None:
                    continue  # sent or dropped as its flow entry says
                frame = steered
                end_nsh, self.end_nsh = self.end_nsh, None
            elif src_entry is not None:
                if src_entry.seen != STATIC:  # a static entry stays one
                    src_entry.seen = now
            elif port.flooded:
                # Not a bump in the wire: what such a function sends from
                # another host's address (a NAT's translated reply, a mirror's
                # copy) does not put that host behind it. Functions that own
                # addresses (the router, its VRRP virtual MAC) are learned.
                macs.learn(src, port, now)  # type: ignore[arg-type]  # bytes: see `owned`
                if moved is not None and self.kernel is not None:
                    self.kernel_moved(moved)  # the kernel cannot check a move per packet

            if not frame[ETH_DST] & 1:
                dst = frame[ETH_DST:ETH_SRC]
                if owned:
                    dst = bytes(dst)
                dst_entry = entries.get(dst)  # type: ignore[arg-type]  # bytes: see `owned`
                if dst_entry is not None:
                    out = dst_entry.port
                    if out is port:
                        drops[_SAME_PORT] += 1
                        continue
                    if out.kind is _FUNCTION:
                        function = cast("FunctionPort", out)
                        if (
                            port.kind is _FUNCTION
                            and function.owner is cast("FunctionPort", port).owner
                        ):
                            # A function sent a frame to its own address: a bump
                            # in the wire forwards what a host addressed to it
                            # straight back into itself, round and round until
                            # MAX_DEPTH. It goes nowhere; once is enough.
                            drops[_LOOP] += 1
                            continue
                        if policer is not None:
                            if (
                                info is not None
                                and info.proto in _ICMPS
                                and info.dst in self.router_addresses
                            ):
                                bucket = policer.icmp_router
                                if bucket is not None and not bucket.take(now):
                                    drops[_RATE_ICMP] += 1
                                    policer.dropped += 1
                                    continue
                            bucket = policer.slow_path
                            if bucket is not None and not bucket.take(now):
                                drops[_RATE_SLOW] += 1
                                policer.dropped += 1
                                continue
                        port.forwarded += 1
                        # A journey starts with the frame as it came in (fastpath.py).
                        journey = self._journey(trace, port, received, info)
                        self._through_function(function, _owned(frame), journey, depth)
                        continue
                    port.forwarded += 1
                    if end_nsh is not None and out.kind is _UNDERLAY:
                        # The end of a path that crossed nodes: the node of the
                        # destination learns the way back from the NSH.
                        if trace is not None:
                            self._fuse(trace, out, frame, dst_entry, end_nsh)
                        cast(PeerPort, out).transmit_nsh(end_nsh, frame)
                        continue
                    if trace is not None:
                        self._fuse(trace, out, frame, dst_entry)
                    elif switched and info is not None:
                        self._fuse_switched(port, out, frame, info, dst_entry)
                    try:
                        out.send(frame)
                    except OSError as exc:
                        out.tx_failed(exc)
                        continue
                    out.tx_packets += 1
                    out.tx_bytes += size - VNET_HDR_LEN
                    continue
            if policer is not None:
                bucket = policer.flood
                if bucket is not None and not bucket.take(now):
                    drops[_RATE_FLOOD] += 1
                    policer.dropped += 1
                    continue
            self.flood(port, network, frame, trace, depth)
        self.fast_hits += hits
        if not depth:  # frames that came in, not frames functions sent on within this call
            self.fast_misses += port.rx_packets - received_before - hits
        port.forwarded += hits
        if uncredited:
            self.credit()

    def kernel_credit(self) -> int:
        """Hand what the kernel carried since the last call to its entries and on to
        leases, flows and hops (as `credit` does for Python's hits); returns the
        packets. Called every few hundred milliseconds, and before anything reads
        those counts (status, metrics, the idle sweep, functions' timers)."""
        kernel = self.kernel
        if kernel is None or (not kernel.installed and not kernel.pending):
            return 0
        return self._kernel_credited(kernel.credit(self.uncredited))

    def kernel_credit_related(self, fused: FusedEntry) -> None:
        """A packet of a flow the kernel may carry takes the slow path (a FIN, an
        RST, a fragment): what the kernel carried under the leases of its entry
        is credited first, as `credit` is before any slow-path packet, since that
        packet may end them."""
        kernel = self.kernel
        if kernel is not None and fused.leases and kernel.by_lease:
            self._kernel_credited(kernel.credit_related(fused, self.uncredited))

    def _kernel_credited(self, hits: list[KernelHit]) -> int:
        if self.uncredited:
            self.credit()
        # The ports count what the kernel carried as they count a Python
        # fast-path hit: received and forwarded on the way in, sent on the way out.
        ingress = {getattr(port, "node_ifindex", 0): port for port in self.ports}
        carried = 0
        for hit in hits:
            carried += hit.packets
            port = ingress.get(hit.ingress)
            if port is not None:
                port.rx_packets += hit.packets
                port.rx_bytes += hit.bytes
                port.forwarded += hit.packets
            out = hit.entry.out
            out.tx_packets += hit.packets
            out.tx_bytes += hit.bytes
        self.fast_hits += carried  # `fast_hits` is both fast paths' (see its docstring)
        return carried

    def kernel_moved(self, moved: MacEntry[SwitchPort]) -> None:
        """A MAC moved to another port: the kernel's entries to it go (the Python
        fast path checks the move per packet; the program cannot)."""
        for port in self.ports:
            table = port.fast
            if isinstance(table, KernelTable):
                for key in [key for key, entry in table.items() if entry.dst_entry is moved]:
                    del table[key]

    def kernel_tables(self) -> dict[int, dict[FlowKey, FusedEntry] | None]:
        """The fused entries of each port the kernel fast path is on, by node end."""
        kernel = self.kernel
        if kernel is None:
            return {}
        return {
            ifindex: port.fast
            for port in self.ports
            if (ifindex := getattr(port, "node_ifindex", 0)) in kernel.attached
        }

    def credit(self) -> None:
        """Count the fast path's packets where they are read: leases, flows, hops.

        A packet on the fast path bumps its entry's counts only; they are
        handed on at the end of each batch and before any packet takes the slow
        path, so functions, timers and status readers never see them late.
        """
        for fused in self.uncredited:
            packets, octets, seen = fused.packets, fused.bytes, fused.seen
            fused.packets = fused.bytes = 0
            for lease in fused.leases:
                lease.packets += packets
                lease.bytes += octets
                lease.seen = max(lease.seen, seen)
            for flow in fused.flows:
                flow.packets += packets
                flow.seen = max(flow.seen, seen)
            for hop in fused.hops:
                hop.packets += packets
                hop.bytes += octets
            if fused.src_entry is not None and seen > fused.src_entry.seen:
                fused.src_entry.seen = seen
        self.uncredited.clear()

    def _steer(  # noqa: PLR0917 - positional: per-packet path
        self,
        port: SwitchPort,
        frame: bytes | bytearray,
        info: FrameInfo,
        src_entry: MacEntry[SwitchPort] | None,
        trace: Trace | None,
        depth: int,
        via: FlowEntry | None,
    ) -> bytes | bytearray | None:
        """An IP packet on a port chains steer from: do what its flow entry says.

        The entry is looked up by the packet's 5-tuple, or made by classifying
        the flow (its first packet, or a TCP SYN with another initial sequence
        number where the flow was classified: a new connection on an old
        5-tuple; a SYN sent again is the connection it opened).  The source address is learned
        as far as the entry allows (`src_entry`: the source's entry if it was
        learned on this port).  Returns the frame to switch normally (its
        destination restored if the last function of its path left our
        rewrite in place), or None when the entry sent or dropped it.  A frame
        steered to a function goes as a bytearray it owns: `frame` if it is one
        (the datapath's), else its one copy; the new destination is written
        into it.

        A frame a native function sent in answer to a packet the steering gave
        it (`via`, the entry that did) goes on along that packet's path,
        whatever its 5-tuple: a function that translates (a NAT) moves the
        rest of the path to the new one (`Steering.follow`).  An ICMP error
        goes along the path of the flow whose packet it quotes
        (`Steering.related`), and is never fused: its 5-tuple is not a flow's.
        """
        table = port.flows
        network = port.network
        if table is None or network is None:  # pragma: no cover - the loop checked
            return frame
        now = self.now
        key = info[FLOW_START:FLOW_END]
        flow_entry = table.get(key)
        steering = self.steering
        if steering is not None:
            followed = None
            if via is not None and (flow_entry is None or flow_entry.flow is not via.flow):
                followed = steering.follow(via, port, frame, info, key)
            if followed is None and info.proto == _ICMP_V4:
                followed = steering.related(port, frame, info)
            if followed is not None:
                flow_entry = followed
                if trace is not None and info.proto in _ICMPS and is_icmp_error(frame, info):
                    trace.broken = "icmp-error"
            elif flow_entry is None or (
                flow_entry.first
                and info.tcp_flags & _SYN_ACK == _SYN
                and syn_isn(frame, info) != flow_entry.flow.isn
            ):
                flow_entry = steering.classify(port, frame, info, key)
        if flow_entry is not None:
            flow = flow_entry.flow
            flow.seen = now
            flow.packets += 1
            if flow_entry.drop is not None:
                port.drops[flow_entry.drop] += 1
                return None
        if src_entry is not None:
            if src_entry.seen != STATIC:  # a static entry stays one
                src_entry.seen = now
        elif (flow_entry is None or flow_entry.learn) and port.flooded:
            network.macs.learn(bytes(frame[ETH_SRC:ETH_TYPE]), port, now)
        if flow_entry is None:
            return frame  # no steering: switched as it is

        hop = flow_entry.hop
        if hop is not None:
            hop.packets += 1
            hop.bytes += len(frame) - VNET_HDR_LEN
        out = flow_entry.out
        if out is not None and out.kind is _FUNCTION:
            # The journey into the function starts here (or goes on), before
            # the tap copies break it; the steering flow's end will end it.
            trace = self._journey(trace, port, frame, info)
            if trace is not None:
                trace.revokers.append(_lease_of(flow))
        if trace is not None:
            trace.flows.append(flow)
            if hop is not None:
                trace.hops.append(hop)
        if flow_entry.taps:
            self._tap(flow_entry.taps, frame, trace, depth)
        if out is None:  # switched next: `_forward` counts what becomes of it
            self.end_nsh = flow_entry.nsh
            restore = flow_entry.restore_from
            if restore is not None and frame[ETH_DST:ETH_SRC] == restore:
                # The last function handed the frame back with our rewrite in
                # place (a bump in the wire): give it its destination back.
                return _with_dst(frame, flow_entry.restore_to)
            return frame
        port.forwarded += 1
        if out.kind is _FUNCTION:
            to_function = _with_dst(frame, flow_entry.mac)
            self._through_function(cast("FunctionPort", out), to_function, trace, depth, flow_entry)
            return None
        if flow_entry.nsh is not None:
            if trace is not None:
                if out.kind is _UNDERLAY:
                    final = frame
                    restore = flow_entry.restore_from
                    if restore is not None and frame[ETH_DST:ETH_SRC] == restore:
                        final = frame[:ETH_DST] + flow_entry.restore_to + frame[ETH_SRC:]
                    self._fuse(trace, out, bytes(final), None, flow_entry.nsh)
                else:
                    trace.broken = "nsh-function"
            self._send_nsh(out, flow_entry, flow_entry.nsh, frame)
            return None
        # The new destination goes out in front of the untouched rest of the
        # frame: a 64 KB segment is not copied.
        head = frame[:ETH_DST] + flow_entry.mac
        if trace is not None:
            self._fuse(trace, out, head + memoryview(frame)[ETH_SRC:], None)
        out.transmit_parts((head, memoryview(frame)[ETH_SRC:]), len(frame))
        return None

    def _tap(
        self,
        taps: Iterable[tuple[SwitchPort, bytes, HopCounters]],
        frame: bytes | bytearray,
        trace: Trace | None,
        depth: int,
    ) -> None:
        """Send a copy of `frame` to each tap of its path (what a tap sends back is dropped).

        A copy's own journey is not traced; the frame's is broken (`trace`): a
        fused entry would make no copies.  A function tap gets a copy of its
        own (the frame goes on after it), a port the new destination in front
        of the untouched rest.
        """
        if trace is not None:
            trace.broken = "tap"
        size = len(frame)
        tail = memoryview(frame)[ETH_SRC:]
        for tap, tap_mac, tap_counters in taps:
            if tap.kind is _FUNCTION:
                copy = bytearray(frame)
                copy[ETH_DST:ETH_SRC] = tap_mac
                self._through_function(cast("FunctionPort", tap), copy, None, depth)
            else:
                tap.transmit_parts((frame[:ETH_DST] + tap_mac, tail), size)
            tap_counters.packets += 1
            tap_counters.bytes += size - VNET_HDR_LEN

    def _through_function(
        self,
        port: FunctionPort,
        frame: bytearray,
        trace: Trace | None,
        depth: int,
        via: FlowEntry | None = None,
    ) -> None:
        """Hand `frame` to the native function behind `port`, then forward what it sends.

        `frame` is given away: the function rewrites it in place and may keep
        it, so it is a buffer nothing else holds, and nothing reads it after.
        The frame the function forwards comes back (as that bytearray) among
        its outputs.

        Each frame the function answers with is forwarded at once, as received
        on the function's port for its interface, one level deeper: a packet
        crosses a chain of functions within this call.  Past `MAX_DEPTH`
        levels (functions sending frames round in circles) it is dropped as
        `function-depth`.  `trace` learns whether the function forwarded the
        packet with a flow lease.  `via` is the steering entry that sent the
        frame here, if one did: what the function sends may go on along its
        path (`_steer`).
        """
        port.tx_packets += 1
        port.tx_bytes += len(frame) - VNET_HDR_LEN
        self.delivered += 1
        host = port.owner
        answer = host.handle(port, frame)
        if answer is None:  # the function raised: counted by its host
            if trace is not None:
                trace.broken = "function-error"
            return
        outputs, lease = answer
        if trace is not None:
            if lease is not None and lease.valid and len(outputs) == 1:
                trace.add_lease(lease)
            else:
                trace.broken = "function-not-cached" if len(outputs) == 1 else "function-fanout"
        ports = host.ports
        for iface, sent in outputs:
            out = ports.get(iface)
            if out is None:
                host.sink(iface, sent)
                continue
            if depth >= MAX_DEPTH:
                # Sent by the function, so received on its port: counted there.
                out.rx_packets += 1
                out.rx_bytes += len(sent) - VNET_HDR_LEN
                out.drops[_TOO_DEEP] += 1
                if trace is not None:
                    trace.broken = _TOO_DEEP
                continue
            self._forward(out, (sent,), trace, depth + 1, via)

    def _journey(
        self,
        trace: Trace | None,
        port: SwitchPort,
        frame: bytes | bytearray,
        info: FrameInfo | None,
    ) -> Trace | None:
        """The trace a frame carries into a native function, if its journey is traced.

        A frame received on a real port starts a journey: `frame` and `info`
        are the frame as it came in.  A frame a function sent goes on with
        `trace`, if any (one it sent from a timer has none).
        """
        if port.kind is _FUNCTION or not isinstance(frame, bytes):
            # Only a real port's frame (bytes, never rewritten) starts one: the
            # trace compares it with the frame that leaves.
            return trace
        if info is None or not info.ip_version or info.fragment or info.l4 < 0:
            return None
        return Trace(port, frame, info)

    def _fuse(
        self,
        trace: Trace,
        out: SwitchPort,
        final: bytes | bytearray,
        dst_entry: MacEntry[SwitchPort] | None,
        nsh: NshHeader | None = None,
    ) -> None:
        """The traced packet leaves on a real port: install its fused entry if it can be."""
        trace.ended = True
        if trace.broken:
            self.fuse_refused[trace.broken] += 1
            return
        if any(not lease.valid for lease in trace.leases + trace.revokers):
            self.fuse_refused["lease-revoked"] += 1
            return
        if not all(lease.traced for lease in trace.leases):
            # A flow earns its entry with its second packet: a one-packet flow
            # (a DNS query, a probe) costs no fast-path memory.
            for lease in trace.leases:
                lease.traced = True
            self.fuse_refused["first-packet"] += 1
            return
        origin = trace.port
        guard = origin.guard
        if guard is not None and not fusable(trace.frame, trace.info):
            self.fuse_refused["port-security"] += 1
            return
        network = origin.network
        src_entry = None
        if network is not None:
            src_entry = network.macs.entries.get(trace.frame[ETH_SRC:ETH_TYPE])
        # A copy of the frame that leaves, once per flow: the entry keeps slices of it.
        fused = fuse(trace, out, bytes(final), dst_entry=dst_entry, src_entry=src_entry, nsh=nsh)
        if isinstance(fused, str):
            self.fuse_refused[fused] += 1
            return
        if guard is not None:
            fused.src_mac = trace.frame[ETH_SRC:ETH_TYPE]
        if trace.arrival is not None and self.steering is not None:
            arrivals = self.steering.arrival_fast
            if len(arrivals) >= self.max_fused:
                self.fuse_refused["table-full"] += 1
                return
            arrivals[trace.arrival] = fused
            fused.seen = self.now
            self.fused += 1
            on_revoke = on_revoke_remove(arrivals, trace.arrival, fused)
            for lease in {*fused.leases, *trace.revokers}:
                lease.on_revoke(on_revoke)
            return
        table = origin.fast
        if table is None:
            ingress = getattr(origin, "node_ifindex", 0)
            if self.kernel is not None and ingress in self.kernel.attached:
                table = origin.fast = KernelTable(self.kernel, ingress)
            else:
                table = origin.fast = {}
        if len(table) >= self.max_fused:
            self.fuse_refused["table-full"] += 1
            return
        key = trace.info[FLOW_START:FLOW_END]
        table[key] = fused
        fused.seen = self.now
        self.fused += 1
        hook = on_revoke_remove(table, key, fused)
        for lease in {*fused.leases, *trace.revokers}:
            lease.on_revoke(hook)

    def _fuse_switched(
        self,
        port: SwitchPort,
        out: SwitchPort,
        frame: bytes | bytearray,
        info: FrameInfo,
        dst_entry: MacEntry[SwitchPort],
    ) -> None:
        """A flow switched from one kernel-carried port to another: its later
        packets can go host to host in the kernel, unchanged (an identity entry).

        Python's own fast path gains nothing on plain switching (the entry would
        save one MAC lookup), so only where the kernel can carry both ends is an
        entry made, on the flow's first packet; its removal is any fused entry's
        (idle, a port or MAC that moves, a plan or security change).
        """
        kernel = self.kernel
        if kernel is None or getattr(out, "node_ifindex", 0) not in kernel.attached:
            return
        if not info.ip_version or info.fragment or info.l4 < 0 or not isinstance(frame, bytes):
            return
        table = port.fast
        if table is not None and info[FLOW_START:FLOW_END] in table:
            return  # a packet its entry did not carry (a FIN, say): it stays
        self._fuse(Trace(port, frame, info), out, frame, dst_entry)

    def expire_fused(self, now: float, idle: float) -> int:
        """Forget fused entries idle for `idle` seconds; returns how many."""
        limit = now - idle
        gone = 0
        for port in self.ports:
            table = port.fast
            if not table:
                continue
            stale = [key for key, entry in table.items() if entry.seen < limit]
            for key in stale:
                del table[key]
            gone += len(stale)
        if self.steering is not None:
            arrivals = self.steering.arrival_fast
            idle_arrivals = [key for key, entry in arrivals.items() if entry.seen < limit]
            for akey in idle_arrivals:
                del arrivals[akey]
            gone += len(idle_arrivals)
        return gone

    def fused_entries(self) -> int:
        arrivals = 0 if self.steering is None else len(self.steering.arrival_fast)
        return arrivals + sum(len(port.fast) for port in self.ports if port.fast)

    def flood(
        self,
        ingress: SwitchPort,
        network: Network[SwitchPort],
        frame: bytes | bytearray,
        trace: Trace | None,
        depth: int,
    ) -> None:
        """Send to every port of the network but the one the frame came in on.

        Native functions among them get it at once (`_through_function`), each
        a copy of its own: each may rewrite it.
        """
        network.floods += 1
        if trace is not None:
            trace.broken = "flood"
        sent = False
        # Split horizon: every node floods to every other itself, so what
        # came from one is not sent on to another.
        from_peer = ingress.kind is _UNDERLAY
        for out in network.ports:
            if out is not ingress and out.flooded and not (from_peer and out.kind is _UNDERLAY):
                if out.kind is _FUNCTION:
                    function = cast("FunctionPort", out)
                    self._through_function(function, bytearray(frame), trace, depth)
                else:
                    out.transmit(frame)
                sent = True
        if sent:
            ingress.forwarded += 1
        else:
            ingress.drops[_NO_PORTS] += 1
