"""From a REST API change to the first packet on the new path.

The seed-003 lab is built and a node started with its REST API; PC1 = [PG1]
steers UDP to port 9999 from source_vm through vm1.  source_vm sends a new
UDP flow every `--interval` seconds (a bounded stream), and a capture inside
vm3 waits.  Then `PUT /v2.0/sfc/port_chains/PC1` adds PG2 (vm3) to the chain.
New flows follow the new definition at once, so the first packet to reach vm3
marks the moment the dataplane changed.  Reported, per run: the PUT's round
trip, and the time from sending the PUT to that first packet (capture
timestamps and the PUT's timestamps share the system clock). The goal is
100 ms.

    .venv/bin/python bench/update_latency.py [--runs 5] [--interval 0.002]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from scapy.layers.inet import UDP
from scapy.utils import rdpcap

from pktchain.demo.sfc import DEST_IP, SOURCE_IP, sfc_topology
from pktchain.lab import Lab, LabHost, wait_until
from pktchain.node.process import NodeProcess


def call(api: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        api + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        text = reply.read()
    return json.loads(text) if text else {}


def create(api: str, collection: str, **fields: Any) -> str:
    singular = collection[:-1]
    reply = call(api, "POST", f"/v2.0/sfc/{collection}", {singular: fields})
    return str(reply[singular]["id"])


def port_id(api: str, name: str) -> str:
    return str(call(api, "GET", f"/v2.0/ports?name={name}")["ports"][0]["id"])


def sender(host: LabHost, interval: float, seconds: float, first_port: int) -> Any:
    """New UDP flows (one datagram each, source ports from `first_port`) for `seconds`."""
    script = (
        "import socket, time\n"
        f"end = time.monotonic() + {seconds}\n"
        f"sport = {first_port}\n"
        f"while time.monotonic() < end and sport < {first_port + 4000}:\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"    s.bind(('{SOURCE_IP}', sport))\n"
        f"    s.sendto(b'x', ('{DEST_IP}', 9999))\n"
        "    s.close()\n"
        "    sport += 1\n"
        f"    time.sleep({interval})\n"
    )
    return host.popen([sys.executable, "-c", script])


def one_run(lab: Lab, api: str, workdir: Path, index: int, interval: float) -> dict[str, float]:
    pg1 = call(api, "GET", "/v2.0/sfc/port_pair_groups?name=PG1")["port_pair_groups"][0]["id"]
    pg2 = call(api, "GET", "/v2.0/sfc/port_pair_groups?name=PG2")["port_pair_groups"][0]["id"]
    chain = call(api, "GET", "/v2.0/sfc/port_chains?name=PC1")["port_chains"][0]["id"]
    call(api, "PUT", f"/v2.0/sfc/port_chains/{chain}", {"port_chain": {"port_pair_groups": [pg1]}})
    pcap = workdir / f"vm3-{index}.pcap"
    capture = lab.host("vm3").popen(
        [
            "tcpdump",
            "-i",
            "in",
            "-n",
            "--immediate-mode",
            "-U",
            "-w",
            str(pcap),
            "udp dst port 9999",
        ]
    )
    wait_until(pcap.exists, timeout=10, what="tcpdump in vm3")
    # Fresh source ports each run: a flow of an earlier run is still pinned.
    stream = sender(lab.host("source_vm"), interval, seconds=2.0, first_port=20000 + 4000 * index)
    time.sleep(0.5)
    sent = time.time()
    call(
        api,
        "PUT",
        f"/v2.0/sfc/port_chains/{chain}",
        {"port_chain": {"port_pair_groups": [pg1, pg2]}},
    )
    answered = time.time()
    stream.wait(timeout=30)
    time.sleep(0.2)
    capture.terminate()
    capture.wait(timeout=10)
    first = min(float(p.time) for p in rdpcap(str(pcap)) if UDP in p)
    return {"put_ms": (answered - sent) * 1e3, "first_packet_ms": (first - sent) * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.002, help="seconds between new flows")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    name = f"bench-upd-{secrets.token_hex(3)}"
    runs = []
    with tempfile.TemporaryDirectory(prefix="pktchain-bench-") as tmp:
        workdir = Path(tmp)
        topology = workdir / "topology.yaml"
        topology.write_text(yaml.safe_dump(sfc_topology(name), sort_keys=False))
        with (
            Lab.up(topology) as lab,
            NodeProcess(
                name, topology=topology, log_path=workdir / "node.log", api="127.0.0.1:0"
            ) as node,
        ):
            api = node.api_url()
            pairs = [
                create(
                    api,
                    "port_pairs",
                    name=f"PP{n}",
                    ingress=port_id(api, f"vm{n}:in"),
                    egress=port_id(api, f"vm{n}:out"),
                )
                for n in (1, 3)
            ]
            create(api, "port_pair_groups", name="PG1", port_pairs=[pairs[0]])
            create(api, "port_pair_groups", name="PG2", port_pairs=[pairs[1]])
            fc = create(
                api,
                "flow_classifiers",
                name="udp9999",
                protocol="udp",
                destination_port_range_min=9999,
                destination_port_range_max=9999,
                logical_source_port=port_id(api, "source_vm:eth0"),
            )
            pg1 = call(api, "GET", "/v2.0/sfc/port_pair_groups?name=PG1")["port_pair_groups"][0][
                "id"
            ]
            create(api, "port_chains", name="PC1", port_pair_groups=[pg1], flow_classifiers=[fc])
            for index in range(args.runs):
                runs.append(one_run(lab, api, workdir, index, args.interval))
    summary = {
        key: {
            "median": statistics.median(r[key] for r in runs),
            "max": max(r[key] for r in runs),
        }
        for key in ("put_ms", "first_packet_ms")
    }
    if args.json:
        print(json.dumps({"runs": runs, "summary": summary, "interval_s": args.interval}, indent=2))
    else:
        for r in runs:
            print(
                f"PUT answered in {r['put_ms']:6.1f} ms; first packet on the new path after "
                f"{r['first_packet_ms']:6.1f} ms"
            )
        s = summary["first_packet_ms"]
        print(
            f"first packet on the new path: median {s['median']:.1f} ms, max {s['max']:.1f} ms "
            f"(goal ≤ 100 ms; a new flow every {args.interval * 1e3:g} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
