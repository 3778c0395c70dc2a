"""The --port-NAME-rate and --port-NAME-burst options: parsed, defaulted, mistakes named."""

from __future__ import annotations

import pytest

from pktchain.cli import build_parser
from pktchain.node.cli import PORT_LIMIT_HELP, port_limits_of
from pktchain.node.config import PORT_LIMIT_OPTIONS, build_config, port_limits
from pktchain.node.dataplane.limits import DEFAULT_PORT_LIMITS, PortLimits, Rate


def test_no_option_keeps_the_defaults_and_the_help_tells_them_right() -> None:
    assert port_limits({}, {}) == DEFAULT_PORT_LIMITS
    for name, (_what, rate, burst) in PORT_LIMIT_HELP.items():
        default = getattr(DEFAULT_PORT_LIMITS, PORT_LIMIT_OPTIONS[name])
        assert default == Rate(rate, burst)
    assert PORT_LIMIT_HELP.keys() == PORT_LIMIT_OPTIONS.keys()


def test_a_rate_alone_gets_two_seconds_of_burst_a_burst_alone_the_default_rate() -> None:
    limits = port_limits({"arp": "50", "flood": "off"}, {"icmp": 7, "slow-path": None})
    assert limits == PortLimits(
        arp=Rate(50.0, 100),
        icmp_router=Rate(DEFAULT_PORT_LIMITS.icmp_router.per_second, 7),  # type: ignore[union-attr]
        flood=None,
        slow_path=DEFAULT_PORT_LIMITS.slow_path,
    )
    assert port_limits({"arp": "0.2"}, {}).arp == Rate(0.2, 1)


@pytest.mark.parametrize(
    ("rates", "bursts", "words"),
    [
        ({"arp": "fast"}, {}, "--port-arp-rate 'fast': give frames a second, or off"),
        ({"flood": "0"}, {}, "--port-flood-rate 0: must be more than 0, or off"),
        ({"icmp": "nan"}, {}, "--port-icmp-rate nan: must be more than 0"),
        (
            {"slow-path": "off"},
            {"slow-path": 10},
            "--port-slow-path-burst: --port-slow-path-rate is off",
        ),
        ({}, {"arp": 0}, "--port-arp-burst 0: must be 1 or more"),
    ],
)
def test_mistakes_name_the_option(
    rates: dict[str, str], bursts: dict[str, int], words: str
) -> None:
    with pytest.raises(ValueError, match="^" + words.replace("(", r"\(").replace(")", r"\)")):
        port_limits(rates, bursts)


def test_the_command_line_takes_them_into_the_node_config() -> None:
    args = build_parser().parse_args(
        [
            "node",
            "--no-state",
            "--tap",
            "ns:eth0",
            "--port-flood-rate",
            "300",
            "--port-slow-path-rate",
            "off",
            "--port-arp-burst",
            "20",
        ]
    )
    config = build_config(name="n", taps=args.tap, port_limits=port_limits_of(args))
    assert config.port_limits.flood == Rate(300.0, 600)
    assert config.port_limits.slow_path is None
    assert config.port_limits.arp == Rate(100.0, 20)
