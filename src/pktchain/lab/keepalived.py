"""keepalived and conntrackd in lab hosts: the reference router pair.

A pair of Linux routers that share virtual addresses with VRRP (keepalived)
and, optionally, copy their connection tracking table to each other
(conntrackd, FTFW mode over a dedicated link) is the classic highly available
NAT router. The lab runs one in two hosts so that pktchain's own router pair
can be measured against it, and interoperates with it.

`KeepalivedConfig` and `ConntrackdConfig` render the daemons' configuration
files (every path inside a working directory of the caller, so that several
instances never share a pid file, lock or socket); `Keepalived` and
`Conntrackd` run one daemon in a host's namespace (through nsenter), each in
its own process group, so that `kill` ends all of a daemon's processes at once
as a crash would, and `stop` (SIGTERM) lets keepalived leave cleanly, sending
its last advertisement with priority 0 (RFC 5798, 6.4.3) so that the backup
takes over at once.

keepalived's notify script records each state change of the sync group
(``MASTER``, ``BACKUP``, ``FAULT``, ``STOP``) in a state file, and with
conntrackd it does what conntrackd's ``primary-backup.sh`` does: on becoming
master, commit the peer's connections to the kernel (``-c``), flush the caches
(``-f``), resynchronise from the kernel (``-R``) and send a bulk update
(``-B``); on becoming backup, request a resynchronisation (``-n``).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Self

from pktchain.lab.errors import LabError, LabOSError, WaitTimeoutError
from pktchain.lab.lab import nsenter_argv
from pktchain.lab.links import interface_addresses
from pktchain.lab.wait import wait_until

__all__ = [
    "Conntrackd",
    "ConntrackdConfig",
    "DaemonError",
    "Keepalived",
    "KeepalivedConfig",
    "KeepalivedInstance",
    "KeepalivedState",
    "find_program",
]

STOP_GRACE_S = 5.0


class DaemonError(LabError):
    """keepalived or conntrackd is missing, did not start, or failed a command."""


class KeepalivedState(StrEnum):
    """The states keepalived's notify script reports."""

    MASTER = "MASTER"
    BACKUP = "BACKUP"
    FAULT = "FAULT"
    STOP = "STOP"


def find_program(name: str, package: str) -> str:
    """The path of `name`; `DaemonError` naming the Debian package if it is missing."""
    for folder in ("", "/usr/sbin", "/sbin"):
        found = shutil.which(name, path=folder or None)
        if found is not None:
            return found
    raise DaemonError(f"{name} is not installed (Debian package {package}; scripts/install-deps)")


def _check_interface_name(where: str, name: str) -> None:
    if not name or len(name) > 15 or any(c.isspace() or c in "/{}\"'" for c in name):
        raise ValueError(f"{where}: not an interface name: {name!r}")


@dataclass(frozen=True)
class KeepalivedInstance:
    """One virtual router: its VRID on an interface, this router's priority, its addresses.

    `addresses` are IPv4 interfaces (``10.0.0.1/24``). `advert_int` is in
    seconds; VRRPv3 counts it in centiseconds (RFC 5798, 5.2.7), so 0.01 to
    40.95.
    """

    name: str
    interface: str
    vrid: int
    priority: int
    addresses: tuple[str, ...]
    advert_int: float = 0.1
    preempt: bool = True

    def __post_init__(self) -> None:
        where = f"vrrp instance {self.name!r}"
        if not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{where}: name: letters, digits, '-' and '_' only")
        _check_interface_name(f"{where}: interface", self.interface)
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"{where}: vrid: expected 1 to 255, got {self.vrid}")
        if not 1 <= self.priority <= 254:
            raise ValueError(f"{where}: priority: expected 1 to 254, got {self.priority}")
        if not 0.01 <= self.advert_int <= 40.95:
            raise ValueError(f"{where}: advert_int: expected 0.01 to 40.95 s")
        if not self.addresses:
            raise ValueError(f"{where}: addresses: at least one")
        for address in self.addresses:
            try:
                parsed = ipaddress.ip_interface(address)
            except ValueError:
                raise ValueError(
                    f"{where}: addresses: not an address/prefix: {address!r}"
                ) from None
            if parsed.version != 4 or "/" not in address:
                raise ValueError(f"{where}: addresses: expected IPv4 with a prefix: {address!r}")

    def interfaces(self) -> list[ipaddress.IPv4Interface]:
        return [ipaddress.IPv4Interface(a) for a in self.addresses]


@dataclass(frozen=True)
class KeepalivedConfig:
    """A keepalived that runs VRRPv3 instances, all in one sync group.

    The sync group makes the instances change state together (a router that
    is master of the inside address is master of the outside one too).
    `track_interfaces` are the group's tracked interfaces, each ``(name,
    weight)``: while one is down, every instance's priority is lowered by
    the weight's absolute value (a negative weight, -253 to -1).
    """

    router_id: str
    instances: tuple[KeepalivedInstance, ...]
    group: str = "router"
    track_interfaces: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError("keepalived: instances: at least one")
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names):
            raise ValueError(f"keepalived: instances: names repeat: {names}")
        for interface, weight in self.track_interfaces:
            _check_interface_name("keepalived: track_interfaces", interface)
            if not -253 <= weight <= -1:
                raise ValueError(
                    f"keepalived: track_interfaces: {interface}: weight: expected -253 to -1,"
                    f" got {weight}"
                )

    def render(self, notify: Path) -> str:
        """keepalived.conf, calling `notify` on each state change of the group."""
        lines = [
            "global_defs {",
            f"    router_id {self.router_id}",
            "    vrrp_version 3",
            "    script_user root",
            "    enable_script_security",
            "}",
            "",
            f"vrrp_sync_group {self.group} {{",
            "    group {",
            *(f"        {i.name}" for i in self.instances),
            "    }",
            *self._tracking(),
            f"    notify {notify}",
            "}",
        ]
        for instance in self.instances:
            lines += [
                "",
                f"vrrp_instance {instance.name} {{",
                "    state BACKUP",
                f"    interface {instance.interface}",
                f"    virtual_router_id {instance.vrid}",
                f"    priority {instance.priority}",
                f"    advert_int {instance.advert_int:g}",
                *([] if instance.preempt else ["    nopreempt"]),
                "    virtual_ipaddress {",
                *(f"        {a} dev {instance.interface}" for a in instance.addresses),
                "    }",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def _tracking(self) -> list[str]:
        if not self.track_interfaces:
            return []
        return [
            "    track_interface {",
            *(f"        {name} weight {weight}" for name, weight in self.track_interfaces),
            "    }",
        ]


@dataclass(frozen=True)
class ConntrackdConfig:
    """conntrackd in FTFW mode, over UDP on a link dedicated to it.

    `ignore` lists addresses whose connections are not copied: the router's
    own (connections to or from the router itself). A NAT's shared outside
    address must not be among them: the mappings to it are what the backup
    needs.
    """

    interface: str
    address: str
    peer: str
    ignore: tuple[str, ...] = ()
    port: int = 3780
    protocols: tuple[str, ...] = ("TCP", "UDP", "ICMP")

    def __post_init__(self) -> None:
        _check_interface_name("conntrackd: interface", self.interface)
        for where, value in (
            ("address", self.address),
            ("peer", self.peer),
            *(("ignore", a) for a in self.ignore),
        ):
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise ValueError(f"conntrackd: {where}: not an IPv4 address: {value!r}") from None

    def render(self, workdir: Path) -> str:
        """conntrackd.conf with its lock and control socket in `workdir`."""
        ignore = ["127.0.0.1", self.address, *self.ignore]
        return "\n".join(
            [
                "Sync {",
                "    Mode FTFW {",
                "        ResendQueueSize 131072",
                "        CommitTimeout 180",
                "        PurgeTimeout 5",
                "        ACKWindowSize 300",
                "        DisableExternalCache Off",
                "    }",
                "    UDP {",
                f"        IPv4_address {self.address}",
                f"        IPv4_Destination_Address {self.peer}",
                f"        Port {self.port}",
                f"        Interface {self.interface}",
                "        SndSocketBuffer 1249280",
                "        RcvSocketBuffer 1249280",
                "        Checksum on",
                "    }",
                "}",
                "General {",
                "    Systemd off",
                "    HashSize 32768",
                "    HashLimit 131072",
                f"    LogFile {workdir / 'conntrackd.log'}",
                "    Syslog off",
                f"    LockFile {workdir / 'conntrackd.lock'}",
                "    UNIX {",
                f"        Path {workdir / 'conntrackd.ctl'}",
                "    }",
                "    NetlinkBufferSize 2097152",
                "    NetlinkBufferSizeMaxGrowth 8388608",
                "    NetlinkEventsReliable On",
                "    Filter From Kernelspace {",
                "        Protocol Accept {",
                *(f"            {p}" for p in self.protocols),
                "        }",
                "        Address Ignore {",
                *(f"            IPv4_address {a}" for a in dict.fromkeys(ignore)),
                "        }",
                "    }",
                "}",
                "",
            ]
        )


@dataclass
class _Daemon:
    """A daemon in its own process group in a namespace, its output in a log file."""

    what: str
    netns: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.what}.out"

    def _spawn(self, argv: Sequence[str]) -> None:
        if self.running:
            raise DaemonError(f"{self.what} in {self.netns}: already running")
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                nsenter_argv(self.netns, argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_words(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def kill(self) -> None:
        """SIGKILL the daemon and every process of its group, as a crash would; reap it.

        The group is stopped first: keepalived's VRRP process asks for SIGTERM
        when its parent dies (``PR_SET_PDEATHSIG``), and one that saw its
        parent die first would leave cleanly, advertising priority 0.
        """
        process = self.process
        if process is None:
            return
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for kill in (os.killpg, os.kill):
                with contextlib.suppress(ProcessLookupError):
                    kill(process.pid, sig)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            raise LabOSError(errno.EBUSY, f"pid {process.pid}", f"kill {self.what}") from None

    def stop(self, timeout: float = STOP_GRACE_S) -> int:
        """SIGTERM the daemon and wait; SIGKILL it after `timeout` s. Returns its status."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # What the daemon forked (notify scripts) goes with its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()


class Conntrackd(_Daemon):
    """conntrackd in a namespace, with its files in `workdir`."""

    def __init__(self, netns: str, config: ConntrackdConfig, workdir: Path) -> None:
        super().__init__("conntrackd", netns, workdir)
        self.config = config
        self.program = find_program("conntrackd", "conntrackd")
        self.path = workdir / "conntrackd.conf"

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers on its control socket."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.config.render(self.workdir))
        # A lock left by a killed instance would stop the next one.
        (self.workdir / "conntrackd.lock").unlink(missing_ok=True)
        self._spawn([self.program, "-C", str(self.path)])
        try:
            wait_until(
                lambda: not self.running or self.command("-s", check=False).returncode == 0,
                timeout=timeout,
                what=f"conntrackd in {self.netns}",
            )
        except WaitTimeoutError:
            raise DaemonError(
                f"conntrackd in {self.netns} did not answer within {timeout:g} s: "
                f"{self.last_words()}"
            ) from None
        if not self.running:
            raise DaemonError(f"conntrackd in {self.netns} exited: {self.last_words()}")

    def command(self, *flags: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``conntrackd -C CONFIG FLAGS`` (``-s`` statistics, ``-c`` commit, ...)."""
        result = subprocess.run(
            nsenter_argv(self.netns, [self.program, "-C", str(self.path), *flags]),
            capture_output=True,
            text=True,
            timeout=10.0,
            check=False,
        )
        if check and result.returncode != 0:
            raise DaemonError(
                f"conntrackd {' '.join(flags)} in {self.netns} failed: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def notify_lines(self) -> list[str]:
        """The shell lines of the notify script for each state (primary-backup.sh)."""
        base = f"{shlex.quote(self.program)} -C {shlex.quote(str(self.path))}"
        return [
            "case $3 in",
            f"  MASTER) {base} -c; {base} -f; {base} -R; {base} -B ;;",
            f"  BACKUP) {base} -n ;;",
            "esac",
        ]


class Keepalived(_Daemon):
    """keepalived (VRRP only) in a namespace, with its files in `workdir`.

    With a `Conntrackd`, its notify script drives that conntrackd as
    conntrackd's own ``primary-backup.sh`` does.
    """

    def __init__(
        self,
        netns: str,
        config: KeepalivedConfig,
        workdir: Path,
        *,
        conntrackd: Conntrackd | None = None,
    ) -> None:
        super().__init__("keepalived", netns, workdir)
        self.config = config
        self.conntrackd = conntrackd
        self.program = find_program("keepalived", "keepalived")
        self.path = workdir / "keepalived.conf"
        self.states = workdir / "keepalived.states"
        self.notify = workdir / "notify.sh"

    def start(self, timeout: float = 10.0) -> None:
        """Start it; return once keepalived reports its first state (BACKUP, at start)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.states.unlink(missing_ok=True)
        script = [
            "#!/bin/sh",
            "# keepalived calls: notify GROUP|INSTANCE NAME STATE PRIORITY",
            f'echo "$3" >> {shlex.quote(str(self.states))}',
        ]
        if self.conntrackd is not None:
            script += self.conntrackd.notify_lines()
        self.notify.write_text("\n".join(script) + "\n")
        self.notify.chmod(0o755)
        self.path.write_text(self.config.render(self.notify))
        # Pid files left by a killed instance make keepalived refuse to start.
        for pidfile in ("keepalived.pid", "vrrp.pid"):
            (self.workdir / pidfile).unlink(missing_ok=True)
        argv = [
            self.program,
            "--vrrp",
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--no-syslog",
            f"--use-file={self.path}",
            f"--pid={self.workdir / 'keepalived.pid'}",
            f"--vrrp_pid={self.workdir / 'vrrp.pid'}",
        ]
        self._spawn(argv)
        try:
            wait_until(
                lambda: not self.running or self.state() is not None,
                timeout=timeout,
                what=f"keepalived in {self.netns}",
            )
        except WaitTimeoutError:
            raise DaemonError(
                f"keepalived in {self.netns} reported no state within {timeout:g} s: "
                f"{self.last_words()}"
            ) from None
        if not self.running:
            raise DaemonError(f"keepalived in {self.netns} exited: {self.last_words()}")

    def state(self) -> KeepalivedState | None:
        """The sync group's latest state, as the notify script recorded it."""
        with contextlib.suppress(OSError):
            lines = self.states.read_text().split()
            if lines:
                with contextlib.suppress(ValueError):
                    return KeepalivedState(lines[-1])
        return None

    def transitions(self) -> list[KeepalivedState]:
        """Every state the sync group reported since the last start, in order."""
        with contextlib.suppress(OSError):
            known = {state.value for state in KeepalivedState}
            return [KeepalivedState(w) for w in self.states.read_text().split() if w in known]
        return []

    def holds_addresses(self) -> bool:
        """Whether every virtual address of every instance is on this router now."""
        for instance in self.config.instances:
            present = set(interface_addresses(self.netns, instance.interface))
            if not all(a in present for a in instance.interfaces()):
                return False
        return True

    def holds_none(self) -> bool:
        """Whether no virtual address of any instance is on this router now."""
        for instance in self.config.instances:
            present = set(interface_addresses(self.netns, instance.interface))
            if any(a in present for a in instance.interfaces()):
                return False
        return True

    def is_master(self) -> bool:
        """Master by both accounts: the notify script said so and the addresses are here."""
        return self.running and self.state() is KeepalivedState.MASTER and self.holds_addresses()
