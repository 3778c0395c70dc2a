"""What pktchain is measured against, run inside lab hosts: Open vSwitch with its
userspace datapath, and nftables masquerade.

The kernel here has no openvswitch module, so Open vSwitch runs its `netdev`
datapath: ovs-vswitchd reads and writes the bridge's ports (veth ends in the
switch host's namespace) through packet sockets, as pktchain's veth ports do,
and forwards by the NORMAL action (MAC learning) of a bridge without
controller. With `userspace_tso` (the default) it keeps the hosts' 64 KB TCP
segments whole (virtio-net headers on its packet sockets), as pktchain does;
without it, a host's TSO frames would not fit its buffers.

Each Open vSwitch is private: its database, sockets, pid files and logs in a
directory of its own, its two daemons started in the switch host's namespace
by the lab (so that taking the lab down kills them, whatever happened) under
`timeout` (so that they end by themselves even if nothing takes them down),
and stopped when the context ends. Nothing of the machine's own Open vSwitch
(/etc/openvswitch, /run/openvswitch) is read or written.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from pktchain.lab import LabHost, wait_until

OVS_SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVS_PROGRAMS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl")


def ovs_missing() -> str | None:
    """Why Open vSwitch cannot run here, or None when it can."""
    for program in OVS_PROGRAMS:
        if shutil.which(program) is None:
            return f"{program} not found (scripts/install-deps installs openvswitch-switch)"
    if not OVS_SCHEMA.exists():
        return f"{OVS_SCHEMA} not found (openvswitch-common)"
    return None


class ContenderError(RuntimeError):
    """A contender could not be set up or read; the message says what failed, with
    the program's output (and Open vSwitch's log)."""


class OpenVswitch:
    """A private ovsdb-server and ovs-vswitchd in `host`, one netdev bridge over `ports`.

    ``with OpenVswitch(host, ["eth0", "eth1"], workdir) as ovs:`` switches
    between the hosts behind those interfaces of `host` until the block ends.
    `lifetime` bounds how long the daemons may live, in seconds.
    """

    def __init__(
        self,
        host: LabHost,
        ports: Sequence[str],
        workdir: Path,
        *,
        lifetime: float = 3600.0,
        userspace_tso: bool = True,
        timeout: float = 20.0,
    ) -> None:
        if not ports:
            raise ValueError("OpenVswitch needs at least one port")
        self.host = host
        self.ports = tuple(ports)
        self.dir = workdir
        self.bridge = f"ovs{secrets.token_hex(4)}"
        self.lifetime = lifetime
        self.userspace_tso = userspace_tso
        self.timeout = timeout
        self.db = self.dir / "conf.db"
        self.socket = self.dir / "db.sock"
        self.env = {
            **os.environ,
            "OVS_RUNDIR": str(self.dir),
            "OVS_DBDIR": str(self.dir),
            "OVS_LOGDIR": str(self.dir),
            "OVS_SYSCONFDIR": str(self.dir),
            "OVS_PKGDATADIR": str(OVS_SCHEMA.parent),
        }
        self.daemons: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- running its programs ---------------------------------------------

    def _run(self, argv: Sequence[str], *, log: str | None = None) -> str:
        try:
            done = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout + 10,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContenderError(f"{' '.join(argv)}: no answer in {exc.timeout} s") from None
        if done.returncode != 0:
            tail = ""
            if log is not None and (self.dir / log).exists():
                tail = "\n" + "\n".join((self.dir / log).read_text().splitlines()[-10:])
            raise ContenderError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}{tail}"
            )
        return done.stdout

    def vsctl(self, *args: str, wait: bool = True) -> str:
        """ovs-vsctl against this instance's database; with `wait`, until ovs-vswitchd
        has applied the change."""
        argv = ["ovs-vsctl", f"--db=unix:{self.socket}", f"--timeout={int(self.timeout)}"]
        if not wait:
            argv.append("--no-wait")
        return self._run([*argv, *args], log="ovs-vswitchd.log")

    def appctl(self, daemon: str, *args: str) -> str:
        """ovs-appctl to `daemon` ("ovs-vswitchd" or "ovsdb-server") of this instance."""
        target = self.dir / f"{daemon}.ctl"
        return self._run(["ovs-appctl", "-t", str(target), f"--timeout={int(self.timeout)}", *args])

    def _daemon(self, name: str, *args: str) -> None:
        argv = [
            "timeout",
            "--kill-after=5",
            str(int(self.lifetime)),
            name,
            *args,
            f"--pidfile={self.dir / f'{name}.pid'}",
            f"--unixctl={self.dir / f'{name}.ctl'}",
            f"--log-file={self.dir / f'{name}.log'}",
            "-vconsole:off",
        ]
        self.daemons.append((name, self.host.popen(argv, env=self.env)))

    def _alive(self) -> None:
        for name, process in self.daemons:
            if process.poll() is not None:
                raise ContenderError(f"{name} exited {process.returncode} (its log: {self.dir})")

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        reason = ovs_missing()
        if reason is not None:
            raise ContenderError(reason)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._run(["ovsdb-tool", "create", str(self.db), str(OVS_SCHEMA)])
        self._daemon("ovsdb-server", str(self.db), f"--remote=punix:{self.socket}")

        def db_ready() -> bool:
            self._alive()
            return self.socket.exists()

        wait_until(db_ready, timeout=self.timeout, what="ovsdb-server's socket")
        self.vsctl("init", wait=False)
        if self.userspace_tso:
            # Read once, when ovs-vswitchd starts.
            self.vsctl(
                "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true", wait=False
            )
        self._daemon("ovs-vswitchd", f"unix:{self.socket}")
        add = ["add-br", self.bridge, "--", "set", "Bridge", self.bridge, "datapath_type=netdev"]
        for port in self.ports:
            add += ["--", "add-port", self.bridge, port]
        self.vsctl(*add)

        def ports_ready() -> bool:
            self._alive()
            for port in self.ports:
                if self.vsctl("get", "Interface", port, "ofport").strip() in ("", "-1", "[]"):
                    return False
            return True

        wait_until(ports_ready, timeout=self.timeout, what=f"Open vSwitch ports {self.ports}")
        for port in self.ports:
            error = self.vsctl("get", "Interface", port, "error").strip()
            if error not in ("[]", '""'):
                raise ContenderError(f"Open vSwitch port {port}: {error}")

    def stop(self) -> None:
        """Ask both daemons to exit, then end what is left of them; safe to call twice."""
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            if (self.dir / f"{daemon}.ctl").exists():
                with suppress(ContenderError):
                    self.appctl(daemon, "exit")
        for _, process in self.daemons:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        self.daemons.clear()

    def __enter__(self) -> OpenVswitch:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def flows(self) -> str:
        """The datapath's flows (``dpctl/dump-flows``): what the NORMAL action installed."""
        return self.appctl("ovs-vswitchd", "dpctl/dump-flows")


def masquerade(
    host: LabHost, *, inside: str, outside_ifname: str, table: str = "pktchain_bench"
) -> None:
    """Make `host` a NAT router: IPv4 forwarding on, and nftables masquerade for the
    source network `inside` leaving by `outside_ifname` (counted)."""
    host.sysctl("net.ipv4.ip_forward", 1)
    rules = (
        f"table ip {table} {{\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        f'    ip saddr {inside} oifname "{outside_ifname}" counter masquerade\n'
        "  }\n"
        "}\n"
    )
    host.run(["nft", "-f", "-"], input=rules, check=True)


def masqueraded_packets(host: LabHost, table: str = "pktchain_bench") -> int:
    """Packets the masquerade rule of `masquerade` has counted (a connection's first)."""
    listing = host.run(["nft", "list", "table", "ip", table], check=True).stdout
    for line in listing.splitlines():
        if "masquerade" in line and "packets" in line:
            words = line.split()
            return int(words[words.index("packets") + 1])
    raise ContenderError(f"no masquerade counter in table {table}: {listing}")
