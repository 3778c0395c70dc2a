"""``pktchain fn`` on file descriptors: several packet streams in and out, timers, signals.

A function filter reads frames from stdin and, for two-way use, from a named
pipe (the other direction); it writes the frames leaving by each interface to
stdout, a named pipe or a file. :class:`FilterLoop` waits on all of them at
once with ``poll``, and between reads runs the function's timers.

Writes to pipes are non-blocking and queued per output, so that one output
that is not read at the moment never stops the others (in a chain built of two
opposite directions, the two ends each wait on the other only through pipes,
and a blocking write on both sides at once would be a deadlock). Back-pressure
still holds: an input is not read while the output its frames go on to (the
other interface's), or any output that is neither direction's (a mirror's
copies), holds more than :data:`HIGH_WATER` bytes: the pipe behind that input
fills up and its writer waits, as with one blocking write. Frames sent back the
way their packet came (a TCP RST, an ICMP error) do not hold their input up;
they are lost, and counted, only when an output's queue passes
:data:`OVERFLOW`.

Signals only set flags (:class:`LoopSignals`): SIGINT and SIGTERM end the loop
between two reads, and the queues are written out before exit; a second one
ends the process at once. SIGUSR1 asks for the counters. A wake-up pipe
(``signal.set_wakeup_fd``) makes ``poll`` return as soon as one arrives.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import stat
import time
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any, NamedTuple, TextIO

from pktchain.packet.streams import (
    Frame,
    FrameEncoder,
    StreamFormat,
    StreamFormatError,
    encoder_for,
)
from pktchain.pipe.fn import FunctionFilter, Routed
from pktchain.pipe.stream import READ_SIZE, FrameReader, Reporter, SkipReport, StopSignals

__all__ = [
    "HIGH_WATER",
    "OVERFLOW",
    "FilterLoop",
    "Input",
    "LoopResult",
    "LoopSignals",
    "Output",
    "open_input",
    "open_output",
]

HIGH_WATER = READ_SIZE
"""Bytes queued for an output beyond which the inputs feeding it are not read."""
OVERFLOW = 64 * READ_SIZE
"""Bytes queued for an output beyond which frames for it are lost (16 MiB)."""

_IN = select.POLLIN | select.POLLHUP | select.POLLERR
_OUT = select.POLLOUT | select.POLLERR


def open_input(path: str) -> int:
    """Open a named pipe (or a file) to read, without waiting for its writer.

    Every filter of a chain opens its inputs first, none waiting, and only then
    its outputs (which wait for their readers): whatever the order the
    processes start in, no two wait on each other. ``poll`` reports nothing on
    a named pipe until a writer has come and written or gone.
    """
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def open_output(path: str) -> int:
    """Open a named pipe (waiting for its reader) or a file (created, emptied) to write."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)


class Input:
    """A stream of frames (format detected) that arrive on one interface of the function."""

    def __init__(self, name: str, fd: int, iface: str, skips: SkipReport) -> None:
        self.name = name
        self.fd = fd
        self.iface = iface
        self.skips = skips
        """Lines or records of this input that held no frame, told and counted."""
        self.reader = FrameReader(fd, on_skip=skips)


class Output:
    """Where the frames leaving by one interface go: a pipe, a named pipe or a file.

    On a pipe or a socket, writes are non-blocking and what does not fit waits
    in :attr:`buffer` (the descriptor's flags are put back by :meth:`restore`); on
    a file or a terminal each write completes at once. Until the stream format
    is known (the input's, when ``--format`` is not given) frames wait unencoded.
    """

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self.fd = fd
        self.encoder: FrameEncoder | None = None
        self.waiting: list[Frame] = []
        self.buffer = bytearray()
        self.frames = 0
        """Frames encoded for this output."""
        self.lost: Counter[str] = Counter()
        """Frames not written: ``overflow`` (queue full), ``closed`` (the reader went away)."""
        self.closed = False
        mode = os.fstat(fd).st_mode
        self.queued = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        if self.queued:
            fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_NONBLOCK)

    @property
    def pending(self) -> int:
        return len(self.buffer)

    def start(self, encoder: FrameEncoder) -> None:
        """The format is known: the stream's header, then the frames that waited."""
        self.encoder = encoder
        self.buffer += encoder.header()
        waiting, self.waiting = self.waiting, []
        self.put(waiting)

    def put(self, frames: list[Frame]) -> None:
        """Queue `frames` (frames without a time get the current one) and write what fits."""
        if self.closed:
            self.lost["closed"] += len(frames)
            return
        encoder = self.encoder
        if encoder is None:
            self.waiting.extend(frames)
            return
        if self.queued and len(self.buffer) > OVERFLOW:
            self.lost["overflow"] += len(frames)
            return
        encode = encoder.encode
        now = time.time_ns()
        for frame in frames:
            self.buffer += encode(frame, now)
        self.frames += len(frames)
        self.flush()

    def flush(self) -> None:
        """Write as much of the queue as the descriptor takes now (all of it when not queued).

        ``BrokenPipeError`` when the reader went away.
        """
        buffer = self.buffer
        while buffer:
            try:
                written = os.write(self.fd, buffer)
            except BlockingIOError:
                return
            del buffer[:written]

    def close(self) -> None:
        """Stop writing here (the reader went away); later frames count as lost."""
        self.closed = True
        self.lost["closed"] += len(self.waiting)
        self.waiting = []
        self.buffer.clear()

    def restore(self) -> None:
        """Give the descriptor its flags back (stdout may be shared with a shell)."""
        if self.queued:
            try:
                fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
            except OSError as exc:
                if exc.errno != errno.EBADF:
                    raise


class LoopSignals:
    """SIGINT, SIGTERM and SIGUSR1 as flags, and a descriptor that wakes ``poll`` for them.

    SIGINT and SIGTERM go through :class:`~pktchain.pipe.stream.StopSignals`,
    settled from the start: the first is only recorded (:attr:`stop` ``.pending``),
    the loop stops between two reads; a second one raises
    :class:`~pktchain.pipe.stream.Stopped` wherever the process is.
    """

    def __init__(self) -> None:
        self.stop = StopSignals()
        self.stats_asked = False
        self.wakeup = -1
        self._write_end = -1

    def install(self) -> LoopSignals:
        self.wakeup, self._write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._write_end, warn_on_full_buffer=False)
        signal.signal(signal.SIGUSR1, self._ask_stats)
        self.stop.install().settle()
        return self

    def _ask_stats(self, signum: int, frame: FrameType | None) -> None:
        self.stats_asked = True

    def drain(self) -> None:
        try:
            while os.read(self.wakeup, 64):
                pass
        except BlockingIOError:
            pass


class LoopResult(NamedTuple):
    """How the loop ended."""

    frames_in: int
    stopped_by: str | None
    """"SIGINT", "SIGTERM", "EPIPE" (stdout's reader went away), "count", or None: every
    input ended."""


class FilterLoop:
    """Runs a :class:`FunctionFilter` on its inputs and outputs until the inputs end."""

    def __init__(
        self,
        driver: FunctionFilter,
        inputs: list[Input],
        outputs: dict[str, Output],
        *,
        stdout: Output,
        reporter: Reporter,
        signals: LoopSignals,
        output_format: StreamFormat | None = None,
        count: int | None = None,
        export: TextIO | None = None,
        on_stats: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.inputs = inputs
        self.outputs = outputs
        """Interface name → where the frames leaving by it go (absent: lost, counted)."""
        self.stdout = stdout
        self.reporter = reporter
        self.signals = signals
        self.count = count
        self.export = export
        self.on_stats = on_stats
        self.clock = clock
        self.frames_in = 0
        self.unmapped: Counter[str] = Counter()
        """Frames for an interface with no output, by interface."""
        self.format: StreamFormat | None = None
        self._output_format = output_format
        self.error: tuple[Input, StreamFormatError] | None = None
        """The input whose pcap framing was lost, and why: it ended there."""
        # The output each input's frames go on to (the other interface's), and the
        # outputs that are neither direction's (a mirror's copies): both hold an
        # input up when full (see the module's docstring).
        self._onward: dict[Input, Output | None] = {}
        for source in inputs:
            try:
                self._onward[source] = outputs.get(driver.function.peer(source.iface))
            except ValueError:
                self._onward[source] = None
        directions = {id(out) for out in self._onward.values() if out is not None}
        directions.update(id(outputs[source.iface]) for source in inputs if source.iface in outputs)
        self._side = [out for out in outputs.values() if id(out) not in directions]

    # -- the loop ------------------------------------------------------------
    def run(self) -> LoopResult:
        """Until every input has ended, ``count`` frames were read, a signal, or EPIPE on stdout."""
        stopped_by: str | None = None
        try:
            if self._output_format is not None:
                # Each output's stream header goes out now: a reader downstream
                # knows the format before the first frame.
                self._start_outputs(self._output_format)
            stopped_by = self._loop()
        except BrokenPipeError:
            stopped_by = "EPIPE"
        self.driver.stop(self.clock())
        self._export()
        self._finish(stopped_by != "EPIPE")
        return LoopResult(self.frames_in, stopped_by)

    def stats(self) -> dict[str, Any]:
        """Every counter, JSON-ready: frames in and out by interface, skipped input by
        input and defect, frames with no output or lost by output, verdicts, the
        function's errors, and the function's own status (its counters and tables)."""
        driver = self.driver
        return {
            "function": driver.function.kind(),
            "in": dict(driver.frames_in),
            "out": dict(driver.frames_out),
            "skipped": {
                source.name: {_name(defect): n for defect, n in source.skips.counts.items()}
                for source in self.inputs
                if source.skips.counts
            },
            "unmapped": dict(self.unmapped),
            "lost": {out.name: dict(out.lost) for out in self._distinct_outputs() if out.lost},
            "verdicts": dict(driver.verdicts),
            "errors": dict(driver.errors),
            "status": driver.status(),
        }

    def _loop(self) -> str | None:
        signals = self.signals
        driver = self.driver
        while True:
            if signals.stop.pending is not None:
                return signal.Signals(signals.stop.pending).name
            if signals.stats_asked:
                signals.stats_asked = False
                self.on_stats()
            live = [source for source in self.inputs if not source.reader.ended]
            if not live:
                return None
            now = self.clock()
            deadline = driver.next_deadline()
            if deadline is not None and deadline <= now:
                self._route(driver.fire(now))
                self._export()
                continue
            poller = select.poll()
            poller.register(signals.wakeup, select.POLLIN)
            readers: dict[int, Input] = {}
            for source in live:
                if not self._held(source):
                    readers[source.fd] = source
                    poller.register(source.fd, _IN)
            writers: dict[int, Output] = {}
            for out in self._distinct_outputs():
                if out.buffer and not out.closed:
                    writers[out.fd] = out
                    poller.register(out.fd, _OUT)
            timeout = None if deadline is None else max(0, int((deadline - now) * 1000) + 1)
            for fd, _event in poller.poll(timeout):
                if fd == signals.wakeup:
                    signals.drain()
                if fd in writers:
                    self._flush(writers[fd])
                if fd in readers and self._read(readers[fd]):
                    return "count"
            self._export()

    def _held(self, source: Input) -> bool:
        """Whether `source` waits for an output to drain (back-pressure)."""
        onward = self._onward.get(source)
        if onward is not None and onward.pending > HIGH_WATER:
            return True
        return any(out.pending > HIGH_WATER for out in self._side)

    def _read(self, source: Input) -> bool:
        """Read what `source` holds and pass it through; True when ``count`` is reached."""
        try:
            frames = source.reader.read_batch()
        except BlockingIOError:
            return False
        except StreamFormatError as exc:
            # Nothing after a lost pcap framing can be found: this input ends here.
            source.reader.ended = True
            if self.error is None:
                self.error = (source, exc)
            return False
        if self.format is None and source.reader.format is not None:
            self._start_outputs(source.reader.format)
        if self.count is not None:
            frames = frames[: self.count - self.frames_in]
        self.frames_in += len(frames)
        now = self.clock()
        receive = self.driver.receive
        routed: list[Routed] = []
        for frame in frames:
            routed.extend(receive(source.iface, frame, now))
        self._route(routed)
        return self.count is not None and self.frames_in >= self.count

    def _route(self, routed: list[Routed]) -> None:
        if not routed:
            return
        by_output: dict[int, tuple[Output, list[Frame]]] = {}
        outputs = self.outputs
        for iface, frame in routed:
            out = outputs.get(iface)
            if out is None:
                self.unmapped[iface] += 1
                continue
            by_output.setdefault(id(out), (out, []))[1].append(frame)
        for out, frames in by_output.values():
            try:
                out.put(frames)
            except BrokenPipeError:
                self._gone(out)

    def _flush(self, out: Output) -> None:
        try:
            out.flush()
        except BrokenPipeError:
            self._gone(out)

    def _gone(self, out: Output) -> None:
        if out is self.stdout:
            raise BrokenPipeError(errno.EPIPE, "stdout closed")
        self.reporter.say(f"{out.name}: its reader went away; frames for it are lost from now on")
        out.close()

    def _start_outputs(self, format: StreamFormat) -> None:
        self.format = format
        for out in self._distinct_outputs():
            try:
                out.start(encoder_for(format))
            except BrokenPipeError:
                self._gone(out)

    def _distinct_outputs(self) -> list[Output]:
        seen: dict[int, Output] = {id(self.stdout): self.stdout}
        for out in self.outputs.values():
            seen.setdefault(id(out), out)
        return list(seen.values())

    def _export(self) -> None:
        if self.export is None:
            return
        lines = self.driver.take_records()
        if not lines:
            return
        try:
            self.export.writelines(lines)
            self.export.flush()
        except OSError as exc:
            self.reporter.say(f"--export: {exc.strerror or exc}; records are no longer written")
            self.export = None

    def _finish(self, with_stdout: bool) -> None:
        """Write out what is queued (a second SIGINT/SIGTERM stops this at once)."""
        if self.format is None:
            waiting = any(out.waiting for out in self._distinct_outputs())
            if waiting:  # nothing came in to tell the format: as `pipe write` reads by default
                self._start_outputs(StreamFormat.ASCII)
        pending = [
            out
            for out in self._distinct_outputs()
            if not out.closed and (with_stdout or out is not self.stdout)
        ]
        while pending:
            poller = select.poll()
            for out in pending:
                poller.register(out.fd, _OUT)
            ready = {fd for fd, _ in poller.poll()}
            for out in pending:
                if out.fd in ready:
                    try:
                        out.flush()
                    except BrokenPipeError:
                        out.close()
            pending = [out for out in pending if out.buffer and not out.closed]


def stats_line(stats: dict[str, Any], format: str) -> str:
    """:meth:`FilterLoop.stats` as one line: JSON (``json``), or readable (``text``)::

        in: ingress 5; out: egress 4; skipped (stdin): 1 (1 not hexadecimal byte pairs);
        verdicts: forward 4, drop 1; counters: accepted 4, drop-malformed 1

    The readable line leaves out what is zero and the function's tables.
    """
    if format == "json":
        return json.dumps(stats, sort_keys=True, default=str)
    parts = [f"in: {_tally(stats['in'])}", f"out: {_tally(stats['out'])}"]
    for name, counts in stats["skipped"].items():
        kinds = ", ".join(f"{n} {defect}" for defect, n in counts.items())
        parts.append(f"skipped ({name}): {sum(counts.values())} ({kinds})")
    if stats["unmapped"]:
        parts.append(f"dropped, no output: {_tally(stats['unmapped'])}")
    for name, counts in stats["lost"].items():
        parts.append(f"lost ({name}): {_tally(counts)}")
    parts.append(f"verdicts: {_tally(stats['verdicts'])}")
    if stats["errors"]:
        parts.append(f"function errors: {_tally(stats['errors'])}")
    parts.append(f"counters: {_tally(stats['status'].get('counters', {}))}")
    if "stopped_by" in stats:
        parts.append(f"stopped by {stats['stopped_by']}")
    return "; ".join(parts)


def _tally(counts: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items() if value) or "none"


def _name(defect: object) -> str:
    return str(getattr(defect, "value", defect))
