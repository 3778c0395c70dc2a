"""--max-flows: the size of the steering's flow table, an option of the node."""

from __future__ import annotations

import pytest

from pktchain.cli import main
from pktchain.node import cli
from pktchain.node.config import build_config
from pktchain.node.dataplane.steering import DEFAULT_MAX_FLOWS

NODE = ["node", "--no-state", "--no-api", "--tap", "pc-x.h1:eth0"]


def test_the_flow_table_size_is_an_option_with_the_steerings_default() -> None:
    assert cli.DEFAULT_MAX_FLOWS == DEFAULT_MAX_FLOWS  # --help's copy
    assert build_config(name="n", taps=["pc-x.h1:eth0"]).max_flows == DEFAULT_MAX_FLOWS
    assert build_config(name="n", taps=["pc-x.h1:eth0"], max_flows=4096).max_flows == 4096


def test_a_flow_table_of_no_flows_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*NODE, "--max-flows", "0"]) == 2
    assert "--max-flows: must be positive, got 0" in capsys.readouterr().err
