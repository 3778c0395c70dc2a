"""`pktchain demo cluster --json --pcap DIR`: every step holds, and the underlay decodes.

The demo runs as a user runs it, as a subprocess. Its JSON must report every
step ok, the killed node's flows moved within a second, and nothing left
behind. Then tshark reads the capture of each node's underlay interface
(ul0) that the demo left: every datagram to UDP 4790 is VXLAN-GPE (next
protocol NSH), NSH (next protocol Ethernet) and an inner Ethernet frame;
nothing is malformed; every chained packet names the instance of each of the
chain's three groups in pktchain's path TLV; and each flow's replies name the
very instances its packets named.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pktchain.demo.cluster.topology import CHAIN, CLIENT, DOOMED, MOVES, NODES, PAIR_NODE, SERVER
from pktchain.lab import running_labs
from support import demo_run
from support.nsh_fn import flowcount_binary, pktchain_argv

pytestmark = pytest.mark.slow

TIMEOUT = 150.0
"""Seconds the demo may take (it takes about 20)."""
GPE_PORT = 4790
PATH_CLASS = 0xFFF6
PATH_TYPE = 0x01
REVERSE_SPI = 0x800000
STEPS = (
    "lab up",
    "three nodes running",
    "server (HTTP, iperf3)",
    "chain created",
    "HTTP through the chain",
    "iperf3 through the chain",
    "replies crossed the same instances",
    f"{DOOMED} killed (SIGKILL)",
    f"HTTP and iperf3 without {DOOMED}",
    "per-node and per-hop counters",
    "n1 and n3 stopped",
    "underlay captures",
    "clean up",
)


def run_demo(argv: list[str]) -> tuple[int, dict[str, Any], str]:
    return demo_run.run_demo(argv, timeout=TIMEOUT, lab_prefix="demo-cluster-")


@dataclass(frozen=True)
class Datagram:
    """One datagram to or from UDP 4790, as tshark decodes it."""

    gpe_next: str
    nsh_next: str
    spi: int
    si: int
    path: tuple[int, ...] | None
    """The instance tag of each hop, from MD type 1's fixed context or MD type 2's
    path TLV; None if absent."""
    ethertypes: int
    """Ethernet headers decoded: the underlay's and the inner frame's."""
    md_type: int
    flow: tuple[str, str, int, int] | None
    """The inner TCP flow (source, destination, source port, destination port)."""


FIELDS = (
    "vxlan.next_proto",
    "nsh.nextproto",
    "nsh.spi",
    "nsh.si",
    "nsh.mdtype",
    "nsh.contextheader",
    "nsh.metadataclass",
    "nsh.metadatatype",
    "nsh.metadata",
    "eth.type",
    "ip.src",
    "ip.dst",
    "tcp.srcport",
    "tcp.dstport",
)


def datagrams(pcap: Path) -> Iterator[Datagram]:
    """Every datagram of the capture to or from UDP 4790 (ICMP errors quoting one
    aside: n2's kernel answers those sent to it after its node died)."""
    argv = ["tshark", "-r", str(pcap), "-Y", f"udp.port == {GPE_PORT} && !icmp"]
    argv += ["-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]
    for name in FIELDS:
        argv += ["-e", name]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    for line in result.stdout.splitlines():
        values = dict(zip(FIELDS, line.split("|"), strict=True))
        many = {name: value.split(",") if value else [] for name, value in values.items()}
        path = None
        if values["nsh.mdtype"] == "1" and many["nsh.contextheader"]:
            # MD type 1: the path's tags in the fixed context, unused words zero.
            raw = bytes.fromhex("".join(many["nsh.contextheader"]).replace(":", ""))
            words = [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]
            while words and words[-1] == 0:
                words.pop()
            path = tuple(words)
        for md_class, md_type, value in zip(
            many["nsh.metadataclass"], many["nsh.metadatatype"], many["nsh.metadata"], strict=True
        ):
            if int(md_class, 0) == PATH_CLASS and int(md_type, 0) == PATH_TYPE:
                raw = bytes.fromhex(value.replace(":", ""))
                path = tuple(int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))
        flow = None
        if many["tcp.srcport"] and len(many["ip.src"]) == 2:
            # The inner IP header is the last one: the first is the underlay's.
            flow = (
                many["ip.src"][-1],
                many["ip.dst"][-1],
                int(many["tcp.srcport"][0]),
                int(many["tcp.dstport"][0]),
            )
        yield Datagram(
            gpe_next=values["vxlan.next_proto"],
            nsh_next=values["nsh.nextproto"],
            md_type=int(values["nsh.mdtype"] or "0", 0),
            spi=int(values["nsh.spi"] or "-1", 0),
            si=int(values["nsh.si"] or "-1", 0),
            path=path,
            ethertypes=len(many["eth.type"]),
            flow=flow,
        )


def test_demo_cluster_passes_and_its_underlay_decodes(tmp_path: Path) -> None:
    pcaps = tmp_path / "pcaps"
    argv = pktchain_argv("demo", "cluster", "--json", "--pcap", str(pcaps))
    argv += ["--iperf-seconds", "2", "--nsh-function", str(flowcount_binary())]
    code, report, err = run_demo(argv)

    failed = [(s["name"], s["detail"]) for s in report["steps"] if not s["ok"]]
    assert code == 0 and report["ok"] and not failed, (failed, err[-3000:])
    names = [step["name"] for step in report["steps"]]
    assert len(names) == len(STEPS)
    assert all(name.startswith(start) for name, start in zip(names, STEPS, strict=True)), names
    steps = dict(zip(STEPS, report["steps"], strict=True))
    lab = steps["lab up"]["data"]["lab"]
    assert lab not in running_labs()

    # The replies crossed the same instances, as the nodes' flow tables show.
    assert steps["replies crossed the same instances"]["data"]["flows"] >= 6
    # The killed node's flows moved within a second, each to the other instance.
    failover = steps[f"{DOOMED} killed (SIGKILL)"]["data"]
    assert sorted(failover["dead_after"]) == [n for n in NODES if n != DOOMED]
    assert max(failover["dead_after"].values()) <= 1.0
    assert failover["moved_after"] and max(failover["moved_after"].values()) <= 1.0
    for port, before in failover["paths_before"].items():
        after = failover["paths_after"][port]
        assert all(PAIR_NODE[pair] != DOOMED for pair in after)
        for gone, instead in MOVES.items():
            assert (gone not in before) or (instead in after), (before, after)
    assert all(probe["error"] is None for probe in failover["probes"])
    assert sum(p["answered"] for p in failover["probes"]) == sum(
        p["sent"] for p in failover["probes"]
    )
    # Per-hop counters of every node, n2's as it was killed.
    assert sorted(report["nodes"]) == list(NODES)
    for node, status in report["nodes"].items():
        (chain,) = [c for c in status["steering"]["chains"] if c["name"] == CHAIN]
        assert {hop["port_pair_name"] for hop in chain["hops"]} <= {
            pair for pair, holder in PAIR_NODE.items() if holder == node
        }
    assert report["flowcount"]["in"]["packets"] == report["flowcount"]["out"]["packets"] > 0

    # The captures the demo left: what tshark makes of every datagram between nodes.
    tags: dict[str, dict[tuple[str, str, int, int], set[frozenset[int]]]] = {
        "forward": defaultdict(set),
        "reverse": defaultdict(set),
    }
    for node in NODES:
        pcap = pcaps / f"{node}-ul0.pcap"
        malformed = subprocess.run(
            ["tshark", "-r", str(pcap), "-Y", "_ws.malformed"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert malformed.stdout == "", f"{pcap}: malformed packets:\n{malformed.stdout[:2000]}"
        seen = list(datagrams(pcap))
        chained = [d for d in seen if d.spi > 0]
        assert len(chained) >= 10, f"{pcap}: {len(chained)} chained datagrams"
        for datagram in seen:
            assert datagram.gpe_next == "4", datagram  # VXLAN-GPE: next protocol NSH
            assert datagram.nsh_next == "3", datagram  # NSH: next protocol Ethernet
            assert datagram.ethertypes == 2, datagram  # the underlay's Ethernet, the inner one
        for datagram in chained:
            assert datagram.path is not None and len(datagram.path) == 3, datagram
            if datagram.flow is None:
                continue
            if datagram.spi & REVERSE_SPI:
                src, dst, sport, dport = datagram.flow
                assert (src, dst) == (SERVER, CLIENT), datagram
                tags["reverse"][(dst, src, dport, sport)].add(frozenset(datagram.path))
            else:
                assert datagram.flow[:2] == (CLIENT, SERVER), datagram
                tags["forward"][datagram.flow].add(frozenset(datagram.path))
    # The path TLV lists the instances in the chain's order both ways: as sets,
    # what each flow's replies named is what its packets named.
    both = set(tags["forward"]) & set(tags["reverse"])
    assert len(both) >= 10, f"only {len(both)} flows were captured both ways"
    for flow in sorted(both):
        assert tags["forward"][flow] == tags["reverse"][flow], flow
