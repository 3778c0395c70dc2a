"""The node's Prometheus collectors over a datapath of memory ports, with real frames."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.router.vrrp import VrrpConfig
from pktchain.functions.sdk import FlowLeases, Function, Packet, Result, TableSize, forward
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, FunctionPort
from pktchain.node.metrics import DataplaneCollector, NodeState, router_metrics
from support.memports import H1_MAC, H2_MAC, MemoryPort, function_chain
from support.router import timers

VNET = bytes(10)


class Counting(Function):
    """A bump in the wire that counts what it sees and leases every flow to the fast path."""

    KIND = "counting"
    INTERFACES = ("ingress", "egress")
    COUNTERS: ClassVar[dict[str, str]] = {
        "seen": "packets the function saw",
        "big": "packets over 100 bytes",
    }

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.leases = FlowLeases(limit=8)
        self.broken = False

    def process(self, packet: Packet, now: float) -> Result:
        self.counters["seen"] += 1
        return forward(lease=self.leases.lease(packet.iface, now))  # one flow per test

    def tables(self) -> dict[str, TableSize]:
        if self.broken:
            raise RuntimeError("tables broke")
        return {"leases": TableSize(len(self.leases), self.leases.limit), "other": TableSize(3)}


def udp(sport: int = 1000, payload: bytes = b"q") -> bytes:
    frame = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
    return VNET + bytes(frame / UDP(sport=sport, dport=53) / payload)


def hosts_of(datapath: Datapath) -> list[FunctionHost]:
    return list(
        {id(p.owner): p.owner for p in datapath.ports if isinstance(p, FunctionPort)}.values()
    )


def scrape(collector: DataplaneCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample, by name, then by its labels (sorted)."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    found = [v for key, v in samples.get(name, {}).items() if labels.items() <= dict(key).items()]
    assert len(found) == 1, f"{name} {labels}: {found} in {samples.get(name)}"
    return float(found[0])


@pytest.fixture
def chain() -> tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector]:
    function = Counting()
    datapath, h1, h2 = function_chain([function])
    state = NodeState(datapath, datapath.steering, functions=lambda: hosts_of(datapath))
    return datapath, h1, h2, function, DataplaneCollector(state)


def test_port_hop_and_fast_path_counters_follow_the_frames(
    chain: tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector],
) -> None:
    datapath, h1, h2, function, collector = chain
    before = scrape(collector)
    n = 20
    for _ in range(n):
        h1.inbox.append(udp())
        datapath.drain(h1)
    assert len(h2.sent) == n
    after = scrape(collector)
    h1_labels = {"port": "h1", "network": "default", "kind": "tap"}
    rx = "pktchain_port_received_packets_total"
    assert value(after, rx, **h1_labels) - value(before, rx, **h1_labels) == n
    assert value(after, "pktchain_port_received_bytes_total", **h1_labels) == n * (
        len(udp()) - len(VNET)
    )
    assert value(after, "pktchain_port_sent_packets_total", port="h2") == n
    assert value(after, "pktchain_port_forwarded_packets_total", **h1_labels) == n
    # The first packet crossed the function; the lease fused the rest of the flow.
    hits = value(after, "pktchain_fastpath_hits_total")
    misses = value(after, "pktchain_fastpath_misses_total") - value(
        before, "pktchain_fastpath_misses_total"
    )
    assert hits == n - function.counters["seen"] > 0
    assert hits + misses == n
    assert value(after, "pktchain_fastpath_entries") >= 1
    assert value(after, "pktchain_fastpath_installed_total") >= 1
    hop = {"chain": "c", "group": "g0", "port_pair": "p0", "direction": "forward"}
    assert value(after, "pktchain_hop_packets_total", **hop) == n
    assert value(after, "pktchain_hop_bytes_total", **hop) == n * (len(udp()) - len(VNET))
    assert value(after, "pktchain_hop_flows_total", **hop) == 1
    assert value(after, "pktchain_steering_flows") == 1
    assert value(after, "pktchain_steering_flow_limit") == datapath.steering.max_flows  # type: ignore[union-attr]
    assert value(after, "pktchain_steering_events_total", event="classified") == 1
    assert value(after, "pktchain_mac_table_entries", network="default") >= 1
    assert value(after, "pktchain_mac_table_limit", network="default") == (
        datapath.network().macs.max_entries
    )


def test_drops_are_counted_by_reason_on_their_port(
    chain: tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector],
) -> None:
    datapath, h1, _h2, _function, collector = chain
    h1.inbox.extend([VNET + b"short", VNET + b"short", udp()[:40]])
    datapath.drain(h1)
    samples = scrape(collector)
    dropped = "pktchain_port_dropped_packets_total"
    assert value(samples, dropped, port="h1", reason="runt") == 2
    reasons = {dict(key)["reason"] for key in samples[dropped]}
    assert len(reasons) == 2  # the runts, and the cut IPv4 packet under its codec's reason
    assert value(samples, "pktchain_port_rate_limit_holds_total", port="h1") == 0


def test_a_function_shows_its_counters_their_meanings_verdicts_and_tables(
    chain: tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector],
) -> None:
    datapath, h1, _h2, _function, collector = chain
    for sport in (1, 2, 3):
        h1.inbox.append(udp(sport))
    datapath.drain(h1)
    samples = scrape(collector)
    labels = {"function": "f0", "kind": "counting"}
    assert value(samples, "pktchain_function_events_total", counter="seen", **labels) == 3
    assert value(samples, "pktchain_function_events_total", counter="big", **labels) == 0
    assert value(samples, "pktchain_function_verdicts_total", verdict="forward", **labels) == 3
    info = samples["pktchain_function_event_info"]
    assert {dict(k)["counter"]: dict(k)["description"] for k in info} == Counting.COUNTERS
    assert value(samples, "pktchain_function_table_entries", table="leases") == 1
    assert value(samples, "pktchain_function_table_limit", table="leases") == 8
    assert value(samples, "pktchain_function_table_entries", table="other") == 3
    assert not any(dict(k)["table"] == "other" for k in samples["pktchain_function_table_limit"])


def test_a_function_whose_tables_raise_is_counted_and_the_scrape_goes_on(
    chain: tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector],
) -> None:
    _datapath, _h1, _h2, function, collector = chain
    function.broken = True
    samples = scrape(collector)
    assert value(samples, "pktchain_function_errors_total", exception="RuntimeError") == 1
    assert "pktchain_function_table_entries" not in samples
    assert value(samples, "pktchain_port_received_packets_total", port="h2") == 1


def test_the_reading_runs_where_the_state_lives() -> None:
    datapath = Datapath()
    datapath.add_port(MemoryPort("h1", mac=H1_MAC))
    ran: list[int] = []
    loop_thread: dict[str, int] = {}

    def run(fn: Callable[[], Any]) -> Any:
        # A stand-in for the node's loop: the work is done in a thread of its own.
        result: list[Any] = []
        worker = threading.Thread(target=lambda: result.append(fn()))
        worker.start()
        worker.join(10)
        loop_thread["id"] = worker.ident or 0
        ran.append(1)
        return result[0]

    seen: list[int] = []

    def functions() -> list[FunctionHost]:
        seen.append(threading.get_ident())
        return []

    collector = DataplaneCollector(
        NodeState(datapath, functions=functions, node="n1", started=1.5), run=run
    )
    samples = scrape(collector)
    assert ran == [1]  # one trip to the loop per scrape
    assert seen == [loop_thread["id"]] and seen[0] != threading.get_ident()
    assert value(samples, "pktchain_node_info", node="n1") == 1
    assert value(samples, "pktchain_node_start_time_seconds") == 1.5
    assert "pktchain_steering_flows" not in samples  # no steering, no steering metrics


def vrrp_router() -> Router:
    """A router with NAT and one virtual router on its inside interface, priority 120."""
    return Router(
        RouterConfig(
            interfaces=(
                RouterInterface("inside", "02:00:00:00:01:01", IPv4Interface("10.0.0.2/24")),
                RouterInterface(
                    "outside", "02:00:00:00:02:01", IPv4Interface("198.51.100.2/24"), external=True
                ),
            ),
            nat=NatConfig("198.51.100.2", ("10.0.0.0/24",), port_seed=3),
            vrrp=(
                VrrpConfig(
                    52, "inside", (IPv4Address("10.0.0.1"),), priority=120, advert_interval_cs=5
                ),
            ),
        )
    )


def test_a_virtual_router_shows_its_state_priorities_and_transitions() -> None:
    router = vrrp_router()
    timers(router, 0.0)
    labels = {"function": "r1", "interface": "inside", "vrid": "52"}

    def states() -> dict[str, float]:
        families = {f.name: f for f in router_metrics("r1", router, None)}
        assert "pktchain_ha_sync_connected" not in families  # no pair
        return {s.labels["state"]: s.value for s in families["pktchain_vrrp_state"].samples}

    assert states() == {"initialize": 0.0, "backup": 1.0, "master": 0.0}
    timers(router, 5.0)  # no master heard: this one takes over
    assert states() == {"initialize": 0.0, "backup": 0.0, "master": 1.0}
    families = {f.name: f for f in router_metrics("r1", router, None)}
    (priority,) = families["pktchain_vrrp_priority"].samples
    assert priority.labels == labels and priority.value == 120
    (transitions,) = families["pktchain_vrrp_transitions"].samples
    assert transitions.value == 2
    tables = router.tables()
    assert set(tables) == {
        "hosts",
        "neighbours",
        "fragments",
        "leases",
        "nat-sessions",
        "nat-mappings",
    }
    assert tables["fragments"].limit == router.config.fragment_datagram_limit


def test_every_metric_is_documented_and_every_documented_metric_exists(
    chain: tuple[Datapath, MemoryPort, MemoryPort, Counting, DataplaneCollector],
) -> None:
    from support.paths import ROOT

    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(pktchain_[a-z_]+)`", doc))
    datapath, h1, _h2, _function, collector = chain
    h1.inbox.extend([udp(), VNET + b"short"])
    datapath.drain(h1)
    emitted = {f.name for f in collector.read()}
    emitted |= {f.name for f in router_metrics("r1", vrrp_router(), None)}
    suffixes = {"counter": "_total", "info": "_info"}
    for family in [*collector.read(), *router_metrics("r1", vrrp_router(), None)]:
        name = family.name + suffixes.get(family.type, "")
        assert name in documented, f"{name} is not in docs/metrics.md"
    sources = "".join(
        (ROOT / "src" / "pktchain" / path).read_text()
        for path in ("node/metrics.py", "api/metrics.py")
    )
    for name in documented:
        base = re.sub(r"_(total|info)$", "", name)
        assert f'"{base}"' in sources, f"docs/metrics.md names {name}, which nothing makes"
    assert emitted
