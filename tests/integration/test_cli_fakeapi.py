"""Tests of `NeutronClient` against the networking-sfc API double (`support.fakeapi`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pktchain.client.neutron import ApiError, ApiUnreachableError, NeutronClient
from pktchain.sfc.resources import ResourceKind
from support.fakeapi import FakeApi


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    with FakeApi() as api:
        yield api


def test_create_resolves_names_and_wraps_body(fake_api: FakeApi) -> None:
    client = NeutronClient(fake_api.url)
    ingress = client.find_id(ResourceKind.PORT, "vm1:in")
    pair = client.create(
        ResourceKind.PORT_PAIR,
        {"name": "PP1", "ingress": ingress, "egress": client.find_id(ResourceKind.PORT, "vm1:out")},
    )
    assert pair["ingress"] == ingress
    post = next(r for r in fake_api.requests if r.method == "POST")
    assert post.path == "/v2.0/sfc/port_pairs"
    assert post.body["port_pair"]["name"] == "PP1"
    assert fake_api.requests[0].path == "/v2.0/ports"
    assert fake_api.requests[0].query == {"name": ["vm1:in"]}
    assert client.show(ResourceKind.PORT_PAIR, "PP1")["id"] == pair["id"]
    assert client.show(ResourceKind.PORT_PAIR, pair["id"])["name"] == "PP1"


def test_error_carries_neutron_type_message_and_status(fake_api: FakeApi) -> None:
    client = NeutronClient(fake_api.url + "/v2.0")
    with pytest.raises(ApiError) as caught:
        client.create(ResourceKind.PORT_PAIR, {"name": "x", "ingress": "nope", "egress": "nope"})
    assert caught.value.status == 400
    assert caught.value.type == "HTTPBadRequest"
    assert "ingress" in caught.value.message


def test_unknown_name_is_a_404(fake_api: FakeApi) -> None:
    client = NeutronClient(fake_api.url)
    with pytest.raises(ApiError) as caught:
        client.delete(ResourceKind.PORT_CHAIN, "PC9")
    assert caught.value.status == 404
    assert "PC9" in str(caught.value)


def test_token_is_sent() -> None:
    with FakeApi(token="s3cret") as api:
        assert NeutronClient(api.url, "s3cret").list(ResourceKind.PORT_PAIR) == []
        with pytest.raises(ApiError) as caught:
            NeutronClient(api.url).list(ResourceKind.PORT_PAIR)
    assert caught.value.status == 401
    assert api.requests[0].token == "s3cret"


def test_connection_refused_is_one_clear_line() -> None:
    with FakeApi() as api:
        url = api.url  # a port that was free a moment ago and is closed now
    with pytest.raises(ApiUnreachableError) as caught:
        NeutronClient(url, timeout=2).list(ResourceKind.PORT)
    assert str(caught.value).startswith(f"no pktchain API at {url}: is `pktchain node` running?")
