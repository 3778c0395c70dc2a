"""``GET /metrics``: the process's and the requests' metrics, the owner's collectors, the token."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi.testclient import TestClient
from prometheus_client.core import CounterMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


class Scrapes(Collector):
    """Counts its own scrapes."""

    def __init__(self) -> None:
        self.scrapes = 0

    def collect(self) -> Iterable[CounterMetricFamily]:
        self.scrapes += 1
        yield CounterMetricFamily("test_scrapes", "Scrapes.", value=self.scrapes)


def test_metrics_holds_the_process_the_requests_and_the_owner_s_collectors() -> None:
    collector = Scrapes()
    client = TestClient(create_app(LocalBackend(), collectors=[collector]))
    assert client.get("/v2.0/sfc/port_pairs").status_code == 200
    assert client.get("/v2.0/sfc/port_pairs/nonesuch").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(response.text)
    assert found["test_scrapes_total"] == [({}, 1.0)]
    assert found["process_resident_memory_bytes"][0][1] > 0
    assert found["process_open_fds"][0][1] > 0
    counts = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in found["pktchain_api_request_duration_seconds_count"]
    }
    assert counts == {
        ("GET", "/v2.0/sfc/port_pairs", "200"): 1,
        ("GET", "/v2.0/sfc/port_pairs/{resource_id}", "404"): 1,  # the template, not the id
        ("GET", "", "404"): 1,  # no route: no path of a client's choosing as a label
    }
    assert "/metrics" not in client.get("/openapi.json").text


def test_applications_in_one_process_keep_registries_of_their_own() -> None:
    first, second = (TestClient(create_app(LocalBackend())) for _ in range(2))
    first.get("/v2.0")
    text = second.get("/metrics").text
    assert "/v2.0" not in text  # the first's requests are the first's


def test_with_a_token_metrics_needs_it_as_a_header_or_a_bearer_token() -> None:
    client = TestClient(create_app(LocalBackend(), token="s3cret"))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert client.get("/metrics", headers={"X-Auth-Token": "s3cret"}).status_code == 200
    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200
    statuses = {
        labels["status"]
        for labels, _ in samples(response.text)["pktchain_api_request_duration_seconds_count"]
    }
    assert statuses == {"401", "200"}
    # The bearer token opens the rest of the API as well.
    assert (
        client.get("/v2.0/sfc/port_pairs", headers={"Authorization": "bearer s3cret"}).status_code
        == 200
    )
