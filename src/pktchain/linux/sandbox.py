"""Running work on a copy-on-write copy of the process: what a dry run is made of.

`fork_call(work)` forks; the child runs `work()`, which may change anything
it likes (its memory is the kernel's copy-on-write copy of the parent's, so
nothing it does reaches the parent), writes the JSON of what `work` returned
to a pipe and exits at once with `os._exit` (no atexit handlers, no buffered
output flushed twice). The parent gets a `ForkedCall`: a pipe to read when it
is readable (from an event loop), or `wait(timeout)`.

A fork costs the copy of the page tables (about a millisecond per 100 MB of
the parent's memory on these machines) and the pages the child writes, not a
copy of the state: a dry run over a 262,144-session NAT table copies the few
pages the packet's lookups touch.

Work run this way must not write to the parent's file descriptors (it would
send real frames, or bytes on the parent's connections): the child holds
them all. Its callers replace every way out before doing anything (see
`pktchain.node.dataplane.dryrun`). The child's logging is switched off: a log
line from it would be a second copy of a line about something that did not
happen. Python re-creates the interpreter's and the logging module's locks in
a forked child, so another thread of the parent holding one cannot block it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["ForkedCall", "SandboxError", "fork_call", "run_forked"]

MAX_RESULT = 16 * 1024 * 1024
"""The most bytes of JSON a child may hand back."""


class SandboxError(Exception):
    """The forked work failed, timed out, or handed back something unreadable."""


class ForkedCall:
    """A child running forked work; read its result from `fd` or with `wait`."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False

    def read(self) -> bool:
        """Read what the pipe holds (it is non-blocking); True once the child has closed it."""
        if self._done:
            return True
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not chunk:
                self._done = True
                return True
            self._size += len(chunk)
            if self._size > MAX_RESULT:
                self._done = True
                self._chunks = [b'{"error": "result too large"}']
                return True
            self._chunks.append(chunk)

    def result(self) -> Any:
        """What the work returned (after `read` said True); SandboxError if it raised."""
        self.close()
        data = b"".join(self._chunks)
        try:
            reply = json.loads(data)
        except ValueError as exc:
            raise SandboxError("the forked work ended without a result") from exc
        if not isinstance(reply, dict) or ("value" not in reply and "error" not in reply):
            raise SandboxError("the forked work handed back an unexpected result")
        if "error" in reply:
            raise SandboxError(str(reply["error"]))
        return reply["value"]

    def wait(self, timeout: float) -> Any:
        """Block until the child is done (at most `timeout` seconds) and return its result."""
        deadline = time.monotonic() + timeout
        while not self.read():
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise SandboxError(f"the forked work did not finish within {timeout:g} s")
            select.select([self.fd], [], [], left)
        return self.result()

    def kill(self) -> None:
        """Stop the child (a timeout) and forget it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """Close the pipe and reap the child (it has exited, or been killed)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.pid > 0:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = 0


def fork_call(work: Callable[[], Any]) -> ForkedCall:
    """Run `work` in a forked child; its return value must be JSON-serializable."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 0
        try:
            os.close(read_fd)
            logging.disable(logging.CRITICAL)
            try:
                reply: dict[str, Any] = {"value": work()}
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            data = json.dumps(reply).encode()
            view = memoryview(data)
            while view:
                written = os.write(write_fd, view)
                view = view[written:]
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    return ForkedCall(pid, read_fd)


def run_forked(work: Callable[[], Any], timeout: float = 10.0) -> Any:
    """`fork_call(work)` and wait for its result."""
    return fork_call(work).wait(timeout)
