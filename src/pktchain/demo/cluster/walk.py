"""The demo's walk: its steps, run in order, and the clean-up after them."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from pktchain.demo.cluster.checks import (
    FlowKey,
    chain_paths,
    client_flows,
    flowcount_problems,
    hop_problems,
    path_text,
    reply_problems,
    summarize_paths,
)
from pktchain.demo.cluster.probe import (
    AFTER_MOVE,
    PROBE_BATCHES,
    PROBE_CONNECTIONS,
    PROBE_INTERVAL,
    Probe,
)
from pktchain.demo.cluster.tables import flowcount_table, hop_table, moves_table, node_table
from pktchain.demo.cluster.topology import (
    API_PORT,
    CAPTURE_BITRATE,
    CHAIN,
    CLASSIFIERS,
    CLIENT,
    DOOMED,
    FAILOVER_LIMIT,
    FIREWALLS,
    GROUPS,
    HTTP_FETCHES,
    HTTP_PORT,
    IPERF_PORT,
    MOVES,
    NODES,
    PAGE,
    PAIR_NODE,
    PAIRS,
    SERVER,
    cluster_topology,
    firewall_functions,
)
from pktchain.demo.report import DemoReport, StepError, lab_removed
from pktchain.lab import Lab, LabError, WaitTimeoutError, wait_until
from pktchain.node.control import ControlError
from pktchain.node.process import NodeProcess, NodeProcessError

SOURCE_TREE = Path(__file__).resolve().parents[4]
"""The source tree this module is in, when it runs from one (src/pktchain/demo/cluster/):
where `make setup` builds nsh-flowcount, and its source."""


def run_cluster_demo(
    *,
    json_output: bool = False,
    pcap_dir: Path | None = None,
    iperf_seconds: float = 3.0,
    iperf_bitrate: str | None = None,
    nsh_function: Path | None = None,
) -> int:
    """Run the demo; 0 when every step held.  Everything it made is removed at the
    end, also after a failure, Ctrl-C or SIGTERM (the captures in `pcap_dir` stay)."""
    report = DemoReport("pktchain demo cluster", json_output=json_output)
    name = f"demo-cluster-{secrets.token_hex(3)}"
    if iperf_bitrate is None and pcap_dir is not None:
        iperf_bitrate = CAPTURE_BITRATE
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with tempfile.TemporaryDirectory(prefix="pktchain-demo-") as tmp:
            demo = ClusterDemo(
                report,
                name,
                Path(tmp),
                pcap_dir=pcap_dir,
                iperf_seconds=iperf_seconds,
                iperf_bitrate=iperf_bitrate,
                nsh_function=nsh_function,
            )
            try:
                demo.run()
            finally:
                demo.close()
            report.step("clean up", lambda: lab_removed(name))
    finally:
        signal.signal(signal.SIGTERM, previous)
    return report.finish()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM ends the demo as Ctrl-C does: through its clean-up."""
    raise KeyboardInterrupt


class ClusterDemo:
    """The demo's lab, nodes and programs, and its steps."""

    def __init__(
        self,
        report: DemoReport,
        lab_name: str,
        workdir: Path,
        *,
        pcap_dir: Path | None,
        iperf_seconds: float,
        iperf_bitrate: str | None,
        nsh_function: Path | None,
    ) -> None:
        self.report = report
        self.lab_name = lab_name
        self.workdir = workdir
        self.pcap_dir = pcap_dir
        self.iperf_seconds = iperf_seconds
        self.iperf_bitrate = iperf_bitrate
        self.nsh_function = nsh_function
        self.token = secrets.token_hex(16)
        self.topology_file = workdir / "topology.yaml"
        self.topology_file.write_text(yaml.safe_dump(cluster_topology(lab_name), sort_keys=False))
        self.lab: Lab | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.captures: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.flowcount: subprocess.Popen[bytes] | None = None
        self.flowcount_stats = workdir / "flowcount.json"
        self.probes: list[Probe] = []
        self.last_status: dict[str, dict[str, Any]] = {}
        """Each node's status as last read (n2's from just before it was killed)."""
        self.killed: set[str] = set()

    # -- the walk ----------------------------------------------------------------------
    def run(self) -> None:
        report = self.report
        needed: tuple[tuple[str, Callable[[], tuple[str, dict[str, Any]]]], ...] = (
            ("lab up: three nodes on an underlay, with etcd", self.lab_up),
            ("three nodes running, each hearing the other two", self.start_nodes),
            ("server (HTTP, iperf3) and nsh-flowcount (C, NSH-aware) on n3", self.services),
            ("chain created through n1's REST API", self.create_chain),
        )
        for title, action in needed:
            if not report.step(title, action):
                return
        bitrate = f", at most {self.iperf_bitrate}bit/s" if self.iperf_bitrate else ""
        report.step("HTTP through the chain", self.http)
        report.step(f"iperf3 through the chain ({self.iperf_seconds:g} s{bitrate})", self.iperf)
        report.step("replies crossed the same instances", self.same_instances)
        report.step(
            f"{DOOMED} killed (SIGKILL): its flows move to fw1 and sf3 within {FAILOVER_LIMIT:g} s",
            self.kill_node,
        )
        report.step(f"HTTP and iperf3 without {DOOMED}", self.without_node)
        report.step("per-node and per-hop counters", self.counters)
        report.step("n1 and n3 stopped (SIGTERM), nsh-flowcount too", self.stop_all)
        if self.captures:
            report.step("underlay captures", self.stop_captures)

    # -- steps ---------------------------------------------------------------------------
    def lab_up(self) -> tuple[str, dict[str, Any]]:
        try:
            self.lab = Lab.up(self.topology_file)
        except (LabError, OSError) as exc:
            raise StepError(f"{type(exc).__name__}: {exc}") from exc
        topology = self.lab.topology
        if self.pcap_dir is not None:
            self._start_captures(self.pcap_dir)
        nodes = {name: str(spec.underlay.ip) for name, spec in topology.nodes.items()}
        etcd = topology.etcd.client_url if topology.etcd is not None else "none"
        detail = (
            f"lab {self.lab_name}: "
            + ", ".join(f"{name} {address}" for name, address in nodes.items())
            + f" on {topology.underlay} (MTU {topology.underlay_mtu}), etcd {etcd}"
        )
        if self.captures:
            detail += f"; capturing ul0 of each node into {self.pcap_dir}"
        return detail, {"lab": self.lab_name, "underlay": nodes, "etcd": etcd}

    def _start_captures(self, directory: Path) -> None:
        lab = self._lab()
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StepError(f"--pcap {directory}: {exc.strerror}") from exc
        for node in NODES:
            path = directory.resolve() / f"{node}-ul0.pcap"
            path.unlink(missing_ok=True)
            argv = ["tcpdump", "-i", "ul0", "-s", "0", "-B", "16384", "-U", "-w", str(path)]
            process = lab.node(node).popen(argv, stderr=subprocess.DEVNULL)
            self.captures[node] = (process, path)
        for node, (_process, path) in self.captures.items():
            # tcpdump creates its file once it captures: from then on it misses nothing.
            self._wait(path.exists, 10, f"tcpdump on {node}'s ul0 to start")

    def start_nodes(self) -> tuple[str, dict[str, Any]]:
        lab = self._lab()
        topology = lab.topology
        etcd = topology.etcd.client_url if topology.etcd is not None else None
        token_file = self.workdir / "api-token"
        token_file.touch(mode=0o600)
        token_file.chmod(0o600)  # before the token is in it, also in a file left from before
        token_file.write_text(self.token)
        for node in NODES:
            args = ["--api-token-file", str(token_file)]
            firewall = FIREWALLS.get(node)
            if firewall is not None:
                functions = self.workdir / f"{firewall}.yaml"
                functions.write_text(yaml.safe_dump(firewall_functions(firewall), sort_keys=False))
                args += ["--functions", str(functions)]
            process = NodeProcess(
                node,
                topology=self.topology_file,
                lab_name=self.lab_name,
                node=node,
                api=f"{topology.node(node).underlay.ip}:{API_PORT}",
                etcd=etcd,
                args=tuple(args),
                log_path=self.workdir / f"{node}.log",
                control=self.workdir / f"{node}.sock",
            )
            self.nodes[node] = process
            process.spawn()
        try:
            for process in self.nodes.values():
                process.wait_ready(30)
        except NodeProcessError as exc:
            raise StepError(str(exc)) from exc

        def everyone_heard() -> bool:
            for node, process in self.nodes.items():
                cluster = process.status()["cluster"] or {}
                peers = (cluster.get("peers") or {}).get("peers", {})
                if sorted(cluster.get("nodes", [])) != list(NODES):
                    return False
                if not all(peers.get(n, {}).get("alive") for n in NODES if n != node):
                    return False
            return True

        self._wait(everyone_heard, 30, "every node to register and hear the other two")
        described = []
        for node, process in self.nodes.items():
            status = process.status()
            firewall = FIREWALLS.get(node)
            extra = f", firewall {firewall}" if firewall else ""
            described.append(f"{node} (pid {process.pid}{extra}, API {status['api']})")
        return "; ".join(described), {
            "nodes": {node: {"pid": process.pid} for node, process in self.nodes.items()}
        }

    def services(self) -> tuple[str, dict[str, Any]]:
        lab = self._lab()
        server = lab.host("server")
        www = self.workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "index.html").write_text(PAGE)
        server.popen(
            [
                *("python3", "-m", "http.server", str(HTTP_PORT), "--bind", SERVER),
                *("--protocol", "HTTP/1.1", "--directory", str(www)),
            ]
        )
        server.popen(["iperf3", "-s", "-B", SERVER, "-p", str(IPERF_PORT)])
        try:
            server.wait_listening(HTTP_PORT, timeout=10)
            server.wait_listening(IPERF_PORT, timeout=10)
        except WaitTimeoutError as exc:
            raise StepError(str(exc)) from exc
        binary = self._flowcount_binary()
        stats = self.flowcount_stats
        log = self.workdir / "flowcount.log"
        with log.open("wb") as stderr:
            self.flowcount = lab.host("flowcount").popen(
                [str(binary), "--interface", "in", "--egress", "out", "--stats", str(stats)],
                stderr=stderr,
            )
        process = self.flowcount

        def ready() -> bool:
            if process.poll() is not None:
                said = log.read_text(errors="replace").strip()
                raise StepError(f"nsh-flowcount exited with status {process.returncode}: {said}")
            return "ready:" in log.read_text(errors="replace")

        self._wait(ready, 10, "nsh-flowcount to say it is ready")
        return (
            f"python3 -m http.server on {SERVER}:{HTTP_PORT}, iperf3 -s on :{IPERF_PORT}; "
            f"{binary.name} (pid {self.flowcount.pid}) on flowcount's in → out"
        ), {"nsh_function": str(binary)}

    def _flowcount_binary(self) -> Path:
        """The C example: --nsh-function, the tree's build/, $PATH, or built here."""
        if self.nsh_function is not None:
            if not os.access(self.nsh_function, os.X_OK):
                raise StepError(f"--nsh-function {self.nsh_function}: not an executable file")
            return self.nsh_function
        tree = SOURCE_TREE
        built = tree / "build" / "nsh-flowcount"
        if os.access(built, os.X_OK):
            return built
        found = shutil.which("nsh-flowcount")
        if found is not None:
            return Path(found)
        source = tree / "examples" / "nsh"
        if (source / "nsh_flowcount.c").exists() and shutil.which("make"):
            result = subprocess.run(
                ["make", "-s", "-C", str(source), f"BUILD={self.workdir}"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode == 0:
                return self.workdir / "nsh-flowcount"
            raise StepError(f"building nsh-flowcount failed: {result.stderr.strip()[-300:]}")
        raise StepError(
            "nsh-flowcount not found: build it with `make setup` (build/nsh-flowcount) "
            "or give --nsh-function PATH"
        )

    def create_chain(self) -> tuple[str, dict[str, Any]]:
        from pktchain.client.neutron import ApiError, ClientError, NeutronClient
        from pktchain.linux.netns import entered
        from pktchain.sfc.resources import ResourceKind

        lab = self._lab()
        url = f"http://{lab.topology.node('n1').underlay.ip}:{API_PORT}"
        api = NeutronClient(url, self.token, timeout=15)
        # The API listens on n1's underlay address: it is asked from the lab's
        # fabric namespace, on the underlay, as another machine would.
        try:
            with entered(lab.topology.fabric_netns):
                try:
                    NeutronClient(url, timeout=15).list(ResourceKind.PORT_CHAIN)
                    refused = "a request without the token was answered"
                except ApiError as exc:
                    refused = "" if exc.status == 401 else f"without the token: {exc}"
                if refused:
                    raise StepError(refused)
                ports = {port["name"]: port for port in api.list(ResourceKind.PORT)}
                misplaced = [
                    f"{name} is on {ports.get(name, {}).get('binding:host_id')}, not {pair.node}"
                    for pair in PAIRS
                    for name in (pair.ingress, pair.egress)
                    if ports.get(name, {}).get("binding:host_id") != pair.node
                ]
                if misplaced:
                    raise StepError("; ".join(misplaced))
                pair_ids = {}
                for pair in PAIRS:
                    body: dict[str, Any] = {
                        "name": pair.name,
                        "ingress": ports[pair.ingress]["id"],
                        "egress": ports[pair.egress]["id"],
                    }
                    if pair.nsh:
                        body["service_function_parameters"] = {"correlation": "nsh"}
                    pair_ids[pair.name] = api.create(ResourceKind.PORT_PAIR, body)["id"]
                group_ids = [
                    api.create(
                        ResourceKind.PORT_PAIR_GROUP,
                        {"name": group, "port_pairs": [pair_ids[p] for p in members]},
                    )["id"]
                    for group, members in GROUPS
                ]
                classifier_ids = [
                    api.create(
                        ResourceKind.FLOW_CLASSIFIER,
                        {
                            "name": classifier,
                            "protocol": "tcp",
                            "source_ip_prefix": f"{CLIENT}/32",
                            "destination_ip_prefix": f"{SERVER}/32",
                            "destination_port_range_min": port,
                            "destination_port_range_max": port,
                            "logical_source_port": ports["client:eth0"]["id"],
                            "logical_destination_port": ports["server:eth0"]["id"],
                        },
                    )["id"]
                    for classifier, port in CLASSIFIERS
                ]
                chain = api.create(
                    ResourceKind.PORT_CHAIN,
                    {
                        "name": CHAIN,
                        "port_pair_groups": group_ids,
                        "flow_classifiers": classifier_ids,
                        # An NSH-aware pair needs a chain of correlation nsh.
                        "chain_parameters": {"symmetric": True, "correlation": "nsh"},
                    },
                )
        except ClientError as exc:
            raise StepError(f"{url}: {exc}") from exc

        def everywhere() -> bool:
            return all(
                any(c["name"] == CHAIN for c in p.status()["steering"]["chains"])
                for p in self.nodes.values()
            )

        self._wait(everywhere, 15, f"every node to steer by {CHAIN}")
        groups = ", ".join(
            f"{group} {{{', '.join(f'{p}@{PAIR_NODE[p]}' for p in members)}}}"
            for group, members in GROUPS
        )
        detail = (
            f"{CHAIN} (chain_id {chain['chain_id']}, symmetric) = [{groups}], "
            f"classifiers {' + '.join(c for c, _ in CLASSIFIERS)} (TCP {CLIENT} → "
            f"{SERVER}:{HTTP_PORT}, :{IPERF_PORT}); made at {url} with a token "
            f"(refused without it), steered by n1, n2 and n3. The firewall's second "
            f"instance, FW1 on n1, is there so that every group keeps an instance when "
            f"{DOOMED} dies"
        )
        return detail, {"api": url, "chain": chain}

    def http(self) -> tuple[str, dict[str, Any]]:
        fetched = self._fetch(HTTP_FETCHES)
        flows = client_flows(self._node("n1").flows(), CHAIN, HTTP_PORT)
        if not flows:
            raise StepError("n1 steered no HTTP flow into the chain")
        detail = (
            f"{fetched} fetches of http://{SERVER}/ OK; paths: {summarize_paths(flows.values())}"
        )
        return detail, {"fetches": fetched, "paths": _paths_json(flows)}

    def _fetch(self, count: int) -> int:
        client = self._lab().host("client")
        for n in range(count):
            result = client.run(["curl", "-sS", "--max-time", "5", f"http://{SERVER}/"], timeout=15)
            if result.stdout != PAGE:
                raise StepError(
                    f"fetch {n + 1}: curl exited {result.returncode}, "
                    f"got {result.stdout[:60]!r} {result.stderr.strip()}"
                )
        return count

    def iperf(self) -> tuple[str, dict[str, Any]]:
        before = set(client_flows(self._node("n1").flows(), CHAIN, IPERF_PORT))
        measured = self._iperf()
        flows = {
            key: paths
            for key, paths in client_flows(self._node("n1").flows(), CHAIN, IPERF_PORT).items()
            if key not in before
        }
        if not flows:
            raise StepError("n1 steered no iperf3 flow into the chain")
        detail = f"{measured['detail']}; paths: {summarize_paths(flows.values())}"
        return detail, {**measured["data"], "paths": _paths_json(flows)}

    def _iperf(self) -> dict[str, Any]:
        argv = ["iperf3", "-c", SERVER, "-p", str(IPERF_PORT), "-t", f"{self.iperf_seconds:g}"]
        if self.iperf_bitrate:
            argv += ["-b", self.iperf_bitrate]
        result = self._lab().host("client").run([*argv, "-J"], timeout=self.iperf_seconds + 30)
        try:
            end = json.loads(result.stdout)["end"]
            received, sent = end["sum_received"], end["sum_sent"]
        except (ValueError, KeyError, TypeError) as exc:
            said = result.stderr.strip() or result.stdout[-200:]
            raise StepError(f"iperf3 exited {result.returncode}: {said}") from exc
        if received["bytes"] <= 0:
            raise StepError("iperf3 received nothing")
        rate = received["bits_per_second"] / 1e6
        detail = (
            f"{received['bytes'] / 1e6:,.0f} MB in {received['seconds']:.1f} s = "
            f"{rate:,.0f} Mbit/s, {sent.get('retransmits', 0)} retransmits"
        )
        data = {
            "mbit_per_s": round(rate, 1),
            "bytes": received["bytes"],
            "retransmits": sent.get("retransmits", 0),
        }
        return {"detail": detail, "data": data}

    def same_instances(self) -> tuple[str, dict[str, Any]]:
        statuses = {node: self._status(node) for node in NODES}
        flows = {node: self._node(node).flows() for node in NODES}
        problems, checked = reply_problems(flows, PAIR_NODE, CHAIN)
        hop_issues, counts = hop_problems(statuses, PAIR_NODE, CHAIN)
        problems += hop_issues
        unused = [pair.name for pair in PAIRS if not counts.get(pair.name, {}).get("forward")]
        stats = self._read_flowcount()
        keys = client_flows(flows["n1"], CHAIN).keys()
        counted_issues, counted = flowcount_problems(stats, keys)
        problems += counted_issues
        if checked == 0:
            problems.append("no flow to check")
        if problems:
            raise StepError("; ".join(problems[:6]) + (" …" if len(problems) > 6 else ""))
        hops = ", ".join(
            f"{pair}@{PAIR_NODE[pair]} {c['forward']:,}/{c['reverse']:,}"
            for pair, c in sorted(counts.items())
        )
        detail = (
            f"{checked} flows, each pinned to one instance per group, its replies to the "
            f"same on every node holding them; packets forward/back: {hops}; "
            f"nsh-flowcount counted {counted} flows (both ways), added "
            f"{stats.get('tlv', {}).get('added', 0):,} TLVs"
        )
        if unused:
            detail += f"; no flow chose {', '.join(unused)}"
        return detail, {"flows": checked, "hops": counts, "flowcount_flows": counted}

    def kill_node(self) -> tuple[str, dict[str, Any]]:
        before = self._open_probes()
        affected = {port: path for port, path in before.items() if _doomed(path)}
        if not affected:
            raise StepError(f"no probe flow crossed {DOOMED}")
        for node in NODES:
            self._status(node)  # the counters n2 will have had
        started = time.monotonic()
        self._node(DOOMED).kill()
        self.killed.add(DOOMED)
        failover = self._watch_failover(started, affected)
        time.sleep(AFTER_MOVE)
        answered = self._finish_probes(started)
        after, moved_after, dead_after = failover.after, failover.moved_after, failover.dead_after
        self.report.show(moves_table(affected, after, moved_after))
        survivors = [node for node in NODES if node != DOOMED]
        problems = [
            f"{node} did not take {DOOMED} for dead" for node in survivors if node not in dead_after
        ]
        for port, path in sorted(affected.items()):
            if port not in moved_after:
                problems.append(f"probe flow :{port} ({path_text(path)}) did not move")
                continue
            for gone in _doomed(path):
                if MOVES[gone] not in after[port]:
                    problems.append(f"probe flow :{port} left {gone} for {path_text(after[port])}")
        slowest = max(moved_after.values(), default=0.0)
        if slowest > FAILOVER_LIMIT:
            problems.append(f"the last probe flow moved after {slowest:.2f} s")
        problems += answered["problems"]
        flows = {node: self._node(node).flows() for node in survivors}
        problems += [
            f"{node} still pins a flow to {DOOMED}"
            for node in survivors
            if any(_doomed(p) for paths in chain_paths(flows[node], CHAIN).values() for p in paths)
        ]
        moved_keys = {(CLIENT, SERVER, 6, port, HTTP_PORT) for port in after}
        replies, _checked = reply_problems(flows, PAIR_NODE, CHAIN, only=moved_keys)
        problems += replies
        data = {
            "dead_after": {node: round(t, 3) for node, t in dead_after.items()},
            "moved_after": {str(port): round(t, 3) for port, t in moved_after.items()},
            "paths_before": {str(port): list(path) for port, path in affected.items()},
            "paths_after": {str(port): list(path) for port, path in after.items()},
            "probes": answered["results"],
        }
        if problems:
            raise StepError("; ".join(problems[:6]) + (" …" if len(problems) > 6 else ""))
        moves = Counter(
            f"{gone} → {MOVES[gone]}" for port in after for gone in _doomed(affected[port])
        )
        dead = ", ".join(f"{node} after {t:.2f} s" for node, t in sorted(dead_after.items()))
        detail = (
            f"{DOOMED} taken for dead by {dead}; its {len(affected)} probe flows "
            f"(of {len(before)}) moved within {slowest:.2f} s "
            f"({', '.join(f'{m} x{n}' for m, n in sorted(moves.items()))}), their replies "
            f"with them; {answered['summary']}"
        )
        return detail, data

    def _probe_paths(self) -> dict[int, tuple[str, ...]]:
        """The path n1 pinned each probe flow to, by the flow's source port."""
        ports = {port for probe in self.probes for port in probe.ports}
        paths = {}
        for key, found in client_flows(self._node("n1").flows(), CHAIN, HTTP_PORT).items():
            if key[3] in ports and len(found) == 1:
                paths[key[3]] = next(iter(found))
        return paths

    def _open_probes(self) -> dict[int, tuple[str, ...]]:
        """Probe connections, more until some cross each instance on n2 (a flow
        takes each with even odds): their paths, by source port."""
        client = self._lab().host("client")
        paths: dict[int, tuple[str, ...]] = {}
        for _batch in range(PROBE_BATCHES):
            self.probes.append(Probe(client, PROBE_CONNECTIONS))
            ports = {port for probe in self.probes for port in probe.ports}
            self._wait(
                partial(_covers, self._probe_paths, ports), 10, "the probe flows to be steered"
            )
            paths = self._probe_paths()
            crossed: set[str] = set()
            for path in paths.values():
                crossed |= _doomed(path)
            if crossed >= set(MOVES):
                break
        return paths

    def _watch_failover(self, started: float, affected: Mapping[int, tuple[str, ...]]) -> Failover:
        """Until the survivors take n2 for dead and every affected probe flow is
        pinned elsewhere (5 s at most): when each happened, after `started`."""
        failover = Failover()
        survivors = [node for node in NODES if node != DOOMED]
        deadline = started + 5.0
        next_status = started
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_status:  # a status is bigger than a flow table: less often
                next_status = now + 0.05
                for node in survivors:
                    if node not in failover.dead_after and not self._peer_alive(node, DOOMED):
                        failover.dead_after[node] = time.monotonic() - started
            current = self._probe_paths()
            elapsed = time.monotonic() - started
            for port in affected:
                path = current.get(port)
                if port not in failover.moved_after and path is not None and not _doomed(path):
                    failover.moved_after[port] = elapsed
                    failover.after[port] = path
            if len(failover.dead_after) == len(survivors) and len(failover.moved_after) == len(
                affected
            ):
                break
            time.sleep(0.01)
        return failover

    def _peer_alive(self, node: str, peer: str) -> bool:
        cluster = self._node(node).status()["cluster"] or {}
        return bool(((cluster.get("peers") or {}).get("peers") or {}).get(peer, {}).get("alive"))

    def _finish_probes(self, killed_at: float) -> dict[str, Any]:
        """Stop the probes and check that every request of every connection was
        answered, some after the kill."""
        results: list[dict[str, Any]] = []
        problems: list[str] = []
        for probe in self.probes:
            try:
                results += probe.finish(timeout=15)
            except StepError as exc:
                problems.append(str(exc))
        self.probes = []
        for result in results:
            if result["error"]:
                problems.append(f"probe connection :{result['sport']}: {result['error']}")
            elif result["last"] is None or result["last"] < killed_at:
                problems.append(f"probe connection :{result['sport']}: no answer after the kill")
        sent = sum(r["sent"] for r in results)
        answered = sum(r["answered"] for r in results)
        wait = max((r["max_gap"] for r in results), default=0.0)
        summary = (
            f"{len(results)} probe connections (a request every {PROBE_INTERVAL * 1000:g} ms) "
            f"got {answered} answers to {sent} requests, the longest wait {wait:.2f} s"
        )
        return {"results": results, "problems": problems, "summary": summary}

    def without_node(self) -> tuple[str, dict[str, Any]]:
        n1 = self._node("n1")
        before = set(client_flows(n1.flows(), CHAIN))
        fetched = self._fetch(4)
        measured = self._iperf()
        flows = {k: v for k, v in client_flows(n1.flows(), CHAIN).items() if k not in before}
        wrong = [
            path_text(path)
            for paths in flows.values()
            for path in paths
            if any(PAIR_NODE.get(pair) == DOOMED for pair in path)
        ]
        if not flows:
            raise StepError("n1 steered no new flow into the chain")
        if wrong:
            raise StepError(f"new flows pinned to {DOOMED}'s instances: {', '.join(wrong)}")
        detail = (
            f"{fetched} fetches OK; iperf3 {measured['detail']}; new flows: "
            f"{summarize_paths(flows.values())}"
        )
        return detail, {"fetches": fetched, **measured["data"], "paths": _paths_json(flows)}

    def counters(self) -> tuple[str, dict[str, Any]]:
        for node in NODES:
            if node not in self.killed:
                self._status(node)
        stats = self._read_flowcount()
        self.report.show(node_table(self.last_status, self.killed))
        self.report.show(hop_table(self.last_status))
        self.report.show(flowcount_table(stats))
        self.report.extra["nodes"] = self.last_status
        self.report.extra["flowcount"] = stats
        chained = len(client_flows(self._node("n1").flows(), CHAIN))
        return (
            f"{len(self.last_status)} nodes ({DOOMED}'s counters as it was killed), "
            f"{chained} chained flows on n1, nsh-flowcount: {stats['in']['packets']:,} packets in, "
            f"{stats['out']['packets']:,} out"
        ), {}

    def stop_all(self) -> tuple[str, dict[str, Any]]:
        problems = []
        codes = {}
        for node, process in self.nodes.items():
            if node in self.killed:
                continue
            try:
                codes[node] = process.stop()
            except NodeProcessError as exc:
                problems.append(str(exc))
                continue
            if codes[node] != 0:
                problems.append(f"{node} exited with status {codes[node]}")
        if self.flowcount is not None:
            self.flowcount.terminate()
            try:
                codes["nsh-flowcount"] = self.flowcount.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append("nsh-flowcount ignored SIGTERM")
            else:
                if codes["nsh-flowcount"] != 0:
                    problems.append(f"nsh-flowcount exited with status {codes['nsh-flowcount']}")
        if problems:
            raise StepError("; ".join(problems))
        return ", ".join(f"{name} exit 0" for name in codes), {"exit": codes}

    def stop_captures(self) -> tuple[str, dict[str, Any]]:
        files = self._stop_captures()
        missing = [str(path) for path in files.values() if not path.exists()]
        if missing:
            raise StepError(f"captures missing: {', '.join(missing)}")
        sizes = {node: path.stat().st_size for node, path in files.items()}
        detail = ", ".join(f"{path} ({sizes[node] / 1e6:.1f} MB)" for node, path in files.items())
        return detail, {"pcaps": {node: str(path) for node, path in files.items()}}

    def _stop_captures(self) -> dict[str, Path]:
        files = {}
        for node, (process, path) in self.captures.items():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            files[node] = path
        self.captures = {}
        return files

    # -- clean-up ------------------------------------------------------------------------
    def close(self) -> None:
        """Remove everything the demo made, whatever happened (the captures stay)."""
        for probe in self.probes:
            probe.kill()
        self.probes = []
        if self.flowcount is not None and self.flowcount.poll() is None:
            self.flowcount.kill()
            self.flowcount.wait()
        for process in self.nodes.values():
            process.kill()
        self._stop_captures()
        if self.lab is not None:
            self.lab.down()

    # -- helpers -------------------------------------------------------------------------
    def _lab(self) -> Lab:
        if self.lab is None:
            raise StepError("the lab is not up")
        return self.lab

    def _node(self, node: str) -> NodeProcess:
        process = self.nodes.get(node)
        if process is None or node in self.killed:
            raise StepError(f"node {node} is not running")
        return process

    def _status(self, node: str) -> dict[str, Any]:
        try:
            status = self._node(node).status()
        except (ControlError, OSError) as exc:
            raise StepError(f"node {node} does not answer: {exc}") from exc
        self.last_status[node] = status
        return status

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            wait_until(condition, timeout=timeout, what=what)
        except WaitTimeoutError as exc:
            raise StepError(str(exc)) from exc
        except (ControlError, OSError) as exc:
            raise StepError(f"{what}: {exc}") from exc

    def _read_flowcount(self) -> dict[str, Any]:
        """nsh-flowcount's counters: SIGUSR1 makes it write them."""
        process = self.flowcount
        if process is None:
            raise StepError("nsh-flowcount is not running")
        self.flowcount_stats.unlink(missing_ok=True)
        if process.poll() is not None:
            raise StepError(f"nsh-flowcount exited with status {process.returncode}")
        process.send_signal(signal.SIGUSR1)
        found: dict[str, Any] = {}

        def written() -> bool:
            try:
                found.update(json.loads(self.flowcount_stats.read_text()))
            except (OSError, ValueError):
                return False  # not yet, or half written
            return True

        self._wait(written, 10, "nsh-flowcount's counters")
        return found


@dataclass
class Failover:
    """What the demo saw after the kill, in seconds since it."""

    dead_after: dict[str, float] = field(default_factory=dict)
    """When each surviving node took the killed one for dead."""
    moved_after: dict[int, float] = field(default_factory=dict)
    """When each affected probe flow (by source port) was pinned elsewhere."""
    after: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Where it was pinned."""


def _doomed(path: Iterable[str]) -> set[str]:
    """The instances of `path` on the node the demo kills."""
    return {pair for pair in path if PAIR_NODE.get(pair) == DOOMED}


def _covers(paths: Callable[[], Mapping[int, object]], ports: set[int]) -> bool:
    return set(paths()) >= ports


def _paths_json(flows: Mapping[FlowKey, set[tuple[str, ...]]]) -> list[dict[str, Any]]:
    return [
        {"flow": f"{k[0]}:{k[3]} → {k[1]}:{k[4]}", "paths": [list(p) for p in sorted(paths)]}
        for k, paths in sorted(flows.items())
    ]
