"""`pktchain tunnel` between network namespaces joined by a veth (or a bridge) underlay.

Each tunnel end is a real ``pktchain tunnel`` process in a lab host; ping and
iperf3 cross the tunnel, test peers written here speak the original framing
(and the handshake) on raw sockets, and every process must exit 0 on SIGTERM
leaving no TUN interface behind.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import ICMP, IP
from scapy.packet import Raw, raw

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.tunnel.auth import PROOF_SIZE, Handshake, Role, proof
from pktchain.tunnel.wire import HEADER, FrameDecoder, encode_frame

KEY = b"a tunnel key for the netns tests"
OTHER_KEY = b"not the key the server was given"
PORT = 55556
UNDERLAY_SERVER = "10.9.0.1"
SERVER_TUN = "192.168.77.1"
CLIENT_TUN = "192.168.77.2"
CLIENT2_TUN = "192.168.77.3"

# The underlay: server and client joined by one veth.
PAIR = {
    "hosts": {
        "srv": {"interfaces": {"eth0": {"attach": "cli.eth0", "addresses": ["10.9.0.1/24"]}}},
        "cli": {"interfaces": {"eth0": {"addresses": ["10.9.0.2/24"]}}},
    }
}
# The underlay for many clients: a bridge.
STAR = {
    "bridges": ["lan"],
    "hosts": {
        name: {"interfaces": {"eth0": {"attach": "lan", "addresses": [f"10.9.0.{n}/24"]}}}
        for n, name in enumerate(("srv", "c1", "c2"), start=1)
    },
}


def has_link(host: LabHost, ifname: str) -> bool:
    with IPRoute(netns=host.netns) as ipr:
        return bool(ipr.link_lookup(ifname=ifname))


class Tunnel:
    """A ``pktchain -v tunnel ...`` process in a lab host, with its log and interfaces."""

    def __init__(self, host: LabHost, args: list[str], log: Path, interfaces: list[str]) -> None:
        self.host = host
        self.args = args
        self.log = log
        self.interfaces = interfaces
        self.process: subprocess.Popen[bytes] | None = None
        self.status: int | None = None
        """The exit status, once `stop` or `kill` has waited for it."""

    def start(self) -> Tunnel:
        with self.log.open("ab") as out:
            argv = [sys.executable, "-m", "pktchain", "-v", "tunnel", *self.args]
            self.process = self.host.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        wait_until(
            lambda: all(has_link(self.host, name) for name in self.interfaces) or self.exited(),
            timeout=20,
            what=f"{self.host.name}: the tunnel's interfaces {self.interfaces}",
        )
        assert not self.exited(), f"tunnel exited early:\n{self.text()}"
        return self

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, fragment: str, timeout: float = 10.0) -> None:
        wait_until(lambda: fragment in self.text(), timeout=timeout, what=f"log line {fragment!r}")

    def counters(self) -> dict[str, Any]:
        """The counters of every end, as the process prints them on SIGUSR1."""
        marker = "pktchain tunnel: counters "
        before = self.text().count(marker)
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)
        wait_until(lambda: self.text().count(marker) > before, timeout=10, what="counters")
        line = [ln for ln in self.text().splitlines() if marker in ln][-1]
        counters: dict[str, Any] = json.loads(line.split(marker, 1)[1])
        return counters

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.status = self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.status

    def kill(self) -> int:
        """SIGKILL, then the exit status."""
        assert self.process is not None
        self.process.kill()
        self.status = self.process.wait(timeout=10)
        return self.status


TunnelFactory = Callable[..., Tunnel]


@pytest.fixture
def tunnel(lab_factory: Callable[..., Lab], tmp_path: Path) -> Iterator[TunnelFactory]:
    """``tunnel(host, *args, interfaces=[...])``: a started tunnel process; after the
    test each one still running is stopped with SIGTERM and must exit 0, and none
    may leave an interface behind. (Asking for `lab_factory` makes this run
    before the labs are taken down.)"""
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY + b"\n")
    key_file.chmod(0o600)
    started: list[Tunnel] = []

    def make(host: LabHost, *args: str, interfaces: list[str]) -> Tunnel:
        argv = list(args)
        if "--no-auth" not in argv and "--key-file" not in argv:
            argv += ["--key-file", str(key_file)]
        log = tmp_path / f"tunnel-{len(started)}-{host.name}.log"
        started.append(Tunnel(host, argv, log, interfaces))
        return started[-1].start()

    yield make

    problems = []
    for each in started:
        if each.status is not None:
            continue  # stopped by the test, which checked how
        status = each.stop()
        if status != 0:
            problems.append(f"{each.host.name}: exit status {status}:\n{each.text()[-2000:]}")
    for each in started:
        left = [name for name in each.interfaces if has_link(each.host, name)]
        if left:
            problems.append(f"{each.host.name}: interfaces left after exit: {left}")
    assert not problems, "\n".join(problems)


def server_args(ifname: str, *extra: str) -> list[str]:
    return ["-m", "server", "-p", ifname, "-s", SERVER_TUN, "-i", str(PORT), *extra]


def client_args(ifname: str, address: str, *extra: str) -> list[str]:
    return ["-m", "client", "-n", ifname, "-c", address, "-r", UNDERLAY_SERVER, "-o", str(PORT),
            *extra]  # fmt: skip


def pings(host: LabHost, address: str, count: int = 3) -> str:
    result = host.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", address], timeout=20)
    assert result.ok, f"{host.name}: ping {address}:\n{result.stdout}{result.stderr}"
    return result.stdout


def wait_ping(host: LabHost, address: str, timeout: float = 20.0) -> None:
    """Wait until one ping from `host` to `address` is answered."""
    wait_until(
        lambda: host.run(["ping", "-c", "1", "-W", "1", address], timeout=10).ok,
        timeout=timeout,
        what=f"{host.name}: a ping answered by {address}",
    )


def start_pair(
    lab: Lab, tunnel: TunnelFactory, names: Callable[[str], str], *extra: str
) -> tuple[Tunnel, Tunnel]:
    srv, cli = lab.host("srv"), lab.host("cli")
    s_if, c_if = names("tsrv"), names("tcli")
    server = tunnel(srv, *server_args(s_if, *extra), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    client = tunnel(cli, *client_args(c_if, CLIENT_TUN, *extra), interfaces=[c_if])
    wait_ping(cli, SERVER_TUN)
    return server, client


def test_ping_and_iperf3_cross_the_tunnel(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    server, client = start_pair(lab, tunnel, unique_name)
    srv, cli = lab.host("srv"), lab.host("cli")
    pings(cli, SERVER_TUN)
    pings(srv, CLIENT_TUN)
    srv.popen(["iperf3", "-s", "-1", "-B", SERVER_TUN, "-p", "5201"])
    srv.wait_listening(5201, timeout=10)
    result = cli.run(
        ["iperf3", "-c", SERVER_TUN, "-p", "5201", "-t", "2", "--connect-timeout", "3000", "-J"],
        timeout=30,
    )
    assert result.ok, result.stdout[-1000:] + result.stderr
    received = json.loads(result.stdout)["end"]["sum_received"]["bytes"]
    assert received > 1_000_000
    counters = server.counters()[f"server {server.interfaces[0]}"]
    assert counters["counts"]["authenticated"] == 1
    assert counters["counts"]["wire_rx_bytes"] > received
    assert counters["closes"] == {}
    assert "authenticated" in client.text()


def test_the_client_reconnects_after_the_server_restarts(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    server, client = start_pair(lab, tunnel, unique_name)
    assert server.stop() == 0
    assert not has_link(lab.host("srv"), server.interfaces[0])
    client.wait_log("closed by the peer")
    again = tunnel(lab.host("srv"), *server.args, interfaces=server.interfaces)
    wait_ping(lab.host("cli"), SERVER_TUN)
    pings(lab.host("srv"), CLIENT_TUN)
    counts = client.counters()[f"client {client.interfaces[0]}"]["counts"]
    assert counts["authenticated"] == 2
    assert again.counters()[f"server {server.interfaces[0]}"]["counts"]["authenticated"] == 1


def test_a_client_with_a_wrong_key_is_refused(
    lab_factory: Callable[..., Lab],
    tunnel: TunnelFactory,
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    s_if, c_if = unique_name("tsrv"), unique_name("tcli")
    server = tunnel(srv, *server_args(s_if), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    wrong = tmp_path / "wrong-key"
    wrong.write_bytes(OTHER_KEY)
    client = tunnel(
        cli, *client_args(c_if, CLIENT_TUN, "--key-file", str(wrong)), interfaces=[c_if]
    )
    server.wait_log("the client's proof is wrong")
    client.wait_log("closed by the peer in the handshake")
    assert not cli.run(["ping", "-c", "1", "-W", "1", SERVER_TUN]).ok
    counters = server.counters()[f"server {s_if}"]
    assert counters["closes"]["wrong-key"] >= 1
    assert counters["counts"].get("authenticated", 0) == 0


def test_a_server_with_a_wrong_key_is_refused_by_the_client(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    # The server here is the test: it answers the client's proof with one
    # made under another key, as an impostor would.
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    with srv.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((UNDERLAY_SERVER, PORT))
        listener.listen(1)
        listener.settimeout(20)
        c_if = unique_name("tcli")
        client = tunnel(cli, *client_args(c_if, CLIENT_TUN), interfaces=[c_if])
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            impostor = Handshake(Role.SERVER, OTHER_KEY)
            hello_c = recv_hello(conn)
            hello_s = impostor.receive(hello_c).send
            conn.sendall(hello_s)
            recv_exactly(conn, PROOF_SIZE)  # the client's proof, which the impostor cannot check
            conn.sendall(proof(OTHER_KEY, Role.SERVER, hello_c, hello_s))
            assert conn.recv(100) == b""  # the client closed
    client.wait_log("the server's proof is wrong")
    assert client.counters()[f"client {c_if}"]["closes"]["wrong-key"] == 1


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def recv_hello(conn: socket.socket) -> bytes:
    head = recv_exactly(conn, 39)
    return head + recv_exactly(conn, 16 * head[38])


def authenticate(conn: socket.socket) -> None:
    """The client's side of the handshake, done by the test on a raw socket."""
    me = Handshake(Role.CLIENT, KEY)
    conn.sendall(me.start())
    hello_s = recv_hello(conn)
    conn.sendall(me.receive(hello_s).send)
    assert me.receive(recv_exactly(conn, PROOF_SIZE)).done


def test_zero_length_and_oversized_frames_close_the_connection(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    s_if = unique_name("tsrv")
    plain = tunnel(srv, *server_args(s_if, "--no-auth"), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    for frame in (b"\x00\x00", HEADER.pack(1501) + bytes(1501), b"\xff\xff"):
        with cli.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
            conn.settimeout(10)
            conn.connect((UNDERLAY_SERVER, PORT))
            conn.sendall(frame)
            assert conn.recv(100) == b"", "the server should close the connection"
    plain.wait_log("zero-length frame")
    plain.wait_log("frame of 1501 bytes is longer than the MTU (1500)")
    plain.wait_log("frame of 65535 bytes is longer than the MTU (1500)")
    closes = plain.counters()[f"server {s_if}"]["closes"]
    assert closes == {"zero-length-frame": 1, "frame-too-long": 2}
    assert plain.stop() == 0

    # After a successful handshake the frames are the same, and so is the rule.
    keyed = tunnel(srv, *server_args(s_if), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    with cli.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect((UNDERLAY_SERVER, PORT))
        authenticate(conn)
        conn.sendall(b"\x00\x00")
        assert conn.recv(100) == b""
    keyed.wait_log("zero-length frame")
    assert keyed.counters()[f"server {s_if}"]["closes"] == {"zero-length-frame": 1}


def echo_request(src: str, dst: str, ident: int) -> bytes:
    return raw(IP(src=src, dst=dst) / ICMP(type=8, id=ident, seq=1) / Raw(b"original framing"))


def test_a_peer_speaking_the_original_framing_pings_a_server_end(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    s_if = unique_name("tsrv")
    tunnel(srv, *server_args(s_if, "--no-auth"), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    ident = random.randrange(1, 0xFFFF)
    with cli.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect((UNDERLAY_SERVER, PORT))
        # TunConnector's client: htons(length), then the packet read from its TUN.
        conn.sendall(encode_frame(echo_request(CLIENT_TUN, SERVER_TUN, ident)))
        decoder = FrameDecoder(1500)
        reply = None
        while reply is None:
            data = conn.recv(4096)
            assert data, "the server closed the connection"
            for packet in decoder.feed(data):
                if packet[0] >> 4 != 4:
                    continue  # the server kernel's IPv6 packets, say
                ip = IP(packet)
                if ICMP in ip and ip[ICMP].type == 0 and ip[ICMP].id == ident:
                    reply = ip
        assert decoder.fault is None
    assert (reply.src, reply.dst) == (SERVER_TUN, CLIENT_TUN)
    assert bytes(reply[ICMP].payload) == b"original framing"


def test_a_client_end_pings_a_peer_speaking_the_original_framing(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    with srv.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((UNDERLAY_SERVER, PORT))
        listener.listen(1)
        listener.settimeout(20)
        c_if = unique_name("tcli")
        tunnel(cli, *client_args(c_if, CLIENT_TUN, "--no-auth"), interfaces=[c_if])
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            ping = cli.popen(["ping", "-c", "1", "-W", "5", SERVER_TUN])
            # From the first byte, the wire holds frames and nothing else (no
            # hello): the kernel's own packets first (IPv6 router
            # solicitations, say), then the echo request.
            request = None
            for _ in range(20):
                (length,) = HEADER.unpack(recv_exactly(conn, HEADER.size))
                packet = recv_exactly(conn, length)
                assert packet[0] >> 4 in (4, 6), f"not an IP packet: {packet.hex()}"
                if packet[0] >> 4 == 4 and ICMP in IP(packet) and IP(packet)[ICMP].type == 8:
                    request = IP(packet)
                    break
            assert request is not None and len(request) == length
            assert (request.src, request.dst) == (CLIENT_TUN, SERVER_TUN)
            reply = IP(src=SERVER_TUN, dst=CLIENT_TUN) / ICMP(
                type=0, id=request[ICMP].id, seq=request[ICMP].seq
            ) / request[ICMP].payload  # fmt: skip
            conn.sendall(encode_frame(raw(reply)))
            assert ping.wait(timeout=10) == 0


def test_two_clients_ping_each_other_through_the_server(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(STAR)
    srv, c1, c2 = lab.host("srv"), lab.host("c1"), lab.host("c2")
    s_if = unique_name("tsrv")
    server = tunnel(srv, *server_args(s_if), interfaces=[s_if])
    srv.wait_listening(PORT, timeout=10)
    for host, address in ((c1, CLIENT_TUN), (c2, CLIENT2_TUN)):
        c_if = unique_name("tcli")
        tunnel(host, *client_args(c_if, address), interfaces=[c_if])
    wait_ping(c1, SERVER_TUN)
    wait_ping(c2, SERVER_TUN)
    # The server relays as a router hop: the replies arrive with a TTL one lower.
    assert "ttl=63" in pings(c1, CLIENT2_TUN)
    assert "ttl=63" in pings(c2, CLIENT_TUN)
    pings(srv, CLIENT_TUN)
    pings(srv, CLIENT2_TUN)
    counts = server.counters()[f"server {s_if}"]["counts"]
    assert counts["relayed"] >= 12  # 3 requests and 3 replies each way


def test_udp_transport_carries_ping(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory(PAIR)
    srv, cli = lab.host("srv"), lab.host("cli")
    s_if, c_if = unique_name("tsrv"), unique_name("tcli")
    udp = ("--transport", "udp", "--no-auth")
    server = tunnel(srv, *server_args(s_if, *udp), interfaces=[s_if])
    srv.wait_listening(PORT, kind=socket.SOCK_DGRAM, timeout=10)
    tunnel(cli, *client_args(c_if, CLIENT_TUN, *udp), interfaces=[c_if])
    # The server answers before the client has sent traffic: the keepalive made it known.
    wait_ping(srv, CLIENT_TUN)
    pings(cli, SERVER_TUN)
    # A full-MTU packet fits in one datagram, fragmented on the underlay.
    assert cli.run(["ping", "-c", "1", "-W", "2", "-s", "1472", "-M", "do", SERVER_TUN]).ok
    counts = server.counters()[f"server {s_if}"]["counts"]
    assert counts["keepalives"] >= 1 and counts["wire_rx_packets"] >= 4


def test_interfaces_are_gone_after_sigterm_and_sigkill(
    lab_factory: Callable[..., Lab], tunnel: TunnelFactory, unique_name: Callable[[str], str]
) -> None:
    lab = lab_factory({"hosts": {"h": {}}})
    host = lab.host("h")
    s_if, c_if = unique_name("tsrv"), unique_name("tcli")
    # Both ends in one process, the client end connected to the server end over loopback.
    both = ["-m", "both", "-p", s_if, "-n", c_if, "-s", "192.168.78.1", "-c", "192.168.79.1",
            "-i", str(PORT), "-o", str(PORT), "-r", "127.0.0.1"]  # fmt: skip
    first = tunnel(host, *both, interfaces=[s_if, c_if])
    first.wait_log("is up, authenticated")
    assert first.stop() == 0
    assert not has_link(host, s_if) and not has_link(host, c_if)
    # Even a process that cannot clean up leaves nothing: the devices are not persistent.
    second = tunnel(host, *both, interfaces=[s_if, c_if])
    assert second.kill() == -signal.SIGKILL
    wait_until(
        lambda: not has_link(host, s_if) and not has_link(host, c_if),
        timeout=5,
        what="the interfaces of a killed tunnel removed",
    )
