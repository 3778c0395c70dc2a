"""Hosts whose NICs are veth pairs made by the node (`nic: veth`, `--veth`).

The host's end is its eth0; the node's end stays in the node's namespace
(here, the test's own), read and written through AF_PACKET with recvmmsg.
Real programs (ping, iperf3) drive the traffic; the interfaces are read back
over netlink, from the node's namespace and the hosts'.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import raw

from pktchain.lab import Lab, wait_until
from pktchain.linux.packet import (
    ETH_P_ALL,
    PACKET_AUXDATA,
    SOL_PACKET,
    TP_STATUS_VLAN_VALID,
)
from pktchain.linux.veth import NODE_END_MTU, node_end_name
from pktchain.node.process import NodeProcess, NodeProcessError
from support.topologies import node_hosts

NodeLab = Callable[..., tuple[Lab, NodeProcess]]
IFF_NOARP = 0x80
IFF_UP = 0x1
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


def veth_hosts(*names: str) -> dict[str, Any]:
    topology = node_hosts(*names)
    topology["host_nic"] = "veth"
    return topology


def link(netns: str | None, ifname: str) -> Any:
    """The link `ifname` in `netns` (None: here) as pyroute2 reports it, or None."""
    with IPRoute(netns=netns) if netns else IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        return ipr.get_links(found[0])[0] if found else None


def addresses(ifname: str) -> list[str]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)]


def ping(lab: Lab, host: str, address: str) -> bool:
    return lab.host(host).run(["ping", "-c", "2", "-i", "0.2", "-W", "2", address]).ok


def test_ping_and_tcp_cross_veth_ports_with_gso_frames_whole(node_lab: NodeLab) -> None:
    lab, node = node_lab(veth_hosts("h1", "h2"))
    assert [p["kind"] for p in node.status()["ports"]] == ["veth", "veth"]
    assert ping(lab, "h1", "10.0.0.2")
    lab.host("h2").popen(["iperf3", "-s", "-1", "-p", "5201"])
    lab.host("h2").wait_listening(5201, timeout=10)
    result = lab.host("h1").run(
        ["iperf3", "-c", "10.0.0.2", "-p", "5201", "-t", "2", "-J"], timeout=30
    )
    assert result.ok, result.stderr
    received = json.loads(result.stdout)["end"]["sum_received"]
    assert received["bits_per_second"] > 1e9, received
    h1, h2 = node.port("h1:eth0"), node.port("h2:eth0")
    # 64 KB TCP segments crossed as single frames, both ways through AF_PACKET.
    assert h1["rx_bytes"] / h1["rx_packets"] > 4000
    assert h2["tx_packets"] >= h1["rx_packets"] - 5
    assert h1["drops"] == {} and h2["tx_errors"] == {}
    assert h1["rx_kernel_drops"] == 0
    # Every frame the node read was forwarded or dropped under a reason.
    for port in (h1, h2):
        assert port["rx_packets"] == port["forwarded"] + sum(port["drops"].values())


def test_the_node_end_is_inert_and_the_host_end_a_plain_nic(node_lab: NodeLab) -> None:
    lab, node = node_lab(veth_hosts("h1", "h2"))
    port = node.port("h1:eth0")
    netns = lab.netns_of("h1")
    name = node_end_name(netns, "eth0")
    assert (port["node_ifname"], port["netns"], port["ifname"]) == (name, netns, "eth0")
    assert len(name) <= 15
    node_end = link(None, name)
    assert node_end["index"] == port["node_ifindex"]
    assert node_end["flags"] & (IFF_UP | IFF_NOARP) == IFF_UP | IFF_NOARP
    assert node_end.get_attr("IFLA_MTU") == NODE_END_MTU
    assert addresses(name) == []  # no IPv4, and no IPv6 link-local address either
    assert Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").read_text().strip() == "1"
    host_end = link(netns, "eth0")
    assert host_end.get_attr("IFLA_ADDRESS") == port["mac"] == "02:00:00:00:00:01"
    assert host_end.get_attr("IFLA_MTU") == 1500
    features = lab.host("h1").run(["ethtool", "-k", "eth0"], check=True).stdout
    for on in ("tcp-segmentation-offload: on", "tx-checksumming: on"):
        assert on in features
    for off in ("tx-udp-segmentation: off", "tx-vlan-offload: off"):
        assert off in features
    # The node end sent nothing of its own (no ARP, no IPv6 solicitations):
    # what it sent is what the node wrote to it.
    before = node.port("h1:eth0")["tx_packets"]
    sent = link(None, name).get_attr("IFLA_STATS64")["tx_packets"]
    assert before <= sent <= node.port("h1:eth0")["tx_packets"]


def test_an_8021q_tag_crosses_a_veth_port_as_it_does_a_tap(node_lab: NodeLab) -> None:
    """The kernel takes the tag aside before the node's packet socket sees the
    frame; the node puts it back, so the other host receives it tagged."""
    topology = veth_hosts("h1", "h2")
    topology["hosts"]["h1"]["interfaces"]["eth0"]["port_security"] = False
    lab, node = node_lab(topology)
    assert ping(lab, "h1", "10.0.0.2")  # both addresses learned
    frame = raw(
        Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
        / Dot1Q(vlan=10, prio=1)
        / IP(src="10.0.10.1", dst="10.0.10.2")
        / UDP(sport=4000, dport=4001)
        / b"tagged"
    )
    rx = lab.host("h2").socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    tx = lab.host("h1").socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with rx, tx:
        rx.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        rx.bind(("eth0", 0))
        rx.settimeout(0.5)
        tx.bind(("eth0", 0))
        deadline = time.monotonic() + 10
        tci = None
        while tci is None and time.monotonic() < deadline:
            tx.send(frame)
            tci = _tagged_arrival(rx, time.monotonic() + 1)
    # The receiving host's kernel takes the tag aside too: its auxdata tells it.
    assert tci == (1 << 13) | 10
    assert node.port("h1:eth0")["drops"] == {}


def _tagged_arrival(sock: socket.socket, until: float) -> int | None:
    """The TCI of the first frame with the payload b"tagged" read before `until`."""
    while time.monotonic() < until:
        try:
            data, ancillary, _flags, _address = sock.recvmsg(2048, 64)
        except TimeoutError:
            return None
        if not data.endswith(b"tagged"):
            continue
        for level, kind, payload in ancillary:
            if (level, kind) == (SOL_PACKET, PACKET_AUXDATA):
                status, _len, _snap, _mac, _net, tci, _tpid = AUXDATA.unpack_from(payload)
                if status & TP_STATUS_VLAN_VALID:
                    return int(tci)
        return 0
    return None


def test_sigterm_removes_both_ends(node_lab: NodeLab) -> None:
    lab, node = node_lab(veth_hosts("h1", "h2"))
    ends = [node_end_name(lab.netns_of(h), "eth0") for h in ("h1", "h2")]
    assert all(link(None, end) is not None for end in ends)
    assert node.stop() == 0
    assert all(link(None, end) is None for end in ends)
    assert link(lab.netns_of("h1"), "eth0") is None


def test_a_killed_nodes_pairs_are_replaced_by_the_next_and_go_with_the_lab(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = node_lab(veth_hosts("h1", "h2"))
    end = node_end_name(lab.netns_of("h1"), "eth0")
    first = link(None, end)["index"]
    assert node.kill() == -9
    assert link(None, end) is not None  # a veth has no descriptor to close
    successor = NodeProcess(
        node.name, topology=node.topology, lab_name=lab.name, log_path=tmp_path / "next.log"
    )
    successor.start()
    try:
        assert ping(lab, "h1", "10.0.0.2")
        assert successor.port("h1:eth0")["node_ifindex"] != first
    finally:
        assert successor.kill() == -9
    assert link(None, end) is not None
    lab.down()
    # Deleting the hosts' namespaces deletes the pairs (the kernel does it a
    # moment later, in its namespace clean-up).
    ends = [end, node_end_name(lab.netns_of("h2"), "eth0")]
    wait_until(
        lambda: all(link(None, one) is None for one in ends), timeout=10, what=f"{ends} removed"
    )


def test_veth_ports_given_on_the_command_line_are_secured_hosts(
    lab_factory: Callable[..., Lab], unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    lab = lab_factory({"lab": "veths", "hosts": {"h1": {}, "h2": {}}})
    h1, h2 = lab.host("h1"), lab.host("h2")
    veths = ("--veth", f"{h1.netns}:eth0@10.0.0.1/24", "--veth", f"{h2.netns}:eth0@10.0.0.2/24")
    with NodeProcess(unique_name("node"), args=veths, log_path=tmp_path / "node.log") as node:
        wait_until(lambda: ping(lab, "h1", "10.0.0.2"), timeout=15, what="h1 pings h2")
        port = node.port(f"{h1.netns}:eth0")
        assert (port["kind"], port["secured"], port["policed"]) == ("veth", True, True)
        ends = [node_end_name(h.netns, "eth0") for h in (h1, h2)]
        # A second node given the same port is refused; it leaves the pair alone.
        second = NodeProcess(
            unique_name("node"),
            api=None,
            args=veths[:2],
            log_path=tmp_path / "second.log",
        )
        with pytest.raises(NodeProcessError, match="another node serves that port"):
            second.start()
        assert ping(lab, "h1", "10.0.0.2")
        assert node.port(f"{h1.netns}:eth0")["node_ifindex"] == port["node_ifindex"]
    assert all(link(None, end) is None for end in ends)
