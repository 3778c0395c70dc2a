"""The dashboard in headless Chromium while the SFC demo's traffic flows.

``pktchain demo sfc --json --hold`` runs as a person runs it; once it holds (the
walk-through done, HTTP flowing from source_vm through PC1), the page at the
address it printed must draw the demo's chain (classifier FC_demo, PG1 with PP1
and PP2, PG2 with PP3), show counters that move from one tick to the next,
the flows pinned to the instances and the events of the walk-through. Then
SIGTERM must end the demo with everything removed and its JSON intact; a
SIGTERM during the walk-through must remove everything too.
"""

from __future__ import annotations

from typing import Any

import pytest

from pktchain.lab import running_labs
from support.dashboard import (
    SERVING,
    HeldDemo,
    browser_missing,
    chromium,
    console_errors,
    query,
    wait_for,
)

pytestmark = pytest.mark.slow


def counter(driver: Any, css: str, attribute: str = "data-value") -> int | None:
    found = query(driver, css, attribute)
    value = found[0] if found else None
    return int(value) if value else None


def test_the_dashboard_draws_the_demo_chain_and_its_counters_move() -> None:
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from selenium.webdriver.common.by import By

    demo = HeldDemo(window=1.0)
    try:
        url = demo.start()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/ui/")
        with chromium() as driver:
            driver.get(url)
            graph = wait_for(
                "the chain PC1 drawn",
                lambda: driver.find_elements(By.CSS_SELECTOR, 'svg.chain-graph[data-chain="PC1"]'),
            )[0]
            classifiers = graph.find_elements(By.CSS_SELECTOR, "g.classifier")
            assert [c.get_attribute("data-classifier") for c in classifiers] == ["FC_demo"]
            assert "tcp" in classifiers[0].text and "dport 80" in classifiers[0].text
            groups = graph.find_elements(By.CSS_SELECTOR, "g.group")
            assert [g.get_attribute("data-group") for g in groups] == ["PG1", "PG2"]
            pairs = [
                [p.get_attribute("data-pair") for p in g.find_elements(By.CSS_SELECTOR, "g.pair")]
                for g in groups
            ]
            assert pairs == [["PP1", "PP2"], ["PP3"]]
            labels = [t.text for t in graph.find_elements(By.CSS_SELECTOR, "text.group-label")]
            assert labels == ["PG1", "PG2"]
            for name in ("PP1", "PP2", "PP3"):
                box = graph.find_element(By.CSS_SELECTOR, f'g.pair[data-pair="{name}"]')
                assert name in box.text
            pp3 = 'g.pair[data-pair="PP3"] text.counter'
            # The counters on the page move while HTTP flows (a tick a second).
            frames = wait_for("frames in shown", lambda: counter(driver, "#stat-rx"))
            steered = wait_for("PP3's packets shown", lambda: counter(driver, pp3, "data-packets"))
            wait_for(
                "frames in to grow",
                lambda: (counter(driver, "#stat-rx") or 0) > frames,
                timeout=20,
            )
            wait_for(
                "PP3's packets to grow",
                lambda: (counter(driver, pp3, "data-packets") or 0) > steered,
                timeout=20,
            )
            source = 'tr[data-port="source_vm:eth0"] td.rx-packets'
            sent = wait_for("source_vm's frames", lambda: counter(driver, source))
            wait_for("source_vm's frames to grow", lambda: (counter(driver, source) or 0) > sent)
            state = driver.find_element(By.ID, "connection").get_attribute("data-state")
            assert state == "live"
            # The flows, each with its path through the instances.
            paths = wait_for(
                "a flow through PP3",
                lambda: [p for p in query(driver, "#flows td.path") if p and "PP3" in p],
            )
            assert all(p in ("PP1 → PP3", "PP2 → PP3") for p in paths), paths
            # The walk-through's changes, in the feed.
            events = set(query(driver, "#events li", "data-event"))
            assert {"chain_applied", "chain_changed", "group_changed"} <= events, events
            # Every port of the demo, in its network.
            ports = set(query(driver, "svg.network-view g.port", "data-port"))
            assert {"source_vm:eth0", "dest_vm:eth0", "vm3:in", "vm3:out"} <= ports
            assert driver.find_element(By.ID, "token-panel").is_displayed() is False
            assert console_errors(driver) == []
    finally:
        code, report = demo.stop()
    failed = [(s["name"], s["detail"]) for s in report.get("steps", []) if not s["ok"]]
    assert code == 0 and report["ok"] and not failed, (failed, demo.stderr[-3000:])
    assert report["dashboard"] == url
    assert demo.lab not in running_labs()
    assert report["steps"][-1]["name"] == "stop the node (SIGTERM)"


def test_a_sigterm_during_the_walk_through_removes_everything() -> None:
    demo = HeldDemo(window=1.0)
    url = demo.start(until=SERVING)  # the node serves; the walk-through begins
    assert url.endswith("/ui/") and demo.lab in running_labs()
    code, report = demo.stop()  # raises if the demo left its lab
    assert code == 130, demo.stderr[-3000:]  # interrupted, as by Ctrl-C
    assert report == {}  # no report of a walk-through cut short
    assert demo.lab not in running_labs()
