"""The failover instruments against failures the test makes itself, of known length.

The gap probe crosses a Linux bridge whose port the test takes down for about
200 ms; the TCP watchers cross a Linux router whose forwarding the test
blocks (an nftables drop rule, 3.5 s) or resets (``reject with tcp reset``),
and whose server the test kills.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from pktchain.lab import Lab, TcpConnection, TcpSocketState, tcp_connections, wait_until
from pktchain.lab.links import Netlink
from pktchain.lab.probe import (
    ChatWatcher,
    ConnectionEnd,
    Endpoints,
    GapProbe,
    Instruments,
    IperfWatcher,
    ProbeError,
)

LabFactory = Callable[..., Lab]

BRIDGED = {
    "bridges": ["lan"],
    "hosts": {
        "a": {"interfaces": {"eth0": {"attach": "lan", "addresses": ["10.30.0.1/24"]}}},
        "b": {"interfaces": {"eth0": {"attach": "lan", "addresses": ["10.30.0.2/24"]}}},
    },
}

ROUTED = {
    "hosts": {
        "client": {
            "interfaces": {"eth0": {"attach": "router.eth0", "addresses": ["10.31.1.2/24"]}},
            "routes": [{"to": "default", "via": "10.31.1.1"}],
        },
        "router": {
            "sysctls": {"net.ipv4.ip_forward": 1},
            "interfaces": {
                "eth0": {"addresses": ["10.31.1.1/24"]},
                "eth1": {"attach": "server.eth0", "addresses": ["10.31.2.1/24"]},
            },
        },
        "server": {
            "interfaces": {"eth0": {"addresses": ["10.31.2.2/24"]}},
            "routes": [{"to": "default", "via": "10.31.2.1"}],
        },
    }
}
SERVER = "10.31.2.2"


def test_the_gap_probe_measures_a_200_ms_cut_of_a_bridge_port(lab_factory: LabFactory) -> None:
    lab = lab_factory(BRIDGED)
    fabric = lab.topology.fabric_netns
    assert fabric is not None
    (port,) = [p.port for p in lab.topology.bridge_ports if p.host == "b"]
    with GapProbe(lab.netns_of("a"), lab.netns_of("b"), "10.30.0.2", max_duration=20) as probe:
        probe.start()
        probe.wait_arrival_after(time.monotonic() + 0.2, timeout=5.0)  # a baseline first
        with Netlink(fabric) as netlink:
            down_started = time.monotonic()
            netlink.set_link(port, up=False)
            down = time.monotonic()
            time.sleep(0.2)  # the stimulus: the cut's length, not a wait for something
            up_started = time.monotonic()
            netlink.set_link(port, up=True)
            up = time.monotonic()
        probe.wait_arrival_after(up, timeout=5.0)
        report = probe.stop()
    shortest, longest = (up_started - down) * 1000, (up - down_started) * 1000
    # The outage starts at the last arrival before the cut (at most an interval
    # early) and ends at the first after it (an interval and the sender's
    # lateness late, and the link's coming up).
    assert shortest - 2.0 <= report.outage_ms <= longest + 2.0 + report.pacing_error_ms + 10.0
    assert report.outage in report.gaps
    assert report.recovered
    # The datagrams sent during the cut are lost, and almost only those.  A
    # sender the machine kept from its slots skips them (counted, never sent):
    # a slot is either a datagram or a skip.
    skipped = report.sender.skipped
    assert report.lost + skipped >= int(shortest) - 2
    assert report.lost <= report.outage_ms + 2
    assert report.received + skipped > 200


def test_the_gap_probe_refuses_to_start_without_a_path(lab_factory: LabFactory) -> None:
    lab = lab_factory(BRIDGED)
    probe = GapProbe(lab.netns_of("a"), lab.netns_of("b"), "10.30.0.99", max_duration=10)
    with pytest.raises(ProbeError, match="no 'flowing'"):
        probe.start(timeout=1.0)
    probe.close()


def _established(netns: str, port: int) -> list[TcpConnection]:
    return [c for c in tcp_connections(netns, port) if c.state is TcpSocketState.ESTABLISHED]


def _block_forwarding(lab: Lab, rule: str) -> None:
    lab.host("router").run(
        [
            "nft",
            "add table inet probe_test; "
            "add chain inet probe_test forward { type filter hook forward priority 0; }; "
            f"add rule inet probe_test forward {rule}",
        ],
        check=True,
    )


def _unblock_forwarding(lab: Lab) -> None:
    lab.host("router").run(["nft", "delete table inet probe_test"], check=True)


@pytest.mark.slow
def test_the_tcp_watchers_see_a_stall_longer_than_3_s_of_connections_still_open(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(ROUTED)
    client, server = lab.netns_of("client"), lab.netns_of("server")
    with (
        IperfWatcher(client, server, SERVER, rate="20M", max_duration=30) as transfer,
        ChatWatcher(client, server, SERVER, sessions=1, max_duration=30) as chat,
    ):
        transfer.start()
        chat.start()
        _block_forwarding(lab, "drop")
        blocked = time.monotonic()
        time.sleep(3.5)  # the stimulus: the block's length
        _unblock_forwarding(lab)
        unblocked = time.monotonic()
        (session,) = chat.stop()
        upload = transfer.stop()
    for report in (upload, session):
        assert report.end is ConnectionEnd.OPEN, report
        # TCP resends with backoff: the stall lasts at least the block.
        assert report.longest_stall_s >= (unblocked - blocked) - 0.15, report
        assert report.lost(3.0)
        assert report.stall_start_s is not None
        assert abs(report.stall_start_s - blocked) < 0.3, report


def test_the_tcp_watchers_see_a_reset_and_a_server_that_went_away(
    lab_factory: LabFactory,
) -> None:
    lab = lab_factory(ROUTED)
    client, server = lab.netns_of("client"), lab.netns_of("server")
    with (
        IperfWatcher(client, server, SERVER, rate="20M", max_duration=30) as transfer,
        ChatWatcher(client, server, SERVER, port=47302, sessions=2, max_duration=30) as chat,
    ):
        transfer.start()
        chat.start()
        # The router resets the sessions (as a NAT that lost them would) and
        # the iperf3 server dies.
        _block_forwarding(lab, "tcp dport 47302 reject with tcp reset")
        assert transfer.server_pid is not None
        os.kill(transfer.server_pid, signal.SIGKILL)
        wait_until(
            lambda: not _established(client, 47302) and not _established(client, transfer.port),
            timeout=5.0,
            what="the watched connections gone",
        )
        sessions = chat.stop()
        upload = transfer.stop()
    assert [s.end for s in sessions] == [ConnectionEnd.RESET, ConnectionEnd.RESET]
    assert all(s.reset and s.lost() for s in sessions)
    assert upload.end in (ConnectionEnd.CLOSED, ConnectionEnd.RESET), upload
    assert upload.lost()


def test_the_instruments_together_through_a_router_that_works(lab_factory: LabFactory) -> None:
    lab = lab_factory(ROUTED)
    endpoints = Endpoints(lab.netns_of("client"), lab.netns_of("server"), SERVER)
    with Instruments(endpoints, iperf_rate="20M", sessions=2, max_duration=30) as probes:
        probes.start()
        probes.wait_flowing(after=time.monotonic() + 0.3)
        figures = probes.stop()
    assert [c.name for c in figures.tcp.connections] == [
        "iperf3 upload",
        "iperf3 download",
        "interactive 1",
        "interactive 2",
    ]
    assert figures.tcp_lost == 0
    # No outage through a working router: any gap is the sender's own lateness.
    assert figures.outage_ms < 50.0 + figures.gap.pacing_error_ms
    # At least 0.3 s of 1 ms slots, each a datagram received or a slot skipped
    # while the machine kept the sender from it.
    assert figures.gap.received + figures.gap.sender.skipped > 250
    assert all(c.exchanges > 0 for c in figures.tcp.connections)
