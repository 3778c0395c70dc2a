"""recvmmsg / sendmmsg through ctypes, on a pair of Unix datagram sockets."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator

import pytest

from pktchain.linux.mmsg import ReceiveBatch, SendBatch


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    b.setblocking(False)
    with a, b:
        yield a, b


def test_one_call_reads_every_waiting_datagram_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    sent = [bytes([i]) * (1 + i * 7) for i in range(10)]
    for data in sent:
        a.send(data)
    batch = ReceiveBatch(b.fileno(), 16, 256)
    got = batch.receive()
    assert got == sent
    assert all(type(frame) is bytes for frame in got)
    with pytest.raises(BlockingIOError):
        batch.receive()


def test_a_limit_leaves_the_rest_waiting(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    for i in range(5):
        a.send(b"frame %d" % i)
    batch = ReceiveBatch(b.fileno(), 4, 64)
    assert batch.receive(2) == [b"frame 0", b"frame 1"]
    assert batch.receive(99) == [b"frame 2", b"frame 3", b"frame 4"]  # at most 4
    with pytest.raises(BlockingIOError):
        batch.receive()


def test_more_than_a_batch_takes_more_calls(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    for i in range(7):
        a.send(b"%d" % i)
    batch = ReceiveBatch(b.fileno(), 3, 8)
    assert batch.receive() == [b"0", b"1", b"2"]
    assert batch.receive() == [b"3", b"4", b"5"]
    assert batch.receive() == [b"6"]


def test_a_datagram_longer_than_a_buffer_is_cut_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.send(b"x" * 100)
    a.send(b"short")
    batch = ReceiveBatch(b.fileno(), 4, 32)
    assert batch.receive() == [b"x" * 32, b"short"]
    assert batch.truncated == 1


def test_a_frame_received_is_not_changed_by_the_next_call(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = ReceiveBatch(b.fileno(), 2, 16)
    a.send(b"first")
    (first,) = batch.receive()
    a.send(b"second")
    assert batch.receive() == [b"second"]
    assert first == b"first"


def test_a_closed_descriptor_is_an_os_error() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    batch = ReceiveBatch(b.fileno(), 2, 16)
    a.close()
    b.close()
    with pytest.raises(OSError) as raised:
        batch.receive()
    assert raised.value.errno == errno.EBADF


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="count and size"):
        ReceiveBatch(0, 0, 16)
    with pytest.raises(ValueError, match="count"):
        SendBatch(0, 0)


def test_a_flush_sends_what_was_queued_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = SendBatch(a.fileno(), 8)
    frames = [b"one", bytearray(b"two"), memoryview(b"three")]
    for frame in frames:
        assert batch.queue(frame) == []
    assert len(batch) == 3
    assert batch.flush() == []
    assert len(batch) == 0
    assert batch.flushes == 1
    assert ReceiveBatch(b.fileno(), 8, 16).receive() == [b"one", b"two", b"three"]
    assert batch.flush() == []  # nothing queued: no call
    assert batch.flushes == 1


def test_a_bytearray_is_copied_when_queued(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    batch = SendBatch(a.fileno(), 4)
    buffer = bytearray(b"before")
    batch.queue(buffer)
    buffer[:] = b"AFTER!"
    batch.flush()
    assert b.recv(16) == b"before"


def test_a_full_batch_is_flushed_before_the_next_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    batch = SendBatch(a.fileno(), 2)
    batch.queue(b"1")
    batch.queue(b"2")
    batch.queue(b"3")  # flushes 1 and 2
    assert batch.flushes == 1 and len(batch) == 1
    assert ReceiveBatch(b.fileno(), 4, 4).receive() == [b"1", b"2"]
    batch.flush()
    assert b.recv(4) == b"3"


def test_a_refused_frame_is_reported_and_the_rest_go_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    too_big = b"z" * (a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) * 2 + 1)
    batch = SendBatch(a.fileno(), 8)
    for frame in (b"ok 1", too_big, b"ok 2", too_big):
        batch.queue(frame)
    failures = batch.flush()
    assert [(f.size, f.code) for f in failures] == [
        (len(too_big), errno.EMSGSIZE),
        (len(too_big), errno.EMSGSIZE),
    ]
    assert ReceiveBatch(b.fileno(), 8, 16).receive() == [b"ok 1", b"ok 2"]


def test_each_datagram_gets_its_own_ancillary_data(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    for i in range(3):
        a.send(b"%d" % i)
    # struct cmsghdr (16 bytes) + struct ucred {pid, uid, gid}: 28, in 32 bytes of room.
    batch = ReceiveBatch(b.fileno(), 4, 16, control=32)
    assert batch.receive() == [b"0", b"1", b"2"]
    words, stride = batch.control_words, batch.control_stride
    assert stride == 8
    for i in range(3):
        base = i * stride
        assert batch.control_length(i) >= 28
        level, kind, pid = words[base + 2], words[base + 3], words[base + 4]
        assert (level, kind, pid) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, os.getpid())
    a.send(b"again")  # the room is given afresh on each call
    assert batch.receive() == [b"again"]
    assert batch.control_length(0) >= 28
