"""`pktchain trace`: where a packet would go through a running node, or where real ones went.

    pktchain trace --from h1:eth0 proto=tcp dst=10.0.0.10 dport=80
    pktchain trace --from h1:eth0 --frame 0200...     (a whole Ethernet frame)
    pktchain trace --from h1:eth0 --pcap capture.pcap --index 3
    pktchain trace --live proto=icmp dst=10.0.0.10 --count 3 --timeout 10

The node answers over its control socket (like ``pktchain node status``);
docs/trace.md describes the output and its JSON.
"""

from __future__ import annotations

import argparse
from typing import Any

from pktchain.node.cli import _add_name, _ask


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="trace a packet through a running node (dry run), or mark real ones (--live)",
        description="Describe a packet by FIELD=VALUE words (ip.src, ip.dst, ip.proto, "
        "l4.sport, l4.dport, tcp.flags, ip.ttl, eth.src, eth.dst, vlan, icmp.type, "
        "icmp.code, icmp.id, payload; short forms src, dst, proto, sport, dport, flags, "
        "ttl) or give a frame, and see each stage it would meet on the node: nothing is "
        "sent and no state changes. With --live, the next real packets that match the "
        "fields are marked and the path each took is shown, with the time of each stage.",
    )
    _add_name(parser)
    parser.add_argument("fields", nargs="*", metavar="FIELD=VALUE", help="the packet's fields")
    parser.add_argument(
        "--from", dest="port", metavar="PORT", help="the ingress port (node port name)"
    )
    parser.add_argument("--frame", metavar="HEX", help="a whole Ethernet frame in hex")
    parser.add_argument("--pcap", metavar="FILE", help="take the frame from a pcap file")
    parser.add_argument(
        "--index", type=int, default=0, metavar="N", help="with --pcap: the Nth packet (from 0)"
    )
    parser.add_argument(
        "--live", action="store_true", help="mark real packets matching the fields (and --from)"
    )
    parser.add_argument("--count", type=int, default=1, help="--live: packets to mark (default 1)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="--live: seconds to wait (default 10)"
    )
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.set_defaults(handler=_trace)


def _pcap_frame(path: str, index: int) -> str:
    from pktchain.errors import UsageError
    from pktchain.packet.streams import Frame, PcapDecoder, StreamFormatError

    decoder = PcapDecoder()
    try:
        with open(path, "rb") as stream:
            events = decoder.feed(stream.read()) + decoder.end()
    except OSError as exc:
        raise UsageError(f"--pcap {path}: {exc.strerror}") from exc
    except StreamFormatError as exc:
        raise UsageError(f"--pcap {path}: {exc}") from exc
    frames = [event for event in events if isinstance(event, Frame)]
    if not 0 <= index < len(frames):
        raise UsageError(f"--index {index}: {path} has {len(frames)} packets")
    return bytes(frames[index].data).hex()


def _trace(args: argparse.Namespace) -> int:
    import json

    from pktchain.errors import UsageError

    if args.live:
        if args.frame or args.pcap:
            raise UsageError("--live matches fields: --frame and --pcap are for dry runs")
        params: dict[str, Any] = {
            "fields": args.fields,
            "count": args.count,
            "timeout": args.timeout,
        }
        if args.port:
            params["from"] = args.port
        reply = _ask(args, "trace-live", request_timeout=args.timeout + 5.0, **params)
        if args.json:
            print(json.dumps(reply["packets"], indent=2))
            return 0
        from pktchain.node.trace_report import print_live

        print_live(reply)
        return 0 if reply["packets"] else 1
    if not args.port:
        raise UsageError("--from PORT: the port the packet comes in on")
    sources = [bool(args.fields), bool(args.frame), bool(args.pcap)]
    if sum(sources) != 1:
        raise UsageError("give the packet's FIELD=VALUE words, --frame or --pcap (one of them)")
    request: dict[str, Any] = {"from": args.port}
    if args.frame:
        request["frame"] = args.frame
    elif args.pcap:
        request["frame"] = _pcap_frame(args.pcap, args.index)
    else:
        request["fields"] = args.fields
    reply = _ask(args, "trace", request_timeout=30.0, **request)
    trace = reply["trace"]
    if args.json:
        print(json.dumps(trace, indent=2))
        return 0
    from pktchain.node.trace_report import print_trace

    print_trace(trace)
    return 0
