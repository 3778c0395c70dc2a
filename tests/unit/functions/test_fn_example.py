"""The example user function (examples/functions/port_filter.py), loaded by path as a user would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.sdk import ZERO_VNET as VNET
from pktchain.functions.sdk import Driver, Function, Packet, Verdict, make_function
from pktchain.functions.sdk.schema import ConfigError
from support import paths

EXAMPLES = paths.EXAMPLES / "functions"


@pytest.fixture
def port_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[Function]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield make_function("port_filter:PortFilter", {"port": 23})


def frame(layer4: ScapyPacket) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.1.1") / layer4)


def test_the_example_is_at_most_30_lines() -> None:
    assert len((EXAMPLES / "port_filter.py").read_text().splitlines()) <= 30


def test_a_blocked_tcp_port_is_a_counted_drop(port_filter: Function) -> None:
    result = port_filter.process(Packet.from_ethernet(frame(TCP(dport=23)), "ingress"), 0.0)
    assert (result.verdict, result.reason) == (Verdict.DROP, "blocked-port")
    out, _sent, _emit, _lease = Driver(port_filter).receive(
        "ingress", VNET + frame(TCP(dport=23)), 0
    )
    assert out is None
    assert port_filter.counters["blocked-port"] == 1  # counted once, by the driver


def test_a_blocked_udp_port_is_dropped_too(port_filter: Function) -> None:
    result = port_filter.process(Packet.from_ethernet(frame(UDP(dport=23)), "egress"), 0.0)
    assert result.verdict is Verdict.DROP


def test_other_traffic_is_forwarded_unchanged_with_a_lease(port_filter: Function) -> None:
    sent = frame(TCP(sport=23, dport=80) / b"hello")  # a source port of 23 is not blocked
    packet = Packet.from_ethernet(sent, "ingress")
    result = port_filter.process(packet, 0.0)
    assert result.verdict is Verdict.FORWARD
    assert result.lease is not None
    assert port_filter.peer("ingress") == "egress"
    assert packet.ethernet == sent
    assert bytes(Ether(packet.ethernet)[TCP].payload) == b"hello"


def test_each_flow_keeps_its_lease_so_the_fast_path_can_take_it(port_filter: Function) -> None:
    def lease(sport: int, iface: str = "ingress") -> object:
        sent = frame(TCP(sport=sport, dport=80))
        return port_filter.process(Packet.from_ethernet(sent, iface), 0.0).lease

    first = lease(1000)
    assert lease(1000) is first
    assert lease(1001) is not first
    assert lease(1000, "egress") is not first


def test_a_malformed_frame_is_a_counted_drop(port_filter: Function) -> None:
    result = port_filter.process(Packet.from_ethernet(frame(TCP(dport=80))[:30], "ingress"), 0.0)
    assert (result.verdict, result.reason) == (Verdict.DROP, "malformed")


def test_its_kind_is_its_import_path(port_filter: Function) -> None:
    assert port_filter.kind() == "port_filter:PortFilter"
    assert port_filter.schema() == [
        {"name": "port", "type": "int", "default": 23, "minimum": 1, "maximum": 65535}
    ]


def test_a_wrong_port_is_reported_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    with pytest.raises(ConfigError, match=r"port: must be at most 65535, got 70000"):
        make_function("port_filter:PortFilter", {"port": 70000})
