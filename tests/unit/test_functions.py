"""Native functions on the datapath: frames in, frames out, through virtual ports."""

from __future__ import annotations

from memports import MemoryPort

from pktchain.node.datapath import Datapath
from pktchain.node.functions import MAX_ROUNDS, FunctionHost, Outputs, pump

VNET = bytes(10)
H1 = bytes.fromhex("020000000001")
FN = bytes.fromhex("0200000000f1")


def frame(dst: bytes, src: bytes, payload: bytes = b"x" * 46) -> bytes:
    return VNET + dst + src + b"\x88\xb5" + payload


class Answer:
    """Answers every frame on the interface it came from, to its sender."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.deadline: float | None = None
        self.fired: list[float] = []

    def receive(self, iface: str, data: bytes, now: float) -> Outputs:
        self.seen.append((iface, data))
        return [(iface, VNET + data[16:22] + FN + data[22:])]

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> Outputs:
        self.fired.append(now)
        self.deadline = None
        return [("lan", frame(H1, FN, b"tick" * 12))]


class Broken:
    def receive(self, iface: str, data: bytes, now: float) -> Outputs:
        raise RuntimeError("bug")

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, now: float) -> Outputs:
        return []


def plug(function: object) -> tuple[Datapath, MemoryPort, FunctionHost]:
    datapath = Datapath()
    host_port = MemoryPort("h1")
    datapath.add_port(host_port, "lan")
    fn = FunctionHost("fn", function, lambda: 5.0)  # type: ignore[arg-type]
    datapath.add_port(fn.add_port("lan", FN.hex(":")), "lan")
    return datapath, host_port, fn


def test_a_function_answers_through_the_switch() -> None:
    answer = Answer()
    datapath, h1, fn = plug(answer)
    h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)  # switched (flooded) to the function's port: it answers
    assert answer.seen == [("lan", frame(FN, H1))]
    assert pump(datapath, [fn]) == 1
    assert h1.sent == [frame(H1, FN)]  # the answer came back through the switch


def test_a_timer_output_is_switched_like_any_frame() -> None:
    answer = Answer()
    datapath, h1, fn = plug(answer)
    answer.deadline = 7.0
    assert fn.next_deadline() == 7.0
    fn.fire(7.0)
    pump(datapath, [fn])
    assert answer.fired == [7.0]
    assert h1.sent == [frame(H1, FN, b"tick" * 12)]


def test_a_function_that_raises_costs_a_counted_frame_not_the_node() -> None:
    datapath, h1, fn = plug(Broken())
    for _ in range(3):
        h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)
    assert fn.errors["RuntimeError"] == 3
    assert fn.ports["lan"].drops["function-error"] == 3
    assert pump(datapath, [fn]) == 0


def test_outputs_to_unknown_interfaces_are_counted() -> None:
    class Stray(Answer):
        def receive(self, iface: str, data: bytes, now: float) -> Outputs:
            return [("nowhere", data)]

    datapath, h1, fn = plug(Stray())
    h1.inbox.append(frame(FN, H1))
    datapath.drain(h1)
    assert fn.errors["unknown-interface"] == 1


def test_functions_bouncing_frames_forever_are_bounded() -> None:
    class Echo(Answer):
        def receive(self, iface: str, data: bytes, now: float) -> Outputs:
            return [(iface, data)]  # sends everything straight back out

    datapath = Datapath()
    first = FunctionHost("a", Echo(), lambda: 0.0)
    second = FunctionHost("b", Echo(), lambda: 0.0)
    datapath.add_port(first.add_port("lan", "02:00:00:00:00:a1"), "lan")
    datapath.add_port(second.add_port("lan", "02:00:00:00:00:b1"), "lan")
    first.ports["lan"].inbox.append(frame(b"\xff" * 6, bytes.fromhex("02000000000a")))
    assert pump(datapath, [first, second]) == MAX_ROUNDS
