"""Entering a network namespace: ``setns(2)`` on the calling thread, and back.

``setns(fd, CLONE_NEWNET)`` changes the network namespace of the calling
thread only. :func:`entered` uses that: the block runs with this thread in the
namespace, so sockets, TUN devices and ``/proc/sys/net`` files opened inside it
belong to the namespace (and keep belonging to it afterwards), and the thread
then returns to the namespace it came from, read from
``/proc/thread-self/ns/net`` (not ``/proc/self``, which is the main thread's:
a worker thread must come back to its own namespace, whatever the main thread
did). Other threads never move.

A namespace is named as ``ip netns`` names it (a bind mount under
``/run/netns``), or by a path such as ``/proc/PID/ns/net``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path

__all__ = [
    "CLONE_NEWNET",
    "NETNS_RUN_DIR",
    "NetnsError",
    "NetnsOperation",
    "enter",
    "entered",
    "netns_path",
    "thread_netns",
]

NETNS_RUN_DIR = Path("/run/netns")
"""Where ``ip netns add`` (and pyroute2) mount a named namespace."""
CLONE_NEWNET = 0x40000000  # linux/sched.h
THREAD_NETNS = "/proc/thread-self/ns/net"


class NetnsOperation(StrEnum):
    """What was being done with a namespace when it failed."""

    OPEN = "open"
    ENTER = "enter"
    RETURN = "return from"


class NetnsError(OSError):
    """Opening, entering or leaving a namespace failed; keeps the errno and names it.

    `filename` is the namespace's name (or path), `operation` what was being
    done with it.
    """

    def __init__(self, code: int, netns: str, operation: NetnsOperation) -> None:
        super().__init__(code, os.strerror(code), netns)
        self.operation = operation

    def __str__(self) -> str:
        return f"cannot {self.operation} network namespace {self.filename}: {self.strerror}"


def netns_path(name: str) -> str:
    """The file of namespace `name`: ``/run/netns/NAME``, or `name` itself if it is a path."""
    return name if "/" in name else str(NETNS_RUN_DIR / name)


def thread_netns() -> tuple[int, int]:
    """The identity (device, inode) of the calling thread's network namespace."""
    st = os.stat(THREAD_NETNS)
    return (st.st_dev, st.st_ino)


@contextlib.contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block with the calling thread inside namespace `name` (None: where it is).

    Raises :class:`NetnsError` if the namespace cannot be opened or entered.
    If the thread cannot go back, the error propagates: the thread must not
    carry on in the wrong namespace as if nothing happened.
    """
    if name is None:
        yield
        return
    home = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = _open(name)
        try:
            _setns(target, name)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(home, name, NetnsOperation.RETURN)
    finally:
        os.close(home)


def enter(name: str) -> None:
    """Move the calling thread into namespace `name` for good.

    For a command's ``--netns`` (as ``ip netns exec`` does): called by a
    single-threaded process before it opens anything, it moves the process.
    """
    target = _open(name)
    try:
        _setns(target, name)
    finally:
        os.close(target)


def _open(name: str) -> int:
    try:
        return os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NetnsError(exc.errno or errno.ENOENT, name, NetnsOperation.OPEN) from None


def _setns(fd: int, name: str, operation: NetnsOperation = NetnsOperation.ENTER) -> None:
    try:
        _SETNS(fd, CLONE_NEWNET)
    except OSError as exc:
        raise NetnsError(exc.errno or errno.EPERM, name, operation) from None


def _setns_call() -> Callable[[int, int], None]:
    """``os.setns`` (Python 3.12 and later), or libc's ``setns`` before."""
    setns: Callable[[int, int], None] | None = getattr(os, "setns", None)
    if setns is not None:
        return setns
    libc = ctypes.CDLL(None, use_errno=True)

    def libc_setns(fd: int, nstype: int) -> None:
        if libc.setns(fd, nstype) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    return libc_setns


_SETNS = _setns_call()
