"""NSH-aware functions over VXLAN-GPE on loopback: ``pktchain nsh-fn stamp`` and the C example.

Both run as a user runs them, as subprocesses on a UDP port of 127.0.0.1; a
UDP socket sends them NSH over VXLAN-GPE built by pktchain and reads the
answers, which scapy decodes: the service index one less, the TLVs they did
not know carried as they came, their own TLV appended (the stamp's name; the C
function's count of the flow's packets so far), the MD type 1 context and the
inner frame intact. Malformed datagrams get no answer and are counted under
their reasons; SIGUSR1 and SIGTERM write the counters, ``--count`` stops them.
The C source must compile without a warning.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from scapy.contrib import nsh as scapy_nsh
from scapy.layers.inet import UDP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from pktchain.packet import build_vxlan_gpe
from support.nsh_fn import (
    CONTEXT,
    MALFORMED,
    TIMEOUT,
    RunningFunction,
    expected_drops,
    flowcount_binary,
    inner_frame,
    inner_udp,
    md1,
    md2,
    pktchain_argv,
    pktchain_env,
)
from support.paths import ROOT

GPE = build_vxlan_gpe()
Start = Callable[..., RunningFunction]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(argv...)``: a function process with a stats file, ready; killed if still running."""
    running: list[RunningFunction] = []

    def make(*argv: str, stats: bool = True) -> RunningFunction:
        log = tmp_path / f"function-{len(running)}.log"
        path = tmp_path / f"stats-{len(running)}.json"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*argv, *(("--stats", str(path)) if stats else ())],
                stdout=out,
                stderr=out,
                env=pktchain_env(),
            )
        function = RunningFunction(process, log, path)
        running.append(function)
        function.wait_ready()
        return function

    yield make
    for function in running:
        function.kill()


class Peer:
    """A UDP socket that talks VXLAN-GPE to a function at `port` on loopback."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(TIMEOUT)

    def ask(self, nsh: bytes) -> scapy_nsh.NSH:
        """Send one packet, return the NSH of the answer (the VXLAN-GPE header checked)."""
        self.sock.sendto(GPE + nsh, self.address)
        data, sender = self.sock.recvfrom(65535)
        assert sender == self.address
        packet = UDP(bytes(UDP(sport=4790, dport=4790) / Raw(data)))
        assert (int(packet[VXLAN].flags), packet[VXLAN].NextProtocol, packet[VXLAN].vni) == (
            0x0C,
            4,
            0,
        )
        layer = packet[scapy_nsh.NSH]
        assert isinstance(layer, scapy_nsh.NSH)
        return layer

    def send(self, datagram: bytes) -> None:
        self.sock.sendto(datagram, self.address)

    def close(self) -> None:
        self.sock.close()


def tlvs_of(layer: scapy_nsh.NSH) -> list[tuple[int, int, bytes]]:
    """(class, type, value) of each context header, the value without its padding."""
    out = []
    for tlv in layer.vlch or []:
        raw = b"".join(m.to_bytes(4, "big") for m in tlv.metadata)
        out.append((tlv.class_, tlv.type, raw[: tlv.length]))
    return out


def send_malformed(peer: Peer) -> None:
    """Every malformed datagram, then one good packet: its answer is the next thing
    read, so none of the malformed ones was answered."""
    peer.send(b"\x0c\x00")  # shorter than a VXLAN-GPE header
    peer.send(build_vxlan_gpe(3) + inner_udp(0))  # Ethernet, not NSH
    for header, _reason in MALFORMED:
        peer.send(GPE + header)
    answer = peer.ask(md2(inner_udp(99), spi=77))
    assert answer.spi == 77


# --------------------------------------------------------------------------- the C example


def test_c_example_compiles_without_warnings(tmp_path: Path) -> None:
    compiler = shutil.which("gcc")
    assert compiler is not None
    result = subprocess.run(
        [
            compiler,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-o",
            str(tmp_path / "nsh-flowcount"),
            str(ROOT / "examples" / "nsh" / "nsh_flowcount.c"),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    usage = subprocess.run(
        [str(tmp_path / "nsh-flowcount"), "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert usage.returncode == 0
    assert "--interface" in usage.stdout


def test_c_flowcount_over_vxlan_gpe(start: Start) -> None:
    port = free_udp_port()
    function = start(str(flowcount_binary()), "--udp", f"127.0.0.1:{port}", "--flows", "2")
    peer = Peer(port)
    try:
        # Two flows, interleaved: each TLV carries its own flow's count so far.
        for n in range(3):
            for sport in (40000, 40001):
                inner = inner_frame(n, sport=sport)
                answer = peer.ask(md2(inner, si=255 - n))
                assert (answer.spi, answer.si, answer.ttl, answer.mdtype) == (42, 254 - n, 61, 2)
                assert tlvs_of(answer) == [
                    (0xFFF6, 0x01, bytes.fromhex("1111111122222222")),
                    (0x0200, 0x05, b"keep me"),
                    (0xFFF6, 0x80, (n + 1).to_bytes(4, "big")),
                ]
                assert bytes(answer.payload) == inner
        # MD type 1: counted, the context as it came, no TLV.
        answer = peer.ask(md1(inner_frame(9, sport=40000)))
        assert (answer.si, answer.mdtype, answer.context_header) == (253, 1, CONTEXT)
        # A third flow finds the table (2 flows) full: forwarded, no TLV, an overflow.
        answer = peer.ask(md2(inner_frame(0, sport=40002)))
        assert [t[:2] for t in tlvs_of(answer)] == [(0xFFF6, 0x01), (0x0200, 0x05)]
        # An NSH already at 248 bytes has no room for the TLV.
        full = md2(inner_frame(4, sport=40000), tlvs=bytes.fromhex("02000078") + bytes(236))
        answer = peer.ask(full)
        assert answer.length == 62
        send_malformed(peer)
        stats = function.stats()
        dropped = {reason: n for reason, n in stats["dropped"].items() if n}
        assert dropped == {
            **expected_drops(),
            "truncated-vxlan-gpe": 1,
            "gpe-not-nsh": 1,
        }
        assert (stats["md1"], stats["md2"]) == (1, 9)
        assert stats["tlv"] == {"added": 6, "no_room": 1}
        assert stats["flow_table"] == {"flows": 2, "capacity": 2, "overflow": 2}
        flows = {flow["sport"]: flow for flow in stats["flows"]}
        assert sorted(flows) == [40000, 40001]
        assert flows[40000]["packets"] == 5  # 3 MD2, the MD1, the full one
        assert flows[40001]["packets"] == 3
        assert flows[40001]["bytes"] == sum(len(inner_frame(n, sport=40001)) for n in range(3))
        assert flows[40000]["src"] == "10.1.0.1"
        assert stats["in"]["packets"] == 9 + 2 + len(MALFORMED) + 1
        assert stats["out"]["packets"] == 10
    finally:
        peer.close()
    final = function.stop()
    assert final["stopped_by"] == "SIGTERM"
    assert final["out"]["packets"] == 10


def test_c_flowcount_stops_after_count(start: Start) -> None:
    port = free_udp_port()
    function = start(str(flowcount_binary()), "--udp", f"127.0.0.1:{port}", "--count", "2")
    peer = Peer(port)
    try:
        peer.ask(md2(inner_frame(0, v6=True)))
        peer.ask(md2(inner_frame(1, v6=True)))
    finally:
        peer.close()
    assert function.process.wait(timeout=TIMEOUT) == 0
    stats = json.loads(function.stats_path.read_text())
    assert stats["stopped_by"] == "count"
    (flow,) = stats["flows"]
    assert (flow["ip"], flow["src"], flow["packets"]) == (6, "fd00::1", 2)


def test_c_flowcount_refuses_bad_usage() -> None:
    binary = str(flowcount_binary())
    for argv in ([], ["--egress", "eth1", "--udp", "4790"], ["--udp", "4790", "--flows", "0"]):
        result = subprocess.run(
            [binary, *argv], check=False, capture_output=True, text=True, timeout=10
        )
        assert result.returncode == 2, argv
    result = subprocess.run(
        [binary, "--interface", "no-such-if0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 1
    assert "no-such-if0: no such interface" in result.stderr


# --------------------------------------------------------------------------- pktchain nsh-fn


def test_stamp_over_vxlan_gpe(start: Start) -> None:
    port = free_udp_port()
    function = start(*pktchain_argv("nsh-fn", "stamp", "name=fw-1", "--udp", f"127.0.0.1:{port}"))
    peer = Peer(port)
    try:
        inner = inner_frame(0)
        answer = peer.ask(md2(inner, si=200))
        assert (answer.spi, answer.si, answer.ttl) == (42, 199, 61)
        assert tlvs_of(answer) == [
            (0xFFF6, 0x01, bytes.fromhex("1111111122222222")),
            (0x0200, 0x05, b"keep me"),
            (0xFFF6, 0x81, b"fw-1"),
        ]
        assert bytes(answer.payload) == inner
        answer = peer.ask(md1(inner))
        assert (answer.si, answer.context_header) == (253, CONTEXT)
        assert bytes(answer.payload) == inner
        send_malformed(peer)
        stats = function.stats()
        assert stats["dropped"] == {
            **expected_drops(),
            "truncated-vxlan-gpe": 1,
            "gpe-not-nsh": 1,
        }
        assert stats["status"]["counters"] == {"stamped": 2, "md1-unstamped": 1, "no-room": 0}
        assert stats["out"]["packets"] == 3
    finally:
        peer.close()
    final = function.stop()
    assert final["stopped_by"] == "SIGTERM"
    assert "in 13, out 3" in function.text()


def test_nsh_fn_count_and_quiet(start: Start) -> None:
    port = free_udp_port()
    function = start(
        *pktchain_argv("nsh-fn", "stamp", "--udp", f"127.0.0.1:{port}", "-c", "1", "-q")
    )
    peer = Peer(port)
    try:
        assert tlvs_of(peer.ask(md2(inner_frame(0))))[-1] == (0xFFF6, 0x81, b"stamp")
    finally:
        peer.close()
    assert function.process.wait(timeout=TIMEOUT) == 0
    assert json.loads(function.stats_path.read_text())["stopped_by"] == "count"
    assert "in 1" not in function.text()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["stamp"], "give one of --interface IFACE and --udp"),
        (["stamp", "--interface", "a", "--udp", "1"], "give one of"),
        (["stamp", "--udp", "127.0.0.1:1", "--egress", "b"], "--egress: goes with --interface"),
        (["stamp", "--interface", "a", "--egress", "a"], "the same interface"),
        (["stamp", "--udp", "127.0.0.1:99999"], "not 1-65535"),
        (["stamp", "--udp", "nohost:1"], "not an IP address"),
        (["stamp", "--udp", "127.0.0.1:1", "-c", "0"], "--count"),
        (["nope", "--udp", "127.0.0.1:1"], "unknown function 'nope'"),
        (["pktchain.functions.mirror:Mirror", "--udp", "1"], "not an NshFunction"),
    ],
)
def test_nsh_fn_usage_errors(argv: list[str], message: str) -> None:
    result = subprocess.run(
        pktchain_argv("nsh-fn", *argv),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=pktchain_env(),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_nsh_fn_configuration_errors_and_help() -> None:
    result = subprocess.run(
        pktchain_argv("nsh-fn", "stamp", "name=" + "x" * 200, "colour=red", "--udp", "1"),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=pktchain_env(),
    )
    assert result.returncode == 2
    assert "name: 1 to 127 bytes of UTF-8, got 200" in result.stderr
    assert "colour" in result.stderr
    result = subprocess.run(
        pktchain_argv("nsh-fn", "stamp", "--help-config"),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env=pktchain_env(),
    )
    assert result.returncode == 0
    assert "stamp: NSH-aware function" in result.stdout
    assert "name" in result.stdout
