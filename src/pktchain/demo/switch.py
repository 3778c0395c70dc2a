"""`pktchain demo switch`: three hosts whose NICs are ports of a pktchain switch.

The demo builds a lab of three hosts (h1, h2, h3), starts a real `pktchain
node` process that creates each host's NIC as a TAP port, and then checks,
with ordinary programs run inside the hosts, that the switch carries ping,
an HTTP fetch from a `python -m http.server` on h3, and an iperf3 TCP run
from h1 to h2.  It prints the node's per-port counters, stops the node with
SIGTERM, checks that its TAP devices are gone, and removes the lab.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pktchain.demo.report import (
    DemoReport,
    StepError,
    fail,
    lab_removed,
    start_node,
    stop_node,
)
from pktchain.lab import Lab, LabError
from pktchain.node.process import NodeProcess
from pktchain.node.report import port_table

HOSTS = {"h1": "10.0.0.1", "h2": "10.0.0.2", "h3": "10.0.0.3"}
HTTP_PORT = 8080
IPERF_PORT = 5201
PAGE = "Hello from h3, through the pktchain switch.\n"


def switch_topology(lab_name: str) -> dict[str, Any]:
    return {
        "lab": lab_name,
        "hosts": {
            host: {
                "interfaces": {
                    "eth0": {
                        "attach": "node",
                        "mac": f"02:00:00:00:00:{n:02x}",
                        "addresses": [f"{address}/24"],
                    }
                }
            }
            for n, (host, address) in enumerate(HOSTS.items(), start=1)
        },
    }


def run_switch_demo(*, json_output: bool = False, iperf_seconds: float = 3.0) -> int:
    report = DemoReport("pktchain demo switch", json_output=json_output)
    name = f"demo-switch-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="pktchain-demo-") as tmp:
        workdir = Path(tmp)
        topology_file = workdir / "topology.yaml"
        topology_file.write_text(yaml.safe_dump(switch_topology(name), sort_keys=False))
        (workdir / "www").mkdir()
        (workdir / "www" / "index.html").write_text(PAGE)
        node = NodeProcess(name, topology=topology_file, log_path=workdir / "node.log")
        try:
            with Lab.up(topology_file) as lab:
                report.step("start the node", lambda: start_node(node))
                if report.ok:
                    _traffic_steps(report, lab, node, workdir, iperf_seconds)
                    report.step("stop the node (SIGTERM)", lambda: _stop(node, lab))
        except (LabError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            report.step("lab", lambda: fail(problem))
        finally:
            node.kill()
        report.step("clean up", lambda: lab_removed(name))
    return report.finish()


def _traffic_steps(
    report: DemoReport, lab: Lab, node: NodeProcess, workdir: Path, iperf_seconds: float
) -> None:
    h1, h2, h3 = lab.host("h1"), lab.host("h2"), lab.host("h3")

    def ping(target: str) -> tuple[str, dict[str, Any]]:
        result = h1.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", HOSTS[target]], timeout=15)
        summary = [line for line in result.stdout.splitlines() if "packets transmitted" in line]
        if not result.ok:
            raise StepError(f"ping exited {result.returncode}: {result.stdout.strip()[-200:]}")
        return summary[0] if summary else "ok", {"returncode": result.returncode}

    report.step("ping h1 → h2", lambda: ping("h2"))
    report.step("ping h1 → h3", lambda: ping("h3"))

    def http() -> tuple[str, dict[str, Any]]:
        h3.popen(
            ["python3", "-m", "http.server", str(HTTP_PORT), "--bind", HOSTS["h3"]],
            cwd=workdir / "www",
        )
        h3.wait_listening(HTTP_PORT, timeout=10)
        url = f"http://{HOSTS['h3']}:{HTTP_PORT}/index.html"
        result = h1.run(["curl", "-sS", "--max-time", "10", url], timeout=15)
        if not result.ok or result.stdout != PAGE:
            raise StepError(f"curl {url}: exit {result.returncode}, got {result.stdout[:80]!r}")
        return f"curl {url} → {result.stdout.strip()!r}", {"url": url}

    report.step("HTTP h1 → h3 (python -m http.server)", http)

    def iperf() -> tuple[str, dict[str, Any]]:
        h2.popen(["iperf3", "-s", "-1", "-p", str(IPERF_PORT), "-B", HOSTS["h2"]])
        h2.wait_listening(IPERF_PORT, timeout=10)
        argv = ["iperf3", "-c", HOSTS["h2"], "-p", str(IPERF_PORT), "-t", str(iperf_seconds), "-J"]
        result = h1.run(argv, timeout=iperf_seconds + 20)
        try:
            received = json.loads(result.stdout)["end"]["sum_received"]
        except (ValueError, KeyError) as exc:
            raise StepError(f"iperf3 exit {result.returncode}: {result.stderr.strip()}") from exc
        gbps = received["bits_per_second"] / 1e9
        if received["bytes"] <= 0:
            raise StepError("iperf3 received nothing")
        detail = (
            f"{received['bytes'] / 1e9:.2f} GB in {received['seconds']:.1f} s = {gbps:.2f} Gbit/s"
        )
        return detail, {"gbit_per_s": round(gbps, 3), "bytes": received["bytes"]}

    report.step("iperf3 TCP h1 → h2", iperf)

    def counters() -> tuple[str, dict[str, Any]]:
        status = node.status()
        report.show(port_table(status))
        ports = {port["name"]: port for port in status["ports"]}
        idle = [name for name, port in ports.items() if port["rx_packets"] == 0]
        if idle:
            raise StepError(f"ports that received nothing: {', '.join(idle)}")
        h1_port = ports["h1:eth0"]
        # iperf3's 64 KB TCP segments crossing as single frames show as a mean
        # frame far above the 1514-byte wire limit.
        mean = h1_port["rx_bytes"] / h1_port["rx_packets"]
        if mean <= 1514:
            raise StepError(f"h1's mean frame is {mean:.0f} bytes: GSO frames did not pass")
        report.extra["status"] = status
        return f"every port counted traffic; h1's mean frame {mean:,.0f} bytes (GSO intact)", {}

    report.step("per-port counters", counters)


def _stop(node: NodeProcess, lab: Lab) -> tuple[str, dict[str, Any]]:
    stop_node(node)
    left = [host for host in HOSTS if _has_link(lab.netns_of(host), "eth0")]
    if left:
        raise StepError(f"TAP devices still present in {', '.join(left)}")
    return "exit status 0, every TAP device removed", {}


def _has_link(netns: str, ifname: str) -> bool:
    from pktchain.lab.links import Netlink

    with Netlink(netns) as netlink:
        return netlink.exists(ifname)
