"""The demo's lab, chain and functions: what runs where, declared once.

Three nodes n1, n2, n3 on the lab's underlay, with the lab's etcd; the hosts
of network `default` (10.0.0.0/24):

| host | node | what it is |
|---|---|---|
| client | n1 | 10.0.0.1, runs curl, iperf3 and the probe connections |
| sf2, sf3 | n2, n3 | the appliance: a Linux host routing between `in` and `out` |
| flowcount | n3 | nsh-flowcount (C) on `in` → `out`, NSH only |
| server | n3 | 10.0.0.2, python3 -m http.server on :80, iperf3 -s on :5201 |

and the native firewall instances fw1 (on n1) and fw2 (on n2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODES = ("n1", "n2", "n3")
DOOMED = "n2"
"""The node the demo kills."""
CLIENT = "10.0.0.1"
SERVER = "10.0.0.2"
HTTP_PORT = 80
IPERF_PORT = 5201
API_PORT = 9696
PAGE = "Hello from the server on n3, through a firewall, an appliance and nsh-flowcount.\n"
CHAIN = "PC_cluster"
HTTP_FETCHES = 6
FAILOVER_LIMIT = 1.0
"""Seconds within which the flows of the killed node must have moved."""
CAPTURE_BITRATE = "50M"
"""iperf3's rate when the underlay is captured, so that the captures stay small."""
NSH_MTU = 65521
"""The largest MTU of a TAP device: a 64 KB frame in NSH, with the TLV the
function adds, must leave the function's interface whole."""


@dataclass(frozen=True)
class PairSpec:
    """A port pair of the chain: its node ports, the node they are on, its kind."""

    name: str
    ingress: str
    egress: str
    node: str
    nsh: bool = False


PAIRS = (
    PairSpec("FW1", "fw1:ingress", "fw1:egress", "n1"),
    PairSpec("FW2", "fw2:ingress", "fw2:egress", "n2"),
    PairSpec("SF2", "sf2:in", "sf2:out", "n2"),
    PairSpec("SF3", "sf3:in", "sf3:out", "n3"),
    PairSpec("FLOWCOUNT", "flowcount:in", "flowcount:out", "n3", nsh=True),
)
PAIR_NODE = {pair.name: pair.node for pair in PAIRS}
GROUPS = (
    ("PG_firewall", ("FW1", "FW2")),
    ("PG_appliance", ("SF2", "SF3")),
    ("PG_flowcount", ("FLOWCOUNT",)),
)
CLASSIFIERS = (("FC_http", HTTP_PORT), ("FC_iperf3", IPERF_PORT))
FIREWALLS = {"n1": "fw1", "n2": "fw2"}
"""The firewall instance each node runs (n3 runs none)."""
MOVES = {"FW2": "FW1", "SF2": "SF3"}
"""Where each instance on the killed node hands its flows."""

FIREWALL: dict[str, Any] = {
    # Stateless rules (no `state`): every packet is judged alone, so a
    # connection that moves here in mid-stream from the other instance (whose
    # node died) is let through; tcp_pickup tracks it from its next segment.
    "default": "drop",
    "tcp_pickup": True,
    "rules": [
        {
            "name": "to-server",
            "action": "accept",
            "protocol": "tcp",
            "source": CLIENT,
            "destination": SERVER,
            "dport": [HTTP_PORT, IPERF_PORT],
        },
        {
            "name": "from-server",
            "action": "accept",
            "protocol": "tcp",
            "source": SERVER,
            "destination": CLIENT,
            "sport": [HTTP_PORT, IPERF_PORT],
        },
    ],
}

APPLIANCE_SYSCTLS = {
    # An SFC-unaware appliance routes between its ports, as a service VM
    # with static routes does (docs/sfc.md); it does not second-guess the
    # path, redirect the source, or answer ARP on the wrong port.
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.arp_ignore": 1,
}
CLIENT_SYSCTLS = {
    # The probe connections send a request every PROBE_INTERVAL s without
    # waiting for the answers.  With a minimum retransmission timeout of 1 s
    # (Linux 6.11 and later), TCP keeps sending new requests while the nodes
    # find out that n2 is gone, rather than backing off exponentially from
    # 200 ms: a flow's next packet after the failover then comes within one
    # interval, and what is measured is the nodes' failover, not TCP's
    # backoff.  (A connection with nothing lost never waits for it.)
    "net.ipv4.tcp_rto_min_us": 1_000_000,
}
NO_IPV6 = {
    # nsh-flowcount's interfaces carry NSH only: their kernel sends nothing.
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
}


def cluster_topology(lab_name: str) -> dict[str, Any]:
    """The demo's lab: three nodes; the client on n1, the appliances on n2 and
    n3, nsh-flowcount's host and the server on n3, all in network `default`."""

    def port(mac: str, address: str | None = None) -> dict[str, Any]:
        interface: dict[str, Any] = {"attach": "node", "mac": mac}
        if address is not None:
            interface["addresses"] = [f"{address}/24"]
        return interface

    def appliance(node: str, n: int) -> dict[str, Any]:
        return {
            "node": node,
            "sysctls": APPLIANCE_SYSCTLS,
            "interfaces": {
                "in": port(f"02:00:00:00:0{n}:01"),
                "out": port(f"02:00:00:00:0{n}:02", f"10.0.0.2{n}"),
            },
            # Replies to the client leave by `in`, where the chain brings them.
            "routes": [{"to": f"{CLIENT}/32", "dev": "in"}],
        }

    nsh_port = {"mtu": NSH_MTU}
    return {
        "lab": lab_name,
        "nodes": {node: {} for node in NODES},
        "hosts": {
            "client": {
                "node": "n1",
                "sysctls": CLIENT_SYSCTLS,
                "interfaces": {"eth0": port("02:00:00:00:00:01", CLIENT)},
            },
            "sf2": appliance("n2", 2),
            "sf3": appliance("n3", 3),
            "flowcount": {
                "node": "n3",
                "sysctls": NO_IPV6,
                "interfaces": {
                    "in": {**port("02:00:00:00:04:01"), **nsh_port},
                    "out": {**port("02:00:00:00:04:02"), **nsh_port},
                },
            },
            "server": {"node": "n3", "interfaces": {"eth0": port("02:00:00:00:00:02", SERVER)}},
        },
    }


def firewall_functions(name: str) -> dict[str, Any]:
    """The functions file of a node that runs firewall instance `name`."""
    return {
        "functions": [{"name": name, "kind": "firewall", "network": "default", "config": FIREWALL}]
    }
