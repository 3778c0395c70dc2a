"""``pktchain fn NAME``: a pktchain function as a Unix filter on packet streams.

Frames come in on stdin (pcap or ASCII, detected) and arrive on the
function's first interface (``--in``); the frames it sends on by the other
interface go to stdout, in the input's format unless ``--format`` says
otherwise. For two-way use, ``--reverse-in FIFO`` carries the frames of the
other direction in, ``--reverse-out FIFO`` the frames sent back out of the
first interface; ``--out IFACE=PATH`` takes a further interface's frames (a
mirror's copies). docs/pipes.md, "Functions as filters", says it all::

    pktchain pipe read a | pktchain fn firewall --config fw.yaml | pktchain pipe write b

Only `argparse` is imported at load time; the handler imports the function's
own module and the stream layer, and nothing heavier, so that a filter
forwards its first frame well within 0.1 s of being started.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pktchain.errors import UsageError

if TYPE_CHECKING:
    from typing import TextIO

    from pktchain.functions.sdk import Function

FORMATS = ("pcap", "ascii")
STATS_FORMATS = ("text", "json")
USAGE = (
    "pktchain fn [-h] NAME [key=value ...] [--config FILE] [--in IFACE]\n"
    "                   [--reverse-in PATH] [--reverse-out PATH] [--out IFACE=PATH]\n"
    "                   [--format {pcap,ascii}] [-c N] [-q] [--stats-format {text,json}]\n"
    "                   [--export FILE] [--label LABEL] [--help-config] [--schema]"
)
DESCRIPTION = (
    "Run a pktchain function as a filter: frames from stdin go through it, the frames it "
    "forwards go to stdout (docs/pipes.md, 'Functions as filters'). NAME is a built-in "
    "(firewall, load-balancer, mirror, rate-limiter, flow-monitor, l7-classifier, nat) or "
    "package.module:Class. Its counters go to stderr at exit and on SIGUSR1."
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fn",
        help="a pktchain function as a filter on a packet stream (stdin to stdout)",
        description=DESCRIPTION,
        usage=USAGE,
    )
    parser.add_argument(
        "name", metavar="NAME", help="the function: a built-in kind or module:Class"
    )
    # Everything after NAME, options included, is read again by _parse_rest, so
    # that key=value words and options may come in any order.
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="key=value",
        help="a field of the function's configuration (value parsed as JSON when it is JSON, "
        "else a string; dotted keys for nested fields: health.interval=5)",
    )
    _options(parser)
    parser.set_defaults(handler=_fn)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="the configuration, a JSON or YAML mapping"
    )
    parser.add_argument(
        "--in",
        dest="in_iface",
        metavar="IFACE",
        help="the interface stdin's frames arrive on (default: the function's first); "
        "stdout carries the frames leaving by the other",
    )
    parser.add_argument(
        "--reverse-in",
        metavar="PATH",
        help="a named pipe (or file) whose frames arrive on the other interface",
    )
    parser.add_argument(
        "--reverse-out",
        metavar="PATH",
        help="where the frames leaving by the --in interface go (a named pipe or file)",
    )
    parser.add_argument(
        "--out",
        action="append",
        default=[],
        metavar="IFACE=PATH",
        help="where the frames leaving by a further interface go (repeatable); "
        "frames for an interface with nowhere to go are counted and dropped",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: the input's, detected from its first bytes)",
    )
    parser.add_argument(
        "-c", "--count", type=int, default=None, metavar="N", help="stop after N input frames"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no counters on stderr at exit (SIGUSR1 still)"
    )
    parser.add_argument(
        "--stats-format",
        choices=STATS_FORMATS,
        default="text",
        help="counters as one readable line (text) or one JSON object with the function's "
        "status (json)",
    )
    parser.add_argument(
        "--export", metavar="FILE", help="append the records the function exports (JSON lines)"
    )
    parser.add_argument(
        "--label",
        metavar="LABEL",
        help="how its lines on stderr start: 'pktchain fn LABEL:' (default: NAME), to tell "
        "instances of one function apart",
    )
    config_options(parser)


def config_options(parser: argparse.ArgumentParser) -> None:
    """--help-config and --schema, which `pktchain fn` and `pktchain nsh-fn` share."""
    parser.add_argument(
        "--help-config",
        action="store_true",
        help="print the function's configuration fields and exit",
    )
    parser.add_argument(
        "--schema", action="store_true", help="print the configuration schema as JSON and exit"
    )


def parse_rest(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    options: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Options and key=value words after NAME, in any order, into `args`."""
    options(parser)
    parser.add_argument("settings", nargs="*", metavar="key=value")
    parser.parse_intermixed_args(args.rest, namespace=args)


def _parse_rest(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser(prog="pktchain fn", usage=USAGE, description=DESCRIPTION)
    parse_rest(args, parser, _options)


def _fn(args: argparse.Namespace) -> int:
    # Until the loop takes SIGUSR1, a request for counters must not kill the filter.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _parse_rest(args)
    if args.count is not None and args.count < 1:
        raise UsageError("--count: expected a positive number of frames")
    from pktchain.functions.sdk import FunctionLoadError, function_class
    from pktchain.functions.sdk.schema import ConfigError
    from pktchain.pipe.fn_config import SettingsError, config_from, schema_text

    program = f"pktchain fn {args.label or args.name}"
    try:
        made = function_class(args.name)
    except FunctionLoadError as exc:
        raise UsageError(str(exc)) from None
    if args.help_config:
        sys.stdout.write(schema_text(made))
        return 0
    if args.schema:
        schema = {"kind": made.kind(), "interfaces": list(made.INTERFACES), "live": made.LIVE}
        print(json.dumps({**schema, "fields": made.schema()}, indent=2, default=str))
        return 0
    try:
        function = made.from_config(config_from(args.config, args.settings))
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:
        sys.stderr.write("".join(f"{program}: {exc.subject}: {error}\n" for error in exc.errors))
        return 2
    return _run(args, program, function)


def _interfaces(args: argparse.Namespace, function: Function) -> tuple[str, str, dict[str, str]]:
    """The stdin interface, the stdout interface, and interface → path of the other outputs."""
    interfaces = function.INTERFACES
    known = ", ".join(interfaces)
    stdin_iface = args.in_iface or interfaces[0]
    if stdin_iface not in interfaces:
        raise UsageError(f"--in {stdin_iface}: {function.kind()} has interfaces {known}")
    try:
        stdout_iface = function.peer(stdin_iface)
    except ValueError as exc:
        raise UsageError(f"--in {stdin_iface}: no other interface to forward to ({exc})") from None
    paths: dict[str, str] = {}
    if args.reverse_out:
        paths[stdin_iface] = args.reverse_out
    for word in args.out:
        iface, sep, path = word.partition("=")
        if not sep or not path:
            raise UsageError(f"--out {word}: expected IFACE=PATH")
        if iface not in interfaces:
            raise UsageError(f"--out {word}: {function.kind()} has interfaces {known}")
        if iface == stdout_iface:
            raise UsageError(f"--out {word}: the frames leaving by {iface} go to stdout")
        if iface in paths:
            raise UsageError(f"--out {word}: {iface} already goes to {paths[iface]}")
        paths[iface] = path
    named = list(paths.values())
    for path in named:
        if named.count(path) > 1:
            raise UsageError(f"{path}: named for two outputs (each writes its own stream)")
        if path == args.reverse_in:
            raise UsageError(f"{path}: named as an input and an output (a loop)")
    return stdin_iface, stdout_iface, paths


def _run(args: argparse.Namespace, program: str, function: Function) -> int:
    from pktchain.packet.streams import StreamFormat
    from pktchain.pipe.fn import FunctionFilter
    from pktchain.pipe.fn_run import (
        FilterLoop,
        Input,
        LoopSignals,
        Output,
        open_input,
        open_output,
        stats_line,
    )
    from pktchain.pipe.stream import Reporter, SkipReport, Stopped

    stdin_iface, stdout_iface, paths = _interfaces(args, function)
    reporter = Reporter(program)
    # Functions see a monotonic `now`; records they export carry dates.
    function.clock_offset = time.time() - time.monotonic()
    driver = FunctionFilter(
        function, on_error=lambda kind, message: reporter.tell(kind, message, plural=f"{kind}s")
    )
    inputs = [Input("stdin", 0, stdin_iface, SkipReport(program))]
    outputs: dict[str, Output] = {}
    export: TextIO | None = None
    try:
        stdout = outputs[stdout_iface] = Output("stdout", 1)
        # Inputs first, none waiting for its writer; then outputs, each waiting for
        # its reader: no two filters of a chain can wait on each other (fn_run.py).
        if args.reverse_in:
            skips = SkipReport(program, source=args.reverse_in)
            inputs.append(Input(args.reverse_in, open_input(args.reverse_in), stdout_iface, skips))
        for iface, path in paths.items():
            outputs[iface] = Output(path, open_output(path))
        if args.export:
            export = open(args.export, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        for out in outputs.values():
            out.restore()
        reporter.say(f"{exc.filename or 'stdout'}: {exc.strerror}")
        return 1
    signals = LoopSignals().install()
    loop = FilterLoop(
        driver,
        inputs,
        outputs,
        stdout=stdout,
        reporter=reporter,
        signals=signals,
        output_format=None if args.format is None else StreamFormat(args.format),
        count=args.count,
        export=export,
        on_stats=lambda: reporter.say(stats_line(loop.stats(), args.stats_format)),
    )
    try:
        result = loop.run()
    except Stopped as exc:  # a second signal while the queues were written out
        return 128 + exc.signum
    finally:
        for out in outputs.values():
            out.restore()
        if export is not None:
            export.close()
    if loop.error is not None:
        source, error = loop.error
        reporter.say(f"{source.name}: {error}; that input ends there")
    if not args.quiet:
        stats = loop.stats()
        if result.stopped_by is not None:
            stats["stopped_by"] = result.stopped_by
        reporter.say(stats_line(stats, args.stats_format))
    return 1 if loop.error is not None else 0
