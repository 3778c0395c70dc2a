"""What a tunnel process runs: its mode, transport, ends and key, checked at once.

`tunnel_config` takes the options as the user wrote them (text, defaults
applied by the command line) and returns a `TunnelConfig`, or raises
`TunnelConfigError` listing every problem found, each naming its option.
Every option is checked, also those of an end the mode does not run.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from pktchain.tunnel.auth import check_key
from pktchain.tunnel.device import check_ifname
from pktchain.tunnel.server import MAX_CONNECTIONS
from pktchain.tunnel.session import HANDSHAKE_TIMEOUT
from pktchain.tunnel.wire import MAX_LENGTH

__all__ = [
    "ClientSettings",
    "Mode",
    "ServerSettings",
    "Transport",
    "TunnelConfig",
    "TunnelConfigError",
    "tunnel_config",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

MIN_MTU_V4 = 68  # RFC 791 §3.2: every module must take a 68-byte datagram
MIN_MTU_V6 = 1280  # RFC 8200 §5
MAX_HANDSHAKE_TIMEOUT = 3600.0
MAX_MAX_CONNECTIONS = 65535


class Mode(StrEnum):
    CLIENT = "client"
    SERVER = "server"
    BOTH = "both"


class Transport(StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class ServerSettings:
    interface: str
    address: IPInterface
    listen: IPAddress
    port: int


@dataclass(frozen=True)
class ClientSettings:
    interface: str
    address: IPInterface
    remote: IPAddress
    port: int


@dataclass(frozen=True)
class TunnelConfig:
    mode: Mode
    transport: Transport
    mtu: int
    server: ServerSettings | None
    client: ClientSettings | None
    key: bytes | None = field(repr=False)
    """The pre-shared key; None runs without authentication (--no-auth)."""
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    """Seconds a TCP connection has to connect and finish its handshake."""
    max_connections: int = MAX_CONNECTIONS
    """TCP connections the server end holds at once."""


class TunnelConfigError(ValueError):
    """The options are wrong; `issues` names each problem with its option."""

    def __init__(self, issues: list[str]) -> None:
        self.issues = issues
        super().__init__("; ".join(issues))


def tunnel_config(
    *,
    mode: str,
    transport: str,
    server_interface: str,
    client_interface: str,
    server_ip: str,
    client_ip: str,
    prefix_length: str,
    inport: str,
    outport: str,
    remote_ip: str,
    listen_ip: str,
    mtu: str,
    key: bytes | None,
    no_auth: bool,
    handshake_timeout: str = f"{HANDSHAKE_TIMEOUT:g}",
    max_connections: str = str(MAX_CONNECTIONS),
) -> TunnelConfig:
    """Check every option and build the configuration (see the module docstring)."""
    issues: list[str] = []

    def choice(option: str, text: str, kind: type[Mode] | type[Transport]) -> str | None:
        value = text.strip().lower()  # the original compared modes ignoring case
        if value not in {str(member) for member in kind}:
            issues.append(f"{option}: {text!r} is not one of {', '.join(kind)}")
            return None
        return value

    def number(option: str, text: str, low: int, high: int) -> int | None:
        try:
            value = int(text, 10)
        except ValueError:
            issues.append(f"{option}: {text!r} is not a number")
            return None
        if not low <= value <= high:
            issues.append(f"{option}: {value} is not in {low}-{high}")
            return None
        return value

    def address(option: str, text: str) -> IPAddress | None:
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            issues.append(f"{option}: {text!r} is not an IPv4 or IPv6 address")
            return None

    def interface(option: str, text: str) -> str | None:
        try:
            check_ifname(text)
        except ValueError as exc:
            issues.append(f"{option}: {exc}")
            return None
        return text

    def seconds(option: str, text: str) -> float | None:
        try:
            value = float(text)
        except ValueError:
            issues.append(f"{option}: {text!r} is not a number of seconds")
            return None
        if not 0 < value <= MAX_HANDSHAKE_TIMEOUT:
            issues.append(f"{option}: {text} is not in (0, {MAX_HANDSHAKE_TIMEOUT:g}] seconds")
            return None
        return value

    mode_text = choice("--mode", mode, Mode)
    timeout_value = seconds("--handshake-timeout", handshake_timeout)
    connections_value = number("--max-connections", max_connections, 1, MAX_MAX_CONNECTIONS)
    transport_text = choice("--transport", transport, Transport)
    mtu_value = number("--mtu", mtu, MIN_MTU_V4, MAX_LENGTH)
    prefix = number("--prefix-length", prefix_length, 0, 128)

    def tunnel_address(option: str, text: str) -> IPInterface | None:
        ip = address(option, text)
        if ip is None or prefix is None:
            return None
        if prefix > ip.max_prefixlen:
            issues.append(f"--prefix-length: {prefix} is too long for {option} {ip}")
            return None
        if ip.version == 6 and mtu_value is not None and mtu_value < MIN_MTU_V6:
            issues.append(f"--mtu: {mtu_value} is below {MIN_MTU_V6}, the IPv6 minimum ({option})")
        return ipaddress.ip_interface(f"{ip}/{prefix}")

    # Every option is checked, whatever the mode: a mistake in one the mode does
    # not use (a server address given as --inport) is still a mistake.
    s_if = interface("--serverinterface", server_interface)
    s_ip = tunnel_address("--serverip", server_ip)
    listen = address("--listen", listen_ip)
    s_port = number("--inport", inport, 1, 65535)
    c_if = interface("--clientinterface", client_interface)
    c_ip = tunnel_address("--clientip", client_ip)
    remote = address("--remoteip", remote_ip)
    c_port = number("--outport", outport, 1, 65535)
    chosen = Mode(mode_text) if mode_text is not None else None
    server = client = None
    if (
        chosen in (Mode.SERVER, Mode.BOTH)
        and s_if is not None
        and s_ip is not None
        and listen is not None
        and s_port is not None
    ):
        server = ServerSettings(s_if, s_ip, listen, s_port)
    if (
        chosen in (Mode.CLIENT, Mode.BOTH)
        and c_if is not None
        and c_ip is not None
        and remote is not None
        and c_port is not None
    ):
        client = ClientSettings(c_if, c_ip, remote, c_port)
    if chosen is Mode.BOTH and server_interface == client_interface:
        issues.append(f"--serverinterface and --clientinterface are both {server_interface!r}")

    if no_auth and key is not None:
        issues.append("--no-auth and --key-file exclude each other")
    elif transport_text == Transport.UDP and not no_auth:
        issues.append("--transport udp has no authentication: it needs --no-auth")
    elif not no_auth and key is None:
        issues.append(
            "a key is required (--key-file FILE or $PKTCHAIN_TUNNEL_KEY_FILE), "
            "or --no-auth for the original's unauthenticated wire"
        )
    elif key is not None:
        try:
            check_key(key)
        except ValueError as exc:
            issues.append(f"--key-file: {exc}")

    if (
        issues
        or chosen is None
        or transport_text is None
        or mtu_value is None
        or timeout_value is None
        or connections_value is None
    ):
        raise TunnelConfigError(issues)
    return TunnelConfig(
        chosen,
        Transport(transport_text),
        mtu_value,
        server,
        client,
        key,
        handshake_timeout=timeout_value,
        max_connections=connections_value,
    )
