"""Service chaining on real traffic, seen from inside the service functions.

Every expectation here is checked with tcpdump captures taken in the service
VMs' (or the hosts') namespaces and decoded with scapy, not only with the
node's own counters.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Packet

from pktchain.demo.sfc import (
    DEST_IP,
    SOURCE_IP,
    STEPS,
    build_demo_chain,
    sfc_topology,
    start_web_server,
)
from pktchain.lab import Lab, TcpSocketState, wait_until
from pktchain.node.client import ChainingClient, ChainingRequestError
from pktchain.node.process import NodeProcess
from support.fn_lab import capture
from support.sfc_lab import fetch

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


NodeLab = Callable[..., tuple[Lab, NodeProcess]]
Sfc = tuple[Lab, NodeProcess, ChainingClient]


@pytest.fixture
def sfc(node_lab: NodeLab, tmp_path: Path) -> Callable[..., Sfc]:
    """``lab, node, api = sfc(service_vms=3)``: the demo's hosts, dest serving HTTP."""

    def make(service_vms: int = 3, state: Path | None = None) -> Sfc:
        lab, node = node_lab(sfc_topology("sfc", service_vms), state=state)
        start_web_server(lab.host("dest_vm"), tmp_path)
        return lab, node, ChainingClient(node.control)

    return make


def settle(node: NodeProcess, quiet: float = 0.3, timeout: float = 10.0) -> None:
    """Wait until the node has sent nothing for `quiet` seconds (at most `timeout`)."""

    def sent() -> int:
        return sum(port["tx_packets"] for port in node.status()["ports"])

    deadline = time.monotonic() + timeout
    last = sent()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = sent()
        if now == last:
            return
        last = now
    raise AssertionError(f"the node kept sending for {timeout} s")


def ids(api: ChainingClient, collection: str, *names: str) -> list[str]:
    return [str(api.get(collection, name)["id"]) for name in names]


def test_demo_steps_as_the_service_vms_see_them(sfc: Callable[..., Sfc], tmp_path: Path) -> None:
    lab, node, api = sfc()
    build_demo_chain(api)
    for index, (title, change, expectation) in enumerate(STEPS):
        change(api)
        settle(node)  # the last packets of the previous step are not this one's
        seen: dict[str, list[Packet]] = {}
        with (
            capture(lab.host("vm1"), "in", tmp_path / f"{index}-vm1.pcap", "tcp port 80") as vm1,
            capture(lab.host("vm2"), "in", tmp_path / f"{index}-vm2.pcap", "tcp port 80") as vm2,
            capture(lab.host("vm3"), "in", tmp_path / f"{index}-vm3.pcap", "tcp port 80") as vm3,
        ):
            fetch(lab, 20)
        seen = {"vm1": vm1, "vm2": vm2, "vm3": vm3}
        for vm in expectation.busy:
            assert seen[vm], f"{title}: {vm} saw no HTTP"
        for vm in expectation.idle:
            assert not seen[vm], f"{title}: {vm} saw {len(seen[vm])} HTTP packets"


def test_weights_one_to_three_share_two_thousand_flows(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, _node, api = sfc(service_vms=2)
    pid = api.port_id
    one = api.create("port_pairs", name="light", ingress=pid("vm1:in"), egress=pid("vm1:out"))
    three = api.create(
        "port_pairs",
        name="heavy",
        ingress=pid("vm2:in"),
        egress=pid("vm2:out"),
        service_function_parameters={"weight": 3},
    )
    group = api.create("port_pair_groups", name="G", port_pairs=[one["id"], three["id"]])
    fc = api.create(
        "flow_classifiers",
        name="udp9999",
        protocol="udp",
        destination_port_range_min=9999,
        destination_port_range_max=9999,
        logical_source_port=pid("source_vm:eth0"),
    )
    api.create("port_chains", name="C", port_pair_groups=[group["id"]], flow_classifiers=[fc["id"]])
    flows = 2400
    sender = (
        "import socket, time\n"
        f"for sport in range(20000, {20000 + flows}):\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"    s.bind(('{SOURCE_IP}', sport))\n"
        f"    s.sendto(b'x', ('{DEST_IP}', 9999))\n"
        "    s.close()\n"
        "    time.sleep(0.0005)\n"
    )
    bpf = "udp dst port 9999"
    with (
        capture(lab.host("vm1"), "in", tmp_path / "vm1.pcap", bpf) as light,
        capture(lab.host("vm2"), "in", tmp_path / "vm2.pcap", bpf) as heavy,
    ):
        lab.host("source_vm").run([sys.executable, "-c", sender], timeout=60, check=True)
    light_flows = {p[UDP].sport for p in light}
    heavy_flows = {p[UDP].sport for p in heavy}
    assert not light_flows & heavy_flows  # every flow went to exactly one instance
    total = len(light_flows) + len(heavy_flows)
    assert total >= 2000
    assert abs(len(light_flows) / total - 0.25) <= 0.05, (len(light_flows), len(heavy_flows))


def test_symmetric_replies_cross_the_same_instances(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, _node, api = sfc()
    build_demo_chain(api)
    api.delete("port_chains", "PC1")
    api.delete("flow_classifiers", "FC_demo")  # it would overlap the new one
    both_ways = api.create(
        "flow_classifiers",
        name="FC_symmetric",
        protocol="tcp",
        destination_port_range_min=80,
        destination_port_range_max=80,
        logical_source_port=api.port_id("source_vm:eth0"),
        logical_destination_port=api.port_id("dest_vm:eth0"),
    )
    api.create(
        "port_chains",
        name="PCS",
        port_pair_groups=ids(api, "port_pair_groups", "PG1", "PG2"),
        flow_classifiers=[both_ways["id"]],
        chain_parameters={"symmetric": True},
    )
    with (
        capture(lab.host("vm1"), "any", tmp_path / "vm1.pcap", "tcp port 80") as vm1,
        capture(lab.host("vm2"), "any", tmp_path / "vm2.pcap", "tcp port 80") as vm2,
        capture(lab.host("vm3"), "any", tmp_path / "vm3.pcap", "tcp port 80") as vm3,
    ):
        fetch(lab, 20)

    def directions(packets: list[Packet]) -> dict[int, set[str]]:
        """Client port → which directions of that connection were seen."""
        seen: dict[int, set[str]] = {}
        for packet in packets:
            tcp = packet[TCP]
            if tcp.dport == 80:
                seen.setdefault(tcp.sport, set()).add("request")
            else:
                seen.setdefault(tcp.dport, set()).add("reply")
        return seen

    first, second, last = directions(vm1), directions(vm2), directions(vm3)
    assert len(last) == 20
    assert all(seen == {"request", "reply"} for seen in last.values())
    assert first and second  # both instances of PG1 took connections
    assert not set(first) & set(second)  # each connection crossed one of them
    for seen in (*first.values(), *second.values()):
        assert seen == {"request", "reply"}  # both ways through the same instance


def test_changing_the_group_leaves_a_running_transfer_on_its_instance(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, node, api = sfc()
    pid = api.port_id
    pp1 = api.create("port_pairs", name="PP1", ingress=pid("vm1:in"), egress=pid("vm1:out"))
    pp2 = api.create("port_pairs", name="PP2", ingress=pid("vm2:in"), egress=pid("vm2:out"))
    api.create("port_pair_groups", name="PG1", port_pairs=[pp1["id"]])
    fc = api.create(
        "flow_classifiers",
        name="iperf",
        protocol="tcp",
        destination_port_range_min=5201,
        destination_port_range_max=5201,
        logical_source_port=pid("source_vm:eth0"),
    )
    api.create(
        "port_chains",
        name="PC",
        port_pair_groups=ids(api, "port_pair_groups", "PG1"),
        flow_classifiers=[fc["id"]],
    )
    lab.host("dest_vm").popen(["iperf3", "-s", "-1", "-p", "5201"])
    lab.host("dest_vm").wait_listening(5201, timeout=10)
    report = tmp_path / "iperf.json"
    with (
        capture(lab.host("vm2"), "any", tmp_path / "vm2.pcap", "tcp port 5201") as vm2,
        report.open("w") as out,
    ):
        client = lab.host("source_vm").popen(
            ["iperf3", "-c", DEST_IP, "-p", "5201", "-t", "5", "-i", "0.5", "-J"], stdout=out
        )
        time.sleep(2)
        before = _pair_packets(node, "PP1")
        api.update("port_pair_groups", "PG1", port_pairs=[pp1["id"], pp2["id"]])
        assert client.wait(timeout=30) == 0
    result = json.loads(report.read_text())
    intervals = [interval["sum"]["bytes"] for interval in result["intervals"]]
    assert len(intervals) >= 9
    assert all(sent > 0 for sent in intervals), intervals  # never stalled
    assert result["end"]["sum_received"]["bytes"] > 100_000_000
    assert _pair_packets(node, "PP1") > before  # still crossing vm1 after the change
    assert _pair_packets(node, "PP2") == 0
    assert vm2 == []  # vm2 never saw the transfer


def _pair_packets(node: NodeProcess, name: str) -> int:
    pairs = node.status()["steering"]["port_pairs"].values()
    return sum(int(p["packets"]) for p in pairs if p["name"] == name)


def test_a_tap_sees_every_packet_and_the_destination_each_once(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, node, api = sfc(service_vms=4)
    pid = api.port_id
    tap = api.create("port_pairs", name="TAP", ingress=pid("vm4:in"), egress=pid("vm4:out"))
    pp3 = api.create("port_pairs", name="PP3", ingress=pid("vm3:in"), egress=pid("vm3:out"))
    tap_group = api.create(
        "port_pair_groups", name="TAPG", port_pairs=[tap["id"]], tap_enabled=True
    )
    group = api.create("port_pair_groups", name="PG2", port_pairs=[pp3["id"]])
    fc = api.create(
        "flow_classifiers",
        name="http",
        protocol="tcp",
        destination_port_range_min=80,
        destination_port_range_max=80,
        logical_source_port=pid("source_vm:eth0"),
    )
    api.create(
        "port_chains",
        name="PCT",
        port_pair_groups=[tap_group["id"], group["id"]],
        flow_classifiers=[fc["id"]],
    )
    bpf = "tcp dst port 80"
    with (
        capture(lab.host("source_vm"), "eth0", tmp_path / "source.pcap", bpf) as sent,
        capture(lab.host("vm4"), "in", tmp_path / "tap.pcap", bpf) as tapped,
        capture(lab.host("dest_vm"), "eth0", tmp_path / "dest.pcap", bpf) as received,
    ):
        fetch(lab, 5)

    def segments(packets: list[Packet]) -> list[tuple[int, int, int, int]]:
        return sorted((p[TCP].sport, p[TCP].seq, p[TCP].ack, int(p[TCP].flags)) for p in packets)

    assert len(sent) >= 5 * 5  # SYN, ACK, request, ACK..., FIN per fetch
    assert segments(tapped) == segments(sent)  # the tap saw a copy of every packet
    assert segments(received) == segments(sent)  # the destination got each exactly once
    assert node.port("vm4:out")["drops"].get("tap-return", 0) > 0


def test_service_graph_carries_traffic_on_into_the_next_chain(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, node, api = sfc()
    build_demo_chain(api)
    api.update("port_chains", "PC1", port_pair_groups=ids(api, "port_pair_groups", "PG1"))
    # Chain B's own entry is dest_vm's port, so only the graph brings source
    # traffic into it.
    to_dest = api.create(
        "flow_classifiers",
        name="FC_to_dest",
        protocol="tcp",
        destination_ip_prefix=f"{DEST_IP}/32",
        logical_source_port=api.port_id("dest_vm:eth0"),
    )
    api.create(
        "port_chains",
        name="PCB",
        port_pair_groups=ids(api, "port_pair_groups", "PG2"),
        flow_classifiers=[to_dest["id"]],
    )
    with capture(lab.host("vm3"), "in", tmp_path / "before.pcap", "tcp dst port 80") as before:
        fetch(lab, 4)
    assert before == []  # PC1 alone ends after PG1
    api.create(
        "service_graphs",
        name="G",
        port_chains={ids(api, "port_chains", "PC1")[0]: ids(api, "port_chains", "PCB")},
    )
    with capture(lab.host("vm3"), "in", tmp_path / "after.pcap", "tcp dst port 80") as after:
        fetch(lab, 4)
    assert len({p[TCP].sport for p in after}) == 4  # every connection went on into PCB
    chains = {c["name"]: c for c in node.status()["steering"]["chains"]}
    assert chains["PCB"]["flows"] == 4


def test_a_restarted_node_restores_its_chains_and_steers_as_before(
    sfc: Callable[..., Sfc], tmp_path: Path
) -> None:
    lab, node, api = sfc(state=tmp_path / "state.db")
    build_demo_chain(api)
    before = {c: sorted(r["id"] for r in api.list(c)) for c in COLLECTIONS}
    fetch(lab, 3)
    # curl is done once it has closed its end, while its FIN may still be
    # crossing the chain: a node stopped then loses it, the client sends it
    # again after the restart, and the restarted node, which has no flow for
    # it, steers it into PC1 as a flow of its own.
    wait_closed(lab, 80, "source_vm", "dest_vm")
    assert node.stop() == 0
    node.start()
    after = {c: sorted(r["id"] for r in api.list(c)) for c in COLLECTIONS}
    assert after == before  # same resources, same ids, nothing re-created
    assert api.get("port_chains", "PC1")["chain_id"] == 1
    with capture(lab.host("vm3"), "in", tmp_path / "vm3.pcap", "tcp dst port 80") as vm3:
        fetch(lab, 6)
    crossed = {(p[IP].src, p[IP].dst, p[IP].proto, p[TCP].sport, p[TCP].dport) for p in vm3}
    assert len(crossed) == 6  # every connection crossed PG2 again
    flows = node.flows()
    steered = {
        (f["src"], f["dst"], f["proto"], f["sport"], f["dport"]): f["path"]
        for f in flows
        if f["chain"] == "PC1"
    }
    assert set(steered) == crossed, flows  # the node steered these connections and no other
    assert all(path[-1] == "PP3" for path in steered.values())
    (chain,) = node.status()["steering"]["chains"]
    assert chain["name"] == "PC1" and chain["flows"] == 6, flows


def wait_closed(lab: Lab, port: int, *hosts: str) -> None:
    """Wait until every TCP connection on `port` in `hosts` is gone or in TIME_WAIT.

    Then neither end has a segment left to send: TIME_WAIT only answers a FIN
    sent again (RFC 9293 §3.6), and a peer that is gone or in TIME_WAIT too
    sends none.
    """

    def closed() -> bool:
        return all(
            connection.state is TcpSocketState.TIME_WAIT
            for host in hosts
            for connection in lab.host(host).tcp_connections(port)
        )

    wait_until(
        closed, timeout=10, what=f"connections on port {port} in {', '.join(hosts)} to close"
    )


COLLECTIONS = ("port_pairs", "port_pair_groups", "flow_classifiers", "port_chains")


def test_an_nsh_pair_needs_a_chain_that_says_nsh(sfc: Callable[..., Sfc]) -> None:
    """A pair with correlation nsh (an NSH-aware function) is accepted; a chain
    that holds it must say so too, as networking-sfc requires."""
    _lab, _node, api = sfc(service_vms=1)
    pair = api.create(
        "port_pairs",
        name="nsh",
        ingress=api.port_id("vm1:in"),
        egress=api.port_id("vm1:out"),
        service_function_parameters={"correlation": "nsh"},
    )
    assert pair["service_function_parameters"]["correlation"] == "nsh"
    group = api.create("port_pair_groups", name="g", port_pairs=[pair["id"]])
    with pytest.raises(ChainingRequestError) as refused:
        api.create("port_chains", name="mpls", port_pair_groups=[group["id"]])
    assert refused.value.status == 400
    assert api.list("port_chains") == []
    chain = api.create(
        "port_chains",
        name="nsh",
        port_pair_groups=[group["id"]],
        chain_parameters={"correlation": "nsh"},
    )
    assert chain["chain_parameters"]["correlation"] == "nsh"


def test_counters_per_chain_hop_and_pair_in_the_status_command(
    sfc: Callable[..., Sfc],
) -> None:
    lab, node, api = sfc()
    build_demo_chain(api)
    fetch(lab, 6)
    argv = [sys.executable, "-m", "pktchain", "node", "status", "--control", str(node.control)]
    table = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    assert "PC1" in table and "PP3" in table and "PG2" in table
    status: dict[str, Any] = json.loads(
        subprocess.run(
            [*argv, "--json"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    )
    (chain,) = status["steering"]["chains"]
    assert chain["flows"] == 6
    pp3 = next(h for h in chain["hops"] if h["port_pair_name"] == "PP3")
    assert pp3["flows"] == 6 and pp3["packets"] == chain["packets"] > 0
    flows = subprocess.run(
        [
            sys.executable,
            "-m",
            "pktchain",
            "node",
            "flows",
            "--json",
            "--control",
            str(node.control),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    steered = [f for f in json.loads(flows) if f["chain"] == "PC1"]
    assert len(steered) == 6 and all(f["path"][-1] == "PP3" for f in steered)


@pytest.mark.slow
def test_demo_sfc_passes_and_reports_json() -> None:
    argv = [sys.executable, "-m", "pktchain", "demo", "sfc", "--json", "--window", "1.5"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    walked = [s for s in report["steps"] if s["name"][0].isdigit()]
    assert len(walked) == 5 and all(s["ok"] for s in walked)
    assert walked[1]["data"]["service_vms"]["vm3"]["steered_packets"] == 0
    assert walked[3]["data"]["service_vms"]["vm1"]["steered_packets"] == 0
