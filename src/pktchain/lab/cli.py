"""The ``pktchain lab`` subcommands: up, down, exec and list.

Only `argparse` is imported at load time; the lab itself (and pyroute2) is
imported by the handlers.

Which lab a command is about: ``-f FILE`` (its ``lab:`` name) or ``--lab
NAME``; ``exec`` with neither uses the only lab that is up, and refuses to
guess when there are several.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pktchain.errors import UsageError

if TYPE_CHECKING:
    from pktchain.lab.lab import Lab, Teardown


def register(subparsers: Any) -> None:
    lab: argparse.ArgumentParser = subparsers.add_parser(
        "lab",
        help="bring up topologies of hosts in network namespaces",
        description="Hosts in network namespaces, joined by veths and bridges (docs/lab.md).",
    )
    commands = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND", required=True)

    up = commands.add_parser("up", help="create the lab a topology file describes")
    up.add_argument("file", metavar="FILE", help="topology (YAML)")
    up.add_argument(
        "--no-commands",
        action="store_true",
        help="do not start the hosts' background commands",
    )
    up.set_defaults(handler=_up)

    down = commands.add_parser(
        "down",
        help="remove a lab and everything it made, even after a crash",
        description="Remove a lab: kill its processes, delete its namespaces and journal. "
        "Exits 0 when there is nothing to remove.",
    )
    which = down.add_mutually_exclusive_group(required=True)
    which.add_argument("file", metavar="FILE", nargs="?", help="topology (YAML) of the lab")
    which.add_argument("--lab", metavar="NAME", help="the lab's name")
    which.add_argument("--all", action="store_true", help="every pktchain lab on this machine")
    down.set_defaults(handler=_down)

    run = commands.add_parser(
        "exec",
        help="run a command in a host (or a node) of a lab",
        description="Run CMD in HOST's network namespace; exits with CMD's status. "
        "HOST may also name a node of a cluster topology. "
        "Without -f or --lab, the only lab that is up is used.",
    )
    choose = run.add_mutually_exclusive_group()
    choose.add_argument("-f", "--file", metavar="FILE", help="topology (YAML) of the lab")
    choose.add_argument("--lab", metavar="NAME", help="the lab's name")
    run.add_argument("host", metavar="HOST", help="a host, or a node of a cluster topology")
    run.add_argument("argv", metavar="-- CMD", nargs=argparse.REMAINDER, help="command to run")
    run.set_defaults(handler=_exec)

    show = commands.add_parser("list", help="list the labs that are up")
    show.set_defaults(handler=_list)


def _up(args: argparse.Namespace) -> int:
    import sys

    from pktchain.lab.errors import LabError, TopologyError
    from pktchain.lab.lab import Lab
    from pktchain.lab.topology import load_topology

    try:
        topology = load_topology(args.file)
    except TopologyError as exc:
        raise UsageError(str(exc)) from exc
    try:
        lab = Lab.up(topology, start_commands=not args.no_commands)
    except LabError as exc:
        print(f"pktchain lab up: {exc}", file=sys.stderr)
        return 1
    _print_lab(lab)
    return 0


def _print_lab(lab: Lab) -> None:
    import shlex

    from rich.console import Console
    from rich.table import Table

    from pktchain.lab.topology import UNDERLAY_BRIDGE, Attachment

    topology = lab.topology
    table = Table(title=f"lab {topology.name} ({topology.source})")
    table.add_column("host")
    table.add_column("namespace", no_wrap=True)
    table.add_column("interface")
    table.add_column("attached to")
    table.add_column("addresses")
    routes = Table(title="routes")
    routes.add_column("host")
    routes.add_column("route")
    for host in topology.hosts:
        first = True
        for iface in host.interfaces:
            if iface.attachment is Attachment.VETH:
                attached = f"veth {iface.peer}"
            elif iface.attachment is Attachment.BRIDGE:
                attached = f"bridge {iface.bridge}"
            else:
                nic = iface.nic or topology.host_nic
                # Unsaid: the node's --host-nic (see `pktchain node --help`).
                made = f"a {nic.value}" if nic is not None else "a tap or veth: --host-nic"
                owner = f"node {host.node}" if host.node is not None else "node"
                attached = f"{owner} (made by it: {made})"
            table.add_row(
                host.name if first else "",
                host.netns if first else "",
                iface.name,
                attached,
                " ".join(str(a) for a in iface.addresses),
            )
            first = False
        if first:
            table.add_row(host.name, host.netns, "lo", "", "")
        node_ports = {i.name for i in host.node_interfaces}
        for route in host.routes:
            by_node = " (added by the node)" if route.dev in node_ports else ""
            routes.add_row(host.name, f"{route}{by_node}")
    for node in topology.nodes.values():
        table.add_row(
            f"(node {node.name})",
            node.netns,
            node.ifname,
            f"bridge {UNDERLAY_BRIDGE}, mtu {node.mtu}",
            str(node.underlay),
        )
    if topology.fabric_netns:
        bridges = list(topology.bridges) + ([UNDERLAY_BRIDGE] if topology.nodes else [])
        etcd = str(topology.etcd.address) if topology.etcd is not None else ""
        table.add_row("(bridges)", topology.fabric_netns, " ".join(bridges), "", etcd)
    console = Console()
    console.print(table)
    if routes.row_count:
        console.print(routes)
    if topology.etcd is not None and lab.etcd_process is not None:
        console.print(
            f"etcd {topology.etcd.client_url} (pid {lab.etcd_process.pid}, "
            f"in {topology.fabric_netns}), data in {lab.etcd_data_dir}/"
        )
    commands = [p for p in lab.processes if p is not lab.etcd_process]
    if commands:
        processes = Table(title="background commands")
        for column in ("pid", "host", "command"):
            processes.add_column(column)
        for process, (host_name, argv) in zip(commands, _commands(lab), strict=False):
            processes.add_row(str(process.pid), host_name, shlex.join(argv))
        console.print(processes)
    if lab.processes:
        console.print(f"output in {lab.log_dir}/")


def _commands(lab: Lab) -> list[tuple[str, tuple[str, ...]]]:
    return [(host.name, argv) for host in lab.topology.hosts for argv in host.commands]


def _lab_name(args: argparse.Namespace) -> str | None:
    from pktchain.lab.errors import TopologyError
    from pktchain.lab.topology import check_lab_name, read_lab_name

    if getattr(args, "lab", None):
        problem = check_lab_name(args.lab)
        if problem is not None:
            raise UsageError(problem)
        return str(args.lab)
    path = getattr(args, "file", None)
    if path:
        try:
            return read_lab_name(path)
        except TopologyError as exc:
            raise UsageError(str(exc)) from exc
    return None


def _down(args: argparse.Namespace) -> int:
    import sys

    from pktchain.lab.errors import LabError
    from pktchain.lab.lab import down, down_all

    try:
        if args.all:
            results = down_all()
        else:
            name = _lab_name(args)
            if name is None:
                raise UsageError("lab down: give FILE, --lab NAME or --all")
            results = [down(name)]
    except LabError as exc:
        print(f"pktchain lab down: {exc}", file=sys.stderr)
        return 1
    for result in results:
        print(_describe(result))
    if not results:
        print("no lab is up")
    return 0


def _describe(result: Teardown) -> str:
    if result.empty:
        return f"lab {result.lab}: nothing to remove"
    parts = [f"{len(result.netns)} namespace(s)"]
    if result.processes:
        parts.append(f"{len(result.processes)} process(es)")
    return f"lab {result.lab}: removed " + ", ".join(parts)


def _exec(args: argparse.Namespace) -> int:
    import os
    import sys

    from pktchain.lab import namespaces
    from pktchain.lab.errors import LabOSError
    from pktchain.lab.lab import lab_netns, nsenter_argv, running_labs
    from pktchain.lab.topology import lab_of_netns, netns_name

    argv = list(args.argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("lab exec: give the command after `--`, e.g. lab exec h1 -- ip addr")
    name = _lab_name(args)
    if name is None:
        labs = running_labs()
        if not labs:
            raise UsageError("lab exec: no lab is up")
        if len(labs) > 1:
            raise UsageError(
                f"lab exec: several labs are up ({', '.join(labs)}); choose with -f FILE or --lab"
            )
        name = labs[0]
    netns = netns_name(name, args.host)
    if not namespaces.netns_exists(netns):
        hosts = sorted(
            ns[len(netns_name(name, "")) :] for ns in lab_netns(name) if lab_of_netns(ns) == name
        )
        known = ", ".join(h for h in hosts if h != "fabric") or "none: is it up?"
        raise UsageError(
            f"lab exec: lab {name!r} has no host or node {args.host!r} (it has: {known})"
        )
    try:
        command = nsenter_argv(netns, argv)
    except LabOSError as exc:
        print(f"pktchain lab exec: {exc}", file=sys.stderr)
        return 1
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise UsageError(f"lab exec: cannot run {command[0]}: {exc.strerror}") from exc
    return 127  # not reached: execv replaces this process


def _list(args: argparse.Namespace) -> int:
    from pktchain.lab.journal import read_journal
    from pktchain.lab.lab import lab_netns, running_labs

    labs = running_labs()
    if not labs:
        print("no lab is up")
    for name in labs:
        journal = read_journal(name)
        state = "up" if journal and journal.ready else "incomplete (run lab down)"
        source = f" from {journal.source}" if journal and journal.source else ""
        print(f"{name}: {len(lab_netns(name))} namespace(s), {state}{source}")
    return 0
