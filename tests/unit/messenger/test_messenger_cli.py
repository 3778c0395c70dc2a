"""``pktchain messenger send``: arguments typed from the operation's declaration,
the secret from a file, results as JSON, refusals as one line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pktchain.cli import UsageError
from pktchain.messenger import cli as messenger_cli
from pktchain.messenger.server import MessengerServer

SECRET = b"a shared secret of 32 bytes ...."


class Router:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def add_interface(self, interface: object, /) -> None:
        self.calls.append(("add_interface", (interface,)))

    def remove_interface(self, name: str, /) -> None:
        self.calls.append(("remove_interface", (name,)))

    def add_host(self, mac: str, ip: object, network_id: str = "", /) -> dict[str, str]:
        self.calls.append(("add_host", (mac, ip, network_id)))
        return {"mac": mac, "ip": str(ip)}

    def remove_host(self, mac_or_ip: str, /) -> None:
        self.calls.append(("remove_host", (mac_or_ip,)))

    def hosts(self) -> list[object]:
        return []

    def add_port_forward(self, proto: str, external_port: int, ip: object, port: int, /) -> None:
        self.calls.append(("add_port_forward", (proto, external_port, ip, port)))

    def remove_port_forward(self, proto: str, external_port: int, /) -> None:
        self.calls.append(("remove_port_forward", (proto, external_port)))


@pytest.fixture
def router() -> Router:
    return Router()


@pytest.fixture
def server(router: Router) -> Iterator[MessengerServer]:
    with MessengerServer(router, SECRET, port=0, make_interface=lambda nic: nic) as running:
        yield running


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    return path


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pktchain")
    messenger_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


def test_parse_assignments_types_values_as_declared() -> None:
    assert messenger_cli.parse_assignments(
        "router_nic_add", ["name=eth0", "external=true", "mtu=9000", "mac=02:00:00:00:00:01"]
    ) == {"name": "eth0", "external": True, "mtu": 9000, "mac": "02:00:00:00:00:01"}
    assert messenger_cli.parse_assignments("port_forward_add", ["external_port=x"]) == {
        "external_port": "x"
    }
    assert messenger_cli.parse_assignments("no_such_op", ["a=1"]) == {"a": "1"}
    for words in (["name"], ["=x"], ["a=1", "a=2"]):
        with pytest.raises(UsageError):
            messenger_cli.parse_assignments("hosts", words)


def test_send_prints_the_result(
    server: MessengerServer,
    router: Router,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["--port", str(server.port), "--secret-file", str(secret_file)]
    argv = ["messenger", "send", "host_nic_add", "mac=02:00:00:00:01:02", "ip=10.0.1.2", *common]
    assert run(argv) == 0
    assert json.loads(capsys.readouterr().out) == {"mac": "02:00:00:00:01:02", "ip": "10.0.1.2"}
    argv = ["messenger", "send", "port_forward_add", "proto=udp", "external_port=53"]
    assert run([*argv, "inside_ip=10.0.1.2", "inside_port=5353", *common]) == 0
    assert router.calls[-1][1][:2] == ("udp", 53)


def test_send_reports_a_refusal_with_its_field(
    server: MessengerServer,
    router: Router,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["messenger", "send", "router_nic_add", "name=eth1", "mac=02:00:00:00:01:01"]
    argv += ["ip=10.0.1.1", "subnet=10.0.1.0/24", "mtu=big"]
    argv += ["--port", str(server.port), "--secret-file", str(secret_file)]
    assert run(argv) == 1
    assert "InvalidArgument: args.mtu: 'big' is not an integer" in capsys.readouterr().err
    assert router.calls == []


def test_send_needs_a_secret_or_insecure(server: MessengerServer, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--secret-file"):
        run(["messenger", "send", "hosts", "--port", str(server.port), "--secret-file", ""])
    missing = str(tmp_path / "missing")
    with pytest.raises(UsageError, match="No such file"):
        run(["messenger", "send", "hosts", "--port", str(server.port), "--secret-file", missing])


def test_send_to_nothing_fails_cleanly(
    secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with MessengerServer(Router(), SECRET, port=0) as server:
        port = server.port
    argv = ["messenger", "send", "hosts", "--port", str(port), "--secret-file", str(secret_file)]
    assert run(argv) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
