"""Errors raised by the lab.

`TopologyError` is a mistake in a topology description: it carries every issue
found, each with its file, line and field, so that a user fixes them all in one
pass. `LabOSError` is a failure of the kernel or of the system: it is an
`OSError` that keeps the errno and names the object it was about (a namespace,
an interface in a namespace, a process), and says which operation failed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pktchain.yamlfile import FileError, FileIssue


class LabError(Exception):
    """Base class of every error raised by `pktchain.lab`."""


TopologyIssue = FileIssue
"""One mistake in a topology: where it is and what is wrong."""


class TopologyError(LabError, FileError):
    """A topology description has one or more mistakes, all listed in `issues`."""

    def __init__(self, issues: Sequence[FileIssue]) -> None:
        FileError.__init__(self, issues)


class LabOSError(LabError, OSError):
    """A system call or netlink request failed.

    `errno` and `strerror` are the kernel's; `filename` names the object the
    request was about (``"pc-demo.h1"``, ``"pc-demo.h1/eth0"``, ``"pid 1234"``)
    and `operation` says what was being done.
    """

    def __init__(self, code: int, target: str, operation: str, detail: str = "") -> None:
        super().__init__(code, os.strerror(code), target)
        self.operation = operation
        self.detail = detail

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.operation} {self.filename}: {self.strerror}{extra}"


class LabExistsError(LabError):
    """A lab of that name is already up, or was left behind by a crash."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"lab {name!r} is already up or was left behind; "
            f"remove it first with `pktchain lab down --lab {name}`"
        )


class CommandTimeoutError(LabError):
    """A command run in a host did not finish in time; it has been killed."""

    def __init__(
        self, host: str, argv: Sequence[str], timeout: float, stdout: str, stderr: str
    ) -> None:
        self.host = host
        self.argv = tuple(argv)
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"{host}: {' '.join(argv)!r} did not finish within {timeout:g} s")


class CommandFailedError(LabError):
    """A command run in a host with ``check=True`` exited with a non-zero status."""

    def __init__(
        self, host: str, argv: Sequence[str], returncode: int, stdout: str, stderr: str
    ) -> None:
        self.host = host
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        last = stderr.strip().splitlines()[-1:] or [""]
        super().__init__(
            f"{host}: {' '.join(argv)!r} exited with status {returncode}"
            + (f": {last[0]}" if last[0] else "")
        )


class WaitTimeoutError(LabError, TimeoutError):
    """A condition polled for did not become true in time."""
