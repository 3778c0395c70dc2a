"""How pktchain's sockets are set up: listeners, packet-carrying streams, datagrams."""

from __future__ import annotations

import os
import socket

import pytest

from pktchain.linux.sockets import (
    IP_MTU_DISCOVER,
    PMTUDISC_DONT,
    Keepalive,
    address_family,
    is_loopback,
    tcp_listener,
    tune_stream,
    udp_socket,
)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_listener_is_bound_listening_and_non_blocking() -> None:
    with tcp_listener(("127.0.0.1", 0), backlog=4) as listener:
        port = listener.getsockname()[1]
        assert port != 0
        assert listener.getblocking() is False
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with pytest.raises(BlockingIOError):
            listener.accept()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_listener_on_a_taken_port_is_an_os_error_and_leaks_nothing() -> None:
    with tcp_listener(("127.0.0.1", 0), backlog=4) as taken:
        before = _open_fds()
        with pytest.raises(OSError) as caught:
            tcp_listener(taken.getsockname(), backlog=4)
        assert caught.value.errno is not None
        assert _open_fds() == before


def test_listener_family_follows_the_address() -> None:
    assert address_family("::1") == socket.AF_INET6
    assert address_family("10.0.0.1") == socket.AF_INET
    with tcp_listener(("::1", 0), backlog=1) as listener:
        assert listener.family == socket.AF_INET6


def test_stream_has_no_nagle_delay_and_the_keepalive_asked_for() -> None:
    with (
        tcp_listener(("127.0.0.1", 0), backlog=1) as listener,
        socket.create_connection(listener.getsockname(), timeout=5) as sock,
    ):
        tune_stream(sock, Keepalive(idle=7, interval=3, count=2))
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 3
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 2


def test_datagram_socket_may_fragment_and_is_connected_to_its_peer() -> None:
    with udp_socket(socket.AF_INET, bind=("127.0.0.1", 0), fragment=True) as server:
        assert server.getsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER) == PMTUDISC_DONT
        address = server.getsockname()
        with udp_socket(socket.AF_INET, connect=address) as client:
            assert client.getblocking() is False
            assert client.getpeername() == address
            client.send(b"hello")
            server.settimeout(5)
            data, source = server.recvfrom(100)
            assert data == b"hello" and source == client.getsockname()


def test_datagram_socket_that_cannot_bind_leaks_nothing() -> None:
    with udp_socket(socket.AF_INET, bind=("127.0.0.1", 0)) as taken:
        before = _open_fds()
        with pytest.raises(OSError):
            udp_socket(socket.AF_INET, bind=taken.getsockname())
        assert _open_fds() == before


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.1", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
