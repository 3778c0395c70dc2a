"""The node's per-packet path: read a batch from a port, check, learn, forward.

This is the code every frame runs through, so it is written for CPython's
speed rather than for elegance: attribute lookups are hoisted out of the loop,
counters are plain integers, and the common case (a known unicast destination
on another port) costs one validity check, two dict lookups and one write.
Anything unusual (a flood, a drop, a new address) leaves the loop's fast branch
but never raises out of it: a bad frame is a counted drop with a named reason.

Frames carry their `virtio_net_hdr` in front (`VNET_HDR_LEN` bytes), so the
Ethernet destination starts at offset 10 and the source at 16.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from pktchain.node.ports import DropReason, Port
from pktchain.node.switch import MacTable
from pktchain.node.tun import VNET_HDR_LEN

log = logging.getLogger(__name__)

BATCH = 64
"""Frames read from one port before the loop looks at the others (fairness)."""

ETH_DST = VNET_HDR_LEN
ETH_SRC = VNET_HDR_LEN + 6
ETH_TYPE = VNET_HDR_LEN + 12
ETH_END = VNET_HDR_LEN + 14
ZERO_MAC = bytes(6)

FrameCheck = Callable[[bytes], str | None]
"""Returns None for a frame fit to forward, else the reason it is malformed."""

_RUNT = DropReason.RUNT.value
_BAD_SRC = DropReason.BAD_SRC_MAC.value
_SAME_PORT = DropReason.SAME_PORT.value
_NO_PORTS = DropReason.NO_PORTS.value


class Datapath:
    """Learning-switch forwarding between the node's ports."""

    def __init__(self, macs: MacTable[Port], check: FrameCheck) -> None:
        self.ports: list[Port] = []
        self.macs = macs
        self.check = check
        self.now = 0.0
        self.floods = 0
        self.rx_errors = 0

    def add_port(self, port: Port) -> None:
        port.index = len(self.ports)
        self.ports.append(port)

    def remove_port(self, port: Port) -> None:
        self.ports.remove(port)
        for index, remaining in enumerate(self.ports):
            remaining.index = index
        self.macs.forget_port(port)

    def drain(self, port: Port) -> int:
        """Process up to `BATCH` frames waiting on `port`; returns how many were read."""
        recv = port.recv
        entries = self.macs.entries
        check = self.check
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
            reason = check(frame)
            if reason is not None:
                drops[reason] += 1
                continue

            src = frame[ETH_SRC:ETH_TYPE]
            entry = entries.get(src)
            if entry is not None and entry.port is port:
                entry.seen = now
            elif frame[ETH_SRC] & 1 or src == ZERO_MAC:
                drops[_BAD_SRC] += 1
                continue
            else:
                self.macs.learn(src, port, now)

            if not frame[ETH_DST] & 1:
                entry = entries.get(frame[ETH_DST:ETH_SRC])
                if entry is not None:
                    out = entry.port
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
            self.flood(port, frame)
        return count

    def flood(self, ingress: Port, frame: bytes) -> None:
        """Send to every port but the one the frame came in on."""
        self.floods += 1
        sent = False
        for out in self.ports:
            if out is not ingress:
                out.transmit(frame)
                sent = True
        if not sent:
            ingress.drops[_NO_PORTS] += 1
