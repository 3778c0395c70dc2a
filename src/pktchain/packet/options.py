"""IPv4 and TCP options: the kind-length-value lists after the fixed headers.

IPv4 options (RFC 791 §3.1 "Options") and TCP options (RFC 9293 §3.1, §3.2)
share one encoding: kind 0 (End of Option List) and kind 1 (No-Operation) are a
single byte; every other option is kind, length (counting these two bytes),
then ``length - 2`` bytes of data. The option area is padded with zeros to a
multiple of 4 bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pktchain.packet.address import Buffer

__all__ = [
    "END_OF_OPTIONS",
    "NO_OPERATION",
    "Option",
    "encode_options",
    "options_well_formed",
    "parse_options",
]

END_OF_OPTIONS = 0
NO_OPERATION = 1


class Option(NamedTuple):
    """One option: ``kind`` (the full IPv4 type byte, or the TCP kind) and its data."""

    kind: int
    data: bytes = b""


def parse_options(buf: Buffer, start: int, end: int) -> tuple[tuple[Option, ...], bool]:
    """The options in ``buf[start:end]`` and whether they were well formed.

    Parsing stops at End of Option List (which is returned, the padding after
    it is not). A length below 2 or one running past ``end`` makes the second
    value False; the options before it are still returned. Never raises.
    """
    options: list[Option] = []
    end = min(end, len(buf))
    p = start
    while p < end:
        kind = buf[p]
        if kind == END_OF_OPTIONS:
            options.append(Option(END_OF_OPTIONS))
            return tuple(options), True
        if kind == NO_OPERATION:
            options.append(Option(NO_OPERATION))
            p += 1
            continue
        if p + 1 >= end:
            return tuple(options), False
        length = buf[p + 1]
        if length < 2 or p + length > end:
            return tuple(options), False
        options.append(Option(kind, bytes(buf[p + 2 : p + length])))
        p += length
    return tuple(options), True


def options_well_formed(buf: Buffer, start: int, end: int) -> bool:
    """Whether ``buf[start:end]`` is a well-formed option list (no allocation)."""
    p = start
    while p < end:
        kind = buf[p]
        if kind == END_OF_OPTIONS:
            return True
        if kind == NO_OPERATION:
            p += 1
            continue
        if p + 1 >= end:
            return False
        length = buf[p + 1]
        if length < 2:
            return False
        p += length
    return p == end


def encode_options(options: Iterable[Option | tuple[int, bytes]]) -> bytes:
    """The wire form of ``options``, zero-padded to a multiple of 4 bytes.

    Raises ValueError for an option whose data does not fit a one-byte length.
    """
    out = bytearray()
    for kind, data in options:
        if kind in (END_OF_OPTIONS, NO_OPERATION):
            if data:
                raise ValueError(f"option kind {kind} is a single byte and carries no data")
            out.append(kind)
            continue
        if not 0 <= kind <= 255 or len(data) > 253:
            raise ValueError(f"option kind {kind}: kind or {len(data)}-byte data out of range")
        out += bytes((kind, len(data) + 2)) + data
    out += bytes(-len(out) % 4)
    return bytes(out)
