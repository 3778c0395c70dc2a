"""Each built-in function says how full its tables are, and how full they may get."""

from __future__ import annotations

from typing import Any

import pytest

from pktchain.functions.sdk import TableSize, make_function
from support.loadbalancer import make_lb

CONFIGS: dict[str, dict[str, Any]] = {
    "firewall": {"max_connections": 100},
    "mirror": {"max_leases": 7},
    "rate-limiter": {"rate_pps": 10, "max_buckets": 5},
    "flow-monitor": {"max_flows": 9, "max_records": 11},
    "l7-classifier": {"max_flows": 13},
    "nat": {
        "external_address": "198.51.100.1",
        "internal_networks": ["10.0.0.0/24"],
        "max_sessions": 77,
    },
}

EXPECTED: dict[str, dict[str, TableSize]] = {
    "firewall": {"connections": TableSize(0, 100)},
    "mirror": {"leases": TableSize(0, 7)},
    "rate-limiter": {"buckets": TableSize(0, 5)},
    "flow-monitor": {"flows": TableSize(0, 9), "records": TableSize(0, 11)},
    "l7-classifier": {"flows": TableSize(0, 13)},
    "nat": {
        "nat-sessions": TableSize(0, 77),
        "nat-mappings": TableSize(0),
        "leases": TableSize(0),
    },
}


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_a_new_function_s_tables_are_empty_under_their_configured_limits(kind: str) -> None:
    assert make_function(kind, CONFIGS[kind]).tables() == EXPECTED[kind]


def test_the_load_balancer_counts_its_connections_and_neighbours() -> None:
    tables = make_lb().tables()
    assert tables["connections"].entries == 0
    assert tables["connections"].limit is not None and tables["connections"].limit > 0
    assert set(tables) == {"connections", "neighbours"}
