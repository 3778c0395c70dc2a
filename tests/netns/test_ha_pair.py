"""A pktchain router pair on real traffic: failover, state sync, election and tracking.

Two `pktchain node` processes, each a router host of its own
(`pktchain.demo.hapair`: r1 priority 150, r2 100, VRRPv3 every 0.1 s,
preempt_delay 1 s, NAT on the outside virtual address, state sync over a
link of their own), between a client on the inside LAN and a server on the
outside one. The oracles are the client's own traffic (ping, iperf3,
interactive TCP sessions, `pktchain.lab.probe`) and each node's report
(``pktchain node router --json``: VRRP states, NAT table, sync counters).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pktchain.demo.hapair import SERVER, PktchainPair
from pktchain.lab import wait_until
from pktchain.lab.links import Netlink
from pktchain.lab.probe import ChatWatcher, Endpoints, Instruments
from support.ha_lab import (
    NatRow,
    held,
    link_counters,
    nat_rows,
    sync_counters,
    tables,
    udp_flows,
    vrrp_states,
    wait_ping,
)

PairFactory = Callable[..., PktchainPair]

OUTAGE_LIMIT_MS = 300.0
"""A generous bound on a failover's outage (measured: about 70 ms after a kill)."""
OBSERVE_S = 3.5
"""Watched after each failure: longer than the 3 s stall that counts a connection lost."""


def _endpoints(pair: PktchainPair) -> Endpoints:
    assert pair.lab is not None
    return Endpoints(pair.lab.netns_of("client"), pair.lab.netns_of("server"), SERVER)


def _watch_until(moment: float) -> None:
    """The observation window: the instruments run on until `moment` (monotonic s)."""
    time.sleep(max(0.0, moment - time.monotonic()))


@pytest.mark.slow
def test_tcp_through_the_nat_survives_the_masters_crash_and_its_return(
    ha_pair: PairFactory,
) -> None:
    pair = ha_pair()
    with Instruments(_endpoints(pair), iperf_rate="20M", max_duration=90) as probes:
        probes.start()
        probes.wait_flowing(after=time.monotonic() + 0.3)  # a baseline first
        assert tables(pair, "r2").get("nat_sessions", 0) >= 4  # the copy of r1's sessions

        pair.kill_master()  # r1's node SIGKILLed, then its links down
        killed = time.monotonic()
        probes.wait_flowing(after=killed, timeout=10.0)
        assert vrrp_states(tables(pair, "r2")) == {"master"}
        _watch_until(killed + OBSERVE_S)

        # r1 comes back: it follows r2 as backup, takes the copy, and after
        # preempt_delay takes the role back.
        returned = time.monotonic()
        pair.restart()
        assert tables(pair, "r1")["ha"]["last_takeover"]["had_copy"]
        preempted = time.monotonic()
        _watch_until(preempted + OBSERVE_S)
        figures = probes.stop()

    summary = figures.summary()
    assert figures.tcp_lost == 0, summary
    assert all(c.exchanges > 0 for c in figures.tcp.connections), summary
    assert figures.gap.recovered, summary
    gaps = figures.gap.gaps
    at_kill = [g for g in gaps if killed - 1.0 <= g.start_ns / 1e9 <= killed + 0.5]
    at_return = [g for g in gaps if returned <= g.start_ns / 1e9 <= preempted + 0.5]
    assert at_kill, summary  # the crash cost something...
    assert max(g.ms for g in at_kill) < OUTAGE_LIMIT_MS, summary  # ...and not much
    assert max((g.ms for g in at_return), default=0.0) < OUTAGE_LIMIT_MS, summary
    assert figures.outage_ms < OUTAGE_LIMIT_MS, summary


def _dynamic(rows: set[NatRow]) -> set[NatRow]:
    return {row for row in rows if not row[5]}


def test_the_backup_resyncs_after_its_sync_link_was_cut_and_keeps_what_came_meanwhile(
    ha_pair: PairFactory,
) -> None:
    pair = ha_pair()
    assert pair.lab is not None
    lab = pair.lab
    client = lab.host("client")
    udp_flows(client, range(41000, 41004))
    pair.wait_sessions("r2", 4, timeout=10.0)
    first_stream = tables(pair, "r2")["ha"]["sync"]["stream"]
    before = _dynamic(nat_rows(tables(pair, "r1")))

    # The cut: r2's end of the sync link down, until both sides have given up
    # the connection (nothing heard for the protocol's peer timeout).
    with Netlink(lab.netns_of("r2")) as netlink:
        netlink.set_link("sync", up=False)
    wait_until(
        lambda: (
            not tables(pair, "r1")["ha"]["connected"] and not tables(pair, "r2")["ha"]["connected"]
        ),
        timeout=10.0,
        what="both ends of the sync given up",
    )
    # New sessions through the master meanwhile: UDP flows and a TCP session,
    # which the backup cannot hear of.
    udp_flows(client, range(42000, 42008))
    with ChatWatcher(
        *(lab.netns_of("client"), lab.netns_of("server"), SERVER),
        port=47402,
        sessions=1,
        max_duration=60,
    ) as chat:
        chat.start()
        wait_until(
            lambda: tables(pair, "r1").get("nat_sessions", 0) >= 4 + 8 + 1,
            timeout=5.0,
            what="r1 holding the new sessions",
        )
        master_rows = _dynamic(nat_rows(tables(pair, "r1")))
        made_in_cut = {row[:3] for row in master_rows - before}
        assert len(made_in_cut) >= 8 + 1, made_in_cut
        assert not made_in_cut & {row[:3] for row in nat_rows(tables(pair, "r2"))}

        with Netlink(lab.netns_of("r2")) as netlink:
            netlink.set_link("sync", up=True)
        wait_until(
            lambda: (
                tables(pair, "r2")["ha"]["sync"].get("stream") not in (None, first_stream)
                and tables(pair, "r2")["ha"]["sync"]["in_sync"]
            ),
            timeout=10.0,
            what="r2 in sync again, on a new stream",
        )
        # The backup holds the master's mappings again, with the same external ports.
        wait_until(
            lambda: (
                _dynamic(nat_rows(tables(pair, "r2"))) == _dynamic(nat_rows(tables(pair, "r1")))
            ),
            timeout=5.0,
            what="r2's NAT sessions equal r1's",
        )
        master, backup = tables(pair, "r1"), tables(pair, "r2")
        assert master_rows <= _dynamic(nat_rows(backup))
        # Static rows (automatic forwards): the backup holds none the master lacks; the
        # master may hold one for the backup's own address, which the backup refuses.
        extra = {row for row in nat_rows(master) - nat_rows(backup) if row[5]}
        assert {row[1] for row in extra} <= {"10.0.0.3"}, extra
        assert not {row for row in nat_rows(backup) - nat_rows(master) if row[5]}
        # The counters tell the story: a new connection, a new stream, a second snapshot.
        receiver, sender = sync_counters(backup), sync_counters(master)
        assert receiver["streams"] >= 2 and receiver["snapshots-completed"] >= 2, receiver
        assert sender["resyncs"] >= 2, sender
        assert link_counters(backup)["connections.opened"] >= 2, link_counters(backup)
        assert link_counters(backup).get("connect.failed", 0) >= 1, link_counters(backup)

        # The master crashes: the TCP session opened during the cut lives on through r2.
        pair.kill_master()
        wait_until(
            lambda: vrrp_states(tables(pair, "r2")) == {"master"}, timeout=5.0, what="r2 master"
        )
        wait_ping(client, SERVER, timeout=5.0, what="the path through r2")
        killed = time.monotonic()
        _watch_until(killed + OBSERVE_S)
        (session,) = chat.stop()
    assert not session.lost(), session
    after = _dynamic(nat_rows(tables(pair, "r2")))
    # Same mappings on the new master, the flows made during the cut among them.
    assert {row[:5] for row in master_rows} <= {row[:5] for row in after}


ARP_BLOCK = "pktchain_ha_test"


def test_a_gateway_that_stops_answering_r1_hands_the_pair_to_r2_and_back(
    ha_pair: PairFactory,
) -> None:
    # r1's virtual routers track the server as their gateway (weight 100: 150 -> 50,
    # below r2's 100); r2 tracks nothing.
    pair = ha_pair(track={"r1": [{"gateway": SERVER, "weight": 100}]})
    assert pair.lab is not None
    lab = pair.lab
    client, server = lab.host("client"), lab.host("server")
    r1 = tables(pair, "r1")
    assert all(v["effective_priority"] == 150 and not v["failed_trackers"] for v in r1["vrrp"])
    before = {
        (router, v["vrid"]): v["counters"]
        for router in ("r1", "r2")
        for v in tables(pair, router)["vrrp"]
    }
    wait_ping(client, SERVER, timeout=5.0, what="the path through r1")
    with ChatWatcher(
        *(lab.netns_of("client"), lab.netns_of("server"), SERVER),
        port=47403,
        sessions=1,
        max_duration=60,
    ) as chat:
        chat.start()
        # The server stops answering r1's ARP requests (and only r1's).
        server.run(
            [
                "nft",
                f"add table arp {ARP_BLOCK}; "
                f"add chain arp {ARP_BLOCK} input {{ type filter hook input priority 0; }}; "
                f"add rule arp {ARP_BLOCK} input arp saddr ip 198.51.100.2 drop",
            ],
            check=True,
        )
        wait_until(
            lambda: all(
                v["effective_priority"] == 50 and v["failed_trackers"]
                for v in tables(pair, "r1")["vrrp"]
            ),
            timeout=5.0,
            what="r1's tracker failed (priority 50)",
        )
        # r2 preempts the lower-priority master after its preempt_delay.
        pair.wait_roles("r2", 10.0)
        held(
            lambda: (
                vrrp_states(tables(pair, "r2")) == {"master"}
                and vrrp_states(tables(pair, "r1")) == {"backup"}
            ),
            samples=5,
            what="r2 the one master",
        )
        wait_ping(client, SERVER, timeout=5.0, what="the path through r2")

        # The gateway answers again: r1 is back at 150 and preempts r2.
        server.run(["nft", f"delete table arp {ARP_BLOCK}"], check=True)
        pair.wait_roles("r1", 10.0)
        held(
            lambda: (
                vrrp_states(tables(pair, "r1")) == {"master"}
                and vrrp_states(tables(pair, "r2")) == {"backup"}
            ),
            samples=5,
            what="r1 the one master",
        )
        wait_ping(client, SERVER, timeout=5.0, what="the path through r1 again")
        back = time.monotonic()
        _watch_until(back + 1.0)
        (session,) = chat.stop()
    assert not session.lost(), session  # the session crossed both hand-overs
    # Each virtual router changed hands exactly twice, the trackers said why.
    for router in ("r1", "r2"):
        for v in tables(pair, router)["vrrp"]:
            was, now = before[router, v["vrid"]], v["counters"]
            moved = {k: now.get(k, 0) - was.get(k, 0) for k in ("to-master", "to-backup")}
            assert moved == {"to-master": 1, "to-backup": 1}, (router, v)
            if router == "r1":
                assert v["effective_priority"] == 150 and not v["failed_trackers"], v
                assert now["tracker-failed"] == 1 and now["tracker-recovered"] == 1, v
