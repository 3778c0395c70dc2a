"""The messenger server and client over loopback TCP, with a fake router.

The fake router records every control call it gets and, like the real one,
refuses bad input with a ValueError naming the field and changes nothing
when it refuses. Every server listens on 127.0.0.1, port 0.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import pytest

from pktchain.eventloop import EventLoop
from pktchain.messenger.client import MessengerClient, make_request
from pktchain.messenger.ops import RouterNicAdd
from pktchain.messenger.server import MessengerServer
from pktchain.messenger.wire import (
    HEADER,
    ErrorType,
    FrameDecoder,
    MessengerConfigError,
    MessengerError,
    encode_frame,
    verify,
)

SECRET = b"a shared secret of 32 bytes ...."
NIC = {"name": "eth1", "mac": "02:00:00:00:01:01", "ip": "10.0.1.1", "subnet": "10.0.1.0/24"}
HOST = {"mac": "02:00:00:00:01:02", "ip": "10.0.1.2", "network_id": "net-1"}


@dataclass(frozen=True)
class HostEntry:
    mac: str
    ip: IPv4Address
    network_id: str
    forwarding_port: int


class FakeRouter:
    """Records calls; all-or-nothing like the router: checks, then changes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.interfaces: dict[str, RouterNicAdd] = {}
        self.host_table: dict[str, HostEntry] = {}
        self.forwards: dict[tuple[str, int], tuple[str, int]] = {}
        self.thread_ids: set[int] = set()
        self.fail_with: BaseException | None = None

    def _record(self, name: str, *args: Any) -> None:
        self.thread_ids.add(threading.get_ident())
        self.calls.append((name, args))
        if self.fail_with is not None:
            raise self.fail_with

    def add_interface(self, interface: RouterNicAdd, /) -> None:
        self._record("add_interface", interface)
        if interface.name in self.interfaces:
            raise ValueError(f"name: {interface.name} already exists")
        if any(
            i.address.network.overlaps(interface.address.network) for i in self.interfaces.values()
        ):
            raise ValueError(f"address: {interface.address} overlaps another interface")
        self.interfaces[interface.name] = interface

    def remove_interface(self, name: str, /) -> None:
        self._record("remove_interface", name)
        if name not in self.interfaces:
            raise KeyError(f"name: no interface {name}")
        del self.interfaces[name]

    def add_host(self, mac: str, ip: str, network_id: str = "", /) -> HostEntry:
        self._record("add_host", mac, ip, network_id)
        if mac in self.host_table:
            raise ValueError(f"mac: {mac} is already a host")
        entry = HostEntry(mac, IPv4Address(ip), network_id, 49152 + len(self.host_table))
        self.host_table[mac] = entry
        return entry

    def remove_host(self, mac_or_ip: str, /) -> HostEntry:
        self._record("remove_host", mac_or_ip)
        for mac, entry in self.host_table.items():
            if mac_or_ip in (mac, str(entry.ip)):
                return self.host_table.pop(mac)
        raise ValueError(f"mac_or_ip: no host {mac_or_ip}")

    def hosts(self) -> list[HostEntry]:
        self._record("hosts")
        return list(self.host_table.values())

    def add_port_forward(
        self, proto: str, external_port: int, inside_ip: str, inside_port: int, /
    ) -> None:
        self._record("add_port_forward", proto, external_port, inside_ip, inside_port)
        if (proto, external_port) in self.forwards:
            raise ValueError(f"external_port: {proto}/{external_port} is taken")
        self.forwards[proto, external_port] = (inside_ip, inside_port)

    def remove_port_forward(self, proto: str, external_port: int, /) -> None:
        self._record("remove_port_forward", proto, external_port)
        del self.forwards[proto, external_port]


def _identity(nic: RouterNicAdd) -> RouterNicAdd:
    return nic


class Submitter:
    """Runs work on its own thread, as the node's loop does."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fn: Callable[[], Any]) -> Any:
        self.count += 1
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # handed back to the caller, as EventLoop.submit does
                box["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        worker.join(5)
        if "error" in box:
            raise box["error"]
        return box["result"]


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def server(router: FakeRouter) -> Iterator[MessengerServer]:
    with MessengerServer(router, SECRET, port=0, make_interface=_identity) as running:
        yield running


@pytest.fixture
def client(server: MessengerServer) -> Iterator[MessengerClient]:
    with MessengerClient("127.0.0.1", server.port, SECRET, timeout=5) as messenger:
        yield messenger


def _raw(server: MessengerServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return sock


def _send(sock: socket.socket, message: dict[str, Any] | bytes) -> dict[str, Any]:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    sock.sendall(encode_frame(body))
    return _receive(sock)


def _receive(sock: socket.socket) -> dict[str, Any]:
    decoder = FrameDecoder(1 << 20)
    for _ in range(100):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        frames = decoder.feed(chunk)
        if frames:
            reply: dict[str, Any] = json.loads(frames[0])
            return reply
    raise AssertionError("no reply")


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


# -- round trips ----------------------------------------------------------------


def test_every_operation_round_trips(client: MessengerClient, router: FakeRouter) -> None:
    assert client.call("ping") == {"pong": True}
    assert client.call("router_nic_add", **NIC, network_id="net-1") is None
    (name, (interface,)) = router.calls[-1]
    assert name == "add_interface" and str(interface.address) == "10.0.1.1/24"
    entry = client.call("host_nic_add", **HOST)
    assert entry == {
        "mac": "02:00:00:00:01:02",
        "ip": "10.0.1.2",
        "network_id": "net-1",
        "forwarding_port": 49152,
    }
    assert router.calls[-1] == ("add_host", ("02:00:00:00:01:02", "10.0.1.2", "net-1"))
    assert client.call("hosts") == [entry]
    client.call(
        "port_forward_add", proto="tcp", external_port=80, inside_ip="10.0.1.2", inside_port=8080
    )
    assert router.forwards == {("tcp", 80): ("10.0.1.2", 8080)}
    client.call("port_forward_remove", proto="tcp", external_port=80)
    assert client.call("host_nic_remove", ip="10.0.1.2") == entry
    assert router.calls[-1:] == [("remove_host", ("10.0.1.2",))]
    client.call("router_nic_remove", name="eth1")
    assert not router.interfaces and not router.host_table and not router.forwards


def test_operations_run_through_submit(router: FakeRouter) -> None:
    submit = Submitter()
    with MessengerServer(router, SECRET, port=0, submit=submit, make_interface=_identity) as server:
        with MessengerClient("127.0.0.1", server.port, SECRET) as client:
            client.call("router_nic_add", **NIC)
            client.call("hosts")
        server_thread = {
            t.ident for t in threading.enumerate() if t.name.startswith("pktchain-messenger")
        }
    assert submit.count == 2
    assert router.thread_ids and not router.thread_ids & server_thread


def test_served_on_a_given_loop_in_its_thread_without_a_thread_of_its_own(
    router: FakeRouter,
) -> None:
    threads_before = set(threading.enumerate())
    loop = EventLoop()
    server = MessengerServer(router, SECRET, port=0, loop=loop, make_interface=_identity)
    server.start()
    assert set(threading.enumerate()) == threads_before
    replies: list[Any] = []
    failures: list[BaseException] = []

    def controller() -> None:
        try:
            with MessengerClient("127.0.0.1", server.port, SECRET, timeout=5) as client:
                replies.append(client.call("router_nic_add", **NIC))
                replies.append(client.call("hosts"))
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)

    worker = threading.Thread(target=controller)
    worker.start()
    try:
        loop.run()  # the test's thread is the loop's
    finally:
        worker.join(10)
        server.stop()
        loop.close()
    assert not failures and replies == [None, []]
    assert router.thread_ids == {threading.get_ident()}
    assert not server.running and server.connections == 0


# -- validation and partial application -------------------------------------------


def test_invalid_argument_is_named_and_nothing_is_called(
    client: MessengerClient, router: FakeRouter
) -> None:
    with pytest.raises(MessengerError) as info:
        client.call("router_nic_add", **{**NIC, "mtu": 9000, "gateway": "10.0.9.1"})
    assert (info.value.type, info.value.field) == (ErrorType.INVALID_ARGUMENT, "args.gateway")
    with pytest.raises(MessengerError) as info:
        client.call("host_nic_add", mac="ff:ff:ff:ff:ff:ff", ip="10.0.1.2")
    assert info.value.field == "args.mac"
    assert router.calls == []
    assert client.call("ping") == {"pong": True}  # the connection survived


def test_router_refusal_is_named_and_leaves_nothing_half_done(
    client: MessengerClient, router: FakeRouter
) -> None:
    client.call("router_nic_add", **NIC)
    client.call("host_nic_add", **HOST)
    before = (dict(router.interfaces), dict(router.host_table))
    with pytest.raises(MessengerError) as info:
        client.call("router_nic_add", **{**NIC, "name": "eth2", "mac": "02:00:00:00:02:01"})
    assert info.value.type is ErrorType.REJECTED
    assert info.value.field == "args.ip"  # the router's "address" in the messenger's words
    with pytest.raises(MessengerError) as info:
        client.call("host_nic_add", **HOST)
    assert (info.value.type, info.value.field) == (ErrorType.REJECTED, "args.mac")
    with pytest.raises(MessengerError) as info:
        client.call("router_nic_remove", name="eth9")
    assert (info.value.type, info.value.field) == (ErrorType.REJECTED, "args.name")
    assert (dict(router.interfaces), dict(router.host_table)) == before
    assert [name for name, _ in router.calls].count("add_interface") == 2


def test_router_fault_is_an_internal_error_and_the_server_goes_on(
    client: MessengerClient, router: FakeRouter, server: MessengerServer
) -> None:
    router.fail_with = RuntimeError("disk on fire")
    with pytest.raises(MessengerError) as info:
        client.call("hosts")
    assert info.value.type is ErrorType.INTERNAL and "fire" not in info.value.message
    router.fail_with = None
    assert client.call("hosts") == []
    assert server.counters["replies.error.InternalError"] == 1


def test_unknown_op(client: MessengerClient, router: FakeRouter) -> None:
    with pytest.raises(MessengerError) as info:
        client.call("reboot")
    assert (info.value.type, info.value.field) == (ErrorType.UNKNOWN_OP, "op")
    assert router.calls == []


# -- authentication and replay ----------------------------------------------------


def test_wrong_secret_is_unauthenticated_and_counted(
    server: MessengerServer, router: FakeRouter
) -> None:
    bad = MessengerClient("127.0.0.1", server.port, b"not the shared secret at all")
    with bad, pytest.raises(MessengerError) as info:
        bad.call("host_nic_add", **HOST)
    assert info.value.type is ErrorType.UNAUTHENTICATED and info.value.field is None
    assert server.counters["unauthenticated"] == 1
    assert router.calls == []


def test_tampered_request_is_refused_and_the_connection_survives(
    server: MessengerServer, router: FakeRouter
) -> None:
    with _raw(server) as sock:
        request = make_request(SECRET, "host_nic_add", dict(HOST), request_id="1")
        request["args"]["ip"] = "10.0.1.99"
        reply = _send(sock, request)
        assert reply["error"]["type"] == "Unauthenticated" and verify(SECRET, reply)
        reply = _send(sock, {k: v for k, v in request.items() if k != "mac"})
        assert reply["error"]["type"] == "Unauthenticated"
        reply = _send(sock, make_request(SECRET, "ping", {}, request_id="2"))
        assert reply["ok"] is True and reply["id"] == "2"
    assert router.calls == []
    assert server.counters["unauthenticated"] == 2


def test_replayed_nonce_and_stale_time_are_refused(
    server: MessengerServer, router: FakeRouter
) -> None:
    request = make_request(SECRET, "host_nic_add", dict(HOST), request_id="1")
    with _raw(server) as sock:
        assert _send(sock, request)["ok"] is True
        again = _send(sock, request)
        assert again["error"]["type"] == "Replayed" and again["error"]["field"] == "nonce"
        stale = make_request(SECRET, "hosts", {}, request_id="2", sent=time.time() - 60)
        reply = _send(sock, stale)
        assert reply["error"]["type"] == "Replayed" and reply["error"]["field"] == "time"
    with _raw(server) as other:  # nonces are remembered across connections
        assert _send(other, request)["error"]["field"] == "nonce"
    assert [name for name, _ in router.calls] == ["add_host"]


# -- framing ------------------------------------------------------------------------


def test_malformed_json_is_answered_and_the_connection_survives(
    server: MessengerServer,
) -> None:
    with _raw(server) as sock:
        for body in (b"{not json", b"[]", b"\xff\xfe", b'{"id":"1","id":"2"}'):
            reply = _send(sock, body)
            assert reply["ok"] is False and reply["error"]["type"] == "MalformedMessage"
            assert verify(SECRET, reply)
        assert _send(sock, make_request(SECRET, "ping", {}, request_id="3"))["ok"] is True


def test_oversized_frame_is_answered_then_closed(server: MessengerServer) -> None:
    with _raw(server) as sock:
        sock.sendall(HEADER.pack(64 * 1024 + 1))
        reply = _receive(sock)
        assert reply["error"]["type"] == "MessageTooLarge"
        assert sock.recv(1) == b""
    assert _wait_for(lambda: server.connections == 0)
    assert server.counters["connections.closed.protocol"] == 1


def test_idle_connections_are_closed(router: FakeRouter) -> None:
    with MessengerServer(router, SECRET, port=0, idle_timeout=0.2) as server:
        with _raw(server) as sock:
            assert _wait_for(lambda: server.connections == 1)
            sock.sendall(b"\x00\x00")  # half a header, then nothing
            assert _wait_for(lambda: server.connections == 0)
            assert sock.recv(1) == b""
        assert server.counters["connections.closed.idle"] == 1


def test_connections_beyond_the_limit_are_refused(
    router: FakeRouter, caplog: pytest.LogCaptureFixture
) -> None:
    with MessengerServer(router, SECRET, port=0, max_connections=2) as server:
        first, second = _raw(server), _raw(server)
        with first, second, _raw(server) as third:
            assert third.recv(1) == b""
            assert _send(first, make_request(SECRET, "ping", {}, request_id="1"))["ok"] is True
        assert server.counters["connections.refused"] == 1
    assert "refused: 2 connections open already" in caplog.text


def test_connections_that_never_authenticate_are_closed(
    router: FakeRouter, caplog: pytest.LogCaptureFixture
) -> None:
    """A stranger who connects and sends nothing, half a frame, or requests with a wrong
    MAC is closed after the handshake timeout; a controller that authenticated stays."""
    with MessengerServer(router, SECRET, port=0, handshake_timeout=0.5) as server:
        controller, silent, partial, forger = (_raw(server) for _ in range(4))
        with controller, silent, partial, forger:
            assert _send(controller, make_request(SECRET, "ping", {}, request_id="1"))["ok"]
            partial.sendall(b"\x00")
            forged = _send(
                forger, make_request(b"not the secret at all!", "ping", {}, request_id="3")
            )
            assert forged["error"]["type"] == "Unauthenticated"
            for sock in (silent, partial, forger):
                sock.settimeout(5)
                assert sock.recv(1) == b""  # closed by the server
            assert server.counters["connections.closed.handshake"] == 3
            assert server.connections == 1
            reply = _send(controller, make_request(SECRET, "ping", {}, request_id="2"))
            assert reply["ok"] is True
    assert "sent no authenticated request within 0.5 s" in caplog.text


# -- concurrency and life cycle ----------------------------------------------------------


def test_many_clients_at_once(server: MessengerServer, router: FakeRouter) -> None:
    failures: list[BaseException] = []

    def controller(index: int) -> None:
        try:
            with MessengerClient("127.0.0.1", server.port, SECRET, timeout=5) as messenger:
                for n in range(10):
                    mac = f"02:00:00:00:{index:02x}:{n:02x}"
                    messenger.call("host_nic_add", mac=mac, ip=f"10.0.{index}.{n + 2}")
                    messenger.call("hosts")
        except BaseException as exc:  # reported to the test thread below
            failures.append(exc)

    workers = [threading.Thread(target=controller, args=(i,)) for i in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(10)
    assert not failures
    assert len(router.host_table) == 80
    assert server.counters["replies.ok"] == 160


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_stop_leaves_no_thread_or_socket(router: FakeRouter) -> None:
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    server = MessengerServer(router, SECRET, port=0)
    server.start()
    port = server.port
    client = MessengerClient("127.0.0.1", port, SECRET)
    client.call("ping")
    idle = _raw(server)
    assert _wait_for(lambda: server.connections == 2)
    server.stop()
    assert not server.running
    assert idle.recv(1) == b""
    idle.close()
    client.close()
    assert set(threading.enumerate()) == threads_before
    assert _open_fds() == fds_before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    server.stop()  # twice is harmless


# -- configuration -------------------------------------------------------------------------


def test_refuses_to_run_without_a_secret(router: FakeRouter) -> None:
    with pytest.raises(MessengerConfigError, match=r"^secret: "):
        MessengerServer(router, None)
    with pytest.raises(MessengerConfigError, match=r"^secret: "):
        MessengerServer(router, b"")
    with pytest.raises(MessengerConfigError, match=r"^host: "):
        MessengerServer(router, None, host="0.0.0.0", insecure=True)


def test_insecure_mode_on_loopback(router: FakeRouter) -> None:
    with MessengerServer(router, None, port=0, insecure=True) as server:
        with MessengerClient("127.0.0.1", server.port, insecure=True) as client:
            assert client.call("hosts") == []
        with _raw(server) as sock:
            reply = _send(sock, make_request(None, "ping", {}, request_id="1"))
            assert reply["ok"] is True and "mac" not in reply


def test_address_in_use_is_an_os_error(server: MessengerServer, router: FakeRouter) -> None:
    other = MessengerServer(router, SECRET, port=server.port)
    with pytest.raises(OSError):
        other.start()
    assert not other.running
