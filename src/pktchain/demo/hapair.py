"""A pktchain router pair in a lab: two nodes, each a "machine" of its own, on two LANs.

The demo (`pktchain demo ha`), the failover benchmark (`bench/failover.py`)
and the tests build the same pair:

- an inside LAN (Linux bridge ``lan``) with a client whose gateway is the
  pair's inside virtual address, and an outside LAN (``wan``) with a server;
- two router hosts, r1 and r2, each with an interface on each LAN and a
  point-to-point link between them for the state sync. Each runs its own
  `pktchain node` in its own namespace, with the router on AF_PACKET ports
  of its two LAN interfaces, VRRP on both sides (r1 the higher priority,
  preempting), the NAT on the outside virtual address, and the state sync
  over the link (docs/ha.md).

The router hosts' LAN interfaces have no kernel address: the node's router
owns the addresses. Failures are made as a crash is (the node SIGKILLed, its
links then set down; or, silently, its sync link down first, as when the whole
machine dies) or as a clean stop (SIGTERM).
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, LabError, wait_until
from pktchain.lab.links import Netlink, wait_links_up
from pktchain.lab.probe import Endpoints
from pktchain.node.process import NodeProcess

__all__ = ["CLIENT", "OUTSIDE_VIP", "SERVER", "PktchainPair", "pair_topology", "router_file"]

INSIDE_NET, OUTSIDE_NET, SYNC_NET = "10.0.0", "198.51.100", "10.255.0"
INSIDE_VIP, OUTSIDE_VIP = f"{INSIDE_NET}.1", f"{OUTSIDE_NET}.1"
CLIENT, SERVER = f"{INSIDE_NET}.10", f"{OUTSIDE_NET}.10"
ROUTERS = {"r1": (150, 2), "r2": (100, 3)}
"""Each router's priority and the last byte of its own addresses."""
LINKS = ("inside", "outside", "sync")
STATE_TIMEOUT_S = 20.0


def pair_topology(name: str, *, kernel_addresses: bool = False) -> dict[str, Any]:
    """The lab: client, server, two routers on both LANs, a sync link between them.

    `kernel_addresses` gives the routers' LAN interfaces their addresses in the
    kernel (for routers that are Linux itself, such as keepalived's); a
    pktchain router owns them in the node instead.
    """
    hosts: dict[str, Any] = {
        "client": {
            "interfaces": {"eth0": {"attach": "lan", "addresses": [f"{CLIENT}/24"]}},
            "routes": [{"to": "default", "via": INSIDE_VIP}],
        },
        # No route to the inside: the server reaches the client only through the NAT.
        "server": {"interfaces": {"eth0": {"attach": "wan", "addresses": [f"{SERVER}/24"]}}},
    }
    for number, (router, (_, byte)) in enumerate(ROUTERS.items(), start=1):
        sync: dict[str, Any] = {"addresses": [f"{SYNC_NET}.{number}/30"]}
        if router == "r1":
            sync["attach"] = "r2.sync"
        inside: dict[str, Any] = {"attach": "lan"}
        outside: dict[str, Any] = {"attach": "wan"}
        if kernel_addresses:
            inside["addresses"] = [f"{INSIDE_NET}.{byte}/24"]
            outside["addresses"] = [f"{OUTSIDE_NET}.{byte}/24"]
        hosts[router] = {"interfaces": {"inside": inside, "outside": outside, "sync": sync}}
        if kernel_addresses:
            hosts[router]["sysctls"] = {"net.ipv4.ip_forward": 1}
    return {"lab": name, "bridges": ["lan", "wan"], "hosts": hosts}


def router_file(
    router: str,
    *,
    advert_interval: float = 0.1,
    preempt_delay: float = 1.0,
    priority: int | None = None,
    track: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The router file of `router` (r1 or r2): the same on both but for the
    priority, the MACs and the routers' own addresses.

    `priority` replaces the router's own (150 for r1, 100 for r2); `track`
    lists trackers (docs/vrrp.md) that every virtual router of this router
    follows.
    """
    default, byte = ROUTERS[router]
    vrrp: dict[str, Any] = {
        "priority": default if priority is None else priority,
        "advert_interval": advert_interval,
        "preempt_delay": preempt_delay,
    }
    return {
        "name": "router",
        "interfaces": {
            "inside": {
                "network": "inside",
                "mac": f"02:00:00:00:01:{byte:02x}",
                "address": f"{INSIDE_NET}.{byte}/24",
            },
            "outside": {
                "network": "outside",
                "mac": f"02:00:00:00:02:{byte:02x}",
                "address": f"{OUTSIDE_NET}.{byte}/24",
                "external": True,
                "gateway": SERVER,
            },
        },
        "nat": {},
        "vrrp": [
            {
                "vrid": vrid,
                "interface": interface,
                "virtual_addresses": [address],
                **vrrp,
                # A list of its own for each (the YAML file has no aliases).
                **({"track": [dict(tracker) for tracker in track]} if track else {}),
            }
            for vrid, interface, address in (
                (52, "outside", OUTSIDE_VIP),
                (51, "inside", INSIDE_VIP),
            )
        ],
    }


@dataclass
class PktchainPair:
    """Two pktchain routers (see the module docstring), with the failover benchmark's
    contender interface: `setup`, `kill_master`, `clean_stop_master`, `restart`,
    `teardown`.

    `track` gives trackers to every virtual router of a router (``{"r1":
    [{"gateway": SERVER, "weight": 100}]}``); `make_lab` brings the lab up
    from its topology (a test passes its own, which names and removes labs).
    """

    advert_interval: float = 0.1
    preempt_delay: float = 1.0
    track: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    make_lab: Callable[[dict[str, Any]], Lab] = Lab.up
    name: str = "pktchain"
    notes: list[str] = field(default_factory=list)
    lab: Lab | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)
    failed: str | None = None
    workdir: Path | None = None

    def setup(self, workdir: Path) -> Endpoints:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.notes.append(
            f"pktchain router pair, VRRPv3 advert_interval {self.advert_interval:g} s, "
            f"preempt_delay {self.preempt_delay:g} s, state sync over a dedicated link"
        )
        secret = workdir / "hasync.secret"
        secret.write_text(secrets.token_hex(32) + "\n")
        secret.chmod(0o600)
        self.lab = self.make_lab(pair_topology(f"hapair-{secrets.token_hex(3)}"))
        for number, router in enumerate(ROUTERS, start=1):
            spec = workdir / f"{router}.yaml"
            file = router_file(
                router,
                advert_interval=self.advert_interval,
                preempt_delay=self.preempt_delay,
                track=self.track.get(router, ()),
            )
            spec.write_text(yaml.safe_dump(file, sort_keys=False))
            args = (
                *("--af-packet", "inside=inside", "--af-packet", "outside=outside"),
                *("--router", str(spec), "--ha-secret-file", str(secret)),
                *("--ha-listen", f"{SYNC_NET}.{number}", "--ha-peer", f"{SYNC_NET}.{3 - number}"),
            )
            self.nodes[router] = NodeProcess(
                f"{self.lab.name}-{router}",
                api=None,
                args=args,
                log_path=workdir / f"{router}.log",
                netns=self.lab.netns_of(router),
            )
        for node in self.nodes.values():
            node.spawn()
        for node in self.nodes.values():
            node.wait_ready(15.0)
        self.wait_roles("r1", STATE_TIMEOUT_S)
        return Endpoints(self.lab.netns_of("client"), self.lab.netns_of("server"), SERVER)

    def router(self, router: str) -> dict[str, Any]:
        """The router tables of `router`'s node (``vrrp`` and ``ha`` among them)."""
        return self.nodes[router].router(limit=10)

    def master(self) -> str:
        for router in self.nodes:
            with suppress(Exception):
                if _all_master(self.router(router)):
                    return router
        raise LabError(f"{self.name}: no router is master")

    def wait_roles(self, master: str, timeout: float) -> None:
        """Until `master` holds every virtual router and the other is its backup, in sync."""
        backup = next(r for r in self.nodes if r != master)

        def settled() -> bool:
            try:
                lead, follow = self.router(master), self.router(backup)
            except Exception:
                return False
            ha = follow.get("ha") or {}
            sync = ha.get("sync") or {}
            return (
                _all_master(lead)
                and all(v["state"] == "backup" for v in follow["vrrp"])
                and ha.get("role") == "backup"
                and bool(sync.get("in_sync"))
            )

        wait_until(settled, timeout=timeout, what=f"{master} master, {backup} its backup in sync")

    def kill_master(self, *, silent: bool = False) -> None:
        """A crash: the master's node SIGKILLed (its kernel closes its sockets, so
        the backup sees the sync connection closed and takes over after
        Skew_Time), then its links down.

        `silent`: the master's sync link goes down first, so that nothing of it
        reaches the backup any more, as when the whole machine dies: the
        backup then learns of it only from the advertisements that stop
        (Master_Down_Interval).
        """
        master = self.master()
        self.failed = master
        assert self.lab is not None
        netns = self.lab.netns_of(master)
        if silent:
            with Netlink(netns) as netlink:
                netlink.set_link("sync", up=False)
        os.kill(self.nodes[master].pid, signal.SIGKILL)
        self.nodes[master].kill()
        with Netlink(netns) as netlink:
            for ifname in LINKS:
                netlink.set_link(ifname, up=False)

    def clean_stop_master(self) -> None:
        """SIGTERM to the master's node: priority 0, forwarding until the backup is heard."""
        master = self.master()
        self.failed = master
        self.nodes[master].stop(timeout=10.0)

    def restart(self) -> None:
        """The failed router comes back (links up, its node started afresh) and, having
        the higher priority, takes the role back once it has the state."""
        router = self.failed
        if router is None:
            return
        assert self.lab is not None
        netns = self.lab.netns_of(router)
        with Netlink(netns) as netlink:
            for ifname in LINKS:
                netlink.set_link(ifname, up=True)
        wait_links_up({netns: list(LINKS)}, timeout=5.0)
        self.nodes[router].start(15.0)
        self.wait_roles(router if router == "r1" else self.master(), STATE_TIMEOUT_S)
        self.failed = None

    def teardown(self) -> None:
        for node in self.nodes.values():
            node.kill()
        if self.lab is not None:
            self.lab.down()
            self.lab = None

    def wait_backup_in_sync(self, timeout: float) -> None:
        backup = next(r for r in self.nodes if r != self.master())
        wait_until(
            lambda: bool(((self.router(backup).get("ha") or {}).get("sync") or {}).get("in_sync")),
            timeout=timeout,
            what=f"{backup} in sync",
        )

    def wait_sessions(self, router: str, count: int, timeout: float) -> None:
        """Until `router`'s NAT holds at least `count` sessions (the backup's copy)."""
        deadline = time.monotonic() + timeout
        wait_until(
            lambda: self.router(router).get("nat_sessions", 0) >= count,
            timeout=max(0.1, deadline - time.monotonic()),
            what=f"{router} holding {count} NAT sessions",
        )


def _all_master(router: dict[str, Any]) -> bool:
    vrrp = router.get("vrrp") or []
    return bool(vrrp) and all(v["state"] == "master" for v in vrrp)
