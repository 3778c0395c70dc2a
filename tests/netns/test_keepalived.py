"""keepalived and conntrackd in lab hosts: election, failover, and a synchronised entry.

Two routers and a client on one bridge. keepalived (VRRPv3, advert_int 0.1)
must elect the router of higher priority, move the virtual address to the
other when the master is killed, and back when it returns (preemption); the
client's ping of the virtual address, and the routers' addresses read over
netlink, are the oracles. conntrackd must carry a connection tracking entry
from one router's kernel to the other's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pktchain.lab import Lab, wait_until
from pktchain.lab.keepalived import (
    Conntrackd,
    ConntrackdConfig,
    DaemonError,
    Keepalived,
    KeepalivedConfig,
    KeepalivedInstance,
    KeepalivedState,
    find_program,
)
from pktchain.lab.links import Netlink

LabFactory = Callable[..., Lab]
VIP = "10.40.0.1"

TOPOLOGY = {
    "bridges": ["lan"],
    "hosts": {
        "client": {"interfaces": {"eth0": {"attach": "lan", "addresses": ["10.40.0.10/24"]}}},
        "r1": {
            "interfaces": {
                "eth0": {"attach": "lan", "addresses": ["10.40.0.2/24"]},
                "sync": {"attach": "r2.sync", "addresses": ["10.41.0.1/30"]},
            }
        },
        "r2": {
            "interfaces": {
                "eth0": {"attach": "lan", "addresses": ["10.40.0.3/24"]},
                "sync": {"addresses": ["10.41.0.2/30"]},
            }
        },
    },
}


def _require(program: str, package: str) -> None:
    try:
        find_program(program, package)
    except DaemonError as exc:
        pytest.skip(str(exc))


def _keepalived(lab: Lab, router: str, priority: int, workdir: Path) -> Keepalived:
    config = KeepalivedConfig(
        router, (KeepalivedInstance("lan", "eth0", 61, priority, (f"{VIP}/24",)),)
    )
    return Keepalived(lab.netns_of(router), config, workdir / router)


def test_keepalived_elects_the_higher_priority_and_fails_over_and_back(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    _require("keepalived", "keepalived")
    lab = lab_factory(TOPOLOGY)
    r1 = _keepalived(lab, "r1", 150, tmp_path)
    r2 = _keepalived(lab, "r2", 100, tmp_path)
    with r1, r2:
        r1.start()
        r2.start()
        wait_until(lambda: r1.is_master() and r2.holds_none(), timeout=5.0, what="r1 master")
        assert r2.state() is KeepalivedState.BACKUP
        assert lab.host("client").run(["ping", "-c1", "-W1", VIP]).ok

        killed = time.monotonic()
        r1.kill()
        wait_until(r2.is_master, timeout=5.0, what="r2 master")
        # A crash sends no priority 0: r2 waits for three advertisements missed
        # and its skew (RFC 5798, 6.1), 0.36 s from the last one it heard.
        assert 0.2 < time.monotonic() - killed < 2.0
        assert r2.transitions()[-1] is KeepalivedState.MASTER
        # The address left on the killed r1 is on a router whose keepalived is gone;
        # take r1's link down, as a crash would, so that only r2 can answer.
        with Netlink(lab.netns_of("r1")) as netlink:
            netlink.set_link("eth0", up=False)
        assert lab.host("client").run(["ping", "-c1", "-W2", VIP]).ok

        with Netlink(lab.netns_of("r1")) as netlink:
            netlink.set_link("eth0", up=True)
        r1.start()  # keepalived removes its stale address as it starts
        wait_until(lambda: r1.is_master() and r2.holds_none(), timeout=5.0, what="r1 back")
        assert r2.state() is KeepalivedState.BACKUP

        r1.stop()  # SIGTERM: priority 0 sent, so r2 takes over without waiting
        wait_until(r2.is_master, timeout=2.0, what="r2 master after r1 stopped")
        assert r1.holds_none()


NAT_TOPOLOGY = {
    "bridges": ["wan"],
    "hosts": {
        "client": {
            "interfaces": {"eth0": {"attach": "r1.eth0", "addresses": ["10.42.0.10/24"]}},
            "routes": [{"to": "default", "via": "10.42.0.1"}],
        },
        "r1": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {
                "eth0": {"addresses": ["10.42.0.1/24"]},
                "wan": {"attach": "wan", "addresses": ["198.51.100.2/24"]},
                "sync": {"attach": "r2.sync", "addresses": ["10.41.0.1/30"]},
            },
        },
        "r2": {"interfaces": {"sync": {"addresses": ["10.41.0.2/30"]}}},
    },
}
SNAT = (
    "add table ip t; add chain ip t post { type nat hook postrouting priority srcnat; }; "
    "add rule ip t post oifname wan udp sport 40000 snat to 198.51.100.1:40001"
)


def test_conntrackd_carries_a_nat_entry_to_the_other_routers_kernel(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    _require("conntrackd", "conntrackd")
    _require("conntrack", "conntrack")
    lab = lab_factory(NAT_TOPOLOGY)
    lab.host("r1").run(["nft", SNAT], check=True)
    one = Conntrackd(
        lab.netns_of("r1"), ConntrackdConfig("sync", "10.41.0.1", "10.41.0.2"), tmp_path / "r1"
    )
    two = Conntrackd(
        lab.netns_of("r2"), ConntrackdConfig("sync", "10.41.0.2", "10.41.0.1"), tmp_path / "r2"
    )
    with one, two:
        one.start()
        two.start()
        # One datagram through r1's NAT: its entry exists once r1 has sent it on.
        with lab.host("client").socket() as sock:
            sock.bind(("10.42.0.10", 40000))
            sock.sendto(b"x", ("198.51.100.9", 9))
        wait_until(
            lambda: "sport=40000" in two.command("-e").stdout,
            timeout=5.0,
            what="r1's entry in r2's external cache",
        )
        assert lab.host("r2").run(["conntrack", "-L", "-p", "udp"]).stdout == ""
        two.command("-c")  # commit: what a new master does
        table = lab.host("r2").run(["conntrack", "-L", "-p", "udp"], check=True).stdout
        # The mapping came along: replies go to the shared address, port 40001.
        assert "src=10.42.0.10 dst=198.51.100.9 sport=40000 dport=9" in table
        assert "src=198.51.100.9 dst=198.51.100.1 sport=9 dport=40001" in table
