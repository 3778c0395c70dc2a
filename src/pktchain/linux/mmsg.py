"""Many datagrams per system call: ``recvmmsg(2)`` and ``sendmmsg(2)`` through ctypes.

Python's socket module reads and writes one datagram per call, paying the
call's own cost (entering the kernel, the method call, a new buffer) for
every frame. `ReceiveBatch` reads up to its `count` datagrams in one
``recvmmsg`` into buffers allocated once (the node's AF_PACKET and veth ports
read so); `SendBatch` writes the frames queued on it in one ``sendmmsg`` (for
traffic generators and measurements: on a veth the kernel's own work per
frame is nearly all of a write's cost, docs/benchmarks.md). Both work on any
datagram or packet socket; each is bound to one descriptor.

The C structures (``<sys/socket.h>``, ``<bits/uio.h>``) are declared once
below. A frame to send is given as ``bytes`` (or a ``bytearray``, which is
copied when queued, so that a caller may rewrite its buffer afterwards): the
iovec points into the ``bytes`` object itself, which the batch holds until it
is flushed.
"""

from __future__ import annotations

import ctypes
import errno
import os

__all__ = ["MSG_DONTWAIT", "MSG_TRUNC", "ReceiveBatch", "SendBatch", "SendFailure"]

MSG_DONTWAIT = 0x40  # linux/socket.h
MSG_TRUNC = 0x20


class _IoVec(ctypes.Structure):
    """struct iovec { void *iov_base; size_t iov_len; }"""

    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _OutVec(ctypes.Structure):
    """struct iovec, its base given as bytes: ctypes points at the object's own
    buffer (no copy) and keeps a reference to it."""

    _fields_ = [("iov_base", ctypes.c_char_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    """struct msghdr (64-bit Linux layout)."""

    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    """struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; }"""

    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_MMSG_WORDS = ctypes.sizeof(_MMsgHdr) // 4
_LEN_WORD = _MMsgHdr.msg_len.offset // 4
_FLAGS_WORD = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset) // 4
# msg_controllen is a size_t: its low half on a little-endian machine, the only
# kind pktchain runs on (x86-64, arm64).
_CONTROLLEN_WORD = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_controllen.offset) // 4


# The C library the interpreter is linked with, without looking for it on disk
# (ctypes.util.find_library runs a program).
_LIBC = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _LIBC.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_sendmmsg = _LIBC.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


def _raise_errno() -> None:
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        raise BlockingIOError(code, os.strerror(code))
    raise OSError(code, os.strerror(code))


class ReceiveBatch:
    """Up to `count` datagrams of at most `size` bytes each per ``recvmmsg`` on `fd`.

    The buffers are one ``bytearray`` allocated here; each call copies the
    datagrams it read out of it as ``bytes``. With `control`, each datagram
    also gets that many bytes of ancillary data (``msg_control``), left in
    place for the caller to read after the call: `control_words` holds them
    as native unsigned ints, `control_stride` of them per datagram, and
    `control_length(i)` says how many bytes the kernel wrote for datagram `i`.
    """

    __slots__ = (
        "_arena",
        "_control",
        "_iovs",
        "_msgs",
        "_view",
        "_words",
        "control_stride",
        "control_words",
        "count",
        "fd",
        "size",
        "truncated",
    )

    def __init__(self, fd: int, count: int, size: int, *, control: int = 0) -> None:
        if count < 1 or size < 1 or control < 0:
            raise ValueError(
                f"a receive batch needs count and size ≥ 1, got {count}, {size} (control {control})"
            )
        self.fd = fd
        self.count = count
        self.size = size
        self.truncated = 0
        """Datagrams longer than `size`, cut to it (``MSG_TRUNC``)."""
        stride = (control + 7) // 8 * 8  # each message's control buffer 8-byte aligned
        self._control = (ctypes.c_uint64 * max(1, count * stride // 8))()
        self.control_stride = stride // 4
        self.control_words = memoryview(self._control).cast("B").cast("I")
        self._arena = bytearray(count * size)
        self._view = memoryview(self._arena)
        base = ctypes.addressof((ctypes.c_char * len(self._arena)).from_buffer(self._arena))
        iovs = (_IoVec * count)()
        msgs = (_MMsgHdr * count)()
        for i in range(count):
            iovs[i].iov_base = base + i * size
            iovs[i].iov_len = size
            msgs[i].msg_hdr.msg_iov = ctypes.addressof(iovs[i])
            msgs[i].msg_hdr.msg_iovlen = 1
            if stride:
                msgs[i].msg_hdr.msg_control = ctypes.addressof(self._control) + i * stride
        self._msgs = msgs
        # The kernel's answers (msg_len, msg_flags) read as unsigned ints, without
        # a ctypes attribute access per datagram.
        self._words = memoryview(msgs).cast("B").cast("I")
        self._iovs = iovs  # what the messages point at lives as long as the batch

    def receive(self, limit: int | None = None) -> list[bytes]:
        """The datagrams waiting, at most `limit` (default `count`), oldest first.

        Raises `BlockingIOError` when none is waiting, `OSError` (with the
        errno) when the kernel refuses.
        """
        want = self.count if limit is None or limit > self.count else limit
        words = self._words
        stride = self.control_stride
        if stride:
            # The kernel writes back how much it used: each call starts afresh.
            space = stride * 4
            for at in range(_CONTROLLEN_WORD, want * _MMSG_WORDS, _MMSG_WORDS):
                words[at] = space
        got = _recvmmsg(self.fd, self._msgs, want, MSG_DONTWAIT, None)
        if got < 0:
            _raise_errno()
        view = self._view
        size = self.size
        frames = []
        offset = 0
        at = 0
        for _ in range(got):
            length = words[at + _LEN_WORD]
            if length > size or words[at + _FLAGS_WORD] & MSG_TRUNC:
                self.truncated += 1
                length = size
            frames.append(bytes(view[offset : offset + length]))
            offset += size
            at += _MMSG_WORDS
        return frames

    def control_length(self, index: int) -> int:
        """Bytes of ancillary data the kernel wrote for datagram `index` of the last call."""
        return self._words[index * _MMSG_WORDS + _CONTROLLEN_WORD]


class SendFailure:
    """What the kernel refused of a flush: the frame's size and the errno, in order."""

    __slots__ = ("code", "size")

    def __init__(self, size: int, code: int) -> None:
        self.size = size
        self.code = code


class SendBatch:
    """Frames queued for `fd`, written together by `flush` in ``sendmmsg`` calls.

    At most `count` frames wait: queueing one more flushes the batch first.
    """

    __slots__ = ("_frames", "_msgs", "_vecs", "count", "fd", "flushes")

    def __init__(self, fd: int, count: int) -> None:
        if count < 1:
            raise ValueError(f"a send batch needs count ≥ 1, got {count}")
        self.fd = fd
        self.count = count
        self.flushes = 0
        """``sendmmsg`` calls made."""
        self._frames: list[bytes] = []
        self._vecs = (_OutVec * count)()
        msgs = (_MMsgHdr * count)()
        for i in range(count):
            msgs[i].msg_hdr.msg_iov = ctypes.addressof(self._vecs[i])
            msgs[i].msg_hdr.msg_iovlen = 1
        self._msgs = msgs

    def __len__(self) -> int:
        return len(self._frames)

    def queue(self, frame: bytes | bytearray | memoryview) -> list[SendFailure]:
        """Queue one frame; returns what a flush forced by a full batch refused."""
        failures = self.flush() if len(self._frames) >= self.count else []
        self._frames.append(frame if type(frame) is bytes else bytes(frame))
        return failures

    def flush(self) -> list[SendFailure]:
        """Write every queued frame; returns those the kernel refused (empty: all sent).

        ``sendmmsg`` stops at the first frame the kernel refuses: the frames
        before it are reported sent, and the next call starts with it; a call
        whose first frame is refused fails with that frame's errno, and the
        frame is counted refused and skipped.
        """
        frames = self._frames
        if not frames:
            return []
        self._frames = []
        vecs = self._vecs
        for i, frame in enumerate(frames):
            vec = vecs[i]
            vec.iov_base = frame
            vec.iov_len = len(frame)
        failures: list[SendFailure] = []
        start, end = 0, len(frames)
        msgs = ctypes.addressof(self._msgs)
        step = ctypes.sizeof(_MMsgHdr)
        while start < end:
            self.flushes += 1
            sent = _sendmmsg(self.fd, msgs + start * step, end - start, MSG_DONTWAIT)
            if sent <= 0:
                code = ctypes.get_errno() if sent < 0 else errno.EAGAIN
                failures.append(SendFailure(len(frames[start]), code))
                start += 1
            else:
                start += sent
        for i in range(end):
            vecs[i].iov_base = None  # the frames are not held past the flush
        return failures
