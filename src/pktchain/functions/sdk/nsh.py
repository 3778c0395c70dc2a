"""NSH-aware service functions: the packet they see, their base class, the core that runs them.

An NSH-aware function (RFC 8300 §4: a service function that reads and writes
the NSH) runs in a process of its own, on any node, in any language; docs/nsh.md
is the wire contract. This module is that contract for Python, sans-IO like
the rest of the SDK:

* :class:`NshPacket` is one packet as a function sees it: the service path
  (``spi``, ``si``), ``ttl``, the MD type, the MD type 1 ``context`` or the MD
  type 2 ``tlvs`` (a list of :class:`~pktchain.packet.nsh.ContextTlv`, in wire
  order), and the ``inner`` frame; :meth:`NshPacket.add_tlv` appends metadata
  and :meth:`NshPacket.encode` writes the NSH again with its Length right;
* :class:`NshFunction` is the class to subclass: a configuration dataclass
  checked all at once (as for :class:`~pktchain.functions.sdk.Function`),
  counters, and :meth:`NshFunction.process`, which returns the packet to send
  on, an :class:`NshDrop` with a reason, or None;
* :class:`NshDriver` does for every function what the contract leaves out of
  it, whatever the transport: it parses NSH over Ethernet
  (:meth:`NshDriver.receive_ethernet`) or over VXLAN-GPE
  (:meth:`NshDriver.receive_gpe`), drops a malformed packet under a named
  reason before the function sees it, takes one off the service index of what
  the function sends on (unless the function reclassified it), carries every
  TLV the function did not touch unchanged, counts every drop and turns an
  exception into a counted ``function-error``. It answers with the bytes to
  send back; the transports (``pktchain nsh-fn``, :mod:`pktchain.pipe.nsh_fn`)
  move them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, Self

from pktchain.functions.sdk.contract import C, NoConfig, import_class
from pktchain.functions.sdk.schema import describe, load_config
from pktchain.packet.address import Buffer
from pktchain.packet.flow import FlowKey, flow_key
from pktchain.packet.headers import (
    ETHERNET,
    NSH,
    EtherType,
    GpeNextProtocol,
    NshMdType,
    NshNextProtocol,
)
from pktchain.packet.nsh import (
    NSH_MAX_LENGTH,
    NSH_TTL,
    PKTCHAIN_MD_CLASS,
    TLV_MAX_VALUE,
    ContextTlv,
    PktchainTlv,
    build_nsh,
    encode_context_tlvs,
    parse_context_tlvs,
    parse_inner,
    parse_nsh,
    parse_offload_tlv,
    parse_path_tlv,
    parse_vxlan_gpe,
)
from pktchain.packet.parse import FrameInfo, Malformed
from pktchain.packet.virtio import VirtioNetHdr

__all__ = [
    "NSH_FUNCTIONS",
    "NshDriver",
    "NshDrop",
    "NshDropReason",
    "NshFunction",
    "NshPacket",
    "NshVerdict",
    "make_nsh_function",
    "nsh_function_class",
]

_FIXED = int(NshMdType.FIXED)
_VARIABLE = int(NshMdType.VARIABLE)
_NSH_ETHERTYPE = int(EtherType.NSH)
_GPE_NSH = int(GpeNextProtocol.NSH)
_ETH_SIZE = ETHERNET.size
_DST = ETHERNET.accessor("dst")
_SRC = ETHERNET.accessor("src")
_unpack_ethertype = ETHERNET.accessor("ethertype").struct.unpack_from
_ETHERTYPE_OFFSET = ETHERNET.accessor("ethertype").offset
_NSH_SIZE = NSH.size


class NshDropReason(StrEnum):
    """Why the driver dropped a packet before or after the function (besides the
    codec's :class:`~pktchain.packet.parse.Malformed` reasons, ``truncated-nsh``...)."""

    NOT_NSH = "not-nsh"
    """An Ethernet frame whose EtherType is not 0x894F."""
    GPE_NOT_NSH = "gpe-not-nsh"
    """A VXLAN-GPE datagram whose next protocol is not NSH (4)."""
    UNSUPPORTED_MD_TYPE = "unsupported-md-type"
    """An MD type other than 1 or 2 (RFC 8300 §2.2: 0xF is for experiments)."""
    SI_EXHAUSTED = "service-index-exhausted"
    """SI 0: the packet has no service function left to visit (RFC 8300 §2.3)."""
    DROPPED = "dropped"
    """The function returned None."""
    FUNCTION_ERROR = "function-error"
    """The function raised; the packet is lost, the function keeps running."""
    ENCODE_ERROR = "encode-error"
    """What the function returned cannot be encoded (an NSH over 252 bytes, a field
    out of range)."""


class NshPacket:
    """One NSH packet as a function sees it: service path, metadata and the inner frame.

    Everything is a plain attribute the function may change: ``spi`` and ``si``
    (changing either is a reclassification, sent as set; left alone, the
    driver sends the packet on with ``si`` one less), ``context`` (MD type 1:
    16 bytes carried unchanged unless changed), ``tlvs`` (MD type 2: every
    context header in wire order, the unknown ones included; keep those),
    ``inner`` (the encapsulated frame, whose length may change). ``ttl`` is the
    forwarders' business (RFC 8300 §2.2): a function leaves it.
    """

    __slots__ = ("context", "inner", "md_type", "next_protocol", "oam", "si", "spi", "tlvs", "ttl")

    def __init__(
        self,
        spi: int,
        si: int,
        *,
        ttl: int = NSH_TTL,
        md_type: int = _VARIABLE,
        context: bytes = b"",
        tlvs: Iterable[ContextTlv] = (),
        inner: bytes = b"",
        next_protocol: int = NshNextProtocol.ETHERNET,
        oam: bool = False,
    ) -> None:
        self.spi = spi
        self.si = si
        self.ttl = ttl
        self.md_type = md_type
        self.context = context if context or md_type != _FIXED else bytes(16)
        self.tlvs: list[ContextTlv] = list(tlvs)
        self.inner = inner
        self.next_protocol = next_protocol
        self.oam = oam

    @classmethod
    def decode(cls, buf: Buffer, offset: int = 0) -> NshPacket | str:
        """The packet whose NSH starts at ``offset``; or, for a malformed one, why
        (a :class:`~pktchain.packet.parse.Malformed` or :class:`NshDropReason` value).
        Never raises."""
        info = parse_nsh(buf, offset)
        if info.error is not None:
            return info.error.value
        if info.md_type == _VARIABLE:
            tlvs, error = parse_context_tlvs(buf, info.context, info.inner)
            if error is not None:  # pragma: no cover - parse_nsh checked them
                return error.value
            context = b""
        elif info.md_type == _FIXED:
            tlvs, context = (), bytes(buf[info.context : info.inner])
        else:
            return NshDropReason.UNSUPPORTED_MD_TYPE.value
        return cls(
            info.spi,
            info.si,
            ttl=info.ttl,
            md_type=info.md_type,
            context=context,
            tlvs=tlvs,
            inner=bytes(buf[info.inner :]),
            next_protocol=info.next_protocol,
            oam=info.oam,
        )

    # -- metadata ------------------------------------------------------------
    def tlv(self, md_class: int, tlv_type: int) -> ContextTlv | None:
        """The first context header of that class and type, or None."""
        for tlv in self.tlvs:
            if tlv.md_class == md_class and tlv.type == tlv_type:
                return tlv
        return None

    def add_tlv(self, md_class: int, tlv_type: int, value: bytes = b"") -> bool:
        """Append a context header after the others; False (nothing added) when the
        NSH would pass 252 bytes (RFC 8300 §2.2).

        Raises ValueError for an MD type 1 packet (it has no room for TLVs), a
        class or type out of range, or a value over 127 bytes: the caller's
        mistakes, whatever the packet.
        """
        if self.md_type != _VARIABLE:
            raise ValueError("add_tlv: an MD type 1 packet carries a fixed context, not TLVs")
        if not 0 <= md_class <= 0xFFFF or not 0 <= tlv_type <= 0xFF:
            raise ValueError(f"add_tlv: class {md_class!r} / type {tlv_type!r} out of range")
        if len(value) > TLV_MAX_VALUE:
            raise ValueError(f"add_tlv: value: at most 127 bytes, got {len(value)}")
        tlv = ContextTlv(md_class, tlv_type, bytes(value))
        if self.header_length + tlv.wire_length > NSH_MAX_LENGTH:
            return False
        self.tlvs.append(tlv)
        return True

    @property
    def path(self) -> tuple[int, ...] | None:
        """The hop tags of pktchain's path context header, if the packet carries one."""
        tlv = self.tlv(PKTCHAIN_MD_CLASS, PktchainTlv.PATH)
        return None if tlv is None else parse_path_tlv(tlv.value)

    @property
    def offload(self) -> VirtioNetHdr | None:
        """The inner frame's ``virtio_net_hdr`` (GSO, partial checksum), if it has one."""
        tlv = self.tlv(PKTCHAIN_MD_CLASS, PktchainTlv.OFFLOAD)
        return None if tlv is None else parse_offload_tlv(tlv.value)

    # -- the inner frame -----------------------------------------------------
    def inner_info(self) -> FrameInfo:
        """The inner packet's parse (an Ethernet frame, or IPv4/IPv6 by next protocol)."""
        return parse_inner(self.inner, self.next_protocol, 0)

    def flow(self) -> FlowKey | None:
        """The inner packet's 5-tuple, or None when it is not a well-formed IP packet."""
        return flow_key(self.inner_info())

    # -- encoding ------------------------------------------------------------
    @property
    def header_length(self) -> int:
        """Bytes of the NSH as :meth:`encode` would write it."""
        if self.md_type == _FIXED:
            return _NSH_SIZE + len(self.context)
        return _NSH_SIZE + sum(tlv.wire_length for tlv in self.tlvs)

    def encode(self) -> bytes:
        """The NSH followed by the inner frame. Raises ValueError naming the field that
        cannot be written (an NSH over 252 bytes, a value out of range)."""
        if self.md_type == _FIXED:
            header = build_nsh(
                self.spi,
                self.si,
                ttl=self.ttl,
                md_type=_FIXED,
                context=self.context,
                next_protocol=self.next_protocol,
                oam=self.oam,
            )
        else:
            header = build_nsh(
                self.spi,
                self.si,
                ttl=self.ttl,
                md_type=self.md_type,
                tlvs=encode_context_tlvs(self.tlvs),
                next_protocol=self.next_protocol,
                oam=self.oam,
            )
        return header + self.inner

    def __len__(self) -> int:
        return self.header_length + len(self.inner)

    def __repr__(self) -> str:
        return (
            f"NshPacket(spi={self.spi}, si={self.si}, ttl={self.ttl}, md_type={self.md_type}, "
            f"tlvs={len(self.tlvs)}, inner={len(self.inner)} bytes)"
        )


@dataclass(frozen=True, slots=True)
class NshDrop:
    """What :meth:`NshFunction.process` returns to discard the packet, counted under `reason`."""

    reason: str


NshVerdict = NshPacket | NshDrop | None
"""What a function does with a packet: send this packet on, drop it with a reason,
or (None) drop it, counted as ``dropped``."""


class NshFunction(Generic[C]):
    """Base class of NSH-aware functions; subclass it and override :meth:`process`.

    As for :class:`~pktchain.functions.sdk.Function`: ``KIND`` names it,
    ``Config`` is its frozen configuration dataclass (checked all at once by
    :meth:`from_config`), ``COUNTERS`` the counters it keeps (shown at zero).
    The driver counts drops (the function never counts the reason it returns).
    """

    KIND: ClassVar[str] = ""
    Config: ClassVar[type[Any]] = NoConfig
    COUNTERS: ClassVar[Mapping[str, str] | tuple[str, ...]] = ()

    def __init__(self, config: C | None = None) -> None:
        self.config: C = self.Config() if config is None else config
        self.counters: Counter[str] = Counter(dict.fromkeys(self.COUNTERS, 0))

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None = None) -> Self:
        """Build from a configuration mapping; ConfigError lists every wrong field."""
        return cls(load_config(cls.Config, data, subject=f"{cls.kind()} configuration"))

    @classmethod
    def kind(cls) -> str:
        return cls.KIND or f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def schema(cls) -> list[dict[str, Any]]:
        """The configuration schema as data (:func:`~pktchain.functions.sdk.schema.describe`)."""
        return describe(cls.Config)

    def process(self, packet: NshPacket, now: float) -> NshVerdict:
        """Handle one packet. Return it (changed or not) to send it on, an
        :class:`NshDrop` to discard it with a reason, or None.

        Never raise for a bad inner packet: drop it with a reason.
        """
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        """What the stats show: the kind and counters, plus a function's own tables."""
        return {"kind": self.kind(), "counters": dict(self.counters)}


NSH_FUNCTIONS: dict[str, str] = {"stamp": "pktchain.functions.nshstamp:NshStamp"}
"""Built-in NSH-aware functions and where they live (imported on first use)."""


def nsh_function_class(kind: str) -> type[NshFunction]:
    """The class for a built-in kind or a ``package.module:ClassName`` path;
    FunctionLoadError saying why not."""
    return import_class(kind, NshFunction, NSH_FUNCTIONS, "an NshFunction class")


def make_nsh_function(kind: str, config: Mapping[str, Any] | None = None) -> NshFunction:
    """Load and build an NSH-aware function; FunctionLoadError or ConfigError on bad input."""
    return nsh_function_class(kind).from_config(config)


class NshDriver:
    """Runs one NSH-aware function: parsing, service index, counting (see the module).

    ``packets_in``/``bytes_in`` count everything received, ``packets_out``/
    ``bytes_out`` what was answered; ``drops`` every packet that was not, by
    reason; ``errors`` the exceptions the function raised, by name. A transport
    that fails to send an answer reports it with :meth:`lost`.
    """

    def __init__(
        self, function: NshFunction, *, on_error: Callable[[str, str], None] | None = None
    ) -> None:
        self.function = function
        self.packets_in = 0
        self.bytes_in = 0
        self.packets_out = 0
        self.bytes_out = 0
        self.drops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._on_error = on_error

    def receive_ethernet(self, frame: Buffer, now: float) -> bytes | None:
        """The answer to one Ethernet frame carrying NSH (EtherType 0x894F): the
        processed packet, addressed back to the frame's sender from the MAC it was
        sent to; None when it is dropped."""
        self.packets_in += 1
        self.bytes_in += len(frame)
        if len(frame) < _ETH_SIZE:
            self._drop(Malformed.TRUNCATED_ETHERNET.value)
            return None
        if _unpack_ethertype(frame, _ETHERTYPE_OFFSET)[0] != _NSH_ETHERTYPE:
            self._drop(NshDropReason.NOT_NSH.value)
            return None
        out = self._process(frame, _ETH_SIZE, now)
        if out is None:
            return None
        answer = (
            _SRC.read_bytes(frame)
            + _DST.read_bytes(frame)
            + bytes(frame[_ETHERTYPE_OFFSET:_ETH_SIZE])
            + out
        )
        return self._sent(answer)

    def receive_gpe(self, datagram: Buffer, now: float) -> bytes | None:
        """The answer to one VXLAN-GPE datagram (a UDP payload) carrying NSH: the
        processed packet behind the same VXLAN-GPE header; None when it is dropped."""
        self.packets_in += 1
        self.bytes_in += len(datagram)
        gpe = parse_vxlan_gpe(datagram)
        if gpe.error is not None:
            self._drop(gpe.error.value)
            return None
        if gpe.next_protocol != _GPE_NSH:
            self._drop(NshDropReason.GPE_NOT_NSH.value)
            return None
        out = self._process(datagram, gpe.inner, now)
        if out is None:
            return None
        return self._sent(bytes(datagram[: gpe.inner]) + out)

    def lost(self, reason: str, size: int) -> None:
        """An answer the transport could not send: no longer counted as out, but dropped."""
        self.packets_out -= 1
        self.bytes_out -= size
        self.drops[reason] += 1

    def _process(self, buf: Buffer, offset: int, now: float) -> bytes | None:
        packet = NshPacket.decode(buf, offset)
        if isinstance(packet, str):
            self._drop(packet)
            return None
        if packet.si == 0:
            self._drop(NshDropReason.SI_EXHAUSTED.value)
            return None
        spi, si = packet.spi, packet.si
        function = self.function
        try:
            verdict = function.process(packet, now)
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "process")
            function.counters[NshDropReason.FUNCTION_ERROR.value] += 1
            self._drop(NshDropReason.FUNCTION_ERROR.value)
            return None
        if verdict is None or isinstance(verdict, NshDrop):
            reason = NshDropReason.DROPPED.value if verdict is None else verdict.reason
            function.counters[reason] += 1
            self._drop(reason)
            return None
        if not isinstance(verdict, NshPacket):
            self._failed(TypeError(f"process returned {type(verdict).__name__}"), "process")
            self._drop(NshDropReason.FUNCTION_ERROR.value)
            return None
        if verdict.spi == spi and verdict.si == si:
            verdict.si = si - 1  # RFC 8300 §2.3: the service function decrements SI
        try:
            return verdict.encode()
        except ValueError as exc:
            self._failed(exc, "encode")
            self._drop(NshDropReason.ENCODE_ERROR.value)
            return None

    def _drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def _sent(self, answer: bytes) -> bytes:
        self.packets_out += 1
        self.bytes_out += len(answer)
        return answer

    def _failed(self, exc: Exception, where: str) -> None:
        kind = type(exc).__name__
        self.errors[kind] += 1
        message = f"{self.function.kind()}.{where}: {kind}: {exc}"
        if self._on_error is not None:
            self._on_error(kind, message)
        elif self.errors[kind] == 1:
            import logging

            logging.getLogger(__name__).error("%s", message, exc_info=exc)

    def stats(self) -> dict[str, Any]:
        """Every counter, JSON-ready: packets and bytes in and out, drops by reason,
        the function's exceptions by name, and the function's own status."""
        function = self.function
        try:
            status = function.status()
        except Exception as exc:  # a faulty function must not stop the loop around it
            self._failed(exc, "status")
            status = {"kind": function.kind(), "counters": dict(function.counters)}
        return {
            "function": function.kind(),
            "in": {"packets": self.packets_in, "bytes": self.bytes_in},
            "out": {"packets": self.packets_out, "bytes": self.bytes_out},
            "dropped": dict(sorted(self.drops.items())),
            "errors": dict(self.errors),
            "status": status,
        }
