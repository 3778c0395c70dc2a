"""The one driver: what leaves for each verdict, and the counting it does for every function."""

from __future__ import annotations

import logging

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.sdk import (
    FUNCTION_ERROR,
    ZERO_VNET,
    Driver,
    FlowLease,
    Function,
    Packet,
    Result,
    drop,
    forward,
    punt,
    reply,
)


def frame(dport: int = 9) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=1000, dport=dport)
        / b"payload"
    )


class Judge(Function):
    """Answers by destination port, so that one function shows every verdict."""

    KIND = "judge"
    COUNTERS = ("refused",)

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.seen: list[str] = []
        self.lease = FlowLease()

    def process(self, packet: Packet, now: float) -> Result:
        self.seen.append(packet.iface)
        dport = packet.dport
        if dport == 1:
            packet.set_dst(port=2)
            return forward(lease=self.lease)
        if dport == 3:
            return forward("ingress", emit=[("egress", b"copy")])
        if dport == 4:
            packet.set_dst(port=5)  # undone: a punt sends the frame as it came
            return punt()
        if dport == 6:
            return reply(packet, b"answer", reason="answered")
        if dport == 7:
            raise KeyError("bug")
        return drop("refused")


def test_forward_sends_the_rewritten_packet_to_the_peer_with_its_lease() -> None:
    judge = Judge()
    out, sent, emit, lease = Driver(judge).receive("ingress", ZERO_VNET + frame(1), 0.0)
    assert out == "egress"
    assert Ether(bytes(sent[len(ZERO_VNET) :]))[UDP].dport == 2
    assert (list(emit), lease) == ([], judge.lease)


def test_forward_may_name_its_interface_and_emit_frames() -> None:
    out, _sent, emit, _lease = Driver(Judge()).receive("egress", ZERO_VNET + frame(3), 0.0)
    assert out == "ingress"
    assert list(emit) == [("egress", b"copy")]


def test_a_punt_sends_the_frame_as_it_came_without_a_lease() -> None:
    wire = ZERO_VNET + frame(4)
    out, sent, _emit, lease = Driver(Judge()).receive("ingress", wire, 0.0)
    assert (out, bytes(sent), lease) == ("egress", wire, None)


def test_drops_and_replies_are_counted_by_reason_in_the_functions_counters() -> None:
    judge = Judge()
    driver = Driver(judge)
    for dport in (8, 8, 6):
        out, _sent, emit, _lease = driver.receive("ingress", ZERO_VNET + frame(dport), 0.0)
        assert out is None
    assert list(emit) == [("ingress", b"answer")]
    assert (judge.counters["refused"], judge.counters["answered"]) == (2, 1)
    assert judge.status()["counters"] == {"refused": 2, "answered": 1}
    assert driver.verdicts == {"drop": 2, "reply": 1}


def test_a_frame_on_an_interface_the_function_lacks_never_reaches_it() -> None:
    judge = Judge()
    driver = Driver(judge)
    out, result = driver.process(Packet.from_ethernet(frame(1), "sideways"), 0.0)
    assert (out, result.reason) == (None, "unknown-interface")
    assert judge.seen == []
    assert judge.counters["unknown-interface"] == 1
    assert driver.verdicts == {"drop": 1}


def test_a_function_names_the_counter_of_refused_frames() -> None:
    class Prefixed(Judge):
        UNKNOWN_INTERFACE = "drop-unknown-interface"

    judge = Prefixed()
    Driver(judge).receive("sideways", ZERO_VNET + frame(), 0.0)
    assert judge.counters["drop-unknown-interface"] == 1


def test_an_exception_is_a_counted_drop_told_to_the_caller() -> None:
    judge = Judge()
    told: list[tuple[str, str]] = []
    driver = Driver(judge, on_error=lambda kind, message: told.append((kind, message)))
    for _ in range(2):
        out, *_ = driver.receive("ingress", ZERO_VNET + frame(7), 0.0)
        assert out is None
    assert judge.counters[FUNCTION_ERROR] == 2
    assert driver.errors == {"KeyError": 2}
    assert told == [("KeyError", "judge.process raised KeyError: 'bug'")] * 2
    assert driver.verdicts == {}  # the function gave none


def test_without_a_caller_to_tell_the_first_exception_of_each_kind_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Judge):
        def on_timer(self, now: float) -> list[tuple[str, bytes]]:
            raise ValueError("timer")

        def next_deadline(self) -> float | None:
            raise ValueError("deadline")

        def status(self) -> dict[str, object]:
            raise RuntimeError("status")

    driver = Driver(Broken())
    with caplog.at_level(logging.ERROR, logger="pktchain.functions.sdk.driver"):
        for _ in range(3):
            driver.receive("ingress", ZERO_VNET + frame(7), 0.0)
        assert driver.fire(1.0) == []
        assert driver.next_deadline() is None
        assert driver.status() == {"kind": "judge", "counters": {"refused": 0, FUNCTION_ERROR: 3}}
    assert driver.errors == {"KeyError": 3, "ValueError": 2, "RuntimeError": 1}
    logged = [record.getMessage() for record in caplog.records]
    assert logged == [
        "judge.process raised KeyError: 'bug'",
        "judge.on_timer raised ValueError: timer",
        "judge.status raised RuntimeError: status",
    ]
    assert all(record.exc_info for record in caplog.records)
