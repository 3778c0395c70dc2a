"""A pktchain function driven by packet streams: frames in on interfaces, frames out on others.

:class:`FunctionFilter` is what ``pktchain fn`` does to frames, without I/O:
it gives each frame to the function as a :class:`~pktchain.functions.sdk.Packet`
that came in on a named interface, and answers with the frames to send and
the interface each leaves by, as the node's driver does
(``pktchain.node.dataplane.functions.SdkDriver``):

* FORWARD: the rewritten frame leaves by ``Result.iface`` or, by default, the
  other interface (:meth:`Function.peer`); it keeps the time it was captured;
* PUNT: the frame leaves unchanged by the other interface;
* DROP, REPLY: the frame goes no further;
* with any verdict, the frames in ``Result.emit`` leave by the interfaces they
  name (a RST back out of the one the packet came in on, a mirror's copy).

There is no fast path in a filter: every frame goes through the function, and
the flow leases it hands out are not used (a function still keeps them; it
works the same whether a lease carries its flows or not). Timers are the
caller's to run (:meth:`next_deadline`, :meth:`fire`). A function that raises
is counted under the exception's name, reported once per kind, and the frame
is lost: a filter keeps going, as the node does.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from pktchain.functions.sdk import Function, Packet, Verdict
from pktchain.pipe.formats import Frame

__all__ = ["FunctionFilter", "Routed"]

Routed = tuple[str, Frame]
"""A frame to send, and the name of the interface it leaves by."""


class FunctionFilter:
    """Feeds frames to a function and routes what it answers to interfaces; counts both."""

    def __init__(self, function: Function, *, on_error: Callable[[str, str], None]) -> None:
        self.function = function
        self._on_error = on_error
        self.frames_in: Counter[str] = Counter()
        """Frames given to the function, by the interface they came in on."""
        self.frames_out: Counter[str] = Counter()
        """Frames the function sent, by the interface they leave by."""
        self.verdicts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        """Exceptions the function raised, by name (the frame was lost)."""

    def receive(self, iface: str, frame: Frame, now: float) -> list[Routed]:
        """Frames to send for one frame that came in on `iface`."""
        function = self.function
        self.frames_in[iface] += 1
        packet = Packet.from_ethernet(frame.data, iface)
        try:
            result = function.process(packet, now)
            verdict = result.verdict
            out: list[Routed] = []
            if verdict is Verdict.FORWARD:
                data = packet.ethernet
                wire = frame.wire_length if len(data) == len(frame.data) else None
                out.append(
                    (result.iface or function.peer(iface), Frame(data, frame.timestamp_ns, wire))
                )
            elif verdict is Verdict.PUNT:
                out.append((function.peer(iface), frame))
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "process")
            return []
        self.verdicts[verdict.value] += 1
        out.extend(
            (name, Frame(emitted.ethernet if isinstance(emitted, Packet) else emitted))
            for name, emitted in result.emit
        )
        self._count(out)
        return out

    def fire(self, now: float) -> list[Routed]:
        """Run the function's timers due at `now`."""
        try:
            emitted = self.function.on_timer(now)
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "on_timer")
            return []
        out = [(name, Frame(data)) for name, data in emitted]
        self._count(out)
        return out

    def next_deadline(self) -> float | None:
        try:
            return self.function.next_deadline()
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "next_deadline")
            return None

    def stop(self, now: float) -> None:
        """End what the function has open (the flow monitor exports its open flows)."""
        try:
            self.function.stop(now)
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "stop")

    def take_records(self) -> list[str]:
        """Records the function exported since the last call, as JSON lines."""
        try:
            records = self.function.take_records()
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "take_records")
            return []
        return [json.dumps(record, sort_keys=True, default=str) + "\n" for record in records]

    def status(self) -> dict[str, Any]:
        try:
            return self.function.status()
        except Exception as exc:  # a faulty function must not stop the stream
            self._failed(exc, "status")
            return {"kind": self.function.kind(), "counters": dict(self.function.counters)}

    def _count(self, out: list[Routed]) -> None:
        for name, _ in out:
            self.frames_out[name] += 1

    def _failed(self, exc: Exception, where: str) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        self._on_error(kind, f"{self.function.kind()}.{where} raised {kind}: {exc}")
