"""The one driver of a function: frames in, what leaves out, and the contract's bookkeeping.

Whatever runs a :class:`~pktchain.functions.sdk.Function` (the node, through
``pktchain.node.dataplane.functions.SdkDriver``; ``pktchain fn``, through
``pktchain.pipe.fn.FunctionFilter``) runs it through :class:`Driver`, which
does for every function what the contract leaves out of it, as Click counts
drops in the framework rather than in each element:

* a frame on an interface the function does not have is refused before the
  function sees it: a drop counted under :attr:`Function.UNKNOWN_INTERFACE`
  (a function whose interfaces come from its configuration, like the router,
  declares no ``INTERFACES`` and refuses unknown ones itself);
* the :class:`~pktchain.functions.sdk.Result` decides what leaves, and by
  which interface:

  ========  ============================================================
  FORWARD   the packet as the function left it (rewritten in place), by
            ``Result.iface``, or by default the other interface
            (:meth:`Function.peer`), with the flow lease it was given
  PUNT      the frame as it came, by the other interface; no lease
  DROP      nothing
  REPLY     nothing (the answer is in ``Result.emit``)
  ========  ============================================================

  and with any verdict the frames in ``Result.emit`` leave by the interfaces
  they name;
* DROP and REPLY are counted under ``Result.reason`` in the function's own
  :attr:`Function.counters`, so that its status shows them; a function never
  counts the reason it returns;
* an exception out of the function costs the frame and nothing else: it is
  counted as a drop (``function-error``) and by the exception's name
  (:attr:`Driver.errors`), and told to ``on_error``, or without one logged
  with its traceback the first time each kind is seen. Nothing the function
  raises leaves the driver: a bad packet, or a bug, never stops the loop
  around it.

:meth:`Driver.receive` copies the frame it is given into the packet's
buffer, so the caller's frame stays as it came; :meth:`Driver.receive_owned`
takes a buffer the caller gives away (the node's datapath, which made the one
copy of the frame) and the packet leaves as that same buffer.

Frames in and the packet's own output carry the 10-byte virtio-net header
(zero when the frame came without one), as :class:`Packet` holds them; emitted
frames are bare Ethernet, as the function gives them. What a driver makes of
them (the node's ports, a pipe's streams) is its business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from pktchain.functions.sdk.contract import (
    Emitted,
    FlowLease,
    Function,
    Packet,
    Result,
    TableSize,
    Verdict,
    drop,
)

__all__ = ["FUNCTION_ERROR", "Driver", "Received"]

FUNCTION_ERROR = "function-error"
"""The drop reason of a frame lost to an exception the function raised."""

Received = tuple[str | None, bytes | bytearray, Sequence[Emitted], FlowLease | None]
"""What one frame received comes to: the interface the packet leaves by (None:
it goes no further), the packet as it leaves (with its virtio-net header), the
frames the function emitted (interface, Ethernet frame or kept Packet), and the flow lease the
packet was forwarded with."""

_FORWARD = Verdict.FORWARD
_PUNT = Verdict.PUNT
_DROP = Verdict.DROP


class Driver:
    """Runs one function: the verdict-to-output rules and the counting (see the module)."""

    def __init__(
        self,
        function: Function,
        *,
        on_error: Callable[[str, str], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.function = function
        self.name = name if name is not None else function.kind()
        """The function's name where it runs (a node's function), for its log lines."""
        self.interfaces = frozenset(function.INTERFACES)
        self._verdicts: Counter[Verdict] = Counter()
        self.errors: Counter[str] = Counter()
        """Exceptions the function raised, by name."""
        self._on_error = on_error

    @property
    def verdicts(self) -> dict[str, int]:
        """Frames the function decided on, by verdict (``forward``, ``drop``...)."""
        return {verdict.value: count for verdict, count in self._verdicts.items()}

    def receive(self, iface: str, frame: bytes, now: float) -> Received:
        """The function's turn for one frame (virtio-net header first) that came in on `iface`.

        The function rewrites a copy of `frame`, which stays as it came (a
        punted packet leaves as it).
        """
        packet = Packet(bytearray(frame), iface)
        out, result = self.process(packet, now)
        if out is None:
            return None, b"", result.emit, None
        if result.verdict is _FORWARD:
            return out, packet.buf, result.emit, result.lease
        return out, frame, result.emit, None  # PUNT: as it came

    def receive_owned(self, iface: str, buf: bytearray, now: float) -> Received:
        """As :meth:`receive`, for a frame the caller gives away: no copy is made.

        `buf` becomes the packet's buffer, so the function rewrites it in
        place; a packet that goes on (FORWARD, PUNT) leaves as `buf` itself,
        the caller's again. A punted packet is one the function left
        unchanged (:attr:`Verdict.PUNT`), so `buf` is what came in.
        """
        packet = Packet(buf, iface)
        out, result = self.process(packet, now)
        if out is None:
            return None, b"", result.emit, None
        return out, buf, result.emit, result.lease if result.verdict is _FORWARD else None

    def process(self, packet: Packet, now: float) -> tuple[str | None, Result]:
        """The function's turn for one packet, with the bookkeeping done.

        Returns the interface the packet leaves by (None: it goes no further)
        and the function's Result. A frame refused for its interface, or lost
        to an exception, comes back as a drop with its reason.
        """
        function = self.function
        iface = packet.iface
        # A function whose interfaces come from its configuration (the router)
        # declares none and refuses an unknown one itself.
        if self.interfaces and iface not in self.interfaces:
            self._verdicts[_DROP] += 1
            function.counters[function.UNKNOWN_INTERFACE] += 1
            return None, drop(function.UNKNOWN_INTERFACE)
        out: str | None = None
        try:
            result = function.process(packet, now)
            verdict = result.verdict
            if verdict is _FORWARD:
                out = result.iface or function.peer(iface)
            elif verdict is _PUNT:
                out = function.peer(iface)
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "process")
            function.counters[FUNCTION_ERROR] += 1
            return None, drop(FUNCTION_ERROR)
        self._verdicts[verdict] += 1
        if out is None:
            reason = result.reason
            if reason:
                function.counters[reason] += 1
        return out, result

    def fire(self, now: float) -> list[tuple[str, bytes]]:
        """Run the function's timers due at `now`: the frames it emits (interface, Ethernet)."""
        try:
            return self.function.on_timer(now)
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "on_timer")
            return []

    def next_deadline(self) -> float | None:
        try:
            return self.function.next_deadline()
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "next_deadline")
            return None

    def stop(self, now: float) -> None:
        """End what the function has open (the flow monitor exports its open flows)."""
        try:
            self.function.stop(now)
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "stop")

    def take_records(self) -> list[dict[str, Any]]:
        """Records the function exported since the last call."""
        try:
            return self.function.take_records()
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "take_records")
            return []

    def status(self) -> dict[str, Any]:
        """The function's status; its kind and counters alone when ``status()`` raised."""
        function = self.function
        try:
            return function.status()
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "status")
            return {"kind": function.kind(), "counters": dict(function.counters)}

    def tables(self) -> dict[str, TableSize]:
        """How full the function's tables are; none when ``tables()`` raised."""
        try:
            return self.function.tables()
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "tables")
            return {}

    def _failed(self, exc: Exception, where: str) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        message = f"{self.function.kind()}.{where} raised {kind}: {exc}"
        if self._on_error is not None:
            self._on_error(kind, message)
        elif self.errors[kind] == 1:
            # Imported here: logging alone is a tenth of `pktchain fn`'s start-up budget.
            import logging

            from pktchain.logs import event

            logging.getLogger(__name__).error(
                "%s",
                message,
                exc_info=exc,
                extra=event(
                    "function_error",
                    function=self.name,
                    function_kind=self.function.kind(),
                    exception=kind,
                    during=where,
                ),
            )
