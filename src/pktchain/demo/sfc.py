"""`pktchain demo sfc`: the networking-sfc demo (a devstack walk-through), on real hosts.

source_vm fetches http://dest_vm/ ("Welcome to dest-vm") in a bounded loop
while the demo builds port pairs PP1..PP3 on three service VMs (namespaces
that forward IP between an "in" and an "out" port), groups PG1 = {PP1, PP2}
and PG2 = {PP3}, classifier FC_demo (TCP to port 80 from source_vm's port) and
chain PC1 = [PG1, PG2], then walks through the blog's steps:

1. the chain as created: vm3 and both vm1 and vm2 (one per flow) carry HTTP;
2. FC_demo removed from PC1: the service VMs see nothing, HTTP still works;
3. FC_demo restored with PC1 = [PG1]: vm3 sees nothing;
4. PG1 = {PP2}: vm1 sees nothing, vm2 everything;
5. the initial state restored.

After each step it measures a window of traffic and prints, per service VM,
the HTTP packets the node steered into it and the frames on its two ports
(the blog's tcpdump, from the node's side).  It exits 0 only when every
step's expectation held and HTTP kept working throughout.

While it runs, the node's dashboard (docs/dashboard.md) is at the address
printed first (on stderr with ``--json``, whose stdout stays one JSON
document). With `hold`, once the walk-through is done the demo stays up with
HTTP still flowing, for a person to look at, until SIGINT (Ctrl-C) or
SIGTERM; then it stops the node and removes the lab as it always does. A
SIGTERM earlier in the run removes everything too.
"""

from __future__ import annotations

import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from pktchain.demo.report import DemoReport, StepError, fail, start_node, stop_node
from pktchain.lab import Lab, LabError, LabHost
from pktchain.node.client import ChainingClient, ChainingRequestError
from pktchain.node.process import NodeProcess

SOURCE_IP = "10.0.0.9"
DEST_IP = "10.0.0.10"
WELCOME = "Welcome to dest-vm\n"
SERVICE_VMS = ("vm1", "vm2", "vm3")
PAIR_OF = {"vm1": "PP1", "vm2": "PP2", "vm3": "PP3"}

SF_SYSCTLS = {
    # A service VM forwards IP between its ports, as the demo's VMs do with
    # static routes; it does not second-guess the path (rp_filter), tell the
    # source to go elsewhere (redirects), or answer ARP on the wrong port.
    "net.ipv4.ip_forward": 1,
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.conf.all.send_redirects": 0,
    "net.ipv4.conf.default.send_redirects": 0,
    "net.ipv4.conf.all.arp_ignore": 1,
}


def service_vm(n: int) -> dict[str, Any]:
    """Service VM n: traffic enters on "in", leaves on "out" (10.0.0.2n); replies
    to the source (symmetric chains) go back out of "in"."""
    return {
        "sysctls": SF_SYSCTLS,
        "interfaces": {
            "in": {"attach": "node", "mac": f"02:00:00:00:{n}0:01"},
            "out": {
                "attach": "node",
                "mac": f"02:00:00:00:{n}0:02",
                "addresses": [f"10.0.0.2{n}/24"],
            },
        },
        "routes": [{"to": f"{SOURCE_IP}/32", "dev": "in"}],
    }


def sfc_topology(lab_name: str, service_vms: int = 3) -> dict[str, Any]:
    host = {
        "source_vm": (SOURCE_IP, "02:00:00:00:00:09"),
        "dest_vm": (DEST_IP, "02:00:00:00:00:10"),
    }
    hosts: dict[str, Any] = {
        name: {"interfaces": {"eth0": {"attach": "node", "mac": mac, "addresses": [f"{ip}/24"]}}}
        for name, (ip, mac) in host.items()
    }
    for n in range(1, service_vms + 1):
        hosts[f"vm{n}"] = service_vm(n)
    return {"lab": lab_name, "hosts": hosts}


def start_web_server(dest: LabHost, workdir: Path) -> None:
    www = workdir / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text(WELCOME)
    dest.popen(["python3", "-m", "http.server", "80", "--bind", DEST_IP], cwd=www)
    dest.wait_listening(80, timeout=10)


def build_demo_chain(api: ChainingClient) -> None:
    """PP1..PP3, PG1 = {PP1, PP2}, PG2 = {PP3}, FC_demo, PC1 = [PG1, PG2]."""
    for vm, pair in PAIR_OF.items():
        api.create(
            "port_pairs",
            name=pair,
            ingress=api.port_id(f"{vm}:in"),
            egress=api.port_id(f"{vm}:out"),
        )
    api.create(
        "port_pair_groups",
        name="PG1",
        port_pairs=[_id(api, "port_pairs", p) for p in ("PP1", "PP2")],
    )
    api.create("port_pair_groups", name="PG2", port_pairs=[_id(api, "port_pairs", "PP3")])
    api.create(
        "flow_classifiers",
        name="FC_demo",
        protocol="tcp",
        destination_port_range_min=80,
        destination_port_range_max=80,
        logical_source_port=api.port_id("source_vm:eth0"),
    )
    api.create(
        "port_chains",
        name="PC1",
        port_pair_groups=[_id(api, "port_pair_groups", g) for g in ("PG1", "PG2")],
        flow_classifiers=[_id(api, "flow_classifiers", "FC_demo")],
    )


def _id(api: ChainingClient, collection: str, name: str) -> str:
    return str(api.get(collection, name)["id"])


class HttpLoop:
    """source_vm fetching dest_vm every `interval` s, at most `count` times."""

    def __init__(self, source: LabHost, log: Path, *, interval: float = 0.05, count: int = 4000):
        script = (
            f"for i in $(seq 1 {count}); do "
            f"curl -s --max-time 2 -o /dev/null -w '%{{http_code}}\\n' http://{DEST_IP}/; "
            f"sleep {interval}; done"
        )
        self.log = log
        self._out = log.open("wb")
        self.process = source.popen(["sh", "-c", script], stdout=self._out)

    def results(self) -> tuple[int, int]:
        """(successful, failed) fetches so far."""
        codes = self.log.read_text().split()
        ok = codes.count("200")
        return ok, len(codes) - ok

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._out.close()


@dataclass(frozen=True)
class Expectation:
    """Which service VMs must carry HTTP in a step, and which must see none."""

    busy: tuple[str, ...]
    idle: tuple[str, ...]


def keep(api: ChainingClient) -> None:
    """Step 1 changes nothing: the chain as created."""


def remove_classifier(api: ChainingClient) -> None:
    api.update("port_chains", "PC1", flow_classifiers=[])


def restore_classifier_first_group_only(api: ChainingClient) -> None:
    api.update(
        "port_chains",
        "PC1",
        flow_classifiers=[_id(api, "flow_classifiers", "FC_demo")],
        port_pair_groups=[_id(api, "port_pair_groups", "PG1")],
    )


def only_second_pair(api: ChainingClient) -> None:
    api.update("port_pair_groups", "PG1", port_pairs=[_id(api, "port_pairs", "PP2")])


def restore_initial(api: ChainingClient) -> None:
    api.update(
        "port_pair_groups", "PG1", port_pairs=[_id(api, "port_pairs", p) for p in ("PP1", "PP2")]
    )
    api.update(
        "port_chains",
        "PC1",
        port_pair_groups=[_id(api, "port_pair_groups", g) for g in ("PG1", "PG2")],
    )


STEPS: tuple[tuple[str, Callable[[ChainingClient], None], Expectation], ...] = (
    (
        "1. PC1 = [PG1, PG2] with FC_demo: vm3, and vm1 or vm2 per flow",
        keep,
        Expectation(busy=("vm1", "vm2", "vm3"), idle=()),
    ),
    (
        "2. FC_demo removed from PC1: the service VMs see nothing",
        remove_classifier,
        Expectation(busy=(), idle=("vm1", "vm2", "vm3")),
    ),
    (
        "3. FC_demo restored, PC1 = [PG1]: vm3 sees nothing",
        restore_classifier_first_group_only,
        Expectation(busy=("vm1", "vm2"), idle=("vm3",)),
    ),
    (
        "4. PG1 = {PP2}: vm1 sees nothing, vm2 everything",
        only_second_pair,
        Expectation(busy=("vm2",), idle=("vm1", "vm3")),
    ),
    (
        "5. initial state restored",
        restore_initial,
        Expectation(busy=("vm1", "vm2", "vm3"), idle=()),
    ),
)


def sf_counters(status: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per service VM: HTTP packets steered into it, frames to its in port, from its out port."""
    pairs = {p["name"]: p for p in status["steering"]["port_pairs"].values()}
    ports = {p["name"]: p for p in status["ports"]}
    return {
        vm: {
            "steered_packets": pairs.get(PAIR_OF[vm], {}).get("packets", 0),
            "steered_flows": pairs.get(PAIR_OF[vm], {}).get("flows", 0),
            "in_tx_packets": ports[f"{vm}:in"]["tx_packets"],
            "out_rx_packets": ports[f"{vm}:out"]["rx_packets"],
        }
        for vm in SERVICE_VMS
    }


def _delta(
    after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]
) -> dict[str, dict[str, int]]:
    return {vm: {k: after[vm][k] - before[vm][k] for k in after[vm]} for vm in after}


HOLD_INTERVAL = 0.2
"""Seconds between two fetches while the demo is held up."""
HOLD_FETCHES = 3000
"""Fetches of one traffic loop while held (10 minutes); the next loop follows it."""


def run_sfc_demo(*, json_output: bool = False, window: float = 2.5, hold: bool = False) -> int:
    with _sigterm_interrupts():
        return _run(json_output=json_output, window=window, hold=hold)


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM interrupts the demo as Ctrl-C does, so that it removes what it made."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _notice(report: DemoReport, message: str) -> None:
    """A line for the person running the demo, which JSON output keeps off stdout."""
    if report.json_output:
        print(f"pktchain demo sfc: {message}", file=sys.stderr, flush=True)
    else:
        report.console.print(message)


def _run(*, json_output: bool, window: float, hold: bool) -> int:
    report = DemoReport("pktchain demo sfc", json_output=json_output)
    name = f"demo-sfc-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="pktchain-demo-") as tmp:
        workdir = Path(tmp)
        topology_file = workdir / "topology.yaml"
        topology_file.write_text(yaml.safe_dump(sfc_topology(name), sort_keys=False))
        node = NodeProcess(name, topology=topology_file, log_path=workdir / "node.log")
        loop: HttpLoop | None = None
        dashboard = ""
        try:
            with Lab.up(topology_file) as lab:
                report.step("start the node", lambda: start_node(node))
                if report.ok:
                    dashboard = f"{node.api_url()}/ui/"
                    report.extra["dashboard"] = dashboard
                    _notice(report, f"dashboard at {dashboard}")
                    api = ChainingClient(node.control)
                    report.step("web server on dest_vm", lambda: _web(lab, workdir))
                    report.step("create PP1..PP3, PG1, PG2, FC_demo, PC1", lambda: _build(api))
                if report.ok:
                    loop = HttpLoop(lab.host("source_vm"), workdir / "http.log")
                    walk = Walk(report, api, node, loop, window)
                    for title, change, expectation in STEPS:
                        report.step(title, partial(walk.step, title, change, expectation))
                    loop.stop()
                    if hold:
                        _hold(report, lab.host("source_vm"), workdir, dashboard)
                    report.step("stop the node (SIGTERM)", lambda: stop_node(node))
        except (LabError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            report.step("lab", lambda: fail(problem))
        finally:
            if loop is not None:
                loop.stop()
            node.kill()
    return report.finish()


def _hold(report: DemoReport, source: LabHost, workdir: Path, dashboard: str) -> None:
    """Keep HTTP flowing from source_vm until SIGINT or SIGTERM."""
    stop = threading.Event()

    def stop_holding(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {
        signum: signal.signal(signum, stop_holding) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    traffic: HttpLoop | None = None
    try:
        _notice(
            report,
            f"holding the demo up at {dashboard} (HTTP flowing); "
            "Ctrl-C or SIGTERM stops it and removes everything",
        )
        rounds = 0
        while not stop.is_set():
            if traffic is None or traffic.process.poll() is not None:
                if traffic is not None:
                    traffic.stop()
                rounds += 1
                traffic = HttpLoop(
                    source,
                    workdir / f"hold-{rounds}.log",
                    interval=HOLD_INTERVAL,
                    count=HOLD_FETCHES,
                )
            stop.wait(0.5)
        _notice(report, "stopping")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if traffic is not None:
            traffic.stop()


def _web(lab: Lab, workdir: Path) -> tuple[str, dict[str, Any]]:
    start_web_server(lab.host("dest_vm"), workdir)
    result = lab.host("source_vm").run(["curl", "-sS", "--max-time", "5", f"http://{DEST_IP}/"])
    if result.stdout != WELCOME:
        raise StepError(f"curl http://{DEST_IP}/ gave {result.stdout!r} {result.stderr.strip()}")
    return f"curl http://{DEST_IP}/ → {result.stdout.strip()!r}", {}


def _build(api: ChainingClient) -> tuple[str, dict[str, Any]]:
    try:
        build_demo_chain(api)
    except ChainingRequestError as exc:
        raise StepError(str(exc)) from exc
    chain = api.get("port_chains", "PC1")
    return f"PC1 (chain_id {chain['chain_id']}) = [PG1, PG2], classifier FC_demo", {}


@dataclass(frozen=True)
class Walk:
    """What every step of the walk-through uses."""

    report: DemoReport
    api: ChainingClient
    node: NodeProcess
    loop: HttpLoop
    window: float

    def step(
        self, title: str, change: Callable[[ChainingClient], None], expectation: Expectation
    ) -> tuple[str, dict[str, Any]]:
        try:
            change(self.api)
        except ChainingRequestError as exc:
            raise StepError(f"the change was refused: {exc}") from exc
        time.sleep(0.5)  # let connections opened before the change finish
        before, (ok_before, failed_before) = sf_counters(self.node.status()), self.loop.results()
        time.sleep(self.window)
        after, (ok_after, failed_after) = sf_counters(self.node.status()), self.loop.results()
        delta = _delta(after, before)
        fetched, failed = ok_after - ok_before, failed_after - failed_before
        self.report.show(_table(title, delta, fetched, failed))
        record = {"step": title, "service_vms": delta, "http_ok": fetched, "http_failed": failed}
        problems = [
            f"{vm} carried no HTTP" for vm in expectation.busy if delta[vm]["steered_packets"] == 0
        ]
        problems += [
            f"{vm} carried {delta[vm]['steered_packets']} HTTP packets"
            for vm in expectation.idle
            if delta[vm]["steered_packets"] != 0
        ]
        if fetched == 0:
            problems.append("no HTTP fetch succeeded")
        if failed:
            problems.append(f"{failed} HTTP fetches failed")
        if problems:
            raise StepError("; ".join(problems))
        busy = ", ".join(
            f"{vm} {delta[vm]['steered_flows']} flows"
            for vm in SERVICE_VMS
            if delta[vm]["steered_flows"]
        )
        return f"{fetched} fetches OK; {busy or 'no service VM used'}", record


def _table(title: str, delta: dict[str, dict[str, int]], fetched: int, failed: int) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        caption=f"HTTP fetches in the window: {fetched} OK, {failed} failed",
        caption_justify="left",
    )
    table.add_column("service VM")
    for column in ("HTTP flows", "HTTP packets", "frames to in", "frames from out"):
        table.add_column(column, justify="right")
    for vm, counts in delta.items():
        table.add_row(
            vm,
            str(counts["steered_flows"]),
            str(counts["steered_packets"]),
            str(counts["in_tx_packets"]),
            str(counts["out_rx_packets"]),
        )
    return table
