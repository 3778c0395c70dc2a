"""The contenders of bench/contenders.py work: Open vSwitch's userspace datapath
switches between two hosts, nftables masquerade translates new connections.

Each is set up by tests/support/contenders.py in a lab of its own, with a few
pings or 50 connections of bench/tcpconns.py through it (seconds at most).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pktchain.lab import Lab
from pktchain.linux.netns import netns_path
from support.contenders import OpenVswitch, masquerade, masqueraded_packets, ovs_missing
from support.nat_lab import INSIDE, OUTSIDE, ROUTER_IN, ROUTER_OUT
from support.paths import ROOT

TCPCONNS = ROOT / "bench" / "tcpconns.py"


def test_open_vswitch_netdev_switches_two_hosts(
    lab_factory: Callable[..., Lab], tmp_path: Path
) -> None:
    reason = ovs_missing()
    if reason is not None:
        pytest.skip(reason)
    lab = lab_factory(
        {
            "hosts": {
                "sw": {"interfaces": {"eth0": {}, "eth1": {}}},
                "o1": {"interfaces": {"eth0": {"attach": "sw.eth0", "addresses": ["10.9.6.1/24"]}}},
                "o2": {"interfaces": {"eth0": {"attach": "sw.eth1", "addresses": ["10.9.6.2/24"]}}},
            }
        }
    )
    with OpenVswitch(lab.host("sw"), ["eth0", "eth1"], tmp_path / "ovs", lifetime=120) as ovs:
        daemons = [process for _, process in ovs.daemons]
        assert ovs.vsctl("get", "Bridge", ovs.bridge, "datapath_type").strip() == "netdev"
        ping = lab.host("o1").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.9.6.2"])
        assert ping.ok, ping.stdout + ping.stderr
        # The userspace datapath learned both hosts and forwards between its ports.
        flows = ovs.flows()
        assert "eth_type(0x0800)" in flows, flows
        assert "actions:" in flows
        # Its datapath runs in the switch's namespace, not in this one.
        pid = int((tmp_path / "ovs" / "ovs-vswitchd.pid").read_text())
        switch_ns = os.stat(netns_path(lab.host("sw").netns)).st_ino
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == switch_ns
    assert all(process.poll() is not None for process in daemons)
    assert not ovs.daemons


def test_nftables_masquerade_translates_new_connections(lab_factory: Callable[..., Lab]) -> None:
    lab = lab_factory(
        {
            "hosts": {
                "inside": {
                    "interfaces": {"eth0": {"attach": "nat.eth0", "addresses": [f"{INSIDE}/24"]}},
                    "routes": [{"to": "default", "via": ROUTER_IN}],
                },
                "nat": {
                    "interfaces": {
                        "eth0": {"addresses": [f"{ROUTER_IN}/24"]},
                        "eth1": {"addresses": [f"{ROUTER_OUT}/24"]},
                    }
                },
                # No route back to the inside network: only translated packets are answered.
                "outside": {
                    "interfaces": {"eth0": {"attach": "nat.eth1", "addresses": [f"{OUTSIDE}/24"]}}
                },
            }
        }
    )
    masquerade(lab.host("nat"), inside="10.0.0.0/24", outside_ifname="eth1")
    outside = lab.host("outside")
    server = outside.popen(
        [sys.executable, str(TCPCONNS), "server", OUTSIDE, "7201", "--seconds", "30"]
    )
    try:
        outside.wait_listening(7201, timeout=10)
        argv = [sys.executable, str(TCPCONNS), "client", OUTSIDE, "7201"]
        argv += ["--count", "50", "--seconds", "5", "--parallel", "4"]
        done = lab.host("inside").run(argv, timeout=30, check=True)
    finally:
        server.terminate()
        server.wait(timeout=10)
    report = json.loads(done.stdout)
    assert report["connections"] == 50, report
    assert report["failures"] == {}
    # The nat hook sees each connection's first packet: 50 SYNs translated.
    assert masqueraded_packets(lab.host("nat")) == 50
