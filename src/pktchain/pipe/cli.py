"""``pktchain pipe read IFACE`` and ``pktchain pipe write IFACE``: interfaces as packet streams.

``read`` writes the frames of an interface to stdout, ``write`` sends the
frames of stdin out of an interface, in pcap or EtherPIPE-style ASCII
(docs/pipes.md), so that Unix tools sit between two interfaces::

    pktchain pipe read --format ascii eth0 | awk '$1=="001122334455"' | pktchain pipe write eth1

Only `argparse` is imported at load time; the handlers import the rest, and
nothing heavier than the standard library and pktchain's codec, so that a pipe
forwards its first frame within a few tens of milliseconds of being started.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from pktchain.errors import UsageError

if TYPE_CHECKING:
    from pktchain.pipe.stream import StopSignals

FORMATS = ("pcap", "ascii")
DIRECTIONS = ("in", "out", "inout")
PRECISIONS = ("micro", "nano")
MAX_SNAPLEN = 262144  # formats.MAX_FRAME, repeated so that --help imports nothing


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "pipe",
        help="interfaces as packet streams on stdin/stdout (pcap or ASCII)",
        description="Interfaces as packet streams on stdin/stdout (docs/pipes.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    read = actions.add_parser(
        "read",
        help="write the frames of an interface to stdout",
        description=(
            "Write the frames of IFACE to stdout, as pcap (tcpdump -r - reads it) or one "
            "ASCII line per frame. By default only received frames, so that a pipe never "
            "reads back what is sent out of the same interface (docs/pipes.md)."
        ),
    )
    read.add_argument("iface", metavar="IFACE", help="the interface to read")
    _common(read)
    read.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: pcap, or ascii when stdout is a terminal)",
    )
    read.add_argument(
        "-Q",
        "--direction",
        choices=DIRECTIONS,
        default="in",
        help="frames received (in, the default), sent (out) or both (inout, as tcpdump)",
    )
    read.add_argument(
        "-s",
        "--snaplen",
        type=int,
        default=MAX_SNAPLEN,
        help=f"keep at most this many bytes of each frame ({MAX_SNAPLEN})",
    )
    read.add_argument(
        "-p",
        "--no-promiscuous-mode",
        dest="promiscuous",
        action="store_false",
        help="do not put the interface in promiscuous mode",
    )
    read.add_argument(
        "-B",
        "--buffer-size",
        type=int,
        default=2048,
        metavar="KiB",
        help="kernel socket buffer in KiB (2048): what absorbs a slow consumer's pauses",
    )
    read.add_argument(
        "--timestamps",
        action="store_true",
        help="ascii: start each line with the capture time (16 hex digits, ns since the epoch)",
    )
    read.add_argument(
        "--time-stamp-precision",
        choices=PRECISIONS,
        default="micro",
        help="pcap: micro- or nanosecond timestamps (micro)",
    )
    read.set_defaults(handler=_read)

    write = actions.add_parser(
        "write",
        help="send the frames of stdin out of an interface",
        description=(
            "Send the frames read from stdin out of IFACE. The format (pcap or ascii) is "
            "detected from the first bytes. Malformed lines or records are skipped and "
            "reported on stderr."
        ),
    )
    write.add_argument("iface", metavar="IFACE", help="the interface to send on")
    _common(write)
    write.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="input format (default: detected: a pcap magic number, else ascii)",
    )
    write.set_defaults(handler=_write)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="the interface's network namespace (as `ip netns exec NAME` would)",
    )
    parser.add_argument(
        "-c", "--count", type=int, default=None, metavar="N", help="stop after N frames"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr at exit")


def _check(args: argparse.Namespace) -> None:
    if args.count is not None and args.count < 1:
        raise UsageError("--count: expected a positive number of frames")
    snaplen = getattr(args, "snaplen", MAX_SNAPLEN)
    if not 1 <= snaplen <= MAX_SNAPLEN:
        raise UsageError(f"--snaplen: expected 1 to {MAX_SNAPLEN}")
    if getattr(args, "buffer_size", 1) < 1:
        raise UsageError("--buffer-size: expected a positive number of KiB")


def _read(args: argparse.Namespace) -> int:
    _check(args)
    from pktchain.pipe.stream import Stopped, StopSignals

    stop = StopSignals().install()
    try:
        return _capture(args, stop)
    except Stopped as exc:  # before the capture was open, or a second signal after it
        return 0 if stop.received == 1 else 128 + exc.signum


def _capture(args: argparse.Namespace, stop: StopSignals) -> int:
    from pktchain.packet.streams import StreamFormat, TimePrecision, encoder_for
    from pktchain.pipe.capture import Capture, CaptureDirection
    from pktchain.pipe.iface import InterfaceError, enter_netns
    from pktchain.pipe.pumps import capture_to_stream
    from pktchain.pipe.stream import FrameWriter, Reporter

    reporter = Reporter("pktchain pipe read")
    if args.format is None:
        format = StreamFormat.ASCII if os.isatty(1) else StreamFormat.PCAP
    else:
        format = StreamFormat(args.format)
    try:
        if args.netns:
            enter_netns(args.netns)
        capture = Capture(
            args.iface,
            direction=CaptureDirection(args.direction),
            promiscuous=args.promiscuous,
            snaplen=args.snaplen,
            buffer_size=args.buffer_size * 1024,
        )
    except InterfaceError as exc:
        reporter.say(exc.strerror or str(exc))
        return 1
    with capture:
        encoder = encoder_for(
            format,
            timestamps=args.timestamps,
            precision=TimePrecision(args.time_stamp_precision),
            snaplen=args.snaplen,
        )
        try:
            # The pcap header goes out now: a consumer sees the stream start (and
            # the capture ready) before the first frame.
            writer = FrameWriter(1, encoder, stop=stop)
        except BrokenPipeError:
            return 0
        result = capture_to_stream(capture, writer, count=args.count)
        stop.settle()
    if not args.quiet:
        summary = (
            f"{args.iface}: {result.frames} frames captured ({args.direction}), "
            f"{result.kernel.dropped} dropped by the kernel"
        )
        if result.gso_frames:
            summary += (
                f"; {result.gso_frames} larger than the MTU, merged by GRO/GSO "
                f"(ethtool -K {args.iface} gro off gso off tso off gives wire-sized frames)"
            )
        reporter.say(summary)
    return 0


def _write(args: argparse.Namespace) -> int:
    _check(args)
    from pktchain.pipe.stream import Stopped, StopSignals

    stop = StopSignals().install()
    try:
        return _inject(args, stop)
    except Stopped as exc:  # before the interface was open, or a second signal after it
        return 0 if stop.received == 1 else 128 + exc.signum


def _inject(args: argparse.Namespace, stop: StopSignals) -> int:
    from pktchain.packet.streams import StreamFormat
    from pktchain.pipe.iface import Injector, InterfaceError, enter_netns
    from pktchain.pipe.pumps import stream_to_interface
    from pktchain.pipe.stream import FrameReader, Reporter, SkipReport

    program = "pktchain pipe write"
    skips = SkipReport(program)
    refusals = Reporter(program)
    try:
        if args.netns:
            enter_netns(args.netns)
        injector = Injector(args.iface)
    except InterfaceError as exc:
        skips.say(exc.strerror or str(exc))
        return 1
    reader = FrameReader(
        sys.stdin.fileno(),
        None if args.format is None else StreamFormat(args.format),
        on_skip=skips,
    )
    with injector:
        result = stream_to_interface(reader, injector, count=args.count, reporter=refusals)
        stop.settle()
    if result.error is not None:
        skips.say(f"stdin: {result.error}; stopping")
    if not args.quiet:
        summary = f"{args.iface}: {result.sent} frames sent"
        if result.refused:
            summary += f", {result.refused} refused"
        skipped = skips.summary()
        if skipped:
            summary += f"; input: {skipped}"
        skips.say(summary)
    return 1 if result.error is not None else 0
