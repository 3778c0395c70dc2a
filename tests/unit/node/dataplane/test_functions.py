"""Native functions on the datapath: frames in, frames out, through virtual ports."""

from __future__ import annotations

import errno
from typing import Any

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.sdk import FlowLease, Function, Packet, Result, drop
from pktchain.node.dataplane.datapath import MAX_DEPTH, Datapath
from pktchain.node.dataplane.functions import FunctionHost, Outputs, SdkDriver, pump
from support.memports import MemoryPort

VNET = bytes(10)
H1 = bytes.fromhex("020000000001")
FN = bytes.fromhex("0200000000f1")


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46) -> bytes:
    return VNET + dst + src + b"\x88\xb5" + payload


class Answer:
    """Answers every frame on the interface it came from, to its sender."""

    flooded = True  # it sees broadcasts, as a router does

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.deadline: float | None = None
        self.fired: list[float] = []

    def handle(self, iface: str, data: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        self.seen.append((iface, data))
        return [(iface, VNET + data[16:22] + FN + data[22:])], None

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> Outputs:
        self.fired.append(now)
        self.deadline = None
        return [("lan", frame(H1, FN, b"tick" * 12))]

    def status(self) -> dict[str, Any]:
        return {"kind": "answer"}


class Broken(Answer):
    def handle(self, iface: str, data: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
        raise RuntimeError("bug")


def plug(driver: Answer) -> tuple[Datapath, MemoryPort, FunctionHost]:
    datapath = Datapath()
    host_port = MemoryPort("h1")
    datapath.add_port(host_port, "lan")
    fn = FunctionHost("fn", driver, lambda: 5.0)
    datapath.add_port(fn.add_port("lan", FN.hex(":")), "lan")
    return datapath, host_port, fn


def test_a_function_answers_through_the_switch_at_once() -> None:
    answer = Answer()
    datapath, h1, fn = plug(answer)
    h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)  # flooded to the function's port: it answers within the call
    assert answer.seen == [("lan", frame(FN, H1))]
    assert h1.sent == [frame(H1, FN)]  # the answer came back through the switch
    assert fn.ports["lan"].tx_packets == 1
    assert fn.ports["lan"].rx_packets == 1


def test_a_timer_output_is_switched_like_any_frame() -> None:
    answer = Answer()
    datapath, h1, fn = plug(answer)
    answer.deadline = 7.0
    assert fn.next_deadline() == 7.0
    fn.fire(7.0)
    assert pump(datapath, [fn]) == 1
    assert answer.fired == [7.0]
    assert h1.sent == [frame(H1, FN, b"tick" * 12)]


def test_a_function_that_raises_costs_a_counted_frame_not_the_node() -> None:
    datapath, h1, fn = plug(Broken())
    for _ in range(3):
        h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)
    assert fn.errors["RuntimeError"] == 3
    assert fn.ports["lan"].drops["function-error"] == 3
    assert h1.sent == []


def test_outputs_to_unknown_interfaces_are_counted() -> None:
    class Stray(Answer):
        def handle(self, iface: str, data: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
            return [("nowhere", data)], None

    datapath, h1, fn = plug(Stray())
    h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)
    assert fn.errors["unknown-interface"] == 1


def test_a_bump_in_the_wire_is_not_flooded() -> None:
    class Bump(Answer):
        flooded = False

    bump = Bump()
    datapath, h1, _fn = plug(bump)
    h1.inbox.append(frame(b"\xff" * 6, H1))
    datapath.drain(h1)
    assert bump.seen == []  # a broadcast does not reach it
    h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)
    assert len(bump.seen) == 1  # frames for its own address do


def test_functions_bouncing_frames_forever_are_bounded() -> None:
    class Echo(Answer):
        def handle(self, iface: str, data: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
            self.seen.append((iface, data))
            return [(iface, data)], None  # sends everything straight back out

    datapath = Datapath()
    echo_a, echo_b = Echo(), Echo()
    first = FunctionHost("a", echo_a, lambda: 0.0)
    second = FunctionHost("b", echo_b, lambda: 0.0)
    datapath.add_port(first.add_port("lan", "02:00:00:00:00:a1"), "lan")
    datapath.add_port(second.add_port("lan", "02:00:00:00:00:b1"), "lan")
    first.ports["lan"].inbox.append(frame(b"\xff" * 6, bytes.fromhex("02000000000a")))
    assert pump(datapath, [first, second]) == 1
    # The flood reaches b, whose echo reaches a, ... until the depth bound.
    assert len(echo_a.seen) + len(echo_b.seen) == MAX_DEPTH + 1  # the pumped frame, then re-entries
    drops = first.ports["lan"].drops + second.ports["lan"].drops
    assert drops["function-depth"] == 1


def test_an_sdk_functions_drops_and_errors_show_in_its_status() -> None:
    class Picky(Function):
        KIND = "picky"
        INTERFACES = ("lan", "wan")

        def process(self, packet: Packet, now: float) -> Result:
            if packet.ethernet[-1:] == b"!":
                raise ValueError("bug")
            return drop("not-today")

    datapath, h1, fn = plug(SdkDriver(Picky()))
    h1.inbox.extend([frame(FN, H1), frame(FN, H1, b"x" * 45 + b"!")])
    datapath.drain(h1)
    status = fn.status()
    assert status["counters"] == {"not-today": 1, "function-error": 1}
    assert (status["verdicts"], status["errors"]) == ({"drop": 1}, {"ValueError": 1})
    assert h1.sent == []


def test_a_function_port_has_no_wire_a_write_to_it_is_a_counted_refusal() -> None:
    _datapath, _h1, fn = plug(Answer())
    port = fn.ports["lan"]
    port.transmit(frame(FN, H1))
    assert port.tx_errors[errno.errorcode[errno.EOPNOTSUPP]] == 1 and port.tx_packets == 0


def test_an_answer_to_a_flood_is_not_fused_with_an_earlier_packets_journey() -> None:
    class DropsIpAnswersTheRest(Answer):
        def handle(self, iface: str, data: bytes, now: float) -> tuple[Outputs, FlowLease | None]:
            if data[22:24] == b"\x08\x00":
                return [], None  # an IP packet ends here: its journey is never fused
            return super().handle(iface, data, now)

    datapath, h1, _fn = plug(DropsIpAnswersTheRest())
    udp = Ether(dst=FN, src=H1) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=9)
    h1.inbox.append(VNET + bytes(udp))
    h1.inbox.append(frame(b"\xff" * 6, H1))
    datapath.drain(h1)
    assert h1.sent == [frame(H1, FN)]  # the flood was answered
    assert datapath.fuse_refused == {}  # and the answer carried no trace
