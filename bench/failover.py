"""Router failover: how long traffic stops, and which TCP connections die, when a
router pair loses its master.

Each contender is a highly available NAT router pair between an inside LAN
(a client host) and an outside LAN (a server host), both Linux bridges; the
pair shares a virtual address on each side: the client's gateway inside, and
the one address the NAT maps to outside, so that the server sees one address
whichever router is master. The measuring instruments are
`pktchain.lab.probe.Instruments`, from the client to the server:

- a UDP datagram every millisecond: the outage is the longest interval
  between two arrivals (`outage_ms`);
- an iperf3 TCP transfer (100 Mbit/s) and two interactive sessions (a line
  echoed every 50 ms): a connection is lost if it is reset or closed, or
  stalls longer than 3 s (`tcp_lost`).

Three kinds of failure, each `--repeat` times per contender (`--kinds`):

- `kill`: the master crashes: every process in it gets SIGKILL and its
  links go down. The machine's kernel lives on for that moment, so it closes
  the dead processes' TCP connections: a pktchain backup sees its state
  sync connection closed by the master's end and takes over after Skew_Time;
- `kill-silent`: the same, but the master's sync link goes down first, so
  that nothing of the master reaches the backup any more: a whole machine
  dying (power, kernel panic). The backup learns of it only when the
  advertisements stop, after Master_Down_Interval. keepalived has no
  connection whose end tells the backup anything, so for it the two kinds
  are the same failure;
- `clean`: the master's VRRP daemon is stopped (SIGTERM), so that it sends
  its last advertisement with priority 0 and the backup takes over at once.

Each run: instruments started and flowing; half a second; the failure; the
path carries traffic again (bounded); the instruments watch until
`--observe` seconds after the failure (long enough to see a 3 s stall);
figures. Then the pair is restored: the old master comes back (after a crash,
as after a reboot: links up, its virtual addresses and connection table
gone, its daemons started again) and, having the higher priority, preempts;
the next run starts once it is master again.

Contenders (`--contenders`):

- `keepalived`: two Linux routers (r1 priority 150, r2 100), IPv4
  forwarding, nftables source NAT of the inside network to the outside
  virtual address, keepalived 2.2 with VRRPv3, `advert_int 0.1`, both
  instances in one sync group;
- `keepalived+conntrackd`: the same, and conntrackd copying the connection
  table between the routers in FTFW mode over a dedicated link, driven by
  keepalived's notify script as conntrackd's primary-backup.sh does.

A contender is anything with the `Contender` interface; another router pair
plugs in by adding its constructor to `CONTENDERS`.

    .venv/bin/python bench/failover.py [--repeat 5] [--observe 4]
        [--contenders pktchain,keepalived,keepalived+conntrackd]
        [--kinds kill,kill-silent,clean] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from pktchain.demo.hapair import PktchainPair
from pktchain.lab import Lab, LabHost, namespaces, wait_until
from pktchain.lab.keepalived import (
    Conntrackd,
    ConntrackdConfig,
    DaemonError,
    Keepalived,
    KeepalivedConfig,
    KeepalivedInstance,
    find_program,
)
from pktchain.lab.links import Netlink, wait_links_up
from pktchain.lab.probe import Endpoints, Figures, Instruments

INSIDE_NET, OUTSIDE_NET, SYNC_NET = "10.0.0", "198.51.100", "10.255.0"
INSIDE_VIP, OUTSIDE_VIP = f"{INSIDE_NET}.1", f"{OUTSIDE_NET}.1"
CLIENT, SERVER = f"{INSIDE_NET}.10", f"{OUTSIDE_NET}.10"
ROUTERS = {"r1": (150, 2), "r2": (100, 3)}  # priority, last byte of its own addresses
ADVERT_INT = 0.1
SETTLE_S = 0.5
RECOVERY_TIMEOUT_S = 10.0
RESTORE_TIMEOUT_S = 15.0


class Kind(StrEnum):
    """How the master fails."""

    KILL = "kill"
    """Crash: every process SIGKILLed, links down."""
    KILL_SILENT = "kill-silent"
    """Crash of the whole machine: the sync link down first, then as `KILL`."""
    CLEAN = "clean"
    """The VRRP daemon stopped with SIGTERM (priority 0 sent)."""


class Contender(Protocol):
    """A router pair under test.

    `setup` builds the pair with a client and a server on either side and
    returns where the instruments run; it returns once one router is master
    and traffic can flow. `kill_master` crashes the master (every process
    killed, links down; `silent`: its sync link down first, so that no
    connection's end reaches the backup); `clean_stop_master` stops its VRRP
    daemon cleanly.
    `restart` brings back the router that failed and returns once it is
    master again (preemption). `teardown` removes everything, whatever state
    the pair is in; it is always called, also after a failed `setup`.
    `notes` are lines printed with the figures (versions, what was left out).
    """

    name: str
    notes: list[str]

    def setup(self, workdir: Path) -> Endpoints: ...
    def kill_master(self, *, silent: bool = False) -> None: ...
    def clean_stop_master(self) -> None: ...
    def restart(self) -> None: ...
    def teardown(self) -> None: ...


def topology() -> dict[str, Any]:
    """Client and server on two bridges, two routers on both, a link between the routers."""
    hosts: dict[str, Any] = {
        "client": {
            "interfaces": {"eth0": {"attach": "lan", "addresses": [f"{CLIENT}/24"]}},
            "routes": [{"to": "default", "via": INSIDE_VIP}],
        },
        # No route to the inside: the server reaches the client only through the NAT.
        "server": {"interfaces": {"eth0": {"attach": "wan", "addresses": [f"{SERVER}/24"]}}},
    }
    for number, (name, (_, byte)) in enumerate(ROUTERS.items(), start=1):
        sync: dict[str, Any] = {"addresses": [f"{SYNC_NET}.{number}/30"]}
        if name == "r1":
            sync["attach"] = "r2.sync"
        hosts[name] = {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {
                "inside": {"attach": "lan", "addresses": [f"{INSIDE_NET}.{byte}/24"]},
                "outside": {"attach": "wan", "addresses": [f"{OUTSIDE_NET}.{byte}/24"]},
                "sync": sync,
            },
        }
    return {"lab": "failover", "bridges": ["lan", "wan"], "hosts": hosts}


NAT_RULES = f"""\
table ip failover_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "outside" ip saddr {INSIDE_NET}.0/24 snat to {OUTSIDE_VIP}
    }}
}}
"""
"""Source NAT to the shared outside address. (``masquerade`` would take the
router's own address on the interface, different on each router.)"""


@dataclass
class Router:
    """One router of the keepalived pair and its daemons."""

    host: LabHost
    keepalived: Keepalived
    conntrackd: Conntrackd | None = None

    @property
    def name(self) -> str:
        return self.host.name

    def start(self) -> None:
        if self.conntrackd is not None:
            self.conntrackd.start()
        self.keepalived.start()


@dataclass
class KeepalivedPair:
    """keepalived (and optionally conntrackd) on two Linux routers."""

    conntrackd: bool = False
    name: str = "keepalived"
    notes: list[str] = field(default_factory=list)
    lab: Lab | None = None
    routers: dict[str, Router] = field(default_factory=dict)
    failed: Router | None = None

    def __post_init__(self) -> None:
        if self.conntrackd:
            self.name = "keepalived+conntrackd"

    def setup(self, workdir: Path) -> Endpoints:
        find_program("keepalived", "keepalived")
        if self.conntrackd:
            find_program("conntrackd", "conntrackd")
        version = _first_line([find_program("keepalived", "keepalived"), "--version"])
        self.notes.append(f"{version}, VRRPv3, advert_int {ADVERT_INT:g} s, one sync group")
        self.lab = Lab.up(topology(), name=f"failover-{secrets.token_hex(3)}")
        for number, (name, (priority, _)) in enumerate(ROUTERS.items(), start=1):
            host = self.lab.host(name)
            host.run(["nft", "-f", "-"], input=NAT_RULES, check=True)
            instances = (
                KeepalivedInstance(
                    "inside", "inside", 51, priority, (f"{INSIDE_VIP}/24",), ADVERT_INT
                ),
                KeepalivedInstance(
                    "outside", "outside", 52, priority, (f"{OUTSIDE_VIP}/24",), ADVERT_INT
                ),
            )
            conntrackd = None
            if self.conntrackd:
                own = [f"{INSIDE_NET}.{ROUTERS[name][1]}", f"{OUTSIDE_NET}.{ROUTERS[name][1]}"]
                config = ConntrackdConfig(
                    "sync",
                    f"{SYNC_NET}.{number}",
                    f"{SYNC_NET}.{3 - number}",
                    ignore=(*own, INSIDE_VIP),
                )
                conntrackd = Conntrackd(host.netns, config, workdir / name)
            keepalived = Keepalived(
                host.netns,
                KeepalivedConfig(name, instances),
                workdir / name,
                conntrackd=conntrackd,
            )
            self.routers[name] = Router(host, keepalived, conntrackd)
        if self.conntrackd:
            self.notes.append(
                _first_line([find_program("conntrackd", "conntrackd"), "-v"])
                + ": FTFW over UDP on a dedicated link, external cache, "
                "primary-backup.sh actions on each state change"
            )
        for router in self.routers.values():
            router.start()
        self._wait_master(self.routers["r1"], RESTORE_TIMEOUT_S)
        return Endpoints(self.lab.netns_of("client"), self.lab.netns_of("server"), SERVER)

    def master(self) -> Router:
        for router in self.routers.values():
            if router.keepalived.is_master():
                return router
        raise DaemonError(f"{self.name}: no router is master")

    def _other(self, router: Router) -> Router:
        return next(r for r in self.routers.values() if r is not router)

    def _wait_master(self, router: Router, timeout: float) -> None:
        other = self._other(router)
        wait_until(
            lambda: router.keepalived.is_master() and other.keepalived.holds_none(),
            timeout=timeout,
            what=f"{self.name}: {router.name} master",
        )

    def kill_master(self, *, silent: bool = False) -> None:
        master = self.master()
        self.failed = master
        if silent:  # conntrackd's link first; keepalived has none
            with Netlink(master.host.netns) as netlink:
                netlink.set_link("sync", up=False)
        # Every process of the router at once (SIGKILL: no last advertisement),
        # as a crash; then no link either.
        _kill_everything_in(master.host.netns)
        master.keepalived.kill()
        if master.conntrackd is not None:
            master.conntrackd.kill()
        with Netlink(master.host.netns) as netlink:
            for ifname in ("inside", "outside", "sync"):
                netlink.set_link(ifname, up=False)

    def clean_stop_master(self) -> None:
        master = self.master()
        self.failed = master
        master.keepalived.stop()

    def restart(self) -> None:
        router = self.failed
        if router is None:
            return
        netns = router.host.netns
        if router.keepalived.running:
            raise DaemonError(f"{router.name}: keepalived still running")
        crashed = not _links_up(netns)
        if crashed:
            # As after a reboot: no virtual address, no connection, then links.
            with Netlink(netns) as netlink:
                for instance in router.keepalived.config.instances:
                    for address in instance.interfaces():
                        netlink.remove_address(instance.interface, address)
            router.host.run(["conntrack", "-F"], check=False)
            with Netlink(netns) as netlink:
                for ifname in ("inside", "outside", "sync"):
                    netlink.set_link(ifname, up=True)
            wait_links_up({netns: ["inside", "outside", "sync"]}, timeout=5.0)
            router.start()
        else:
            router.keepalived.start()
        self._wait_master(router, RESTORE_TIMEOUT_S)
        self.failed = None

    def teardown(self) -> None:
        for router in self.routers.values():
            router.keepalived.kill()
            if router.conntrackd is not None:
                router.conntrackd.kill()
        if self.lab is not None:
            self.lab.down()
            self.lab = None


def _kill_everything_in(netns: str) -> None:
    """SIGKILL every process in `netns`, all stopped first so that none sees another die
    (keepalived's VRRP process would take its parent's death for a SIGTERM and send
    priority 0)."""
    ids = [i for i in [namespaces.netns_id(netns)] if i is not None]
    pids = [pid for found in namespaces.pids_in_netns(ids).values() for pid in found]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)


def _links_up(netns: str) -> bool:
    with Netlink(netns) as netlink:
        states = netlink.operstates()
    return all(states.get(i) == "UP" for i in ("inside", "outside", "sync"))


def _first_line(argv: Sequence[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else argv[0]


CONTENDERS: dict[str, Callable[[], Contender]] = {
    "pktchain": lambda: PktchainPair(advert_interval=ADVERT_INT),
    "keepalived": lambda: KeepalivedPair(conntrackd=False),
    "keepalived+conntrackd": lambda: KeepalivedPair(conntrackd=True),
}


@dataclass(frozen=True)
class Run:
    contender: str
    kind: Kind
    figures: Figures
    flowing_s: float
    """From the failure made (the action returned) to the first datagram reported
    after it (the receiver reports every 50 ms)."""


def measure(contender: Contender, endpoints: Endpoints, kind: Kind, observe: float) -> Run:
    """One failure of `kind`, watched by the instruments."""
    with Instruments(endpoints, max_duration=observe + 60.0) as probes:
        probes.start()
        time.sleep(SETTLE_S)  # the run's baseline: traffic before the failure
        if kind is Kind.CLEAN:
            contender.clean_stop_master()
        else:
            contender.kill_master(silent=kind is Kind.KILL_SILENT)
        failed = time.monotonic()
        back = probes.wait_flowing(after=failed, timeout=RECOVERY_TIMEOUT_S)
        # Watch on: a connection that is to stall 3 s must have the time to.
        time.sleep(max(0.0, failed + observe - time.monotonic()))
        figures = probes.stop()
    return Run(contender.name, kind, figures, back - failed)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _contender(make: Callable[[], Contender]) -> Iterator[Contender]:
    contender = make()
    try:
        yield contender
    finally:
        contender.teardown()


def _row(runs: Sequence[Run]) -> dict[str, Any]:
    outages = [r.figures.outage_ms for r in runs]
    lost = sum(r.figures.tcp_lost for r in runs)
    watched = sum(len(r.figures.tcp.connections) for r in runs)
    return {
        "runs": len(runs),
        "outage_ms_median": statistics.median(outages),
        "outage_ms_worst": max(outages),
        "tcp_lost": lost,
        "tcp_watched": watched,
        "longest_stall_s": max(r.figures.tcp.longest_stall_s for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="failures of each kind")
    parser.add_argument(
        "--observe",
        type=float,
        default=4.0,
        help="seconds watched after each failure (more than the 3 s stall limit)",
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, of: {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(Kind),
        help=f"comma-separated failures, of: {', '.join(Kind)}",
    )
    parser.add_argument("--json", action="store_true", help="print every run as JSON too")
    args = parser.parse_args()
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        parser.error(f"--contenders: unknown {unknown}; known: {', '.join(CONTENDERS)}")
    words = [w.strip() for w in args.kinds.split(",") if w.strip()]
    wrong = [w for w in words if w not in set(Kind)]
    if wrong or not words:
        parser.error(f"--kinds: unknown {wrong}; known: {', '.join(Kind)}")
    kinds = [k for k in Kind if k in words]
    if not 1 <= args.repeat <= 100:
        parser.error("--repeat: expected 1 to 100")
    if not 3.5 <= args.observe <= 60:
        parser.error("--observe: expected 3.5 to 60 s")
    for program, package in (("iperf3", "iperf3"), ("nft", "nftables"), ("conntrack", "conntrack")):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin") is None:
            print(f"failover: {program} is missing (Debian package {package})", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _stop_on_sigterm)

    runs: list[Run] = []
    notes: dict[str, list[str]] = {}
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="failover-")))
        for name in names:
            started = time.monotonic()
            contender = stack.enter_context(_contender(CONTENDERS[name]))
            try:
                endpoints = contender.setup(workdir / name)
            except DaemonError as exc:
                notes[name] = [f"not measured: {exc}"]
                print(f"{name}: not measured: {exc}", file=sys.stderr)
                continue
            notes[name] = contender.notes
            for kind in kinds:
                for number in range(1, args.repeat + 1):
                    run = measure(contender, endpoints, kind, args.observe)
                    runs.append(run)
                    gap = run.figures.gap
                    lost = [c.name for c in run.figures.tcp.connections if c.lost()]
                    in_outage = 0 if gap.outage is None else gap.outage.lost
                    print(
                        f"{name:22} {kind:11} {number}: outage {gap.outage_ms:7.1f} ms"
                        f" ({in_outage} datagrams lost in it,"
                        f" sender late <= {gap.sender.max_late_ns / 1e6:.2f} ms),"
                        f" tcp lost {run.figures.tcp_lost}/{len(run.figures.tcp.connections)}"
                        + (f" {lost}" if lost else ""),
                        file=sys.stderr,
                    )
                    contender.restart()
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)

    print(f"\nRouter failover, {args.repeat} failures of each kind, observed {args.observe:g} s")
    print(f"{'contender':24}{'kind':13}{'outage median':>15}{'worst':>10}{'TCP lost':>12}")
    table: list[dict[str, Any]] = []
    for name in names:
        for kind in kinds:
            mine = [r for r in runs if r.contender == name and r.kind is kind]
            if not mine:
                continue
            row = _row(mine)
            table.append({"contender": name, "kind": str(kind), **row})
            print(
                f"{name:24}{kind:13}{row['outage_ms_median']:12.1f} ms"
                f"{row['outage_ms_worst']:7.1f} ms"
                f"{row['tcp_lost']:>6} of {row['tcp_watched']}"
            )
    if runs:
        worst = max(r.figures.gap.pacing_error_ms for r in runs)
        print(
            f"  the gap probe's error bound (1 ms interval + the sender's worst lateness) "
            f"over all runs: {worst:.1f} ms"
        )
    for name, lines in notes.items():
        for line in lines:
            print(f"  {name}: {line}")
    if args.json:
        print(
            json.dumps(
                {
                    "rows": table,
                    "notes": notes,
                    "runs": [
                        {
                            "contender": r.contender,
                            "kind": str(r.kind),
                            "flowing_after_ms": round(r.flowing_s * 1000, 3),
                            **r.figures.summary(),
                        }
                        for r in runs
                    ],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
