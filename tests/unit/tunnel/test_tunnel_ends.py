"""Server and client ends in one loop over loopback, without root.

A TUN descriptor returns one packet per read and takes one per write; a
``SOCK_SEQPACKET`` socket pair does the same, so each end gets one side of a
pair as its "TUN" and the test reads and writes the other side, as the
kernel would. Everything runs in one loop, stopped as soon as the awaited
condition holds (bounded in time).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.packet import raw

from pktchain.eventloop import EventLoop
from pktchain.tunnel.auth import Role
from pktchain.tunnel.client import Backoff, TcpClient
from pktchain.tunnel.counters import Count, Counters, DropReason
from pktchain.tunnel.server import TcpServer
from pktchain.tunnel.session import Session
from pktchain.tunnel.stream import End, StreamConnection
from pktchain.tunnel.udp import UdpClient, UdpServer
from pktchain.tunnel.wire import CloseReason, Fault, encode_frame

KEY = b"0123456789abcdef-tunnel-test-key"
SERVER_IP = bytes([10, 7, 0, 1])
A_IP = bytes([10, 7, 0, 2])
B_IP = bytes([10, 7, 0, 3])
FAST = Backoff(0.01, 0.05)


def ping(src: str, dst: str) -> bytes:
    return raw(IP(src=src, dst=dst) / ICMP(id=1, seq=1) / b"hello")


class FakeTun:
    """One side of a SOCK_SEQPACKET pair for the end; the test holds the other."""

    def __init__(self) -> None:
        self.kernel, self.device = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.kernel.setblocking(False)
        self.device.setblocking(False)

    @property
    def fd(self) -> int:
        return self.device.fileno()

    def send(self, packet: bytes) -> None:
        self.kernel.send(packet)

    def received(self) -> list[bytes]:
        packets = []
        while True:
            try:
                packets.append(self.kernel.recv(65536))
            except BlockingIOError:
                return packets

    def close(self) -> None:
        self.kernel.close()
        self.device.close()


@pytest.fixture
def loop() -> Iterator[EventLoop]:
    loop = EventLoop()
    yield loop
    loop.close()


@pytest.fixture
def tuns() -> Iterator[Callable[[], FakeTun]]:
    made: list[FakeTun] = []

    def make() -> FakeTun:
        made.append(FakeTun())
        return made[-1]

    yield make
    for tun in made:
        tun.close()


@pytest.fixture
def ends() -> Iterator[list[End]]:
    made: list[End] = []
    yield made
    for end in made:
        end.close()


def run_until(loop: EventLoop, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run `loop` until `condition()` holds; fail after `timeout` seconds."""
    expired = False

    def check() -> None:
        if condition():
            loop.stop()
        else:
            loop.call_later(0.005, check)

    def expire() -> None:
        nonlocal expired
        expired = True
        loop.stop()

    deadline = loop.call_later(timeout, expire)
    loop.call_later(0, check)
    loop.run()
    deadline.cancel()
    assert not expired, f"not true after {timeout} s"


def server(
    loop: EventLoop,
    tun: FakeTun,
    ends: list[End],
    key: bytes | None,
    port: int = 0,
    **limits: float,
) -> TcpServer:
    end = TcpServer(
        loop, tun.fd, "server", listen=("127.0.0.1", port), family=socket.AF_INET,
        key=key, mtu=1500, own=SERVER_IP, **limits,  # type: ignore[arg-type]
    )  # fmt: skip
    ends.append(end)
    return end


def client(
    loop: EventLoop,
    tun: FakeTun,
    ends: list[End],
    port: int,
    key: bytes | None,
    *,
    own: bytes = A_IP,
) -> TcpClient:
    end = TcpClient(
        loop, tun.fd, f"client {own.hex()}", remote=("127.0.0.1", port), family=socket.AF_INET,
        key=key, mtu=1500, own=own, backoff=Backoff(FAST.initial, FAST.maximum),
    )  # fmt: skip
    ends.append(end)
    return end


def port_of(end: TcpServer) -> int:
    port: int = end.listener.getsockname()[1]
    return port


def is_up(end: TcpClient) -> bool:
    return end.connection is not None and end.connection.session.open


@pytest.mark.parametrize("key", [None, KEY], ids=["no-auth", "key"])
def test_packets_cross_both_ways(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End], key: bytes | None
) -> None:
    s_tun, c_tun = tuns(), tuns()
    s = server(loop, s_tun, ends, key)
    c = client(loop, c_tun, ends, port_of(s), key)
    run_until(loop, lambda: is_up(c) and len(s.switch.peers) == 1)
    out = ping("10.7.0.2", "10.7.0.1")
    c_tun.send(out)
    got: list[bytes] = []
    run_until(loop, lambda: bool(got.extend(s_tun.received()) or got))
    assert got == [out]
    back = ping("10.7.0.1", "10.7.0.2")
    s_tun.send(back)
    got.clear()
    run_until(loop, lambda: bool(got.extend(c_tun.received()) or got))
    assert got == [back]
    assert c.counters.counts[Count.WIRE_TX_PACKETS] == 1
    assert s.counters.counts[Count.AUTHENTICATED] == 1


def test_a_wrong_key_is_refused_and_the_client_keeps_trying(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    s = server(loop, tuns(), ends, KEY)
    c = client(loop, tuns(), ends, port_of(s), b"another key of sixteen bytes")
    run_until(loop, lambda: s.counters.closes[CloseReason.WRONG_KEY] >= 2)
    assert s.counters.counts[Count.AUTHENTICATED] == 0
    assert c.counters.closes[CloseReason.PEER_CLOSED_IN_HANDSHAKE] >= 1
    assert not s.switch.peers


def test_the_client_finds_a_restarted_server(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    s_tun, c_tun = tuns(), tuns()
    first = server(loop, s_tun, ends, KEY)
    port = port_of(first)
    c = client(loop, c_tun, ends, port, KEY)
    run_until(loop, lambda: is_up(c))
    first.close()
    ends.remove(first)
    run_until(loop, lambda: c.connection is None)
    second = server(loop, s_tun, ends, KEY, port)
    run_until(loop, lambda: is_up(c) and bool(second.switch.peers))
    c_tun.send(ping("10.7.0.2", "10.7.0.1"))
    run_until(loop, lambda: second.counters.counts[Count.TUN_TX_PACKETS] == 1)
    assert c.counters.counts[Count.CONNECTIONS] == 2


def test_two_clients_reach_each_other_through_the_server(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    s = server(loop, tuns(), ends, KEY)
    a_tun, b_tun = tuns(), tuns()
    a = client(loop, a_tun, ends, port_of(s), KEY, own=A_IP)
    b = client(loop, b_tun, ends, port_of(s), KEY, own=B_IP)
    run_until(loop, lambda: is_up(a) and is_up(b) and len(s.switch.peers) == 2)
    # b never sent anything: its announced address is enough.
    a_tun.send(ping("10.7.0.2", "10.7.0.3"))
    got: list[bytes] = []
    run_until(loop, lambda: bool(got.extend(b_tun.received()) or got))
    assert IP(got[0]).ttl == 63 and IP(got[0]).dst == "10.7.0.3"
    assert s.counters.counts[Count.RELAYED] == 1


def test_a_zero_length_frame_closes_the_connection(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    s_tun = tuns()
    s = server(loop, s_tun, ends, None)
    raw_client = socket.create_connection(("127.0.0.1", port_of(s)))
    try:
        raw_client.sendall(encode_frame(ping("10.7.0.9", "10.7.0.1")) + b"\x00\x00")
        run_until(loop, lambda: s.counters.closes[CloseReason.ZERO_LENGTH_FRAME] == 1)
        raw_client.settimeout(5)
        assert raw_client.recv(100) == b""  # closed by the server
    finally:
        raw_client.close()
    assert len(s_tun.received()) == 1  # the packet before it was delivered
    assert not s.connections


def test_a_connection_that_never_finishes_its_handshake_is_closed(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End], caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger that connects and says nothing, or half a hello, is closed after
    the handshake timeout and counted; a client with the key still gets in."""
    s = server(loop, tuns(), ends, KEY, handshake_timeout=0.3)
    silent = socket.create_connection(("127.0.0.1", port_of(s)))
    halfway = socket.create_connection(("127.0.0.1", port_of(s)))
    try:
        halfway.sendall(b"PK")  # the first bytes of a hello's magic, then nothing
        run_until(loop, lambda: s.counters.closes[CloseReason.HANDSHAKE_TIMEOUT] == 2)
        for sock in (silent, halfway):
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server, without a word
    finally:
        silent.close()
        halfway.close()
    assert not s.connections
    assert "no handshake within the time limit" in caplog.text
    c = client(loop, tuns(), ends, port_of(s), KEY)
    run_until(loop, lambda: is_up(c) and len(s.switch.peers) == 1)


def test_connections_beyond_the_limit_are_refused(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End], caplog: pytest.LogCaptureFixture
) -> None:
    s = server(loop, tuns(), ends, KEY, max_connections=2)
    held = [socket.create_connection(("127.0.0.1", port_of(s))) for _ in range(2)]
    try:
        run_until(loop, lambda: len(s.connections) == 2)
        third = socket.create_connection(("127.0.0.1", port_of(s)))
        held.append(third)
        run_until(loop, lambda: s.counters.closes[CloseReason.TOO_MANY_CONNECTIONS] == 1)
        third.settimeout(5)
        assert third.recv(100) == b""
        assert len(s.connections) == 2
    finally:
        for sock in held:
            sock.close()
    assert "refused, 2 connections already" in caplog.text


def test_without_a_connection_the_client_drops_and_counts(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()  # nothing listens there
    c_tun = tuns()
    c = client(loop, c_tun, ends, port, KEY)
    run_until(loop, lambda: c.counters.closes[CloseReason.SOCKET_ERROR] >= 2)
    c_tun.send(ping("10.7.0.2", "10.7.0.1"))
    run_until(loop, lambda: c.counters.drops[DropReason.NOT_CONNECTED] == 1)


def test_udp_packets_cross_both_ways(
    loop: EventLoop, tuns: Callable[[], FakeTun], ends: list[End]
) -> None:
    s_tun, c_tun = tuns(), tuns()
    s = UdpServer(
        loop, s_tun.fd, "server", listen=("127.0.0.1", 0), family=socket.AF_INET,
        mtu=1500, own=SERVER_IP,
    )  # fmt: skip
    ends.append(s)
    c = UdpClient(
        loop, c_tun.fd, "client", remote=s.sock.getsockname(), family=socket.AF_INET, mtu=1500
    )
    ends.append(c)
    # The client's first keepalive makes it known before it has traffic.
    run_until(loop, lambda: s.counters.counts[Count.KEEPALIVES] == 1)
    back = ping("10.7.0.1", "10.7.0.2")
    s_tun.send(back)
    got: list[bytes] = []
    run_until(loop, lambda: bool(got.extend(c_tun.received()) or got))
    assert got == [back]
    c_tun.send(ping("10.7.0.2", "10.7.0.1"))
    run_until(loop, lambda: s.counters.counts[Count.TUN_TX_PACKETS] == 1)
    c.sock.send(bytes(1501))
    run_until(loop, lambda: s.counters.drops[DropReason.OVERSIZED] == 1)


class Owner:
    """The least a connection reports to: counters, and what it was told."""

    def __init__(self) -> None:
        self.label = "test"
        self.counters = Counters()
        self.packets: list[bytes] = []
        self.faults: list[CloseReason] = []

    def connection_opened(self, connection: StreamConnection) -> None:
        pass

    def connection_packets(self, connection: StreamConnection, packets: list[bytes]) -> None:
        self.packets += packets

    def connection_closed(self, connection: StreamConnection, fault: Fault) -> None:
        self.faults.append(fault.reason)


def test_a_slow_reader_gets_everything_queued_and_the_excess_is_dropped(loop: EventLoop) -> None:
    near, far = socket.socketpair()
    with near, far:
        near.setblocking(False)
        owner = Owner()
        session = Session(Role.CLIENT, key=None, mtu=1500, now=loop.now)
        connection = StreamConnection(loop, near, session, owner, "peer")
        connection.start()
        packet = ping("10.7.0.2", "10.7.0.1")
        frame = encode_frame(packet)
        queued = 0
        # Far does not read: the socket buffer fills, then the queue, then drops.
        while not owner.counters.drops[DropReason.CONGESTED]:
            connection.queue(packet)
            connection.flush()
            queued += 1
        accepted = queued - 1
        assert owner.counters.counts[Count.WIRE_TX_PACKETS] == accepted
        # Far reads now: what was queued arrives whole and in order.
        far.setblocking(False)
        received = bytearray()

        def drained() -> bool:
            try:
                while chunk := far.recv(1 << 20):
                    received.extend(chunk)
            except BlockingIOError:
                pass
            return len(received) >= accepted * len(frame)

        run_until(loop, drained)
        assert bytes(received) == frame * accepted
        connection.close(Fault(CloseReason.SHUTDOWN, "done"))
        assert owner.faults == [CloseReason.SHUTDOWN]
