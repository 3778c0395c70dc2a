"""Flow monitoring: per-flow counters, top talkers and IPFIX-style records of ended flows.

:class:`FlowMonitor` is a bump in the wire that forwards every packet and keeps
one entry per bidirectional flow (RFC 5103 biflow: the *initiator* is the
sender of the first packet seen, or of the SYN when the first packet seen is a
SYN-ACK): packets, octets (IP header and payload, as IPFIX octetDeltaCount) and
TCP control bits per direction, first and last seen. It forwards each flow with
a flow lease, so after its first packet the node's fast path carries the flow
and counts it on the lease; the monitor adds those counts to what it saw itself
and judges idleness by the lease's last-seen time. That is why it is nearly
free on the fast path. TCP SYN, FIN and RST always come to it, so it sees every
flow begin and end.

A flow is expired, and a record exported, for the reasons of RFC 5470 §5.1.1
with the flowEndReason codes of RFC 5102 §5.11.3 (now the IANA IPFIX registry,
RFC 7012): idle for ``idle_timeout`` (1), ``active_timeout`` since its last
report (2: a long flow is reported periodically and goes on), its end detected
(3: TCP FIN seen both ways, or RST; the record waits ``end_wait`` seconds so
that the last ACK is counted in it, not in a stray one-packet flow), forced at
shutdown by :meth:`FlowMonitor.end_all` (4), or evicted from a full table (5).

Records are dictionaries named after IPFIX information elements; the monitor
writes nothing: the driver takes them with :meth:`FlowMonitor.take_records`
and writes them as JSON lines.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

from pktchain.functions.sdk import (
    Deadlines,
    FlowLease,
    Function,
    Packet,
    Result,
    TableSize,
    forward,
    observed_flow,
)
from pktchain.functions.sdk.schema import check
from pktchain.packet.address import format_ip
from pktchain.packet.flow import FlowKey
from pktchain.packet.headers import IpProto, TcpFlag

__all__ = ["FlowEndReason", "FlowMonitor", "FlowMonitorConfig"]

_TCP = int(IpProto.TCP)
_PORTED = frozenset((_TCP, int(IpProto.UDP)))
_FIN = int(TcpFlag.FIN)
_SYN = int(TcpFlag.SYN)
_RST = int(TcpFlag.RST)
_ACK = int(TcpFlag.ACK)

EVICTION_SCAN = 16
"""When the table is full, the oldest this many flows are looked at and the one
idle longest is evicted: bounded work per new flow, whatever the table size."""


def _flag_names(bits: int) -> str:
    """TCP control bits as names, ``SYN|ACK``; empty for none."""
    return "|".join(flag.name or "" for flag in TcpFlag if bits & flag)


class FlowEndReason(IntEnum):
    """IPFIX flowEndReason (IE 136), RFC 5102 §5.11.3; the causes are RFC 5470 §5.1.1."""

    IDLE_TIMEOUT = 1
    ACTIVE_TIMEOUT = 2
    END_OF_FLOW = 3
    FORCED_END = 4
    LACK_OF_RESOURCES = 5


@dataclass(frozen=True, slots=True)
class FlowMonitorConfig:
    """Timeouts (seconds, in the unit of ``now``), table bounds and the top-talkers size."""

    idle_timeout: float = field(
        default=15.0,
        metadata=check(
            minimum=0.1,
            help="seconds without a packet after which a flow is exported and forgotten",
        ),
    )
    active_timeout: float = field(
        default=60.0,
        metadata=check(
            minimum=1.0,
            help="seconds between two reports of a flow that goes on (deltas since its last "
            "report)",
        ),
    )
    end_wait: float = field(
        default=2.0,
        metadata=check(
            minimum=0.0,
            maximum=60.0,
            help="seconds to wait after TCP FIN both ways or RST (for the last ACK) before "
            "exporting",
        ),
    )
    max_flows: int = field(
        default=65536,
        metadata=check(
            minimum=1, help="flows kept at once; a new flow beyond it evicts one (flowEndReason 5)"
        ),
    )
    max_records: int = field(
        default=65536,
        metadata=check(
            minimum=1,
            help="records kept until the driver takes them; beyond it the oldest are lost "
            "(counted)",
        ),
    )
    top: int = field(
        default=10,
        metadata=check(
            minimum=0, maximum=1000, help="how many flows and sources status() lists as top talkers"
        ),
    )


class _Flow:
    """One bidirectional flow: index 0 is the initiator's direction, 1 the responder's."""

    __slots__ = (
        "ended_at",
        "fin",
        "flags",
        "key",
        "l2",
        "last",
        "leases",
        "octets",
        "packets",
        "reported_at",
        "sent_octets",
        "sent_packets",
        "start",
    )

    def __init__(self, key: FlowKey, now: float) -> None:
        self.key = key
        self.start = now
        self.last = now
        self.reported_at = now
        self.ended_at: float | None = None
        self.packets = [0, 0]
        """Packets seen by the monitor itself, plus those of leases it replaced."""
        self.octets = [0, 0]
        self.flags = [0, 0]
        self.fin = [False, False]
        self.leases: list[FlowLease | None] = [None, None]
        self.l2 = [0, 0]
        """Link-layer header length per direction: the fast path counts frame bytes."""
        self.sent_packets = [0, 0]
        """Totals at the last report: a record carries the deltas since."""
        self.sent_octets = [0, 0]

    def total_packets(self, way: int) -> int:
        lease = self.leases[way]
        return self.packets[way] + (lease.packets if lease is not None else 0)

    def total_octets(self, way: int) -> int:
        lease = self.leases[way]
        if lease is None:
            return self.octets[way]
        # The node counts whole frames on the lease; IPFIX octets start at the IP header.
        return self.octets[way] + lease.bytes - lease.packets * self.l2[way]

    def activity(self) -> float:
        """When the flow last had a packet, on the slow path or the fast path."""
        last = self.last
        for lease in self.leases:
            if lease is not None and lease.seen > last:
                last = lease.seen
        return last

    def revoke(self) -> None:
        for lease in self.leases:
            if lease is not None:
                lease.revoke()


class FlowMonitor(Function[FlowMonitorConfig]):
    """Counts flows in both directions and exports a record when each one ends.

    Between the driver and the monitor: :meth:`take_records` hands over the
    records exported so far (once each), :meth:`end_all` exports every flow
    still in the table (forced end, e.g. at shutdown), and ``clock_offset`` is
    added to ``now`` for the timestamps in records (set it to
    ``time.time() - time.monotonic()`` when ``now`` is monotonic time, so
    that flowStartMilliseconds is time since the Unix epoch as IPFIX wants).
    """

    KIND = "flow-monitor"
    Config = FlowMonitorConfig
    LIVE = True
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "packets": "IP packets the monitor saw itself (those the fast path carried are "
        "counted on the flows' leases)",
        "flows": "flows created",
        "records": "records exported",
        "records-lost": "records dropped unread (max_records)",
        "idle-timeout": "records of flows idle for idle_timeout (flowEndReason 1)",
        "active-timeout": "reports of flows that went on for active_timeout (flowEndReason 2)",
        "end-of-flow": "records of flows that ended: TCP FIN both ways, or RST (flowEndReason 3)",
        "forced-end": "records of flows still open at shutdown (flowEndReason 4)",
        "lack-of-resources": "records of flows evicted from a full table (flowEndReason 5)",
        "not-ip": "frames that are not IP, forwarded without a flow",
        "malformed": "frames that do not parse, forwarded without a flow",
        "unknown-interface": "frames on an interface it does not have, refused by the driver",
    }

    def __init__(self, config: FlowMonitorConfig | None = None) -> None:
        super().__init__(config)
        self.clock_offset = 0.0
        self._flows: dict[FlowKey, _Flow] = {}
        self._deadlines: Deadlines[FlowKey] = Deadlines()
        self._records: deque[dict[str, Any]] = deque(maxlen=self.config.max_records)

    # -- packets ---------------------------------------------------------------
    def process(self, packet: Packet, now: float) -> Result:
        out = self.peer(packet.iface)
        key = observed_flow(packet, self.counters)
        if key is None:
            return forward(out)  # observed, not counted in a flow
        info = packet.info
        self.counters["packets"] += 1
        flags = info.tcp_flags if info.proto == _TCP else 0
        canonical = key.canonical()
        flow = self._flows.get(canonical)
        if flow is not None and flow.ended_at is not None and flags & (_SYN | _ACK) == _SYN:
            # A new connection on the same 5-tuple (RFC 9293 §3.10.7.4 allows a
            # SYN in TIME-WAIT): the old one is over.
            self._export(flow, FlowEndReason.END_OF_FLOW)
            self._remove(canonical, flow)
            flow = None
        if flow is None:
            # A SYN-ACK seen first: its receiver sent the SYN and is the initiator.
            initiator = key.reverse() if flags & (_SYN | _ACK) == _SYN | _ACK else key
            flow = self._create(canonical, initiator, now)
        way = 0 if key == flow.key else 1
        flow.packets[way] += 1
        flow.octets[way] += info.end - info.l3
        flow.l2[way] = info.l3 - info.l2 if info.l2 >= 0 else 0
        flow.flags[way] |= flags
        flow.last = now
        if flags & (_FIN | _RST):
            if flags & _FIN:
                flow.fin[way] = True
            if flow.ended_at is None and (flags & _RST or all(flow.fin)):
                flow.ended_at = now
                self._schedule(canonical, flow)
        if info.fragment:
            return forward(out)  # the node never caches fragments
        return forward(out, lease=self._lease(flow, way))

    def _lease(self, flow: _Flow, way: int) -> FlowLease:
        lease = flow.leases[way]
        if lease is not None and lease.valid:
            return lease
        if lease is not None:
            # Revoked by someone else: keep what it counted.
            flow.packets[way] += lease.packets
            flow.octets[way] += lease.bytes - lease.packets * flow.l2[way]
        lease = flow.leases[way] = FlowLease()
        return lease

    def _create(self, canonical: FlowKey, initiator: FlowKey, now: float) -> _Flow:
        flows = self._flows
        if len(flows) >= self.config.max_flows:
            self._evict()
        flow = flows[canonical] = _Flow(initiator, now)
        self.counters["flows"] += 1
        self._schedule(canonical, flow)
        return flow

    def _evict(self) -> None:
        """Make room for one flow: of the oldest few, the one idle longest goes."""
        oldest = itertools.islice(self._flows.items(), EVICTION_SCAN)
        canonical, flow = min(oldest, key=lambda item: item[1].activity())
        self._export(flow, FlowEndReason.LACK_OF_RESOURCES)
        self._remove(canonical, flow)

    def _remove(self, canonical: FlowKey, flow: _Flow) -> None:
        del self._flows[canonical]
        self._deadlines.discard(canonical)
        # Later packets must come back here and start a new flow, not be counted
        # on a lease nobody reads.
        flow.revoke()

    # -- timers ----------------------------------------------------------------
    def _due(self, flow: _Flow) -> float:
        config = self.config
        if flow.ended_at is not None:
            return flow.ended_at + config.end_wait
        return min(flow.activity() + config.idle_timeout, flow.reported_at + config.active_timeout)

    def _schedule(self, canonical: FlowKey, flow: _Flow) -> None:
        self._deadlines.set(canonical, self._due(flow))

    def next_deadline(self) -> float | None:
        return self._deadlines.next()

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Export the flows that ended or timed out; report long ones."""
        flows = self._flows
        config = self.config
        for canonical in self._deadlines.pop_due(now):
            flow = flows[canonical]
            if flow.ended_at is not None:
                if now >= flow.ended_at + config.end_wait:
                    self._export(flow, FlowEndReason.END_OF_FLOW)
                    self._remove(canonical, flow)
                    continue
            elif now - flow.activity() >= config.idle_timeout:
                self._export(flow, FlowEndReason.IDLE_TIMEOUT)
                self._remove(canonical, flow)
                continue
            elif now - flow.reported_at >= config.active_timeout:
                self._export(flow, FlowEndReason.ACTIVE_TIMEOUT)
                flow.reported_at = now
            self._schedule(canonical, flow)  # not due yet: the fast path carried it on
        return []

    def stop(self, now: float) -> None:
        """Export every flow still open (forced end), as at shutdown."""
        self.end_all()

    def end_all(self) -> int:
        """Export every flow in the table as forced to end (flowEndReason 4); how many."""
        flows, self._flows = self._flows, {}
        self._deadlines.clear()
        for flow in flows.values():
            self._export(flow, FlowEndReason.FORCED_END)
            flow.revoke()
        return len(flows)

    # -- records ---------------------------------------------------------------
    def take_records(self) -> list[dict[str, Any]]:
        """The records exported since the last call, oldest first."""
        records = list(self._records)
        self._records.clear()
        return records

    def _export(self, flow: _Flow, reason: FlowEndReason) -> None:
        records = self._records
        if len(records) == records.maxlen:
            self.counters["records-lost"] += 1
        records.append(self._record(flow, reason))
        self.counters["records"] += 1
        self.counters[reason.name.lower().replace("_", "-")] += 1

    def _record(self, flow: _Flow, reason: FlowEndReason) -> dict[str, Any]:
        """A flow as an IPFIX-style record; counts are deltas since its last report.

        Names are IPFIX information elements (IANA registry, RFC 7012), the
        responder's direction with RFC 5103's ``reverse`` prefix. The delta
        counters are taken as reported: a later record of the same flow counts
        from here.
        """
        key = flow.key
        family = "IPv4" if len(key.src) == 4 else "IPv6"
        record: dict[str, Any] = {
            f"source{family}Address": format_ip(key.src),
            f"destination{family}Address": format_ip(key.dst),
            "protocolIdentifier": key.proto,
        }
        if key.proto in _PORTED:
            record["sourceTransportPort"] = key.sport
            record["destinationTransportPort"] = key.dport
        start = self._ms(flow.start)
        end = self._ms(flow.activity())
        record["flowStartMilliseconds"] = start
        record["flowEndMilliseconds"] = end
        record["flowDurationMilliseconds"] = end - start
        for way, prefix in ((0, ""), (1, "reverse")):
            packets, octets = flow.total_packets(way), flow.total_octets(way)
            names = ("PacketDeltaCount", "OctetDeltaCount", "PacketTotalCount", "OctetTotalCount")
            values = (
                packets - flow.sent_packets[way],
                octets - flow.sent_octets[way],
                packets,
                octets,
            )
            for name, value in zip(names, values, strict=True):
                record[prefix + name if prefix else name[0].lower() + name[1:]] = value
            flow.sent_packets[way], flow.sent_octets[way] = packets, octets
        if key.proto == _TCP:
            record["tcpControlBits"] = flow.flags[0]
            record["reverseTcpControlBits"] = flow.flags[1]
        record["flowEndReason"] = int(reason)
        return record

    def _ms(self, when: float) -> int:
        return round((when + self.clock_offset) * 1000)

    # -- configuration and status ------------------------------------------------
    def apply_config(self, config: FlowMonitorConfig) -> None:
        """New timeouts apply to every flow; a smaller table evicts the surplus."""
        self.config = config
        while len(self._flows) > config.max_flows:
            self._evict()
        if self._records.maxlen != config.max_records:
            self._records = deque(self._records, maxlen=config.max_records)
        self._deadlines.clear()
        for canonical, flow in self._flows.items():
            self._schedule(canonical, flow)

    def flows(self) -> list[dict[str, Any]]:
        """Every flow in the table, as a record would show it now (without reporting it)."""
        return [self._snapshot(flow) for flow in self._flows.values()]

    def _snapshot(self, flow: _Flow) -> dict[str, Any]:
        key = flow.key
        return {
            "flow": str(key),
            "packets": flow.total_packets(0) + flow.total_packets(1),
            "octets": flow.total_octets(0) + flow.total_octets(1),
            "start": flow.start,
            "last": flow.activity(),
            "duration": round(flow.activity() - flow.start, 3),
            "tcp_flags": [_flag_names(f) for f in flow.flags] if key.proto == _TCP else None,
            "ended": flow.ended_at is not None,
        }

    def top_flows(self, n: int | None = None) -> list[dict[str, Any]]:
        """The `n` flows (default ``config.top``) with the most octets, both ways."""
        n = self.config.top if n is None else n
        flows = heapq.nlargest(
            n, self._flows.values(), key=lambda f: f.total_octets(0) + f.total_octets(1)
        )
        return [self._snapshot(flow) for flow in flows]

    def top_sources(self, n: int | None = None) -> list[dict[str, Any]]:
        """The `n` addresses that sent the most octets in the flows of the table."""
        n = self.config.top if n is None else n
        octets: dict[bytes, int] = {}
        packets: dict[bytes, int] = {}
        for flow in self._flows.values():
            for way, source in ((0, flow.key.src), (1, flow.key.dst)):
                octets[source] = octets.get(source, 0) + flow.total_octets(way)
                packets[source] = packets.get(source, 0) + flow.total_packets(way)
        best = heapq.nlargest(n, octets.items(), key=lambda item: item[1])
        return [
            {"source": format_ip(source), "octets": count, "packets": packets[source]}
            for source, count in best
        ]

    def tables(self) -> dict[str, TableSize]:
        config = self.config
        return {
            "flows": TableSize(len(self._flows), config.max_flows),
            "records": TableSize(len(self._records), config.max_records),
        }

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["flows"] = len(self._flows)
        status["records_pending"] = len(self._records)
        status["top_flows"] = self.top_flows()
        status["top_sources"] = self.top_sources()
        return status
