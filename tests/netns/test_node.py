"""The node as a learning switch between real hosts, driven by real programs."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from pyroute2 import IPRoute
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw, raw
from scapy.utils import rdpcap

from pktchain.lab import Lab, wait_until
from pktchain.node.process import NodeProcess, NodeProcessError
from support.topologies import node_hosts

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


NodeLab = Callable[..., tuple[Lab, NodeProcess]]


def has_link(netns: str, ifname: str) -> bool:
    with IPRoute(netns=netns) as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


def iperf(lab: Lab, client: str, server: str, address: str, seconds: float = 2.0) -> dict:  # type: ignore[type-arg]
    lab.host(server).popen(["iperf3", "-s", "-1", "-p", "5201"])
    lab.host(server).wait_listening(5201, timeout=10)
    result = lab.host(client).run(
        ["iperf3", "-c", address, "-p", "5201", "-t", str(seconds), "-J"], timeout=seconds + 20
    )
    assert result.ok, result.stderr
    report = json.loads(result.stdout)
    assert "error" not in report, report["error"]
    assert "sum_received" in report["end"], f"iperf3 ended without a result: {report['end']}"
    return report["end"]["sum_received"]  # type: ignore[no-any-return]


def test_ping_and_tcp_cross_the_switch_with_gso_frames_intact(node_lab: NodeLab) -> None:
    lab, node = node_lab(node_hosts("h1", "h2"))
    assert lab.host("h1").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    received = iperf(lab, "h1", "h2", "10.0.0.2")
    assert received["bytes"] > 10_000_000
    h1 = node.port("h1:eth0")
    h2 = node.port("h2:eth0")
    # 64 KB TCP segments crossed as single frames: the mean is far above 1514.
    assert h1["rx_bytes"] / h1["rx_packets"] > 4000
    # Everything h1 sent reached h2 (a learned unicast destination, no drops).
    assert h2["tx_packets"] >= h1["rx_packets"] - 5
    assert h1["drops"] == {} and h2["tx_errors"] == {}


def test_learned_unicast_is_not_flooded_to_bystanders(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = node_lab(node_hosts("h1", "h2", "h3"))
    h1, h3 = lab.host("h1"), lab.host("h3")
    assert h1.run(["ping", "-c", "1", "-W", "2", "10.0.0.2"]).ok  # ARP, learning
    capture = tmp_path / "h3.pcap"
    tcpdump = h3.popen(
        ["tcpdump", "-i", "eth0", "-n", "--immediate-mode", "-U", "-w", str(capture), "icmp"]
    )
    wait_until(capture.exists, timeout=10, what="tcpdump in h3 to start")
    before = node.port("h3:eth0")["tx_packets"]
    assert h1.run(["ping", "-c", "50", "-i", "0.01", "-W", "2", "10.0.0.2"]).ok
    after = node.port("h3:eth0")["tx_packets"]
    tcpdump.terminate()
    tcpdump.wait(timeout=10)
    assert after - before <= 5  # IPv6 multicast chatter at most, not 100 echoes
    assert [p for p in rdpcap(str(capture)) if ICMP in p] == []
    assert node.port("h2:eth0")["tx_packets"] >= 51
    table = {entry["mac"]: entry["port"] for entry in node.status()["mac_table"]}
    assert table["02:00:00:00:00:01"] == "h1:eth0"
    assert table["02:00:00:00:00:02"] == "h2:eth0"


def test_hosts_on_different_networks_cannot_reach_each_other(node_lab: NodeLab) -> None:
    topology = node_hosts("h1", "h2", "h3")
    for host, network in (("h1", "blue"), ("h2", "blue"), ("h3", "red")):
        topology["hosts"][host]["interfaces"]["eth0"]["network"] = network
    lab, node = node_lab(topology)
    h1 = lab.host("h1")
    assert h1.run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    assert not h1.run(["ping", "-c", "2", "-i", "0.2", "-W", "1", "10.0.0.3"]).ok
    networks = {n["name"]: n["ports"] for n in node.status()["switch"]["networks"]}
    assert networks == {"blue": ["h1:eth0", "h2:eth0"], "red": ["h3:eth0"]}
    assert node.port("h3:eth0")["tx_packets"] == 0  # not even h1's ARP broadcasts


def garbage_frames(src_mac: str, dst_mac: str) -> dict[str, list[bytes]]:
    """Frames that a careless or hostile host might send, by the drop reason expected."""
    eth = Ether(src=src_mac, dst=dst_mac)
    udp = raw(eth / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(b"x" * 20))
    lying_total = bytearray(udp)
    lying_total[16:18] = (1500).to_bytes(2, "big")  # IPv4 total length beyond the frame
    short_total = bytearray(udp)
    short_total[16:18] = (10).to_bytes(2, "big")  # shorter than the IPv4 header
    bad_ihl = bytearray(udp)
    bad_ihl[14] = 0x43  # IHL 3 words
    tcp = bytearray(raw(eth / IP(src="10.0.0.1", dst="10.0.0.2") / TCP() / Raw(b"y" * 20)))
    tcp[14 + 20 + 12] = 0x20  # data offset 2 words
    udp_len = bytearray(udp)
    udp_len[14 + 20 + 4 : 14 + 20 + 6] = (400).to_bytes(2, "big")
    ipv6 = bytearray(raw(eth / IPv6(src="fd00::1", dst="fd00::2") / UDP() / Raw(b"z" * 8)))
    ipv6[18:20] = (900).to_bytes(2, "big")  # payload length beyond the frame
    arp = raw(eth / ARP())[: 14 + 12]  # an ARP header cut short
    ipv4_stub = raw(Ether(src=src_mac, dst=dst_mac, type=0x800)) + b"E"  # 1 byte of IPv4
    return {
        "truncated-ipv4": [bytes(lying_total), ipv4_stub],
        "ipv4-total-length": [bytes(short_total)],
        "bad-ihl": [bytes(bad_ihl)],
        "tcp-data-offset": [bytes(tcp)],
        "udp-length": [bytes(udp_len)],
        "truncated-ipv6": [bytes(ipv6)],
        "truncated-arp": [arp],
    }


IP_OR_TAG_TYPES = {0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x9100}


def noise(count: int, seed: int) -> list[bytes]:
    """Random frames whose EtherType is none the node checks, so only the source matters."""
    rng = random.Random(seed)
    frames = []
    while len(frames) < count:
        frame = rng.randbytes(rng.randint(14, 300))
        if int.from_bytes(frame[12:14], "big") not in IP_OR_TAG_TYPES:
            frames.append(frame)
    return frames


def test_garbage_frames_are_counted_drops_and_traffic_keeps_flowing(node_lab: NodeLab) -> None:
    topology = node_hosts("h1", "h2")
    # The switch's own checks of sources: on a secured port, port security
    # would refuse these random source MACs first (spoofed-mac, docs/node.md).
    topology["hosts"]["h1"]["interfaces"]["eth0"]["port_security"] = False
    lab, node = node_lab(topology)
    h1 = lab.host("h1")
    assert h1.run(["ping", "-c", "1", "-W", "2", "10.0.0.2"]).ok
    expected = garbage_frames("02:00:00:00:00:01", "02:00:00:00:00:02")
    random_frames = noise(2000, seed=2)
    bad_sources = sum(1 for f in random_frames if f[6] & 1 or f[6:12] == bytes(6))
    frames = [f for _ in range(5) for fs in expected.values() for f in fs] + random_frames
    received_before = node.port("h1:eth0")["rx_packets"]
    sock = h1.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        sock.bind(("eth0", 0))
        # In chunks the host's TAP queue can hold, each counted by the node
        # before the next, so that every frame reaches the node.
        for start in range(0, len(frames), 200):
            chunk = frames[start : start + 200]
            for frame in chunk:
                sock.send(frame)
            total = received_before + start + len(chunk)
            wait_until(
                lambda total=total: node.port("h1:eth0")["rx_packets"] >= total,
                timeout=10,
                what="the node to read the garbage",
            )
    finally:
        sock.close()
    assert node.status()["pid"] == node.pid  # still the same, running node
    drops = node.port("h1:eth0")["drops"]
    for reason, malformed in expected.items():
        assert drops.get(reason, 0) == 5 * len(malformed), (reason, drops)
    assert drops.get("bad-src-mac", 0) == bad_sources
    assert h1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    assert lab.host("h2").run(["ping", "-c", "1", "-W", "2", "10.0.0.1"]).ok


def test_sigterm_removes_the_tap_devices_and_the_control_socket(node_lab: NodeLab) -> None:
    lab, node = node_lab(node_hosts("h1", "h2"))
    assert has_link(lab.netns_of("h1"), "eth0")
    assert node.control.exists()
    assert node.stop() == 0
    assert not has_link(lab.netns_of("h1"), "eth0")
    assert not has_link(lab.netns_of("h2"), "eth0")
    assert not node.control.exists()


def test_a_killed_node_leaves_no_tap_and_a_new_one_takes_over(
    node_lab: NodeLab, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    lab, node = node_lab(node_hosts("h1", "h2"))
    kind = node.port("h1:eth0")["kind"]
    assert node.kill() == -9
    # The kernel removed the TAP with the node's descriptor; a veth pair stays
    # with its host until the next node replaces it (test_veth_ports.py).
    assert has_link(lab.netns_of("h1"), "eth0") is (kind == "veth")
    # NodeProcess removed the socket the killed node left; leave one as a node
    # killed some other way would, which its successor must take over.
    assert not node.control.exists()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(node.control))
    assert node.control.exists()
    successor = NodeProcess(
        node.name,
        topology=node.topology,
        lab_name=lab.name,
        log_path=tmp_path / "successor.log",
    )
    with successor:
        assert lab.host("h1").run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    assert not node.control.exists()


def test_af_packet_port_switches_between_a_veth_host_and_a_tap_host(node_lab: NodeLab) -> None:
    topology = node_hosts("h1")
    topology["hosts"]["edge"] = {"interfaces": {"up0": {"attach": "h2.eth0"}}}
    topology["hosts"]["h2"] = {"interfaces": {"eth0": {"addresses": ["10.0.0.2/24"]}}}
    lab, node = node_lab(topology, args=())
    node.stop()
    # Restart with the edge host's veth end attached through AF_PACKET.
    node.args = ("--af-packet", f"{lab.netns_of('edge')}:up0")
    node.start()
    names = [port["name"] for port in node.status()["ports"]]
    assert names == ["h1:eth0", f"{lab.netns_of('edge')}:up0"]
    assert lab.host("h1").run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"]).ok
    received = iperf(lab, "h2", "h1", "10.0.0.1")
    assert received["bytes"] > 10_000_000
    edge = node.port(f"{lab.netns_of('edge')}:up0")
    assert edge["rx_bytes"] / edge["rx_packets"] > 4000  # GSO frames through AF_PACKET too
    assert edge["drops"] == {}


def test_status_command_prints_ports_as_table_and_json(node_lab: NodeLab) -> None:
    lab, node = node_lab(node_hosts("h1", "h2"))
    assert lab.host("h1").run(["ping", "-c", "1", "-W", "2", "10.0.0.2"]).ok
    base = [sys.executable, "-m", "pktchain", "node", "status", "--control", str(node.control)]
    table = subprocess.run(base, capture_output=True, text=True, timeout=30, check=True)
    assert "h1:eth0" in table.stdout and "h2:eth0" in table.stdout
    as_json = subprocess.run(
        [*base, "--json"], capture_output=True, text=True, timeout=30, check=False
    )
    status = json.loads(as_json.stdout)
    assert {port["name"] for port in status["ports"]} == {"h1:eth0", "h2:eth0"}
    assert status["switch"]["mac_entries"] == 2


def test_status_of_a_node_that_is_not_running_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    argv = [sys.executable, "-m", "pktchain", "node", "status", "--control", str(missing)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"pktchain: no node is running at {missing}"


def test_node_refuses_a_bad_topology_naming_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lab: x\nhosts:\n  h1:\n    interfaces:\n      eth0: {attach: node, mtu: -3}\n")
    argv = [sys.executable, "-m", "pktchain", "node", "--topology", str(bad)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert f"{bad}:5" in result.stderr and "mtu" in result.stderr


def test_node_refuses_a_state_file_that_is_not_a_database(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"this is not an SQLite database" * 100)
    argv = [sys.executable, "-m", "pktchain", "node", "--tap", "pc-absent.h1:eth0"]
    argv += ["--state", str(state), "--control", str(tmp_path / "node.sock")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("pktchain: node pktchain could not start: State database")
    assert str(state) in line
    assert not (tmp_path / "node.sock").exists()


def test_node_refuses_a_tap_in_a_missing_namespace_and_creates_none(
    tmp_path: Path, unique_name: Callable[[str], str]
) -> None:
    missing = unique_name("absent")
    argv = [sys.executable, "-m", "pktchain", "node", "--tap", f"{missing}:eth0", "--no-state"]
    argv += ["--no-api", "--control", str(tmp_path / "node.sock")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("pktchain: node pktchain could not start: ")
    assert f"cannot open network namespace {missing}: No such file or directory" in line
    assert not Path("/run/netns", missing).exists()


def test_node_without_ports_is_refused() -> None:
    argv = [sys.executable, "-m", "pktchain", "node"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "no ports" in result.stderr


@pytest.mark.slow
def test_demo_switch_passes_and_reports_json() -> None:
    argv = [sys.executable, "-m", "pktchain", "demo", "switch", "--json", "--iperf-seconds", "1"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    assert report["ok"] is True
    assert [step["ok"] for step in report["steps"]] == [True] * len(report["steps"])
    assert len(report["steps"]) == 8


def test_the_api_on_a_non_loopback_address_needs_a_token(
    lab_factory: Callable[..., Lab], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(node_hosts("h1")))
    lab = lab_factory(topology)
    open_api = NodeProcess(
        unique_name("node"),
        topology=topology,
        lab_name=lab.name,
        api="0.0.0.0:0",
        log_path=tmp_path / "open.log",
    )
    with pytest.raises(NodeProcessError, match="without a token"):
        open_api.start()
    assert open_api.kill() == 2  # refused at start-up, one clear line
    guarded = NodeProcess(
        unique_name("node"),
        topology=topology,
        lab_name=lab.name,
        api="0.0.0.0:0",
        args=("--api-token", "s3cret-token"),
        log_path=tmp_path / "guarded.log",
    )
    with guarded:
        url = guarded.api_url().replace("0.0.0.0", "127.0.0.1")
        anonymous = urllib.request.Request(f"{url}/v2.0/sfc/port_pairs")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=10)
        assert refused.value.code == 401
        signed = urllib.request.Request(
            f"{url}/v2.0/sfc/port_pairs", headers={"X-Auth-Token": "s3cret-token"}
        )
        with urllib.request.urlopen(signed, timeout=10) as reply:
            assert json.loads(reply.read()) == {"port_pairs": []}
