"""Instruments that measure a router failover from inside lab hosts.

Between a client host and a server host, through the router (or router pair)
under test:

- `GapProbe`: a UDP datagram every millisecond; `GapReport.outage_ms` is the
  longest interval between two arrivals;
- `IperfWatcher` and `ChatWatcher`: a long iperf3 TCP transfer and
  interactive sessions (a line echoed every 50 ms); a `TcpReport` counts the
  connections lost (reset, closed, or stalled longer than 3 s);
- `Instruments`: all three at once, giving `Figures` (``outage_ms``,
  ``tcp_lost``)::

    from pktchain.lab.probe import Endpoints, Instruments

    with Instruments(Endpoints("pc-ha.client", "pc-ha.server", "198.51.100.10")) as probes:
        probes.start()
        kill_the_master()
        probes.wait_flowing(after=time.monotonic())
        figures = probes.stop()

The arithmetic (`gap`, `tcp`) is pure; the programs that run in the hosts are
`pktchain.lab.probe.agent`; the processes are driven by
`pktchain.lab.probe.instruments`. Names are imported on first use, so that
the programs, which start as ``python -m pktchain.lab.probe.agent``, load
only the standard library and the arithmetic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pktchain.lab.probe.gap import Arrival, Gap, GapReport, Schedule, SenderSummary, gap_report
    from pktchain.lab.probe.instruments import (
        ChatWatcher,
        Endpoints,
        Figures,
        GapProbe,
        Instruments,
        IperfWatcher,
        ProbeError,
    )
    from pktchain.lab.probe.tcp import (
        STALL_LIMIT_S,
        ConnectionEnd,
        TcpConnectionReport,
        TcpReport,
    )

_EXPORTS = {
    "pktchain.lab.probe.gap": (
        "Arrival",
        "Gap",
        "GapReport",
        "Schedule",
        "SenderSummary",
        "gap_report",
    ),
    "pktchain.lab.probe.instruments": (
        "ChatWatcher",
        "Endpoints",
        "Figures",
        "GapProbe",
        "Instruments",
        "IperfWatcher",
        "ProbeError",
    ),
    "pktchain.lab.probe.tcp": (
        "STALL_LIMIT_S",
        "ConnectionEnd",
        "TcpConnectionReport",
        "TcpReport",
    ),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "STALL_LIMIT_S",
    "Arrival",
    "ChatWatcher",
    "ConnectionEnd",
    "Endpoints",
    "Figures",
    "Gap",
    "GapProbe",
    "GapReport",
    "Instruments",
    "IperfWatcher",
    "ProbeError",
    "Schedule",
    "SenderSummary",
    "TcpConnectionReport",
    "TcpReport",
    "gap_report",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
