"""What the tests of NSH-aware functions share: the C example's binary, packets, a running function.

Packets are built with pktchain's NSH builders around inner frames made by
scapy; :data:`MALFORMED` lists NSH headers a function must drop, each with the
reason it must be counted under. :class:`RunningFunction` is one function
process (``pktchain nsh-fn`` or ``nsh-flowcount``) with its stderr in a file:
ready when it says so, asked for its counters with SIGUSR1, stopped with
SIGTERM, which must end it with status 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pktchain.lab import wait_until
from pktchain.packet import build_nsh, context_tlv, path_tlv
from support.paths import ROOT

FLOWCOUNT = ROOT / "build" / "nsh-flowcount"
TIMEOUT = 20.0
CONTEXT = bytes(range(0xA0, 0xB0))
"""The MD type 1 context the tests send: it must come back as it went."""
PATH = path_tlv([0x11111111, 0x22222222])
UNKNOWN_TLV = context_tlv(0x0200, 0x05, b"keep me")
"""A context header no function knows: it must come back unchanged."""


def flowcount_binary() -> Path:
    """build/nsh-flowcount, built (or rebuilt) by the top Makefile's own rule."""
    subprocess.run(
        ["make", "-s", "-C", str(ROOT), "build/nsh-flowcount"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return FLOWCOUNT


def pktchain_argv(*args: str) -> list[str]:
    """`pktchain ARGS` with this interpreter and this tree's sources."""
    return [sys.executable, "-m", "pktchain", *args]


def pktchain_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def inner_frame(n: int, *, sport: int = 40000, v6: bool = False) -> bytes:
    """A TCP segment in an Ethernet frame; `sport` tells the flows apart."""
    ip = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.1.0.1", dst="10.1.0.2")
    return bytes(
        Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02")
        / ip
        / TCP(sport=sport, dport=443, seq=n)
        / Raw(b"payload %d" % n)
    )


def inner_udp(n: int) -> bytes:
    return bytes(
        Ether(src="02:00:00:00:aa:01", dst="02:00:00:00:aa:02")
        / IP(src="10.1.0.1", dst="10.1.0.3")
        / UDP(sport=44444, dport=44445)
        / Raw(b"query %d" % n)
    )


def md2(inner: bytes, *, spi: int = 42, si: int = 255, tlvs: bytes = PATH + UNKNOWN_TLV) -> bytes:
    return build_nsh(spi, si, ttl=61, tlvs=tlvs) + inner


def md1(inner: bytes, *, spi: int = 43, si: int = 254) -> bytes:
    return build_nsh(spi, si, ttl=61, md_type=1, context=CONTEXT) + inner


def _with_byte(header: bytes, index: int, value: int) -> bytes:
    return header[:index] + bytes([value]) + header[index + 1 :]


_MD2 = build_nsh(1, 255, tlvs=PATH)  # 20 bytes: Length 5
_MD1 = build_nsh(1, 255, md_type=1)  # 24 bytes: Length 6
MALFORMED: list[tuple[bytes, str]] = [
    (_MD2[:5], "truncated-nsh"),
    (_with_byte(_MD2, 0, _MD2[0] | 0x80), "nsh-version"),
    (_with_byte(_MD2, 2, 0x00), "nsh-md-type"),
    (_with_byte(_MD2, 2, 0x0F), "unsupported-md-type"),
    (_with_byte(_MD1, 1, _MD1[1] & 0xC0 | 5), "nsh-length"),
    (_with_byte(_MD2, 1, _MD2[1] & 0xC0 | 9), "truncated-nsh"),
    (build_nsh(1, 255, tlvs=bytes.fromhex("fff6807f00000000")), "nsh-tlv"),
    (build_nsh(1, 0, tlvs=PATH), "service-index-exhausted"),
]
"""NSH headers, each sent alone (no inner frame), and the reason each must be dropped
under."""


def expected_drops() -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, reason in MALFORMED:
        counts[reason] = counts.get(reason, 0) + 1
    return counts


class RunningFunction:
    """One NSH-aware function process, its stderr (and stdout) in `log`."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, stats: Path) -> None:
        self.process = process
        self.log = log
        self.stats_path = stats

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.text()}")
            return "ready:" in self.text()

        wait_until(ready, timeout=TIMEOUT, what=f"{self.process.args} ready")

    def stats(self) -> dict[str, Any]:
        """Its counters now: SIGUSR1, then the stats file it writes anew."""
        self.stats_path.unlink(missing_ok=True)
        self.process.send_signal(signal.SIGUSR1)
        wait_until(self.stats_path.exists, timeout=TIMEOUT, what=f"{self.stats_path}")
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data

    def stop(self) -> dict[str, Any]:
        """SIGTERM; it must exit 0 having written its final counters."""
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"did not stop on SIGTERM:\n{self.text()}") from None
        assert status == 0, f"exit status {status}:\n{self.text()}"
        data: dict[str, Any] = json.loads(self.stats_path.read_text())
        return data

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
