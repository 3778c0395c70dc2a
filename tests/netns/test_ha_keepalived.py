"""A pktchain router node and keepalived as the two routers of one pair.

The lab is `pktchain.demo.hapair`'s: a client on the inside LAN, a server on
the outside one, two router hosts on both. r1 runs a `pktchain node` whose
router holds VRID 51 (inside, 10.0.0.1) and VRID 52 (outside, 198.51.100.1,
the NAT's address); r2 is a Linux router (its own addresses in the kernel,
IPv4 forwarding, nftables source NAT of the inside to 198.51.100.1) whose
keepalived (VRRPv3, 0.1 s adverts, both instances in one sync group, tracking
r2's otherwise unused ``sync`` interface with weight -100) holds the same
VRIDs and addresses. Whichever is master carries the client's traffic.

Each test makes the pair change hands several ways, and after each change
checks both sides (the node's VRRP states as ``pktchain node router --json``
gives them; keepalived's notified state and the virtual addresses on its
interfaces) until exactly one router is master, for several advertisement
intervals, and that the client's ping reaches the server through it.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.demo.hapair import INSIDE_VIP, OUTSIDE_VIP, SERVER, pair_topology, router_file
from pktchain.lab import Lab, wait_until
from pktchain.lab.keepalived import (
    DaemonError,
    Keepalived,
    KeepalivedConfig,
    KeepalivedInstance,
    KeepalivedState,
    find_program,
)
from pktchain.lab.links import Netlink, wait_links_up
from pktchain.node.process import NodeProcess
from support.ha_lab import held, link_mac, neighbour_mac, vrrp_states, wait_ping

LAN_LINKS = ("inside", "outside")
TRACKED = "sync"
"""r2's link to r1, which nothing else uses here: keepalived tracks it."""
TRACK_WEIGHT = 100
NAT_RULES = f"""\
table ip ha_test_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "outside" ip saddr 10.0.0.0/24 snat to {OUTSIDE_VIP}
    }}
}}
"""
SWITCH_TIMEOUT_S = 10.0
VIRTUAL_MACS = {vrid: f"00:00:5e:00:01:{vrid:02x}" for vrid in (51, 52)}
"""RFC 5798 §7.3, the MAC pktchain answers for a virtual address with."""


def _require_keepalived() -> None:
    try:
        find_program("keepalived", "keepalived")
    except DaemonError as exc:
        pytest.skip(str(exc))


def mixed_topology() -> dict[str, Any]:
    """hapair's lab, r2 a Linux router (addresses in its kernel, forwarding)."""
    topology = pair_topology("mixed")
    topology["hosts"]["r2"] = pair_topology("mixed", kernel_addresses=True)["hosts"]["r2"]
    return topology


@dataclass
class MixedPair:
    """r1: a pktchain node; r2: keepalived on Linux. `pktchain_up` says whether
    the node runs (a killed or stopped node has no states to read)."""

    lab: Lab
    node: NodeProcess
    keepalived: Keepalived
    pktchain_up: bool = True

    # -- what each side says --------------------------------------------------------

    def pktchain_states(self) -> set[str]:
        return vrrp_states(self.node.router(limit=0)) if self.pktchain_up else set()

    def keepalived_backup(self) -> bool:
        """Running, a backup by its own account, and holding no virtual address."""
        return (
            self.keepalived.running
            and self.keepalived.state() is KeepalivedState.BACKUP
            and self.keepalived.holds_none()
        )

    def only_master(self, master: str) -> bool:
        """`master` ("pktchain" or "keepalived") is master and the other is not."""
        if master == "pktchain":
            return self.pktchain_states() == {"master"} and (
                not self.keepalived.running or self.keepalived_backup()
            )
        return self.keepalived.is_master() and (
            not self.pktchain_up or self.pktchain_states() == {"backup"}
        )

    def settle(self, master: str, why: str) -> None:
        """Until `master` is the one master, for half a second on end, and carries
        the client's traffic: a ping crosses, and the client and the server hold
        the master's MACs for the virtual addresses (pktchain's are the virtual
        MACs, keepalived's r2's own without ``use_vmac``)."""
        what = f"{why}: {master} the one master"
        wait_until(lambda: self.only_master(master), timeout=SWITCH_TIMEOUT_S, what=what)
        held(lambda: self.only_master(master), samples=5, what=what)
        client, server = self.lab.host("client"), self.lab.host("server")
        if master == "pktchain":
            macs = (VIRTUAL_MACS[51], VIRTUAL_MACS[52])
        else:
            r2 = self.lab.host("r2")
            macs = (link_mac(r2, "inside"), link_mac(r2, "outside"))

        def through_master() -> bool:
            wait_ping(client, SERVER, timeout=5.0, what=f"{why}: a ping through")
            seen = (neighbour_mac(client, INSIDE_VIP), neighbour_mac(server, OUTSIDE_VIP))
            return seen == macs

        wait_until(through_master, timeout=5.0, what=f"{why}: the traffic through {master}")

    # -- failures and repairs -------------------------------------------------------

    def _links(self, router: str, up: bool) -> None:
        netns = self.lab.netns_of(router)
        with Netlink(netns) as netlink:
            for ifname in LAN_LINKS:
                netlink.set_link(ifname, up=up)
        if up:
            wait_links_up({netns: list(LAN_LINKS)}, timeout=5.0)

    def crash_keepalived(self) -> None:
        """keepalived SIGSTOPped and SIGKILLed (no last advertisement), r2's links down."""
        self.keepalived.kill()
        self._links("r2", up=False)

    def restart_keepalived(self) -> None:
        """As after a reboot: r2's stale virtual addresses gone, links up, keepalived."""
        if not self.keepalived_links_up():
            with Netlink(self.lab.netns_of("r2")) as netlink:
                for instance in self.keepalived.config.instances:
                    for address in instance.interfaces():
                        netlink.remove_address(instance.interface, address)
            self._links("r2", up=True)
        self.keepalived.start()

    def keepalived_links_up(self) -> bool:
        with Netlink(self.lab.netns_of("r2")) as netlink:
            states = netlink.operstates()
        return all(states.get(ifname) == "UP" for ifname in LAN_LINKS)

    def set_tracked(self, up: bool) -> None:
        with Netlink(self.lab.netns_of("r2")) as netlink:
            netlink.set_link(TRACKED, up=up)

    def crash_pktchain(self) -> None:
        """The node SIGKILLed, then r1's links down."""
        self.node.kill()
        self.pktchain_up = False
        self._links("r1", up=False)

    def stop_pktchain(self) -> None:
        """SIGTERM: priority 0, forwarding on until the successor is heard."""
        assert self.node.stop() == 0
        self.pktchain_up = False

    def start_pktchain(self) -> None:
        with Netlink(self.lab.netns_of("r1")) as netlink:
            states = netlink.operstates()
        if not all(states.get(ifname) == "UP" for ifname in LAN_LINKS):
            self._links("r1", up=True)
        self.node.start()
        self.pktchain_up = True

    def vrrp_set_priority(self, priority: int) -> None:
        """Both of the node's virtual routers, with ``pktchain router do vrrp_set``."""
        url = self.node.api_url()
        for interface, vrid in (("inside", 51), ("outside", 52)):
            argv = [sys.executable, "-m", "pktchain", "router", "do", "vrrp_set"]
            argv += [f"interface={interface}", f"vrid={vrid}", f"priority={priority}"]
            self.lab.host("r1").run([*argv, "--url", url], timeout=30, check=True)
        states = self.node.router(limit=0)["vrrp"]
        assert {v["priority"] for v in states} == {priority}, states


@pytest.fixture
def mixed_pair(
    lab_factory: Callable[..., Lab],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> Iterator[Callable[[int, int], MixedPair]]:
    """``pair = mixed_pair(pktchain_priority, keepalived_priority)``: both started,
    the one of higher priority master."""
    made: list[MixedPair] = []

    def make(pktchain_priority: int, keepalived_priority: int) -> MixedPair:
        _require_keepalived()
        lab = lab_factory(mixed_topology())
        lab.host("r2").run(["nft", "-f", "-"], input=NAT_RULES, check=True)
        spec = tmp_path / "r1.yaml"
        spec.write_text(
            yaml.safe_dump(router_file("r1", priority=pktchain_priority, preempt_delay=0.5))
        )
        node = NodeProcess(
            unique_name("ha"),
            api="127.0.0.1:0",
            args=(
                *("--af-packet", "inside=inside", "--af-packet", "outside=outside"),
                *("--router", str(spec)),
            ),
            log_path=tmp_path / "r1.log",
            netns=lab.netns_of("r1"),
        )
        instances = tuple(
            KeepalivedInstance(name, name, vrid, keepalived_priority, (address,), 0.1)
            for name, vrid, address in (
                ("inside", 51, f"{INSIDE_VIP}/24"),
                ("outside", 52, f"{OUTSIDE_VIP}/24"),
            )
        )
        keepalived = Keepalived(
            lab.netns_of("r2"),
            KeepalivedConfig("r2", instances, track_interfaces=((TRACKED, -TRACK_WEIGHT),)),
            tmp_path / "r2",
        )
        pair = MixedPair(lab, node, keepalived)
        made.append(pair)
        node.start()
        keepalived.start()
        return pair

    yield make

    for pair in made:
        pair.keepalived.kill()
        if pair.node.kill() not in (0, -signal.SIGKILL):
            print((tmp_path / "r1.log").read_text(errors="replace"))


@pytest.mark.slow
def test_pktchain_takes_over_from_keepalived_killed_stopped_or_tracked_down(
    mixed_pair: Callable[[int, int], MixedPair],
) -> None:
    pair = mixed_pair(150, 200)
    pair.settle("keepalived", "both started")

    pair.crash_keepalived()
    pair.settle("pktchain", "keepalived killed")
    pair.restart_keepalived()
    pair.settle("keepalived", "keepalived back, preempting")

    pair.keepalived.stop()  # SIGTERM: priority 0
    pair.settle("pktchain", "keepalived stopped")
    pair.keepalived.start()
    pair.settle("keepalived", "keepalived started again")

    pair.set_tracked(up=False)  # keepalived's priority 200 -> 100, below pktchain's 150
    pair.settle("pktchain", "keepalived's tracked link down")
    assert pair.keepalived.running
    pair.set_tracked(up=True)
    pair.settle("keepalived", "keepalived's tracked link up")
    # keepalived never left its own states for FAULT on the way.
    assert KeepalivedState.FAULT not in pair.keepalived.transitions()


@pytest.mark.slow
def test_keepalived_takes_over_from_pktchain_killed_stopped_or_lowered(
    mixed_pair: Callable[[int, int], MixedPair],
) -> None:
    pair = mixed_pair(200, 150)
    pair.settle("pktchain", "both started")

    pair.crash_pktchain()
    pair.settle("keepalived", "pktchain's node killed")
    pair.start_pktchain()
    pair.settle("pktchain", "pktchain back, preempting")

    pair.stop_pktchain()
    pair.settle("keepalived", "pktchain's node stopped")
    pair.start_pktchain()
    pair.settle("pktchain", "pktchain started again")

    pair.vrrp_set_priority(100)  # below keepalived's 150
    pair.settle("keepalived", "pktchain's priority lowered")
    pair.vrrp_set_priority(200)
    pair.settle("pktchain", "pktchain's priority raised again")
    counters = [v["counters"] for v in pair.node.router(limit=0)["vrrp"]]
    # Every advertisement keepalived sent passed pktchain's checks (those that came
    # while the node was starting, before its virtual routers ran, are counted apart).
    drops = [k for c in counters for k in c if k.startswith("drop-") and k != "drop-not-running"]
    assert not drops, counters
    assert all(c["rx-advertisements"] > 0 and c["to-master"] >= 1 for c in counters), counters
