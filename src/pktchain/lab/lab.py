"""Running labs: bring a topology up, reach its hosts, take it all down again.

`Lab.up` creates, in order: the namespaces (the bridges' ``fabric`` namespace
first, the nodes' last) and the hosts' sysctls, the bridges (the underlay one
too, for a cluster topology), the veths between hosts, from hosts to bridges
and from nodes to the underlay, the interfaces' sysctls, MACs, MTUs and
addresses, then waits for every link to be up, adds the routes, starts the
cluster's etcd and waits until it answers, and starts the background
commands. Each namespace is written to the lab's journal before it is created
and each process right after it starts, so that `down` can remove a lab that
a crash left half made. Links need no journal entry: they live inside the
lab's namespaces and go with them, and the root namespace is never touched.

Commands run in a host through ``nsenter --net=/run/netns/<ns>``, not through
``setns`` in a ``preexec_fn``: a ``preexec_fn`` runs Python between fork and
exec, which is unsafe in a process with threads (pytest, the node), while
nsenter enters the namespace and then executes the command in place, so the
pid we track is the command's own.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from socket import AF_INET, SOCK_DGRAM, SOCK_STREAM, AddressFamily, SocketKind
from types import TracebackType
from typing import IO, Any

from pktchain.lab import namespaces
from pktchain.lab.errors import (
    CommandFailedError,
    CommandTimeoutError,
    LabError,
    LabExistsError,
    LabOSError,
    WaitTimeoutError,
)
from pktchain.lab.journal import (
    Journal,
    ProcessRecord,
    journaled_labs,
    log_dir,
    read_journal,
    remove_journal,
)
from pktchain.lab.links import Netlink, TcpConnection, wait_links_up
from pktchain.lab.topology import (
    UNDERLAY_BRIDGE,
    Attachment,
    Host,
    Route,
    Topology,
    lab_of_netns,
    load_topology,
    parse_topology,
    topology_from_dict,
)
from pktchain.lab.wait import wait_until

#: Set in every host before its own sysctls. Without duplicate address
#: detection, IPv6 addresses, link-local ones included, are usable as soon as
#: the lab is up: a router does not even send a neighbour solicitation for a
#: packet it forwards while its link-local address is tentative
#: (net/ipv6/ndisc.c, ndisc_send_ns).
LAB_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
)

TopologySource = Topology | Mapping[str, Any] | str | os.PathLike[str]
Stream = int | IO[Any] | None


def as_topology(source: TopologySource, *, name: str | None = None) -> Topology:
    """A `Topology` from a parsed one, a mapping, YAML text or a file path.

    A `str` holding a line break is YAML text; any other `str`, or a
    `os.PathLike`, is the path of a file. `name`, if given, replaces the lab
    name (namespace names follow).
    """
    if isinstance(source, Topology):
        return source if name is None else source.renamed(name)
    if isinstance(source, Mapping):
        return topology_from_dict(source, lab_name=name)
    if isinstance(source, str) and "\n" in source:
        return parse_topology(source, lab_name=name)
    return load_topology(Path(source), lab_name=name)


@dataclass(frozen=True)
class CommandResult:
    """How a command run in a host ended."""

    host: str
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> CommandResult:
        """Self if the command succeeded, else raise `CommandFailedError`."""
        if self.returncode != 0:
            raise CommandFailedError(
                self.host, self.argv, self.returncode, self.stdout, self.stderr
            )
        return self


@dataclass(frozen=True)
class Teardown:
    """What `down` removed."""

    lab: str
    netns: tuple[str, ...] = ()
    processes: tuple[int, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.netns or self.processes or self.files)


def nsenter_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside namespace `netns`."""
    if not namespaces.netns_exists(netns):
        raise LabOSError(errno.ENOENT, netns, "run a command in")
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise LabOSError(errno.ENOENT, "nsenter", "find program", "install util-linux")
    return [nsenter, f"--net={namespaces.netns_path(netns)}", "--", *argv]


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session`` and its group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()


class LabHost:
    """A host of a running lab: run commands in it, open sockets in it."""

    def __init__(self, lab: Lab, spec: Host) -> None:
        self.lab = lab
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def netns(self) -> str:
        """The network namespace name, e.g. ``pc-demo.h1``."""
        return self.spec.netns

    def __repr__(self) -> str:
        return f"<LabHost {self.name} netns={self.netns}>"

    def _argv(self, argv: Sequence[str]) -> list[str]:
        if isinstance(argv, str):
            raise TypeError("argv is a list of arguments, not a command line")
        if not argv:
            raise ValueError("empty argv")
        return nsenter_argv(self.netns, argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 30.0,
        check: bool = False,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        """Run a command to completion in this host and return its status and output.

        After `timeout` seconds the command and its process group are killed and
        `CommandTimeoutError` (holding the output so far) is raised. With `check`,
        a non-zero status raises `CommandFailedError`.
        """
        process = subprocess.Popen(
            self._argv(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
        try:
            out, err = process.communicate(
                None if input is None else input.encode(), timeout=timeout
            )
        except subprocess.TimeoutExpired:
            _kill_group(process)
            try:
                out, err = process.communicate(timeout=5.0)
            except subprocess.TimeoutExpired:
                # A process that left the group holds the pipes open.
                out, err = b"", b""
                process.kill()
                process.wait()
            raise CommandTimeoutError(self.name, argv, timeout, _text(out), _text(err)) from None
        except BaseException:
            _kill_group(process)
            process.wait()
            raise
        result = CommandResult(self.name, tuple(argv), process.returncode, _text(out), _text(err))
        return result.check() if check else result

    def popen(
        self,
        argv: Sequence[str],
        *,
        stdin: Stream = subprocess.DEVNULL,
        stdout: Stream = subprocess.DEVNULL,
        stderr: Stream = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a command in the background in this host.

        The process leads its own process group; the lab records it and kills
        the group when the lab is taken down.
        """
        process = subprocess.Popen(
            self._argv(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        self.lab._track(self.netns, process, argv)
        return process

    def socket(
        self,
        family: AddressFamily = AF_INET,
        kind: SocketKind = SOCK_DGRAM,
        proto: int = 0,
    ) -> socket.socket:
        """A socket that lives in this host's namespace (the caller closes it)."""
        with namespaces.entered(self.netns):
            return socket.socket(family, kind, proto)

    def sysctl(self, key: str, value: str | int | None = None) -> str:
        """Read a ``net.*`` sysctl of this host, after setting it if `value` is given."""
        if value is not None:
            namespaces.write_sysctl(self.netns, key, value)
        return namespaces.read_sysctl(self.netns, key)

    def wait_listening(
        self, port: int, *, kind: SocketKind = SOCK_STREAM, timeout: float = 5.0
    ) -> None:
        """Wait until some process in this host listens on `port` (TCP, or UDP bound)."""
        from pktchain.lab.links import listening

        wait_until(
            lambda: listening(self.netns, port, kind),
            timeout=timeout,
            what=f"{self.name}: a listener on port {port}",
        )

    def tcp_connections(self, port: int) -> list[TcpConnection]:
        """This host's TCP connections with `port` at either end (listeners aside)."""
        from pktchain.lab.links import tcp_connections

        return tcp_connections(self.netns, port)

    def configure_interface(
        self,
        ifname: str,
        *,
        mac: str | None = None,
        addresses: Iterable[str] = (),
        mtu: int | None = None,
        up: bool = True,
        wait: float = 0.0,
    ) -> None:
        """`pktchain.lab.configure_interface` in this host."""
        from pktchain.lab.links import configure_interface

        configure_interface(
            self.netns, ifname, mac=mac, addresses=addresses, mtu=mtu, up=up, wait=wait
        )

    def add_routes(self, routes: Iterable[Route | Mapping[str, Any]]) -> None:
        """`pktchain.lab.add_routes` in this host."""
        from pktchain.lab.links import add_routes

        add_routes(self.netns, routes)


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


class Lab:
    """A running lab. Make one with `Lab.up`; `down` (or leaving a ``with``) removes it."""

    def __init__(self, topology: Topology, journal: Journal) -> None:
        self.topology = topology
        self._journal = journal
        self.hosts: dict[str, LabHost] = {h.name: LabHost(self, h) for h in topology.hosts}
        self.nodes: dict[str, LabHost] = {
            name: LabHost(self, node.host) for name, node in topology.nodes.items()
        }
        """The namespaces of a cluster topology's nodes, each a host with only ``ul0``."""
        self.processes: list[subprocess.Popen[bytes]] = []
        self.etcd_process: subprocess.Popen[bytes] | None = None
        """The etcd of a cluster lab, while this `Lab` started it."""
        self._down = False

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def log_dir(self) -> Path:
        """Where the output of the topology's background commands goes."""
        return log_dir(self.name)

    def host(self, name: str) -> LabHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"lab {self.name!r} has no host {name!r}") from None

    def node(self, name: str) -> LabHost:
        """The namespace of node `name` of a cluster topology, to run commands in."""
        try:
            return self.nodes[name]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise KeyError(f"lab {self.name!r} has no node {name!r} (nodes: {known})") from None

    @property
    def etcd_data_dir(self) -> Path:
        """Where the cluster's etcd keeps its data (removed with the lab)."""
        return self.log_dir / "etcd"

    def netns_of(self, host: str) -> str:
        return self.host(host).netns

    def __repr__(self) -> str:
        return f"<Lab {self.name} hosts={list(self.hosts)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    @classmethod
    def up(
        cls,
        topology: TopologySource,
        *,
        name: str | None = None,
        start_commands: bool = True,
        link_timeout: float = 5.0,
        etcd_timeout: float = 30.0,
    ) -> Lab:
        """Create everything `topology` declares and return the running lab.

        A cluster topology's etcd is started (whatever `start_commands` says)
        and waited for, up to `etcd_timeout` seconds, before the hosts'
        commands. On any failure, what was created is removed before the
        error is raised. `LabExistsError` if a lab of that name is up or was
        left by a crash.
        """
        spec = as_topology(topology, name=name)
        if any(lab_of_netns(ns) == spec.name for ns in namespaces.list_netns()):
            raise LabExistsError(spec.name)
        journal = Journal.create(spec.name, spec.source)
        lab = cls(spec, journal)
        try:
            lab._build(link_timeout)
            if spec.etcd is not None:
                lab._start_etcd(etcd_timeout)
            if start_commands:
                lab._start_commands()
            journal.ready()
        except BaseException:
            with contextlib.suppress(LabError, OSError):
                lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, topology: TopologySource, *, name: str | None = None) -> Lab:
        """A `Lab` for a lab that is already up (e.g. by ``pktchain lab up``)."""
        spec = as_topology(topology, name=name)
        missing = [ns for ns in spec.netns_names if not namespaces.netns_exists(ns)]
        if missing or read_journal(spec.name) is None:
            raise LabOSError(
                errno.ENOENT, spec.name, "attach to lab", f"not up; missing {missing or 'journal'}"
            )
        return cls(spec, Journal.reopen(spec.name))

    # -- building ----------------------------------------------------------

    def _build(self, link_timeout: float) -> None:
        spec = self.topology
        for ns in spec.netns_names:
            self._journal.netns(ns)
            namespaces.create_netns(ns)
        for host in spec.hosts:
            # Set before any interface exists, so that new interfaces inherit
            # the `default` values and forwarding is on from the start.
            for key, value in LAB_SYSCTLS + host.host_sysctls:
                namespaces.write_sysctl(host.netns, key, value)
        for node in spec.nodes.values():
            for key, value in LAB_SYSCTLS:
                namespaces.write_sysctl(node.netns, key, value)
        sockets: dict[str, Netlink] = {}
        try:
            for ns in spec.netns_names:
                sockets[ns] = Netlink(ns)
            self._build_links(sockets)
            self._configure_hosts(sockets)
            wait_links_up(self._expected_links(), timeout=link_timeout)
            for host in spec.hosts:
                for route in host.lab_routes:
                    sockets[host.netns].replace_route(route)
        finally:
            for netlink in sockets.values():
                netlink.close()

    def _build_links(self, sockets: Mapping[str, Netlink]) -> None:
        spec = self.topology
        fabric = spec.fabric_netns
        if fabric is not None:
            # The fabric only switches frames; without IPv6 it sends no router
            # solicitations or MLD reports into the hosts' captures.
            for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
                namespaces.write_sysctl(fabric, key, 1)
            for bridge in spec.bridges:
                sockets[fabric].create_bridge(bridge)
            if spec.nodes:
                # etcd reaches itself at the bridge's address, over lo.
                sockets[fabric].set_link("lo", up=True)
                sockets[fabric].create_bridge(UNDERLAY_BRIDGE)
        for host in spec.hosts:
            sockets[host.netns].set_link("lo", up=True)
        for node in spec.nodes.values():
            sockets[node.netns].set_link("lo", up=True)
        # Created ends get ifindexes from 1000 up, peers get small ones from the
        # kernel: the two ends of a veth never share an ifindex (see create_veth).
        index = itertools.count(1000)
        for here, there in spec.veth_pairs():
            sockets[spec.netns_of(here.host)].create_veth(
                here.interface, spec.netns_of(there.host), there.interface, index=next(index)
            )
        for port in spec.bridge_ports:
            if fabric is None:
                raise LabError("bridge ports without a fabric namespace")  # parse prevents it
            host = spec.host(port.host)
            sockets[host.netns].create_veth(port.interface, fabric, port.port, index=next(index))
            mtu = host.interface(port.interface).mtu
            sockets[fabric].set_link(port.port, mtu=mtu, master=port.bridge, up=True)
        for node in spec.nodes.values():
            if fabric is None:
                raise LabError("nodes without a fabric namespace")  # parse prevents it
            sockets[node.netns].create_veth(
                node.ifname, fabric, node.fabric_port, index=next(index)
            )
            sockets[fabric].set_link(
                node.fabric_port, mtu=node.mtu, master=UNDERLAY_BRIDGE, up=True
            )

    def _configure_hosts(self, sockets: Mapping[str, Netlink]) -> None:
        for host in self.topology.hosts:
            for key, value in host.interface_sysctls:
                namespaces.write_sysctl(host.netns, key, value)
            for iface in host.interfaces:
                if iface.attachment is Attachment.NODE:
                    continue  # the node creates it and applies these settings
                sockets[host.netns].configure(
                    iface.name, mac=iface.mac, addresses=iface.addresses, mtu=iface.mtu
                )
        spec = self.topology
        for node in spec.nodes.values():
            sockets[node.netns].configure(node.ifname, addresses=(node.underlay,), mtu=node.mtu)
        if spec.nodes and spec.fabric_netns is not None:
            # Set once the ports are in: an MTU set by hand stays whatever
            # ports join later. The etcd listens on the bridge's address.
            addresses = (spec.etcd.address,) if spec.etcd is not None else ()
            sockets[spec.fabric_netns].configure(
                UNDERLAY_BRIDGE, addresses=addresses, mtu=spec.underlay_mtu
            )

    def _expected_links(self) -> dict[str, list[str]]:
        links: dict[str, list[str]] = {}
        for host in self.topology.hosts:
            links[host.netns] = [
                i.name for i in host.interfaces if i.attachment is not Attachment.NODE
            ]
        for node in self.topology.nodes.values():
            links[node.netns] = [node.ifname]
        fabric = self.topology.fabric_netns
        if fabric is not None:
            links[fabric] = [port.port for port in self.topology.bridge_ports] + [
                node.fabric_port for node in self.topology.nodes.values()
            ]
        return links

    def stop_etcd(self) -> None:
        """Kill the cluster's etcd (as a crash would); its data stays for `start_etcd`."""
        process = self.etcd_process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def start_etcd(self, timeout: float = 30.0) -> None:
        """Start the cluster's etcd again, on its data, and wait until it answers."""
        self._start_etcd(timeout)

    def _start_etcd(self, timeout: float) -> None:
        """Start the cluster's etcd in the fabric and wait until it answers."""
        from pktchain.lab.etcd import etcd_argv, etcd_env, etcd_healthy, find_etcd, last_log_line

        spec, fabric = self.topology.etcd, self.topology.fabric_netns
        if spec is None or fabric is None:
            return
        program = find_etcd()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / "etcd.log"
        argv = etcd_argv(program, spec, self.etcd_data_dir)
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                nsenter_argv(fabric, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=etcd_env(),
                start_new_session=True,
            )
        self._track(fabric, process, argv)
        self.etcd_process = process
        try:
            wait_until(
                lambda: process.poll() is not None or etcd_healthy(fabric, spec),
                timeout=timeout,
                what=f"etcd at {spec.client_url}",
            )
        except WaitTimeoutError:
            raise LabError(
                f"etcd at {spec.client_url} did not answer within {timeout:g} s; "
                f"its last words: {last_log_line(log_path)}"
            ) from None
        if process.returncode is not None:
            raise LabError(
                f"etcd at {spec.client_url} exited with status {process.returncode}: "
                f"{last_log_line(log_path)}"
            )

    def _start_commands(self) -> None:
        logs = self.log_dir
        for host in self.topology.hosts:
            for number, argv in enumerate(host.commands, start=1):
                logs.mkdir(parents=True, exist_ok=True)
                path = logs / f"{host.name}.{number}.log"
                with open(path, "ab") as log:
                    self.hosts[host.name].popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def _track(self, netns: str, process: subprocess.Popen[bytes], argv: Sequence[str]) -> None:
        self.processes.append(process)
        start = namespaces.process_start_time(process.pid)
        self._journal.process(ProcessRecord(process.pid, start, netns, tuple(argv)))

    # -- teardown ------------------------------------------------------------

    def down(self) -> Teardown:
        """Kill the lab's processes and delete its namespaces. Safe to call twice."""
        if self._down:
            return Teardown(self.name)
        stuck: LabOSError | None = None
        killed: list[int] = []
        try:
            killed = namespaces.terminate(
                [p.pid for p in self.processes if p.returncode is None], groups=True
            )
        except LabOSError as exc:
            stuck = exc  # remove the rest anyway, then report it
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=1.0)  # reap: they are this process's children
        self._journal.close()
        result = down(self.name)
        self._down = True
        if stuck is not None:
            raise stuck
        return Teardown(
            self.name,
            result.netns,
            tuple(dict.fromkeys(killed + list(result.processes))),
            result.files,
        )


# --------------------------------------------------------------------------
# Finding and removing labs by name


def running_labs() -> list[str]:
    """Labs that have a journal or a namespace on this machine, sorted."""
    names = set(journaled_labs())
    for ns in namespaces.list_netns():
        lab = lab_of_netns(ns)
        if lab is not None:
            names.add(lab)
    return sorted(names)


def lab_netns(name: str) -> list[str]:
    """The namespaces of lab `name` that exist now: from its journal and by prefix."""
    journal = read_journal(name)
    found = [ns for ns in namespaces.list_netns() if lab_of_netns(ns) == name]
    recorded = [ns for ns in (journal.netns if journal else ()) if namespaces.netns_exists(ns)]
    return list(dict.fromkeys(recorded + found))


def down(name: str) -> Teardown:
    """Remove lab `name` entirely, whatever state a crash left it in.

    Kills the processes the journal records (if they are still the same
    processes) with their groups, then every process inside the lab's
    namespaces, deletes the namespaces and the journal. Nothing to remove is
    not an error.
    """
    journal = read_journal(name)
    netns = lab_netns(name)
    recorded = [
        p.pid
        for p in (journal.processes if journal else ())
        if p.start is not None and namespaces.process_start_time(p.pid) == p.start
    ]
    survivors: list[LabOSError] = []
    killed: list[int] = []
    try:
        killed += namespaces.terminate(recorded, groups=True)
    except LabOSError as exc:
        survivors.append(exc)
    ids = [ns_id for ns in netns if (ns_id := namespaces.netns_id(ns)) is not None]
    inside = [pid for pids in namespaces.pids_in_netns(ids).values() for pid in pids]
    try:
        killed += namespaces.terminate(inside)
    except LabOSError as exc:
        survivors.append(exc)
    # Delete the names even if a process survived SIGKILL (stuck in the
    # kernel): the namespace then lives on, nameless, until that process ends.
    deleted = [ns for ns in netns if namespaces.delete_netns(ns)]
    files = remove_journal(name)
    if survivors:
        raise survivors[0]
    return Teardown(name, tuple(deleted), tuple(dict.fromkeys(killed)), tuple(files))


def down_all() -> list[Teardown]:
    """Remove every pktchain lab on this machine."""
    return [down(name) for name in running_labs()]
