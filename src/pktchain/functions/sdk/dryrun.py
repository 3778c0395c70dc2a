"""Dry runs: what a function would do with a packet, its state left as it was.

A dry run calls the function's own :meth:`~pktchain.functions.sdk.Function.process`
(the very code that decides for real traffic, not a second description of it)
on a copy-on-write copy of the process (`pktchain.linux.sandbox`): the NAT
opens its session, the firewall its connection, the flow monitor its record,
counters move, leases are granted, all in the copy, which is thrown away. The
parent's state is untouched whatever the function does, and nothing is copied
up front: a NAT with 262,144 sessions costs the fork (page tables) and the
pages the one lookup touches, not a copy of its table.

Why not a "would" method in each function: it would describe every decision
a second time (the router's NAT, TTL, ARP and port forwards; the firewall's
conntrack states), and the two would drift; and why not a transactional
layer over the function's attributes: functions keep state in nested
objects (sessions, connections, token buckets) that an overlay of dicts does
not see change. The copy-on-write fork has neither problem. Its condition is
the contract's ``TRACEABLE``: `process` has no effect outside the object.

`trial` is the dry run's inside, for a caller that is already in a sandbox
(the node runs a whole trace, every function of the path, in one child).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pktchain.functions.sdk.contract import VNET, Function, Packet, Verdict, frames_out
from pktchain.linux.sandbox import run_forked

__all__ = ["DryRun", "NotTraceableError", "dry_run", "trial"]


class NotTraceableError(ValueError):
    """The function does not declare ``TRACEABLE``: its `process` may act outside itself."""


@dataclass(frozen=True)
class DryRun:
    """What a function would do with one packet."""

    verdict: Verdict
    iface: str | None
    """FORWARD / PUNT: the interface the packet would leave on."""
    reason: str
    """DROP / REPLY: the reason (a counter name)."""
    frame: bytes
    """The packet's Ethernet frame as the function would leave it."""
    emitted: tuple[tuple[str, bytes], ...]
    """Other frames it would send: (interface, Ethernet frame)."""
    leased: bool
    """Whether it would forward with a flow lease (the flow may be fused)."""
    tables: dict[str, tuple[int, int]]
    """Each table's entries before and after the packet (in the copy)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "iface": self.iface,
            "reason": self.reason,
            "frame": self.frame.hex(),
            "emitted": [[iface, frame.hex()] for iface, frame in self.emitted],
            "leased": self.leased,
            "tables": {name: list(sizes) for name, sizes in self.tables.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DryRun:
        return cls(
            verdict=Verdict(data["verdict"]),
            iface=data["iface"],
            reason=data["reason"],
            frame=bytes.fromhex(data["frame"]),
            emitted=tuple((iface, bytes.fromhex(frame)) for iface, frame in data["emitted"]),
            leased=data["leased"],
            tables={name: (sizes[0], sizes[1]) for name, sizes in data["tables"].items()},
        )


def trial(function: Function, packet: Packet, now: float) -> DryRun:
    """Call `function.process` for real and say what it did: in a sandbox only.

    The function's state changes as for a real packet; the caller is a
    forked copy that will be thrown away.
    """
    before = {name: size.entries for name, size in function.tables().items()}
    result = function.process(packet, now)
    after = {name: size.entries for name, size in function.tables().items()}
    iface = None
    if result.verdict in (Verdict.FORWARD, Verdict.PUNT):
        iface = result.iface
        if iface is None and len(function.INTERFACES) == 2:
            iface = function.peer(packet.iface)
    emitted = tuple((out, frame[VNET:]) for out, frame in frames_out(result.emit))
    return DryRun(
        verdict=result.verdict,
        iface=iface,
        reason=result.reason,
        frame=packet.ethernet,
        emitted=emitted,
        leased=result.lease is not None and result.lease.valid,
        tables={name: (before.get(name, 0), after.get(name, 0)) for name in {*before, *after}},
    )


def dry_run(function: Function, packet: Packet, now: float, *, timeout: float = 10.0) -> DryRun:
    """What `function` would do with `packet` at `now`; its state (and `packet`) unchanged.

    NotTraceableError for a function that does not declare ``TRACEABLE``;
    `pktchain.linux.sandbox.SandboxError` if `process` raised or took longer
    than `timeout` seconds.
    """
    if not function.TRACEABLE:
        raise NotTraceableError(
            f"{function.kind()} is not traceable: it does not declare TRACEABLE"
        )
    return DryRun.from_json(run_forked(lambda: trial(function, packet, now).to_json(), timeout))
