"""Where a dry run's packet leaves for another node: whether and how the next node
is asked (`Tracing._continue`), against a stand-in for that node's REST API on
loopback that records what it was sent."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pktchain.cluster.record import NodeRecord
from pktchain.node.control import Deferred
from pktchain.node.trace import Tracing

ARRIVAL = {"vni": 7, "spi": 1, "si": 255, "ttl": 63, "tags": [9], "fixed": True, "frame": "00"}
NEXT_PART = {
    "hops": [
        {"stage": "ingress", "us": 0.5, "node": "n2"},
        {"stage": "egress", "us": 9.0, "node": "n2"},
    ],
    "result": "delivered",
    "egress": "server:eth0",
    "reason": None,
}


@dataclass
class Settings:
    name: str = "n1"
    api_token: str | None = "s3cret"


@dataclass
class View:
    nodes: dict[str, NodeRecord] = field(default_factory=dict)


class Loop:
    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        callback()


@dataclass
class Node:
    cluster: View
    config: Settings = field(default_factory=Settings)
    loop: Loop = field(default_factory=Loop)


@dataclass
class NextNode:
    """A stand-in for the next node's API: it answers NEXT_PART and notes each request."""

    url: str
    requests: list[tuple[str, dict[str, str], dict[str, Any]]]


@pytest.fixture
def next_node() -> Iterator[NextNode]:
    seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, dict(self.headers), body))
            answer = json.dumps({"trace": NEXT_PART}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield NextNode(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def leaving(node_to: str = "n2", *, copy: bool = False) -> dict[str, Any]:
    hop: dict[str, Any] = {
        "stage": "egress",
        "us": 10.0,
        "node": "n1",
        "kind": "underlay",
        "node_to": node_to,
        "arrival": dict(ARRIVAL),
    }
    if copy:
        hop["copy"] = True
    return hop


def trace_of(*hops: dict[str, Any]) -> dict[str, Any]:
    return {
        "hops": [{"stage": "ingress", "us": 0.0, "node": "n1"}, *hops],
        "result": "delivered",
        "egress": "n2/default",
        "reason": None,
    }


def go_on(node: Node, trace: dict[str, Any]) -> dict[str, Any]:
    deferred = Deferred()
    Tracing(node)._continue(trace, deferred)  # type: ignore[arg-type]
    reply = deferred.wait(20)
    assert reply["ok"], reply
    result: dict[str, Any] = reply["trace"]
    assert not any("arrival" in hop for hop in result["hops"])
    return result


def test_the_next_node_is_asked_with_the_token_and_its_part_is_added(
    next_node: NextNode,
) -> None:
    node = Node(View({"n2": NodeRecord("n2", underlay=("127.0.0.2", 4790), api=next_node.url)}))
    result = go_on(node, trace_of(leaving()))
    ((path, headers, body),) = next_node.requests
    assert path == "/v2.0/pktchain/trace"
    assert headers["X-Auth-Token"] == "s3cret"
    assert body == {"arrival": {**ARRIVAL, "from_node": "n1"}}
    assert [hop["node"] for hop in result["hops"]] == ["n1", "n1", "n2", "n2"]
    assert (result["result"], result["egress"], result["reason"]) == (
        "delivered",
        "server:eth0",
        None,
    )


def test_without_a_token_none_is_sent(next_node: NextNode) -> None:
    node = Node(
        View({"n2": NodeRecord("n2", underlay=("127.0.0.2", 4790), api=next_node.url)}),
        Settings(api_token=None),
    )
    go_on(node, trace_of(leaving()))
    ((_path, headers, _body),) = next_node.requests
    assert "X-Auth-Token" not in headers


def test_a_loopback_api_across_a_real_underlay_is_not_asked(next_node: NextNode) -> None:
    """The other node's 127.0.0.1 is in its own namespace or machine: this node's
    loopback would answer instead."""
    node = Node(View({"n2": NodeRecord("n2", underlay=("10.250.0.2", 4790), api=next_node.url)}))
    result = go_on(node, trace_of(leaving()))
    assert not next_node.requests
    assert result["reason"].startswith(
        f"continues on node n2, whose API listens on {next_node.url}"
    )
    assert "--api" in result["reason"]


def test_a_node_with_no_api_known_ends_the_trace() -> None:
    node = Node(View({"n2": NodeRecord("n2", underlay=("10.250.0.2", 4790))}))
    result = go_on(node, trace_of(leaving()))
    assert result["reason"] == "continues on node n2, whose API is not known"


def test_a_node_that_does_not_answer_is_named() -> None:
    # A port nothing listens on: refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    node = Node(View({"n2": NodeRecord("n2", underlay=("127.0.0.2", 4790), api=url)}))
    result = go_on(node, trace_of(leaving()))
    assert result["reason"].startswith("continues on node n2, which did not answer: ")


@pytest.mark.parametrize(
    "hops",
    [
        [leaving(), {"stage": "egress", "us": 11.0, "node": "n1", "port": "h3:eth0"}],
        [leaving(copy=True)],
    ],
    ids=["flooded", "a-copy"],
)
def test_a_packet_that_leaves_by_several_ports_or_a_copy_is_not_followed(
    next_node: NextNode, hops: list[dict[str, Any]]
) -> None:
    node = Node(View({"n2": NodeRecord("n2", underlay=("127.0.0.2", 4790), api=next_node.url)}))
    result = go_on(node, trace_of(*hops))
    assert not next_node.requests
    assert result["reason"] is None
    assert [hop["node"] for hop in result["hops"]] == ["n1"] * (len(hops) + 1)
