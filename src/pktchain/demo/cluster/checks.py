"""What the demo's checks read: flow tables, per-hop counters, nsh-flowcount's counters.

Pure functions of what the nodes report (``pktchain node flows --json``,
``pktchain node status --json``) and of nsh-flowcount's stats file, so that
they are tested without a lab.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pktchain.demo.cluster.topology import CLIENT

FlowKey = tuple[str, str, int, int, int]


def flow_key(row: Mapping[str, Any]) -> FlowKey:
    """A flow table row's 5-tuple (``pktchain node flows --json``)."""
    return (
        str(row["src"]),
        str(row["dst"]),
        int(row["proto"]),
        int(row["sport"]),
        int(row["dport"]),
    )


def reverse_key(key: FlowKey) -> FlowKey:
    src, dst, proto, sport, dport = key
    return (dst, src, proto, dport, sport)


def chain_paths(
    rows: Iterable[Mapping[str, Any]], chain: str
) -> dict[FlowKey, set[tuple[str, ...]]]:
    """Each flow of `chain` in a node's flow table, with the paths it is pinned to
    (a node may hold a flow twice: once as it arrived, once back from an NSH-aware
    function; both name the same path)."""
    paths: dict[FlowKey, set[tuple[str, ...]]] = {}
    for row in rows:
        if row.get("chain") == chain:
            paths.setdefault(flow_key(row), set()).add(tuple(row["path"]))
    return paths


def client_flows(
    rows: Iterable[Mapping[str, Any]], chain: str, dport: int | None = None
) -> dict[FlowKey, set[tuple[str, ...]]]:
    """The chain's flows from the client (the forward direction), as classified."""
    return {
        key: paths
        for key, paths in chain_paths(rows, chain).items()
        if key[0] == CLIENT and (dport is None or key[4] == dport)
    }


def reply_problems(
    flows: Mapping[str, Iterable[Mapping[str, Any]]],
    pair_node: Mapping[str, str],
    chain: str,
    *,
    ingress: str = "n1",
    only: Collection[FlowKey] | None = None,
) -> tuple[list[str], int]:
    """Whether each flow classified on `ingress` (or each of `only`) was pinned
    to one path, and its replies to the very same one, on every node that holds
    an instance of it.

    `flows` is each node's flow table; a node learns the path of a packet from
    its NSH (the path TLV), so a reply row naming the forward path there means
    that the reply carried the same instances.  Returns the problems and how
    many flows were checked.
    """
    tables = {node: chain_paths(rows, chain) for node, rows in flows.items()}
    problems: list[str] = []
    forward = {
        key: paths
        for key, paths in tables.get(ingress, {}).items()
        if key[0] == CLIENT and (only is None or key in only)
    }
    if only is not None:
        problems += [
            f"{ingress} has no flow {_label(key)}" for key in sorted(set(only) - set(forward))
        ]
    for key, paths in sorted(forward.items()):
        label = _label(key)
        if len(paths) != 1:
            problems.append(f"{label} is pinned to {len(paths)} paths on {ingress}")
            continue
        (path,) = paths
        holders = sorted({ingress, *(pair_node[pair] for pair in path if pair in pair_node)})
        for node in holders:
            table = tables.get(node, {})
            for what, at in (("its packets", key), ("its replies", reverse_key(key))):
                seen = table.get(at, set())
                if seen != {path}:
                    shown = ", ".join(" → ".join(p) for p in sorted(seen)) or "nothing"
                    problems.append(
                        f"{label}: {node} has {what} on {shown}, not {' → '.join(path)}"
                    )
    return problems, len(forward)


def _label(key: FlowKey) -> str:
    return f"{key[0]}:{key[3]} → {key[1]}:{key[4]}"


def hop_counts(status: Mapping[str, Any], chain: str) -> dict[str, dict[str, int]]:
    """Packets per port pair and direction on one node: {pair: {"forward": n, "reverse": n}}."""
    counts: dict[str, dict[str, int]] = {}
    for record in status["steering"]["chains"]:
        if record["name"] != chain:
            continue
        for hop in record["hops"]:
            pair = counts.setdefault(hop["port_pair_name"], {"forward": 0, "reverse": 0})
            pair[hop["direction"]] += hop["packets"]
    return counts


def hop_problems(
    statuses: Mapping[str, Mapping[str, Any]], pair_node: Mapping[str, str], chain: str
) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Every instance that carried packets one way, on the node that holds it,
    carried replies the other way too; returns the problems and the counts."""
    problems: list[str] = []
    seen: dict[str, dict[str, int]] = {}
    for node, status in statuses.items():
        for pair, counts in hop_counts(status, chain).items():
            if pair_node.get(pair) != node:
                problems.append(f"{node} counts hops of {pair}, which is on {pair_node.get(pair)}")
                continue
            seen[pair] = counts
            if bool(counts["forward"]) != bool(counts["reverse"]):
                problems.append(
                    f"{pair} on {node}: {counts['forward']} packets forward, "
                    f"{counts['reverse']} back"
                )
    return problems, seen


def flowcount_problems(stats: Mapping[str, Any], keys: Iterable[FlowKey]) -> tuple[list[str], int]:
    """nsh-flowcount counted every given flow, both ways; returns the problems and
    how many of its flows it counted."""
    counted = {
        (str(f["src"]), str(f["dst"]), int(f["proto"]), int(f["sport"]), int(f["dport"]))
        for f in stats.get("flows", [])
    }
    problems = []
    for key in sorted(keys):
        for at in (key, reverse_key(key)):
            if at not in counted:
                problems.append(f"nsh-flowcount did not count {at[0]}:{at[3]} → {at[1]}:{at[4]}")
    return problems, len(counted)


def path_text(path: Iterable[str]) -> str:
    return " → ".join(path)


def summarize_paths(paths: Iterable[Iterable[tuple[str, ...]]]) -> str:
    """ "FW1 → SF3 → FLOWCOUNT x2, ..." for a collection of flows' path sets."""
    counts = Counter(path for found in paths for path in found)
    return ", ".join(f"{path_text(path)} x{n}" for path, n in sorted(counts.items())) or "none"
