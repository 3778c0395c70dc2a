"""Function files (`pktchain node --functions FILE`): typed configurations, errors with lines."""

from __future__ import annotations

import pytest

from pktchain.functions.sdk.schema import ConfigError
from pktchain.node.function_file import FunctionFileError, parse_functions, spec_from_mapping

GOOD = """\
functions:
  - name: rl
    kind: rate-limiter
    network: lan
    config:
      rate_pps: 100
      burst_packets: 10
  - name: mon
    kind: flow-monitor
    network: {ingress: lan, egress: wan}
"""


def test_a_good_file_gives_specs_with_yaml_types_and_networks() -> None:
    rl, mon = parse_functions(GOOD)
    assert (rl.name, rl.kind) == ("rl", "rate-limiter")
    assert rl.config == {"rate_pps": 100, "burst_packets": 10}  # numbers, not text
    assert rl.networks == {"ingress": "lan", "egress": "lan"}
    assert mon.networks == {"ingress": "lan", "egress": "wan"}
    assert rl.mac("ingress") != rl.mac("egress")
    assert int(rl.mac("ingress").split(":")[0], 16) & 0b11 == 0b10  # local, unicast
    rl.build()


def test_every_mistake_is_reported_with_its_line() -> None:
    text = """\
functions:
  - name: rl
    kind: rate-limiter
    config:
      rate_pps: fast
      colour: blue
  - name: x
    kind: no.such.module:Thing
  - name: rl
    kind: flow-monitor
    network: {sideways: lan}
    shape: round
"""
    with pytest.raises(FunctionFileError) as caught:
        parse_functions(text, source="f.yaml")
    where = {(issue.line, issue.field) for issue in caught.value.issues}
    assert (5, "functions[0].config.rate_pps") in where
    assert (6, "functions[0].config.colour") in where
    assert (8, "functions[1].kind") in where
    assert (9, "functions[2].name") in where  # declared twice
    assert (12, "functions[2].shape") in where
    assert any(field == "functions[2].network" for _line, field in where)
    assert str(caught.value).startswith("6 errors in f.yaml")


def test_an_api_body_is_checked_all_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        spec_from_mapping(
            {"name": "1bad", "kind": "rate-limiter", "config": {"burst_packets": 0}, "x": 1}
        )
    fields = {error.field for error in caught.value.errors}
    assert {"name", "x", "config.burst_packets"} <= fields
    spec = spec_from_mapping({"name": "ok", "kind": "flow-monitor"})
    assert spec.networks == {"ingress": "default", "egress": "default"}
