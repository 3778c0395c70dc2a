"""`pktchain pipe read|write` on real interfaces: pcap that tcpdump reads, and /dev/stdpkt's
EtherPIPE one-liners (awk MAC filter, sed VLAN untagging, tee mirroring) between hosts.

Most tests put a host M between A and B (A.eth0 - M.a, M.b - B.eth0) and run a
shell pipeline in M that carries A's frames to B. A sends UDP datagrams; B (and
C) receive them on ordinary sockets, which also checks that the frames that
left the pipe are well-formed. IPv6 is off and neighbours are static, so that
each host sends exactly the frames a test counts. Every pipeline is bounded by
``--count`` and a timeout.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from pktchain.lab import Lab, LabHost, wait_until
from pktchain.packet.streams import AsciiDecoder, Frame
from support.fn_lab import NO_IPV6

LabFactory = Callable[..., Lab]

PKTCHAIN = f"{shlex.quote(sys.executable)} -m pktchain"
MAC_A = "02:00:00:0a:00:01"
MAC_B = "02:00:00:0b:00:02"
PORT = 5000
TIMEOUT = 20.0
SENT = 500


def host(interfaces: dict[str, Any]) -> dict[str, Any]:
    return {"sysctls": NO_IPV6, "interfaces": interfaces}


def bump(
    *outputs: str, b_address: str = "10.0.0.2/24", a_address: str = "10.0.0.1/24"
) -> dict[str, Any]:
    """Hosts A and B (and C...) joined only through M: A.eth0 - M.a, M.<x> - X.eth0."""
    hosts: dict[str, Any] = {
        "a": host({"eth0": {"attach": "m.a", "mac": MAC_A, "addresses": [a_address]}}),
        "m": host({"a": {}, **{name: {} for name in outputs}}),
    }
    for name in outputs:
        # Every receiver has B's MAC and address: each gets what a mirror sends it.
        hosts[name] = host(
            {"eth0": {"attach": f"m.{name}", "mac": MAC_B, "addresses": [b_address]}}
        )
    return {"hosts": hosts}


def pair() -> dict[str, Any]:
    """Hosts A and B on the two ends of one veth."""
    return {
        "hosts": {
            "a": host({"eth0": {"attach": "b.eth0", "mac": MAC_A, "addresses": ["10.0.0.1/24"]}}),
            "b": host({"eth0": {"mac": MAC_B, "addresses": ["10.0.0.2/24"]}}),
        }
    }


def neighbour(on: LabHost, address: str, mac: str, dev: str = "eth0") -> None:
    on.run(["ip", "neigh", "replace", address, "lladdr", mac, "dev", dev, "nud", "permanent"])
    on.run(["ip", "neigh", "show", address, "dev", dev], check=True)


def capturing(on: LabHost, count: int = 1) -> None:
    """Wait until `count` packet sockets bound with ETH_P_ALL exist in `on` (a capture is open)."""

    def ready() -> bool:
        table = on.run(["cat", "/proc/net/packet"], timeout=5).stdout.splitlines()[1:]
        return sum(line.split()[3] == "0003" for line in table) >= count

    wait_until(ready, timeout=10, what=f"{on.name}: a capture socket")


@contextmanager
def pipeline(on: LabHost, script: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `script` with sh in host `on`, stderr to a file; the body must let it finish."""
    log = tmp_path / f"{on.name}.stderr"
    with open(log, "wb") as err:
        process = on.popen(["sh", "-c", script], stderr=err, stdout=err, cwd=tmp_path)
    try:
        yield process
        try:
            status = process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pipeline did not finish: {script}\n{log.read_text()}")
        assert status == 0, f"{script}: status {status}\n{log.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def udp_socket(on: LabHost) -> socket.socket:
    sock = on.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    return sock


def receiver(on: LabHost) -> socket.socket:
    sock = udp_socket(on)
    sock.bind(("0.0.0.0", PORT))
    return sock


def received(sock: socket.socket, expected: int, timeout: float = 5.0) -> list[bytes]:
    """`expected` datagrams (waiting up to `timeout`), then any more already queued."""
    payloads: list[bytes] = []
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while len(payloads) < expected and time.monotonic() < deadline:
        try:
            payloads.append(sock.recv(2048))
        except TimeoutError:
            break
    sock.setblocking(False)
    while True:
        try:
            payloads.append(sock.recv(2048))
        except BlockingIOError:
            return payloads


def ascii_frames(path: Path) -> list[Frame]:
    decoder = AsciiDecoder()
    events = [*decoder.feed(path.read_bytes()), *decoder.end()]
    assert all(isinstance(event, Frame) for event in events), events
    return [event for event in events if isinstance(event, Frame)]


# --------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["micro", "nano"])
def test_pcap_stream_of_a_ping_reads_back_in_tcpdump(
    lab_factory: LabFactory, tmp_path: Path, precision: str
) -> None:
    lab = lab_factory(pair())
    a, b = lab.host("a"), lab.host("b")
    neighbour(a, "10.0.0.2", MAC_B)
    neighbour(b, "10.0.0.1", MAC_A)
    # Both directions (tcpdump's view), so 3 requests and 3 replies; the capture runs
    # in B's namespace through --netns from here, tcpdump reads its stdout.
    read = (
        f"{PKTCHAIN} pipe read --netns {b.netns} --direction inout --count 6 "
        f"--time-stamp-precision {precision} eth0"
    )
    with open(tmp_path / "stderr", "wb") as err:
        process = subprocess.Popen(
            ["sh", "-c", f"{read} | tcpdump -nn -r - > tcpdump.txt"],
            cwd=tmp_path,
            stderr=err,
            start_new_session=True,
        )
    try:
        capturing(b)
        a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"], timeout=10).check()
        assert process.wait(timeout=TIMEOUT) == 0, (tmp_path / "stderr").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines = (tmp_path / "tcpdump.txt").read_text().splitlines()
    assert len(lines) == 6, lines
    assert sum("10.0.0.1 > 10.0.0.2: ICMP echo request" in line for line in lines) == 3
    assert sum("10.0.0.2 > 10.0.0.1: ICMP echo reply" in line for line in lines) == 3
    stderr = (tmp_path / "stderr").read_text()
    assert "eth0: 6 frames captured (inout), 0 dropped by the kernel" in stderr
    assert "link-type EN10MB (Ethernet), snapshot length 262144" in stderr


def test_awk_mac_filter_passes_only_frames_to_that_mac(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(bump("b"))
    a, m, b = lab.host("a"), lab.host("m"), lab.host("b")
    neighbour(a, "10.0.0.2", MAC_B)
    rx = receiver(b)
    tx = udp_socket(a)
    mac = MAC_B.replace(":", "").upper()
    script = (
        f"{PKTCHAIN} pipe read --format ascii --count 6 a"
        f" | awk '$1==\"{mac}\"{{print $0}}'"  # /dev/stdpkt's filter, B's MAC
        f" | {PKTCHAIN} pipe write b"
    )
    with pipeline(m, script, tmp_path):
        capturing(m)
        for n in range(3):
            tx.sendto(b"unicast %d" % n, ("10.0.0.2", PORT))
            tx.sendto(b"broadcast %d" % n, ("10.0.0.255", PORT))  # ff:ff:ff:ff:ff:ff
    # B would take the broadcasts too: only the filter kept them out.
    assert received(rx, 3) == [b"unicast 0", b"unicast 1", b"unicast 2"]
    stderr = (tmp_path / "m.stderr").read_text()
    assert "a: 6 frames captured (in)" in stderr
    assert "b: 3 frames sent" in stderr


def test_sed_untags_vlan_frames(lab_factory: LabFactory, tmp_path: Path) -> None:
    lab = lab_factory(bump("b", b_address="10.0.1.2/24"))
    a, m, b = lab.host("a"), lab.host("m"), lab.host("b")
    rx = receiver(b)  # B has no VLAN device: it takes only untagged frames
    # A sends frames tagged for VLAN 1, made by scapy. M's kernel takes the tag out
    # of the frame on receipt (skb_vlan_untag); the capture puts it back, as libpcap does.
    raw = a.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    raw.bind(("eth0", 0))
    tagged = [
        Ether(dst=MAC_B, src=MAC_A)
        / Dot1Q(vlan=1)
        / IP(src="10.0.1.1", dst="10.0.1.2")
        / UDP(sport=40000, dport=PORT)
        / (b"vlan %d" % n)
        for n in range(3)
    ]
    script = (
        f"{PKTCHAIN} pipe read --format ascii --count 3 a"
        " | tee tagged.txt"
        " | sed -e 's/8100 00 01 //'"  # /dev/stdpkt's sed
        f" | {PKTCHAIN} pipe write b"
    )
    with pipeline(m, script, tmp_path):
        capturing(m)
        for frame in tagged:
            raw.send(bytes(frame))
    raw.close()
    assert received(rx, 3) == [b"vlan 0", b"vlan 1", b"vlan 2"]
    lines = (tmp_path / "tagged.txt").read_text().splitlines()
    assert len(lines) == 3
    assert all(line.split()[2:6] == ["8100", "00", "01", "0800"] for line in lines), lines
    assert [f.data for f in ascii_frames(tmp_path / "tagged.txt")] == [bytes(f) for f in tagged]


def test_tee_mirrors_to_a_file_and_a_second_interface(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(bump("b", "c"))
    a, m = lab.host("a"), lab.host("m")
    neighbour(a, "10.0.0.2", MAC_B)
    rx_b, rx_c = receiver(lab.host("b")), receiver(lab.host("c"))
    tx = udp_socket(a)
    # /dev/stdpkt's `tee /dev/ethpipe/1 > /dev/ethpipe/2`, with a named pipe for the
    # second interface (sh has no process substitution).
    script = (
        "mkfifo to-c; "
        f"{PKTCHAIN} pipe write c < to-c & "
        f"{PKTCHAIN} pipe read --format ascii --count 3 a"
        " | tee mirror.txt to-c"
        f" | {PKTCHAIN} pipe write b; "
        "wait"
    )
    sent = [b"mirrored %d" % n for n in range(3)]
    with pipeline(m, script, tmp_path):
        capturing(m)
        for payload in sent:
            tx.sendto(payload, ("10.0.0.2", PORT))
    assert received(rx_b, 3) == sent
    assert received(rx_c, 3) == sent
    copies = ascii_frames(tmp_path / "mirror.txt")
    assert [bytes(Ether(frame.data)[UDP].payload) for frame in copies] == sent
    stderr = (tmp_path / "m.stderr").read_text()
    assert "b: 3 frames sent" in stderr
    assert "c: 3 frames sent" in stderr


def test_a_reader_of_incoming_frames_does_not_read_back_what_a_writer_sends(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(pair())
    a, b = lab.host("a"), lab.host("b")
    neighbour(b, "10.0.0.1", MAC_A)
    script = (
        f"{PKTCHAIN} pipe read --format ascii --count 1 eth0 > in.txt & "
        f"{PKTCHAIN} pipe read --format ascii --count 1 --direction inout eth0 > inout.txt & "
        "wait"
    )
    ours = "FFFFFFFFFFFF 0200000A0001 88B5 6F 75 72 73"  # local experimental EtherType
    with pipeline(a, script, tmp_path):
        capturing(a, 2)
        a.run(
            [sys.executable, "-m", "pktchain", "pipe", "write", "eth0"], input=ours + "\n"
        ).check()
        # Then a frame from B: the first that `--direction in` may see.
        udp_socket(b).sendto(b"from b", ("10.0.0.1", PORT))
    (inout,) = ascii_frames(tmp_path / "inout.txt")
    assert inout.data == bytes.fromhex(ours)
    (incoming,) = ascii_frames(tmp_path / "in.txt")
    assert bytes(Ether(incoming.data)[UDP].payload) == b"from b"


def test_a_stalled_consumer_costs_frames_that_the_kernel_counts(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(bump("b"))
    a, m = lab.host("a"), lab.host("m")
    neighbour(a, "10.0.0.2", MAC_B)
    err = tmp_path / "stderr"
    with open(err, "wb") as stderr:
        # stdout is a pipe that nobody reads until the burst is over; the socket
        # buffer is as small as the kernel allows.
        reader = m.popen(
            [sys.executable, "-m", "pktchain", "pipe", "read", "--format", "ascii", "-B", "1", "a"],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    assert reader.stdout is not None
    try:
        capturing(m)
        tx = udp_socket(a)
        # A line of a 1400-byte frame is 4 KB: a 64 KB pipe holds 16 of them.
        for n in range(SENT):
            tx.sendto(b"burst %04d" % n + bytes(1400), ("10.0.0.2", PORT))
        # Once the reader has written (it is in its loop, and now blocked writing):
        # SIGTERM. It finishes what it is writing once we read, then stops and reports.
        first = os.read(reader.stdout.fileno(), 1)
        reader.send_signal(signal.SIGTERM)
        output = first + reader.stdout.read()
        assert reader.wait(timeout=TIMEOUT) == 0
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    decoder = AsciiDecoder()
    events = [*decoder.feed(output), *decoder.end()]
    assert events and all(isinstance(event, Frame) for event in events)  # no torn line
    summary = err.read_text().strip().splitlines()[-1]
    captured = int(summary.split(" frames captured")[0].rsplit(" ", 1)[1])
    dropped = int(summary.split(", ")[1].split(" dropped")[0])
    assert captured == len(events), summary
    assert dropped > 0, summary
    assert captured + dropped <= SENT, summary


def test_ping_crosses_a_bump_of_two_opposite_pipes_without_looping(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(bump("b"))
    a, m, b = lab.host("a"), lab.host("m"), lab.host("b")
    # ARP goes through too (2 frames each way), then 3 echo requests and 3 replies.
    # A pipe that read back what the other sends out of its interface would count
    # more than 5 frames before the pings were over, and cut them short.
    script = (
        f"{PKTCHAIN} pipe read --count 5 a | {PKTCHAIN} pipe write b & "
        f"{PKTCHAIN} pipe read --count 5 b | {PKTCHAIN} pipe write a & "
        "wait"
    )
    with pipeline(m, script, tmp_path):
        capturing(m, 2)
        ping = a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.0.2"], timeout=10)
        assert ping.ok, ping.stdout
        assert " 0% packet loss" in ping.stdout
        assert b.run(["ip", "neigh", "show", "10.0.0.1"], timeout=5).stdout.strip()
    stderr = (tmp_path / "m.stderr").read_text()
    assert stderr.count("5 frames captured (in), 0 dropped by the kernel") == 2, stderr


def test_bad_input_is_skipped_and_reported_and_a_lost_pcap_framing_stops(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(pair())
    a, b = lab.host("a"), lab.host("b")
    rx = receiver(b)
    frames = [
        bytes(
            Ether(dst=MAC_B, src=MAC_A)
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / UDP(sport=40000, dport=PORT)
            / (b"good %d" % n)
        )
        for n in range(3)
    ]
    text = (
        f"{frames[0].hex()}\n"
        "not a frame\n"
        "# a comment, and a blank line\n\n"
        f"{frames[1].hex(' ')}\n"
        "FFFFFFFFFFFF 0200000A0001 08\n"
    )
    written = a.run([sys.executable, "-m", "pktchain", "pipe", "write", "eth0"], input=text)
    assert written.returncode == 0, written.stderr
    assert received(rx, 2) == [b"good 0", b"good 1"]
    lines = written.stderr.splitlines()
    assert lines[0] == (
        "pktchain pipe write: stdin: line 2: not hexadecimal byte pairs (column 1): skipped"
    )
    assert lines[1].startswith("pktchain pipe write: stdin: line 6: shorter than an Ethernet")
    assert lines[-1] == (
        "pktchain pipe write: eth0: 2 frames sent; input: 2 skipped (1 not hexadecimal "
        "byte pairs, 1 shorter than an Ethernet header (14 bytes))"
    )
    # pcap: a record claiming 4 GB: the rest of the stream cannot be found.
    header = struct.pack("<IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    record = struct.pack("<IIII", 0, 0, len(frames[2]), len(frames[2])) + frames[2]
    corrupt = header + record + struct.pack("<IIII", 0, 0, 0xFFFFFFFF, 60) + bytes(60)
    stream = tmp_path / "corrupt.pcap"
    stream.write_bytes(corrupt)
    with open(stream, "rb") as source:
        process = subprocess.run(
            [sys.executable, "-m", "pktchain", "pipe", "write", "--netns", a.netns, "eth0"],
            stdin=source,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    assert process.returncode == 1
    assert received(rx, 1) == [b"good 2"]
    offset = len(header) + len(record)
    assert f"stdin: byte {offset}: record 2 claims a captured length of 4294967295" in (
        process.stderr
    )
    assert "eth0: 1 frames sent" in process.stderr
