"""In-memory ports for driving the datapath without a kernel, and a chain of functions on them."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pktchain.functions.sdk import Function
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.ports import PortKind, SwitchPort
from pktchain.node.dataplane.steering import Steering
from pktchain.packet.address import Buffer
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan


class MemoryPort(SwitchPort):
    """A port whose wire is two Python queues."""

    def __init__(self, name: str, *, mac: str | None = None, refuse: OSError | None = None) -> None:
        self.inbox: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self._refuse = refuse
        super().__init__(
            name=name,
            kind=PortKind.TAP,
            fd=-1,
            recv=self._recv,
            send=self._send,
            sendv=self._sendv,
            netns=None,
            ifname=name,
            mac=mac,
        )

    def _recv(self) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def _send(self, data: bytes) -> int:
        if self._refuse is not None:
            raise self._refuse
        self.sent.append(data)
        return len(data)

    def _sendv(self, parts: Sequence[Buffer]) -> int:
        return self._send(b"".join(parts))

    def close(self) -> None:
        pass


H1_MAC, H2_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
"""The two hosts of :func:`function_chain`."""


def function_chain(functions: Sequence[Function]) -> tuple[Datapath, MemoryPort, MemoryPort]:
    """h1 -> the functions in order -> h2: a symmetric chain of UDP on memory ports.

    Function n's ports are ``fn:ingress`` (02:00:00:00:0n:01) and ``fn:egress``
    (02:00:00:00:0n:02), each function a port pair of a group of its own; h2
    has spoken once, so that the switch knows where it is. With no functions,
    h1 and h2 are merely switched.
    """
    datapath = Datapath()
    h1, h2 = MemoryPort("h1", mac=H1_MAC), MemoryPort("h2", mac=H2_MAC)
    ports: dict[str, SwitchPort] = {"h1": h1, "h2": h2}
    datapath.add_port(h1)
    datapath.add_port(h2)
    groups = []
    for n, function in enumerate(functions):
        host = FunctionHost(f"f{n}", SdkDriver(function), lambda: 1.0)
        for side, last in (("ingress", 1), ("egress", 2)):
            port = host.add_port(side, f"02:00:00:00:{n + 1:02x}:{last:02x}")
            datapath.add_port(port)
            ports[port.name] = port
        pair = PairPlan(f"p{n}", f"p{n}", f"f{n}:ingress", f"f{n}:egress")
        groups.append(GroupPlan(f"g{n}", f"g{n}", (pair,)))
    steering = Steering(ports)
    datapath.steering = steering
    if groups:
        classifier = ClassifierPlan(
            "fc", "fc", protocol=17, logical_source_port="h1", logical_destination_port="h2"
        )
        steering.apply(SteeringPlan((ChainPlan("c", "c", 1, tuple(groups), (classifier,), True),)))
    hello = bytes(10) + bytes.fromhex("ffffffffffff" + H2_MAC.replace(":", "") + "88b5") + b"x" * 46
    h2.inbox.append(hello)
    datapath.drain(h2)
    return datapath, h1, h2
