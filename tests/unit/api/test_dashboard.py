"""The dashboard's routes and feed over a bare model: the page is public, its data is
not; the chains as the page draws them; the stream's events in order, with a slow
follower's losses counted.

The stream itself (an endless response) is read over a real server in
tests/integration/test_dashboard.py; here `LiveFeed.stream` is driven directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend
from pktchain.api.dashboard import Dashboard, LiveFeed, chain_graphs
from pktchain.api.dashboard.routes import PAGE_HEADERS, page_files
from pktchain.logs import EventFeed, event
from pktchain.sfc.model import FlowClassifier, Port, PortChain, PortPair, PortPairGroup, SfcModel

TOKEN = "dashboard-token"
DATA = ("/v2.0/pktchain/dashboard", "/v2.0/pktchain/dashboard/stream")


@pytest.fixture
def model() -> SfcModel:
    """The networking-sfc demo's chain: PC1 = [PG1 (PP1, PP2), PG2 (PP3)], FC_demo."""
    model = SfcModel()
    ports = {}
    for index, name in enumerate(
        (
            "source_vm:eth0",
            "dest_vm:eth0",
            *(f"vm{n}:{s}" for n in (1, 2, 3) for s in ("in", "out")),
        )
    ):
        ports[name] = model.create(
            Port,
            name=name,
            node_port=name,
            device_id=name.partition(":")[0],
            mac_address=f"02:00:00:00:00:{index + 1:02x}",
        ).id
    pairs = [
        model.create(
            PortPair, name=f"PP{n}", ingress=ports[f"vm{n}:in"], egress=ports[f"vm{n}:out"]
        ).id
        for n in (1, 2, 3)
    ]
    pg1 = model.create(PortPairGroup, name="PG1", port_pairs=pairs[:2]).id
    pg2 = model.create(PortPairGroup, name="PG2", port_pairs=pairs[2:]).id
    fc = model.create(
        FlowClassifier,
        name="FC_demo",
        protocol="tcp",
        destination_port_range_min=80,
        destination_port_range_max=80,
        source_ip_prefix="10.0.0.9/32",
        logical_source_port=ports["source_vm:eth0"],
    ).id
    model.create(PortChain, name="PC1", port_pair_groups=[pg1, pg2], flow_classifiers=[fc])
    return model


@pytest.fixture
def events() -> Iterator[tuple[logging.Logger, EventFeed]]:
    feed = EventFeed(history=10)
    logger = logging.getLogger(f"pktchain.test-dashboard.{id(feed)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(feed)
    yield logger, feed
    logger.removeHandler(feed)


def live_counter() -> dict[str, Any]:
    live_counter.readings += 1  # type: ignore[attr-defined]
    return {"reading": live_counter.readings}  # type: ignore[attr-defined]


live_counter.readings = 0  # type: ignore[attr-defined]


def test_the_chains_are_drawn_from_the_model(model: SfcModel) -> None:
    (chain,) = chain_graphs(model.state)
    assert chain["name"] == "PC1" and chain["chain_id"] >= 1 and chain["symmetric"] is False
    assert [fc["name"] for fc in chain["flow_classifiers"]] == ["FC_demo"]
    assert chain["flow_classifiers"][0]["match"] == (
        "tcp src 10.0.0.9/32 dport 80 from source_vm:eth0"
    )
    groups = chain["port_pair_groups"]
    assert [g["name"] for g in groups] == ["PG1", "PG2"]
    assert [[p["name"] for p in g["port_pairs"]] for g in groups] == [["PP1", "PP2"], ["PP3"]]
    pp3 = groups[1]["port_pairs"][0]
    assert (pp3["ingress"], pp3["egress"], pp3["weight"]) == ("vm3:in", "vm3:out", 1)
    json.dumps(chain)


def test_a_chain_follows_its_changes(model: SfcModel) -> None:
    pg1 = model.resolve(PortPairGroup, "PG1")
    model.update(PortChain, model.resolve(PortChain, "PC1").id, {"port_pair_groups": [pg1.id]})
    model.update(PortPairGroup, pg1.id, {"port_pairs": [model.resolve(PortPair, "PP2").id]})
    (chain,) = chain_graphs(model.state)
    assert [[p["name"] for p in g["port_pairs"]] for g in chain["port_pair_groups"]] == [["PP2"]]


def test_the_page_is_public_and_its_data_needs_the_token(
    model: SfcModel, events: tuple[logging.Logger, EventFeed]
) -> None:
    dashboard = Dashboard(live=live_counter, events=events[1], node="n1")
    client = TestClient(create_app(LocalBackend(model), token=TOKEN, dashboard=dashboard))
    page = client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b'<script type="module" src="dashboard.js">' in page.content
    for name, value in PAGE_HEADERS.items():
        assert page.headers[name] == value
    assert "script-src 'self'" in page.headers["content-security-policy"]
    redirect = client.get("/ui", follow_redirects=False)
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    for name in ("dashboard.js", "graph.js", "stream.js", "format.js", "style.css"):
        served = client.get(f"/ui/{name}")
        assert served.status_code == 200, name
        assert served.content == page_files()[name][0]
    assert client.get("/ui/secrets.txt").status_code == 404
    before = live_counter.readings  # type: ignore[attr-defined]
    for path in DATA:
        refused = client.get(path)
        assert refused.status_code == 401, path
        assert refused.json()["NeutronError"]["type"] == "HTTPUnauthorized"
        assert client.get(path, headers={"X-Auth-Token": "wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    # The public prefix is the page's folder, not a path that starts alike.
    assert client.get("/uix").status_code == 401
    assert client.get("/ui/../v2.0/pktchain/status").status_code in (401, 404)
    assert live_counter.readings == before  # type: ignore[attr-defined]
    assert client.get("/v2.0/pktchain/status").status_code == 401


def test_the_snapshot_holds_the_chains_the_live_state_and_the_events(
    model: SfcModel, events: tuple[logging.Logger, EventFeed]
) -> None:
    logger, feed = events
    logger.info("chain applied", extra=event("chain_applied", port_chain="PC1"))
    dashboard = Dashboard(live=live_counter, events=feed, node="n1")
    client = TestClient(create_app(LocalBackend(model), token=TOKEN, dashboard=dashboard))
    for headers in ({"X-Auth-Token": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}):
        snapshot = client.get(DATA[0], headers=headers)
        assert snapshot.status_code == 200, snapshot.text
        body = snapshot.json()
        assert set(body) == {"node", "interval", "topology", "live", "events"}
        assert body["node"] == "n1" and body["interval"] == 1.0
        assert [c["name"] for c in body["topology"]] == ["PC1"]
        assert body["live"]["reading"] >= 1
        assert [e["event"] for e in body["events"]] == ["chain_applied"]


def test_without_a_dashboard_there_is_no_page_and_the_stream_is_undocumented(
    model: SfcModel,
) -> None:
    client = TestClient(create_app(LocalBackend(model)))
    assert client.get("/ui/").status_code == 404
    assert client.get(DATA[0]).status_code == 404
    dashboard = Dashboard(live=live_counter)
    documented = TestClient(create_app(LocalBackend(model), dashboard=dashboard))
    paths = documented.get("/openapi.json").json()["paths"]
    assert DATA[0] in paths and DATA[1] not in paths
    assert not any(path.startswith("/ui") for path in paths)


def test_dashboard_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"interval 0\.01"):
        Dashboard(live=live_counter, interval=0.01)
    with pytest.raises(ValueError, match="queue 0"):
        Dashboard(live=live_counter, queue=0)


async def _next(stream: Any) -> tuple[str, Any]:
    text = await asyncio.wait_for(stream.__anext__(), 10)
    kind, data = text.split("\n")[:2]
    assert kind.startswith("event: ") and data.startswith("data: ") and text.endswith("\n\n")
    return kind[len("event: ") :], json.loads(data[len("data: ") :])


def test_the_stream_sends_hello_topology_live_events_and_counts_losses(
    model: SfcModel, events: tuple[logging.Logger, EventFeed]
) -> None:
    logger, feed = events
    logger.info("before", extra=event("port_up", port="kept"))
    readings: list[int] = []

    def live() -> dict[str, Any]:
        readings.append(len(readings) + 1)
        return {"reading": readings[-1]}

    async def follow() -> list[tuple[str, Any]]:
        dashboard = Dashboard(live=live, events=feed, node="n1", interval=0.05, queue=3)
        live_feed = LiveFeed(dashboard, lambda: model.state)
        stream = live_feed.stream()
        seen = [await _next(stream)]  # hello
        assert live_feed.followers == 1
        seen.append(await _next(stream))  # the kept event
        # Five events while the follower does not read: its queue holds three.
        for n in range(5):
            logger.warning("e%d", n, extra=event("port_down", port=f"p{n}"))
        while len([s for s in seen if s[0] == "live"]) < 3:
            seen.append(await _next(stream))
        live_feed.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(stream.__anext__(), 10)
        assert live_feed.followers == 0 and feed.subscribers == 0
        return seen

    seen = asyncio.run(follow())
    kinds = [kind for kind, _data in seen]
    assert seen[0] == ("hello", {"node": "n1", "interval": 0.05, "queue": 3})
    assert seen[1][0] == "event" and seen[1][1]["port"] == "kept"
    assert kinds.count("topology") == 1  # sent first, then only when it changes
    assert kinds.index("topology") < kinds.index("live")
    lives = [data["reading"] for kind, data in seen if kind == "live"]
    assert lives == sorted(lives) and len(set(lives)) == len(lives)
    (lost,) = [data for kind, data in seen if kind == "dropped"]
    assert lost == {"dropped": 2, "total": 2}
    after = kinds.index("dropped")
    kept = [data["port"] for kind, data in seen[after:] if kind == "event"]
    assert kept == ["p2", "p3", "p4"]  # the oldest made room
