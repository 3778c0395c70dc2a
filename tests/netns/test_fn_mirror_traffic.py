"""The mirror function on real traffic: ping and curl cross it, the copies reach a third host.

A chain steers everything h1 sends h2, and back, through the mirror m1; its
``mirror`` interface is in network ``tap`` with h3, which has no address and
only watches. The copies are addressed to h3's MAC
(``destination_mac``): the node's switch learns h1's and h2's MACs on the
mirror port, and would drop copies addressed back to them. What h3 sees is
decoded by scapy (tcpdump's capture) and listed by ``tcpdump -r`` (a pcap
written by ``pktchain pipe read``).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import ARP, Ether

from pktchain.lab import wait_until
from support.fn_lab import H1, H2, H3_MAC, NodeLab, capture, curl, function_status, ping, start

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


def mirror(**config: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "m1",
            "kind": "mirror",
            "network": {"ingress": "default", "egress": "default", "mirror": "tap"},
            "config": {"destination_mac": H3_MAC, **config},
        }
    ]


def test_copies_of_ping_and_curl_reach_a_host_on_the_mirror_port(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, node = start(node_lab, tmp_path, mirror(), watchers={"h3": "tap"})
    with capture(lab.host("h3"), "eth0", tmp_path / "h3.pcap") as seen:
        ping(lab, 3)
        sizes = curl(lab)
    requests = [p for p in seen if ICMP in p and p[ICMP].type == 8 and p[IP].src == H1]
    replies = [p for p in seen if ICMP in p and p[ICMP].type == 0 and p[IP].src == H2]
    assert (len(requests), len(replies)) == (3, 3)
    assert {p[Ether].dst for p in seen} == {H3_MAC}
    assert not any(ARP in p for p in seen)  # the chain steers IP: ARP does not cross m1
    web = [p for p in seen if TCP in p and 80 in (p[TCP].sport, p[TCP].dport)]
    assert web[0][TCP].flags == "S" and web[0][IP].src == H1
    client_bytes = b"".join(bytes(p[TCP].payload) for p in web if p[IP].src == H1)
    server_bytes = b"".join(bytes(p[TCP].payload) for p in web if p[IP].src == H2)
    assert client_bytes.startswith(b"GET /index.html HTTP/1.1\r\n")
    assert len(server_bytes) == sizes["header"] + sizes["body"]
    status = function_status(node, "m1")
    assert status["counters"]["copied"] >= len(seen)
    assert status["counters"]["mirror-input"] == 0  # h3 sent nothing


def test_a_filtered_mirror_copies_only_web_traffic(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = start(
        node_lab,
        tmp_path,
        mirror(filter={"protocol": "tcp", "dport": 80}),
        watchers={"h3": "tap"},
    )
    with capture(lab.host("h3"), "eth0", tmp_path / "h3.pcap") as seen:
        ping(lab, 2)
        curl(lab)
    assert seen
    assert all(TCP in p and 80 in (p[TCP].sport, p[TCP].dport) for p in seen)
    assert {p[IP].src for p in seen} == {H1, H2}  # requests and their answers
    counters = function_status(node, "m1")["counters"]
    assert counters["copied"] == len(seen)
    assert counters["forwarded"] > len(seen)  # the pings crossed too, uncopied


def tcpdump_lines(pcap: Path, *, whole: bool = False) -> list[str]:
    """tcpdump's listing of `pcap`; `whole`: the file must be complete (no cut record)."""
    listing = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-n"], check=False, capture_output=True, text=True, timeout=30
    )
    if whole:
        assert listing.returncode == 0, listing.stderr
    return listing.stdout.splitlines()


def test_the_mirror_port_written_as_pcap_reads_back_in_tcpdump(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    lab, _node = start(node_lab, tmp_path, mirror(), watchers={"h3": "tap"})
    pcap = tmp_path / "mirror.pcap"
    h3 = lab.host("h3")
    read = [sys.executable, "-m", "pktchain", "pipe", "read", "--format", "pcap", "-q", "eth0"]
    with open(pcap, "wb") as sink:
        pipe = h3.popen(read, stdout=sink, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: pcap.stat().st_size >= 24, timeout=10, what="the pcap header")
        ping(lab, 3)
        curl(lab)
        # Copies reach the file a little after the traffic: wait for the page's
        # first segment, which comes after everything checked below.
        wait_until(
            lambda: any("HTTP/1.0 200 OK" in line for line in tcpdump_lines(pcap)),
            timeout=10,
            what="the copy of the HTTP response",
        )
    finally:
        pipe.send_signal(signal.SIGTERM)
        assert pipe.wait(timeout=10) == 0
    lines = tcpdump_lines(pcap, whole=True)
    assert sum(f"{H1} > {H2}: ICMP echo request" in line for line in lines) == 3
    assert sum(f"{H2} > {H1}: ICMP echo reply" in line for line in lines) == 3
    syn = re.compile(rf"{re.escape(H1)}\.\d+ > {re.escape(H2)}\.80: Flags \[S\],")
    assert any(syn.search(line) for line in lines)
    assert any("HTTP: GET /index.html HTTP/1.1" in line for line in lines)
    assert any("HTTP/1.0 200 OK" in line for line in lines)
