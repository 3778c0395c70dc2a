"""The cluster demo's declarations and checks, without a lab: its topology, its
firewall's rules, and what it concludes from flow tables and counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pktchain.cli import main
from pktchain.demo.cluster.checks import (
    client_flows,
    flowcount_problems,
    hop_problems,
    reply_problems,
    summarize_paths,
)
from pktchain.demo.cluster.topology import (
    CLIENT,
    FIREWALL,
    GROUPS,
    HTTP_PORT,
    IPERF_PORT,
    NODES,
    NSH_MTU,
    PAIR_NODE,
    PAIRS,
    SERVER,
    cluster_topology,
    firewall_functions,
)
from pktchain.functions.sdk import Verdict
from pktchain.lab.topology import topology_from_dict
from pktchain.node.function_file import parse_functions
from support.fn_frames import TcpConversation, make

CHAIN = "PC"
PATH = ("FW2", "SF3", "FLOWCOUNT")


def row(src: str, dst: str, sport: int, dport: int, path: tuple[str, ...]) -> dict[str, Any]:
    """A row of ``pktchain node flows --json``."""
    return {
        "src": src,
        "dst": dst,
        "proto": 6,
        "sport": sport,
        "dport": dport,
        "chain": CHAIN,
        "path": list(path),
        "packets": 3,
        "idle": 0.1,
    }


def both_ways(sport: int, path: tuple[str, ...] = PATH) -> list[dict[str, Any]]:
    return [row(CLIENT, SERVER, sport, 80, path), row(SERVER, CLIENT, 80, sport, path)]


# -- the declarations ----------------------------------------------------------------


def test_the_topology_puts_each_host_on_its_node() -> None:
    topology = topology_from_dict(cluster_topology("demo-cluster-test"))
    assert list(topology.nodes) == list(NODES)
    placed = {port.host: port.node for port in topology.node_ports()}
    assert placed == {
        "client": "n1",
        "sf2": "n2",
        "sf3": "n3",
        "flowcount": "n3",
        "server": "n3",
    }
    # Every port a pair names is a port its node makes.
    ports = {f"{p.host}:{p.interface.name}": p.node for p in topology.node_ports()}
    for pair in PAIRS:
        if not pair.ingress.startswith("fw"):
            assert ports[pair.ingress] == ports[pair.egress] == pair.node
    # NSH frames of 64 KB super-frames, with the function's TLV, leave its interfaces whole.
    assert {p.interface.mtu for p in topology.node_ports("n3") if p.host == "flowcount"} == {
        NSH_MTU
    }


def test_every_group_has_an_instance_off_the_killed_node() -> None:
    for group, members in GROUPS:
        assert any(PAIR_NODE[pair] != "n2" for pair in members), group


def test_the_firewall_files_load_and_name_their_ports() -> None:
    for name in ("fw1", "fw2"):
        (spec,) = parse_functions(yaml.safe_dump(firewall_functions(name)))
        assert spec.name == name and spec.kind == "firewall"
        spec.build()  # the configuration is checked whole


def test_the_firewall_lets_a_connection_in_that_moved_in_mid_stream() -> None:
    """A connection re-pinned from the other instance meets this one mid-stream:
    stateless rules accept its segments both ways, and tcp_pickup tracks it."""
    for port in (HTTP_PORT, IPERF_PORT):
        firewall = make("firewall", **FIREWALL)
        talk = TcpConversation(firewall, client=CLIENT, server=SERVER, dport=port)
        assert talk.client_sends("A", payload=b"more data").verdict is Verdict.FORWARD
        assert talk.server_sends("A").verdict is Verdict.FORWARD
        assert firewall.status()["connections"][0]["state"] == "established"


def test_the_firewall_refuses_what_the_chain_does_not_carry() -> None:
    firewall = make("firewall", **FIREWALL)
    other = TcpConversation(firewall, client=CLIENT, server=SERVER, dport=22)
    assert other.client_sends("S").verdict is Verdict.DROP
    stranger = TcpConversation(firewall, client="10.0.0.9", server=SERVER, dport=HTTP_PORT)
    assert stranger.client_sends("S").verdict is Verdict.DROP


# -- replies on the same instances -----------------------------------------------------


def test_replies_on_the_same_instances_on_every_holder() -> None:
    flows = {"n1": both_ways(40000), "n2": both_ways(40000), "n3": both_ways(40000) * 2}
    assert reply_problems(flows, PAIR_NODE, CHAIN) == ([], 1)


def test_a_reply_on_another_instance_is_named() -> None:
    flows = {
        "n1": both_ways(40000),
        "n2": both_ways(40000),
        "n3": [
            row(CLIENT, SERVER, 40000, 80, PATH),
            row(SERVER, CLIENT, 80, 40000, ("FW1", *PATH[1:])),
        ],
    }
    problems, checked = reply_problems(flows, PAIR_NODE, CHAIN)
    assert checked == 1
    assert problems == [
        "10.0.0.1:40000 → 10.0.0.2:80: n3 has its replies on FW1 → SF3 → FLOWCOUNT, "
        "not FW2 → SF3 → FLOWCOUNT"
    ]


def test_a_holder_that_never_saw_the_replies_is_named() -> None:
    flows = {"n1": both_ways(40000), "n2": both_ways(40000)[:1], "n3": both_ways(40000)}
    problems, _checked = reply_problems(flows, PAIR_NODE, CHAIN)
    assert problems == [
        "10.0.0.1:40000 → 10.0.0.2:80: n2 has its replies on nothing, not FW2 → SF3 → FLOWCOUNT"
    ]


def test_a_flow_pinned_twice_is_named() -> None:
    flows = {"n1": [*both_ways(40000), row(CLIENT, SERVER, 40000, 80, ("FW1", "SF3", "FLOWCOUNT"))]}
    problems, _checked = reply_problems(flows, PAIR_NODE, CHAIN)
    assert problems == ["10.0.0.1:40000 → 10.0.0.2:80 is pinned to 2 paths on n1"]


def test_only_the_flows_asked_for_are_checked() -> None:
    local = ("FW1", "SF3", "FLOWCOUNT")
    flows = {"n1": both_ways(40000, local) + both_ways(40002), "n3": both_ways(40000, local)}
    key = (CLIENT, SERVER, 6, 40000, 80)
    assert reply_problems(flows, PAIR_NODE, CHAIN, only={key}) == ([], 1)
    missing = (CLIENT, SERVER, 6, 40004, 80)
    problems, _ = reply_problems(flows, PAIR_NODE, CHAIN, only={key, missing})
    assert problems == ["n1 has no flow 10.0.0.1:40004 → 10.0.0.2:80"]


def test_client_flows_are_the_forward_ones() -> None:
    rows = both_ways(40000) + both_ways(40002) + [{**row(CLIENT, SERVER, 5, 5201, PATH)}]
    assert sorted(key[3] for key in client_flows(rows, CHAIN, HTTP_PORT)) == [40000, 40002]
    assert summarize_paths(client_flows(rows, CHAIN).values()) == "FW2 → SF3 → FLOWCOUNT x3"


# -- counters --------------------------------------------------------------------------


def status(hops: list[tuple[str, str, int]]) -> dict[str, Any]:
    """A node's status with one chain's hops: (pair, direction, packets)."""
    records = [
        {"port_pair_name": pair, "direction": direction, "packets": packets}
        for pair, direction, packets in hops
    ]
    return {"steering": {"chains": [{"name": CHAIN, "hops": records}]}}


def test_hops_forward_and_back_on_their_nodes() -> None:
    statuses = {
        "n1": status([("FW1", "forward", 10), ("FW1", "reverse", 8)]),
        "n3": status([("SF3", "forward", 10), ("SF3", "reverse", 9)]),
    }
    problems, counts = hop_problems(statuses, PAIR_NODE, CHAIN)
    assert problems == []
    assert counts == {"FW1": {"forward": 10, "reverse": 8}, "SF3": {"forward": 10, "reverse": 9}}


def test_a_hop_without_replies_or_on_the_wrong_node_is_named() -> None:
    statuses = {
        "n2": status([("SF2", "forward", 10), ("FW1", "forward", 1)]),
    }
    problems, _counts = hop_problems(statuses, PAIR_NODE, CHAIN)
    assert problems == [
        "SF2 on n2: 10 packets forward, 0 back",
        "n2 counts hops of FW1, which is on n1",
    ]


def test_flowcount_must_have_counted_both_ways() -> None:
    stats = {
        "flows": [
            {"src": CLIENT, "dst": SERVER, "proto": 6, "sport": 40000, "dport": 80},
            {"src": SERVER, "dst": CLIENT, "proto": 6, "sport": 80, "dport": 40000},
            {"src": CLIENT, "dst": SERVER, "proto": 6, "sport": 40002, "dport": 80},
        ]
    }
    keys = [(CLIENT, SERVER, 6, 40000, 80), (CLIENT, SERVER, 6, 40002, 80)]
    problems, counted = flowcount_problems(stats, keys)
    assert counted == 3
    assert problems == ["nsh-flowcount did not count 10.0.0.2:80 → 10.0.0.1:40002"]


# -- the command line ------------------------------------------------------------------


def test_the_command_takes_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(**options: Any) -> int:
        seen.update(options)
        return 0

    monkeypatch.setattr("pktchain.demo.cluster.run_cluster_demo", fake_run)
    argv = ["demo", "cluster", "--json", "--pcap", "/tmp/caps", "--iperf-seconds", "2"]
    assert main([*argv, "--iperf-bitrate", "20M", "--nsh-function", "/opt/nsh-flowcount"]) == 0
    assert seen == {
        "json_output": True,
        "pcap_dir": Path("/tmp/caps"),
        "iperf_seconds": 2.0,
        "iperf_bitrate": "20M",
        "nsh_function": Path("/opt/nsh-flowcount"),
    }


def test_a_run_of_no_length_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "cluster", "--iperf-seconds", "0"]) == 2
    assert "--iperf-seconds must be positive, got 0" in capsys.readouterr().err
