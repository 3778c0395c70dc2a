"""Driving the router in unit tests: frames in, frames out, as the node sends them.

Holds no tests. The router is an SDK function, so frames go through the node's
own driver (:class:`~pktchain.node.dataplane.functions.SdkDriver`), each with
its 10-byte virtio-net header in and out; :func:`process` gives the
:class:`~pktchain.functions.sdk.Result` itself (its verdict and lease).
"""

from __future__ import annotations

from pktchain.functions.router.function import Router
from pktchain.functions.sdk import Driver, Packet, Result
from pktchain.node.dataplane.functions import SdkDriver


def receive(
    router: Router, iface: str, frame: bytes, now: float
) -> list[tuple[str, bytes | bytearray]]:
    """What the router sends for a frame that came in on `iface`: the forwarded one first.

    The router gets a copy of `frame`, as the node hands it one."""
    return SdkDriver(router).handle(iface, bytearray(frame), now)[0]


def timers(router: Router, now: float) -> list[tuple[str, bytes]]:
    """What the router's timers due at `now` send."""
    return SdkDriver(router).on_timer(now)


def process(router: Router, iface: str, frame: bytes, now: float) -> tuple[Result, Packet]:
    """The router's answer for a frame (with its virtio-net header), and the packet as it
    left when forwarded."""
    packet = Packet(bytearray(frame), iface)
    return Driver(router).process(packet, now)[1], packet
