"""The two ends of a pipe: an interface's frames to a stream, a stream's frames to an interface.

``pktchain pipe read`` is :func:`capture_to_stream`, ``pktchain pipe write`` is
:func:`stream_to_interface`. Both stop at the end of their input, after
``count`` frames, on SIGINT/SIGTERM (:class:`~pktchain.pipe.stream.StopSignals`)
or when the other end of their pipe goes away, and return what they did
for the summary line on stderr.
"""

from __future__ import annotations

import errno
import signal
from typing import TYPE_CHECKING, NamedTuple

from pktchain.packet.streams import StreamFormatError
from pktchain.pipe.stream import FrameReader, FrameWriter, Reporter, Stopped

if TYPE_CHECKING:  # not imported at run time: `pipe write` need not load the capture side
    from pktchain.pipe.capture import Capture, CaptureStats
    from pktchain.pipe.iface import Injector

__all__ = ["CaptureResult", "InjectResult", "capture_to_stream", "stream_to_interface"]


class CaptureResult(NamedTuple):
    frames: int  # written to the stream
    kernel: CaptureStats  # the kernel's count: frames it dropped for a full socket buffer
    gso_frames: int  # larger than the MTU (GRO/GSO), passed on as they were
    stopped_by: str | None  # "SIGINT", "SIGTERM", "EPIPE", or None (count reached)


class InjectResult(NamedTuple):
    frames: int  # read from the stream
    sent: int
    refused: int  # by the kernel (errno counted in the reporter) or truncated captures
    error: StreamFormatError | None  # the input could not be read to its end


def capture_to_stream(
    capture: Capture, writer: FrameWriter, *, count: int | None = None, batch: int = 64
) -> CaptureResult:
    """Copy frames from ``capture`` to ``writer`` until ``count``, a signal or EPIPE."""
    start = writer.frames
    stopped_by: str | None = None
    try:
        while count is None or writer.frames - start < count:
            limit = batch if count is None else min(batch, count - (writer.frames - start))
            writer.write(capture.receive(limit))
    except Stopped as exc:
        stopped_by = signal.Signals(exc.signum).name
    except BrokenPipeError:
        stopped_by = "EPIPE"
    frames = writer.frames - start
    return CaptureResult(frames, capture.statistics(), capture.gso_frames, stopped_by)


def stream_to_interface(
    reader: FrameReader,
    injector: Injector,
    *,
    count: int | None = None,
    reporter: Reporter,
) -> InjectResult:
    """Send every frame of ``reader`` out of ``injector``'s interface, until ``count``.

    A frame the kernel refuses (longer than the MTU, interface down, ...) and a
    truncated capture (a pcap record shorter than its frame) are reported and
    counted, and the stream goes on. Stopped by SIGINT/SIGTERM between frames; a
    pcap stream whose framing is lost ends it, with the error in the result.
    """
    frames = sent = refused = 0
    error: StreamFormatError | None = None
    send = injector.send
    try:
        for batch in reader.batches():
            for frame in batch:
                if count is not None and frames >= count:
                    break
                frames += 1
                if frame.truncated:
                    refused += 1
                    reporter.tell(
                        "truncated",
                        f"stdin: frame {frames}: a capture of {len(frame.data)} of its "
                        f"{frame.wire_length} bytes (snaplen): not sent",
                        plural="truncated frames",
                    )
                    continue
                try:
                    send(frame.data)
                except OSError as exc:
                    refused += 1
                    _refused(reporter, injector, frames, len(frame.data), exc)
                    continue
                sent += 1
            if count is not None and frames >= count:
                break
    except Stopped:
        pass
    except StreamFormatError as exc:
        error = exc
    return InjectResult(frames, sent, refused, error)


def _refused(reporter: Reporter, injector: Injector, number: int, size: int, exc: OSError) -> None:
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    hint = ""
    if code == errno.EMSGSIZE:
        mtu = injector.mtu()
        hint = f" (longer than the MTU {mtu} allows" if mtu else " (longer than the MTU allows"
        hint += "; a GRO/GSO frame? see docs/pipes.md)"
    reporter.tell(
        name,
        f"{injector.ifname}: frame {number} ({size} bytes) refused: {exc.strerror}{hint}",
        plural=f"frames refused with {name}",
    )
