"""`pktchain demo router`: the virtual-routers thesis's router (its chapter 5), on real hosts.

A router in the node has a public interface on an "outside" network, where a
web server and a TCP service run, and a private network 10.0.0.0/24 with one
host.  The inside host fetches a page from the outside (through the NAT),
pings it and traceroutes it (UDP and ICMP: the router appears as a hop); an
outside host then reaches the inside host's service through its automatic
forwarding port and through an admin rule.  The NAT table and the host table
are printed.  It exits 0 only when all of that worked.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pktchain.demo.report import DemoReport, StepError, fail, start_node, stop_node
from pktchain.lab import Lab, LabError, LabHost, node_host_spec
from pktchain.node.process import NodeProcess

INSIDE = "10.0.0.10"
ROUTER_INSIDE = "10.0.0.1"
ROUTER_OUTSIDE = "198.51.100.2"
WEB = "198.51.100.20"
SERVICE = "198.51.100.30"
UPSTREAM = "198.51.100.1"
ADMIN_PORT = 8080
PAGE = "Hello from the outside web server.\n"
INSIDE_PAGE = "Hello from the inside host, through port forwarding.\n"
BANNER = "SSH-2.0-pktchain-demo inside host\n"

# `python -m http.server --bind` looks its address up in DNS (socket.getfqdn);
# behind a router that query would wander into the lab. These serve without it.
HTTP_SERVER = (
    "import http.server, socketserver, sys\n"
    "socketserver.TCPServer.allow_reuse_address = True\n"
    "address = (sys.argv[1], int(sys.argv[2]))\n"
    "socketserver.TCPServer(address, http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)
BANNER_SERVER = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(sys.argv[3].encode()); c.close()\n"
)
BANNER_CLIENT = (
    "import socket, sys\n"
    "c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)\n"
    "print(c.recv(200).decode(), end='')\n"
)


def router_topology(lab_name: str) -> dict[str, Any]:
    return {
        "lab": lab_name,
        "hosts": {
            "inside": node_host_spec("private", "02:00:00:00:01:0a", f"{INSIDE}/24", ROUTER_INSIDE),
            "web": node_host_spec("outside", "02:00:00:00:02:14", f"{WEB}/24"),
            "service": node_host_spec("outside", "02:00:00:00:02:1e", f"{SERVICE}/24"),
            "upstream": node_host_spec("outside", "02:00:00:00:02:01", f"{UPSTREAM}/24"),
        },
    }


ROUTER: dict[str, Any] = {
    "name": "router",
    "interfaces": {
        "private": {"network": "private", "mac": "02:00:00:00:01:01", "address": "10.0.0.1/24"},
        "public": {
            "network": "outside",
            "mac": "02:00:00:00:02:02",
            "address": f"{ROUTER_OUTSIDE}/24",
            "external": True,
            "gateway": UPSTREAM,
        },
    },
    "nat": {},
    "port_forwards": [
        {"proto": "tcp", "external_port": ADMIN_PORT, "inside_ip": INSIDE, "inside_port": 80}
    ],
    "auto_forward_service_port": 22,
}


def serve_http(host: LabHost, root: Path, address: str, page: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "index.html").write_text(page)
    host.popen(["python3", "-c", HTTP_SERVER, address, "80"], cwd=root)
    host.wait_listening(80, timeout=10)


def run_router_demo(*, json_output: bool = False) -> int:
    report = DemoReport("pktchain demo router", json_output=json_output)
    name = f"demo-router-{secrets.token_hex(3)}"
    with tempfile.TemporaryDirectory(prefix="pktchain-demo-") as tmp:
        workdir = Path(tmp)
        topology_file = workdir / "topology.yaml"
        topology_file.write_text(yaml.safe_dump(router_topology(name), sort_keys=False))
        router_file = workdir / "router.yaml"
        router_file.write_text(yaml.safe_dump(ROUTER, sort_keys=False))
        node = NodeProcess(
            name,
            topology=topology_file,
            log_path=workdir / "node.log",
            args=("--router", str(router_file)),
        )
        try:
            with Lab.up(topology_file) as lab:
                report.step("start the node with the router", lambda: start_node(node))
                if report.ok:
                    _walk(report, lab, node, workdir)
                    report.step("stop the node (SIGTERM)", lambda: stop_node(node))
        except (LabError, OSError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            report.step("lab", lambda: fail(problem))
        finally:
            node.kill()
    return report.finish()


def _walk(report: DemoReport, lab: Lab, node: NodeProcess, workdir: Path) -> None:
    inside, outside = lab.host("inside"), lab.host("service")

    def services() -> tuple[str, dict[str, Any]]:
        serve_http(lab.host("web"), workdir / "web", WEB, PAGE)
        serve_http(inside, workdir / "inside", INSIDE, INSIDE_PAGE)
        lab.host("service").popen(["python3", "-c", BANNER_SERVER, SERVICE, "22", "outside\n"])
        inside.popen(["python3", "-c", BANNER_SERVER, INSIDE, "22", BANNER])
        inside.wait_listening(22, timeout=10)
        return f"web on {WEB}:80, inside web on {INSIDE}:80, inside service on :22", {}

    report.step("start the services", services)

    def fetch() -> tuple[str, dict[str, Any]]:
        got = _run(inside, ["curl", "-sS", "--max-time", "5", f"http://{WEB}/"])
        if got != PAGE:
            raise StepError(f"curl http://{WEB}/ gave {got!r}")
        return f"inside curl http://{WEB}/ → {got.strip()!r}", {}

    report.step("inside fetches a page from the outside (NAT)", fetch)

    def ping() -> tuple[str, dict[str, Any]]:
        out = _run(inside, ["ping", "-c", "3", "-i", "0.2", "-W", "2", WEB])
        summary = next((line for line in out.splitlines() if "transmitted" in line), out)
        return summary, {}

    report.step("inside pings the outside", ping)

    for mode, flags in (("UDP", []), ("ICMP", ["-I"])):

        def trace(flags: list[str] = flags) -> tuple[str, dict[str, Any]]:
            argv = ["traceroute", "-n", "-N", "1", "-q", "1", "-w", "2", "-m", "5", *flags, WEB]
            out = _run(inside, argv)
            hops = [line.split()[1] for line in out.splitlines()[1:]]
            if hops != [ROUTER_INSIDE, WEB]:
                raise StepError(f"hops {hops}, expected the router then {WEB}")
            return f"hops: {' → '.join(hops)}", {"hops": hops}

        report.step(f"inside traceroutes the outside ({mode}): the router is a hop", trace)

    def automatic() -> tuple[str, dict[str, Any]]:
        (host,) = [h for h in node.router()["hosts"] if h["ip"] == INSIDE]
        port = host["forward_port"]
        got = _run(outside, ["python3", "-c", BANNER_CLIENT, ROUTER_OUTSIDE, str(port)])
        if got != BANNER:
            raise StepError(f"{ROUTER_OUTSIDE}:{port} gave {got!r}")
        return f"outside → {ROUTER_OUTSIDE}:{port} → {INSIDE}:22: {got.strip()!r}", {"port": port}

    report.step("outside reaches the inside service by its automatic port", automatic)

    def admin() -> tuple[str, dict[str, Any]]:
        url = f"http://{ROUTER_OUTSIDE}:{ADMIN_PORT}/"
        got = _run(outside, ["curl", "-sS", "--max-time", "5", url])
        if got != INSIDE_PAGE:
            raise StepError(f"curl {url} gave {got!r}")
        return f"outside curl {url} → {INSIDE}:80: {got.strip()!r}", {}

    report.step("outside reaches the inside web server by the admin rule", admin)

    def tables() -> tuple[str, dict[str, Any]]:
        from pktchain.node.report import print_router

        router = node.router()
        if not report.json_output:
            print_router(router, report.console)
        report.extra["router"] = router
        return f"{len(router['nat'])} NAT mappings, {len(router['hosts'])} hosts", {}

    report.step("NAT table and host table", tables)


def _run(host: LabHost, argv: list[str]) -> str:
    result = host.run(argv, timeout=30)
    if not result.ok:
        raise StepError(
            f"{' '.join(argv[:2])}… exited {result.returncode}: {result.stderr.strip()}"
        )
    return result.stdout
