"""The node's control socket and its command-line configuration, without packets."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pktchain.eventloop import EventLoop, LoopThread
from pktchain.node.config import build_config
from pktchain.node.control import ControlError, ControlServer, request
from pktchain.node.dataplane.ports import PortKind


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """A control server answering {"op": "echo"} on a loop running in a thread."""
    path = tmp_path / "node.sock"
    runner = LoopThread("control-test")

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        if req["op"] == "echo":
            return {"ok": True, "echo": req.get("value")}
        return {"ok": False, "error": f"unknown op {req['op']!r}"}

    control = ControlServer(path, runner.loop, handle)
    control.start()
    runner.start()
    yield path
    runner.loop.submit(control.close)
    runner.stop()
    assert not runner.running


def raw_exchange(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return json.loads(reply)  # type: ignore[no-any-return]


def test_request_and_reply(server: Path) -> None:
    assert request(server, "echo", value=[1, 2]) == {"ok": True, "echo": [1, 2]}
    assert request(server, "nope") == {"ok": False, "error": "unknown op 'nope'"}


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"{not json\n", "request is not JSON"),
        (b"[1, 2]\n", 'request must be {"op": "..."}'),
        (b'{"op": 3}\n', 'request must be {"op": "..."}'),
        (b"x" * (70 * 1024), "request too large"),
    ],
)
def test_bad_requests_get_an_error_and_the_server_goes_on(
    server: Path, data: bytes, error: str
) -> None:
    reply = raw_exchange(server, data)
    assert reply["ok"] is False
    assert reply["error"].startswith(error)
    assert request(server, "echo", value="still here")["echo"] == "still here"


def test_a_second_server_on_a_live_socket_is_refused(server: Path) -> None:
    loop = EventLoop()
    try:
        with pytest.raises(ControlError, match="already serving"):
            ControlServer(server, loop, lambda _r: {}).start()
    finally:
        loop.close()


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed node leaves
    loop = EventLoop()
    control = ControlServer(path, loop, lambda _r: {"ok": True})
    control.start()
    control.close()
    loop.close()
    assert not path.exists()


def test_asking_a_node_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no node is running"):
        request(tmp_path / "absent.sock", "status")


def test_command_line_ports() -> None:
    config = build_config(name="n1", taps=["ns1:eth0"], af_packets=["eth3", "ns2:veth9=outside"])
    assert [(p.kind, p.netns, p.ifname, p.network) for p in config.ports] == [
        (PortKind.TAP, "ns1", "eth0", "default"),
        (PortKind.AF_PACKET, None, "eth3", "default"),
        (PortKind.AF_PACKET, "ns2", "veth9", "outside"),
    ]
    assert config.control_path == Path("/run/pktchain/node-n1.sock")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "no ports"),
        ({"taps": ["eth0"]}, "--tap 'eth0': expected NETNS:IFNAME"),
        ({"taps": ["ns:"]}, "--tap 'ns:': expected NETNS:IFNAME"),
        ({"taps": ["ns:an-interface-name-too-long"]}, "must be 1-15 bytes"),
        ({"taps": ["ns:eth0="]}, "expected a network name after '='"),
        ({"taps": ["ns:eth0", "ns:eth0"]}, "ports declared twice: ns:eth0"),
        ({"taps": ["ns:eth0"], "mac_aging": 0}, "mac aging must be positive"),
    ],
)
def test_command_line_mistakes_are_named(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_config(name="n1", **kwargs)
