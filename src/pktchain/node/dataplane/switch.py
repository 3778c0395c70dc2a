"""The node's L2 networks and their MAC learning tables (IEEE 802.1Q §8.8).

A node may hold several networks (broadcast domains): each port joins one, and
frames are learned, looked up and flooded only within it, as a VLAN-aware
bridge keeps one filtering database per VLAN.

`MacTable` is sans-IO: it maps source addresses to the port they were last
seen on, ages entries out, and is bounded so that a flood of random source
addresses cannot grow it without limit.  The datapath reads `entries` directly
on the per-packet path; everything else goes through the methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")

DEFAULT_AGING = 300.0
"""802.1Q's recommended ageing time for the filtering database, in seconds."""

DEFAULT_MAX_ENTRIES = 65536

STATIC = float("inf")
"""The `seen` of an entry learned for good: a native function's port, a host
pinned behind another node. It neither ages out nor moves when a frame from
another port claims the address; only a new pin moves it."""


class MacEntry(Generic[P]):
    __slots__ = ("port", "seen")

    def __init__(self, port: P, seen: float) -> None:
        self.port = port
        self.seen = seen


@dataclass
class MacTableStats:
    learned: int = 0
    moved: int = 0
    aged: int = 0
    full: int = 0


class MacTable(Generic[P]):
    """Address → entry (port, last seen); entries are refreshed in place."""

    def __init__(self, aging: float = DEFAULT_AGING, max_entries: int = DEFAULT_MAX_ENTRIES):
        if aging <= 0:
            raise ValueError(f"mac aging must be positive, got {aging}")
        if max_entries <= 0:
            raise ValueError(f"mac table size must be positive, got {max_entries}")
        self.aging = aging
        self.max_entries = max_entries
        self.entries: dict[bytes, MacEntry[P]] = {}
        self.stats = MacTableStats()

    def learn(self, mac: bytes, port: P, now: float) -> None:
        """Record that `mac` was seen on `port` (a new address or a move)."""
        entry = self.entries.get(mac)
        if entry is None:
            if len(self.entries) >= self.max_entries:
                self.stats.full += 1
                return
            self.entries[bytes(mac)] = MacEntry(port, now)
            self.stats.learned += 1
            return
        if entry.port is not port:
            if entry.seen == STATIC and now != STATIC:
                return  # a static entry moves only to be pinned elsewhere
            self.stats.moved += 1
            entry.port = port
        elif entry.seen == STATIC:
            return  # seen again where it is pinned: it stays pinned
        entry.seen = now

    def lookup(self, mac: bytes) -> P | None:
        entry = self.entries.get(mac)
        return None if entry is None else entry.port

    def expire(self, now: float) -> int:
        """Remove entries not refreshed within the aging time; returns how many."""
        limit = now - self.aging
        stale = [mac for mac, entry in self.entries.items() if entry.seen < limit]
        for mac in stale:
            del self.entries[mac]
        self.stats.aged += len(stale)
        return len(stale)

    def forget_port(self, port: P, keep: Callable[[bytes], bool] | None = None) -> int:
        """Remove every address learned on `port` (it was detached), or those
        of them that `keep` does not keep."""
        gone = [
            mac
            for mac, entry in self.entries.items()
            if entry.port is port and (keep is None or not keep(mac))
        ]
        for mac in gone:
            del self.entries[mac]
        return len(gone)


DEFAULT_NETWORK = "default"


class Network(Generic[P]):
    """One broadcast domain of the node: its ports and its MAC table."""

    def __init__(self, name: str, macs: MacTable[P]) -> None:
        self.name = name
        self.macs = macs
        self.ports: list[P] = []
        self.floods = 0
