"""Labs in real network namespaces: links, addresses, routes, commands, teardown.

`ip -j` (JSON) and ping are used as independent oracles of what the lab set up
through netlink. Traffic only goes between the namespaces each test makes.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from pktchain.lab import (
    CommandFailedError,
    CommandTimeoutError,
    Lab,
    LabExistsError,
    LabHost,
    LabOSError,
    TcpConnection,
    TcpSocketState,
    add_routes,
    configure_interface,
    configure_node_port,
    down,
    namespaces,
    wait_until,
)
from pktchain.lab.journal import Journal, journal_path
from support.paths import EXAMPLES

LabFactory = Callable[..., Lab]

TWO_HOSTS = {
    "hosts": {
        "h1": {
            "interfaces": {
                "eth0": {
                    "attach": "h2.eth0",
                    "mac": "02:00:00:00:00:01",
                    "mtu": 1400,
                    "addresses": ["10.0.0.1/24", "fd00::1/64"],
                }
            }
        },
        "h2": {"interfaces": {"eth0": {"addresses": ["10.0.0.2/24", "fd00::2/64"]}}},
    }
}


def ip_json(host: LabHost, *args: str) -> Any:
    result = host.run(["ip", "-j", *args], timeout=5).check()
    return json.loads(result.stdout)


def ping(host: LabHost, address: str, *extra: str) -> subprocess.CompletedProcess[str] | Any:
    return host.run(["ping", "-c", "1", "-W", "2", *extra, address], timeout=10)


def test_veth_between_two_hosts_carries_ipv4_and_ipv6(lab_factory: LabFactory) -> None:
    lab = lab_factory(TWO_HOSTS)
    h1, h2 = lab.host("h1"), lab.host("h2")
    assert ping(h1, "10.0.0.2").ok
    assert ping(h1, "fd00::2").ok
    assert ping(h2, "10.0.0.1").ok
    (link,) = ip_json(h1, "link", "show", "dev", "eth0")
    assert link["address"] == "02:00:00:00:00:01"
    assert link["mtu"] == 1400
    assert link["operstate"] == "UP"
    (loopback,) = ip_json(h1, "link", "show", "dev", "lo")
    assert "UP" in loopback["flags"]


def test_bridge_joins_three_hosts(lab_factory: LabFactory) -> None:
    lab = lab_factory(EXAMPLES / "lab-bridge.yaml", start_commands=False)
    for source, target in (("h1", "10.0.10.2"), ("h2", "10.0.10.3"), ("h3", "10.0.10.1")):
        assert ping(lab.host(source), target).ok, (source, target)
    # The bridge lives in the lab's fabric namespace, not in the root one.
    assert lab.topology.fabric_netns is not None
    assert namespaces.netns_exists(lab.topology.fabric_netns)
    neighbours = ip_json(lab.host("h1"), "neigh", "show", "dev", "eth0")
    learned = {entry["dst"]: entry.get("lladdr") for entry in neighbours}
    assert learned["10.0.10.2"] == "02:00:00:00:0a:02"


def test_default_gateway_routes_through_the_router(lab_factory: LabFactory) -> None:
    lab = lab_factory(EXAMPLES / "lab-routed.yaml", start_commands=False)
    client = lab.host("client")
    assert ping(client, "10.0.2.2").ok
    assert ping(client, "fd00:2::2").ok
    # With a TTL of 1 the router answers "time exceeded": the path goes through it.
    expired = ping(client, "10.0.2.2", "-t", "1")
    assert not expired.ok
    assert "10.0.1.1" in expired.stdout
    assert lab.host("router").sysctl("net.ipv4.ip_forward") == "1"
    (route,) = ip_json(client, "-4", "route", "show", "default")
    assert (route["gateway"], route["dev"]) == ("10.0.1.1", "eth0")


def test_background_commands_serve_and_are_killed_on_down(lab_factory: LabFactory) -> None:
    lab = lab_factory(EXAMPLES / "lab-routed.yaml")
    server = lab.host("server")
    server.wait_listening(8080, timeout=10)
    fetched = lab.host("client").run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://[fd00:2::2]:8080/"],
        timeout=10,
    )
    assert fetched.stdout == "200", fetched
    (process,) = lab.processes
    assert namespaces.process_netns(process.pid) == namespaces.netns_id(server.netns)
    log = lab.log_dir / "server.1.log"
    assert log.exists()
    teardown = lab.down()
    assert process.pid in teardown.processes
    assert process.poll() is not None
    assert not log.exists()


def test_run_returns_status_and_output(lab_host: LabHost) -> None:
    result = lab_host.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok
    with pytest.raises(CommandFailedError, match="status 3: err"):
        result.check()
    assert lab_host.run(["cat"], input="fed").stdout == "fed"
    with pytest.raises(CommandFailedError):
        lab_host.run(["false"], check=True)


def test_run_kills_the_command_and_its_children_on_timeout(lab_host: LabHost) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as caught:
        lab_host.run(["sh", "-c", "echo begun; sleep 30 & sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert caught.value.stdout == "begun\n"
    ns_id = namespaces.netns_id(lab_host.netns)
    assert ns_id is not None
    wait_until(
        lambda: not namespaces.pids_in_netns([ns_id]), timeout=5, what="timed-out command gone"
    )


def test_run_sees_the_host_namespace(lab_host: LabHost) -> None:
    links = ip_json(lab_host, "link", "show")
    assert [link["ifname"] for link in links] == ["lo"]


def test_popen_processes_are_killed_on_teardown(lab_factory: LabFactory) -> None:
    lab = lab_factory({"hosts": {"h": {}}})
    host = lab.host("h")
    # A process that ignores SIGTERM, and one that forked a child.
    stubborn = host.popen(["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"])
    forked = host.popen(["sh", "-c", "sleep 300 & wait"])
    ns_id = namespaces.netns_id(host.netns)
    assert ns_id is not None
    wait_until(
        lambda: len(namespaces.pids_in_netns([ns_id]).get(ns_id, [])) >= 3,
        timeout=5,
        what="processes started",
    )
    teardown = lab.down()
    assert {stubborn.pid, forked.pid} <= set(teardown.processes)
    assert stubborn.poll() is not None and forked.poll() is not None
    assert not namespaces.pids_in_netns([ns_id])
    assert not namespaces.netns_exists(host.netns)


def test_sockets_and_sysctls_belong_to_the_host(lab_factory: LabFactory) -> None:
    lab = lab_factory(TWO_HOSTS)
    h1, h2 = lab.host("h1"), lab.host("h2")
    with h2.socket() as receiver, h1.socket() as sender:
        receiver.bind(("10.0.0.2", 0))
        receiver.settimeout(5)
        sender.sendto(b"hello", receiver.getsockname())
        data, source = receiver.recvfrom(100)
    assert (data, source[0]) == (b"hello", "10.0.0.1")
    assert h1.sysctl("net.ipv4.ip_forward", 1) == "1"
    assert h2.sysctl("net.ipv4.ip_forward") == "0"
    assert namespaces.read_sysctl(h1.netns, "net.ipv6.conf.eth0.accept_dad") == "0"


def test_tcp_connections_show_each_end_until_it_is_closed(lab_factory: LabFactory) -> None:
    lab = lab_factory(TWO_HOSTS)
    h1, h2 = lab.host("h1"), lab.host("h2")

    def states(host: LabHost, port: int) -> list[TcpSocketState]:
        return [connection.state for connection in host.tcp_connections(port)]

    with h2.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("10.0.0.2", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert h2.tcp_connections(port) == []  # a listener is no connection
        with h1.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.settimeout(5)
            client.connect(("10.0.0.2", port))
            server, _ = listener.accept()
            near, far = ("10.0.0.1", client.getsockname()[1]), ("10.0.0.2", port)
            assert h1.tcp_connections(port) == [
                TcpConnection(near, far, TcpSocketState.ESTABLISHED)
            ]
            assert h2.tcp_connections(port) == [
                TcpConnection(far, near, TcpSocketState.ESTABLISHED)
            ]
            server.close()  # h2 closes first (RFC 9293 §3.6, case 1)
            wait_until(
                lambda: (
                    states(h1, port) == [TcpSocketState.CLOSE_WAIT]
                    and states(h2, port) == [TcpSocketState.FIN_WAIT2]
                ),
                timeout=5,
                what="h2's FIN acknowledged",
            )
        wait_until(
            lambda: states(h1, port) == [] and states(h2, port) == [TcpSocketState.TIME_WAIT],
            timeout=5,
            what="h1's FIN acknowledged",
        )


def test_node_ports_are_configured_by_whoever_creates_them(lab_factory: LabFactory) -> None:
    lab = lab_factory(
        {
            "hosts": {
                "a": {
                    "interfaces": {
                        "n0": {
                            "attach": "node",
                            "mac": "02:00:00:00:05:01",
                            "mtu": 1300,
                            "addresses": ["10.5.0.1/24"],
                        }
                    },
                    "routes": [{"to": "10.6.0.0/16", "via": "10.5.0.2"}],
                    "sysctls": {"net.ipv4.conf.n0.forwarding": 1},
                },
                "b": {"interfaces": {"n0": {"attach": "node"}}},
            }
        }
    )
    a, b = lab.host("a"), lab.host("b")
    # The lab made the namespaces but not the ports.
    assert [link["ifname"] for link in ip_json(a, "link", "show")] == ["lo"]
    # Stand in for the node: make a veth between the two hosts with `ip`.
    subprocess.run(
        ["ip", "-n", a.netns, "link", "add", "n0", "type", "veth", "peer", "n0", "netns", b.netns],
        check=True,
    )
    port_a, _ = lab.topology.node_ports()
    configure_node_port(port_a)  # a veth has no carrier until both ends are up
    configure_interface(b.netns, "n0", addresses=["10.5.0.2/24", "fd00:5::2/64"], wait=5)
    add_routes(b.netns, [{"to": "default", "via": "10.5.0.1"}])
    assert ping(a, "10.5.0.2").ok
    (link,) = ip_json(a, "link", "show", "dev", "n0")
    assert (link["address"], link["mtu"]) == ("02:00:00:00:05:01", 1300)
    (route,) = ip_json(a, "route", "show", "10.6.0.0/16")
    assert (route["gateway"], route["dev"]) == ("10.5.0.2", "n0")
    assert a.sysctl("net.ipv4.conf.n0.forwarding") == "1"
    (default,) = ip_json(b, "-4", "route", "show", "default")
    assert default["gateway"] == "10.5.0.1"
    # Applying twice is harmless (the node may restart).
    configure_node_port(port_a, wait=5)
    with pytest.raises(LabOSError) as caught:
        configure_interface(b.netns, "nosuch", mtu=1500)
    assert caught.value.errno == errno.ENODEV
    assert caught.value.filename == f"{b.netns}/nosuch"


def test_a_lab_name_is_taken_until_down(lab_factory: LabFactory) -> None:
    lab = lab_factory(TWO_HOSTS)
    with pytest.raises(LabExistsError):
        Lab.up(lab.topology)
    assert ping(lab.host("h1"), "10.0.0.2").ok


def test_a_failing_up_removes_what_it_made(lab_factory: LabFactory, unique_name: Any) -> None:
    name = unique_name("fail")
    topology = {
        "lab": name,
        "hosts": {"h": {"sysctls": {"net.ipv4.no_such_setting": 1}}, "g": {}},
    }
    with pytest.raises(LabOSError) as caught:
        Lab.up(topology)
    assert caught.value.errno == errno.ENOENT
    assert "net.ipv4.no_such_setting" in str(caught.value)
    assert not [ns for ns in namespaces.list_netns() if name in ns]
    assert not journal_path(name).exists()


def test_down_removes_a_half_made_lab(unique_name: Any) -> None:
    """What a crash of `up` leaves: journaled namespaces, one not yet
    journaled, and a process in one of them."""
    name = unique_name("half")
    journal = Journal.create(name, "test")
    first, second = f"pc-{name}.h1", f"pc-{name}.h2"
    journal.netns(first)
    namespaces.create_netns(first)
    namespaces.create_netns(second)  # crashed between creating and journaling
    journal.close()
    sleeper = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{first}", "--", "sleep", "300"], start_new_session=True
    )
    try:
        first_id = namespaces.netns_id(first)
        assert first_id is not None
        wait_until(
            lambda: namespaces.process_netns(sleeper.pid) == first_id,
            timeout=5,
            what="sleeper inside the namespace",
        )
        teardown = down(name)
        assert sorted(teardown.netns) == sorted([first, second])
        assert sleeper.pid in teardown.processes
        assert sleeper.wait(timeout=5) == -signal.SIGTERM  # its own status, not reaped by down
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()
    assert not namespaces.netns_exists(first) and not namespaces.netns_exists(second)
    assert not journal_path(name).exists()
    assert down(name).empty


def test_attach_reaches_a_running_lab(lab_factory: LabFactory) -> None:
    lab = lab_factory(TWO_HOSTS)
    again = Lab.attach(lab.topology)
    sleeper = again.host("h2").popen(["sleep", "300"])
    assert again.host("h2").netns == lab.netns_of("h2")
    teardown = lab.down()
    assert sleeper.pid in teardown.processes
    assert sleeper.wait(timeout=5) is not None
