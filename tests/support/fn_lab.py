"""The lab the native-function tests share: a chain of a node's functions between two hosts.

h1 (10.0.0.1) and h2 (10.0.0.2, serving HTTP) are node ports in network
``default``; the functions a test plugs in (from a ``--functions`` file) form
a symmetric port chain, one port pair group each, that a flow classifier
fills with every IP packet from h1 to h2 (and, symmetric, back). Extra hosts
without an address (``h3`` in network ``tap``) stand at a function's other
interfaces. IPv6 is off, so that the hosts send only what the tests make them
send.
"""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from scapy.packet import Packet
from scapy.utils import rdpcap

from pktchain.lab import Lab, LabHost, WaitTimeoutError, wait_until
from pktchain.node.client import ChainingClient
from pktchain.node.control import request
from pktchain.node.process import NodeProcess

NodeLab = Callable[..., tuple[Lab, NodeProcess]]

H1, H2 = "10.0.0.1", "10.0.0.2"
H1_MAC, H2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
H3_MAC = "02:00:00:00:00:03"
"""The first watcher's MAC."""
NO_IPV6 = {"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1}
PAGE = "index.html"


def topology(watchers: dict[str, str]) -> dict[str, Any]:
    """h1 and h2 in ``default``, and each watcher host (name → network) without address."""

    def host(network: str, mac: str, address: str | None) -> dict[str, Any]:
        eth0: dict[str, Any] = {"attach": "node", "network": network, "mac": mac}
        if address is not None:
            eth0["addresses"] = [f"{address}/24"]
        return {"sysctls": NO_IPV6, "interfaces": {"eth0": eth0}}

    hosts = {"h1": host("default", H1_MAC, H1), "h2": host("default", H2_MAC, H2)}
    for n, (name, network) in enumerate(watchers.items(), start=3):
        hosts[name] = host(network, f"02:00:00:00:00:{n:02x}", None)
    return {"lab": "fn", "hosts": hosts}


def start(
    node_lab: NodeLab,
    tmp_path: Path,
    functions: list[dict[str, Any]],
    *,
    watchers: dict[str, str] | None = None,
    page_size: int = 1000,
) -> tuple[Lab, NodeProcess]:
    """A node running `functions`, chained between h1 and h2.

    Each function (a mapping as in a ``--functions`` file) is plugged in over the
    REST API, whose JSON keeps the configuration's types. h2 serves
    ``/index.html`` of `page_size` bytes over HTTP on port 80.
    """
    lab, node = node_lab(topology(watchers or {}))
    for function in functions:
        plug(node, function)
    chain(ChainingClient(node.control), [function["name"] for function in functions])
    serve(lab, tmp_path, page_size)
    return lab, node


def start_from_file(
    node_lab: NodeLab, tmp_path: Path, path: Path, *, page_size: int = 1000
) -> tuple[Lab, NodeProcess]:
    """A node running the functions of the ``--functions`` file `path`, chained in its order."""
    lab, node = node_lab(topology({}), args=("--functions", str(path)))
    names = [function["name"] for function in yaml.safe_load(path.read_text())["functions"]]
    chain(ChainingClient(node.control), names)
    serve(lab, tmp_path, page_size)
    return lab, node


def serve(lab: Lab, tmp_path: Path, page_size: int) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / PAGE).write_bytes(bytes(range(256)) * (page_size // 256) + b"x" * (page_size % 256))
    lab.host("h2").popen(["python3", "-m", "http.server", "80", "--bind", H2], cwd=www)
    lab.host("h2").wait_listening(80, timeout=10)


def rest(node: NodeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One call to the node's REST API: (HTTP status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        node.api_url() + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def plug(node: NodeProcess, function: dict[str, Any]) -> dict[str, Any]:
    """POST /v2.0/pktchain/functions: the function's status once plugged in."""
    code, body = rest(node, "POST", "/v2.0/pktchain/functions", {"function": function})
    assert code == 201, body
    return dict(body["function"])


def chain(
    api: ChainingClient,
    names: list[str],
    *,
    name: str = "functions",
    source: str = "h1:eth0",
    destination: str | None = "h2:eth0",
    symmetric: bool = True,
    **match: Any,
) -> None:
    """A port chain through the functions `names` in order (one group each) for the
    flows from port `source` to `destination` that `match` names (flow classifier
    fields); by default every IPv4 packet from h1 to h2, and back."""
    pid = api.port_id
    groups = []
    for function in names:
        pair = api.create(
            "port_pairs",
            name=f"pp-{function}",
            ingress=pid(f"{function}:ingress"),
            egress=pid(f"{function}:egress"),
        )
        groups.append(
            api.create("port_pair_groups", name=f"g-{function}", port_pairs=[pair["id"]])["id"]
        )
    fields = match or {"ethertype": "IPv4"}
    if destination is not None:
        fields["logical_destination_port"] = pid(destination)
    classifier = api.create(
        "flow_classifiers", name=f"fc-{name}", logical_source_port=pid(source), **fields
    )
    api.create(
        "port_chains",
        name=name,
        port_pair_groups=groups,
        flow_classifiers=[classifier["id"]],
        chain_parameters={"symmetric": symmetric},
    )


def curl(lab: Lab) -> dict[str, int]:
    """h1 fetches the page; curl's own account of the bytes it sent and received."""
    result = lab.host("h1").run(
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_request} %{size_header} %{size_download}",
            f"http://{H2}/{PAGE}",
        ],
        timeout=20,
    )
    assert result.ok, result.stderr
    code, request_size, header, body = map(int, result.stdout.split())
    assert code == 200
    return {"request": request_size, "header": header, "body": body}


def ping(lab: Lab, count: int = 3) -> None:
    result = lab.host("h1").run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", H2])
    assert result.ok, result.stdout + result.stderr


def function_status(node: NodeProcess, name: str) -> dict[str, Any]:
    """What ``pktchain node functions`` shows for one function."""
    reply = request(node.control, "functions")
    for status in reply["functions"]:
        if status["name"] == name:
            return dict(status)
    raise KeyError(f"node {node.name} runs no function {name!r}")


TCPDUMP_REPORT = re.compile(
    r"(\d+) packets? captured, (\d+) packets? received by filter, (\d+) packets? dropped by kernel"
)
"""The counts tcpdump writes to stderr when sent SIGUSR1."""


@contextmanager
def capture(host: LabHost, iface: str, path: Path, bpf: str = "") -> Iterator[list[Packet]]:
    """tcpdump in `host` while the body runs; the list fills with what it saw.

    The body starts once tcpdump says it is listening (its filter set, its
    signal handlers in place). After it, tcpdump is stopped only when it reports
    (asked with SIGUSR1) that it has written every frame the kernel queued for
    it: a SIGTERM discards the frames still queued, which a loaded machine can
    leave there for longer than any fixed pause.
    """
    packets: list[Packet] = []
    errors = path.with_name(path.name + ".stderr")
    argv = ["tcpdump", "-i", iface, "-n", "--immediate-mode", "-U", "-w", str(path)]
    with errors.open("wb") as sink:
        process = host.popen([*argv, *bpf.split()], stderr=sink)
    wait_until(
        lambda: "listening on" in errors.read_text(),
        timeout=10,
        what=f"tcpdump in {host.name} to start",
    )
    asked = 0
    settled: list[tuple[str, ...]] = []

    def written_all() -> bool:
        nonlocal asked
        if process.poll() is not None:
            raise AssertionError(f"tcpdump in {host.name} exited: {errors.read_text()}")
        reports = TCPDUMP_REPORT.findall(errors.read_text())
        if len(reports) < asked:
            return False  # the last SIGUSR1 is not answered yet
        if asked:
            captured, received, dropped = map(int, reports[-1])
            if captured + dropped >= received:
                return True
            # The kernel may count a packet "received by filter" that libpcap's
            # own filter then refuses, so that the sum never catches up: counts
            # that stay the same over three answers 0.1 s apart are all there is.
            settled.append(reports[-1])
            if len(settled) >= 3 and len(set(settled[-3:])) == 1:
                return True
            time.sleep(0.1)
        process.send_signal(signal.SIGUSR1)
        asked = len(reports) + 1
        return False

    try:
        yield packets
        time.sleep(0.3)  # frames the body set off (a last ACK) reach the interface
        try:
            wait_until(written_all, timeout=10, what=f"tcpdump in {host.name} to write all")
        except WaitTimeoutError as exc:  # what it said, to tell a stuck tcpdump from a stream
            raise AssertionError(f"{exc}; it reported: {errors.read_text()[-600:]!r}") from None
    finally:
        process.terminate()
        process.wait(timeout=10)
    packets.extend(rdpcap(str(path)))
