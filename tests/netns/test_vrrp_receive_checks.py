"""RFC 5798 §7.1's receive checks on a running node: each bad advertisement a host sends
is ignored and counted under its reason, and the router stays master.

The router is master of VRID 51 on its inside network, alone there. A host
on that network sends, with scapy, advertisements that each break one check;
the node's router status must count each under its reason and nothing else
changes: the router is still master, with the same master and priority.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from pktchain.lab import Lab, node_host_spec, wait_until
from pktchain.node.process import NodeProcess

NodeLab = Callable[..., tuple[Lab, NodeProcess]]

TOPOLOGY = {
    "lab": "vrrpcheck",
    "hosts": {
        "a": node_host_spec("inside", "02:00:00:00:01:0a", "10.0.0.10/24", "10.0.0.1"),
        "outside": node_host_spec("outside", "02:00:00:00:02:0a", "198.51.100.10/24"),
    },
}

ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "inside": {"network": "inside", "mac": "02:00:00:00:01:01", "address": "10.0.0.2/24"},
        "outside": {
            "network": "outside",
            "mac": "02:00:00:00:02:01",
            "address": "198.51.100.2/24",
            "external": True,
            "gateway": "198.51.100.10",
        },
    },
    "vrrp": [
        {
            "vrid": 51,
            "interface": "inside",
            "virtual_addresses": ["10.0.0.1"],
            "priority": 150,
            "advert_interval": 0.1,
        }
    ],
}

# Each case: (name, the scapy expression of the IP packet, the counter it must raise).
# The good base: from 10.0.0.10, VRID 51, priority 100 (below the master's 150),
# the same address, TTL 255.
BASE = (
    'IP(src="10.0.0.10", dst="224.0.0.18", ttl={ttl}, proto=112{ipsum})'
    " / VRRPv3(version={version}, type={type}, vrid={vrid}, priority=100, ipcount={count},"
    " adv=10, addrlist={addresses}{checksum})"
)
GOOD = {
    "ttl": 255,
    "version": 3,
    "type": 1,
    "vrid": 51,
    "count": 1,
    "addresses": '["10.0.0.1"]',
    "checksum": "",
    "ipsum": "",
}
CASES = [
    ("ttl", {"ttl": 64}, "drop-ttl"),
    ("version", {"version": 2}, "drop-version"),
    ("type", {"type": 2}, "drop-type"),
    ("checksum", {"checksum": ", chksum=0x1234"}, "drop-checksum"),
    ("ip checksum", {"ipsum": ", chksum=0x1234"}, "drop-ip-checksum"),
    ("count", {"count": 3}, "drop-truncated"),
    ("addresses", {"addresses": '["10.0.0.99"]'}, "address-mismatch"),
    ("unknown vrid", {"vrid": 77}, "drop-vrid-not-configured"),
]
SEND = """
import sys
from scapy.all import Ether, IP, sendp
from scapy.layers.vrrp import VRRPv3
for expression in sys.argv[1:]:
    packet = eval(expression)
    sendp(Ether(src="02:00:00:00:01:0a", dst="01:00:5e:00:00:12") / packet,
          iface="eth0", verbose=False)
"""


def instance(process: NodeProcess) -> dict[str, Any]:
    (row,) = process.router()["vrrp"]
    return dict(row)


def test_every_receive_check_ignores_and_counts_a_bad_advertisement(
    node_lab: NodeLab, tmp_path: Path
) -> None:
    router = tmp_path / "router.yaml"
    router.write_text(yaml.safe_dump(ROUTER))
    lab, process = node_lab(TOPOLOGY, args=("--router", str(router)))
    wait_until(lambda: instance(process)["state"] == "master", timeout=10, what="master")
    before = instance(process)
    expressions = [BASE.format(**(GOOD | change)) for _name, change, _counter in CASES]
    sent = lab.host("a").run([sys.executable, "-c", SEND, *expressions], timeout=30)
    assert sent.ok, sent.stderr

    def counted() -> dict[str, int]:
        row = instance(process)
        speaker = {
            k.removeprefix("vrrp-"): v
            for k, v in process.router()["counters"].items()
            if k.startswith("vrrp-drop-")
        }
        return dict(row["counters"]) | speaker

    wait_until(
        lambda: all(counted().get(counter, 0) >= 1 for _n, _c, counter in CASES),
        timeout=10,
        what="every bad advertisement counted",
    )
    seen = counted()
    for name, _change, counter in CASES:
        assert seen.get(counter) == 1, (name, counter, seen)
    after = instance(process)
    assert after["state"] == "master" and after["transitions"] == before["transitions"]
    assert after["master_address"] == before["master_address"] == "10.0.0.2"
    assert after["priority"] == 150
