"""Header layouts declared once and compiled into struct accessors.

A :class:`Layout` is the single statement of a header's wire format: an ordered
list of byte-aligned :class:`Field` (name, byte offset, :mod:`struct` code) and
the :class:`Bits` packed inside them, with the RFC figure it follows. From that
declaration the layout compiles one precompiled :class:`struct.Struct` for the
whole fixed part (one ``unpack_from`` call per header on the fast path) and one
:class:`Accessor` per field or bit field (used by the view classes and by
in-place rewrites). Nothing else in :mod:`pktchain.packet` spells a header
offset as a number.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from pktchain.packet.address import Buffer

__all__ = ["Accessor", "Bits", "Field", "Layout"]

_INT_SIZES = {"B": 1, "H": 2, "I": 4, "Q": 8}


class Field(NamedTuple):
    """A byte-aligned field: ``code`` is one struct code (B, H, I, Q) or ``<n>s``."""

    name: str
    offset: int
    code: str
    doc: str = ""

    @property
    def size(self) -> int:
        """Width of the field in bytes."""
        if self.code in _INT_SIZES:
            return _INT_SIZES[self.code]
        if self.code.endswith("s") and self.code[:-1].isdigit():
            return int(self.code[:-1])
        raise ValueError(f"field {self.name!r}: unsupported struct code {self.code!r}")

    @property
    def is_bytes(self) -> bool:
        """True for an octet string (``<n>s``), False for an unsigned integer."""
        return self.code.endswith("s")


class Bits(NamedTuple):
    """A bit field inside integer field ``field``: ``width`` bits, ``shift`` from bit 0 (LSB)."""

    name: str
    field: str
    shift: int
    width: int
    doc: str = ""

    @property
    def mask(self) -> int:
        """The bits of the containing field that belong to this bit field."""
        return ((1 << self.width) - 1) << self.shift


class Accessor(NamedTuple):
    """Compiled reader/writer of one field or bit field, relative to the header start.

    For a whole integer field ``shift`` is 0 and ``mask`` covers the field; for an
    octet string ``mask`` is 0 and ``size`` is its length.
    """

    name: str
    offset: int
    size: int
    struct: struct.Struct
    shift: int
    mask: int
    is_bytes: bool

    def read(self, buf: Buffer, base: int = 0) -> int | bytes:
        """Read the field of the header starting at ``base``."""
        value: int | bytes = self.struct.unpack_from(buf, base + self.offset)[0]
        if isinstance(value, int):
            return (value & self.mask) >> self.shift
        return value

    def read_int(self, buf: Buffer, base: int = 0) -> int:
        """Read an integer field or bit field of the header starting at ``base``."""
        value: int = self.struct.unpack_from(buf, base + self.offset)[0]
        return (value & self.mask) >> self.shift

    def read_bytes(self, buf: Buffer, base: int = 0) -> bytes:
        """Read an octet-string field of the header starting at ``base``."""
        value: bytes = self.struct.unpack_from(buf, base + self.offset)[0]
        return value

    def write(self, buf: Buffer, base: int, value: int | bytes) -> None:
        """Write the field in place; ``buf`` must be writable (bytearray, memoryview)."""
        if self.is_bytes:
            if not isinstance(value, bytes | bytearray | memoryview) or len(value) != self.size:
                raise ValueError(f"{self.name}: expected {self.size} bytes, got {value!r}")
            self.struct.pack_into(buf, base + self.offset, bytes(value))
            return
        if not isinstance(value, int) or value < 0 or value > self.mask >> self.shift:
            raise ValueError(f"{self.name}: {value!r} does not fit in the field")
        if self.mask == self.full_mask:
            self.struct.pack_into(buf, base + self.offset, value)
            return
        old: int = self.struct.unpack_from(buf, base + self.offset)[0]
        self.struct.pack_into(buf, base + self.offset, (old & ~self.mask) | (value << self.shift))

    @property
    def full_mask(self) -> int:
        """All ones over the containing field (0 for an octet string)."""
        return 0 if self.is_bytes else (1 << (8 * self.struct.size)) - 1


class Layout:
    """The fixed part of one header, declared once (see the module docstring).

    ``struct`` unpacks the whole fixed part in field order; ``index(name)`` is the
    position of a field in that tuple; ``accessor(name)`` reads or writes one field
    or bit field in place; ``pack(**values)`` encodes a header from field and bit
    field values (missing ones are 0).
    """

    __slots__ = (
        "_accessors",
        "_bits",
        "_index",
        "byte_order",
        "fields",
        "name",
        "reference",
        "struct",
    )

    def __init__(
        self,
        name: str,
        reference: str,
        fields: Sequence[Field],
        bits: Sequence[Bits] = (),
        byte_order: str = "!",
    ) -> None:
        self.name = name
        self.reference = reference
        self.fields = tuple(fields)
        self.byte_order = byte_order
        self._index: dict[str, int] = {}
        self._accessors: dict[str, Accessor] = {}
        self._bits: dict[str, Bits] = {}
        position = 0
        for i, f in enumerate(self.fields):
            if f.offset != position:
                raise ValueError(f"{name}.{f.name}: offset {f.offset}, expected {position}")
            if f.name in self._index:
                raise ValueError(f"{name}.{f.name}: declared twice")
            position += f.size
            self._index[f.name] = i
            full = 0 if f.is_bytes else (1 << (8 * f.size)) - 1
            self._accessors[f.name] = Accessor(
                f.name, f.offset, f.size, struct.Struct(byte_order + f.code), 0, full, f.is_bytes
            )
        for b in bits:
            holder = self._accessors.get(b.field)
            if holder is None or holder.is_bytes:
                raise ValueError(f"{name}.{b.name}: no integer field {b.field!r}")
            if b.shift < 0 or b.shift + b.width > 8 * holder.size or b.name in self._accessors:
                raise ValueError(f"{name}.{b.name}: does not fit in {b.field!r} or is a duplicate")
            self._bits[b.name] = b
            self._accessors[b.name] = Accessor(
                b.name, holder.offset, holder.size, holder.struct, b.shift, b.mask, False
            )
        self.struct: struct.Struct = struct.Struct(byte_order + "".join(f.code for f in fields))

    @property
    def size(self) -> int:
        """Length of the fixed part in bytes."""
        return self.struct.size

    @property
    def names(self) -> tuple[str, ...]:
        """Every field and bit field name, in declaration order."""
        return tuple(self._accessors)

    def index(self, name: str) -> int:
        """Position of byte-aligned field ``name`` in the tuple of :attr:`struct`."""
        return self._index[name]

    def accessor(self, name: str) -> Accessor:
        """The compiled accessor of field or bit field ``name``."""
        try:
            return self._accessors[name]
        except KeyError:
            raise KeyError(f"{self.name} has no field {name!r}") from None

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` (of its containing field for a bit field)."""
        return self.accessor(name).offset

    def unpack(self, buf: Buffer, offset: int = 0) -> dict[str, int | bytes]:
        """Every field and bit field of the header at ``offset``, by name (slow path)."""
        return {name: acc.read(buf, offset) for name, acc in self._accessors.items()}

    def pack(self, **values: int | bytes) -> bytes:
        """Encode the fixed part; raises ValueError naming any unknown or oversized field."""
        words: dict[str, int | bytes] = {
            f.name: (b"\0" * f.size if f.is_bytes else 0) for f in self.fields
        }
        for key, value in values.items():
            acc = self._accessors.get(key)
            if acc is None:
                raise ValueError(f"{self.name} has no field {key!r}")
            if acc.is_bytes:
                if not isinstance(value, bytes) or len(value) != acc.size:
                    raise ValueError(f"{self.name}.{key}: expected {acc.size} bytes")
                words[key] = value
                continue
            if not isinstance(value, int) or value < 0 or value > acc.mask >> acc.shift:
                raise ValueError(f"{self.name}.{key}: {value!r} does not fit")
            holder = self._bits[key].field if key in self._bits else key
            current = words[holder]
            if not isinstance(current, int):  # pragma: no cover - checked at declaration
                raise TypeError(holder)
            words[holder] = (current & ~acc.mask) | (value << acc.shift)
        return self.struct.pack(*(words[f.name] for f in self.fields))

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.size} bytes, {self.reference!r})"
