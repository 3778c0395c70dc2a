"""A node's servers hold their limits as the command line sets them.

One node, with a router, functions and both servers on loopback, started
with its API token in a file and small limits: the REST API wants the token,
caps bodies (413) and drops a slow client (408); the messenger closes a
connection that never authenticates and refuses one beyond its cap. The
node's status counts each.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pktchain.lab.wait import wait_until
from pktchain.messenger.client import MessengerClient
from pktchain.node.process import NodeProcess
from support.api_fuzz import api_node

TOKEN = "a-token-kept-in-a-file"
SECRET = b"the messenger's shared secret"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    token, secret = tmp_path / "token", tmp_path / "secret"
    token.write_text(TOKEN + "\n")
    secret.write_bytes(SECRET)
    for path in (token, secret):
        path.chmod(0o600)
    args = (
        "--api-token-file", str(token), "--api-max-body", "2048",
        "--api-request-timeout", "0.5", "--messenger", "127.0.0.1:0",
        "--messenger-secret-file", str(secret), "--messenger-handshake-timeout", "0.5",
        "--messenger-max-connections", "1",
    )  # fmt: skip
    with api_node(f"lim{os.getpid()}", tmp_path, args=args) as running:
        yield running


def test_the_node_serves_within_its_limits(node: NodeProcess) -> None:
    url = node.api_url()
    assert httpx.get(f"{url}/v2.0/ports", timeout=5).status_code == 401
    headers = {"x-auth-token": TOKEN, "content-type": "application/json"}
    assert httpx.get(f"{url}/v2.0/ports", headers=headers, timeout=5).status_code == 200
    big = b'{"port_pair": {"name": "' + b"x" * 4096 + b'"}}'
    reply = httpx.post(f"{url}/v2.0/sfc/port_pairs", content=big, headers=headers, timeout=5)
    assert reply.status_code == 413 and "2048 bytes" in reply.json()["NeutronError"]["message"]

    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as slow:
        slow.sendall(b"GET /v2.0/ports HTTP/1.1\r\n")  # and nothing more
        assert slow.recv(100).startswith(b"HTTP/1.1 408 ")

    messenger = int(node.status()["messenger"])
    with MessengerClient("127.0.0.1", messenger, SECRET, timeout=5) as controller:
        assert controller.call("ping") is not None
        with socket.create_connection(("127.0.0.1", messenger), timeout=5) as second:
            assert second.recv(1) == b""  # the cap is one connection
        assert controller.call("ping") is not None  # the controller keeps its own
    # The node has seen the controller go: the one connection is free again.
    wait_until(
        lambda: node.status()["messenger_counters"].get("connections.closed.by_peer") == 1,
        timeout=5,
    )
    with socket.create_connection(("127.0.0.1", messenger), timeout=5) as stranger:
        started = time.monotonic()
        assert stranger.recv(1) == b""  # never authenticated: closed
        assert time.monotonic() - started < 4.5

    status = node.status()
    assert status["api_counters"]["requests.timed_out"] == 1
    assert status["messenger_counters"]["connections.refused"] == 1
    assert status["messenger_counters"]["connections.closed.handshake"] == 1
