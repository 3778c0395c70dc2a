"""The flow monitor on real traffic: a curl through a chain, counted mostly on the fast path.

A chain steers everything between h1 and h2 through the flow monitor fm1; the
node appends what it exports to a JSON-lines file. The record of the finished
curl connection must carry what curl itself says it sent and received, even
though most of its packets never reached the monitor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pktchain.lab import Lab, wait_until
from support.fn_lab import H1, H2, NodeLab, curl, function_status, start

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


# IPv4 without options; TCP from its bare 20 bytes to 60 with options. Every
# frame's octets are its payload plus one IP and one TCP header (a GSO frame
# counts once, with its whole payload).
MIN_HEADERS, MAX_HEADERS = 20 + 20, 20 + 60


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def within_headers(octets: int, payload: int, packets: int, resent: int = 0) -> bool:
    """`octets` is `payload` and one IP and one TCP header per packet, plus up to
    `resent` octets of segments the sender sent again."""
    return payload + MIN_HEADERS * packets <= octets <= payload + resent + MAX_HEADERS * packets


def retransmitted(lab: Lab, host: str) -> int:
    """Segments the host's TCP has sent again so far (RFC 4022 tcpRetransSegs, as
    /proc/net/snmp of the host's namespace counts them)."""
    text = lab.host(host).run(["cat", "/proc/net/snmp"], check=True).stdout
    header, values = (line.split() for line in text.splitlines() if line.startswith("Tcp:"))
    return int(values[header.index("RetransSegs")])


def largest_segment(lab: Lab, host: str) -> int:
    """The most a TCP segment from `host` carries: its eth0's MTU less the headers."""
    shown = lab.host(host).run(["ip", "-j", "link", "show", "eth0"], check=True)
    (link,) = json.loads(shown.stdout)
    return int(link["mtu"]) - MIN_HEADERS


def test_a_finished_curl_is_exported_with_the_bytes_curl_transferred(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    export = tmp_path / "fm1.jsonl"
    fm1 = {
        "name": "fm1",
        "kind": "flow-monitor",
        "network": "default",
        "export": str(export),
        "config": {"end_wait": 0.5, "idle_timeout": 60, "active_timeout": 600},
    }
    lab, node = start(node_lab, tmp_path, [fm1], page_size=4_000_000)
    before = {host: retransmitted(lab, host) for host in ("h1", "h2")}
    sizes = curl(lab)
    assert sizes["body"] == 4_000_000
    # A segment the sender sent again crossed the path twice, and the monitor counts
    # what crossed: on a loaded machine TCP may resend (a loss, or a reordering as
    # the flow moves onto the fast path).
    resent = {
        host: (retransmitted(lab, host) - count) * largest_segment(lab, host)
        for host, count in before.items()
    }
    wait_until(lambda: bool(records(export)), timeout=15, what="the record of the connection")
    (record,) = [r for r in records(export) if r.get("destinationTransportPort") == 80]
    assert record["sourceIPv4Address"] == H1
    assert record["destinationIPv4Address"] == H2
    assert record["protocolIdentifier"] == 6
    assert record["flowEndReason"] == 3  # end of flow: FIN both ways
    assert record["tcpControlBits"] & 0x13 == 0x13  # SYN, ACK and FIN from the client
    assert record["reverseTcpControlBits"] & 0x13 == 0x13
    assert record["flowEndMilliseconds"] >= record["flowStartMilliseconds"]
    assert within_headers(
        record["octetDeltaCount"], sizes["request"], record["packetDeltaCount"], resent["h1"]
    ), (record, resent)
    assert within_headers(
        record["reverseOctetDeltaCount"],
        sizes["header"] + sizes["body"],
        record["reversePacketDeltaCount"],
        resent["h2"],
    ), (record, sizes, resent)
    status = function_status(node, "fm1")
    seen = status["counters"]["packets"]  # what the monitor handled itself
    total = record["packetTotalCount"] + record["reversePacketTotalCount"]
    assert seen < total / 4, (seen, total)
    assert node.status()["fast_path"]["hits"] > total / 2


def test_an_idle_ping_flow_is_exported_by_the_idle_timeout(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    export = tmp_path / "fm1.jsonl"
    fm1 = {
        "name": "fm1",
        "kind": "flow-monitor",
        "network": "default",
        "export": str(export),
        "config": {"idle_timeout": 1.0},
    }
    lab, _node = start(node_lab, tmp_path, [fm1])
    result = lab.host("h1").run(["ping", "-c", "5", "-i", "0.2", "-W", "2", H2])
    assert result.ok, result.stdout
    wait_until(lambda: bool(records(export)), timeout=15, what="the record of the pings")
    (record,) = records(export)
    assert record["protocolIdentifier"] == 1
    assert record["flowEndReason"] == 1  # idle timeout
    assert (record["packetDeltaCount"], record["reversePacketDeltaCount"]) == (5, 5)
    assert record["octetDeltaCount"] == 5 * 84  # 20 IP + 8 ICMP + 56 data
