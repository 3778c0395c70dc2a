"""`pktchain trace` in words: one line per stage, ovn-trace style."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

__all__ = ["describe_hop", "print_live", "print_trace"]


def _frame(fields: dict[str, str]) -> str:
    keys = ("eth.src", "eth.dst", "vlan", "ip.src", "ip.dst", "ip.proto", "ip.ttl")
    parts = [f"{key}={fields[key]}" for key in keys if key in fields]
    parts += [
        f"{key}={value}" for key, value in fields.items() if key not in keys and key != "eth.type"
    ]
    return " ".join(parts)


def _rewrite(changes: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['field']} {c['from'] or '-'} -> {c['to'] or '-'}" for c in changes)


def _ingress(hop: dict[str, Any]) -> list[str]:
    lines = [f"ingress {hop['port']} ({hop['kind']}) on network {hop.get('network')}"]
    lines.append(f"    {_frame(hop.get('frame', {}))}")
    if "nsh" in hop:
        nsh = hop["nsh"]
        lines.append(f"    NSH spi={nsh['spi']} si={nsh['si']} ttl={nsh['ttl']}")
    return lines


def _fast_path(hop: dict[str, Any]) -> list[str]:
    hit = "hit" if hop.get("hit") else "miss"
    out = f" -> {hop['out']}" if hop.get("out") else ""
    return [f"fast path: {hit}{out}: {hop.get('why', '')}"]


def _security(hop: dict[str, Any]) -> list[str]:
    if not hop.get("secured"):
        return ["port security: not secured"]
    if hop.get("ok"):
        return ["port security: ok (sends as itself)"]
    return [f"port security: REFUSED ({hop.get('reason')})"]


def _limits(hop: dict[str, Any]) -> list[str]:
    tokens = ", ".join(f"{name} {left}" for name, left in hop.get("tokens", {}).items())
    held = " HELD" if hop.get("held") else ""
    return [f"rate limits: tokens left: {tokens or 'none set'}{held}"]


def _steering(hop: dict[str, Any]) -> list[str]:
    lines = [f"steering on {hop['port']}: {hop.get('decision', '?')}: {hop.get('why', '')}"]
    if "nsh" in hop:
        lines.append(f"    NSH spi={hop['nsh']['spi']} si={hop['nsh']['si']}")
    for seen in hop.get("classifiers", []):
        mark = "matched" if seen["matched"] else f"not matched: {seen.get('why')}"
        lines.append(f"    classifier {seen['classifier']} (chain {seen['chain']}): {mark}")
    for group in hop.get("groups", []):
        scores = ", ".join(
            f"{p['pair']} w={p['weight']} score={p['score']}" for p in group["pairs"]
        )
        lines.append(
            f"    group {group['group']}: {group['chosen']} by hash of "
            f"{'+'.join(group['lb_fields'])} ({scores})"
        )
    entry = hop.get("entry")
    if entry is not None:
        path = " -> ".join(entry["path"]) or "-"
        lines.append(
            f"    chain {entry['chain'] or '-'} path {path}; next: {entry['next']}"
            + (f"; drop {entry['drop']}" if "drop" in entry else "")
        )
    return lines


def _function(hop: dict[str, Any]) -> list[str]:
    kind = f" ({hop['kind']})" if hop.get("kind") else ""
    verdict = hop.get("verdict", "?")
    reason = f" {hop['reason']}" if hop.get("reason") else ""
    lines = [f"function {hop['function']}{kind} in on {hop['iface']}: {verdict}{reason}"]
    if hop.get("note"):
        lines.append(f"    {hop['note']}")
    if hop.get("rewrite"):
        lines.append(f"    rewrite: {_rewrite(hop['rewrite'])}")
    if hop.get("out"):
        lease = " (with a flow lease)" if hop.get("lease") else ""
        lines.append(f"    out: {', '.join(hop['out'])}{lease}")
    if hop.get("emitted"):
        lines.append(f"    also sends on: {', '.join(hop['emitted'])}")
    if hop.get("state"):
        grown = ", ".join(f"{name} {count:+d}" for name, count in hop["state"].items())
        lines.append(f"    state: {grown}")
    return lines


def _egress(hop: dict[str, Any]) -> list[str]:
    if hop.get("kind") == "underlay":
        nsh = hop.get("nsh", {})
        return [
            f"egress underlay to node {hop.get('node_to')} ({hop.get('address')}): "
            f"spi={nsh.get('spi')} si={nsh.get('si')}",
            f"    {_frame(hop.get('frame', {}))}",
        ]
    lines = [f"egress {hop['port']} ({hop.get('kind')}) on network {hop.get('network')}"]
    if hop.get("frame"):
        lines.append(f"    {_frame(hop['frame'])}")
    return lines


def _simple(text: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], list[str]]:
    return lambda hop: [text(hop)]


_STAGES: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "ingress": _ingress,
    "parse": _simple(lambda hop: f"parse: malformed ({hop.get('reason')})"),
    "fast-path": _fast_path,
    "port-security": _security,
    "rate-limits": _limits,
    "steering": _steering,
    "function": _function,
    "tap": _simple(lambda hop: f"tap copies to {', '.join(hop.get('ports', []))}"),
    "flood": _simple(lambda hop: f"flood in network {hop.get('network')}: {hop.get('why')}"),
    "egress": _egress,
    "drop": _simple(lambda hop: f"DROP on {hop.get('port')}: {hop.get('reason')}"),
    "fast-path-install": _simple(
        lambda hop: (
            "fast path: this flow gets a fused entry"
            if hop.get("installed")
            else f"fast path: no fused entry ({hop.get('reason')}{': ' if hop.get('why') else ''}"
            f"{hop.get('why', '')})"
        )
    ),
}


def describe_hop(hop: dict[str, Any]) -> list[str]:
    """The lines of one hop."""
    render = _STAGES.get(hop["stage"], _simple(lambda hop: f"{hop['stage']}: {hop}"))
    lines = render(hop)
    prefix = f"[{hop['node']}] " if hop.get("node") else ""
    copy = "(copy) " if hop.get("copy") else ""
    first = f"{hop['us']:>9.1f} µs  {prefix}{copy}{lines[0]}"
    return [first, *(" " * 13 + line for line in lines[1:])]


def print_trace(trace: dict[str, Any], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    packet = trace.get("packet", {})
    if packet.get("eth.dst"):
        print(f"eth.dst: {packet['eth.dst']}", file=stream)
    for hop in trace["hops"]:
        for line in describe_hop(hop):
            print(line, file=stream)
    if trace["result"] == "delivered":
        where = ", ".join(trace.get("egresses") or [trace.get("egress") or "-"])
        print(f"result: delivered to {where}", file=stream)
    else:
        print(f"result: dropped: {trace.get('reason')}", file=stream)


def print_live(reply: dict[str, Any], out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    packets = reply["packets"]
    for number, trace in enumerate(packets, 1):
        print(f"packet {number} (monotonic {trace.get('monotonic')} s)", file=stream)
        print_trace(trace, stream)
        print(file=stream)
    if not reply.get("complete"):
        print(
            f"{len(packets)} packets marked before the timeout ({reply.get('waited')} s)",
            file=stream,
        )
