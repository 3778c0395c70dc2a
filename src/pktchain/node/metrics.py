"""The node's Prometheus metrics, read from its live state when they are scraped.

Nothing on the packet path counts for Prometheus: ports, the switch, the
fast path, the steering's hops and the functions keep their counters anyway
(docs/design.md, "Everything is counted where it happens, once"), and the
collectors here read them at scrape time and hand Prometheus its metric
families. The reading runs in the node's loop thread, where that state
lives and changes, as the API's status document does: `DataplaneCollector`
takes the function that runs work there (`EventLoop.submit` in the node),
so that a scrape sees every counter between two batches, never halfway
through one. docs/metrics.md lists every metric with its labels.

Counters that belong to something that goes away (a port detached, a
function removed) go with it: their series end, as a restarted process's
do, and ``rate()`` copes with both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.ports import PacketPort, SwitchPort

if TYPE_CHECKING:
    from pktchain.functions.router.function import Router
    from pktchain.node.dataplane.steering import Steering
    from pktchain.node.dataplane.underlay import Underlay
    from pktchain.node.ha import HaSync

__all__ = [
    "DataplaneCollector",
    "NodeState",
    "function_metrics",
    "port_metrics",
    "router_metrics",
    "server_metrics",
    "steering_metrics",
    "switch_metrics",
    "underlay_metrics",
]

T = TypeVar("T")

PORT_LABELS = ("port", "network", "kind")
"""Every port metric's labels: the port's name, its network and its kind
(tap, af_packet, function, underlay)."""

FUNCTION_LABELS = ("function", "kind")
"""Every function metric's labels: the function's name in the node and its kind."""

VRRP_LABELS = ("function", "interface", "vrid")


def _port_labels(port: SwitchPort) -> list[str]:
    network = port.network.name if port.network is not None else ""
    return [port.name, network, port.kind.value]


def port_metrics(ports: Iterable[SwitchPort]) -> Iterator[Metric]:
    """Per port: frames and bytes in and out, forwarded, dropped by reason, send
    errors, what the kernel dropped before the node read it, rate-limit holds."""
    ports = list(ports)
    received = CounterMetricFamily(
        "pktchain_port_received_packets",
        "Frames the port received (every one: forwarded, carried by the fast path or dropped).",
        labels=PORT_LABELS,
    )
    received_bytes = CounterMetricFamily(
        "pktchain_port_received_bytes",
        "Bytes of the frames the port received (Ethernet header included).",
        labels=PORT_LABELS,
    )
    sent = CounterMetricFamily(
        "pktchain_port_sent_packets", "Frames the node sent out of the port.", labels=PORT_LABELS
    )
    sent_bytes = CounterMetricFamily(
        "pktchain_port_sent_bytes",
        "Bytes of the frames sent out of the port (Ethernet header included).",
        labels=PORT_LABELS,
    )
    forwarded = CounterMetricFamily(
        "pktchain_port_forwarded_packets",
        "Frames received on the port that went on (to a port, a flood, a function, "
        "a chain's next hop).",
        labels=PORT_LABELS,
    )
    dropped = CounterMetricFamily(
        "pktchain_port_dropped_packets",
        "Frames received on the port and dropped, by reason (docs/node.md, Drop reasons).",
        labels=(*PORT_LABELS, "reason"),
    )
    send_errors = CounterMetricFamily(
        "pktchain_port_send_errors",
        "Frames the kernel refused to send out of the port, by errno name.",
        labels=(*PORT_LABELS, "error"),
    )
    kernel = CounterMetricFamily(
        "pktchain_port_kernel_dropped_packets",
        "Frames the kernel dropped on an AF_PACKET port's socket before the node read them.",
        labels=PORT_LABELS,
    )
    holds = CounterMetricFamily(
        "pktchain_port_rate_limit_holds",
        "Times a host port that stormed was left unread for a while (docs/node.md, Rate limits).",
        labels=PORT_LABELS,
    )
    info = InfoMetricFamily(
        "pktchain_port",
        "What each port is: where it sits and whether it is secured and policed.",
        labels=PORT_LABELS,
    )
    for port in ports:
        labels = _port_labels(port)
        received.add_metric(labels, port.rx_packets)
        received_bytes.add_metric(labels, port.rx_bytes)
        sent.add_metric(labels, port.tx_packets)
        sent_bytes.add_metric(labels, port.tx_bytes)
        forwarded.add_metric(labels, port.forwarded)
        for reason, count in sorted(port.drops.items()):
            dropped.add_metric([*labels, reason], count)
        for error, count in sorted(port.tx_errors.items()):
            send_errors.add_metric([*labels, error], count)
        if isinstance(port, PacketPort):
            kernel.add_metric(labels, port.read_kernel_drops())
        if port.policer is not None:
            holds.add_metric(labels, port.policer.holds)
        info.add_metric(
            labels,
            {
                "host": port.host or "",
                "netns": port.netns or "",
                "ifname": port.ifname,
                "mac": port.mac or "",
                "secured": str(port.guard is not None).lower(),
                "policed": str(port.policer is not None).lower(),
            },
        )
    yield from (received, received_bytes, sent, sent_bytes, forwarded, dropped, send_errors)
    yield from (kernel, holds, info)


def switch_metrics(datapath: Datapath) -> Iterator[Metric]:
    """Per network: its MAC table's size and limit, what it learned, and floods;
    and the fast path's entries, hits and misses."""
    entries = GaugeMetricFamily(
        "pktchain_mac_table_entries", "Addresses in the network's MAC table.", labels=["network"]
    )
    limit = GaugeMetricFamily(
        "pktchain_mac_table_limit",
        "The most addresses the network's MAC table holds (--mac-table-size).",
        labels=["network"],
    )
    learned = CounterMetricFamily(
        "pktchain_mac_learned", "Addresses the network's MAC table learned.", labels=["network"]
    )
    moved = CounterMetricFamily(
        "pktchain_mac_moves", "Addresses that moved to another port.", labels=["network"]
    )
    aged = CounterMetricFamily(
        "pktchain_mac_aged", "Addresses forgotten after the aging time.", labels=["network"]
    )
    full = CounterMetricFamily(
        "pktchain_mac_table_full",
        "Addresses not learned because the network's MAC table was full.",
        labels=["network"],
    )
    floods = CounterMetricFamily(
        "pktchain_floods",
        "Frames flooded to the network's ports (broadcast, multicast, unknown unicast).",
        labels=["network"],
    )
    for network in datapath.networks.values():
        macs = network.macs
        labels = [network.name]
        entries.add_metric(labels, len(macs.entries))
        limit.add_metric(labels, macs.max_entries)
        learned.add_metric(labels, macs.stats.learned)
        moved.add_metric(labels, macs.stats.moved)
        aged.add_metric(labels, macs.stats.aged)
        full.add_metric(labels, macs.stats.full)
        floods.add_metric(labels, network.floods)
    yield from (entries, limit, learned, moved, aged, full, floods)

    yield GaugeMetricFamily(
        "pktchain_fastpath_entries",
        "Fused fast-path entries installed now.",
        value=datapath.fused_entries(),
    )
    yield GaugeMetricFamily(
        "pktchain_fastpath_port_entry_limit",
        "The most fused entries one port holds.",
        value=datapath.max_fused,
    )
    yield CounterMetricFamily(
        "pktchain_fastpath_installed",
        "Fused fast-path entries installed.",
        value=datapath.fused,
    )
    yield CounterMetricFamily(
        "pktchain_fastpath_hits",
        "Frames that came in and that a fast path carried (Python's or the kernel's).",
        value=datapath.fast_hits,
    )
    kernel = datapath.kernel
    yield GaugeMetricFamily(
        "pktchain_fastpath_kernel_active",
        "1 when the kernel fast path carries established flows between veth ports.",
        value=int(kernel is not None),
    )
    yield GaugeMetricFamily(
        "pktchain_fastpath_kernel_entries",
        "Fused entries installed in the kernel fast path's map now.",
        value=0 if kernel is None else len(kernel.installed),
    )
    yield CounterMetricFamily(
        "pktchain_fastpath_kernel_hits",
        "Frames the kernel fast path carried (never read by the node; in fastpath_hits too).",
        value=0 if kernel is None else kernel.hit_packets,
    )
    yield CounterMetricFamily(
        "pktchain_fastpath_misses",
        "Frames that came in (on a port, from another node) and that the fast path did "
        "not carry: switched, steered, handed to functions, or dropped.",
        value=datapath.fast_misses,
    )
    refused = CounterMetricFamily(
        "pktchain_fastpath_refused",
        "Journeys that could have been fused and were not, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(datapath.fuse_refused.items()):
        refused.add_metric([reason], count)
    yield refused


def steering_metrics(steering: Steering) -> Iterator[Metric]:
    """The flow table's size and limit, what the steering did with flows, and
    packets and bytes per chain hop (port pair of a group of a chain, each way)."""
    yield GaugeMetricFamily(
        "pktchain_steering_flows",
        "Flows in the steering's flow table.",
        value=len(steering.flows),
    )
    yield GaugeMetricFamily(
        "pktchain_steering_flow_limit",
        "The most flows the steering's flow table holds (--max-flows).",
        value=steering.max_flows,
    )
    events = CounterMetricFamily(
        "pktchain_steering_events",
        "What the steering did: flows classified, unclassified, re-pinned, expired, "
        "evicted with the table full (table_full), path loops, flows joined from another "
        "node, packets switched while their flow waited for its payload (l7_pending).",
        labels=["event"],
    )
    for name, count in vars(steering.stats).items():
        events.add_metric([name], count)
    yield events
    hop_labels = ("chain", "group", "port_pair", "direction")
    packets = CounterMetricFamily(
        "pktchain_hop_packets",
        "Packets through one port pair of a chain's group, in one direction.",
        labels=hop_labels,
    )
    octets = CounterMetricFamily(
        "pktchain_hop_bytes",
        "Bytes through one port pair of a chain's group, in one direction.",
        labels=hop_labels,
    )
    flows = CounterMetricFamily(
        "pktchain_hop_flows",
        "Flows pinned to one port pair of a chain's group, in one direction.",
        labels=hop_labels,
    )
    for hop in steering.counters.values():
        group = hop.chain.groups[hop.group] if hop.group < len(hop.chain.groups) else None
        labels = [
            hop.chain.name or hop.chain.id,
            (group.name or group.id) if group is not None else str(hop.group),
            hop.pair.name or hop.pair.id,
            hop.direction.value,
        ]
        packets.add_metric(labels, hop.packets)
        octets.add_metric(labels, hop.bytes)
        flows.add_metric(labels, hop.flows)
    yield from (packets, octets, flows)


def function_metrics(hosts: Iterable[FunctionHost]) -> Iterator[Metric]:
    """Per native function: its counters (what it declared, and the drops the
    driver counted by reason), its verdicts, exceptions, and its tables' sizes."""
    events = CounterMetricFamily(
        "pktchain_function_events",
        "What a native function counted, by counter: those it declares (their meanings "
        "in pktchain_function_event_info and docs/functions/) and its drops by reason.",
        labels=(*FUNCTION_LABELS, "counter"),
    )
    described = InfoMetricFamily(
        "pktchain_function_event",
        "What each counter a kind of function declares counts.",
        labels=("kind", "counter"),
    )
    verdicts = CounterMetricFamily(
        "pktchain_function_verdicts",
        "Frames a native function decided on, by verdict (forward, drop, reply, punt).",
        labels=(*FUNCTION_LABELS, "verdict"),
    )
    errors = CounterMetricFamily(
        "pktchain_function_errors",
        "Exceptions a native function raised (each cost the frame at hand), by class name.",
        labels=(*FUNCTION_LABELS, "exception"),
    )
    entries = GaugeMetricFamily(
        "pktchain_function_table_entries",
        "Entries in one of a native function's tables (connections, flows, nat-sessions...).",
        labels=(*FUNCTION_LABELS, "table"),
    )
    limits = GaugeMetricFamily(
        "pktchain_function_table_limit",
        "The most entries one of a native function's tables holds, where a setting bounds it.",
        labels=(*FUNCTION_LABELS, "table"),
    )
    kinds_described: set[str] = set()
    for host in hosts:
        driver = host.driver
        if not isinstance(driver, SdkDriver):
            continue
        function = driver.function
        kind = function.kind()
        labels = [host.name, kind]
        tables = driver.tables()  # first: an exception it raises is among the errors below
        for counter, count in sorted(function.counters.items()):
            events.add_metric([*labels, counter], count)
        if kind not in kinds_described:
            kinds_described.add(kind)
            for counter, meaning in function.counter_descriptions().items():
                described.add_metric([kind, counter], {"description": meaning})
        for verdict, count in sorted(driver.verdicts.items()):
            verdicts.add_metric([*labels, verdict], count)
        for exception, count in sorted((driver.errors + host.errors).items()):
            errors.add_metric([*labels, exception], count)
        for table, size in sorted(tables.items()):
            entries.add_metric([*labels, table], size.entries)
            if size.limit is not None:
                limits.add_metric([*labels, table], size.limit)
    yield from (events, described, verdicts, errors, entries, limits)


VRRP_STATES = ("initialize", "backup", "master")


def router_metrics(name: str, router: Router, ha: HaSync | None) -> Iterator[Metric]:
    """The router's virtual routers (state, priorities, transitions) and its pair's sync."""
    state = GaugeMetricFamily(
        "pktchain_vrrp_state",
        "1 for the state a virtual router is in (initialize, backup, master), 0 for the others.",
        labels=(*VRRP_LABELS, "state"),
    )
    priority = GaugeMetricFamily(
        "pktchain_vrrp_priority", "A virtual router's priority as configured.", labels=VRRP_LABELS
    )
    effective = GaugeMetricFamily(
        "pktchain_vrrp_effective_priority",
        "The priority a virtual router advertises: as configured, less its failed trackers.",
        labels=VRRP_LABELS,
    )
    transitions = CounterMetricFamily(
        "pktchain_vrrp_transitions",
        "State changes of a virtual router.",
        labels=VRRP_LABELS,
    )
    for row in router.vrrp_status():
        labels = [name, str(row["interface"]), str(row["vrid"])]
        for value in VRRP_STATES:
            state.add_metric([*labels, value], 1.0 if row["state"] == value else 0.0)
        priority.add_metric(labels, row["priority"])
        effective.add_metric(labels, row["effective_priority"])
        transitions.add_metric(labels, row["transitions"])
    yield from (state, priority, effective, transitions)
    if ha is None:
        return
    status = ha.status()
    connected = GaugeMetricFamily(
        "pktchain_ha_sync_connected",
        "1 while the router pair's state sync has its connection open.",
        labels=["function"],
    )
    connected.add_metric([name], 1.0 if status["connected"] else 0.0)
    role = GaugeMetricFamily(
        "pktchain_ha_role",
        "1 for the role the node's router plays in its pair (master, backup), 0 for the other.",
        labels=["function", "role"],
    )
    for value in ("master", "backup"):
        role.add_metric([name, value], 1.0 if status["role"] == value else 0.0)
    takeovers = CounterMetricFamily(
        "pktchain_ha_takeovers",
        "Times the backup router took over its master's sessions and hosts.",
        labels=["function"],
    )
    takeovers.add_metric([name], status["takeovers"])
    yield from (connected, role, takeovers)


@dataclass
class NodeState:
    """What the collector reads, each part optional (a bare datapath in tests)."""

    datapath: Datapath
    steering: Steering | None = None
    functions: Callable[[], Iterable[FunctionHost]] = lambda: ()
    router: Callable[[], tuple[str, Router, HaSync | None] | None] = lambda: None
    underlay: Callable[[], Underlay | None] = lambda: None
    node: str = ""
    started: float = 0.0
    servers: Callable[[], dict[str, dict[str, int]]] = field(default=lambda: {})


def _identity(fn: Callable[[], T]) -> T:
    return fn()


class DataplaneCollector(Collector):
    """A Prometheus collector of a node's dataplane, read at scrape time in the
    thread `run` runs its work in (the node's loop: `EventLoop.submit`)."""

    def __init__(
        self, state: NodeState, run: Callable[[Callable[[], Any]], Any] = _identity
    ) -> None:
        self.state = state
        self._run = run

    def describe(self) -> Iterable[Metric]:
        return ()  # what it holds changes with the node: nothing is registered ahead

    def collect(self) -> Iterable[Metric]:
        metrics: list[Metric] = self._run(lambda: list(self.read()))
        return metrics

    def read(self) -> Iterator[Metric]:
        """Every family, from the state as it is now (in the state's own thread)."""
        state = self.state
        datapath = state.datapath
        datapath.kernel_credit()  # what the kernel carried, up to now, before any count is read
        if state.node:
            info = InfoMetricFamily("pktchain_node", "The node this process runs.")
            info.add_metric([], {"node": state.node})
            yield info
            yield GaugeMetricFamily(
                "pktchain_node_start_time_seconds",
                "When the node started, in seconds since the Unix epoch.",
                value=state.started,
            )
        yield from port_metrics(datapath.ports)
        yield from switch_metrics(datapath)
        if state.steering is not None:
            yield from steering_metrics(state.steering)
        yield from function_metrics(state.functions())
        router = state.router()
        if router is not None:
            yield from router_metrics(*router)
        underlay = state.underlay()
        if underlay is not None:
            yield from underlay_metrics(underlay)
        yield from server_metrics(state.servers())


def underlay_metrics(underlay: Underlay) -> Iterator[Metric]:
    """This node's end of the underlay: peers alive, hellos, datagrams, drops."""
    alive = GaugeMetricFamily(
        "pktchain_underlay_peer_up",
        "1 while another node of the cluster is heard on the underlay, 0 once silent.",
        labels=["peer"],
    )
    for name, peer in sorted(underlay.peers.items()):
        alive.add_metric([name], 1.0 if peer.alive else 0.0)
    yield alive
    yield CounterMetricFamily(
        "pktchain_underlay_received_packets",
        "Datagrams received on the underlay.",
        value=underlay.rx_packets,
    )
    yield CounterMetricFamily(
        "pktchain_underlay_received_bytes",
        "Bytes of the datagrams received on the underlay.",
        value=underlay.rx_bytes,
    )
    yield CounterMetricFamily(
        "pktchain_underlay_kernel_dropped_packets",
        "Datagrams the kernel dropped on the underlay's socket before the node read them.",
        value=underlay.kernel_drops(),
    )
    dropped = CounterMetricFamily(
        "pktchain_underlay_dropped_packets",
        "Datagrams received on the underlay and dropped, by reason.",
        labels=["reason"],
    )
    for reason, count in sorted(underlay.drops.items()):
        dropped.add_metric([reason], count)
    yield dropped


def server_metrics(servers: dict[str, dict[str, int]]) -> Iterator[Metric]:
    """What the node's servers (the API, the messenger) turned away, by server and counter."""
    family = CounterMetricFamily(
        "pktchain_server_events",
        "Connections and requests of the node's servers (api, messenger), by counter "
        "(connections.opened, connections.refused, requests.timed_out...).",
        labels=["server", "counter"],
    )
    for server, counters in sorted(servers.items()):
        for counter, count in sorted(counters.items()):
            family.add_metric([server, counter], count)
    yield family
