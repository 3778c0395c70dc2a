"""Named network namespaces and the processes inside them.

A named namespace is a bind mount of ``/proc/<pid>/ns/net`` under
``/run/netns`` (the convention of iproute2, which pyroute2 follows), so that
`ip netns`, `nsenter --net=` and pyroute2 all see the lab's namespaces.

Code enters a namespace only in the calling thread (`entered`, which is
:func:`pktchain.linux.netns.entered` with the lab's errors): sockets and
``/proc/sys/net`` files opened inside the block belong to that namespace and
keep belonging to it afterwards, while the rest of the process is unaffected.

Processes are found by the identity of their namespace (device and inode of
``/proc/<pid>/ns/net``), the only reliable test: a process started in a lab
host may have forked, renamed itself or changed process group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable, Iterator

from pyroute2 import netns as pyroute2_netns

from pktchain.lab.errors import LabOSError
from pktchain.linux import netns
from pktchain.linux.netns import NETNS_RUN_DIR, netns_path

__all__ = [
    "NETNS_DIR",
    "NetnsId",
    "create_netns",
    "delete_netns",
    "entered",
    "list_netns",
    "netns_exists",
    "netns_id",
    "netns_path",
    "pids_in_netns",
    "process_alive",
    "process_netns",
    "process_start_time",
    "read_sysctl",
    "terminate",
    "write_sysctl",
]

NETNS_DIR = NETNS_RUN_DIR
NetnsId = tuple[int, int]  # (st_dev, st_ino) of the namespace file


def list_netns() -> list[str]:
    """Names of every named network namespace on the machine, sorted."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def netns_id(name: str) -> NetnsId | None:
    """The identity of a named namespace, or None if there is no such name."""
    try:
        st = os.stat(netns_path(name))
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def create_netns(name: str) -> None:
    """Create a named network namespace; EEXIST if the name is taken."""
    if netns_exists(name):
        raise LabOSError(errno.EEXIST, name, "create namespace")
    try:
        pyroute2_netns.create(name)
    except OSError as exc:
        raise LabOSError(exc.errno or errno.EIO, name, "create namespace") from exc


def delete_netns(name: str) -> bool:
    """Unmount and unlink a named namespace; False if it did not exist.

    The namespace itself, with its interfaces, goes away when the last process,
    socket or file descriptor using it goes: kill the processes first.
    """
    if not os.path.lexists(netns_path(name)):
        return False
    try:
        pyroute2_netns.remove(name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise LabOSError(exc.errno or errno.EIO, name, "delete namespace") from exc
    return True


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with the calling thread inside namespace `name`.

    A namespace that cannot be opened or entered is a `LabOSError` naming it.
    """
    with contextlib.ExitStack() as inside:
        try:
            inside.enter_context(netns.entered(name))
        except netns.NetnsError as exc:
            raise LabOSError(exc.errno or errno.EIO, name, f"{exc.operation} namespace") from exc
        yield


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def write_sysctl(netns: str, key: str, value: str | int) -> None:
    """Set a ``net.*`` sysctl inside a namespace, e.g. ``net.ipv4.ip_forward``."""
    if not key.startswith("net."):
        raise ValueError(f"{key}: only net.* sysctls belong to a network namespace")
    with entered(netns):
        try:
            with open(_sysctl_path(key), "w", encoding="ascii") as file:
                file.write(f"{value}\n")
        except OSError as exc:
            raise LabOSError(exc.errno or errno.EIO, f"{netns}:{key}", "set sysctl") from exc


def read_sysctl(netns: str, key: str) -> str:
    """Read a ``net.*`` sysctl inside a namespace."""
    with entered(netns):
        try:
            with open(_sysctl_path(key), encoding="ascii") as file:
                return file.read().strip()
        except OSError as exc:
            raise LabOSError(exc.errno or errno.EIO, f"{netns}:{key}", "read sysctl") from exc


# --------------------------------------------------------------------------
# Processes


def process_netns(pid: int) -> NetnsId | None:
    """The namespace identity of a process, or None if it is gone."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return (st.st_dev, st.st_ino)


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (``/proc/PID/stat`` field 22).

    With the pid it identifies one process: pids are reused, start times are not.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[19])


def process_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat[stat.rfind(")") + 2 :][:1]
    return state not in ("Z", "X")


def pids_in_netns(ids: Iterable[NetnsId]) -> dict[NetnsId, list[int]]:
    """Processes (other than this one) whose network namespace is one of `ids`."""
    wanted = set(ids)
    found: dict[NetnsId, list[int]] = {}
    if not wanted:
        return found
    own = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        ns = process_netns(int(entry))
        if ns in wanted:
            found.setdefault(ns, []).append(int(entry))
    return found


def terminate(pids: Iterable[int], *, groups: bool = False, grace: float = 2.0) -> list[int]:
    """SIGTERM the processes, SIGKILL those still alive after `grace` seconds.

    With `groups`, each pid is also a process group leader and the whole group
    is signalled. Returns the pids that were alive when this started.
    """
    alive = [pid for pid in dict.fromkeys(pids) if process_alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            _signal(pid, sig, groups)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if not any(process_alive(pid) for pid in alive):
                return alive
            time.sleep(0.01)
    still = [pid for pid in alive if process_alive(pid)]
    if still:
        raise LabOSError(errno.EBUSY, f"pids {still}", "kill", "still alive after SIGKILL")
    return alive


def _signal(pid: int, sig: signal.Signals, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                os.kill(pid, sig)  # no longer a group leader, or never was
        else:
            os.kill(pid, sig)
