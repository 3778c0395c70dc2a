"""The node's per-packet path: read a batch from a port, check, learn, forward.

This is the code every frame runs through, so it is written for CPython's
speed rather than for elegance: attribute lookups are hoisted out of the loop,
counters are plain integers, and the common case (a known unicast destination
on another port) costs one parse, two dict lookups and one write, plus one
flow-table lookup on ports that chains steer from.  Anything unusual (a
flood, a drop, a new address, the first packet of a steered flow) leaves the
loop's fast branch but never raises out of it: a bad frame is a counted drop
with a named reason.

The parse (`pktchain.packet.parse_frame`, about 0.7 µs) is also the ingress
check: a frame whose IPv4, IPv6, ARP or L4 header is inconsistent is dropped
under the codec's reason.  Other EtherTypes are switched as they are: a switch
does not judge protocols it does not speak.

Frames carry their `virtio_net_hdr` in front (`VNET_HDR_LEN` bytes), so the
Ethernet destination starts at offset 10 and the source at 16.
"""

from __future__ import annotations

import errno
import logging
import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

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
from pktchain.node.dataplane.ports import (
    ETH_DST,
    ETH_END,
    ETH_SRC,
    ETH_TYPE,
    DropReason,
    Port,
    PortKind,
)
from pktchain.node.dataplane.steering import Steering
from pktchain.node.dataplane.switch import (
    DEFAULT_AGING,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_NETWORK,
    MacTable,
    Network,
)
from pktchain.node.tun import VNET_HDR_LEN
from pktchain.packet.headers import VIRTIO_NET_HDR
from pktchain.packet.parse import FLOW_END, FLOW_START, FrameInfo, parse_frame

if TYPE_CHECKING:
    from pktchain.node.dataplane.steering import Flow, HopCounters
    from pktchain.node.dataplane.switch import MacEntry

log = logging.getLogger(__name__)

BATCH = 64
"""Frames read from one port before the loop looks at the others (fairness)."""

ZERO_MAC = bytes(6)

_RUNT = DropReason.RUNT.value
_BAD_SRC = DropReason.BAD_SRC_MAC.value
_SAME_PORT = DropReason.SAME_PORT.value
_NO_PORTS = DropReason.NO_PORTS.value
_SYN = 0x02
_SYN_ACK = 0x12
_FUNCTION = PortKind.FUNCTION
_TOO_DEEP = "function-depth"
_GSO_TYPE_AT = VIRTIO_NET_HDR.offset("gso_type")
_GSO_SIZE_AT = VIRTIO_NET_HDR.offset("gso_size")

MAX_DEPTH = 16
"""How many native functions one frame may cross within one call (a bound on
frames sent round in circles between functions)."""

DEFAULT_MAX_FUSED = 262_144
"""Fused fast-path entries per port, at most."""


def _once(frame: bytes) -> Callable[[], bytes]:
    """A `recv` that gives `frame`, then nothing."""
    frames = [frame]

    def recv() -> bytes:
        if not frames:
            raise BlockingIOError
        return frames.pop()

    return recv


def _ip_size(frame: bytes, info: FrameInfo) -> int:
    """The IP packet's size, or for a GSO frame the size of each segment it stands for."""
    if frame[_GSO_TYPE_AT]:
        # The virtio_net_hdr's fields are little-endian (its layout, VIRTIO_NET_HDR).
        gso_size = frame[_GSO_SIZE_AT] | frame[_GSO_SIZE_AT + 1] << 8
        return info.payload - info.l3 + gso_size
    return info.end - info.l3


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
    ) -> None:
        self.ports: list[Port] = []
        self.networks: dict[str, Network[Port]] = {}
        self.mac_aging = mac_aging
        self.mac_table_size = mac_table_size
        self.check_frames = check_frames
        self.steering: Steering | None = None
        self.now = 0.0
        self.depth = 0
        self.trace: Trace | None = None
        self.max_fused = DEFAULT_MAX_FUSED
        self.fast_hits = 0
        self.delivered = 0
        """Frames handed to native functions (their hosts count them here)."""
        self.fused = 0
        self.fuse_refused: Counter[str] = Counter()
        self.uncredited: list[FusedEntry] = []
        """Fused entries whose packets are not yet counted where they are read."""

    def network(self, name: str = DEFAULT_NETWORK) -> Network[Port]:
        """The network called `name`, created on first use."""
        network = self.networks.get(name)
        if network is None:
            table: MacTable[Port] = MacTable(self.mac_aging, self.mac_table_size)
            network = self.networks[name] = Network(name, table)
        return network

    def add_port(self, port: Port, network: str = DEFAULT_NETWORK) -> None:
        self.ports.append(port)
        port.network = self.network(network)
        port.network.ports.append(port)
        if port.kind is _FUNCTION and port.mac:
            # A native function's address is known from the start and never
            # ages out (a static entry): frames to it are not flooded.
            port.network.macs.learn(bytes.fromhex(port.mac.replace(":", "")), port, math.inf)

    def remove_port(self, port: Port) -> None:
        if self.steering is not None:
            self.steering.forget_port(port)
        self.ports.remove(port)
        if port.network is not None:
            port.network.ports.remove(port)
            port.network.macs.forget_port(port)

    def drain(self, port: Port) -> int:
        """Process up to `BATCH` frames waiting on `port`; returns how many were read."""
        return self._run(port, port.recv, BATCH)

    def inject(self, port: Port, frame: bytes) -> None:
        """A frame a native function sent from its interface `port`: process it now.

        Functions answer synchronously, so a packet crosses a chain of native
        functions within one call; the depth is bounded (`MAX_DEPTH`) against
        functions that send frames round in circles.
        """
        if self.depth >= MAX_DEPTH:
            port.drops[_TOO_DEEP] += 1
            trace = self.trace
            if trace is not None:
                trace.broken = _TOO_DEEP
            return
        self.depth += 1
        try:
            self._run(port, _once(frame), 1)
        finally:
            self.depth -= 1

    def _run(self, port: Port, recv: Callable[[], bytes], limit: int) -> int:
        """Read up to `limit` frames with `recv` and forward each; returns how many were read.

        A frame of a flow with a fused entry on this port takes the fast path
        (see fastpath.py); any other is checked, learned, steered, switched.
        """
        network = port.network
        if network is None:  # pragma: no cover - every added port has a network
            return 0
        macs = network.macs
        entries = macs.entries
        check = self.check_frames
        table = port.flows
        drops = port.drops
        now = self.now
        depth = self.depth
        uncredited = self.uncredited
        count = 0
        hits = 0
        while count < limit:
            try:
                frame = recv()
            except BlockingIOError:
                break
            except OSError as exc:
                # e.g. ENETDOWN while the host's interface is down: nothing to read.
                drops["rx-" + errno.errorcode.get(exc.errno or 0, "error").lower()] += 1
                break
            count += 1
            size = len(frame)
            port.rx_packets += 1
            port.rx_bytes += size - VNET_HDR_LEN
            if size < ETH_END:
                drops[_RUNT] += 1
                continue
            fast = port.fast  # entries are installed while a batch runs
            info = None
            if check or table is not None or fast is not None:
                info = parse_frame(frame, VNET_HDR_LEN)
                if info.error is not None:
                    if check:
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
                ):
                    # Counted on the entry; credit() hands the counts on.
                    if not fused.packets:
                        uncredited.append(fused)
                    fused.packets += 1
                    fused.bytes += size - VNET_HDR_LEN
                    fused.seen = now
                    if fused.identity:
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

            # A journey through native functions starts with the frame as it came
            # in (see fastpath.py); deeper down, it continues the current one.
            received = frame
            trace = self.trace if depth else None
            src = frame[ETH_SRC:ETH_TYPE]
            mac_entry = entries.get(src)
            known = mac_entry is not None and mac_entry.port is port
            if not known and (frame[ETH_SRC] & 1 or src == ZERO_MAC):
                drops[_BAD_SRC] += 1
                continue
            learn = True

            if table is not None and info is not None and info.ip_version:
                key = info[FLOW_START:FLOW_END]
                flow_entry = table.get(key)
                if self.steering is not None and (
                    flow_entry is None or (flow_entry.first and info.tcp_flags & _SYN_ACK == _SYN)
                ):
                    flow_entry = self.steering.classify(port, frame, info, key)
                if flow_entry is not None:
                    flow = flow_entry.flow
                    flow.seen = now
                    flow.packets += 1
                    if flow_entry.drop is not None:
                        drops[flow_entry.drop] += 1
                        continue
                    if known:
                        mac_entry.seen = now  # type: ignore[union-attr]
                    elif flow_entry.learn:
                        macs.learn(src, port, now)
                    learn = False  # done for this frame
                    hop = flow_entry.hop
                    if hop is not None:
                        hop.packets += 1
                        hop.bytes += size - VNET_HDR_LEN
                    if trace is not None:
                        trace.flows.append(flow)
                        if hop is not None:
                            trace.hops.append(hop)
                    if flow_entry.taps:
                        if trace is not None:
                            trace.broken = "tap"
                        tail = memoryview(frame)[ETH_SRC:]
                        for tap, tap_mac, tap_counters in flow_entry.taps:
                            tap.transmit_parts((frame[:ETH_DST] + tap_mac, tail), size)
                            tap_counters.packets += 1
                            tap_counters.bytes += size - VNET_HDR_LEN
                    out = flow_entry.out
                    if out is not None:
                        # The new destination goes out in front of the untouched
                        # rest of the frame: a 64 KB segment is not copied.
                        head = frame[:ETH_DST] + flow_entry.mac
                        if out.kind is _FUNCTION:
                            self._enter_function(flow, hop, port, received, info)
                        elif trace is not None:
                            self._fuse(trace, out, head + frame[ETH_SRC:], None)
                        out.transmit_parts((head, memoryview(frame)[ETH_SRC:]), size)
                        continue
                    restore = flow_entry.restore_from
                    if restore is not None and frame[ETH_DST:ETH_SRC] == restore:
                        # The last function handed the frame back with our rewrite
                        # in place (a bump in the wire): give it its destination back.
                        frame = frame[:ETH_DST] + flow_entry.restore_to + frame[ETH_SRC:]

            if learn:
                if known:
                    mac_entry.seen = now  # type: ignore[union-attr]
                else:
                    macs.learn(src, port, now)

            if not frame[ETH_DST] & 1:
                dst_entry = entries.get(frame[ETH_DST:ETH_SRC])
                if dst_entry is not None:
                    out = dst_entry.port
                    if out is port:
                        drops[_SAME_PORT] += 1
                        continue
                    if out.kind is _FUNCTION:
                        self._enter_function(None, None, port, received, info)
                    elif trace is not None:
                        self._fuse(trace, out, frame, dst_entry)
                    try:
                        out.send(frame)
                    except OSError as exc:
                        out.tx_failed(exc)
                        continue
                    out.tx_packets += 1
                    out.tx_bytes += size - VNET_HDR_LEN
                    continue
            if trace is not None:
                trace.broken = "flood"
            self.flood(port, network, frame)
        self.fast_hits += hits
        if uncredited:
            self.credit()
        return count

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

    def _enter_function(
        self,
        flow: Flow | None,
        hop: HopCounters | None,
        port: Port,
        frame: bytes,
        info: FrameInfo | None,
    ) -> None:
        """A frame is about to be handed to a native function: start or extend the trace.

        At depth 0 `port`, `frame` and `info` are where the journey starts: the
        frame as it came in from a real port.
        """
        if self.depth:
            trace = self.trace
            if trace is None:
                return
        else:
            self.trace = None
            if info is None or not info.ip_version or info.fragment or info.l4 < 0:
                return
            if port.kind is _FUNCTION:
                return  # frames functions send from timers: nothing to fuse
            trace = self.trace = Trace(port, frame, info)
            if flow is not None:
                trace.flows.append(flow)
            if hop is not None:
                trace.hops.append(hop)
        if flow is not None:
            if flow.lease is None:
                from pktchain.functions.sdk import FlowLease

                flow.lease = FlowLease()
            trace.revokers.append(flow.lease)

    def _fuse(
        self, trace: Trace, out: Port, final: bytes, dst_entry: MacEntry[Port] | None
    ) -> None:
        """The traced packet leaves on a real port: install its fused entry if it can be."""
        self.trace = None
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
        network = origin.network
        src_entry = None
        if network is not None:
            src_entry = network.macs.entries.get(trace.frame[ETH_SRC:ETH_TYPE])
        fused = fuse(trace, out, final, dst_entry=dst_entry, src_entry=src_entry)
        if isinstance(fused, str):
            self.fuse_refused[fused] += 1
            return
        table = origin.fast
        if table is None:
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
        return gone

    def fused_entries(self) -> int:
        return sum(len(port.fast) for port in self.ports if port.fast)

    def flood(self, ingress: Port, network: Network[Port], frame: bytes) -> None:
        """Send to every port of the network but the one the frame came in on."""
        network.floods += 1
        sent = False
        for out in network.ports:
            if out is not ingress and out.flooded:
                out.transmit(frame)
                sent = True
        if not sent:
            ingress.drops[_NO_PORTS] += 1
