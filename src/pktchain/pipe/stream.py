"""Packet streams on file descriptors: frames in from stdin, frames out to stdout.

The drivers around the sans-IO codecs of :mod:`pktchain.packet.streams`. A
packet filter (``pktchain pipe``, ``pktchain fn``) is::

    reader = FrameReader(0, on_skip=SkipReport("pktchain fn"))  # format detected
    writer = None
    for batch in reader.batches():               # one list per read() of stdin
        if writer is None:                       # as the input, unless told otherwise
            writer = FrameWriter(1, encoder_for(reader.format))
        writer.write(out for frame in batch for out in transform(frame))

which :func:`run_filter` does, with ``--count``, signals and a closed stdout
handled. Writes block: a slow consumer slows the producer down and nothing
is lost in between. Malformed lines or records are skipped, reported on
stderr (the first few of each kind) and counted; a pcap stream whose framing
is lost raises :class:`~pktchain.packet.streams.StreamFormatError`.

SIGINT and SIGTERM end a pipe between frames (:class:`StopSignals`): a frame is
never half written, so the output stays a valid stream.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import FrameType
from typing import NamedTuple, TextIO

from pktchain.packet.streams import (
    Defect,
    Frame,
    FrameEncoder,
    Skipped,
    StreamDecoder,
    StreamFormat,
    TimePrecision,
    encoder_for,
)

__all__ = [
    "READ_SIZE",
    "FilterCounts",
    "FrameReader",
    "FrameWriter",
    "Reporter",
    "SkipReport",
    "StopSignals",
    "Stopped",
    "run_filter",
]

READ_SIZE = 1 << 18
"""Bytes asked of each read(): a pipe returns what it holds at once, so this only
bounds a batch."""


class Stopped(Exception):  # noqa: N818 - a request to stop, not an error
    """SIGINT or SIGTERM asked the pipe to stop (between two frames)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM raise :class:`Stopped`, but never inside a write.

    While :attr:`critical` is set (a :class:`FrameWriter` is writing) the first
    signal is only recorded and :meth:`check` raises it after the write; a
    second one raises at once, so a consumer that never reads cannot keep the
    process from stopping. After :class:`Stopped`, the signals have their usual
    effect again.
    """

    def __init__(self) -> None:
        self.critical = False
        self.pending: int | None = None
        self.received = 0  # signals so far

    def install(self) -> StopSignals:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.critical and self.pending is None:
            self.pending = signum
            return
        self._stop(signum)

    def settle(self) -> None:
        """The pipe has stopped: from now on a first signal is only recorded, so that
        closing and the summary run to the end; a second still stops at once."""
        self.critical = True

    def check(self) -> None:
        """Raise the signal that arrived during a write, if one did."""
        if self.pending is not None:
            self._stop(self.pending)

    @staticmethod
    def _stop(signum: int) -> None:
        # Stopped is raised once; while the pipe closes and reports, a further
        # signal acts as usual (SIGTERM ends the process, SIGINT interrupts).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Stopped(signum)


class Reporter:
    """Problems told on stderr, the first ``limit`` of each kind, and all counted.

    Each line starts with the program's name so that, in a pipeline of several
    pktchain commands, it is clear which one complains.
    """

    def __init__(self, program: str, *, limit: int = 5, stream: TextIO | None = None) -> None:
        self.program = program
        self.limit = limit
        self.stream = stream
        self.counts: Counter[Hashable] = Counter()

    def tell(self, kind: Hashable, message: str, *, plural: str = "") -> None:
        """Count one problem of ``kind``; print ``message`` unless ``limit`` were already."""
        self.counts[kind] += 1
        seen = self.counts[kind]
        if seen <= self.limit:
            self.say(message)
        if seen == self.limit:
            self.say(f"further {plural or kind} are counted, not reported one by one")

    def say(self, message: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        # One write per line: the commands of a pipeline share one stderr, and an
        # unbuffered stream (PYTHONUNBUFFERED) would otherwise write the newline
        # apart, letting another process's line in between.
        stream.write(f"{self.program}: {message}\n")
        stream.flush()


class SkipReport(Reporter):
    """The ``on_skip`` of a :class:`FrameReader`: tells and counts skipped lines or records."""

    def __init__(
        self,
        program: str,
        *,
        source: str = "stdin",
        limit: int = 5,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(program, limit=limit, stream=stream)
        self.source = source

    def __call__(self, skipped: Skipped) -> None:
        unit = "lines" if skipped.format is StreamFormat.ASCII else "records"
        self.tell(
            skipped.defect,
            f"{self.source}: {skipped}: skipped",
            plural=f"{unit} {skipped.defect.value}",
        )

    @property
    def skipped(self) -> int:
        return self.counts.total()

    def summary(self) -> str:
        """``3 skipped (2 not hexadecimal byte pairs, 1 shorter than ...)``, or ``""``."""
        if not self.counts:
            return ""
        kinds = ", ".join(
            f"{n} {kind.value if isinstance(kind, Defect) else kind}"
            for kind, n in self.counts.most_common()
        )
        return f"{self.skipped} skipped ({kinds})"


class FrameReader:
    """Frames from a byte stream (a pipe, a file), the format detected unless given.

    :meth:`batches` yields one list per ``read()`` that completed any frame, so
    frames reach the consumer as soon as they arrive; iterating the reader
    yields frames one by one. Skipped lines or records go to ``on_skip``.
    """

    def __init__(
        self,
        fd: int,
        format: StreamFormat | None = None,
        *,
        on_skip: Callable[[Skipped], None] | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        self.fd = fd
        self._decoder = StreamDecoder(format)
        self._on_skip = on_skip
        self._read_size = read_size
        self.frames = 0
        self.ended = False
        """The input has ended (a read returned no bytes)."""

    @property
    def format(self) -> StreamFormat | None:
        """The input's format, None until its first bytes have arrived."""
        return self._decoder.format

    def batches(self) -> Iterator[list[Frame]]:
        while not self.ended:
            frames = self.read_batch()
            if frames:
                yield frames

    def read_batch(self) -> list[Frame]:
        """The frames completed by one ``read()`` of the input, maybe none.

        At the end of the input, the frames still held (and the skip of a
        record cut short) come out and :attr:`ended` is set. For a caller that
        waits on several descriptors (``poll``) and reads only the ready ones;
        on a non-blocking descriptor with nothing to read, ``BlockingIOError``
        passes through.
        """
        data = os.read(self.fd, self._read_size)
        decoder = self._decoder
        if data:
            frames = self._sort(decoder.feed(data))
        else:
            self.ended = True
            frames = self._sort(decoder.end())
        self.frames += len(frames)
        return frames

    def __iter__(self) -> Iterator[Frame]:
        for batch in self.batches():
            yield from batch

    def _sort(self, events: list[Frame | Skipped]) -> list[Frame]:
        frames = []
        for event in events:
            if type(event) is Frame:
                frames.append(event)
            elif self._on_skip is not None and isinstance(event, Skipped):
                self._on_skip(event)
        return frames


class FrameWriter:
    """Frames to a byte stream: the stream's header at once, then each batch in one write.

    Writes block until the consumer has taken everything. A frame without a
    timestamp is stamped with the time it is written.
    """

    def __init__(
        self,
        fd: int,
        encoder: FrameEncoder,
        *,
        stop: StopSignals | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.fd = fd
        self.encoder = encoder
        self.frames = 0
        self._stop = stop
        self._clock = clock
        header = encoder.header()
        if header:
            self._write(header)

    @property
    def format(self) -> StreamFormat:
        return self.encoder.format

    def write(self, frames: Iterable[Frame]) -> None:
        encode = self.encoder.encode
        now = self._clock()
        chunks = [encode(frame, now) for frame in frames]
        if chunks:
            self._write(b"".join(chunks), len(chunks))

    def _write(self, data: bytes, frames: int = 0) -> None:
        stop = self._stop
        if stop is not None:
            stop.critical = True
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        finally:
            if stop is not None:
                stop.critical = False
        self.frames += frames  # counted before a deferred signal stops the caller
        if stop is not None:
            stop.check()


class FilterCounts(NamedTuple):
    """What :func:`run_filter` did."""

    frames_in: int
    frames_out: int
    skipped: int
    stopped_by: str | None  # "SIGTERM", "SIGINT", "EPIPE" (stdout closed) or None (end of input)


def run_filter(
    transform: Callable[[Frame], Iterable[Frame]],
    *,
    program: str,
    input_fd: int = 0,
    output_fd: int = 1,
    input_format: StreamFormat | None = None,
    output_format: StreamFormat | None = None,
    timestamps: bool = False,
    precision: TimePrecision = TimePrecision.MICRO,
    count: int | None = None,
    stop: StopSignals | None = None,
    skips: SkipReport | None = None,
) -> FilterCounts:
    """Read frames from ``input_fd``, pass each to ``transform``, write what it returns.

    The input format is detected unless given; the output format is the
    input's unless given (with an explicit output format, its header is
    written before the first frame arrives). ``count`` stops after that many
    input frames. Returns when the input ends, ``count`` is reached, a signal
    stops it (``stop``) or the consumer closes the output.
    """
    skips = skips if skips is not None else SkipReport(program)
    reader = FrameReader(input_fd, input_format, on_skip=skips)
    writer: FrameWriter | None = None

    def open_writer(format: StreamFormat) -> FrameWriter:
        encoder = encoder_for(format, timestamps=timestamps, precision=precision)
        return FrameWriter(output_fd, encoder, stop=stop)

    frames_in = 0
    stopped_by: str | None = None
    try:
        if output_format is not None:
            writer = open_writer(output_format)
        for batch in reader.batches():
            frames = batch if count is None else batch[: count - frames_in]
            frames_in += len(frames)
            if writer is None:
                writer = open_writer(reader.format or StreamFormat.ASCII)
            writer.write([out for frame in frames for out in transform(frame)])
            if count is not None and frames_in >= count:
                break
    except Stopped as exc:
        stopped_by = signal.Signals(exc.signum).name
    except BrokenPipeError:
        stopped_by = "EPIPE"
    frames_out = writer.frames if writer is not None else 0
    return FilterCounts(frames_in, frames_out, skips.skipped, stopped_by)
