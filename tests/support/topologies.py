"""Topologies shared by the node tests."""

from __future__ import annotations

from typing import Any


def node_hosts(*names: str, subnet: str = "10.0.0") -> dict[str, Any]:
    """A topology of hosts whose eth0 is a node port, h<n> at <subnet>.<n>/24."""
    return {
        "lab": "node",
        "hosts": {
            name: {
                "interfaces": {
                    "eth0": {
                        "attach": "node",
                        "mac": f"02:00:00:00:00:{n:02x}",
                        "addresses": [f"{subnet}.{n}/24"],
                    }
                }
            }
            for n, name in enumerate(names, start=1)
        },
    }
