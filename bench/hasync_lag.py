"""Replication lag of the router state sync under NAT session churn.

A master router and a backup router (each a ``Router`` with NAT, in this one
process) are joined by the state sync over a real TCP connection on
127.0.0.1: the master's ``SyncSender`` behind a listening ``SyncLink``, the
backup's ``SyncReceiver`` behind a connecting one, both on one event loop (one
thread, so the backup's work is paid from the same core as the master's: a
pessimistic figure for two machines). A loop timer feeds the master synthetic
outbound UDP datagrams, each from a new (source port, destination port) pair
and so a new NAT session, at a steady rate; the master's router notes each as
a change and the sender ships it. Reported per rate: the sessions per second
achieved, records and messages per second on the wire, and the lag from the
sender taking a change to the backup acknowledging it (p50, p99, max over the
last 4096 messages), and whether the backup ends equal to the master.

Then the cost of noting changes on the packet path: new sessions, and packets
of known sessions, through a router with change tracking off and on (best of
five runs each); and, for a table of ``--table`` sessions, what a whole
snapshot costs (reading, encoding, decoding and applying its records) and what
the backup's ``takeover`` costs (every copied session gets its timer), which is
on the failover's critical path.

With ``--gc off`` Python's cyclic garbage collector is disabled for the run:
its full collections walk every session object and pause the one thread for
tens of milliseconds once the table holds tens of thousands of sessions.

    .venv/bin/python bench/hasync_lag.py [--rates 1000,5000,10000,20000] [--seconds 3]
                                         [--gc default|off]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.eventloop import EventLoop
from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.router.sync import LagStats, SyncReceiver, SyncSender
from pktchain.functions.sdk import Packet
from pktchain.node.hasync import SyncLink

VNET = bytes(10)
LAN_MAC, WAN_MAC, HOST_MAC, GW_MAC = (
    "02:00:00:00:00:01",
    "02:00:00:00:00:03",
    "02:aa:00:00:00:01",
    "02:bb:00:00:00:fe",
)
HOST, REMOTE = "10.0.0.5", "198.51.100.7"
SPORT_AT = 10 + 14 + 20  # vnet, Ethernet, IPv4 without options
TICK = 0.001
CATCH_UP = 0.005
"""At most this many seconds' worth of sessions are made in one tick."""


def make_router() -> Router:
    router = Router(
        RouterConfig(
            interfaces=(
                RouterInterface("lan0", LAN_MAC, IPv4Interface("10.0.0.1/24")),
                RouterInterface("wan", WAN_MAC, IPv4Interface("203.0.113.1/24"), external=True),
            ),
            upstream_gateway=IPv4Address("203.0.113.254"),
            nat=NatConfig(
                "203.0.113.1",
                ("10.0.0.0/16",),
                max_sessions=2_000_000,
                max_sessions_per_host=2_000_000,
                port_seed=7,
            ),
        )
    )
    router.on_timer(0.0)
    for iface, mac, ip, target in (
        ("lan0", HOST_MAC, HOST, "10.0.0.1"),
        ("wan", GW_MAC, "203.0.113.254", "203.0.113.1"),
    ):
        arp = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=target)
        router.process(Packet(bytearray(VNET + bytes(arp)), iface), 0.0)
    return router


# DF set (an atomic datagram keeps its ID) and no UDP checksum (0 is allowed in IPv4):
# the source and destination ports can be patched in without touching a checksum.
TEMPLATE = VNET + bytes(
    Ether(src=HOST_MAC, dst=LAN_MAC)
    / IP(src=HOST, dst=REMOTE, flags="DF")
    / UDP(sport=1, dport=1, chksum=0)
    / b"x"
)


def new_session(router: Router, number: int, now: float) -> None:
    frame = bytearray(TEMPLATE)
    sport, dport = 1024 + number % 60000, 1 + number // 60000
    frame[SPORT_AT : SPORT_AT + 4] = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    router.process(Packet(frame, "lan0"), now)


def run(rate: int, seconds: float) -> dict[str, Any]:
    secret = os.urandom(32)
    master, backup = make_router(), make_router()
    sender, receiver = SyncSender(master, secret), SyncReceiver(backup, secret)
    loop = EventLoop()
    server = SyncLink(sender, loop=loop, listen=("127.0.0.1", 0))
    server.start()
    port = server.port
    assert port is not None
    client = SyncLink(receiver, loop=loop, connect=("127.0.0.1", port))
    client.start()
    state: dict[str, Any] = {"made": 0, "start": None, "end": None, "phase": "connect"}
    deadline = time.monotonic() + seconds + 30.0

    def tick() -> None:
        now = loop.now
        if now > deadline:
            state["phase"] = "timeout"
            loop.stop()
            return
        if state["phase"] == "connect":
            if sender.in_sync:
                sender.lag = LagStats(sender.settings.lag_samples)
                state["start"], state["phase"] = now, "churn"
                state["counters"] = sender.counters()
            return
        if state["phase"] == "churn":
            due = min(int(rate * (now - state["start"])), int(rate * seconds))
            made = state["made"]
            # A loop that cannot keep up falls behind (the achieved rate shows it)
            # rather than making seconds of sessions in one long pause.
            due = min(due, made + max(1, int(rate * CATCH_UP)))
            for number in range(made, due):
                new_session(master, number, now)
            state["made"] = due
            if due >= int(rate * seconds) or now - state["start"] > 3 * seconds:
                state["end"], state["phase"] = now, "drain"
            return
        if sender.in_sync and sender.unacknowledged == 0 and not master.changes_pending():
            state["drained"] = now
            loop.stop()

    timer = loop.call_every(TICK, tick)
    loop.run()
    timer.cancel()
    client.stop()
    server.stop()
    loop.close()
    counters = sender.counters()
    before = state.get("counters", {})
    elapsed = (state["end"] or loop.now) - (state["start"] or loop.now)
    lag = sender.lag.summary()
    return {
        "rate": rate,
        "phase": state["phase"],
        "sessions": state["made"],
        "sessions_per_s": state["made"] / elapsed if elapsed else 0.0,
        "records_per_s": (counters["records-sent"] - before.get("records-sent", 0)) / elapsed,
        "messages_per_s": (counters["messages-sent"] - before.get("messages-sent", 0)) / elapsed,
        "bytes_per_s": (counters["bytes-sent"] - before.get("bytes-sent", 0)) / elapsed,
        "lag_p50_ms": None if lag["p50"] is None else 1000 * float(lag["p50"]),
        "lag_p99_ms": None if lag["p99"] is None else 1000 * float(lag["p99"]),
        "lag_max_ms": 1000 * float(lag["max"] or 0.0),
        "resent": counters.get("resent", 0),
        "resyncs": counters.get("resyncs", 0) - before.get("resyncs", 0),
        "backup_equal": master.export_state() == backup.export_state(),
    }


def packet_cost(count: int = 20000) -> dict[str, float]:
    """Microseconds per packet: new sessions and known ones, tracking off and on."""
    costs: dict[str, float] = {}
    for tracking in (False, True):
        new, known = [], []
        for _ in range(5):
            router = make_router()
            router.track_changes(tracking)
            start = time.perf_counter()
            for number in range(count):
                new_session(router, number, 1.0)
            new.append(time.perf_counter() - start)
            start = time.perf_counter()
            for number in range(count):
                new_session(router, number, 2.0)  # the same sessions again: refreshes
            known.append(time.perf_counter() - start)
        label = "on" if tracking else "off"
        costs[f"new-{label}"] = min(new) / count * 1e6
        costs[f"known-{label}"] = min(known) / count * 1e6
    return costs


def table_cost(sessions: int) -> dict[str, float]:
    """Seconds to read, encode, decode and apply a snapshot of ``sessions``, and to
    take it over."""
    from pktchain.functions.router.sync.records import decode_changes, encode_changes

    master, backup = make_router(), make_router()
    for number in range(sessions):
        new_session(master, number, 1.0)
    costs: dict[str, float] = {}
    start = time.perf_counter()
    records = master.export_state().records()
    costs["read"] = time.perf_counter() - start
    start = time.perf_counter()
    data = encode_changes(records)
    costs["encode"] = time.perf_counter() - start
    start = time.perf_counter()
    changes, _ = decode_changes(data)
    costs["decode"] = time.perf_counter() - start
    start = time.perf_counter()
    backup.apply_changes(changes, 2.0)
    costs["apply"] = time.perf_counter() - start
    start = time.perf_counter()
    backup.takeover(3.0)
    costs["takeover"] = time.perf_counter() - start
    costs["bytes"] = len(data)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,5000,10000,20000", help="sessions per second")
    parser.add_argument("--seconds", type=float, default=3.0, help="churn time per rate")
    parser.add_argument("--gc", choices=("default", "off"), default="default")
    parser.add_argument("--table", type=int, default=100_000, help="sessions in the snapshot")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    if args.gc == "off":
        gc.disable()
    results = [run(int(rate), args.seconds) for rate in args.rates.split(",")]
    costs = packet_cost()
    table = table_cost(args.table)
    if args.json:
        print(json.dumps({"rates": results, "packet_cost_us": costs, "table": table}, indent=2))
        return
    print(
        f"{'target/s':>9} {'achieved/s':>10} {'records/s':>10} {'msgs/s':>7} {'KiB/s':>7} "
        f"{'lag p50':>8} {'lag p99':>8} {'max':>7}  equal"
    )
    for r in results:
        p50 = "-" if r["lag_p50_ms"] is None else f"{r['lag_p50_ms']:.1f}ms"
        p99 = "-" if r["lag_p99_ms"] is None else f"{r['lag_p99_ms']:.1f}ms"
        print(
            f"{r['rate']:>9} {r['sessions_per_s']:>10.0f} {r['records_per_s']:>10.0f} "
            f"{r['messages_per_s']:>7.0f} {r['bytes_per_s'] / 1024:>7.0f} {p50:>8} {p99:>8} "
            f"{r['lag_max_ms']:>5.1f}ms  {'yes' if r['backup_equal'] else 'NO'}"
            + ("" if r["phase"] != "timeout" else "  (timed out)")
            + ("" if not r["resyncs"] else f"  ({r['resyncs']} resyncs)")
        )
    print(
        "\nrouter.process per packet, change tracking off -> on: "
        f"new session {costs['new-off']:.1f} -> {costs['new-on']:.1f} us, "
        f"known session {costs['known-off']:.1f} -> {costs['known-on']:.1f} us"
    )
    print(
        f"snapshot of {args.table} sessions ({table['bytes'] / 1e6:.1f} MB): read "
        f"{table['read'] * 1000:.0f} ms, encode {table['encode'] * 1000:.0f} ms, decode "
        f"{table['decode'] * 1000:.0f} ms, apply {table['apply'] * 1000:.0f} ms; "
        f"takeover {table['takeover'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
