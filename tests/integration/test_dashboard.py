"""The dashboard of a real node process: its page public, its data under the token,
its live stream over HTTP (ticks, the chains, events as they happen), and a node
that stops at once while a page follows it.

The node runs two native functions (their ports are the node's) and serves its API
on loopback with a token; chains are made through the API. Last, the page in
headless Chromium asks for the token, keeps it for the tab and shows the data;
and a node with a router shows the router's hosts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pktchain.node.process import NodeProcess
from support.api_fuzz import api_node
from support.dashboard import browser_missing, chromium, console_errors, query, wait_for

TOKEN = "dashboard-integration-token"
FUNCTIONS = {
    "functions": [
        {"name": "mon", "kind": "flow-monitor"},
        {"name": "src", "kind": "flow-monitor"},
    ]
}
DASHBOARD = "/v2.0/pktchain/dashboard"
STREAM = f"{DASHBOARD}/stream"
DEADLINE = 20.0


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    functions = tmp_path / "functions.yaml"
    functions.write_text(yaml.safe_dump(FUNCTIONS))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    process = NodeProcess(
        f"dash{os.getpid()}",
        control=tmp_path / "node.sock",
        args=("--functions", str(functions), "--api-token-file", str(token)),
        log_path=tmp_path / "node.log",
    )
    process.start(timeout=30)
    try:
        yield process
    finally:
        process.kill()


def authorized(node: NodeProcess) -> httpx.Client:
    return httpx.Client(
        base_url=node.api_url(), headers={"X-Auth-Token": TOKEN}, timeout=httpx.Timeout(10.0)
    )


def make_chain(api: httpx.Client) -> None:
    """PC1 = [PG1 (PP1 over mon's ports)], classifier FC1 (UDP from src's egress)."""
    ports = {p["name"]: p["id"] for p in api.get("/v2.0/ports").json()["ports"]}
    pair = api.post(
        "/v2.0/sfc/port_pairs",
        json={
            "port_pair": {
                "name": "PP1",
                "ingress": ports["mon:ingress"],
                "egress": ports["mon:egress"],
            }
        },
    )
    assert pair.status_code == 201, pair.text
    group = api.post(
        "/v2.0/sfc/port_pair_groups",
        json={"port_pair_group": {"name": "PG1", "port_pairs": [pair.json()["port_pair"]["id"]]}},
    )
    assert group.status_code == 201, group.text
    classifier = api.post(
        "/v2.0/sfc/flow_classifiers",
        json={
            "flow_classifier": {
                "name": "FC1",
                "protocol": "udp",
                "logical_source_port": ports["src:egress"],
            }
        },
    )
    assert classifier.status_code == 201, classifier.text
    chain = api.post(
        "/v2.0/sfc/port_chains",
        json={
            "port_chain": {
                "name": "PC1",
                "port_pair_groups": [group.json()["port_pair_group"]["id"]],
                "flow_classifiers": [classifier.json()["flow_classifier"]["id"]],
            }
        },
    )
    assert chain.status_code == 201, chain.text


class Stream:
    """The server-sent events of one open stream, read one at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> tuple[str, Any]:
        kind = ""
        for line in self.lines:
            if line.startswith("event: "):
                kind = line[len("event: ") :]
            elif line.startswith("data: "):
                return kind, json.loads(line[len("data: ") :])
        raise AssertionError("the stream ended")

    def until(self, wanted: str, test: Any = lambda _data: True) -> list[tuple[str, Any]]:
        """Every event up to the first `wanted` whose data passes `test`, within DEADLINE."""
        seen = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            kind, data = self.next()
            seen.append((kind, data))
            if kind == wanted and test(data):
                return seen
        raise AssertionError(f"no {wanted} event within {DEADLINE} s: {[k for k, _ in seen]}")


def test_the_page_is_public_and_no_data_goes_without_the_token(node: NodeProcess) -> None:
    base = node.api_url()
    page = httpx.get(f"{base}/ui/", timeout=10.0)
    assert page.status_code == 200 and b"dashboard.js" in page.content
    script = httpx.get(f"{base}/ui/dashboard.js", timeout=10.0)
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    for path in (DASHBOARD, STREAM, "/v2.0/pktchain/status", "/metrics"):
        for headers in ({}, {"X-Auth-Token": "wrong"}, {"Authorization": "Bearer wrong"}):
            refused = httpx.get(base + path, headers=headers, timeout=10.0)
            assert refused.status_code == 401, (path, headers)
            assert refused.json()["NeutronError"]["type"] == "HTTPUnauthorized"
    with authorized(node) as api:
        snapshot = api.get(DASHBOARD)
        assert snapshot.status_code == 200, snapshot.text
        body = snapshot.json()
        assert body["node"] == node.name and body["topology"] == []
        live = body["live"]
        assert {p["name"] for p in live["ports"]} == {
            "mon:ingress",
            "mon:egress",
            "src:ingress",
            "src:egress",
        }
        assert {f["name"]: f["kind"] for f in live["functions"]} == {
            "mon": "flow-monitor",
            "src": "flow-monitor",
        }
        assert live["router"] is None and live["flows"] == []
        assert [n["name"] for n in live["networks"]] == ["default"]
        # The events of the start were kept: the page shows them first.
        names = [e["event"] for e in body["events"]]
        assert "node_started" in names and names.count("port_added") == 4


def test_the_stream_ticks_and_shows_chains_and_events_as_they_happen(node: NodeProcess) -> None:
    with (
        authorized(node) as api,
        httpx.Client(
            base_url=node.api_url(),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=httpx.Timeout(10.0),
        ) as client,
        client.stream("GET", STREAM) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = Stream(response)
        kind, hello = stream.next()
        assert kind == "hello" and hello["node"] == node.name and hello["interval"] == 1.0
        seen = stream.until("live")
        assert ("topology", []) in seen
        first = seen[-1][1]
        # A tick a second: the next two come within the deadline, each later.
        seen = stream.until("live")
        second = seen[-1][1]
        assert second["now"] > first["now"]
        assert second["now"] - first["now"] < 5.0  # about the interval, on a loaded machine
        make_chain(api)
        seen = stream.until("event", lambda data: data["event"] == "chain_applied")
        added = [data for kind, data in seen if kind == "event"]
        assert [e["event"] for e in added][-4:] == [
            "instance_added",
            "group_added",
            "classifier_added",
            "chain_applied",
        ]
        assert added[-1]["port_chain"] == "PC1" and added[-1]["level"] == "info"
        seen = stream.until("topology", lambda data: data != [])
        (chain,) = seen[-1][1]
        assert chain["name"] == "PC1"
        assert [g["name"] for g in chain["port_pair_groups"]] == ["PG1"]
        (pair,) = chain["port_pair_groups"][0]["port_pairs"]
        assert (pair["name"], pair["ingress"], pair["egress"]) == (
            "PP1",
            "mon:ingress",
            "mon:egress",
        )
        assert chain["flow_classifiers"][0]["match"] == "udp from src:egress"
        _kind, live = stream.next()
        assert _kind == "live"
        assert [c["name"] for c in live["steering"]["chains"]] == ["PC1"]


def test_a_node_followed_by_a_page_stops_at_once(node: NodeProcess) -> None:
    with (
        httpx.Client(
            base_url=node.api_url(),
            headers={"X-Auth-Token": TOKEN},
            timeout=httpx.Timeout(10.0),
        ) as client,
        client.stream("GET", STREAM) as response,
    ):
        stream = Stream(response)
        stream.until("live")
        started = time.monotonic()
        assert node.stop(timeout=15.0) == 0
        # The server ended the stream rather than wait for the page to go.
        assert time.monotonic() - started < 8.0
        with pytest.raises((AssertionError, httpx.HTTPError)):
            stream.until("never")


def test_in_a_browser_the_page_asks_for_the_token_and_keeps_it_for_the_tab(
    node: NodeProcess,
) -> None:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium.webdriver.common.by import By

    with authorized(node) as api:
        make_chain(api)
    with chromium() as driver:
        driver.get(f"{node.api_url()}/ui/")
        form = wait_for(
            "the token form",
            lambda: driver.find_element(By.ID, "token-panel").is_displayed(),
        )
        assert form
        assert driver.find_element(By.ID, "dashboard").is_displayed() is False
        assert driver.find_element(By.ID, "connection").get_attribute("data-state") == "token"
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chain-graph") == []
        assert driver.find_element(By.ID, "stat-rx").get_attribute("data-value") is None

        def submit(token: str) -> None:
            field = driver.find_element(By.ID, "token-input")
            field.clear()
            field.send_keys(token)
            driver.find_element(By.CSS_SELECTOR, "#token-form button").click()

        submit("not-the-token")
        refused = wait_for(
            "the refusal",
            lambda: driver.find_element(By.ID, "token-error").text,
        )
        assert refused == "The node refused this token."
        assert driver.find_elements(By.CSS_SELECTOR, "svg.chain-graph") == []

        submit(TOKEN)
        wait_for(
            "the chain PC1 drawn",
            lambda: driver.find_elements(By.CSS_SELECTOR, 'svg.chain-graph[data-chain="PC1"]'),
        )
        wait_for(
            "the stream live",
            lambda: driver.find_element(By.ID, "connection").get_attribute("data-state") == "live",
        )
        stored = driver.execute_script("return sessionStorage.getItem('pktchain-api-token')")
        assert stored == TOKEN
        assert driver.find_element(By.ID, "token-panel").is_displayed() is False
        # A reload of the tab keeps the token: no form, the data at once.
        driver.refresh()
        wait_for(
            "the chain PC1 drawn again",
            lambda: driver.find_elements(By.CSS_SELECTOR, 'svg.chain-graph[data-chain="PC1"]'),
        )
        assert driver.find_element(By.ID, "token-panel").is_displayed() is False
        # Forgetting it brings the form back.
        driver.find_element(By.ID, "forget-token").click()
        wait_for(
            "the form again",
            lambda: driver.find_element(By.ID, "token-panel").is_displayed(),
        )
        assert driver.execute_script("return sessionStorage.getItem('pktchain-api-token')") is None
        errors = console_errors(driver)
        # The refused requests are the console's only complaints.
        assert all("401" in message for message in errors), errors


def test_the_router_panel_shows_the_router_s_hosts(tmp_path: Path) -> None:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)

    with api_node(f"dashr{os.getpid()}", tmp_path) as node:
        base = node.api_url()
        added = httpx.post(
            f"{base}/v2.0/pktchain/router/host_nic_add",
            json={"mac": "02:00:00:00:0a:01", "ip": "10.0.0.77"},
            timeout=10.0,
        )
        assert added.status_code == 200, added.text
        live = httpx.get(base + DASHBOARD, timeout=10.0).json()["live"]
        router = live["router"]
        assert {"hosts", "nat", "nat_mappings", "nat_sessions", "vrrp"} <= set(router)
        assert "10.0.0.77" in json.dumps(router["hosts"])
        with chromium() as driver:
            driver.get(f"{base}/ui/")
            hosts = wait_for("the router's hosts", lambda: query(driver, "#router-hosts tbody tr"))
            assert any(row and "10.0.0.77" in row for row in hosts)
            assert query(driver, "#router-nat, #router p.empty")
            events = set(query(driver, "#events li", "data-event"))
            assert "router_started" in events
            assert console_errors(driver) == []
