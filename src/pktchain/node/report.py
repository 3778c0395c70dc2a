"""Human-readable tables of a node's status (ports, counters, MAC table)."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def port_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"node {status['node']} — ports", title_justify="left")
    for column in ("port", "driver", "mac", "secured"):
        table.add_column(column)
    for column in ("rx pkts", "rx bytes", "tx pkts", "tx bytes"):
        table.add_column(column, justify="right")
    table.add_column("drops")
    for port in status["ports"]:
        problems = {**port["drops"], **{f"tx-{k}": v for k, v in port["tx_errors"].items()}}
        if port.get("rx_kernel_drops"):
            # Frames the kernel dropped on a packet socket before the node could read them.
            problems["rx-kernel"] = port["rx_kernel_drops"]
        table.add_row(
            port["name"],
            port["kind"],
            port["mac"] or "-",
            "yes" if port.get("secured") else "-",
            f"{port['rx_packets']:,}",
            f"{port['rx_bytes']:,}",
            f"{port['tx_packets']:,}",
            f"{port['tx_bytes']:,}",
            ", ".join(f"{reason}={count}" for reason, count in problems.items()) or "-",
        )
    return table


def port_limits_line(limits: dict[str, Any], ports: list[dict[str, Any]]) -> str:
    """Each port rate limit (rate/s, burst) and the ports held for storming."""
    parts = [
        f"{name.replace('_', ' ')} "
        + ("off" if limit is None else f"{limit['rate']:g}/s burst {limit['burst']}")
        for name, limit in limits.items()
    ]
    held = [f"{port['name']} {port['holds']}x" for port in ports if port.get("holds")]
    if held:
        parts.append("held: " + ", ".join(held))
    return "; ".join(parts)


def chain_table(status: dict[str, Any]) -> Table:
    """Per chain, per hop (group, port pair, direction): flows, packets, bytes."""
    table = Table(title="chains", title_justify="left")
    for column in ("chain", "spi", "group", "port pair", "direction"):
        table.add_column(column)
    for column in ("flows", "packets", "bytes"):
        table.add_column(column, justify="right")
    for chain in status["steering"]["chains"]:
        table.add_row(
            chain["name"] or chain["id"],
            str(chain["spi"]),
            "all",
            "",
            "",
            f"{chain['flows']:,}",
            f"{chain['packets']:,}",
            f"{chain['bytes']:,}",
        )
        for hop in chain["hops"]:
            table.add_row(
                "",
                "",
                f"{hop['group']}: {hop['group_name']}",
                hop["port_pair_name"],
                hop["direction"],
                f"{hop['flows']:,}",
                f"{hop['packets']:,}",
                f"{hop['bytes']:,}",
            )
    return table


def flow_table(flows: list[dict[str, Any]]) -> Table:
    table = Table(title="flows", title_justify="left")
    for column in ("source", "destination", "proto", "chain", "path", "translated to"):
        table.add_column(column)
    for column in ("packets", "idle s"):
        table.add_column(column, justify="right")
    for flow in flows:
        translated = [
            f"{key['src']}:{key['sport']} → {key['dst']}:{key['dport']}"
            for key in flow.get("translated", ())
        ]
        table.add_row(
            f"{flow['src']}:{flow['sport']}",
            f"{flow['dst']}:{flow['dport']}",
            str(flow["proto"]),
            flow["chain"] or "-",
            " → ".join(flow["path"]) or "-",
            "\n".join(translated) or "-",
            f"{flow['packets']:,}",
            f"{flow['idle']:g}",
        )
    return table


def cluster_table(cluster: dict[str, Any], me: str) -> Table:
    """The cluster as node `me` sees it: each node, its underlay, whether it is heard."""
    underlay = cluster.get("peers") or {}
    peers = underlay.get("peers", {})
    connected = "connected" if cluster["connected"] else "NOT connected"
    table = Table(
        title=f"cluster {cluster['name']} (etcd revision {cluster['revision']}, {connected})",
        title_justify="left",
    )
    for column in ("node", "underlay", "state", "ports down"):
        table.add_column(column)
    down = cluster.get("ports_down", {})
    for name in cluster["nodes"]:
        peer = peers.get(name)
        if name == me:
            where, state = cluster.get("underlay") or "-", "this node"
        elif peer is None:
            where, state = "-", "no underlay"
        else:
            where = peer["address"]
            state = "alive" if peer["alive"] else f"silent {peer['silent']:g} s"
        table.add_row(name, where, state, str(len(down.get(name, []))))
    return table


def terminal_console() -> Console:
    """A console that is 120 columns wide when writing to a file or a pipe."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def print_status(status: dict[str, Any], console: Console | None = None) -> None:
    console = console or terminal_console()
    console.print(port_table(status))
    switch = status["switch"]
    console.print(
        f"switch: {switch['mac_entries']} MAC entries (aging {switch['mac_aging']:g}s), "
        f"learned {switch['learned']}, moved {switch['moved']}, aged {switch['aged']}, "
        f"floods {switch['floods']}"
    )
    fast = status.get("fast_path")
    if fast:
        console.print(fast_path_line(fast))
    scheduling = status.get("loop_scheduling")
    if scheduling:
        console.print("packet loop: " + loop_line(scheduling))
    limits = status.get("port_limits")
    if limits:
        console.print("port limits: " + port_limits_line(limits, status["ports"]))
    cluster = status.get("cluster")
    if cluster:
        console.print(cluster_table(cluster, status["node"]))
        drops = (cluster.get("peers") or {}).get("drops")
        if drops:
            console.print("underlay drops: " + ", ".join(f"{k}={v}" for k, v in drops.items()))
    steering = status["steering"]
    if steering["chains"]:
        console.print(chain_table(status))
    stats = steering["stats"]
    console.print(
        f"steering: {steering['flows']} flows, classified {stats['classified']}, "
        f"unclassified {stats['unclassified']}, re-pinned {stats['repinned']}, "
        f"expired {stats['expired']}"
    )


def loop_line(scheduling: dict[str, Any]) -> str:
    """How the packet loop's thread is scheduled: SCHED_FIFO N, or time-sharing and why."""
    if scheduling.get("policy") == "fifo":
        line = f"SCHED_FIFO {scheduling['priority']}"
    else:
        reason = scheduling.get("reason")
        line = f"time-sharing ({reason})" if reason else "time-sharing"
    return f"{line}, thread {scheduling.get('thread')}"


def fast_path_line(fast: dict[str, Any]) -> str:
    """Which fast path carries veth ports, with both fast paths' entries and hits."""
    line = f"fast path: {fast['entries']} entries, {fast['hits']} hits"
    kernel = fast.get("kernel") or {}
    if kernel.get("active"):
        line += (
            f"; kernel on {kernel['ports']} veth ports: {kernel['entries']} entries, "
            f"{kernel['hits']} of the hits"
        )
    elif kernel.get("reason"):
        line += f"; kernel: off ({kernel['reason']})"
    return line


def _rows_table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in rows:
        table.add_row(*("-" if row.get(c) is None else str(row.get(c)) for c in columns))
    return table


def print_router(router: dict[str, Any], console: Console) -> None:
    """The router's interfaces, host table (with forwarding ports), NAT table, rules."""
    console.print(
        _rows_table(
            "router interfaces", router["interfaces"], ("name", "mac", "address", "external")
        )
    )
    console.print(
        _rows_table("hosts", router["hosts"], ("ip", "mac", "interface", "forward_port", "state"))
    )
    console.print(
        _rows_table(
            f"NAT table ({router['nat_mappings']} mappings, {router['nat_sessions']} sessions)",
            router["nat"],
            (
                "proto",
                "internal_address",
                "internal_port",
                "external_address",
                "external_port",
                "static",
                "sessions",
            ),
        )
    )
    console.print(
        _rows_table(
            "port forwards",
            router["port_forwards"],
            ("proto", "external_port", "inside_ip", "inside_port", "automatic"),
        )
    )
    if router.get("vrrp"):
        console.print(
            _rows_table(
                "virtual routers (VRRP)",
                router["vrrp"],
                (
                    "interface",
                    "vrid",
                    "state",
                    "priority",
                    "effective_priority",
                    "virtual_addresses",
                    "master_address",
                    "failed_trackers",
                ),
            )
        )
    ha = router.get("ha")
    if ha:
        sync = ha.get("sync") or {}
        console.print(
            f"router pair: {ha['role']}, sync with {ha['peer']} "
            f"{'connected' if ha['connected'] else 'not connected'}, "
            f"{'in sync' if sync.get('in_sync') else 'not in sync'}, "
            f"{ha['takeovers']} takeover(s)"
        )
    busy = {k: v for k, v in sorted(router["counters"].items()) if v}
    console.print("router counters: " + (", ".join(f"{k}={v}" for k, v in busy.items()) or "-"))


def print_functions(functions: list[dict[str, Any]], console: Console) -> None:
    """Each native function: kind, ports, verdicts and its non-zero counters."""
    table = Table(title="native functions")
    for column in ("name", "kind", "ports", "verdicts", "counters"):
        table.add_column(column)
    for function in functions:
        counters = {k: v for k, v in sorted(function.get("counters", {}).items()) if v}
        table.add_row(
            str(function.get("name")),
            str(function.get("kind", "-")),
            ", ".join(function.get("ports", {}).values()),
            ", ".join(f"{k}={v}" for k, v in sorted(function.get("verdicts", {}).items())) or "-",
            ", ".join(f"{k}={v}" for k, v in counters.items()) or "-",
        )
    console.print(table)
