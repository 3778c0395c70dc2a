"""``pktchain nsh-fn NAME``: an NSH-aware function on an interface or a UDP port.

NAME is a built-in NSH-aware function (``stamp``) or ``package.module:Class``
naming a subclass of :class:`~pktchain.functions.sdk.nsh.NshFunction`; its
configuration comes as for ``pktchain fn`` (``--config FILE``, ``key=value``
words in any order). It takes NSH either over Ethernet on ``--interface``
(answers leave by ``--egress`` when given) or over VXLAN-GPE on ``--udp``;
docs/nsh.md says what goes on the wire::

    pktchain nsh-fn stamp name=fw-1 --interface eth0 --stats /run/stamp.json

Its counters go to the ``--stats`` file as JSON on SIGUSR1 and at exit, and
as one line on stderr at exit (unless ``-q``). Only `argparse` is imported
at load time.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pktchain.errors import UsageError
from pktchain.pipe.fn_cli import config_options, parse_rest

if TYPE_CHECKING:
    from pktchain.functions.sdk.nsh import NshFunction

USAGE = (
    "pktchain nsh-fn [-h] NAME [key=value ...] [--config FILE]\n"
    "                       (--interface IFACE [--egress IFACE] | --udp HOST[:PORT])\n"
    "                       [--netns NAME] [-c N] [--stats FILE] [-q] [--label LABEL]\n"
    "                       [--help-config] [--schema]"
)
DESCRIPTION = (
    "Run an NSH-aware function (docs/nsh.md): NSH packets come in over Ethernet (EtherType "
    "0x894F) on an interface or over VXLAN-GPE on a UDP port, go through the function, and "
    "go back to their sender with the service index one less. NAME is a built-in (stamp) or "
    "package.module:Class. Its counters go to --stats as JSON on SIGUSR1 and at exit."
)
VXLAN_GPE_PORT = 4790


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "nsh-fn",
        help="an NSH-aware function on an interface (NSH over Ethernet) or UDP port (VXLAN-GPE)",
        description=DESCRIPTION,
        usage=USAGE,
    )
    parser.add_argument("name", metavar="NAME", help="the function: a built-in or module:Class")
    # As in `pktchain fn`: everything after NAME is read again by _parse_rest, so
    # that key=value words and options may come in any order.
    parser.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="key=value",
        help="a field of the function's configuration (value parsed as JSON when it is JSON, "
        "else a string)",
    )
    _options(parser)
    parser.set_defaults(handler=_nsh_fn)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", help="the configuration, a JSON or YAML mapping"
    )
    parser.add_argument(
        "--interface",
        metavar="IFACE",
        help="take NSH over Ethernet (EtherType 0x894F) on this interface; answers go back "
        "to the sender's MAC, out of --egress if given, else out of IFACE",
    )
    parser.add_argument(
        "--egress",
        metavar="IFACE",
        help="the function's second interface: what comes in on one leaves by the other",
    )
    parser.add_argument(
        "--udp",
        metavar="HOST[:PORT]",
        help=f"take VXLAN-GPE datagrams on this address (port {VXLAN_GPE_PORT} by default); "
        "answers go back to each datagram's sender",
    )
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="run in this network namespace (as `ip netns exec NAME` would)",
    )
    parser.add_argument(
        "-c", "--count", type=int, default=None, metavar="N", help="stop after N packets in"
    )
    parser.add_argument(
        "--stats",
        metavar="FILE",
        help="write the counters here as JSON, on SIGUSR1 and at exit (replaced whole)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no line of counters on stderr at exit"
    )
    parser.add_argument(
        "--label",
        metavar="LABEL",
        help="how its lines on stderr start: 'pktchain nsh-fn LABEL:' (default: NAME)",
    )
    config_options(parser)


def _parse_rest(args: argparse.Namespace) -> None:
    parser = argparse.ArgumentParser(prog="pktchain nsh-fn", usage=USAGE, description=DESCRIPTION)
    parse_rest(args, parser, _options)


def _nsh_fn(args: argparse.Namespace) -> int:
    # Until the loop takes SIGUSR1, a request for counters must not kill the process.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _parse_rest(args)
    from pktchain.functions.sdk import ConfigError, FunctionLoadError
    from pktchain.functions.sdk.nsh import nsh_function_class
    from pktchain.pipe.fn_config import SettingsError, config_from, schema_text

    program = f"pktchain nsh-fn {args.label or args.name}"
    try:
        made = nsh_function_class(args.name)
    except FunctionLoadError as exc:
        raise UsageError(str(exc)) from None
    if args.help_config:
        sys.stdout.write(schema_text(made))
        return 0
    if args.schema:
        print(json.dumps({"kind": made.kind(), "fields": made.schema()}, indent=2, default=str))
        return 0
    udp = _check_transport(args)
    try:
        function = made.from_config(config_from(args.config, args.settings))
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    except ConfigError as exc:
        sys.stderr.write("".join(f"{program}: {exc.subject}: {error}\n" for error in exc.errors))
        return 2
    return _run(args, program, function, udp)


def _check_transport(args: argparse.Namespace) -> tuple[str, int] | None:
    """The UDP address, or None for Ethernet; UsageError for a wrong combination."""
    from pktchain.pipe.nsh_fn import udp_address

    if args.count is not None and args.count < 1:
        raise UsageError("--count: expected a positive number of packets")
    if (args.interface is None) == (args.udp is None):
        raise UsageError("nsh-fn: give one of --interface IFACE and --udp HOST[:PORT]")
    if args.egress is not None:
        if args.interface is None:
            raise UsageError("--egress: goes with --interface")
        if args.egress == args.interface:
            raise UsageError(f"--egress {args.egress}: the same interface as --interface")
    if args.udp is None:
        return None
    try:
        return udp_address(args.udp, VXLAN_GPE_PORT)
    except ValueError as exc:
        raise UsageError(f"--udp {exc}") from None


def _run(
    args: argparse.Namespace,
    program: str,
    function: NshFunction,
    udp_at: tuple[str, int] | None,
) -> int:
    from pktchain.functions.sdk.nsh import NshDriver
    from pktchain.pipe.iface import InterfaceError, enter_netns
    from pktchain.pipe.nsh_fn import EthernetPort, NshFunctionRunner, UdpPort
    from pktchain.pipe.stream import Reporter

    reporter = Reporter(program)
    ethernet: list[EthernetPort] = []
    udp: UdpPort | None = None
    try:
        if args.netns:
            enter_netns(args.netns)
        if udp_at is not None:
            try:
                udp = UdpPort(*udp_at)
            except OSError as exc:
                reporter.say(f"--udp {args.udp}: cannot bind: {exc.strerror or exc}")
                return 1
            where = f"VXLAN-GPE on {args.udp}"
        else:
            for ifname in (args.interface, args.egress):
                if ifname is not None:
                    ethernet.append(EthernetPort(ifname))
            where = f"NSH on {' and '.join(port.ifname for port in ethernet)}"
    except InterfaceError as exc:
        for port in ethernet:
            port.close()
        reporter.say(str(exc.strerror))
        return 1
    driver = NshDriver(
        function, on_error=lambda kind, message: reporter.tell(kind, message, plural=f"{kind}s")
    )
    runner = NshFunctionRunner(
        driver,
        ethernet=ethernet,
        udp=udp,
        count=args.count,
        stats_path=Path(args.stats) if args.stats else None,
        on_stats_error=reporter.say,
    )
    reporter.say(f"ready: {where}")
    try:
        runner.run()
    finally:
        for port in ethernet:
            port.close()
        if udp is not None:
            udp.close()
    if not args.quiet:
        reporter.say(_summary(runner.stats()))
    return 0


def _summary(stats: dict[str, Any]) -> str:
    """The counters in one line: ``in 10, out 9; dropped: truncated-nsh 1; counters: ...``."""
    parts = [f"in {stats['in']['packets']}, out {stats['out']['packets']}"]
    if stats["dropped"]:
        dropped = ", ".join(f"{reason} {n}" for reason, n in stats["dropped"].items())
        parts.append(f"dropped: {dropped}")
    counters = stats["status"].get("counters", {})
    shown = ", ".join(f"{name} {n}" for name, n in counters.items() if n)
    if shown:
        parts.append(f"counters: {shown}")
    if "stopped_by" in stats:
        parts.append(f"stopped by {stats['stopped_by']}")
    return "; ".join(parts)
