"""`pktchain demo ha`: a router pair loses its master, and no connection notices.

Two pktchain routers, each in its own node on its own "machine" (a lab host),
share the client's gateway and the NAT's outside address by VRRPv3 and keep
the NAT's state in sync (`pktchain.demo.hapair`). Through the NAT the client
runs a long iperf3 TCP transfer each way, two interactive TCP sessions (a
line echoed every 50 ms) and a probe that sends one UDP datagram every
millisecond (`pktchain.lab.probe`). Then:

1. r1, the master, is killed (SIGKILL to its node, its links then down): the
   demo reports `outage_ms`, the longest gap the probe saw, and `tcp_lost`,
   the TCP connections reset or stalled longer than 3 s;
2. r1 comes back, gets the state from r2, and takes the role back under
   preemption: the same figures for that switch (`preempt_outage_ms`,
   `preempt_tcp_lost`).

It exits 0 only when every step held: each outage within `--max-outage-ms`
(300 by default) and no TCP connection lost.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from pktchain.demo.hapair import CLIENT, OUTSIDE_VIP, SERVER, PktchainPair
from pktchain.demo.report import DemoReport, StepError, fail
from pktchain.lab import LabError
from pktchain.lab.probe import Endpoints, Figures, Instruments, ProbeError

SETTLE_S = 0.5
"""Traffic watched before each switch: the baseline."""
OBSERVE_S = 4.0
"""Traffic watched after each switch: a connection that is to stall 3 s has the time to."""
RECOVERY_TIMEOUT_S = 10.0


def run_ha_demo(
    *, json_output: bool = False, advert_interval: float = 0.1, max_outage_ms: float = 300.0
) -> int:
    report = DemoReport("pktchain demo ha", json_output=json_output)
    pair = PktchainPair(advert_interval=advert_interval, preempt_delay=1.0)
    with tempfile.TemporaryDirectory(prefix="pktchain-demo-ha-") as tmp:
        workdir = Path(tmp)
        try:
            _walk(report, pair, workdir, max_outage_ms)
        except (LabError, OSError, ProbeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            report.step("lab", lambda: fail(problem))
        finally:
            pair.teardown()
    return report.finish()


def _walk(report: DemoReport, pair: PktchainPair, workdir: Path, max_outage_ms: float) -> None:
    endpoints: list[Endpoints] = []

    def up() -> tuple[str, dict[str, Any]]:
        endpoints.append(pair.setup(workdir / f"pair-{secrets.token_hex(2)}"))
        r1, r2 = pair.router("r1"), pair.router("r2")
        detail = (
            f"lab {pair.lab.name if pair.lab else '?'}: r1 master of "
            f"{len(r1['vrrp'])} virtual routers, r2 its backup, in sync over "
            f"{r2['ha']['peer']}; the client {CLIENT} reaches the server {SERVER} "
            f"through the NAT on {OUTSIDE_VIP}"
        )
        return detail, {"r1": _roles(r1), "r2": _roles(r2)}

    if not report.step("two routers up: r1 master, r2 its backup in sync", up):
        return
    (ends,) = endpoints

    def kill() -> None:
        pair.kill_master()

    figures = _switch(
        report,
        ends,
        name="r1 killed (SIGKILL, links down)",
        action=kill,
        max_outage_ms=max_outage_ms,
    )
    if figures is None:
        return
    report.extra["outage_ms"] = round(figures.outage_ms, 1)
    report.extra["tcp_lost"] = figures.tcp_lost

    def took_over() -> tuple[str, dict[str, Any]]:
        r2 = pair.router("r2")
        ha = r2["ha"]
        taken = ha.get("last_takeover") or {}
        if not all(v["state"] == "master" for v in r2["vrrp"]):
            raise StepError(f"r2 is not master of every virtual router: {_roles(r2)}")
        if not taken.get("had_copy"):
            raise StepError(f"r2 took over without a complete copy of r1's state: {taken}")
        detail = (
            f"r2 master; it took over {taken.get('sessions')} NAT sessions and "
            f"{taken.get('hosts')} hosts from its copy"
            + (", told by r1's closed sync connection" if ha.get("masters_gone") else "")
        )
        return detail, {"r2": _roles(r2), "takeover": taken}

    report.step("r2 took over r1's state", took_over)

    def preempt() -> None:
        pair.restart()

    figures = _switch(
        report,
        ends,
        name="r1 back: synced from r2, then master again (preemption)",
        action=preempt,
        max_outage_ms=max_outage_ms,
    )
    if figures is None:
        return
    report.extra["preempt_outage_ms"] = round(figures.outage_ms, 1)
    report.extra["preempt_tcp_lost"] = figures.tcp_lost

    def roles() -> tuple[str, dict[str, Any]]:
        r1, r2 = pair.router("r1"), pair.router("r2")
        if pair.master() != "r1":
            raise StepError(f"r1 is not master: r1 {_roles(r1)}, r2 {_roles(r2)}")
        return "r1 master, r2 backup, in sync", {"r1": _roles(r1), "r2": _roles(r2)}

    report.step("the pair as it ends", roles)


def _switch(
    report: DemoReport,
    endpoints: Endpoints,
    *,
    name: str,
    action: Any,
    max_outage_ms: float,
) -> Figures | None:
    """Traffic through the pair while `action` switches the master; its figures."""
    found: list[Figures] = []

    def run() -> tuple[str, dict[str, Any]]:
        with Instruments(endpoints, max_duration=OBSERVE_S + 60.0) as probes:
            probes.start()
            time.sleep(SETTLE_S)
            action()
            done = time.monotonic()
            probes.wait_flowing(after=done, timeout=RECOVERY_TIMEOUT_S)
            time.sleep(max(0.0, done + OBSERVE_S - time.monotonic()))
            figures = probes.stop()
        found.append(figures)
        data = {
            "outage_ms": round(figures.outage_ms, 1),
            "tcp_lost": figures.tcp_lost,
            "tcp_watched": len(figures.tcp.connections),
            "datagrams": {"sent": figures.gap.sent, "received": figures.gap.received},
            "summary": figures.summary(),
        }
        detail = (
            f"outage {figures.outage_ms:.1f} ms, TCP connections lost "
            f"{figures.tcp_lost} of {len(figures.tcp.connections)}"
        )
        if figures.outage_ms > max_outage_ms or figures.tcp_lost:
            raise StepError(f"{detail} (allowed: {max_outage_ms:g} ms, none lost)")
        return detail, data

    return found[0] if report.step(name, run) and found else None


def _roles(router: dict[str, Any]) -> dict[str, str]:
    return {f"{v['interface']}/{v['vrid']}": v["state"] for v in router.get("vrrp", [])}
