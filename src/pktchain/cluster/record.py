"""What a node's key in etcd holds, and where the keys are.

`NodeRecord` is the JSON of ``/pktchain/<cluster>/nodes/<name>``; the
underlay address is written ``IP:PORT`` (``[IPv6]:PORT``). This module
uses no etcd client, so the node's configuration can name its defaults
without loading one.
"""

from __future__ import annotations

import ipaddress
import json
import time
from dataclasses import dataclass
from typing import Any

from pktchain.errors import PktchainError
from pktchain.etcd.keys import DEFAULT_CLUSTER, check_segment, cluster_prefix
from pktchain.packet.headers import VXLAN_GPE_PORT

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_UNDERLAY_PORT",
    "ClusterError",
    "NodeNameTaken",
    "NodeRecord",
    "format_underlay",
    "node_key",
    "nodes_prefix",
    "parse_underlay",
]

DEFAULT_LEASE_TTL = 3.0
"""Seconds a dead node stays in the registry (``--lease-ttl``)."""

DEFAULT_UNDERLAY_PORT = VXLAN_GPE_PORT
"""UDP port of VXLAN-GPE, which carries NSH between nodes."""


def nodes_prefix(cluster: str = DEFAULT_CLUSTER) -> bytes:
    """``/pktchain/<cluster>/nodes/``."""
    return (cluster_prefix(cluster) + "nodes/").encode()


def node_key(cluster: str, name: str) -> bytes:
    """``/pktchain/<cluster>/nodes/<name>``."""
    return nodes_prefix(cluster) + check_segment("node name", name).encode()


# --- underlay addresses --------------------------------------------------------------------


def parse_underlay(text: str, *, default_port: int = DEFAULT_UNDERLAY_PORT) -> tuple[str, int]:
    """``IP[:PORT]`` (an IPv6 address with a port in brackets, ``[2001:db8::1]:4790``)
    as (address, port); ValueError naming what is wrong."""
    value = text.strip()
    host, port_text = value, ""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"underlay {text!r}: expected IP[:PORT] or [IPv6]:PORT")
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"underlay {text!r}: {host!r} is not an IP address") from None
    port = default_port
    if port_text or value.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ValueError(f"underlay {text!r}: port must be 1-65535")
        port = int(port_text)
    return str(address), port


def format_underlay(underlay: tuple[str, int]) -> str:
    """(address, port) as ``IP:PORT``, ``[IPv6]:PORT``."""
    host, port = underlay
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- records --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRecord:
    """What the cluster knows of a node: its `name`, the `underlay` address its
    chained traffic arrives on (None: not given), its REST API's URL (None:
    it serves none), the ids of its ports that are down, and when it started
    (seconds since the epoch)."""

    name: str
    underlay: tuple[str, int] | None = None
    api: str | None = None
    ports_down: tuple[str, ...] = ()
    started: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "underlay": format_underlay(self.underlay) if self.underlay is not None else None,
            "api": self.api,
            "ports_down": list(self.ports_down),
            "started": self.started,
        }

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: object) -> NodeRecord:
        """ValueError naming the field that is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a node record must be a JSON object")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError("node record: 'name' must be a non-empty string")
        underlay = data.get("underlay")
        if underlay is not None and not isinstance(underlay, str):
            raise ValueError(f"node record {name}: 'underlay' must be \"IP:PORT\" or null")
        api = data.get("api")
        if api is not None and not isinstance(api, str):
            raise ValueError(f"node record {name}: 'api' must be a URL or null")
        ports = data.get("ports_down", [])
        if not isinstance(ports, list) or not all(isinstance(p, str) for p in ports):
            raise ValueError(f"node record {name}: 'ports_down' must be a list of port ids")
        started = data.get("started", 0.0)
        if isinstance(started, bool) or not isinstance(started, int | float):
            raise ValueError(f"node record {name}: 'started' must be a number")
        return cls(
            name=name,
            underlay=parse_underlay(underlay) if underlay is not None else None,
            api=api,
            ports_down=tuple(ports),
            started=float(started),
        )

    @classmethod
    def decode(cls, value: bytes) -> NodeRecord:
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"node record is not JSON ({exc})") from exc
        return cls.from_json(data)


# --- errors ----------------------------------------------------------------------------------


class ClusterError(PktchainError):
    """A node cannot take its place in the cluster as asked."""


class NodeNameTaken(ClusterError):  # noqa: N818 - named for what it says
    """Another running node holds the name; `holder` is its record (None if unreadable)."""

    def __init__(self, cluster: str, name: str, holder: NodeRecord | None, ttl: int) -> None:
        what = ""
        if holder is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.started))
            underlay = format_underlay(holder.underlay) if holder.underlay else "none"
            what = f" (underlay {underlay}, API {holder.api or 'none'}, started {since})"
        super().__init__(
            f"node {name} is already registered in cluster {cluster}{what}: a node's name is "
            f"free again once it stops, or once its lease ({ttl} s) expires after it died"
        )
        self.cluster = cluster
        self.name = name
        self.holder = holder
