"""Maglev consistent hashing: a lookup table that spreads flows over weighted backends.

Maglev (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, §3.4) fills a table of prime size M: every backend has
its own permutation of the M slots, derived from two hashes of its name
(``offset`` in [0, M), ``skip`` in [1, M)), and the backends take turns
claiming the next free slot of their permutation until the table is full. A
flow goes to ``table[hash(flow) % M]``. Each backend owns close to M/N slots,
and when one backend leaves, its slots go to the others while the slots of the
others mostly stay where they were: the "minimal disruption" of the paper,
which holds approximately (a few slots of the survivors move too; the unit
tests measure how many).

Weights follow the paper's remark on weighted backends: a backend's turns come
in proportion to its weight. In round ``r`` a backend of weight ``w`` takes a
turn while ``r * w`` has reached ``taken * max_weight`` (the scheme Envoy's
Maglev load balancer uses), so over the table each takes ``w / sum(w)`` of the
slots.

Hashes are BLAKE2b (:mod:`hashlib`), stable across processes and machines, so
that every instance of a load balancer given the same backends builds the same
table and sends a flow to the same backend. Python's ``hash()`` is randomized
per process and never used here. Building a table costs about M ln M steps
(tens of milliseconds for M = 65537); lookups are one hash and one index.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections.abc import Sequence

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "MAX_TABLE_SIZE",
    "MaglevTable",
    "flow_hash",
    "is_prime",
    "permutation",
]

DEFAULT_TABLE_SIZE = 65537
"""The paper's production table size (§3.4, §5.3): a prime well above 100 x N."""

MAX_TABLE_SIZE = 16_777_259
"""A prime above 2**24: the largest size accepted (about 64 MB of table)."""

_OFFSET_PERSON = b"maglev-offset"
_SKIP_PERSON = b"maglev-skip"
_FLOW_PERSON = b"maglev-flow"
_U64 = struct.Struct("!Q")


def is_prime(n: int) -> bool:
    """Whether ``n`` is prime (trial division: table sizes are checked once)."""
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    divisor = 3
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 2
    return True


def _hash64(data: bytes, person: bytes) -> int:
    digest = hashlib.blake2b(data, digest_size=8, person=person).digest()
    value: int = _U64.unpack(digest)[0]
    return value


def permutation(name: bytes, size: int) -> tuple[int, int]:
    """The backend's (offset, skip): its j-th preferred slot is ``(offset + j * skip) % size``.

    §3.4: offset = h1(name) mod M, skip = h2(name) mod (M - 1) + 1; with M prime,
    every skip in [1, M) visits all M slots.
    """
    return _hash64(name, _OFFSET_PERSON) % size, _hash64(name, _SKIP_PERSON) % (size - 1) + 1


def flow_hash(key: bytes) -> int:
    """A stable 64-bit hash of a flow's key bytes (the same on every machine)."""
    return _hash64(key, _FLOW_PERSON)


class MaglevTable:
    """The lookup table for one set of weighted backends, named by bytes.

    ``names`` and ``weights`` go in together; :meth:`lookup` answers with an
    index into ``names``. An empty backend list makes an empty table whose
    lookups answer None.
    """

    __slots__ = ("_table", "names", "size", "weights")

    def __init__(self, names: Sequence[bytes], weights: Sequence[int], size: int) -> None:
        if len(names) != len(weights):
            raise ValueError(f"{len(names)} names but {len(weights)} weights")
        if not is_prime(size):
            raise ValueError(f"table size {size} is not prime")
        if len(set(names)) != len(names):
            raise ValueError("backend names repeat")
        if any(w < 1 for w in weights):
            raise ValueError("weights must be at least 1")
        if len(names) > size:
            raise ValueError(f"{len(names)} backends do not fit a table of {size}")
        self.names = tuple(names)
        self.weights = tuple(weights)
        self.size = size
        self._table = _populate(self.names, self.weights, size)

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, key_hash: int) -> int | None:
        """The index of the backend for a flow whose hash is ``key_hash``."""
        if not self._table:
            return None
        index: int = self._table[key_hash % self.size]
        return index

    def entries(self) -> array[int]:
        """The table itself: one backend index per slot (empty when no backends)."""
        return self._table

    def slots(self) -> list[int]:
        """How many slots each backend owns, in the order of ``names``."""
        counts = [0] * len(self.names)
        for index in self._table:
            counts[index] += 1
        return counts


def _populate(names: Sequence[bytes], weights: Sequence[int], size: int) -> array[int]:
    """Fill the table (§3.4, Pseudocode 1), each backend's turns in proportion to its weight."""
    count = len(names)
    if count == 0:
        return array("i")
    skips = []
    positions = []
    for name in names:
        offset, skip = permutation(name, size)
        positions.append(offset)  # the next slot of its permutation to try
        skips.append(skip)
    table = [-1] * size
    max_weight = max(weights)
    owed = [0] * count  # taken * max_weight: the turn count the weight must reach
    filled = 0
    rounds = 0
    while True:
        rounds += 1
        for i in range(count):
            if rounds * weights[i] < owed[i]:
                continue
            owed[i] += max_weight
            slot = positions[i]
            skip = skips[i]
            while table[slot] >= 0:
                slot += skip
                if slot >= size:
                    slot -= size
            table[slot] = i
            slot += skip
            positions[i] = slot - size if slot >= size else slot
            filled += 1
            if filled == size:
                return array("i", table)
