"""`pktchain fn`: functions as filters on packet streams, bytes in and bytes out.

The driver (`FunctionFilter`) and the configuration words in process; the
command (formats, two-way use through named pipes, counters on SIGUSR1 and at
exit, timers, exports, back-pressure, start-up imports) as a subprocess, the
way a shell runs it. Frames are made by scapy and what comes out is decoded by
scapy.
"""

from __future__ import annotations

import io
import json
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket
from scapy.utils import PcapReader, RawPcapReader

from pktchain.functions.sdk import Function, Packet, Result, drop, forward, make_function, punt
from pktchain.packet.streams import Frame
from pktchain.pipe.fn import FunctionFilter
from pktchain.pipe.fn_config import (
    SettingsError,
    config_from,
    parse_settings,
    read_config_file,
    schema_text,
)
from support.paths import ROOT

EXAMPLES = ROOT / "examples"
TIMEOUT = 30.0
A_MAC, B_MAC = "02:00:00:0a:00:01", "02:00:00:0b:00:02"


def udp(n: int = 0, *, sport: int = 40000, dport: int = 5000, size: int = 0) -> bytes:
    payload = (b"frame %d " % n).ljust(size, b".")
    return bytes(
        Ether(src=A_MAC, dst=B_MAC)
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / UDP(sport=sport, dport=dport)
        / payload
    )


def tcp(flags: str, *, sport: int = 40000, dport: int = 80, back: bool = False) -> bytes:
    ends = [("10.0.0.1", sport, A_MAC), ("10.0.0.2", dport, B_MAC)]
    (src, sp, smac), (dst, dp, dmac) = ends[::-1] if back else ends
    return bytes(
        Ether(src=smac, dst=dmac) / IP(src=src, dst=dst) / TCP(sport=sp, dport=dp, flags=flags)
    )


def ascii_lines(frames: list[bytes]) -> bytes:
    return b"".join(frame.hex(" ").encode() + b"\n" for frame in frames)


def pcap_bytes(frames: list[bytes], times: list[float] | None = None) -> bytes:
    """A libpcap stream (pcap-savefile(5)): microseconds, little-endian, Ethernet."""
    stream = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for n, frame in enumerate(frames):
        micros = round((times[n] if times else 1_700_000_000 + n) * 1_000_000)
        stream.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        stream.append(frame)
    return b"".join(stream)


def read_pcap(data: bytes) -> list[ScapyPacket]:
    return list(PcapReader(io.BytesIO(data)))


def count_pcap(data: bytes) -> int:
    return sum(1 for _ in RawPcapReader(io.BytesIO(data)))


def read_ascii(data: bytes) -> list[bytes]:
    return [bytes.fromhex(line) for line in data.decode().splitlines() if line.strip()]


def env(*paths: Path) -> dict[str, str]:
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(
        [*map(str, paths), str(ROOT / "src"), environ.get("PYTHONPATH", "")]
    )
    return environ


def fn(
    *args: str,
    input: bytes = b"",
    path: tuple[Path, ...] = (),
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pktchain", "fn", *args],
        input=input,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        env=env(*path),
        cwd=cwd,
    )


def err_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


# -- the driver: verdicts to interfaces -------------------------------------------


def driver(kind: str, config: dict[str, Any] | None = None) -> tuple[FunctionFilter, list[str]]:
    told: list[str] = []
    return FunctionFilter(make_function(kind, config), on_error=lambda _k, m: told.append(m)), told


def test_a_forwarded_frame_leaves_by_the_other_interface_with_its_capture_time() -> None:
    filter_, _ = driver("flow-monitor")
    sent = Frame(udp(), timestamp_ns=123456789)
    assert filter_.receive("ingress", sent, 1.0) == [("egress", sent)]
    assert filter_.receive("egress", sent, 1.0) == [("ingress", sent)]
    assert (filter_.frames_in, filter_.frames_out) == ({"ingress": 1, "egress": 1},) * 2
    assert filter_.verdicts == {"forward": 2}


def test_a_reject_answers_out_of_the_interface_the_packet_came_in_on() -> None:
    filter_, _ = driver("firewall", {"default": "reject"})
    syn = tcp("S", sport=40001)
    ((iface, answer),) = filter_.receive("ingress", Frame(syn, timestamp_ns=5), 1.0)
    assert iface == "ingress"
    assert answer.timestamp_ns is None  # a new frame: stamped when written
    rst = Ether(answer.data)
    assert (rst[IP].src, rst[IP].dst, rst[TCP].sport, rst[TCP].dport) == (
        "10.0.0.2",
        "10.0.0.1",
        80,
        40001,
    )
    assert rst[TCP].flags == "RA"
    assert rst.dst == A_MAC
    assert filter_.verdicts == {"reply": 1}


def test_a_drop_sends_nothing_and_a_punt_sends_the_frame_unchanged() -> None:
    class Judge(Function):
        def process(self, packet: Packet, now: float) -> Result:
            packet.set_src(bytes([192, 0, 2, 1]))  # a punt leaves the frame as it came
            return drop("no") if packet.dport == 1 else punt()

    filter_ = FunctionFilter(Judge(), on_error=lambda _k, _m: None)
    assert filter_.receive("ingress", Frame(udp(dport=1)), 0.0) == []
    assert filter_.receive("egress", Frame(udp(dport=2)), 0.0) == [("ingress", Frame(udp(dport=2)))]
    assert filter_.verdicts == {"drop": 1, "punt": 1}
    assert filter_.frames_out == {"ingress": 1}


def test_emitted_frames_leave_by_the_interfaces_they_name() -> None:
    filter_, _ = driver("mirror")
    out = filter_.receive("ingress", Frame(udp()), 0.0)
    assert [iface for iface, _ in out] == ["egress", "mirror"]
    assert out[1][1].data == udp()


def test_what_leaves_is_the_rewritten_frame_with_its_checksums_right() -> None:
    class Renumber(Function):
        def process(self, packet: Packet, now: float) -> Result:
            packet.set_dst(bytes([10, 0, 0, 9]), 6000)
            return forward("egress")

    filter_ = FunctionFilter(Renumber(), on_error=lambda _k, _m: None)
    ((_, out),) = filter_.receive("ingress", Frame(udp()), 0.0)
    packet = Ether(out.data)
    assert (packet[IP].dst, packet[UDP].dport) == ("10.0.0.9", 6000)
    recomputed = Ether(out.data)
    del recomputed[IP].chksum, recomputed[UDP].chksum
    recomputed = Ether(bytes(recomputed))
    assert (packet[IP].chksum, packet[UDP].chksum) == (
        recomputed[IP].chksum,
        recomputed[UDP].chksum,
    )


def test_a_function_that_raises_is_counted_and_told_and_the_stream_goes_on() -> None:
    class Faulty(Function):
        KIND = "faulty"

        def process(self, packet: Packet, now: float) -> Result:
            if packet.dport == 1:
                raise KeyError("boom")
            return forward()

    told: list[str] = []
    filter_ = FunctionFilter(Faulty(), on_error=lambda _kind, message: told.append(message))
    assert filter_.receive("ingress", Frame(udp(dport=1)), 0.0) == []
    assert filter_.receive("ingress", Frame(udp(dport=2)), 0.0) != []
    assert filter_.errors == {"KeyError": 1}
    assert told == ["faulty.process raised KeyError: 'boom'"]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=14, max_size=200), iface=st.sampled_from(["ingress", "egress"]))
def test_arbitrary_frames_never_break_the_filter(data: bytes, iface: str) -> None:
    for kind, config in (("firewall", {"default": "reject"}), ("flow-monitor", {}), ("mirror", {})):
        filter_, told = driver(kind, config)
        filter_.receive(iface, Frame(data), 1.0)
        filter_.fire(1000.0)
        assert told == [], (kind, told)


# -- configuration words and files ------------------------------------------------


def test_values_are_json_when_they_parse_and_strings_otherwise() -> None:
    words = ["a=80", "b=true", "c=null", "d=[1, 2]", 'e="80"', "f=drop", "g=10.0.0.1", "h="]
    assert config_from(None, words) == {
        "a": 80,
        "b": True,
        "c": None,
        "d": [1, 2],
        "e": "80",
        "f": "drop",
        "g": "10.0.0.1",
        "h": "",
    }


def test_dotted_keys_set_nested_fields_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.json"
    path.write_text('{"health": {"interval": 2, "rise": 3}, "source_ip": "10.0.0.5"}')
    config = config_from(str(path), ["health.interval=5", "source_ip=10.0.0.6", "x.y.z=1"])
    assert config == {
        "health": {"interval": 5, "rise": 3},
        "source_ip": "10.0.0.6",
        "x": {"y": {"z": 1}},
    }


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["port"], "'port': expected key=value"),
        (["=1"], "'=1': expected key=value"),
        (["a..b=1"], "'a..b=1': expected key=value"),
        (["a=1", "a.b=2"], "a.b: a is already set to 1"),
    ],
)
def test_a_word_that_is_not_a_setting_is_refused(words: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        config_from(None, words)


def test_a_config_file_is_json_or_yaml(tmp_path: Path) -> None:
    json_file, yaml_file, empty = tmp_path / "c.json", tmp_path / "c.yaml", tmp_path / "e.yaml"
    json_file.write_text('{"default": "accept", "rules": [{"action": "drop", "dport": 23}]}')
    yaml_file.write_text("default: accept\nrules:\n  - {action: drop, dport: 23}\n")
    empty.write_text("# nothing\n")
    assert read_config_file(str(json_file)) == read_config_file(str(yaml_file))
    assert read_config_file(str(yaml_file))["rules"][0]["dport"] == 23  # YAML's types kept
    assert read_config_file(str(empty)) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n", "expected a mapping of fields, got list"),
        ('{"a": 1,}', "line 1: Expecting property name"),
        ("a: [1\n", "while parsing a flow sequence"),
    ],
)
def test_a_config_file_that_cannot_be_read_is_named(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=rf"--config {path}: .*{message}"):
        read_config_file(str(path))
    with pytest.raises(SettingsError, match="No such file"):
        read_config_file(str(tmp_path / "none.yaml"))


def test_settings_keep_their_order() -> None:
    assert parse_settings(["b=1", "a.c=x"]) == [(["b"], 1), (["a", "c"], "x")]


def test_the_schema_text_lists_nested_fields_under_their_path() -> None:
    from pktchain.functions.sdk import function_class

    text = schema_text(function_class("firewall"))
    lines = text.splitlines()
    assert lines[0] == "firewall: interfaces ingress, egress; live reconfiguration: yes"
    fields = {line.split()[0]: line for line in lines[1:]}
    assert "default" in fields["default"]
    assert 'default "drop"' in fields["default"]
    assert "rules[].dport" in fields
    assert "rules[].action" in fields
    assert "minimum 0.001" in fields["reject_rate"]
    assert "default 30.0" in fields["timeouts.udp"]


# -- the command -----------------------------------------------------------------


def test_ascii_in_ascii_out_and_the_counters_at_exit() -> None:
    frames = [udp(n) for n in range(3)]
    result = fn("flow-monitor", input=ascii_lines(frames))
    assert result.returncode == 0, result.stderr
    assert read_ascii(result.stdout) == frames
    assert err_lines(result) == [
        "pktchain fn flow-monitor: in: ingress 3; out: egress 3; verdicts: forward 3; "
        "counters: packets 3, flows 1, records 1, forced-end 1"
    ]


def test_pcap_in_pcap_out_keeps_capture_times_and_format_converts() -> None:
    frames = [udp(n) for n in range(3)]
    times = [1_700_000_000.25, 1_700_000_001.5, 1_700_000_002.75]
    result = fn("mirror", "-q", input=pcap_bytes(frames, times))
    assert result.returncode == 0, result.stderr
    packets = read_pcap(result.stdout)
    assert [bytes(p) for p in packets] == frames
    assert [float(p.time) for p in packets] == times
    converted = fn("mirror", "-q", "--format", "ascii", input=pcap_bytes(frames))
    assert read_ascii(converted.stdout) == frames


def test_malformed_lines_are_skipped_counted_and_told_and_the_stream_goes_on() -> None:
    good = [udp(n) for n in range(3)]
    text = ascii_lines(good[:1]) + b"zz not a frame\n" + ascii_lines(good[1:2]) + b"0011\n"
    text += ascii_lines(good[2:])
    result = fn("flow-monitor", input=text)
    assert result.returncode == 0
    assert read_ascii(result.stdout) == good
    lines = err_lines(result)
    assert lines[0] == (
        "pktchain fn flow-monitor: stdin: line 2: not hexadecimal byte pairs (column 1): skipped"
    )
    assert lines[1].startswith("pktchain fn flow-monitor: stdin: line 4: shorter than an Ethernet")
    assert (
        "in: ingress 3; out: egress 3; skipped (stdin): 2 (1 not hexadecimal byte pairs, "
        in (lines[2])
    )


def test_a_bad_config_exits_2_naming_each_wrong_field_on_its_own_line() -> None:
    result = fn(
        "firewall",
        "default=maybe",
        "reject_rate=0",
        'rules=[{"action": "accept", "protocol": "tcp", "dport": 70000}]',
        "colour=red",
    )
    assert result.returncode == 2
    assert result.stdout == b""
    assert sorted(err_lines(result)) == sorted(
        [
            "pktchain fn firewall: firewall configuration: colour: unknown field (known: "
            "default, max_connections, non_ip, reject_burst, reject_rate, reject_with, rules, "
            "status_connections, tcp_pickup, timeouts)",
            "pktchain fn firewall: firewall configuration: rules[0].dport: not a port or a "
            "range LOW-HIGH within 0-65535: 70000",
            "pktchain fn firewall: firewall configuration: default: must be one of 'accept', "
            "'drop', 'reject', got 'maybe'",
            "pktchain fn firewall: firewall configuration: reject_rate: must be at least "
            "0.001, got 0.0",
        ]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-kind",), "unknown function 'no-such-kind': use a built-in"),
        (("nosuchmodule:Thing",), "function 'nosuchmodule:Thing': cannot import nosuchmodule"),
        (("firewall", "port"), "'port': expected key=value"),
        (("firewall", "--in", "wan"), "--in wan: firewall has interfaces ingress, egress"),
        (("mirror", "--in", "mirror"), "--in mirror: no other interface to forward to"),
        (("mirror", "--out", "egress=x"), "--out egress=x: the frames leaving by egress go to"),
        (("mirror", "--out", "copies"), "--out copies: expected IFACE=PATH"),
        (("flow-monitor", "-c", "0"), "--count: expected a positive number of frames"),
        (("mirror", "--reverse-out", "x", "--out", "mirror=x"), "x: named for two outputs"),
        (("mirror", "--reverse-in", "x", "--reverse-out", "x"), "x: named as an input and an"),
        (("flow-monitor", "--config", "/nonexistent.json"), "--config /nonexistent.json: No such"),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    result = fn(*args)
    assert result.returncode == 2
    (line,) = err_lines(result)
    assert line.startswith(f"pktchain: {message}"), line


def test_options_and_settings_come_in_any_order(tmp_path: Path) -> None:
    frames = [tcp("S", dport=23), tcp("S", dport=80)]
    config = tmp_path / "fw.json"
    config.write_text('{"rules": [{"action": "drop", "protocol": "tcp", "dport": 23}]}')
    for args in (
        ("firewall", "default=accept", "--config", str(config), "-q"),
        ("firewall", "--config", str(config), "default=accept", "-q"),
        ("-q", "firewall", "--config", str(config), "default=accept"),
    ):
        result = fn(*args, input=ascii_lines(frames))
        assert result.returncode == 0, (args, result.stderr)
        assert read_ascii(result.stdout) == frames[1:], args


def test_help_config_and_schema_describe_the_configuration() -> None:
    text = fn("nat", "--help-config")
    assert text.returncode == 0
    assert "external_address" in text.stdout.decode()
    assert "required" in text.stdout.decode()
    schema = json.loads(fn("rate-limiter", "--schema").stdout)
    assert schema["kind"] == "rate-limiter"
    assert schema["interfaces"] == ["ingress", "egress"]
    assert {row["name"] for row in schema["fields"]} >= {"rate_pps", "scope"}


def test_a_user_function_by_import_path_is_a_filter() -> None:
    frames = [tcp("S", dport=23), udp(1), tcp("S", dport=22)]
    result = fn(
        "port_filter:PortFilter",
        "port=23",
        input=ascii_lines(frames),
        path=(EXAMPLES / "functions",),
    )
    assert result.returncode == 0, result.stderr
    assert read_ascii(result.stdout) == frames[1:]
    assert "verdicts: drop 1, forward 2; counters: blocked-port 1" in result.stderr.decode()


def test_the_shard_example_keeps_one_shard_of_the_flows_both_ways() -> None:
    flows = [udp(n, sport=41000 + n) for n in range(40)]
    replies = [
        bytes(
            Ether(src=B_MAC, dst=A_MAC)
            / IP(src="10.0.0.2", dst="10.0.0.1")
            / UDP(sport=5000, dport=41000 + n)
        )
        for n in range(40)
    ]
    arp = bytes(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))
    kept: list[set[int]] = []
    for index in range(2):
        args = ("shard:Shard", f"index={index}", "of=2", "-q")
        out = read_ascii(
            fn(*args, input=ascii_lines([arp, *flows]), path=(EXAMPLES / "pipes",)).stdout
        )
        back = read_ascii(fn(*args, input=ascii_lines(replies), path=(EXAMPLES / "pipes",)).stdout)
        assert (arp in out) == (index == 0)
        ports = {Ether(f)[UDP].sport for f in out if f != arp}
        assert {Ether(f)[UDP].dport for f in back} == ports  # the replies of the same flows
        kept.append(ports)
    assert kept[0] and kept[1]
    assert kept[0].isdisjoint(kept[1])
    assert kept[0] | kept[1] == {41000 + n for n in range(40)}
    bad = fn("shard:Shard", "index=2", "of=2", path=(EXAMPLES / "pipes",))
    assert bad.returncode == 2
    assert "index must be below of (2), got 2" in bad.stderr.decode()


# -- two-way use and further interfaces -------------------------------------------------


def start(
    *args: str, path: tuple[Path, ...] = (), cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pktchain", "fn", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(*path),
        cwd=cwd,
        bufsize=0,  # select() sees what readline() has not taken yet
    )


def read_line(stream: Any, timeout: float = 10.0) -> bytes:
    """One line of a pipe, waiting at most `timeout`."""
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no line within the timeout"
    return bytes(stream.readline())


def wait_stats(process: subprocess.Popen[bytes], ready: Callable[[dict[str, Any]], bool]) -> None:
    """Ask for the counters (SIGUSR1, --stats-format json) until `ready` holds of them."""
    assert process.stderr is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # Until the filter has taken SIGUSR1 over it ignores it: ask again.
        process.send_signal(signal.SIGUSR1)
        if not select.select([process.stderr], [], [], 0.2)[0]:
            continue
        line = read_line(process.stderr).decode()
        if ready(json.loads(line.split(": ", 1)[1])):
            return
    pytest.fail("the counters never showed what was waited for")


def test_two_way_through_named_pipes_shares_one_state(tmp_path: Path) -> None:
    """The firewall's return direction comes from --reverse-in and leaves by --reverse-out:
    a SYN-ACK from B is accepted only once A's SYN went through (one connection table)."""
    back_in, back_out = tmp_path / "from-b", tmp_path / "to-a"
    os.mkfifo(back_in)
    config = json.dumps(
        [
            {"action": "accept", "state": ["established"]},
            {"action": "accept", "direction": "ingress", "protocol": "tcp", "dport": 80},
        ]
    )
    process = start(
        "firewall",
        f"rules={config}",
        "--reverse-in",
        str(back_in),
        "--reverse-out",
        str(back_out),
        "--stats-format",
        "json",
    )
    assert process.stdin is not None and process.stdout is not None
    # The filter opens its input without waiting; then its output file.
    with open(back_in, "wb") as b_side:
        early = tcp("SA", back=True, sport=40000)
        b_side.write(ascii_lines([early]))  # no connection yet: dropped
        b_side.flush()
        wait_stats(process, lambda stats: stats["in"].get("egress") == 1)
        process.stdin.write(ascii_lines([tcp("S")]))
        process.stdin.flush()
        assert read_ascii(read_line(process.stdout)) == [tcp("S")]
        b_side.write(ascii_lines([early]))
    _, err = process.communicate(timeout=TIMEOUT)  # closes stdin: the filter ends
    assert process.returncode == 0, err
    assert read_ascii(back_out.read_bytes()) == [early]
    summary = json.loads(err.decode().splitlines()[-1].split(": ", 1)[1])
    assert summary["in"] == {"ingress": 1, "egress": 2}
    assert summary["out"] == {"egress": 1, "ingress": 1}
    assert summary["verdicts"] == {"forward": 2, "drop": 1}


def test_a_reply_goes_to_reverse_out_or_is_counted_when_it_has_nowhere_to_go(
    tmp_path: Path,
) -> None:
    telnet = [tcp("S", dport=23)]
    reject = ('rules=[{"action": "reject", "protocol": "tcp", "dport": 23}]', "default=accept")
    kept = fn(
        "firewall", *reject, "--reverse-out", str(tmp_path / "to-a"), input=ascii_lines(telnet)
    )
    assert kept.returncode == 0, kept.stderr
    (rst,) = read_ascii((tmp_path / "to-a").read_bytes())
    assert Ether(rst)[TCP].flags == "RA"
    lost = fn("firewall", *reject, input=ascii_lines(telnet))
    assert lost.stdout == b""
    assert "dropped, no output: ingress 1" in lost.stderr.decode()


def test_a_mirror_copies_to_out_iface_path_in_the_stream_format(tmp_path: Path) -> None:
    frames = [udp(n) for n in range(3)]
    copies = tmp_path / "copies.pcap"
    result = fn(
        "mirror", "filter.dport=5000", "--out", f"mirror={copies}", input=pcap_bytes(frames)
    )
    assert result.returncode == 0, result.stderr
    assert [bytes(p) for p in read_pcap(result.stdout)] == frames
    assert [bytes(p) for p in read_pcap(copies.read_bytes())] == frames
    unmapped = fn("mirror", input=pcap_bytes(frames))
    assert "dropped, no output: mirror 3" in unmapped.stderr.decode()


# -- counters on SIGUSR1, signals, timers, exports ------------------------------------


def test_counters_on_sigusr1_while_running_and_at_exit_on_sigterm() -> None:
    process = start("flow-monitor", "--stats-format", "json")
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    process.stdin.write(ascii_lines([udp(1), udp(2)]))
    process.stdin.flush()
    read_line(process.stdout)
    read_line(process.stdout)
    process.send_signal(signal.SIGUSR1)
    line = read_line(process.stderr).decode()
    prefix = "pktchain fn flow-monitor: "
    assert line.startswith(prefix)
    stats = json.loads(line[len(prefix) :])
    assert stats["in"] == {"ingress": 2}
    assert stats["status"]["counters"]["flows"] == 1
    assert "stopped_by" not in stats
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    final = json.loads(err.decode().splitlines()[-1][len(prefix) :])
    assert final["stopped_by"] == "SIGTERM"
    assert final["out"] == {"egress": 2}


def test_timers_run_between_reads_while_no_input_comes(tmp_path: Path) -> None:
    beacon = bytes(Ether(src=A_MAC, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / b"beacon")
    (tmp_path / "beacon.py").write_text(
        textwrap.dedent(f"""
        from pktchain.functions.sdk import Function, forward

        class Beacon(Function):
            def __init__(self, config=None):
                super().__init__(config)
                self.due = 0.0
                self.sent = 0

            def process(self, packet, now):
                return forward()

            def next_deadline(self):
                return self.due

            def on_timer(self, now):
                self.sent += 1
                self.due = now + 0.05 if self.sent < 3 else None
                return [("egress", {beacon!r})]
        """)
    )
    process = start("beacon:Beacon", "--format", "ascii", path=(tmp_path,))
    assert process.stdout is not None
    lines = [read_line(process.stdout) for _ in range(3)]
    assert [bytes.fromhex(line.decode()) for line in lines] == [beacon] * 3
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0
    assert "out: egress 3; verdicts: none" in err.decode()


def test_flow_records_are_exported_at_exit_with_dates(tmp_path: Path) -> None:
    export = tmp_path / "flows.jsonl"
    before = time.time()
    frames = [tcp("S"), tcp("SA", back=True), tcp("A")]
    result = fn("flow-monitor", "--export", str(export), input=ascii_lines(frames))
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in export.read_text().splitlines()]
    assert record["flowEndReason"] == 4  # forced end: the filter stopped
    assert record["packetTotalCount"] == 2 and record["reversePacketTotalCount"] == 1
    assert before * 1000 - 1000 <= record["flowStartMilliseconds"] <= time.time() * 1000 + 1000


def test_count_stops_after_n_input_frames() -> None:
    result = fn("flow-monitor", "-c", "2", input=ascii_lines([udp(n) for n in range(5)]))
    assert result.returncode == 0
    assert read_ascii(result.stdout) == [udp(0), udp(1)]
    assert "stopped by count" in result.stderr.decode()


def test_a_consumer_that_goes_away_ends_the_filter_quietly(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_bytes(ascii_lines([udp(n, size=600) for n in range(3000)]))
    script = (
        f"{sys.executable} -m pktchain fn flow-monitor < in.txt 2> err.txt | head -n 1; "
        'echo "${PIPESTATUS[0]}" > status.txt'
    )
    subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env(), check=True, timeout=TIMEOUT)
    assert (tmp_path / "status.txt").read_text().strip() == "0"
    assert "stopped by EPIPE" in (tmp_path / "err.txt").read_text()


def test_a_lost_pcap_framing_ends_that_input_after_the_frames_before_it() -> None:
    stream = pcap_bytes([udp(0), udp(1)])
    stream += struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 60) + bytes(60)
    result = fn("flow-monitor", input=stream)
    assert result.returncode == 1
    assert [bytes(p) for p in read_pcap(result.stdout)] == [udp(0), udp(1)]
    assert (
        f"stdin: byte {len(stream) - 76}: record 3 claims a captured length of 4294967295 bytes"
        in (result.stderr.decode())
    )


def test_a_slow_consumer_slows_the_producer_and_nothing_is_lost() -> None:
    frames = [udp(n, size=1400) for n in range(12000)]  # about 17 MB of pcap
    stream = pcap_bytes(frames)
    process = start("flow-monitor", "-q")
    assert process.stdin is not None and process.stdout is not None
    os.set_blocking(process.stdin.fileno(), False)
    # Nobody reads stdout: the filter soon stops reading, and its stdin fills up.
    taken = 0
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < 1.0:
        try:
            written = os.write(process.stdin.fileno(), stream[taken : taken + 65536])
        except BlockingIOError:
            time.sleep(0.02)
            continue
        taken += written
        quiet_since = time.monotonic()
    assert taken < 4 * 1024 * 1024, taken  # pipes and queues, not the whole stream
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(process.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    os.set_blocking(process.stdin.fileno(), True)
    process.stdin.write(stream[taken:])
    process.stdin.close()
    reader.join(timeout=TIMEOUT)
    assert process.wait(timeout=TIMEOUT) == 0
    assert count_pcap(received[0]) == len(frames)


# -- start-up -------------------------------------------------------------------

HEAVY = (
    "pydantic",
    "fastapi",
    "uvicorn",
    "pyroute2",
    "yaml",
    "rich",
    "scapy",
    "dpkt",
    "logging",
    "pktchain.lab",
    "pktchain.node",
    "pktchain.client",
    "pktchain.pipe.capture",
    "pktchain.pipe.iface",
)


@pytest.mark.parametrize("kind", ["firewall", "flow-monitor", "nat"])
def test_a_function_filter_loads_nothing_heavy(kind: str, tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(
        '{"external_address": "203.0.113.1", "internal_networks": ["10.0.0.0/24"]}'
        if kind == "nat"
        else '{"default": "accept"}'
        if kind == "firewall"
        else "{}"
    )
    script = (
        "import json, sys\n"
        "from pktchain.cli import main\n"
        f"status = main(['fn', '{kind}', '-q', '--config', {str(config)!r}])\n"
        "print(json.dumps([status, sorted(sys.modules)]), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=ascii_lines([udp()]),
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
        env=env(),
    )
    status, modules = json.loads(result.stderr.decode().splitlines()[-1])
    assert status == 0
    assert len(read_ascii(result.stdout)) == 1
    assert "pktchain.pipe.fn_run" in modules
    loaded = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []


def test_the_full_command_line_lists_fn() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pktchain", "--help"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    )
    assert "    fn " in result.stdout


def test_in_names_the_interface_stdin_frames_arrive_on() -> None:
    ping = bytes(Ether(src=A_MAC, dst=B_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / ICMP())
    rules = 'rules=[{"action": "drop", "direction": "egress"}]'
    ingress = fn("firewall", rules, "default=accept", "-q", input=ascii_lines([ping]))
    assert read_ascii(ingress.stdout) == [ping]
    egress = fn("firewall", rules, "default=accept", "--in", "egress", input=ascii_lines([ping]))
    assert egress.stdout == b""
    assert "in: egress 1; out: none; verdicts: drop 1" in egress.stderr.decode()


def test_an_output_that_cannot_be_opened_exits_1_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "copies.pcap"
    result = fn("mirror", "--out", f"mirror={missing}")
    assert result.returncode == 1
    assert err_lines(result) == [f"pktchain fn mirror: {missing}: No such file or directory"]


def test_help_after_the_name_shows_every_option() -> None:
    result = fn("firewall", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for option in ("--reverse-in", "--reverse-out", "--out IFACE=PATH", "--stats-format"):
        assert option in text
