"""The REST API server's limits, over real sockets on loopback.

A request body is capped (413 naming the limit), a client must send each
whole request within the request timeout (408, then the connection is
closed: a client sending a byte at a time cannot hold it), and connections
beyond the cap are answered 503 and closed. Each is counted.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from pktchain.api.app import create_app
from pktchain.api.backend import LocalBackend
from pktchain.api.server import ApiServer, HttpLimits

MAX_BODY = 4096


@pytest.fixture
def server() -> Iterator[ApiServer]:
    app = create_app(LocalBackend(), max_body=MAX_BODY)
    with ApiServer(app, port=0, limits=HttpLimits(request_timeout=0.5)) as running:
        yield running


def connect(server: ApiServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any], bool]:
    """Status, JSON body, and whether the server closed the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    closed = headers.get("connection") == "close" and _closed(sock)
    return int(lines[0].split()[1]), json.loads(body), closed


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:  # closed with bytes of ours unread: a reset, not a FIN
        return True


def test_a_body_over_the_limit_is_refused_naming_it(server: ApiServer) -> None:
    url = f"{server.url}/v2.0/sfc/port_pairs"
    big = json.dumps({"port_pair": {"name": "x" * MAX_BODY}})
    reply = httpx.post(url, content=big, headers={"content-type": "application/json"}, timeout=5)
    assert reply.status_code == 413
    error = reply.json()["NeutronError"]
    assert error["type"] == "HTTPRequestEntityTooLarge"
    assert str(MAX_BODY) in error["message"]
    # Sent in chunks, without a Content-Length: counted as it arrives.
    chunks = (big[i : i + 1000].encode() for i in range(0, len(big), 1000))
    reply = httpx.post(url, content=chunks, headers={"content-type": "application/json"}, timeout=5)
    assert reply.status_code == 413 and str(MAX_BODY) in reply.json()["NeutronError"]["message"]
    # Any route, also one that reads no body, refuses a body declared too large.
    with connect(server) as sock:
        head = f"GET /v2.0/ports HTTP/1.1\r\nhost: x\r\ncontent-length: {MAX_BODY + 1}\r\n\r\n"
        sock.sendall(head.encode())
        status, body, _closed = read_response(sock)
    assert status == 413 and str(MAX_BODY) in body["NeutronError"]["message"]
    assert httpx.get(f"{server.url}/v2.0/ports", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /v2.0/ports HTTP/1.1\r\nhost:", b"POST /v2.0/sfc/port_pairs HTTP/1.1\r\n"
     b"host: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"port_pair\""],
    ids=["nothing", "half the headers", "half the body"],
)  # fmt: skip
def test_a_client_too_slow_to_send_its_request_is_dropped(server: ApiServer, sent: bytes) -> None:
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        status, body, closed = read_response(sock)
        waited = time.monotonic() - started
    assert status == 408 and closed
    assert body["NeutronError"]["type"] == "HTTPRequestTimeout"
    assert "0.5 s" in body["NeutronError"]["message"]
    assert 0.4 < waited < 4.5
    assert server.counters["requests.timed_out"] == 1


def test_a_byte_at_a_time_does_not_keep_a_request_alive(server: ApiServer) -> None:
    request = b"GET /v2.0/ports HTTP/1.1\r\nhost: x\r\n\r\n"
    with connect(server) as sock:
        started = time.monotonic()
        for byte in request[:-1]:  # every 0.1 s: a fifth of the timeout
            if select.select([sock], [], [], 0.1)[0]:
                break  # the server answered: stop before writing into a closed socket
            sock.sendall(bytes([byte]))
        status, _body, closed = read_response(sock)
    assert status == 408 and closed
    assert time.monotonic() - started < 3.0  # well before the whole request was out (3.6 s)


def test_a_prompt_client_keeps_its_connection_across_requests(server: ApiServer) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/v2.0/ports").status_code == 200
            time.sleep(0.3)  # idle between requests: within keep-alive, not a slow request
    assert server.counters["requests.timed_out"] == 0
    assert server.counters["connections.opened"] == 1


def test_connections_beyond_the_cap_are_refused() -> None:
    app = create_app(LocalBackend())
    limits = HttpLimits(max_connections=2, request_timeout=30)
    with ApiServer(app, port=0, limits=limits) as server:
        held = [connect(server) for _ in range(2)]
        try:
            with connect(server) as third:
                status, body, closed = read_response(third)
            assert status == 503 and closed
            assert body["NeutronError"]["type"] == "HTTPServiceUnavailable"
            assert server.counters["connections.refused"] == 1
            held.pop().close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:  # the server sees the close in its own time
                reply = httpx.get(f"{server.url}/v2.0/ports", timeout=5)
                if reply.status_code == 200:
                    break
                time.sleep(0.05)
            assert reply.status_code == 200
        finally:
            for sock in held:
                sock.close()


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="request timeout"):
        HttpLimits(request_timeout=0)
    with pytest.raises(ValueError, match="max connections"):
        HttpLimits(max_connections=0)
    with pytest.raises(ValueError, match="max_body"):
        create_app(LocalBackend(), max_body=0)
