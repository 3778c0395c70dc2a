"""The demo's tables: the flows that moved, the nodes, the hops, nsh-flowcount."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from pktchain.demo.cluster.checks import path_text
from pktchain.demo.cluster.topology import CHAIN, CLIENT, DOOMED, HTTP_PORT, SERVER


def moves_table(
    before: Mapping[int, tuple[str, ...]],
    after: Mapping[int, tuple[str, ...]],
    moved: Mapping[int, float],
) -> Table:
    table = Table(title=f"probe flows that crossed {DOOMED}", title_justify="left")
    for column in ("flow", "before", "after"):
        table.add_column(column)
    table.add_column("moved after", justify="right")
    for port, path in sorted(before.items()):
        table.add_row(
            f"{CLIENT}:{port} → {SERVER}:{HTTP_PORT}",
            path_text(path),
            path_text(after.get(port, ())) or "-",
            f"{moved[port]:.3f} s" if port in moved else "-",
        )
    return table


def node_table(statuses: Mapping[str, Mapping[str, Any]], killed: set[str]) -> Table:
    table = Table(title="nodes", title_justify="left")
    table.add_column("node")
    table.add_column("state")
    for column in (
        "ports",
        "underlay rx",
        "hellos sent/heard",
        "flows",
        "classified",
        "joined",
        "re-pinned",
        "fast-path hits",
    ):
        table.add_column(column, justify="right")
    for node, status in sorted(statuses.items()):
        peers = (status.get("cluster") or {}).get("peers") or {}
        stats = status["steering"]["stats"]
        table.add_row(
            node,
            "killed (SIGKILL)" if node in killed else "running",
            str(len(status["ports"])),
            f"{peers.get('rx_packets', 0):,}",
            f"{peers.get('hellos_sent', 0):,}/{peers.get('hellos_received', 0):,}",
            f"{status['steering']['flows']:,}",
            f"{stats['classified']:,}",
            f"{stats['joined']:,}",
            f"{stats['repinned']:,}",
            f"{status['fast_path']['hits']:,}",
        )
    return table


def hop_table(statuses: Mapping[str, Mapping[str, Any]]) -> Table:
    table = Table(
        title=f"{CHAIN}: hops, on the node that holds each instance", title_justify="left"
    )
    for column in ("node", "group", "port pair", "direction"):
        table.add_column(column)
    for column in ("flows", "packets", "bytes"):
        table.add_column(column, justify="right")
    for node, status in sorted(statuses.items()):
        for record in status["steering"]["chains"]:
            if record["name"] != CHAIN:
                continue
            for hop in sorted(record["hops"], key=lambda h: (h["group"], h["port_pair_name"])):
                table.add_row(
                    node,
                    hop["group_name"],
                    hop["port_pair_name"],
                    hop["direction"],
                    f"{hop['flows']:,}",
                    f"{hop['packets']:,}",
                    f"{hop['bytes']:,}",
                )
    return table


def flowcount_table(stats: Mapping[str, Any]) -> Table:
    table = Table(title="nsh-flowcount (C, on n3): flows it counted", title_justify="left")
    for column in ("source", "destination"):
        table.add_column(column)
    for column in ("packets", "bytes"):
        table.add_column(column, justify="right")
    flows = sorted(stats.get("flows", []), key=lambda f: -int(f["packets"]))
    for flow in flows[:12]:
        table.add_row(
            f"{flow['src']}:{flow['sport']}",
            f"{flow['dst']}:{flow['dport']}",
            f"{flow['packets']:,}",
            f"{flow['bytes']:,}",
        )
    table.caption = (
        f"{len(flows)} flows; {stats['in']['packets']:,} packets in, "
        f"{stats['out']['packets']:,} out, {stats.get('tlv', {}).get('added', 0):,} TLVs added"
    )
    table.caption_justify = "left"
    return table
