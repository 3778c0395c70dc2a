"""A pktchain function driven by packet streams: frames in on interfaces, frames out on others.

:class:`FunctionFilter` is what ``pktchain fn`` does to frames, without I/O:
it hands each frame, and the interface it came in on, to the SDK's one driver
(:class:`~pktchain.functions.sdk.Driver`, which the node runs functions
through too) and answers with the frames to send and the interface each leaves
by. What leaves is the driver's rule (the packet, forwarded or punted, by the
interface it names; the frames the function emitted, by theirs); what this
adds is the streams' side of it:

* the packet keeps the time it was captured (and its length on the wire, when
  the function did not change its length); emitted frames are stamped when
  they are written;
* frames in and out are counted by interface.

There is no fast path in a filter: every frame goes through the function, and
the flow leases it hands out are not used (a function still keeps them; it
works the same whether a lease carries its flows or not). Timers are the
caller's to run (:meth:`next_deadline`, :meth:`fire`). A function that raises
is counted under the exception's name, told to ``on_error``, and the frame is
lost: a filter keeps going, as the node does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from pktchain.functions.sdk import VNET, ZERO_VNET, Driver, Function, Packet
from pktchain.packet.streams import Frame

__all__ = ["FunctionFilter", "Routed"]

Routed = tuple[str, Frame]
"""A frame to send, and the name of the interface it leaves by."""


class FunctionFilter:
    """Feeds frames to a function through its driver and routes what leaves; counts both."""

    def __init__(self, function: Function, *, on_error: Callable[[str, str], None]) -> None:
        self.function = function
        self.driver = Driver(function, on_error=on_error)
        self.frames_in: Counter[str] = Counter()
        """Frames given to the function, by the interface they came in on."""
        self.frames_out: Counter[str] = Counter()
        """Frames the function sent, by the interface they leave by."""

    @property
    def verdicts(self) -> dict[str, int]:
        return self.driver.verdicts

    @property
    def errors(self) -> Counter[str]:
        """Exceptions the function raised, by name (the frame was lost)."""
        return self.driver.errors

    def receive(self, iface: str, frame: Frame, now: float) -> list[Routed]:
        """Frames to send for one frame that came in on `iface`."""
        self.frames_in[iface] += 1
        out, sent, emit, _lease = self.driver.receive(iface, ZERO_VNET + frame.data, now)
        routed: list[Routed] = []
        if out is not None:
            data = bytes(memoryview(sent)[VNET:])
            wire = frame.wire_length if len(data) == len(frame.data) else None
            routed.append((out, Frame(data, frame.timestamp_ns, wire)))
        routed.extend(
            (name, Frame(emitted.ethernet if isinstance(emitted, Packet) else emitted))
            for name, emitted in emit
        )
        self._count(routed)
        return routed

    def fire(self, now: float) -> list[Routed]:
        """Run the function's timers due at `now`."""
        routed = [(name, Frame(data)) for name, data in self.driver.fire(now)]
        self._count(routed)
        return routed

    def next_deadline(self) -> float | None:
        return self.driver.next_deadline()

    def stop(self, now: float) -> None:
        """End what the function has open (the flow monitor exports its open flows)."""
        self.driver.stop(now)

    def take_records(self) -> list[str]:
        """Records the function exported since the last call, as JSON lines."""
        records = self.driver.take_records()
        return [json.dumps(record, sort_keys=True, default=str) + "\n" for record in records]

    def status(self) -> dict[str, Any]:
        return self.driver.status()

    def _count(self, routed: list[Routed]) -> None:
        for name, _ in routed:
            self.frames_out[name] += 1
