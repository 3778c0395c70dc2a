"""The firewall function on real traffic: what it lets through, refuses, and cuts when told.

A symmetric chain steers every IP packet between h1 (10.0.0.1) and h2
(10.0.0.2) through the firewall fw1 (see fn_lab.py): h1's packets come in on
``ingress``, h2's on ``egress``. Real clients judge the result: curl's exit
status and timing, ping's output, a TCP client's ECONNRESET; tcpdump
(decoded by scapy) shows what the firewall sent.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP

from pktchain.lab import wait_until
from pktchain.node.process import NodeProcess
from support.fn_lab import H1, H2, NodeLab, capture, curl, function_status, ping, rest, start

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath

STATEFUL = [
    {"action": "accept", "state": ["established", "related"]},
    {"action": "drop", "state": ["invalid"]},
    {"action": "accept", "direction": "ingress", "state": ["new"]},
]
"""h1 may open anything; from h2's side only answers come back."""

CONNECT = """
import socket
try:
    socket.create_connection(("10.0.0.2", 80), timeout=5)
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""

ECHO_SERVER = """
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(line)
socketserver.TCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("10.0.0.2", 7000), Echo).serve_forever()
"""

ECHO_CLIENT = """
import socket, sys, time
s = socket.create_connection(("10.0.0.2", 7000), timeout=5)
deadline = time.monotonic() + 30
n = 0
while time.monotonic() < deadline:
    try:
        s.sendall(b"hello\\n")
        data = s.recv(100)
    except ConnectionResetError:
        print("reset", flush=True)
        sys.exit(0)
    except OSError as exc:
        print("error", exc, flush=True)
        sys.exit(1)
    if not data:
        print("closed", flush=True)
        sys.exit(1)
    n += 1
    print("ok", n, flush=True)
    time.sleep(0.05)
print("timeout", flush=True)
sys.exit(1)
"""


def firewall(**config: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": "fw1",
            "kind": "firewall",
            "network": "default",
            "config": config,
        }
    ]


def test_an_allowed_flow_works_and_rides_the_fast_path(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = start(node_lab, tmp_path, firewall(rules=STATEFUL), page_size=2_000_000)
    ping(lab, 3)
    sizes = curl(lab)
    assert sizes["body"] == 2_000_000
    status = function_status(node, "fw1")
    counters = status["counters"]
    assert counters["leases-granted"] >= 2  # the ping and the web connection
    judged = counters["state-new"] + counters["state-established"]
    carried = status["rules"][0]["packets"] - counters["state-established"]
    assert carried > judged  # most of the transfer never reached the firewall
    assert counters["drop-policy"] == 0


def test_a_refused_web_connection_fails_at_once(node_lab: NodeLab, tmp_path: Path) -> None:
    rules = [{"action": "reject", "protocol": "tcp", "dport": 80}, *STATEFUL]
    lab, node = start(node_lab, tmp_path, firewall(rules=rules))
    began = time.monotonic()
    result = lab.host("h1").run(["curl", "-sS", "--max-time", "5", f"http://{H2}/"], timeout=20)
    elapsed = time.monotonic() - began
    assert result.returncode == 7, result.stderr  # curl: failed to connect
    assert elapsed < 2.0  # at once: no SYN retransmitted into silence
    refused = lab.host("h1").run(["python3", "-c", CONNECT], timeout=20)
    assert refused.stdout.strip() == "ConnectionRefusedError"  # the RST, as the kernel took it
    assert function_status(node, "fw1")["counters"]["reject-tcp-reset"] >= 1


def test_a_rejected_ping_is_told_admin_prohibited(node_lab: NodeLab, tmp_path: Path) -> None:
    rules = [{"action": "reject", "protocol": "icmp", "icmp_type": 8}, *STATEFUL]
    lab, node = start(node_lab, tmp_path, firewall(rules=rules))
    with capture(lab.host("h1"), "eth0", tmp_path / "h1.pcap", "icmp") as seen:
        result = lab.host("h1").run(["ping", "-c", "1", "-W", "2", H2])
    assert result.returncode != 0
    assert "Packet filtered" in result.stdout  # iputils' words for 3/13
    errors = [p for p in seen if ICMP in p and p[ICMP].type == 3]
    assert [(p[IP].src, p[IP].dst, p[ICMP].code) for p in errors] == [(H2, H1, 13)]
    assert function_status(node, "fw1")["counters"]["reject-icmp"] == 1


def reconfigure(node: NodeProcess, name: str, config: dict[str, Any]) -> dict[str, Any]:
    code, body = rest(
        node, "PUT", f"/v2.0/pktchain/functions/{name}", {"function": {"config": config}}
    )
    assert code == 200, body
    reply: dict[str, Any] = body["function"]
    return reply


def test_new_rules_cut_an_established_connection(node_lab: NodeLab, tmp_path: Path) -> None:
    lab, node = start(node_lab, tmp_path, firewall(rules=STATEFUL))
    lab.host("h2").popen(["python3", "-c", ECHO_SERVER])
    lab.host("h2").wait_listening(7000, timeout=10)
    log = tmp_path / "client.log"
    with log.open("wb") as sink:
        client = lab.host("h1").popen(["python3", "-c", ECHO_CLIENT], stdout=sink)

    def exchanges() -> int:
        return log.read_text().count("ok ")

    wait_until(lambda: exchanges() >= 20, timeout=15, what="the echo exchanges")
    before = function_status(node, "fw1")
    (connection,) = [c for c in before["connections"] if c["dport"] == 7000]
    assert connection["state"] == "established"
    assert connection["leased"]  # the exchange rides the fast path

    rules = [{"action": "reject", "protocol": "tcp", "dport": 7000}, *STATEFUL]
    reconfigure(node, "fw1", {"rules": rules})
    assert client.wait(timeout=10) == 0
    assert log.read_text().splitlines()[-1] == "reset"  # the client got the RST
    counters = function_status(node, "fw1")["counters"]
    assert counters["leases-revoked"] >= 1
    assert counters["reject-tcp-reset"] >= 1
    ping(lab, 2)  # everything else still flows
