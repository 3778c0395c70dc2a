"""Shared code of the router pair tests in namespaces: reading a router's VRRP
and NAT tables as the node reports them, and traffic across the pair.

Holds no tests. The pair is `pktchain.demo.hapair`'s (client on the inside
LAN, server on the outside one); a router's tables are what ``pktchain node
router --json`` prints, read over the node's control socket.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Any

from pktchain.demo.hapair import CLIENT, SERVER, PktchainPair
from pktchain.lab import LabHost, wait_until

NatRow = tuple[str, str, int, str, int, bool, int]
"""(proto, internal address, internal port, external address, external port, static,
sessions): one row of a router's NAT table."""


def tables(pair: PktchainPair, router: str) -> dict[str, Any]:
    """All of `router`'s tables (its whole NAT table among them)."""
    return pair.nodes[router].router(limit=100_000)


def vrrp_states(router: dict[str, Any]) -> set[str]:
    """The states of a router's virtual routers (``{"master"}`` when it holds them all)."""
    return {v["state"] for v in router.get("vrrp") or []}


def nat_rows(router: dict[str, Any]) -> set[NatRow]:
    """A router's NAT table as a set of rows."""
    return {
        (
            row["proto"],
            row["internal_address"],
            int(row["internal_port"]),
            row["external_address"],
            int(row["external_port"]),
            bool(row["static"]),
            int(row["sessions"]),
        )
        for row in router["nat"]
    }


def sync_counters(router: dict[str, Any]) -> dict[str, int]:
    """The state sync protocol's counters of a router (sender's or receiver's)."""
    return dict(((router.get("ha") or {}).get("sync") or {}).get("counters") or {})


def link_counters(router: dict[str, Any]) -> dict[str, int]:
    """The state sync connection's counters of a router (`SyncLink.counters`)."""
    return dict((router.get("ha") or {}).get("link") or {})


def wait_ping(host: LabHost, address: str, *, timeout: float, what: str) -> None:
    """Until one ping from `host` to `address` is answered (each waits at most 1 s)."""

    def answered() -> bool:
        return host.run(["ping", "-n", "-c1", "-W1", address], timeout=5).ok

    wait_until(answered, timeout=timeout, what=what)


def link_mac(host: LabHost, ifname: str) -> str:
    """The MAC address of `host`'s interface `ifname`."""
    (link,) = json.loads(host.run(["ip", "-j", "link", "show", "dev", ifname], check=True).stdout)
    return str(link["address"])


def neighbour_mac(host: LabHost, address: str) -> str | None:
    """The MAC address `host`'s kernel holds for `address` (None if it holds none)."""
    found = json.loads(host.run(["ip", "-j", "neigh", "show", "to", address], check=True).stdout)
    macs = [str(entry["lladdr"]) for entry in found if entry.get("lladdr")]
    return macs[0] if macs else None


def udp_flows(client: LabHost, ports: Iterable[int], *, to_port: int = 9) -> None:
    """One datagram from each of the client's `ports` to the server: a NAT session each."""
    with ExitStack() as stack:
        for port in ports:
            sock = stack.enter_context(client.socket(socket.AF_INET, socket.SOCK_DGRAM))
            sock.bind((CLIENT, port))
            sock.sendto(b"pktchain ha test", (SERVER, to_port))


def held(condition: Callable[[], bool], *, samples: int, what: str) -> None:
    """`condition` true at each of `samples` readings in a row (one every 0.1 s at
    least: a state that holds across several advertisement intervals)."""
    for sample in range(samples):
        if not condition():
            raise AssertionError(f"{what}: no longer true at reading {sample + 1} of {samples}")
        if sample + 1 < samples:
            time.sleep(0.1)  # the observation's spacing, not a wait for something
