"""Packet stream formats, sans-IO: pcap and EtherPIPE-style ASCII, decoded and encoded.

A pipe carries Ethernet frames as a byte stream in one of two formats
(docs/pipes.md states both exactly):

* **pcap**, the libpcap capture file format (``tcpdump -w -``, ``text2pcap``,
  Wireshark): a 24-byte file header, then per frame a 16-byte record header and
  the frame. Read with microsecond or nanosecond timestamps, in either byte
  order; written little-endian, LINKTYPE_ETHERNET, snaplen 262144.
* **ascii**, one frame per line as the EtherPIPE device printed them (/dev/stdpkt):
  destination MAC, source MAC, EtherType, then the rest as hex byte pairs, so
  that ``awk``, ``sed``, ``grep`` and ``tee`` work on a packet stream.

Nothing here reads or writes a file or a clock: decoders are fed bytes as they
arrive and return the frames (and the skipped lines or records) completed so
far; encoders turn frames into bytes. :class:`StreamDecoder` detects the format
from the first bytes. A malformed line or record is a :class:`Skipped` event
with a :class:`Defect`, and decoding goes on; only a pcap stream whose framing
is lost raises :class:`StreamFormatError`, since nothing after it can be found.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from pktchain.packet.layout import Field, Layout

__all__ = [
    "ETHERNET_HEADER_LEN",
    "LINKTYPE_ETHERNET",
    "MAX_FRAME",
    "MAX_LINE",
    "PCAP_FILE_HEADER",
    "PCAP_RECORD_HEADER",
    "PCAP_SNAPLEN",
    "AsciiDecoder",
    "AsciiEncoder",
    "Defect",
    "Frame",
    "FrameEncoder",
    "PcapDecoder",
    "PcapEncoder",
    "Skipped",
    "StreamDecoder",
    "StreamFormat",
    "StreamFormatError",
    "TimePrecision",
    "encoder_for",
]

ETHERNET_HEADER_LEN = 14
MAX_FRAME = 262144
"""Largest frame a stream may carry: libpcap's MAXIMUM_SNAPLEN, which also bounds
the 64 KB GSO (and larger BIG TCP) frames the kernel hands to a packet socket."""
PCAP_SNAPLEN = MAX_FRAME
LINKTYPE_ETHERNET = 1  # tcpdump.org link-layer header types: IEEE 802.3 Ethernet

MAX_LINE = 2 * 1024 * 1024
"""Longest ASCII line kept: a 262144-byte frame written as hex pairs with single
spaces needs 786 KB; the rest is room for the looser spacing a person may use."""


class StreamFormat(Enum):
    """How frames are laid out on a pipe."""

    PCAP = "pcap"
    ASCII = "ascii"


class TimePrecision(Enum):
    """Resolution of pcap timestamps, named as tcpdump's --time-stamp-precision."""

    MICRO = "micro"
    NANO = "nano"


class Frame(NamedTuple):
    """One Ethernet frame taken from or given to a stream.

    ``timestamp_ns`` is the capture time in nanoseconds since the Unix epoch, or
    None when the stream did not carry one (an ASCII line without the time
    column). ``wire_length`` is the frame's length on the wire when ``data`` is a
    truncated capture (pcap ``orig_len`` larger than ``incl_len``), else None.
    """

    data: bytes
    timestamp_ns: int | None = None
    wire_length: int | None = None

    @property
    def truncated(self) -> bool:
        """True when ``data`` holds only the first part of the frame."""
        return self.wire_length is not None and self.wire_length > len(self.data)


class Defect(Enum):
    """Why a line or record was skipped: the stream goes on after it."""

    NOT_HEX = "not hexadecimal byte pairs"
    TOO_SHORT = "shorter than an Ethernet header (14 bytes)"
    TOO_LONG = f"longer than {MAX_FRAME} bytes"
    LINE_TOO_LONG = f"line longer than {MAX_LINE} characters"
    INCOMPLETE = "the stream ends inside it"


class Skipped(NamedTuple):
    """A line (ASCII) or record (pcap) that held no usable frame.

    ``number`` counts lines or records from 1; ``offset`` is the byte offset of
    its start in the stream.
    """

    format: StreamFormat
    defect: Defect
    number: int
    offset: int
    detail: str = ""

    @property
    def where(self) -> str:
        """``line 12`` or ``record 7 (byte 1234)``."""
        if self.format is StreamFormat.ASCII:
            return f"line {self.number}"
        return f"record {self.number} (byte {self.offset})"

    def __str__(self) -> str:
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.where}: {self.defect.value}{detail}"


class StreamFormatError(Exception):
    """The input cannot be read any further (a pcap length that loses the framing,
    an unsupported file header). ``offset`` is the byte where the trouble starts."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"byte {offset}: {reason}")
        self.offset = offset
        self.reason = reason


Event = Frame | Skipped


# --------------------------------------------------------------------------
# pcap: https://www.tcpdump.org/manpages/pcap-savefile.5.html and
# draft-ietf-opsawg-pcap ("PCAP Capture File Format"), sections 4 and 5.

PCAP_MAGIC_MICRO = 0xA1B2C3D4
PCAP_MAGIC_NANO = 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A  # a pcapng Section Header Block, the same in both byte orders
PCAP_MAGIC_MODIFIED = 0xA1B2CD34  # Alexey Kuznetsov's patched libpcap: longer records


def _pcap_layouts(byte_order: str) -> tuple[Layout, Layout]:
    file_header = Layout(
        "pcap file header",
        "draft-ietf-opsawg-pcap §4 (File Header)",
        [
            Field("magic", 0, "I", "0xA1B2C3D4 (µs) or 0xA1B23C4D (ns), in the writer's order"),
            Field("version_major", 4, "H", "2"),
            Field("version_minor", 6, "H", "4"),
            Field("thiszone", 8, "I", "reserved, 0"),
            Field("sigfigs", 12, "I", "reserved, 0"),
            Field("snaplen", 16, "I", "largest captured length of any record"),
            Field("linktype", 20, "I", "LINKTYPE_*, low 16 bits; FCS length above"),
        ],
        byte_order=byte_order,
    )
    record_header = Layout(
        "pcap record header",
        "draft-ietf-opsawg-pcap §5 (Packet Record)",
        [
            Field("ts_sec", 0, "I", "seconds since the Unix epoch"),
            Field("ts_frac", 4, "I", "micro- or nanoseconds, by the magic"),
            Field("incl_len", 8, "I", "captured length: the bytes that follow"),
            Field("orig_len", 12, "I", "length on the wire"),
        ],
        byte_order=byte_order,
    )
    return file_header, record_header


PCAP_FILE_HEADER, PCAP_RECORD_HEADER = _pcap_layouts("<")
"""The layouts as pktchain writes them (little-endian, as libpcap on x86 and ARM)."""
_PCAP_BIG = _pcap_layouts(">")
_MAGIC_PREFIXES = tuple(
    PCAP_FILE_HEADER.accessor("magic").struct.pack(magic)
    for magic in (PCAP_MAGIC_MICRO, PCAP_MAGIC_NANO, PCAPNG_MAGIC, PCAP_MAGIC_MODIFIED)
) + tuple(
    _PCAP_BIG[0].accessor("magic").struct.pack(magic)
    for magic in (PCAP_MAGIC_MICRO, PCAP_MAGIC_NANO, PCAP_MAGIC_MODIFIED)
)


class PcapDecoder:
    """Incremental reader of a pcap stream: ``feed(bytes)`` returns the frames completed.

    The file header decides byte order and timestamp unit. A record too short to
    hold an Ethernet header is skipped; a record whose captured length exceeds
    262144 bytes means the framing is lost (a corrupt or non-pcap stream), and
    since a pcap stream has no markers to find the next record by, that raises
    :class:`StreamFormatError` naming the record's offset (once the frames before
    it have been returned).
    """

    format = StreamFormat.PCAP

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offset = 0  # stream offset of self._buf[0]
        self._record_struct = PCAP_RECORD_HEADER.struct
        self._frac_ns = 0  # nanoseconds per unit of ts_frac; 0 until the header is read
        self._records = 0
        self._error: StreamFormatError | None = None  # raised again on every later call
        self.snaplen = 0
        self.nanosecond = False
        self.byte_order = "<"

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return every frame (or skip) they complete."""
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        if not self._frac_ns:
            if len(buf) < PCAP_FILE_HEADER.size:
                return events
            self._read_file_header()
            pos = PCAP_FILE_HEADER.size
        unpack = self._record_struct.unpack_from
        header_size = 16
        end = len(buf)
        frac_ns = self._frac_ns
        while end - pos >= header_size:
            ts_sec, ts_frac, incl_len, orig_len = unpack(buf, pos)
            if incl_len > MAX_FRAME:
                self._error = StreamFormatError(
                    self._offset + pos,
                    f"record {self._records + 1} claims a captured length of {incl_len} bytes, "
                    f"more than {MAX_FRAME}: the stream is corrupt or not pcap, and a pcap "
                    f"stream cannot be resynchronised after a bad length",
                )
                if not events:
                    raise self._error
                break  # the frames before it first; the error on the next call
            stop = pos + header_size + incl_len
            if stop > end:
                break
            self._records += 1
            if incl_len < ETHERNET_HEADER_LEN:
                events.append(
                    Skipped(
                        StreamFormat.PCAP,
                        Defect.TOO_SHORT,
                        self._records,
                        self._offset + pos,
                        f"{incl_len} bytes",
                    )
                )
            else:
                events.append(
                    Frame(
                        bytes(buf[pos + header_size : stop]),
                        ts_sec * 1_000_000_000 + ts_frac * frac_ns,
                        orig_len if orig_len > incl_len else None,
                    )
                )
            pos = stop
        if pos:
            del buf[:pos]
            self._offset += pos
        return events

    def end(self) -> list[Event]:
        """The stream has ended: report a record (or file header) cut short."""
        if self._error is not None:
            raise self._error
        if not self._buf:
            return []
        if not self._frac_ns:
            raise StreamFormatError(
                0, f"the stream ends after {len(self._buf)} bytes, inside the pcap file header"
            )
        self._records += 1
        skipped = Skipped(
            StreamFormat.PCAP,
            Defect.INCOMPLETE,
            self._records,
            self._offset,
            f"{len(self._buf)} bytes of it arrived",
        )
        self._buf.clear()
        return [skipped]

    def _read_file_header(self) -> None:
        magic_bytes = bytes(self._buf[:4])
        for layouts in ((PCAP_FILE_HEADER, PCAP_RECORD_HEADER), _PCAP_BIG):
            file_header, record_header = layouts
            magic = file_header.accessor("magic").read_int(magic_bytes)
            if magic in (PCAP_MAGIC_MICRO, PCAP_MAGIC_NANO):
                break
        else:
            raise StreamFormatError(0, _not_pcap(magic_bytes))
        (_, major, minor, _, _, snaplen, linktype) = file_header.struct.unpack_from(self._buf)
        if major != 2:
            raise StreamFormatError(4, f"pcap version {major}.{minor}; only 2.x is defined")
        if linktype & 0xFFFF != LINKTYPE_ETHERNET:
            raise StreamFormatError(
                20,
                f"link type {linktype & 0xFFFF}: pipes carry Ethernet frames "
                f"(LINKTYPE_ETHERNET, {LINKTYPE_ETHERNET})",
            )
        self.byte_order = file_header.byte_order
        self.nanosecond = magic == PCAP_MAGIC_NANO
        self._frac_ns = 1 if self.nanosecond else 1000
        self.snaplen = snaplen
        self._record_struct = record_header.struct


def _not_pcap(magic: bytes) -> str:
    if magic == PCAP_FILE_HEADER.accessor("magic").struct.pack(PCAPNG_MAGIC):
        return "a pcapng stream: convert it first, e.g. `editcap -F pcap in.pcapng out.pcap`"
    if PCAP_MAGIC_MODIFIED.to_bytes(4, "little") in (magic, magic[::-1]):
        return "a 'modified' (Kuznetsov) pcap stream, which is not supported"
    return f"not a pcap file header (magic {magic.hex()})"


class PcapEncoder:
    """Writes a pcap stream: :meth:`header` once, then :meth:`encode` per frame.

    Frames longer than ``snaplen`` are truncated in the record (``orig_len``
    keeps the wire length), as libpcap does; a frame without a timestamp gets
    ``now_ns``.
    """

    format = StreamFormat.PCAP

    def __init__(
        self, *, precision: TimePrecision = TimePrecision.MICRO, snaplen: int = PCAP_SNAPLEN
    ) -> None:
        if not 1 <= snaplen <= MAX_FRAME:
            raise ValueError(f"snaplen {snaplen}: expected 1 to {MAX_FRAME}")
        self.precision = precision
        self.snaplen = snaplen
        self._divisor = 1 if precision is TimePrecision.NANO else 1000
        self._pack_record = PCAP_RECORD_HEADER.struct.pack

    def header(self) -> bytes:
        magic = PCAP_MAGIC_NANO if self.precision is TimePrecision.NANO else PCAP_MAGIC_MICRO
        return PCAP_FILE_HEADER.pack(
            magic=magic,
            version_major=2,
            version_minor=4,
            snaplen=self.snaplen,
            linktype=LINKTYPE_ETHERNET,
        )

    def encode(self, frame: Frame, now_ns: int = 0) -> bytes:
        """The record of one frame."""
        data = frame.data
        length = len(data)
        wire = frame.wire_length if frame.wire_length is not None else length
        if length > self.snaplen:
            data = data[: self.snaplen]
            length = self.snaplen
        stamp = frame.timestamp_ns if frame.timestamp_ns is not None else now_ns
        seconds, fraction = divmod(stamp, 1_000_000_000)
        # ts_sec is unsigned 32-bit (it runs out in 2106): a later time wraps, as in libpcap.
        header = self._pack_record(
            seconds & 0xFFFFFFFF, fraction // self._divisor, length, max(wire, length)
        )
        return header + data


# --------------------------------------------------------------------------
# ascii: the EtherPIPE line (docs/pipes.md, "The ASCII format", has the grammar).

_TIMESTAMP_DIGITS = 16
_WHITESPACE = " \t"


class AsciiDecoder:
    """Incremental reader of ASCII lines: ``feed(bytes)`` returns the frames of the
    lines completed.

    Lenient in what a person writes: hex digits of either case, any spaces or
    tabs between byte pairs, ``:`` between the bytes of a MAC address, an
    optional 16-digit timestamp column, blank lines, ``#`` comments, CRLF line
    ends, and a last line without a newline.
    """

    format = StreamFormat.ASCII

    def __init__(self) -> None:
        self._pending = b""
        self._line = 0
        self._offset = 0  # stream offset of the start of self._pending
        self._discarding = False  # inside an overlong line, until its newline

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return every frame (or skip) they complete."""
        events: list[Event] = []
        chunk = self._pending + data if self._pending else data
        lines = chunk.split(b"\n")
        self._pending = lines.pop()
        for raw in lines:
            self._line += 1
            if self._discarding:
                self._discarding = False
            else:
                event = decode_line(raw, self._line, self._offset)
                if event is not None:
                    events.append(event)
            self._offset += len(raw) + 1
        if len(self._pending) > MAX_LINE:
            if not self._discarding:
                events.append(
                    Skipped(StreamFormat.ASCII, Defect.LINE_TOO_LONG, self._line + 1, self._offset)
                )
                self._discarding = True
            self._offset += len(self._pending)
            self._pending = b""
        return events

    def end(self) -> list[Event]:
        """The stream has ended: decode a last line that has no newline."""
        if self._discarding or not self._pending:
            return []
        self._line += 1
        event = decode_line(self._pending, self._line, self._offset)
        self._offset += len(self._pending)
        self._pending = b""
        return [] if event is None else [event]


def decode_line(raw: bytes, line: int = 1, offset: int = 0) -> Frame | Skipped | None:
    """The frame of one ASCII line, a :class:`Skipped` if malformed, None if blank or a comment."""
    text = raw.decode("latin-1")  # every byte maps: a stray byte fails below as "not hex"
    comment = text.find("#")
    if comment >= 0:
        text = text[:comment]
    body = text.lstrip()
    if not body:
        return None
    column = len(text) - len(body)  # where `body` starts in the line, for error reports
    timestamp: int | None = None
    if len(body) > _TIMESTAMP_DIGITS and body[_TIMESTAMP_DIGITS] in _WHITESPACE:
        stamp = _hex_field(body[:_TIMESTAMP_DIGITS])
        if stamp is not None:
            timestamp = stamp or None  # all zeros: time unknown (/dev/stdpkt's lines)
            column += _TIMESTAMP_DIGITS + 1
            body = body[_TIMESTAMP_DIGITS + 1 :]
    if ":" in body:
        body = body.replace(":", " ")
    try:
        data = bytes.fromhex(body)
    except ValueError as exc:
        return Skipped(
            StreamFormat.ASCII, Defect.NOT_HEX, line, offset, _fromhex_column(exc, column)
        )
    if len(data) < ETHERNET_HEADER_LEN:
        return Skipped(StreamFormat.ASCII, Defect.TOO_SHORT, line, offset, f"{len(data)} bytes")
    if len(data) > MAX_FRAME:
        return Skipped(StreamFormat.ASCII, Defect.TOO_LONG, line, offset, f"{len(data)} bytes")
    return Frame(data, timestamp)


def _hex_field(text: str) -> int | None:
    """The value of a field of hex digits only (``int(_, 16)`` would take ``0x``, ``_``, ``+``)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        return None
    if len(value) * 2 != len(text):  # bytes.fromhex skips spaces: the field had some
        return None
    return int.from_bytes(value, "big")


def _fromhex_column(exc: ValueError, base: int) -> str:
    """``column N`` from bytes.fromhex's "... at position N" message (1-based for people)."""
    message = str(exc)
    _, found, position = message.rpartition("position ")
    if found and position.isdigit():
        return f"column {base + int(position) + 1}"
    return message


class AsciiEncoder:
    """Writes one line per frame, in the canonical layout of docs/pipes.md.

    Upper-case hex as the EtherPIPE device printed it: destination and source
    MAC as 12 digits each, the EtherType as 4; each VLAN tag as its TPID, the
    two TCI bytes and the next EtherType (so ``sed 's/8100 00 01 //'`` leaves
    the line of the untagged frame); then every remaining byte as a pair, single
    spaces between fields. With ``timestamps``, a first column of 16 digits holds
    the capture time in nanoseconds since the epoch (``now_ns`` if the frame has
    none).
    """

    format = StreamFormat.ASCII

    def __init__(self, *, timestamps: bool = False) -> None:
        # Imported here: a stream reader (`pipe write`) has no use for the header table.
        from pktchain.packet.headers import EtherType

        self.timestamps = timestamps
        self._tpids = frozenset({EtherType.VLAN, EtherType.QINQ, EtherType.QINQ_LEGACY})

    def header(self) -> bytes:
        return b""

    def encode(self, frame: Frame, now_ns: int = 0) -> bytes:
        """The line of one frame, newline included."""
        data = frame.data
        digits = data[:ETHERNET_HEADER_LEN].hex().upper()
        fields = [digits[0:12], digits[12:24]]
        if self.timestamps:
            stamp = frame.timestamp_ns if frame.timestamp_ns is not None else now_ns
            fields.insert(0, f"{stamp:016X}")
        fields.append(digits[24:28])
        at = 12  # offset of the EtherType just written
        # A tag: TPID already written; TCI as two bytes, then the next EtherType.
        while int.from_bytes(data[at : at + 2], "big") in self._tpids and len(data) >= at + 6:
            tag = data[at + 2 : at + 6].hex().upper()
            fields += (tag[0:2], tag[2:4], tag[4:8])
            at += 4
        rest = data[at + 2 :]
        if rest:
            fields.append(rest.hex(" ").upper())
        return (" ".join(fields) + "\n").encode("ascii")


FrameEncoder = PcapEncoder | AsciiEncoder


def encoder_for(
    format: StreamFormat,
    *,
    timestamps: bool = False,
    precision: TimePrecision = TimePrecision.MICRO,
    snaplen: int = PCAP_SNAPLEN,
) -> FrameEncoder:
    """The encoder of ``format``; the options that do not apply to it are ignored."""
    if format is StreamFormat.PCAP:
        return PcapEncoder(precision=precision, snaplen=snaplen)
    return AsciiEncoder(timestamps=timestamps)


# --------------------------------------------------------------------------
# Auto-detection (first 4 bytes a pcap magic: pcap, else ascii).


class StreamDecoder:
    """A decoder of either format; with ``format=None`` the first bytes decide.

    The first four bytes of a pcap stream are its magic number in either byte
    order (a pcapng or "modified pcap" magic counts, so that the pcap decoder
    names what it is rather than the ASCII decoder reporting every line). Bytes
    that cannot begin a magic settle it as ASCII at once, so an interactive
    user typing lines is never kept waiting.
    """

    def __init__(self, format: StreamFormat | None = None) -> None:
        self._decoder: PcapDecoder | AsciiDecoder | None = None
        self._head = b""
        if format is not None:
            self._decoder = PcapDecoder() if format is StreamFormat.PCAP else AsciiDecoder()

    @property
    def format(self) -> StreamFormat | None:
        """The stream's format, None until enough bytes have arrived to tell."""
        return None if self._decoder is None else self._decoder.format

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the stream; return every frame (or skip) they complete."""
        if self._decoder is None:
            head = self._head + data
            format = detect(head)
            if format is None:
                self._head = head
                return []
            self._head = b""
            self._decoder = PcapDecoder() if format is StreamFormat.PCAP else AsciiDecoder()
            data = head
        return self._decoder.feed(data)

    def end(self) -> list[Event]:
        """The stream has ended: the last partial line or record, if any."""
        if self._decoder is None:
            if not self._head:
                return []
            self._decoder = AsciiDecoder()  # fewer than 4 bytes: not a pcap header
            return [*self._decoder.feed(self._head), *self._decoder.end()]
        return self._decoder.end()


def detect(head: bytes) -> StreamFormat | None:
    """The format whose stream starts with ``head``, None if 4 bytes are needed to tell."""
    if len(head) >= 4:
        return StreamFormat.PCAP if head[:4] in _MAGIC_PREFIXES else StreamFormat.ASCII
    if any(magic.startswith(head) for magic in _MAGIC_PREFIXES):
        return None
    return StreamFormat.ASCII
