"""A node's record in the registry: its JSON, its underlay address, its key."""

from __future__ import annotations

import json

import pytest

from pktchain.cluster.record import (
    NodeNameTaken,
    NodeRecord,
    format_underlay,
    node_key,
    nodes_prefix,
    parse_underlay,
)


def test_record_json_round_trip() -> None:
    record = NodeRecord(
        "node1",
        underlay=("192.0.2.1", 4790),
        api="http://127.0.0.1:9696",
        ports_down=("p1",),
        started=1767225600.5,
    )
    data = json.loads(record.encode())
    assert data == {
        "name": "node1",
        "underlay": "192.0.2.1:4790",
        "api": "http://127.0.0.1:9696",
        "ports_down": ["p1"],
        "started": 1767225600.5,
    }
    assert NodeRecord.decode(record.encode()) == record
    bare = NodeRecord("n2")
    assert json.loads(bare.encode())["underlay"] is None
    assert NodeRecord.decode(bare.encode()) == bare


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "JSON object"),
        ({"name": ""}, "'name'"),
        ({"name": "n", "underlay": 4790}, "'underlay'"),
        ({"name": "n", "underlay": "nowhere"}, "not an IP address"),
        ({"name": "n", "api": 1}, "'api'"),
        ({"name": "n", "ports_down": "p1"}, "'ports_down'"),
        ({"name": "n", "started": "now"}, "'started'"),
    ],
)
def test_bad_records_name_the_field(data: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        NodeRecord.from_json(data)


def test_underlay_addresses() -> None:
    assert parse_underlay("192.0.2.1") == ("192.0.2.1", 4790)
    assert parse_underlay("192.0.2.1:6000") == ("192.0.2.1", 6000)
    assert parse_underlay("2001:db8::1") == ("2001:db8::1", 4790)
    assert parse_underlay("[2001:db8::1]:6000") == ("2001:db8::1", 6000)
    assert format_underlay(("2001:db8::1", 6000)) == "[2001:db8::1]:6000"
    assert format_underlay(("192.0.2.1", 4790)) == "192.0.2.1:4790"
    for bad, why in (
        ("host:1", "not an IP address"),
        ("192.0.2.1:0", "port must be"),
        ("192.0.2.1:", "port must be"),
        ("[2001:db8::1", "expected IP"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_underlay(bad)


def test_node_keys() -> None:
    assert nodes_prefix("c1") == b"/pktchain/c1/nodes/"
    assert node_key("c1", "node-1") == b"/pktchain/c1/nodes/node-1"
    with pytest.raises(ValueError, match="node name 'a/b'"):
        node_key("c1", "a/b")


def test_name_taken_names_the_holder() -> None:
    holder = NodeRecord("n1", underlay=("192.0.2.9", 4790), api=None, started=0.0)
    message = str(NodeNameTaken("c1", "n1", holder, 3))
    assert "node n1 is already registered in cluster c1" in message
    assert "underlay 192.0.2.9:4790" in message
    assert "3 s" in message
