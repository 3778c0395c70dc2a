"""`pktchain fn` between real hosts: the examples of examples/pipes/ run as a user runs them.

Each test brings up examples/pipes/fn-lab.yaml (A, 192.168.0.1, reaches B,
203.0.113.2, only through M) and runs one example script in M: chain.sh (a
firewall and a flow monitor, both directions through named pipes), nat.sh
(/dev/stdpkt's NAT example) or shard.sh (/dev/stdpkt's load balancing: a firewall in
two instances, each keeping half of the flows). Real ping and curl go across;
SIGUSR1 to the script's process group asks the functions for their counters,
SIGTERM stops everything, and each function prints its counters at exit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from pktchain.functions.sdk import Packet
from pktchain.lab import CommandResult, Lab, LabHost, wait_until
from support import paths

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = pytest.mark.datapath


LabFactory = Callable[..., Lab]

EXAMPLES = paths.EXAMPLES / "pipes"
A, B, EXTERNAL = "192.168.0.1", "203.0.113.2", "203.0.113.1"
TIMEOUT = 20.0


def fn_lab(lab_factory: LabFactory) -> Lab:
    """The examples' lab, its set-up commands done (the lab starts them in the background)."""
    lab = lab_factory(EXAMPLES / "fn-lab.yaml")
    for spec in lab.topology.hosts:
        for argv in spec.commands:
            if argv[0] in ("ip", "ethtool"):  # idempotent: run again, and waited for
                lab.host(spec.name).run(list(argv), timeout=10, check=True)
    lab.host("b").wait_listening(80, timeout=10)
    return lab


def capturing(on: LabHost, count: int) -> None:
    """Wait until `count` packet sockets bound with ETH_P_ALL exist in `on` (the reads are open)."""

    def ready() -> bool:
        table = on.run(["cat", "/proc/net/packet"], timeout=5).stdout.splitlines()[1:]
        return sum(line.split()[3] == "0003" for line in table) >= count

    wait_until(ready, timeout=10, what=f"{on.name}: {count} capture sockets")


class Script:
    """An example script running in a host, its stderr (and stdout) in a file."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def text(self) -> str:
        return self.log.read_text()

    def signal(self, signum: int) -> None:
        """To the whole pipeline: the script leads its process group."""
        os.killpg(self.process.pid, signum)

    def wait_for(self, *needles: str) -> None:
        wait_until(
            lambda: all(needle in self.text() for needle in needles),
            timeout=10,
            what=f"{needles} in the log of {self.process.args}",
        )

    def lines(self, prefix: str) -> list[str]:
        return [line for line in self.text().splitlines() if line.startswith(prefix)]


@contextmanager
def running(on: LabHost, tmp_path: Path, *argv: str, captures: int = 2) -> Iterator[Script]:
    """`sh examples/pipes/ARGV...` in `on`, with this interpreter's pktchain on the PATH;
    stopped by SIGTERM to its group at the end, which must end it with status 0."""
    log = tmp_path / f"{Path(argv[0]).stem}.log"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    with open(log, "wb") as out:
        process = on.popen(
            ["sh", str(EXAMPLES / argv[0]), *argv[1:]],
            stdout=out,
            stderr=out,
            env=env,
            cwd=tmp_path,
        )
    script = Script(process, log)
    try:
        capturing(on, captures)
        yield script
        script.signal(signal.SIGTERM)
        try:
            status = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{argv[0]} did not stop on SIGTERM\n{script.text()}")
        assert status == 0, f"{argv[0]}: status {status}\n{script.text()}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ping(on: LabHost, address: str, count: int = 3) -> CommandResult:
    return on.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", address], timeout=15)


def curl(on: LabHost, url: str, *options: str) -> tuple[int, str]:
    """curl's exit status and what it wrote: `code size` of the page."""
    result = on.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            *options,
            url,
        ],
        timeout=20,
    )
    return result.returncode, result.stdout + result.stderr


def counters(line: str) -> dict[str, int]:
    """`name n` pairs after `counters:` in a function's text summary."""
    text = line.split("; counters: ", 1)[1].split(";", 1)[0]
    return {name: int(n) for name, n in (item.rsplit(" ", 1) for item in text.split(", "))}


# --------------------------------------------------------------------------


def test_a_firewall_and_a_flow_monitor_both_ways_carry_ping_and_curl(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = fn_lab(lab_factory)
    a, m, b = lab.host("a"), lab.host("m"), lab.host("b")
    flows = tmp_path / "flows.jsonl"
    with running(m, tmp_path, "chain.sh", "a", "b", str(flows)) as chain:
        answer = ping(a, B)
        assert answer.ok and " 0% packet loss" in answer.stdout, answer.stdout
        status, page = curl(a, f"http://{B}/")
        assert status == 0 and page.startswith("200 "), page
        started = time.monotonic()
        status, refused = curl(a, f"http://{B}:23/")
        assert status == 7, refused  # the firewall's RST: refused at once, not timed out
        assert time.monotonic() - started < 5
        assert not ping(b, A, count=1).ok
        # Counters on demand, while the chain runs: from both functions.
        chain.signal(signal.SIGUSR1)
        chain.wait_for("pktchain fn firewall: in: ", "pktchain fn flow-monitor: in: ")
    firewall = chain.lines("pktchain fn firewall: in: ")
    monitor = chain.lines("pktchain fn flow-monitor: in: ")
    assert len(firewall) == 2 and firewall[-1].endswith("; stopped by SIGTERM"), firewall
    assert len(monitor) == 2 and monitor[-1].endswith("; stopped by SIGTERM"), monitor
    judged = counters(firewall[-1])
    assert judged["rejected"] == 1 and judged["reject-tcp-reset"] == 1
    assert judged["drop-policy"] == 1  # B's echo request
    assert judged["accepted"] >= 6 + 6  # 3 pings each way, and a whole HTTP exchange
    records = [json.loads(line) for line in flows.read_text().splitlines()]
    web = [r for r in records if r.get("destinationTransportPort") == 80]
    assert len(web) == 1 and web[0]["flowEndReason"] == 3  # ended by FINs
    assert web[0]["sourceIPv4Address"] == A and web[0]["reversePacketTotalCount"] >= 3
    echo = [r for r in records if r["protocolIdentifier"] == 1 and r["sourceIPv4Address"] == A]
    assert len(echo) == 1
    assert (echo[0]["packetTotalCount"], echo[0]["reversePacketTotalCount"]) == (3, 3)
    assert "pktchain pipe read: a: " in chain.text() and "0 dropped by the kernel" in chain.text()


def test_seed_nat_example_translates_both_ways(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = fn_lab(lab_factory)
    a, m = lab.host("a"), lab.host("m")
    with running(m, tmp_path, "nat.sh", "a", "b", EXTERNAL) as nat:
        answer = ping(a, B)
        assert answer.ok and " 0% packet loss" in answer.stdout, answer.stdout
        status, page = curl(a, f"http://{B}/")
        assert status == 0 and page.startswith("200 "), page
    # B saw the request come from the NAT's external address.
    served = "".join(path.read_text() for path in lab.log_dir.glob("b.*.log"))
    assert f"{EXTERNAL} - - " in served and '"GET / HTTP/1.1" 200' in served
    assert f"{A} - - " not in served
    (summary,) = nat.lines("pktchain fn nat: in: ")
    translated = counters(summary)["translated"]
    assert translated >= 6 + 6, summary


def load_shard() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shard", EXAMPLES / "shard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_balancing_across_two_firewall_instances(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    shard = load_shard()

    def shard_of(port: int) -> int:
        syn = Ether() / IP(src=A, dst=B) / TCP(sport=port, dport=80, flags="S")
        return int(shard.shard_of(Packet.from_ethernet(bytes(syn), "ingress"), 2))

    # Two connections for each instance, from source ports the shard hash gives it.
    ports: dict[int, list[int]] = {0: [], 1: []}
    for port in range(41000, 42000):
        if len(ports[shard_of(port)]) < 2:
            ports[shard_of(port)].append(port)
    lab = fn_lab(lab_factory)
    a, m = lab.host("a"), lab.host("m")
    config = str(EXAMPLES / "firewall.yaml")
    with running(m, tmp_path, "shard.sh", "a", "b", "2", "firewall", "--config", config):
        answer = ping(a, B)
        assert answer.ok and " 0% packet loss" in answer.stdout, answer.stdout
        for port in ports[0] + ports[1]:
            status, page = curl(a, f"http://{B}/", "--local-port", str(port))
            assert status == 0 and page.startswith("200 "), (port, page)
    log = (tmp_path / "shard.log").read_text()
    instances = {}
    for index in (0, 1):
        (summary,) = [
            line
            for line in log.splitlines()
            if line.startswith(f"pktchain fn firewall#{index}: in: ")
        ]
        instances[index] = counters(summary)
    # Each instance tracked its two connections (and one of them the ping), both ways.
    assert instances[0]["conn-new"] + instances[1]["conn-new"] == 5, instances
    assert {instances[0]["conn-new"], instances[1]["conn-new"]} == {2, 3}, instances
    assert all(counts["accepted"] >= 2 * 6 for counts in instances.values()), instances
    assert all(counts.get("state-invalid", 0) == 0 for counts in instances.values()), instances
