"""``pktchain tunnel``'s options: the original's names and defaults, and every mistake
reported on one line with exit status 2."""

from __future__ import annotations

import argparse
from ipaddress import ip_address, ip_interface
from pathlib import Path

import pytest

from pktchain.cli import main
from pktchain.tunnel import cli as tunnel_cli
from pktchain.tunnel.client import Backoff
from pktchain.tunnel.config import Mode, Transport, TunnelConfigError, tunnel_config

KEY = b"0123456789abcdef-tunnel-test-key"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    tunnel_cli.register(parser.add_subparsers())
    return parser.parse_args(["tunnel", *argv])


def config_of(args: argparse.Namespace, key: bytes | None = KEY, no_auth: bool = False):  # type: ignore[no-untyped-def]
    return tunnel_config(
        mode=args.mode, transport=args.transport,
        server_interface=args.serverinterface, client_interface=args.clientinterface,
        server_ip=args.serverip, client_ip=args.clientip, prefix_length=args.prefix_length,
        inport=args.inport, outport=args.outport, remote_ip=args.remoteip,
        listen_ip=args.listen, mtu=args.mtu, key=key, no_auth=no_auth,
        handshake_timeout=args.handshake_timeout, max_connections=args.max_connections,
    )  # fmt: skip


def test_defaults_are_the_originals() -> None:
    config = config_of(parse())
    assert config.mode is Mode.BOTH and config.transport is Transport.TCP and config.mtu == 1500
    assert config.server is not None and config.client is not None
    assert config.server.interface == "tun0"
    assert config.server.address == ip_interface("192.168.0.2/24")
    assert config.server.port == 55556
    assert config.client.interface == "tun1"
    assert config.client.address == ip_interface("192.168.1.2/24")
    assert config.client.remote == ip_address("127.0.0.1")
    assert config.client.port == 55555
    assert (config.handshake_timeout, config.max_connections) == (5.0, 1024)


def test_the_limits_are_options() -> None:
    config = config_of(parse("--handshake-timeout", "2.5", "--max-connections", "8"))
    assert (config.handshake_timeout, config.max_connections) == (2.5, 8)


def test_the_originals_short_options() -> None:
    args = parse(
        "-p", "tsrv", "-n", "tcli", "-s", "10.0.0.2", "-c", "10.0.0.3", "-i", "5000",
        "-o", "6000", "-r", "192.0.2.1", "-m", "CLIENT", "-l", "16",
    )  # fmt: skip
    config = config_of(args)
    assert config.mode is Mode.CLIENT and config.server is None
    assert config.client is not None
    assert config.client.interface == "tcli"
    assert config.client.address == ip_interface("10.0.0.3/16")
    assert (config.client.remote, config.client.port) == (ip_address("192.0.2.1"), 6000)
    server = config_of(parse("-m", "server", "-p", "tsrv", "-s", "10.0.0.2", "-i", "5000"))
    assert server.server is not None and server.client is None
    assert (server.server.interface, server.server.port) == ("tsrv", 5000)


def test_the_key_never_shows_in_the_config_repr() -> None:
    assert KEY.decode() not in repr(config_of(parse()))


def test_every_mistake_is_reported_at_once() -> None:
    args = parse("-m", "both", "-i", "0", "-o", "x", "-s", "10.0.0.300", "-p", "a/b", "--mtu", "9")
    with pytest.raises(TunnelConfigError) as info:
        config_of(args)
    issues = info.value.issues
    assert any(i.startswith("--inport: 0 is not in 1-65535") for i in issues)
    assert any(i.startswith("--outport: 'x' is not a number") for i in issues)
    assert any(i.startswith("--serverip: '10.0.0.300'") for i in issues)
    assert any(i.startswith("--serverinterface:") for i in issues)
    assert any(i.startswith("--mtu: 9 is not in 68-65535") for i in issues)


@pytest.mark.parametrize(
    ("options", "key", "no_auth", "message"),
    [
        ((), None, False, "a key is required"),
        ((), KEY, True, "--no-auth and --key-file exclude each other"),
        (("--transport", "udp"), KEY, False, "--transport udp has no authentication"),
        ((), b"short", False, "--key-file: the key must be at least 16 bytes"),
        (("-m", "sideways"), KEY, False, "--mode: 'sideways' is not one of client, server, both"),
        (("-n", "tun0"), KEY, False, "--serverinterface and --clientinterface are both 'tun0'"),
        (("-l", "33"), KEY, False, "--prefix-length: 33 is too long for --serverip"),
        (("-s", "fd00::1", "-l", "64", "--mtu", "1000"), KEY, False, "below 1280"),
        # TunConnector's client example gives the server's address as -i (the port).
        (("-m", "client", "-i", "192.168.6.9"), KEY, False, "--inport: '192.168.6.9' is not a num"),
        (("--handshake-timeout", "0"), KEY, False, r"--handshake-timeout: 0 is not in \(0, 3600\]"),
        (
            ("--handshake-timeout", "soon"),
            KEY,
            False,
            "--handshake-timeout: 'soon' is not a number",
        ),
        (("--max-connections", "0"), KEY, False, "--max-connections: 0 is not in 1-65535"),
    ],
)
def test_refusals(options: tuple[str, ...], key: bytes | None, no_auth: bool, message: str) -> None:
    with pytest.raises(TunnelConfigError, match=message):
        config_of(parse(*options), key=key, no_auth=no_auth)


def test_udp_without_auth_and_ipv6_are_fine() -> None:
    config = config_of(
        parse("--transport", "udp", "-s", "fd00::1", "-c", "fd00::2", "-l", "64", "-r", "::1"),
        key=None,
        no_auth=True,
    )
    assert config.transport is Transport.UDP and config.key is None
    assert config.client is not None and config.client.remote == ip_address("::1")


def test_the_command_line_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(tunnel_cli.KEY_FILE_ENV, raising=False)
    assert main(["tunnel", "-m", "server"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pktchain: a key is required")


def test_an_unreadable_key_file_is_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    assert main(["tunnel", "--key-file", str(missing)]) == 2
    assert f"--key-file {missing}: No such file or directory" in capsys.readouterr().err


def test_the_environments_key_file_is_ignored_with_no_auth(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(tunnel_cli.KEY_FILE_ENV, str(tmp_path / "missing"))
    # The key file would be unreadable; with --no-auth it is not read at all,
    # and the next problem reported is the bad port.
    assert main(["tunnel", "--no-auth", "-i", "99999", "-m", "server"]) == 2
    assert "--inport: 99999 is not in 1-65535" in capsys.readouterr().err


def test_the_key_file_loses_its_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY + b"\n")
    assert tunnel_cli.read_key(str(path)) == KEY


def test_help_lists_the_originals_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["tunnel", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("-p X, --serverinterface X", "-n X, --clientinterface X", "-s X, --serverip X",
                   "-c X, --clientip X", "-i X, --inport X", "-o X, --outport X",
                   "-r X, --remoteip X", "-m {client,server,both}", "-h, --help"):  # fmt: skip
        assert option in out


def test_backoff_doubles_to_its_bound_and_starts_over() -> None:
    backoff = Backoff()
    delays = [backoff.next() for _ in range(8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    backoff.reset()
    assert backoff.next() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="initial"):
        Backoff(0, 1)
