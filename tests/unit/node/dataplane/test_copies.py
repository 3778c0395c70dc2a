"""How often the slow path copies a frame handed to native functions: once per function at most.

The datapath copies a frame from a port into a bytearray of its own and hands
that to the first function as its packet's buffer; a packet a function forwards
leaves as that same buffer, which the next function gets as it is. So a packet
crossing a chain of functions is one buffer from end to end, and that buffer is
what the last port is given. A flood gives each function a buffer of its own.
"""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.sdk import Function, Packet, Result, drop, forward
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from support.memports import MemoryPort, function_chain

VNET = bytes(10)
H1, H2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Recorder(Function):
    """Forwards every packet, without a lease (every packet takes the slow path),
    keeping the buffers it was given; with `next_hop`, it routes: the frame goes
    to that MAC from `own`."""

    def __init__(self, next_hop: str | None = None, own: str | None = None) -> None:
        super().__init__(None)
        self.next_hop = next_hop
        self.own = own
        self.buffers: list[bytearray] = []

    def process(self, packet: Packet, now: float) -> Result:
        self.buffers.append(packet.buf)
        if self.next_hop is not None and self.own is not None:
            packet.set_macs(src=mac(self.own), dst=mac(self.next_hop))
        return forward()


class Keeper(Function):
    """Keeps every packet it is given (as one waiting for its next hop would be) and drops it."""

    FLOODED = True

    def __init__(self) -> None:
        super().__init__(None)
        self.kept: list[Packet] = []

    def process(self, packet: Packet, now: float) -> Result:
        self.kept.append(packet)
        return drop("kept")


def to_h2(payload: bytes) -> bytes:
    return VNET + bytes(
        Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=9) / payload
    )


def hello(datapath: Datapath, h2: MemoryPort) -> None:
    """h2 speaks once, so that frames to it are not flooded."""
    h2.inbox.append(VNET + bytes(Ether(src=H2, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"x" * 46)))
    datapath.drain(h2)


def test_a_packet_steered_through_three_functions_is_copied_once() -> None:
    functions = [Recorder() for _ in range(3)]
    datapath, h1, h2 = function_chain(functions)

    frames = [to_h2(b"%d" % n) for n in range(3)]
    for frame in frames:
        h1.inbox.append(frame)
        datapath.drain(h1)

    assert h2.sent == frames  # the chain's MACs undone, nothing else changed
    for n, frame in enumerate(frames):
        buffer = functions[0].buffers[n]
        # One buffer for the whole chain: the copy of the frame the first
        # function got is what the second and the third get, and what leaves.
        assert all(function.buffers[n] is buffer for function in functions)
        assert h2.sent[n] is buffer
        assert frame == to_h2(b"%d" % n)  # the frame as it came in is left alone
    assert len({id(buffer) for buffer in functions[0].buffers}) == len(frames)


def test_a_packet_switched_through_two_routing_functions_is_copied_once() -> None:
    # left: h1, f1.a | middle: f1.b, f2.a | right: f2.b, h2
    f1_a, f1_b, f2_a, f2_b = (f"02:00:00:00:0{n}:00" for n in range(1, 5))
    first = Recorder(next_hop=f2_a, own=f1_b)
    second = Recorder(next_hop=H2, own=f2_b)
    datapath = Datapath()
    h1, h2 = MemoryPort("h1", mac=H1), MemoryPort("h2", mac=H2)
    datapath.add_port(h1, "left")
    datapath.add_port(h2, "right")
    for name, function, macs, networks in (
        ("f1", first, (f1_a, f1_b), ("left", "middle")),
        ("f2", second, (f2_a, f2_b), ("middle", "right")),
    ):
        host = FunctionHost(name, SdkDriver(function), lambda: 1.0)
        for iface, address, network in zip(("ingress", "egress"), macs, networks, strict=True):
            datapath.add_port(host.add_port(iface, address), network)
    hello(datapath, h2)

    frame = VNET + bytes(
        Ether(src=H1, dst=f1_a) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=9)
    )
    h1.inbox.append(frame)
    datapath.drain(h1)

    (buffer,) = first.buffers
    (handed_on,) = second.buffers
    assert handed_on is buffer  # the first function's output, not a copy of it
    (sent,) = h2.sent
    assert sent is buffer
    assert sent[10:22] == mac(H2) + mac(f2_b)


def test_a_flood_gives_each_function_a_buffer_of_its_own_which_nothing_reuses() -> None:
    datapath = Datapath()
    h1 = MemoryPort("h1", mac=H1)
    datapath.add_port(h1)
    keepers = [Keeper(), Keeper()]
    for n, keeper in enumerate(keepers):
        host = FunctionHost(f"k{n}", SdkDriver(keeper), lambda: 1.0)
        datapath.add_port(host.add_port("ingress", f"02:00:00:00:0{n + 1}:01"))
    broadcasts = [
        VNET + bytes(Ether(src=H1, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"%d" % n * 46))
        for n in range(2)
    ]
    for frame in broadcasts:
        h1.inbox.append(frame)
        datapath.drain(h1)

    first, second = keepers
    assert [packet.buf for packet in first.kept] == broadcasts
    assert [packet.buf for packet in second.kept] == broadcasts  # kept packets stay as they came
    buffers = {id(packet.buf) for keeper in keepers for packet in keeper.kept}
    assert len(buffers) == 4
