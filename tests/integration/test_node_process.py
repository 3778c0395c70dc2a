"""NodeProcess, the handle tests and demos keep on a node: what it leaves."""

from __future__ import annotations

import os
from pathlib import Path

from support.api_fuzz import api_node


def test_a_killed_node_leaves_no_control_socket(tmp_path: Path) -> None:
    with api_node(f"kill{os.getpid()}", tmp_path) as node:
        assert node.control.exists()
        assert node.kill() == -9  # SIGKILL: the node could not remove its socket itself
        assert not node.control.exists()


def test_a_stopped_node_removes_its_own_control_socket(tmp_path: Path) -> None:
    with api_node(f"stop{os.getpid()}", tmp_path) as node:
        assert node.control.exists()
        assert node.stop() == 0
        assert not node.control.exists()
