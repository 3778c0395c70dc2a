"""The etcd client's pure parts: endpoints, key layout, the gateway's JSON."""

from __future__ import annotations

import base64

import pytest

from pktchain.etcd.client import (
    Event,
    EventType,
    KeyValue,
    Range,
    TxnResult,
    WatchResponse,
    compare_create_revision,
    compare_mod_revision,
    op_delete,
    op_put,
    op_range,
)
from pktchain.etcd.endpoints import parse_endpoints
from pktchain.etcd.keys import check_segment, cluster_prefix, prefix_end


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_endpoints_are_checked_and_written_one_way() -> None:
    assert parse_endpoints("http://127.0.0.1:2379, https://etcd.example:2380,") == (
        "http://127.0.0.1:2379",
        "https://etcd.example:2380",
    )
    assert parse_endpoints(["http://10.0.0.1", "http://10.0.0.1:2379"]) == ("http://10.0.0.1:2379",)
    assert parse_endpoints("http://[::1]:2379") == ("http://[::1]:2379",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "no etcd endpoint given"),
        ("127.0.0.1:2379", "expected http://HOST:PORT"),
        ("ftp://h:1", "expected http://HOST:PORT"),
        ("http://h:99999", "out of range"),
        ("http://h:2379/v3", "expected no path"),
    ],
)
def test_bad_endpoints_are_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_endpoints(value)
    if value:
        assert repr(value) in str(caught.value)


def test_cluster_keys_and_prefix_ranges() -> None:
    assert cluster_prefix() == "/pktchain/pktchain/"
    assert cluster_prefix("lab-1") == "/pktchain/lab-1/"
    assert prefix_end(b"/pktchain/a/") == b"/pktchain/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    for bad in ("", "a/b", "..", "-x", "x" * 64, "a b"):
        with pytest.raises(ValueError, match="cannot name an etcd key"):
            check_segment("cluster name", bad)


def test_transaction_parts_are_the_gateways_json() -> None:
    assert compare_mod_revision(b"/v", 7) == {
        "key": b64(b"/v"),
        "target": "MOD",
        "result": "EQUAL",
        "mod_revision": 7,
    }
    assert compare_create_revision(b"/n", 0)["target"] == "CREATE"
    assert op_put(b"/k", b"v") == {"request_put": {"key": b64(b"/k"), "value": b64(b"v")}}
    assert op_put(b"/k", b"v", lease=2**62)["request_put"]["lease"] == str(2**62)
    assert op_delete(b"/k") == {"request_delete_range": {"key": b64(b"/k")}}
    assert op_range(b"/a/", b"/a0") == {
        "request_range": {"key": b64(b"/a/"), "range_end": b64(b"/a0")}
    }


def test_answers_are_read_with_proto3_defaults() -> None:
    kv = KeyValue.from_json(
        {"key": b64(b"/k"), "value": b64(b"{}"), "create_revision": "3", "mod_revision": "5"}
    )
    assert kv == KeyValue(b"/k", b"{}", 3, 5, 0, 0)
    deleted = Event.from_json({"type": "DELETE", "kv": {"key": b64(b"/k"), "mod_revision": "9"}})
    assert (deleted.type, deleted.revision, deleted.kv.value) == (EventType.DELETE, 9, b"")
    put = Event.from_json({"kv": {"key": b64(b"/k"), "mod_revision": "4"}})
    assert put.type is EventType.PUT
    compacted = WatchResponse.from_json(
        {"header": {"revision": "12"}, "canceled": True, "compact_revision": "10"}
    )
    assert (compacted.canceled, compacted.compact_revision, compacted.events) == (True, 10, ())
    listed = Range.from_json({"header": {"revision": "8"}})
    assert listed == Range(8, ())


def test_a_failed_transactions_range_is_read_at_its_revision() -> None:
    result = TxnResult(
        revision=11,
        succeeded=False,
        responses=({"response_range": {"kvs": [{"key": b64(b"/a"), "mod_revision": "10"}]}},),
    )
    assert result.range(0) == Range(11, (KeyValue(b"/a", mod_revision=10),))
    with pytest.raises(ValueError, match="not a range"):
        TxnResult(1, True, ({"response_put": {}},)).range(0)
