"""Configuration of the L4 load balancer: virtual services, backends, health checks, limits.

The dataclasses below are the schema :mod:`pktchain.functions.sdk.schema` reads a
mapping into (every wrong field reported with its dotted path); the checks
that involve several fields (a VIP used twice, a backend on the load
balancer's own address, one backend IP with two MACs) are in
:func:`config_errors`, which the load balancer runs before it takes a
configuration. Timeouts default to the values the BEHAVE RFCs give a NAT, as
:class:`pktchain.functions.nat.config.NatConfig` does: toward the backends the
load balancer is a NAPT from its ``source_ip``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address
from typing import Any

from pktchain.functions.common.fields import PROTOCOLS, mac_error
from pktchain.functions.loadbalancer.health import HealthState
from pktchain.functions.loadbalancer.maglev import DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE, is_prime
from pktchain.functions.sdk.schema import FieldError, check
from pktchain.packet.address import mac_bytes

__all__ = [
    "MAX_WEIGHT",
    "Backend",
    "HealthCheck",
    "LoadBalancerConfig",
    "Protocol",
    "Service",
    "config_errors",
]

MAX_WEIGHT = 1000
"""Largest backend weight: with the default table a weight-1 backend beside
weight-1000 ones still owns a few slots."""


class Protocol(Enum):
    """The transport protocol of a virtual service."""

    TCP = "tcp"
    UDP = "udp"

    @property
    def number(self) -> int:
        """The IP protocol number."""
        return PROTOCOLS[self.value]


def _mac_error(value: str) -> str | None:
    return mac_error(value, unicast=True)


def _host_error(value: IPv4Address) -> str | None:
    # RFC 1812 §5.3.7 / RFC 1122 §3.2.1.3: addresses that cannot name one host.
    if value.is_unspecified or value.is_loopback or value.is_multicast:
        return f"{value} cannot be a host address"
    if value.is_reserved or value == IPv4Address("255.255.255.255"):
        return f"{value} cannot be a host address"
    return None


def _port(help_text: str) -> dict[str, Any]:
    return check(minimum=1, maximum=65535, help=help_text)


@dataclass(frozen=True, slots=True)
class Backend:
    """A real server of a service: where connections go, and how much of them."""

    ip: IPv4Address = field(
        metadata=check(
            test=_host_error,
            help="where its connections go; ip:port is its identity (and its Maglev permutation)",
        )
    )
    port: int = field(metadata=_port("its port; a service's backends are unique by ip:port"))
    weight: int = field(
        default=1,
        metadata=check(
            minimum=1,
            maximum=MAX_WEIGHT,
            help="share of new connections, relative to the other backends of the service",
        ),
    )
    mac: str | None = field(
        default=None,
        metadata=check(
            test=_mac_error,
            help="where to send its frames: its own MAC, or that of the router leading to it; "
            "none: resolved by ARP on the backend interface. One IP has one MAC across services",
        ),
    )
    draining: bool = field(
        default=False,
        metadata=check(
            help="take no new connections; the ones it has go on until they end or "
            "drain_timeout runs out"
        ),
    )
    check_port: int | None = field(
        default=None,
        metadata=_port(
            "TCP port its health check connects to; none: port for a TCP service, no health "
            "check for a UDP service"
        ),
    )

    @property
    def name(self) -> str:
        """``ip:port``: the backend's identity (and its Maglev permutation)."""
        return f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class Service:
    """A virtual service: ``vip:port/proto`` spread over its backends."""

    vip: IPv4Address = field(
        metadata=check(
            test=_host_error,
            help="the virtual IP, a unicast host address; several services may share it",
        )
    )
    port: int = field(metadata=_port("the virtual port"))
    proto: Protocol = field(
        default=Protocol.TCP, metadata=check(help="tcp or udp; vip:port/proto is unique")
    )
    backends: tuple[Backend, ...] = field(
        default=(), metadata=check(help="the real servers, unique by ip:port")
    )
    name: str = field(
        default="", metadata=check(help="a label for listings, unique; empty: vip:port/proto")
    )

    @property
    def label(self) -> str:
        return self.name or f"{self.vip}:{self.port}/{self.proto.value}"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active TCP checks of every backend, sent through the dataplane (HAProxy's defaults)."""

    enabled: bool = field(default=True, metadata=check(help="false: every backend counts as up"))
    interval: float = field(
        default=2.0,
        metadata=check(
            minimum=0.01, help="seconds between two checks of a backend (HAProxy inter)"
        ),
    )
    timeout: float = field(
        default=1.0,
        metadata=check(
            minimum=0.001, help="seconds a check waits for the SYN-ACK; at most interval"
        ),
    )
    rise: int = field(
        default=2,
        metadata=check(
            minimum=1, maximum=1000, help="consecutive successes that bring a down backend up"
        ),
    )
    fall: int = field(
        default=3,
        metadata=check(
            minimum=1, maximum=1000, help="consecutive failures that take an up backend down"
        ),
    )
    init_state: HealthState = field(
        default=HealthState.UP,
        metadata=check(
            help="a new backend's state before its first check: up takes connections at once "
            "and goes down on one failure; down waits for one success (HAProxy's init-state)"
        ),
    )


def _table_size_error(value: int) -> str | None:
    if not 3 <= value <= MAX_TABLE_SIZE:
        return None  # the bounds say what is wrong, without a long primality test
    return None if is_prime(value) else f"{value} is not prime (Maglev needs a prime size)"


def _seconds(default: float, help_text: str, minimum: float = 0.001) -> Any:
    return field(default=default, metadata=check(minimum=minimum, help=help_text))


@dataclass(frozen=True, slots=True)
class LoadBalancerConfig:
    """The whole configuration of a load balancer (see docs/functions/load-balancer.md)."""

    frontend_mac: str = field(
        metadata=check(
            test=_mac_error, help="MAC of the frontend interface, where the VIPs are answered for"
        )
    )
    backend_mac: str = field(
        metadata=check(
            test=_mac_error,
            help="MAC of the backend interface, where source_ip is answered for; not frontend_mac",
        )
    )
    source_ip: IPv4Address = field(
        metadata=check(
            test=_host_error,
            help="the address connections to backends come from (SNAT), and health checks "
            "too; not a VIP nor a backend",
        )
    )
    services: tuple[Service, ...] = field(default=(), metadata=check(help="the virtual services"))
    table_size: int = field(
        default=DEFAULT_TABLE_SIZE,
        metadata=check(
            minimum=3,
            maximum=MAX_TABLE_SIZE,
            test=_table_size_error,
            help="Maglev lookup table size M, a prime; well above 100 x backends per service",
        ),
    )
    health: HealthCheck = field(
        default=HealthCheck(), metadata=check(help="the health checks of every backend")
    )
    drain_timeout: float = _seconds(
        300.0,
        "seconds a draining or removed backend's connections may go on before they are cut",
        minimum=0.0,
    )
    tcp_established_timeout: float = _seconds(
        7440.0, "idle timeout of an established connection (RFC 5382 REQ-5: 2 h 4 min)"
    )
    tcp_opening_timeout: float = _seconds(
        240.0, "idle timeout while opening (RFC 6146 TCP_TRANS, RFC 7857 §2.1)"
    )
    tcp_closing_timeout: float = _seconds(
        240.0, "timeout after both FINs or a RST (RFC 7857 §2.1, §2.2)"
    )
    udp_timeout: float = _seconds(
        300.0, "idle timeout of a UDP flow (RFC 4787 REQ-5: 5 min recommended)"
    )
    max_connections: int = field(
        default=200_000,
        metadata=check(
            minimum=1, help="connections tracked at once; new ones beyond are dropped (table-full)"
        ),
    )
    snat_port_min: int = field(
        default=1024,
        metadata=_port("lowest source port of source_ip given to connections and health checks"),
    )
    snat_port_max: int = field(
        default=65535,
        metadata=_port("highest such port; ports are unique per backend ip:port and protocol"),
    )
    arp_timeout: float = _seconds(
        60.0, "a resolved backend MAC is verified again after this (RFC 1122 §2.3.2.1)"
    )
    arp_retry_interval: float = _seconds(1.0, "seconds between two ARP requests for one address")
    arp_retries: int = field(
        default=3,
        metadata=check(minimum=1, maximum=100, help="ARP requests before an address is given up"),
    )
    arp_queue_limit: int = field(
        default=8,
        metadata=check(
            minimum=0,
            maximum=1024,
            help="packets held per backend while its MAC is resolved; the oldest goes first "
            "(RFC 1122 §2.3.2.2)",
        ),
    )


def config_errors(config: LoadBalancerConfig) -> list[FieldError]:
    """What is wrong across fields, each with its dotted path; empty when nothing."""
    errors: list[FieldError] = []
    if mac_bytes(config.frontend_mac) == mac_bytes(config.backend_mac):
        errors.append(
            FieldError("backend_mac", "must differ from frontend_mac (both may join one network)")
        )
    if config.snat_port_min > config.snat_port_max:
        errors.append(
            FieldError("snat_port_max", f"is below snat_port_min ({config.snat_port_min})")
        )
    if config.health.timeout > config.health.interval:
        errors.append(
            FieldError("health.timeout", f"exceeds health.interval ({config.health.interval})")
        )
    vips = {s.vip for s in config.services}
    seen: dict[tuple[IPv4Address, int, Protocol], int] = {}
    labels: dict[str, int] = {}
    macs: dict[IPv4Address, tuple[str, bytes]] = {}
    for i, service in enumerate(config.services):
        where = f"services[{i}]"
        key = (service.vip, service.port, service.proto)
        if key in seen:
            errors.append(FieldError(where, f"repeats services[{seen[key]}] ({service.label})"))
        seen.setdefault(key, i)
        if service.label in labels:
            errors.append(
                FieldError(
                    f"{where}.name", f"repeats the name of services[{labels[service.label]}]"
                )
            )
        labels.setdefault(service.label, i)
        if service.vip == config.source_ip:
            errors.append(FieldError(f"{where}.vip", "is the source_ip"))
        if len(service.backends) > config.table_size:
            errors.append(
                FieldError(
                    f"{where}.backends", f"more backends than table_size {config.table_size}"
                )
            )
        names: dict[tuple[IPv4Address, int], int] = {}
        for k, backend in enumerate(service.backends):
            at = f"{where}.backends[{k}]"
            if (backend.ip, backend.port) in names:
                errors.append(
                    FieldError(at, f"repeats backends[{names[backend.ip, backend.port]}]")
                )
            names.setdefault((backend.ip, backend.port), k)
            if backend.ip == config.source_ip or backend.ip in vips:
                errors.append(FieldError(f"{at}.ip", "is an address of the load balancer"))
            if backend.mac is None:
                continue
            mac = mac_bytes(backend.mac)
            if backend.ip in macs and macs[backend.ip][1] != mac:
                errors.append(
                    FieldError(f"{at}.mac", f"differs from {macs[backend.ip][0]} for the same ip")
                )
            macs.setdefault(backend.ip, (f"{at}.mac", mac))
    return errors
