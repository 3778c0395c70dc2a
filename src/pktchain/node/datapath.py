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

from pktchain.node.ports import DropReason, Port
from pktchain.node.steering import Steering
from pktchain.node.switch import (
    DEFAULT_AGING,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_NETWORK,
    MacTable,
    Network,
)
from pktchain.node.tun import VNET_HDR_LEN
from pktchain.packet.parse import parse_frame

log = logging.getLogger(__name__)

BATCH = 64
"""Frames read from one port before the loop looks at the others (fairness)."""

ETH_DST = VNET_HDR_LEN
ETH_SRC = VNET_HDR_LEN + 6
ETH_TYPE = VNET_HDR_LEN + 12
ETH_END = VNET_HDR_LEN + 14
ZERO_MAC = bytes(6)

_RUNT = DropReason.RUNT.value
_BAD_SRC = DropReason.BAD_SRC_MAC.value
_SAME_PORT = DropReason.SAME_PORT.value
_NO_PORTS = DropReason.NO_PORTS.value
_SYN = 0x02
_SYN_ACK = 0x12


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
        self.rx_errors = 0

    def network(self, name: str = DEFAULT_NETWORK) -> Network[Port]:
        """The network called `name`, created on first use."""
        network = self.networks.get(name)
        if network is None:
            table: MacTable[Port] = MacTable(self.mac_aging, self.mac_table_size)
            network = self.networks[name] = Network(name, table)
        return network

    def add_port(self, port: Port, network: str = DEFAULT_NETWORK) -> None:
        port.index = len(self.ports)
        self.ports.append(port)
        port.network = self.network(network)
        port.network.ports.append(port)

    def remove_port(self, port: Port) -> None:
        if self.steering is not None:
            self.steering.forget_port(port)
        self.ports.remove(port)
        for index, remaining in enumerate(self.ports):
            remaining.index = index
        if port.network is not None:
            port.network.ports.remove(port)
            port.network.macs.forget_port(port)

    def drain(self, port: Port) -> int:
        """Process up to `BATCH` frames waiting on `port`; returns how many were read."""
        recv = port.recv
        network = port.network
        if network is None:  # pragma: no cover - every added port has a network
            return 0
        macs = network.macs
        entries = macs.entries
        check = self.check_frames
        table = port.flows
        steering = self.steering
        drops = port.drops
        now = self.now
        count = 0
        while count < BATCH:
            try:
                frame = recv()
            except BlockingIOError:
                break
            except OSError as exc:
                # e.g. ENETDOWN while the host's interface is down: nothing to read.
                self.rx_errors += 1
                drops["rx-" + errno.errorcode.get(exc.errno or 0, "error").lower()] += 1
                break
            count += 1
            size = len(frame)
            port.rx_packets += 1
            port.rx_bytes += size - VNET_HDR_LEN
            if size < ETH_END:
                drops[_RUNT] += 1
                continue
            info = None
            if check or table is not None:
                info = parse_frame(frame, VNET_HDR_LEN)
                if info.error is not None:
                    if check:
                        drops[info.error.value] += 1
                        continue
                    info = None  # not checking: switch it, but it cannot be steered

            src = frame[ETH_SRC:ETH_TYPE]
            mac_entry = entries.get(src)
            known = mac_entry is not None and mac_entry.port is port
            if not known and (frame[ETH_SRC] & 1 or src == ZERO_MAC):
                drops[_BAD_SRC] += 1
                continue
            learn = True

            if table is not None and info is not None and info.ip_version:
                key = info[9:14]
                flow_entry = table.get(key)
                if steering is not None and (
                    flow_entry is None or (flow_entry.first and info.tcp_flags & _SYN_ACK == _SYN)
                ):
                    flow_entry = steering.classify(port, frame, info, key)
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
                    if flow_entry.taps:
                        tail = memoryview(frame)[ETH_SRC:]
                        for tap, tap_mac, tap_counters in flow_entry.taps:
                            tap.transmit_parts((frame[:ETH_DST] + tap_mac, tail), size)
                            tap_counters.packets += 1
                            tap_counters.bytes += size - VNET_HDR_LEN
                    out = flow_entry.out
                    if out is not None:
                        # The new destination goes out in front of the untouched
                        # rest of the frame: a 64 KB segment is not copied.
                        out.transmit_parts(
                            (frame[:ETH_DST] + flow_entry.mac, memoryview(frame)[ETH_SRC:]), size
                        )
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
                mac_entry = entries.get(frame[ETH_DST:ETH_SRC])
                if mac_entry is not None:
                    out = mac_entry.port
                    if out is port:
                        drops[_SAME_PORT] += 1
                        continue
                    try:
                        out.send(frame)
                    except OSError as exc:
                        out.tx_failed(exc)
                        continue
                    out.tx_packets += 1
                    out.tx_bytes += size - VNET_HDR_LEN
                    continue
            self.flood(port, network, frame)
        return count

    def flood(self, ingress: Port, network: Network[Port], frame: bytes) -> None:
        """Send to every port of the network but the one the frame came in on."""
        network.floods += 1
        sent = False
        for out in network.ports:
            if out is not ingress:
                out.transmit(frame)
                sent = True
        if not sent:
            ingress.drops[_NO_PORTS] += 1
