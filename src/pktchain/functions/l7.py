"""L7 classification: the HTTP Host and the TLS server name of a TCP flow, from its first payload.

Two pure parsers read the first bytes a TCP client sends: :func:`http_host`
(an HTTP/1.x request line, RFC 9112 §3, then its Host header field, RFC 9110
§7.2) and :func:`tls_sni` (a TLS ClientHello, RFC 8446 §4.1.2, possibly spread
over several handshake records, §5.1, and its server_name extension, RFC 6066
§3). Both take any bytes and never raise; :func:`parse_first_payload` also says
whether more bytes could change the answer.

:class:`L7Classifier` is a bump in the wire that applies them to each TCP flow.
It reassembles the first payload of the flow's first speaker in sequence order
(holding a few out-of-order segments, e.g. the second half of a ClientHello
that overtook the first) up to ``max_bytes``. Until it has decided it PUNTs:
the packets go on unchanged and the flow stays on the node's slow path. Once
decided (a name found; or the payload is neither HTTP nor TLS; or
``max_bytes`` came without an answer; or ``decide_timeout`` passed) it forwards
with a flow lease, and :meth:`L7Classifier.metadata` answers for the flow's
5-tuple in either direction, e.g. ``{"tls_sni": "example.test"}`` (empty when
nothing was found). ``on_classified`` is called once per decided TCP flow. UDP and
other protocols are forwarded with a lease at once: QUIC's Initial packets are
not read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from pktchain.functions.sdk import (
    Deadlines,
    FlowLease,
    Function,
    Packet,
    Result,
    TableSize,
    forward,
    observed_flow,
    punt,
)
from pktchain.functions.sdk.schema import check
from pktchain.packet.flow import FlowKey
from pktchain.packet.headers import TCP, IpProto, TcpFlag

__all__ = [
    "HTTP_HOST",
    "TLS_SNI",
    "L7Classifier",
    "L7ClassifierConfig",
    "Outcome",
    "http_host",
    "parse_first_payload",
    "parse_http_host",
    "parse_tls_sni",
    "tls_sni",
]

HTTP_HOST = "http_host"
TLS_SNI = "tls_sni"

Metadata = dict[str, str]
Classified = Callable[[FlowKey, Metadata], None]


class Outcome(Enum):
    """What a parser made of the bytes it was given."""

    FOUND = "found"
    ABSENT = "absent"
    """Not this protocol, malformed, or no name in it: more bytes will not change that."""
    INCOMPLETE = "incomplete"
    """A prefix of something that may still hold a name: more bytes are needed."""


Parse = tuple[Outcome, str | None]
_ABSENT: Parse = (Outcome.ABSENT, None)
_INCOMPLETE: Parse = (Outcome.INCOMPLETE, None)

# -- HTTP/1.x ----------------------------------------------------------------
# RFC 9110 §5.6.2: tchar, the characters of a token (a method is a token, §9.1).
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_MAX_METHOD = 32  # longer than any registered method; bounds the token scan
_HTTP_VERSION = b"HTTP/1."
_DIGITS = frozenset(b"0123456789")
# RFC 3986 §3.2.2 host (reg-name, IP-literal) and §3.2.3 port, as Host carries them.
_HOST_CHARS = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=%:[]"
)
_MAX_HOST = 255


def parse_http_host(data: bytes) -> Parse:
    """The Host of an HTTP/1.x request at the start of `data` (lower case, without port).

    ABSENT when `data` does not start like a request, or when the header
    section ends without a Host field or with an unusable one.
    """
    n = len(data)
    i = 0
    # RFC 9112 §2.2: a server ignores at least one empty line before the request line.
    while i < n and i < 4 and data[i] in b"\r\n":
        i += 1
    j = i
    while j < n and j - i <= _MAX_METHOD and data[j] in _TCHAR:
        j += 1
    if j == n:
        return _INCOMPLETE if j - i <= _MAX_METHOD else _ABSENT
    if j == i or j - i > _MAX_METHOD or data[j] != 0x20:
        return _ABSENT
    # RFC 9112 §3: method SP request-target SP HTTP-version CRLF.
    k = j + 1
    while k < n and 0x20 < data[k] < 0x7F:
        k += 1
    if k == n:
        return _INCOMPLETE
    if k == j + 1 or data[k] != 0x20:
        return _ABSENT
    version = data[k + 1 : k + 1 + len(_HTTP_VERSION) + 1]
    if len(version) <= len(_HTTP_VERSION):
        return _INCOMPLETE if _HTTP_VERSION.startswith(version) else _ABSENT
    if not version.startswith(_HTTP_VERSION) or version[-1] not in _DIGITS:
        return _ABSENT
    p = k + 1 + len(version)
    # RFC 9112 §2.2: a recipient may take a bare LF as the end of a line.
    if data[p : p + 2] == b"\r\n":
        p += 2
    elif data[p : p + 1] == b"\n":
        p += 1
    elif data[p:] in (b"", b"\r"):
        return _INCOMPLETE
    else:
        return _ABSENT
    # RFC 9112 §5: field lines up to an empty line; the first Host decides (a
    # request with two is invalid, RFC 9112 §3.2, and its server answers 400).
    while True:
        end = data.find(b"\n", p)
        if end < 0:
            return _INCOMPLETE
        line = data[p:end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return _ABSENT
        name, colon, value = line.partition(b":")
        # No whitespace is allowed between the name and the colon (RFC 9112 §5.1).
        if colon and name.lower() == b"host":
            host = _host_name(value.strip(b" \t"))
            return _ABSENT if host is None else (Outcome.FOUND, host)
        p = end + 1


def _host_name(value: bytes) -> str | None:
    """The host of a Host field value without its port, lower case; None if unusable."""
    if not value or not all(c in _HOST_CHARS for c in value):
        return None
    if value.startswith(b"["):
        close = value.find(b"]")
        if close < 0:
            return None
        host, rest = value[: close + 1], value[close + 1 :]
        if rest and not (rest[:1] == b":" and all(c in _DIGITS for c in rest[1:])):
            return None
    else:
        host, colon, port = value.partition(b":")
        if colon and not all(c in _DIGITS for c in port):
            return None
    if not host or len(host) > _MAX_HOST:
        return None
    return host.decode("ascii").lower()


def http_host(payload: bytes) -> str | None:
    """The Host of the HTTP/1.x request `payload` starts with, or None. Never raises."""
    outcome, host = parse_http_host(payload)
    return host if outcome is Outcome.FOUND else None


# -- TLS -----------------------------------------------------------------------
_HANDSHAKE = 22  # RFC 8446 §5.1 ContentType handshake
_CLIENT_HELLO = 1  # RFC 8446 §4 HandshakeType client_hello
_RECORD_HEADER = 5  # type, legacy_record_version (2), length (2)
_MAX_RECORD = 1 << 14  # RFC 8446 §5.1: a TLSPlaintext fragment is at most 2^14 bytes
_SERVER_NAME = 0  # RFC 6066 §3 ExtensionType server_name
_HOST_NAME = 0  # RFC 6066 §3 NameType host_name
# RFC 6066 §3: HostName is a DNS host name in ASCII (RFC 1123 §2.1 letters,
# digits, hyphens, dots); "_" is seen in the wild and harmless here.
_DNS_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def parse_tls_sni(data: bytes) -> Parse:
    """The server_name of a TLS ClientHello at the start of `data` (lower case).

    The ClientHello may span several handshake records. ABSENT when `data` is
    not a TLS handshake, the hello is malformed, or it carries no host_name.
    """
    n = len(data)
    hello = bytearray()
    p = 0
    while True:
        header = data[p : p + _RECORD_HEADER]
        # RFC 8446 §5.1: handshake records, legacy_record_version 0x03xx.
        if header[:1] not in (b"", bytes((_HANDSHAKE,))) or header[1:2] not in (b"", b"\x03"):
            return _ABSENT
        if len(header) < _RECORD_HEADER:
            return _INCOMPLETE
        length = int.from_bytes(header[3:5])
        if not 0 < length <= _MAX_RECORD:  # zero-length handshake fragments are forbidden
            return _ABSENT
        hello += data[p + _RECORD_HEADER : p + _RECORD_HEADER + length]
        if len(hello) >= 4:
            if hello[0] != _CLIENT_HELLO:
                return _ABSENT
            size = int.from_bytes(hello[1:4])
            if len(hello) >= 4 + size:
                return _client_hello_sni(bytes(hello[4 : 4 + size]))
        p += _RECORD_HEADER + length
        if p >= n:
            return _INCOMPLETE


class _TruncatedError(Exception):
    """A length field points past the end of the structure holding it."""


class _Reader:
    """Reads a TLS structure (RFC 8446 §3: big-endian, length-prefixed vectors)."""

    __slots__ = ("data", "end", "p")

    def __init__(self, data: bytes, p: int = 0, end: int | None = None) -> None:
        self.data = data
        self.p = p
        self.end = len(data) if end is None else end

    def take(self, size: int) -> bytes:
        if self.end - self.p < size:
            raise _TruncatedError
        chunk = self.data[self.p : self.p + size]
        self.p += size
        return chunk

    def number(self, size: int) -> int:
        return int.from_bytes(self.take(size))

    def vector(self, length_size: int) -> _Reader:
        """A reader over the next ``<0..2^(8*length_size)-1>`` vector, skipped here."""
        size = self.number(length_size)
        start = self.p
        self.take(size)
        return _Reader(self.data, start, start + size)

    @property
    def left(self) -> int:
        return self.end - self.p


def _client_hello_sni(body: bytes) -> Parse:
    """RFC 8446 §4.1.2 ClientHello (after the handshake header) → its host_name."""
    hello = _Reader(body)
    try:
        hello.take(2 + 32)  # legacy_version, random
        hello.vector(1)  # legacy_session_id
        hello.vector(2)  # cipher_suites
        hello.vector(1)  # legacy_compression_methods
        if not hello.left:
            return _ABSENT  # no extensions (a pre-RFC 6066 hello): no name
        extensions = hello.vector(2)
        while extensions.left:
            kind = extensions.number(2)
            data = extensions.vector(2)
            if kind != _SERVER_NAME:
                continue
            names = data.vector(2)  # ServerNameList
            while names.left:
                name_type = names.number(1)
                name = names.vector(2)
                if name_type == _HOST_NAME:
                    return _sni_name(name.take(name.left))
            return _ABSENT
    except _TruncatedError:
        return _ABSENT
    return _ABSENT


def _sni_name(raw: bytes) -> Parse:
    # RFC 6066 §3: no trailing dot, and literal addresses are not permitted;
    # a name that is not a DNS name is of no use to match on.
    if not raw or len(raw) > _MAX_HOST or not all(c in _DNS_CHARS for c in raw):
        return _ABSENT
    if raw.endswith(b"."):
        return _ABSENT
    return (Outcome.FOUND, raw.decode("ascii").lower())


def tls_sni(payload: bytes) -> str | None:
    """The server name of the TLS ClientHello `payload` starts with, or None. Never raises."""
    outcome, name = parse_tls_sni(payload)
    return name if outcome is Outcome.FOUND else None


def parse_first_payload(data: bytes) -> tuple[Outcome, Metadata]:
    """What the first bytes of a TCP stream say: metadata when FOUND, else empty."""
    if data[:1] == bytes((_HANDSHAKE,)):
        outcome, name = parse_tls_sni(data)
        key = TLS_SNI
    else:
        outcome, name = parse_http_host(data)
        key = HTTP_HOST
    if outcome is Outcome.FOUND and name is not None:
        return outcome, {key: name}
    return outcome, {}


# -- the function ----------------------------------------------------------------
_TCP = int(IpProto.TCP)
_SYN = int(TcpFlag.SYN)
_ACK = int(TcpFlag.ACK)
_SEQ = TCP.accessor("seq")
_SEQ_MASK = 0xFFFFFFFF
_SEQ_HALF = 1 << 31  # RFC 1982-style comparison of 32-bit sequence numbers
MAX_HELD_SEGMENTS = 16
"""Out-of-order segments held per flow while waiting for the one before them."""


@dataclass(frozen=True, slots=True)
class L7ClassifierConfig:
    """Bounds on what is read and kept, and the timeouts (seconds)."""

    max_bytes: int = field(
        default=4096,
        metadata=check(
            minimum=16,
            maximum=65536,
            help="bytes of a flow's first payload read at most before it is decided unclassified",
        ),
    )
    max_flows: int = field(
        default=65536,
        metadata=check(
            minimum=1,
            help="TCP flows tracked at once; a new one beyond is forwarded unclassified (counted)",
        ),
    )
    decide_timeout: float = field(
        default=30.0,
        metadata=check(
            minimum=0.1,
            help="seconds after a flow is first seen before, undecided, it is decided unclassified",
        ),
    )
    idle_timeout: float = field(
        default=300.0,
        metadata=check(
            minimum=1.0,
            help="seconds without a packet after which a flow is forgotten (its metadata with it)",
        ),
    )


class _Flow:
    """One TCP flow being (or having been) classified."""

    __slots__ = (
        "created",
        "data",
        "held",
        "key",
        "last",
        "leases",
        "metadata",
        "next_seq",
        "speaker",
    )

    def __init__(self, key: FlowKey, now: float) -> None:
        self.key = key
        """The initiator's 5-tuple (the SYN's sender when seen)."""
        self.created = now
        self.last = now
        self.metadata: Metadata | None = None
        """None while undecided."""
        self.speaker = -1
        """Direction (0: initiator's) whose first payload is read; -1 before any."""
        self.next_seq: list[int | None] = [None, None]
        self.data = bytearray()
        self.held: dict[int, bytes] = {}
        self.leases: list[FlowLease | None] = [None, None]

    def activity(self) -> float:
        last = self.last
        for lease in self.leases:
            if lease is not None and lease.seen > last:
                last = lease.seen
        return last

    def lease(self, way: int) -> FlowLease:
        lease = self.leases[way]
        if lease is None or not lease.valid:
            lease = self.leases[way] = FlowLease()
        return lease

    def revoke(self) -> None:
        for lease in self.leases:
            if lease is not None:
                lease.revoke()

    def add(self, seq: int, chunk: bytes, limit: int) -> None:
        """Put a segment of the speaker's stream in order, holding it if it came early."""
        way = self.speaker
        expected = self.next_seq[way]
        if expected is None:
            expected = seq  # no SYN seen: the stream starts here
        ahead = (seq - expected) & _SEQ_MASK
        if (
            ahead < _SEQ_HALF
            and ahead
            and (ahead >= limit - len(self.data) or len(self.held) >= MAX_HELD_SEGMENTS)
        ):
            return  # beyond what will be read, or too many gaps: the sender resends
        self.held[seq] = chunk
        held = self.held
        progress = True
        while progress and held and len(self.data) < limit:
            progress = False
            for start in list(held):
                behind = (expected - start) & _SEQ_MASK
                if behind >= _SEQ_HALF:
                    continue  # starts after a gap
                piece = held.pop(start)
                if behind < len(piece):  # else: a retransmission of what we have
                    self.data += piece[behind : behind + limit - len(self.data)]
                    expected = (expected + len(piece) - behind) & _SEQ_MASK
                    progress = True
        self.next_seq[way] = expected


class L7Classifier(Function[L7ClassifierConfig]):
    """Finds each TCP flow's HTTP Host or TLS server name; see the module docstring.

    ``metadata(key)`` is what the node's chain classification asks (flow
    classifiers with ``l7_parameters``); ``on_classified``, when the driver sets
    it, is called with the initiator's 5-tuple and the metadata as each flow is
    decided.
    """

    KIND = "l7-classifier"
    Config = L7ClassifierConfig
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "flows": "TCP flows tracked (since the start)",
        "http": "flows decided with an HTTP Host",
        "tls": "flows decided with a TLS server name",
        "unclassified": "flows decided with nothing found",
        "byte-limit": "flows decided unclassified after max_bytes without an answer",
        "decide-timeout": "flows decided unclassified after decide_timeout",
        "table-full": "new flows forwarded untracked because max_flows were tracked",
        "expired": "decided flows forgotten after idle_timeout",
        "not-tcp": "packets of other protocols, forwarded with their flow's lease",
        "fragment": "IP fragments, forwarded without a lease",
        "not-ip": "frames that are not IP, forwarded without a flow",
        "malformed": "frames that do not parse, forwarded without a flow",
        "unknown-interface": "frames on an interface it does not have, refused by the driver",
    }

    def __init__(self, config: L7ClassifierConfig | None = None) -> None:
        super().__init__(config)
        self.on_classified: Classified | None = None
        self._flows: dict[FlowKey, _Flow] = {}
        self._deadlines: Deadlines[FlowKey] = Deadlines()

    def metadata(self, key: tuple[bytes, bytes, int, int, int]) -> Metadata:
        """What was found for the flow with this 5-tuple (either direction); {} if nothing."""
        flow = self._flows.get(FlowKey(*key).canonical())
        if flow is None or not flow.metadata:
            return {}
        return dict(flow.metadata)

    def process(self, packet: Packet, now: float) -> Result:
        counters = self.counters
        out = self.peer(packet.iface)
        key = observed_flow(packet, counters)
        if key is None:
            return forward(out)
        info = packet.info
        if info.fragment:
            counters["fragment"] += 1
            return forward(out)  # the node never caches fragments
        canonical = key.canonical()
        flow = self._flows.get(canonical)
        if key.proto != _TCP:
            # Nothing to read (QUIC is not), but the flow keeps one lease per
            # direction: the fast path takes a flow on its second packet under
            # the same lease.
            counters["not-tcp"] += 1
            if flow is None:
                if len(self._flows) >= self.config.max_flows:
                    counters["table-full"] += 1
                    return forward(out)
                flow = self._create(canonical, key, now, {})
            flow.last = now
            return forward(out, lease=flow.lease(0 if key == flow.key else 1))
        flags = info.tcp_flags
        size = info.end - info.payload
        opening = flags & (_SYN | _ACK) == _SYN
        if flow is not None and opening and (flow.metadata is not None or flow.speaker >= 0):
            self._remove(canonical, flow)  # a new connection on the same 5-tuple
            flow = None
        if flow is None:
            if not (flags & _SYN or size):
                # Mid-flow without payload (we came up after its SYN): wait for a
                # payload to start from, on the slow path.
                return punt()
            if len(self._flows) >= self.config.max_flows:
                # Untracked, it stays on the slow path, unclassified.
                counters["table-full"] += 1
                self._decided(key, {})
                return forward(out)
            initiator = key.reverse() if flags & (_SYN | _ACK) == _SYN | _ACK else key
            flow = self._create(canonical, initiator, now)
            self.counters["flows"] += 1
        way = 0 if key == flow.key else 1
        flow.last = now
        if flow.metadata is None:
            seq = _SEQ.read_int(packet.buf, info.l4)
            if flags & _SYN:
                flow.next_seq[way] = (seq + 1) & _SEQ_MASK  # SYN takes one sequence number
            if size and flow.speaker < 0:
                flow.speaker = way
            if size and way == flow.speaker:
                flow.add(seq, bytes(packet.buf[info.payload : info.end]), self.config.max_bytes)
                self._judge(canonical, flow)
            if flow.metadata is None:
                return punt()
        return forward(out, lease=flow.lease(way))

    def _judge(self, canonical: FlowKey, flow: _Flow) -> None:
        outcome, metadata = parse_first_payload(bytes(flow.data))
        if outcome is Outcome.INCOMPLETE:
            if len(flow.data) < self.config.max_bytes:
                return
            self.counters["byte-limit"] += 1
        self._decide(canonical, flow, metadata)

    def _decide(self, canonical: FlowKey, flow: _Flow, metadata: Metadata) -> None:
        flow.metadata = metadata
        flow.data = bytearray()
        flow.held = {}
        self._schedule(canonical, flow)
        self._decided(flow.key, metadata)

    def _decided(self, key: FlowKey, metadata: Metadata) -> None:
        counters = self.counters
        if HTTP_HOST in metadata:
            counters["http"] += 1
        elif TLS_SNI in metadata:
            counters["tls"] += 1
        else:
            counters["unclassified"] += 1
        if self.on_classified is not None:
            self.on_classified(key, dict(metadata))

    def _create(
        self, canonical: FlowKey, initiator: FlowKey, now: float, metadata: Metadata | None = None
    ) -> _Flow:
        flow = self._flows[canonical] = _Flow(initiator, now)
        flow.metadata = metadata
        self._schedule(canonical, flow)
        return flow

    def _remove(self, canonical: FlowKey, flow: _Flow) -> None:
        del self._flows[canonical]
        self._deadlines.discard(canonical)
        flow.revoke()

    # -- timers ----------------------------------------------------------------
    def _due(self, flow: _Flow) -> float:
        if flow.metadata is None:
            return flow.created + self.config.decide_timeout
        return flow.activity() + self.config.idle_timeout

    def _schedule(self, canonical: FlowKey, flow: _Flow) -> None:
        self._deadlines.set(canonical, self._due(flow))

    def next_deadline(self) -> float | None:
        return self._deadlines.next()

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Decide flows that waited too long; forget idle ones."""
        flows = self._flows
        for canonical in self._deadlines.pop_due(now):
            flow = flows[canonical]
            if flow.metadata is None:
                self.counters["decide-timeout"] += 1
                self._decide(canonical, flow, {})
            elif now - flow.activity() >= self.config.idle_timeout:
                self.counters["expired"] += 1
                self._remove(canonical, flow)
            else:
                self._schedule(canonical, flow)
        return []

    def tables(self) -> dict[str, TableSize]:
        return {"flows": TableSize(len(self._flows), self.config.max_flows)}

    def status(self) -> dict[str, Any]:
        status = super().status()
        status["flows"] = len(self._flows)
        status["undecided"] = sum(1 for f in self._flows.values() if f.metadata is None)
        return status
