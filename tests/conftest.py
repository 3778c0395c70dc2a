"""Test-suite wide settings.

The suite has three parts: ``unit`` (pure and fast, laid out like ``src/pktchain``),
``integration`` (tests that start servers or subprocesses on loopback), and
``netns`` (real hosts in network namespaces). Code they share is the
``support`` package (``tests`` is on ``sys.path``).

The lab fixtures (``lab_factory``, ``lab_host``, ``unique_name``) come from the
``pktchain.lab.pytest_plugin`` plugin, loaded through its entry point. Every
test under ``tests/netns`` is marked ``netns``, so it is skipped, with the
reason, where network namespaces cannot be made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import settings

pytest_plugins = ("support.etcd",)  # the `etcd` fixture: a real etcd on loopback

# Properties are about what the code does, not how fast one example runs: on a
# loaded 2-core machine an example may take longer than hypothesis's default
# 200 ms deadline, which would fail a correct test. Speed is the benchmarks'.
settings.register_profile("pktchain", deadline=None)
settings.load_profile("pktchain")

NETNS_DIR = Path(__file__).parent / "netns"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if NETNS_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.netns)
