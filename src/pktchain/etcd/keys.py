"""The layout of pktchain's keys in etcd.

Everything of one cluster sits under ``/pktchain/<cluster>/``: the chaining
resources under ``sfc/`` (`pktchain.sfc.etcd_store`), the node registry under
``nodes/`` (`pktchain.cluster`). Several clusters can share one etcd under
different names. Names that become one path segment (a cluster's, a node's)
are checked here, so that no name can reach into another's keys.
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_CLUSTER", "ROOT", "check_segment", "cluster_prefix", "prefix_end"]

ROOT = "/pktchain/"
DEFAULT_CLUSTER = "pktchain"
"""The cluster name when none is given (``--cluster``)."""

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_segment(what: str, value: str) -> str:
    """`value` if it can be one segment of a key; ValueError naming `what` otherwise."""
    if not _SEGMENT.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} cannot name an etcd key: use 1-63 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


def cluster_prefix(cluster: str = DEFAULT_CLUSTER) -> str:
    """``/pktchain/<cluster>/``."""
    return f"{ROOT}{check_segment('cluster name', cluster)}/"


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range or a watch cover every key starting with
    `prefix`: the prefix with its last byte incremented (etcd's ``WithPrefix``)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"  # every key
