"""Packet stream formats: pcap against scapy and dpkt, the EtherPIPE ASCII lines of /dev/stdpkt
with /dev/stdpkt's own awk and sed one-liners, malformed input, format detection, filters."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.utils import PcapWriter, rdpcap

from pktchain.packet import Ethernet, Ipv4, Udp, Vlan, build
from pktchain.packet.streams import (
    AsciiDecoder,
    AsciiEncoder,
    Defect,
    Frame,
    PcapDecoder,
    PcapEncoder,
    Skipped,
    StreamDecoder,
    StreamFormat,
    StreamFormatError,
    TimePrecision,
    decode_line,
    detect,
)
from pktchain.pipe.stream import FrameReader, FrameWriter, SkipReport, run_filter

EXAMPLES = settings(max_examples=60, deadline=None)
T0 = 1_700_000_000_123_456_000  # a capture time in ns since the epoch, whole microseconds

# The first line of /dev/stdpkt's `cat /dev/ethpipe/0` in the /dev/stdpkt talk, byte for byte.
SEED_LINE = (
    "0000000000000000 A0369F1850e5 001C7E6ABAD1 0800 45 00 00 4E 00 00 40 00 40 11 FB 32 "
    "0A 00 00 6E 0A 00 00 02 04 04 00 89 00 3A 38 03 10 FD 01 10 00 01 00 00 00 00 00 00 "
    "20 46 45 45 4E 45 42 46 45 46 44 46 46 46 4A 45 42 43 4E 45 49 46 41 43 41 43 41 43 "
    "41 43 41 43 41 00 00 20 00 01"
)


def udp_frame(payload: bytes = b"hello", *, dst: str = "02:00:00:0b:00:02") -> bytes:
    return build(
        Ethernet(dst, "02:00:00:0a:00:01"),
        Ipv4("10.0.0.1", "10.0.0.2"),
        Udp(40000, 50000),
        payload,
    )


def tagged_frame(vid: int = 1, payload: bytes = b"tagged") -> bytes:
    return build(
        Ethernet("02:00:00:0b:00:02", "02:00:00:0a:00:01"),
        Vlan(vid),
        Ipv4("10.0.1.1", "10.0.1.2"),
        Udp(40000, 50000),
        payload,
    )


def decode_all(decoder: PcapDecoder | AsciiDecoder | StreamDecoder, data: bytes) -> list[object]:
    return [*decoder.feed(data), *decoder.end()]


def frames_of(events: list[object]) -> list[Frame]:
    return [event for event in events if isinstance(event, Frame)]


def skips_of(events: list[object]) -> list[Skipped]:
    return [event for event in events if isinstance(event, Skipped)]


def pcap_stream(frames: list[Frame], precision: TimePrecision = TimePrecision.MICRO) -> bytes:
    encoder = PcapEncoder(precision=precision)
    return encoder.header() + b"".join(encoder.encode(frame) for frame in frames)


FRAMES = [
    Frame(udp_frame(b"one"), T0),
    Frame(tagged_frame(7), T0 + 1_000),
    Frame(udp_frame(bytes(1400)), T0 + 2_000_001_000),
]
NS_FRAMES = [frame._replace(timestamp_ns=frame.timestamp_ns + n) for n, frame in enumerate(FRAMES)]

# --------------------------------------------------------------------------
# pcap


def test_pcap_we_write_reads_back_in_scapy(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    path.write_bytes(pcap_stream(FRAMES))
    packets = rdpcap(str(path))
    assert [bytes(p) for p in packets] == [f.data for f in FRAMES]
    # Microsecond magic: the times, to the microsecond.
    assert [int(p.time * 1_000_000) for p in packets] == [
        f.timestamp_ns // 1000 for f in FRAMES if f.timestamp_ns
    ]
    assert packets[1][Dot1Q].vlan == 7


def test_pcap_we_write_reads_back_in_dpkt_with_the_header_libpcap_writes() -> None:
    data = pcap_stream(FRAMES)
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert reader.datalink() == dpkt.pcap.DLT_EN10MB
    assert reader.snaplen == 262144
    records = list(reader)
    assert [buf for _, buf in records] == [f.data for f in FRAMES]
    magic, major, minor = struct.unpack_from("<IHH", data)
    assert (magic, major, minor) == (0xA1B2C3D4, 2, 4)


def test_nanosecond_pcap_keeps_every_nanosecond() -> None:
    data = pcap_stream(NS_FRAMES, TimePrecision.NANO)
    assert struct.unpack_from("<I", data)[0] == 0xA1B23C4D
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert [buf for _, buf in reader] == [f.data for f in FRAMES]
    decoder = PcapDecoder()
    assert frames_of(decode_all(decoder, data)) == NS_FRAMES
    # Written in microseconds, the nanoseconds are cut off.
    assert frames_of(decode_all(PcapDecoder(), pcap_stream(NS_FRAMES))) == FRAMES
    assert decoder.nanosecond


@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("endianness", ["<", ">"])
def test_scapy_pcap_of_either_byte_order_and_precision_reads_in_ours(
    tmp_path: Path, nano: bool, endianness: str
) -> None:
    path = tmp_path / "in.pcap"
    packets = [Ether(f.data) for f in FRAMES]
    for packet, frame in zip(packets, FRAMES, strict=True):
        packet.time = frame.timestamp_ns / 1e9 if frame.timestamp_ns else 0
    with PcapWriter(str(path), linktype=1, endianness=endianness, nano=nano) as writer:
        for packet in packets:
            writer.write(packet)
    data = path.read_bytes()
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    assert data[:4] == struct.pack(endianness + "I", magic)
    decoder = PcapDecoder()
    frames = frames_of(decode_all(decoder, data))
    assert [f.data for f in frames] == [f.data for f in FRAMES]
    assert decoder.byte_order == endianness
    unit = 1 if nano else 1000
    for got, sent in zip(frames, FRAMES, strict=True):
        assert got.timestamp_ns is not None and sent.timestamp_ns is not None
        # scapy keeps time as a float: within a microsecond.
        assert abs(got.timestamp_ns - sent.timestamp_ns) < 1000 + unit


def test_pcap_decoder_takes_the_stream_in_any_chunks() -> None:
    data = pcap_stream(FRAMES, TimePrecision.NANO)
    for size in (1, 3, 16, 17, 100):
        decoder = PcapDecoder()
        events: list[object] = []
        for at in range(0, len(data), size):
            events += decoder.feed(data[at : at + size])
        events += decoder.end()
        assert events == FRAMES, size


def test_pcap_bad_length_stops_naming_the_record_offset() -> None:
    good = pcap_stream(FRAMES[:1])
    corrupt = good + struct.pack("<IIII", 0, 0, 0x7FFFFFFF, 60) + bytes(60)
    decoder = PcapDecoder()
    assert decoder.feed(corrupt) == FRAMES[:1]  # what came before it first
    with pytest.raises(StreamFormatError) as caught:
        decoder.feed(b"")
    assert caught.value.offset == len(good)
    with pytest.raises(StreamFormatError):
        decoder.end()
    decoder = PcapDecoder()
    with pytest.raises(StreamFormatError):
        decoder.feed(good[:24] + corrupt[len(good) :])
    assert "record 2" in str(caught.value)
    assert "cannot be resynchronised" in str(caught.value)


def test_pcap_short_record_is_skipped_and_the_stream_goes_on() -> None:
    encoder = PcapEncoder()
    runt = struct.pack("<IIII", 1, 0, 6, 6) + bytes(6)
    data = encoder.header() + encoder.encode(FRAMES[0]) + runt + encoder.encode(FRAMES[1])
    events = decode_all(PcapDecoder(), data)
    assert frames_of(events) == FRAMES[:2]
    (skip,) = skips_of(events)
    assert (skip.defect, skip.number) == (Defect.TOO_SHORT, 2)
    assert str(skip).startswith("record 2 (byte ")


def test_pcap_stream_ending_inside_a_record_reports_it() -> None:
    data = pcap_stream(FRAMES[:2])
    events = decode_all(PcapDecoder(), data[:-5])
    assert frames_of(events) == FRAMES[:1]
    (skip,) = skips_of(events)
    assert skip.defect is Defect.INCOMPLETE


def test_truncated_capture_keeps_its_wire_length() -> None:
    encoder = PcapEncoder(snaplen=64)
    data = encoder.header() + encoder.encode(FRAMES[2])
    (frame,) = frames_of(decode_all(PcapDecoder(), data))
    assert len(frame.data) == 64
    assert frame.wire_length == len(FRAMES[2].data)
    assert frame.truncated
    reader = dpkt.pcap.Reader(io.BytesIO(data))
    assert reader.snaplen == 64


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (struct.pack("<I", 0x0A0D0D0A) + bytes(20), "pcapng"),
        (struct.pack("<IHHIIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 113), "link type 113"),
        (struct.pack("<IHHIIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), "version 3"),
    ],
)
def test_unreadable_pcap_headers_are_named(header: bytes, message: str) -> None:
    decoder = StreamDecoder()
    with pytest.raises(StreamFormatError, match=message):
        decoder.feed(header)
    assert decoder.format is StreamFormat.PCAP


@EXAMPLES
@given(
    st.lists(
        st.tuples(st.binary(min_size=14, max_size=300), st.integers(0, 2**32 * 10**9 - 1)),
        max_size=8,
    )
)
def test_pcap_round_trip(records: list[tuple[bytes, int]]) -> None:
    frames = [Frame(data, stamp) for data, stamp in records]
    assert frames_of(decode_all(PcapDecoder(), pcap_stream(frames, TimePrecision.NANO))) == frames


# --------------------------------------------------------------------------
# ascii


def test_seed_line_decodes_with_its_timestamp_column_and_mixed_case() -> None:
    frame = decode_line(SEED_LINE.encode())
    assert isinstance(frame, Frame)
    assert frame.timestamp_ns is None  # all zeros: unknown, as the device wrote it
    packet = Ether(frame.data)
    assert packet.dst == "a0:36:9f:18:50:e5"
    assert packet.src == "00:1c:7e:6a:ba:d1"
    assert packet[IP].src == "10.0.0.110"
    assert packet[UDP].dport == 137  # /dev/stdpkt's NetBIOS name query


def test_lines_are_written_as_the_seed_prints_them_without_the_time_column() -> None:
    frame = decode_line(SEED_LINE.encode())
    assert isinstance(frame, Frame)
    line = AsciiEncoder().encode(frame).decode()
    # /dev/stdpkt's line, upper case, without the first column: $1 is the destination.
    assert line == SEED_LINE[17:].upper() + "\n"
    stamped = AsciiEncoder(timestamps=True).encode(frame._replace(timestamp_ns=T0)).decode()
    assert stamped.split()[0] == f"{T0:016X}"
    assert decode_line(stamped.encode()) == frame._replace(timestamp_ns=T0)


def test_vlan_tag_is_written_so_that_the_seeds_sed_untags_it() -> None:
    tagged = AsciiEncoder().encode(Frame(tagged_frame(1)))
    assert b" 8100 00 01 0800 45 " in tagged
    # /dev/stdpkt's sed, unchanged: the result is the line of the untagged frame.
    result = subprocess.run(
        ["sed", "-e", "s/8100 00 01 //"], input=tagged, capture_output=True, check=True
    )
    inner = tagged_frame(1)[:12] + tagged_frame(1)[16:]
    assert result.stdout == AsciiEncoder().encode(Frame(inner))
    assert decode_line(result.stdout) == Frame(inner)


def test_qinq_tags_are_each_written_as_tpid_tci_type() -> None:
    frame = build(
        Ethernet("02:00:00:00:00:02", "02:00:00:00:00:01"),
        Vlan(100, tpid=0x88A8),
        Vlan(5),
        Ipv4("10.0.0.1", "10.0.0.2"),
        Udp(1, 2),
    )
    fields = AsciiEncoder().encode(Frame(frame)).split()
    assert fields[2:10] == [b"88A8", b"00", b"64", b"8100", b"00", b"05", b"0800", b"45"]


def test_the_seeds_awk_mac_filter_keeps_only_that_destination() -> None:
    keep = udp_frame(b"kept", dst="00:11:22:33:44:55")
    drop = udp_frame(b"dropped", dst="ff:ff:ff:ff:ff:ff")
    lines = b"".join(AsciiEncoder().encode(Frame(f)) for f in (keep, drop, keep))
    result = subprocess.run(
        ["awk", '$1=="001122334455"{print $0}'], input=lines, capture_output=True, check=True
    )
    assert frames_of(decode_all(AsciiDecoder(), result.stdout)) == [Frame(keep), Frame(keep)]


def test_what_a_person_writes_is_accepted() -> None:
    frame = udp_frame()
    canonical = AsciiEncoder().encode(Frame(frame)).decode()
    hexdigits = frame.hex()
    variants = [
        canonical.lower(),
        canonical.replace(" ", "\t"),
        "  " + canonical.replace(" ", "   ").rstrip("\n") + "  \r\n",
        hexdigits + "\n",  # one run of digits
        "02:00:00:0b:00:02 02:00:00:0a:00:01 " + hexdigits[24:] + "\n",  # MACs with colons
        canonical.rstrip("\n") + "  # a comment\n",
        "0000000000000000 " + canonical,  # /dev/stdpkt's unknown time
    ]
    for text in variants:
        assert decode_line(text.encode()) == Frame(frame), text
    for blank in ("", "   ", "# only a comment", "\r"):
        assert decode_line(blank.encode()) is None


@pytest.mark.parametrize(
    ("line", "defect", "detail"),
    [
        ("FFFFFFFFFFFF 0200000B0002 0800 4G", Defect.NOT_HEX, "column 33"),
        ("FFFFFFFFFFFF 0200000B0002 0800 4", Defect.NOT_HEX, ""),
        ("FFFFFFFFFFFF 0200000B0002 08", Defect.TOO_SHORT, "13 bytes"),
        ("hello world", Defect.NOT_HEX, "column 1"),
        ("FFFFFFFFFFFF 0200000B0002 0800 " + "00" * 262131, Defect.TOO_LONG, "262145 bytes"),
    ],
)
def test_malformed_lines_name_their_defect(line: str, defect: Defect, detail: str) -> None:
    skipped = decode_line(line.encode(), 7, 100)
    assert isinstance(skipped, Skipped)
    assert (skipped.defect, skipped.number, skipped.offset) == (defect, 7, 100)
    assert detail in skipped.detail
    assert str(skipped).startswith("line 7: ")


def test_malformed_lines_are_skipped_counted_and_reported_with_a_limit() -> None:
    good = AsciiEncoder().encode(Frame(udp_frame()))
    text = good + b"zz\n" * 8 + b"\n# comment\n" + good + b"AB\n" + good.rstrip(b"\n")
    stream = io.StringIO()
    report = SkipReport("pktchain test", stream=stream, limit=3)
    frames = list(reader_over(text, on_skip=report))
    assert frames == [Frame(udp_frame())] * 3
    assert report.counts == {Defect.NOT_HEX: 8, Defect.TOO_SHORT: 1}
    lines = stream.getvalue().splitlines()
    assert lines[0] == (
        "pktchain test: stdin: line 2: not hexadecimal byte pairs (column 1): skipped"
    )
    # Three reported, then one line saying the rest are only counted.
    assert sum("not hexadecimal" in line and "skipped" in line for line in lines) == 3
    assert any(line.endswith("are counted, not reported one by one") for line in lines)
    assert "line 13: shorter than an Ethernet header" in stream.getvalue()
    assert report.summary() == (
        "9 skipped (8 not hexadecimal byte pairs, 1 shorter than an Ethernet header (14 bytes))"
    )


def test_an_overlong_line_is_skipped_once_and_the_next_line_decodes() -> None:
    decoder = AsciiDecoder()
    events: list[object] = []
    for _ in range(3):
        events += decoder.feed(b"00" * 1024 * 1024)
    events += decoder.feed(b"00\n" + AsciiEncoder().encode(Frame(udp_frame())))
    events += decoder.end()
    (skip,) = skips_of(events)
    assert (skip.defect, skip.number) == (Defect.LINE_TOO_LONG, 1)
    assert frames_of(events) == [Frame(udp_frame())]


@EXAMPLES
@given(
    st.lists(
        st.tuples(st.binary(min_size=14, max_size=200), st.integers(1, 2**63 - 1)),
        max_size=8,
    ),
    st.booleans(),
)
def test_ascii_round_trip(records: list[tuple[bytes, int]], timestamps: bool) -> None:
    frames = [Frame(data, stamp if timestamps else None) for data, stamp in records]
    encoder = AsciiEncoder(timestamps=timestamps)
    text = b"".join(encoder.encode(frame) for frame in frames)
    assert frames_of(decode_all(AsciiDecoder(), text)) == frames


# --------------------------------------------------------------------------
# Detection, readers and writers on file descriptors, filters


def test_detection_by_the_first_four_bytes() -> None:
    assert detect(pcap_stream([])) is StreamFormat.PCAP
    assert detect(pcap_stream([], TimePrecision.NANO)) is StreamFormat.PCAP
    assert detect(struct.pack(">I", 0xA1B2C3D4)) is StreamFormat.PCAP
    assert detect(b"FFFF") is StreamFormat.ASCII
    assert detect(b"\xd4\xc3") is None  # could still be a magic
    assert detect(b"F") is StreamFormat.ASCII  # cannot: decided at once
    assert detect(b"\n") is None  # the first byte of a pcapng magic
    assert detect(b"\nFF") is StreamFormat.ASCII


@pytest.mark.parametrize("format", list(StreamFormat))
def test_stream_decoder_detects_fed_a_byte_at_a_time(format: StreamFormat) -> None:
    if format is StreamFormat.PCAP:
        data = pcap_stream(FRAMES, TimePrecision.NANO)
    else:
        data = b"".join(AsciiEncoder(timestamps=True).encode(f) for f in FRAMES)
    decoder = StreamDecoder()
    events: list[object] = []
    for at in range(len(data)):
        events += decoder.feed(data[at : at + 1])
    events += decoder.end()
    assert decoder.format is format
    assert events == FRAMES


def test_a_stream_of_fewer_than_four_bytes_is_ascii() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(b"\xd4") == []
    assert decoder.format is None
    (skip,) = skips_of(decoder.end())
    assert skip.defect is Defect.NOT_HEX
    assert decoder.format is StreamFormat.ASCII


def reader_over(data: bytes, **kwargs: object) -> Iterator[Frame]:
    """A FrameReader on the read end of a real pipe that a thread fills with `data`."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as out:
            out.write(data)

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        yield from FrameReader(read_fd, **kwargs)  # type: ignore[arg-type]
    finally:
        thread.join(timeout=10)
        os.close(read_fd)


def test_frame_writer_writes_the_pcap_header_before_any_frame(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    with open(path, "wb") as out:
        writer = FrameWriter(out.fileno(), PcapEncoder())
        assert path.stat().st_size == 24
        writer.write(FRAMES)
        writer.write([])
    assert [bytes(p) for p in rdpcap(str(path))] == [f.data for f in FRAMES]
    assert writer.frames == 3


def test_a_frame_without_time_gets_the_writers_clock(tmp_path: Path) -> None:
    path = tmp_path / "out.pcap"
    with open(path, "wb") as out:
        FrameWriter(out.fileno(), PcapEncoder(), clock=lambda: T0).write([Frame(udp_frame())])
    (packet,) = rdpcap(str(path))
    assert int(packet.time) == T0 // 1_000_000_000


def run_through_filter(data: bytes, **kwargs: object) -> tuple[bytes, object]:
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    output = bytearray()

    def feed() -> None:
        with open(in_write, "wb") as out:
            out.write(data)

    def drain() -> None:
        with open(out_read, "rb") as source:
            output.extend(source.read())

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    try:
        result = run_filter(
            input_fd=in_read,
            output_fd=out_write,
            program="pktchain test",
            skips=SkipReport("pktchain test", stream=io.StringIO()),
            **kwargs,  # type: ignore[arg-type]
        )
    finally:
        os.close(in_read)
        os.close(out_write)
        for thread in threads:
            thread.join(timeout=10)
    return bytes(output), result


def test_filter_keeps_the_input_format_and_applies_the_function() -> None:
    data = pcap_stream(FRAMES)

    def keep_vlan(frame: Frame) -> list[Frame]:
        return [frame] if frame.data[12:14] == b"\x81\x00" else []

    output, result = run_through_filter(data, transform=keep_vlan)
    assert frames_of(decode_all(PcapDecoder(), output)) == [FRAMES[1]]
    assert output[:4] == data[:4]
    assert result == (3, 1, 0, None)


def test_filter_converts_ascii_to_pcap_and_stops_at_count() -> None:
    text = b"garbage\n" + b"".join(AsciiEncoder().encode(f) for f in FRAMES)
    output, result = run_through_filter(
        text,
        transform=lambda frame: [frame, frame],
        output_format=StreamFormat.PCAP,
        count=2,
        precision=TimePrecision.NANO,
    )
    frames = frames_of(decode_all(PcapDecoder(), output))
    assert [f.data for f in frames] == [FRAMES[0].data] * 2 + [FRAMES[1].data] * 2
    assert result == (2, 4, 1, None)
