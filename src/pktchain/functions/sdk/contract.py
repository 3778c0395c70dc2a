"""The function contract: what a pktchain network function is, and how to write one.

A function is a sans-IO object (docs/design.md). The node, a pipe filter
(``pktchain fn``) and an out-of-process worker all drive the same object the
same way:

* it is built from a configuration mapping, checked all at once against the
  dataclass named by :attr:`Function.Config` (every wrong field reported, see
  :mod:`pktchain.functions.sdk.schema`);
* :meth:`Function.process` gets a :class:`Packet` (the frame as a writable
  buffer, parsed, and the interface it came in on) and ``now``, may rewrite the
  packet in place through the packet's setters, and returns a :class:`Result`:
  a :class:`Verdict` (forward, drop with a reason, reply, punt), the interface
  to forward on, frames to emit, and optionally a :class:`FlowLease`;
* timers are :meth:`Function.next_deadline` / :meth:`Function.on_timer`;
* counters are a ``Counter`` of named integers (:attr:`Function.counters`),
  pre-seeded from :attr:`Function.COUNTERS` so that they show at zero; the
  driver (:mod:`pktchain.functions.sdk.driver`) counts each DROP and REPLY
  there under its reason, and refuses frames on interfaces the function does
  not have, so neither is the function's business;
* :attr:`Function.LIVE` says whether :meth:`Function.reconfigure` may change
  the configuration while traffic flows.

The flow lease is how a function lets the node's fast path carry the rest of a
flow without it. Forwarding with a lease says: "every later packet of this flow
(same interface, same 5-tuple) gets exactly what I did to this one, until I
revoke the lease". The node derives the fused rewrite itself by comparing the
packet before and after the chain, so a function never describes its rewrite a
second time. While cached, packets are counted on the lease (``packets``,
``bytes``, ``seen``) so the function can still report per-flow counters and
judge idleness in its timer; :meth:`FlowLease.revoke` (a timeout, a
reconfiguration, a state change) sends the flow back through the function.
TCP segments with SYN, FIN or RST, IP fragments, and packets whose TTL would
run out always take the slow path, so state machines still see them.

A user function is a subclass in any importable module, named as
``package.module:ClassName`` wherever a function kind is expected; see
``examples/functions/`` and docs/functions.md.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, TypeVar

from pktchain.functions.sdk.schema import ConfigError, FieldError, describe, load_config
from pktchain.packet.flow import FlowKey, flow_key
from pktchain.packet.parse import FrameInfo, parse_frame
from pktchain.packet.rewrite import Side, decrement_ttl, set_ip, set_mac, set_port
from pktchain.packet.virtio import VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_LEN

__all__ = [
    "BUILTIN_FUNCTIONS",
    "ConfigError",
    "Deadlines",
    "Emitted",
    "FieldError",
    "FlowLease",
    "FlowLeases",
    "Function",
    "FunctionLoadError",
    "NoConfig",
    "Packet",
    "Result",
    "TableSize",
    "Verdict",
    "drop",
    "forward",
    "function_class",
    "import_class",
    "make_function",
    "observed_flow",
    "punt",
    "reply",
]

VNET = VIRTIO_NET_HDR_LEN
ZERO_VNET = bytes(VNET)


class Verdict(Enum):
    """What becomes of the packet a function was given."""

    FORWARD = "forward"
    """Send it (as rewritten) out of ``Result.iface``, or the other interface."""
    DROP = "drop"
    """Discard it; ``Result.reason`` names why (a counter name)."""
    REPLY = "reply"
    """Discard it and send ``Result.emit`` instead (e.g. a TCP RST, an ICMP error)."""
    PUNT = "punt"
    """Forward it unchanged without deciding: the function needs to see more of
    the flow (an L7 classifier before the first payload), so the flow stays on
    the slow path. A function punts a packet it has not rewritten: the node
    sends on the buffer the function was given."""


class FlowLease:
    """Permission to cache a flow's treatment, held by the function that gave it.

    The node counts the packets it forwards from its cache here, so that the
    function keeps per-flow counters and can tell an idle flow from a busy one
    in its timer. The counts arrive once per batch of frames the node reads,
    and always before the function is next called. Revoking sends the flow
    back through the function; the node registers what to undo through
    :meth:`on_revoke`.
    """

    __slots__ = ("_hooks", "bytes", "mtu", "packets", "seen", "traced", "valid")

    def __init__(self, *, mtu: int | None = None) -> None:
        self.valid = True
        self.packets = 0
        self.bytes = 0
        self.seen = 0.0
        self.mtu = mtu
        """Largest IP packet (or GSO segment) the cached treatment may carry."""
        self.traced = False
        """Set by the node once a packet under this lease took the slow path: a flow
        earns a fast-path entry with its second packet, so one-packet flows cost
        no entry."""
        self._hooks: list[Callable[[], None]] = []

    def revoke(self) -> None:
        """Stop caching: later packets of the flow come to the function again."""
        self.valid = False
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def on_revoke(self, hook: Callable[[], None]) -> None:
        """Call `hook` when the lease is revoked (at once if it already is)."""
        if self.valid:
            self._hooks.append(hook)
        else:
            hook()


K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """When each key (a flow, a connection) is next due: a function's timer table.

    `set` files a key, or moves its deadline; `get` says when it is due;
    `discard` forgets it; `next` is what `next_deadline()` returns;
    `pop_due(now)` yields the keys whose deadline has come, each forgotten as
    it is yielded (file it again to keep it). A superseded heap entry stays
    until it surfaces and is skipped, so moving a deadline costs one push.
    """

    __slots__ = ("_due", "_heap", "_sequence")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._sequence = itertools.count()

    def set(self, key: K, when: float) -> None:
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._sequence), key))

    def get(self, key: K) -> float | None:
        """When `key` is due (None: it is not filed)."""
        return self._due.get(key)

    def discard(self, key: K) -> None:
        self._due.pop(key, None)

    def clear(self) -> None:
        self._heap = []
        self._due = {}

    def next(self) -> float | None:
        heap, due = self._heap, self._due
        while heap:
            when, _, key = heap[0]
            if due.get(key) == when:
                return when
            heapq.heappop(heap)  # superseded or forgotten
        return None

    def pop_due(self, now: float) -> Iterator[K]:
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            when, _, key = heapq.heappop(heap)
            if due.get(key) == when:
                del due[key]
                yield key

    def __len__(self) -> int:
        return len(self._due)


class FlowLeases:
    """One lease per flow, made on first use and reused while valid; bounded; idle ones expire.

    The table a function keeps so that every packet of a flow is forwarded
    with the same lease (a flow earns its fast-path entry with its second
    packet under one lease). When full, the oldest lease is revoked to make
    room (a function that would rather refuse checks :attr:`full` first).

    With ``idle``, a lease the fast path has not used for that many seconds
    is revoked and forgotten when the owner's timer calls :meth:`expire`
    (:meth:`next_deadline` says when); give :meth:`lease` the ``now`` of the
    packet. A lease revoked elsewhere (by the node, say) is forgotten then too.
    """

    def __init__(self, limit: int = 65536, *, idle: float | None = None) -> None:
        self.limit = limit
        self.idle = idle
        self._leases: dict[Hashable, FlowLease] = {}
        self._idle: Deadlines[Hashable] = Deadlines()

    def lease(self, key: Hashable, now: float = 0.0) -> FlowLease:
        leases = self._leases
        lease = leases.get(key)
        if lease is None or not lease.valid:
            if lease is None and leases and len(leases) >= self.limit:
                self.revoke(next(iter(leases)))
            lease = leases[key] = FlowLease()
            if self.idle is not None:
                self._idle.set(key, now + self.idle)
        return lease

    def get(self, key: Hashable) -> FlowLease | None:
        """The lease of `key`, valid or not, if the table holds one."""
        return self._leases.get(key)

    @property
    def full(self) -> bool:
        """Whether a lease for a new key would revoke the oldest."""
        return len(self._leases) >= self.limit

    def revoke(self, key: Hashable) -> None:
        lease = self._leases.pop(key, None)
        self._idle.discard(key)
        if lease is not None:
            lease.revoke()

    def revoke_all(self) -> None:
        leases, self._leases = self._leases, {}
        self._idle.clear()
        for lease in leases.values():
            lease.revoke()

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has a lease to look at (None: no idle timeout, or no lease)."""
        return self._idle.next()

    def expire(self, now: float) -> int:
        """Revoke and forget the leases unused for ``idle`` seconds; returns how many.

        A lease's last use is when it was made or when the fast path last
        carried a packet under it (``seen``), whichever is later.
        """
        idle = self.idle
        if idle is None:
            return 0
        revoked = 0
        for key in list(self._idle.pop_due(now)):
            lease = self._leases.get(key)
            if lease is None:
                continue
            if not lease.valid:
                del self._leases[key]
            elif lease.seen + idle > now:
                self._idle.set(key, lease.seen + idle)
            else:
                del self._leases[key]
                lease.revoke()
                revoked += 1
        return revoked

    def __contains__(self, key: Hashable) -> bool:
        return key in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    def __iter__(self) -> Iterator[FlowLease]:
        return iter(list(self._leases.values()))


class Packet:
    """One frame handed to a function: a writable buffer and where its layers are.

    ``buf`` holds the virtio-net header (10 bytes, zero when the frame did not
    come with one) and then the Ethernet frame; ``info`` is its parse. The
    setters rewrite in place with incremental checksums and parse again, so
    ``info`` always describes ``buf``.

    ``buf`` is the function's only while :meth:`Function.process` runs: a
    packet it forwards leaves as that buffer (the node hands the same buffer to
    the next function, which rewrites it in place), so a function that keeps a
    packet past the call (one waiting for its next hop) keeps a copy.
    """

    __slots__ = ("buf", "iface", "info")

    def __init__(self, buf: bytearray, iface: str, info: FrameInfo | None = None) -> None:
        self.buf = buf
        self.iface = iface
        self.info = parse_frame(buf, VNET) if info is None else info

    @classmethod
    def from_ethernet(cls, frame: bytes, iface: str) -> Packet:
        """A packet from a bare Ethernet frame (a pipe, a test)."""
        return cls(bytearray(ZERO_VNET + frame), iface)

    # -- reading -------------------------------------------------------------
    @property
    def ethernet(self) -> bytes:
        """The Ethernet frame without the virtio-net header."""
        return bytes(self.buf[VNET:])

    @property
    def ok(self) -> bool:
        return self.info.error is None

    @property
    def src_mac(self) -> bytes:
        return bytes(self.buf[VNET + 6 : VNET + 12])

    @property
    def dst_mac(self) -> bytes:
        return bytes(self.buf[VNET : VNET + 6])

    @property
    def src(self) -> bytes:
        return self.info.src

    @property
    def dst(self) -> bytes:
        return self.info.dst

    @property
    def proto(self) -> int:
        return self.info.proto

    @property
    def sport(self) -> int:
        return self.info.sport

    @property
    def dport(self) -> int:
        return self.info.dport

    @property
    def tcp_flags(self) -> int:
        return self.info.tcp_flags

    @property
    def key(self) -> tuple[bytes, bytes, int, int, int]:
        """(source IP, destination IP, protocol, source port, destination port)."""
        info = self.info
        return (info.src, info.dst, info.proto, info.sport, info.dport)

    @property
    def payload(self) -> bytes:
        """The L4 payload (empty when there is no L4 header)."""
        info = self.info
        if info.l4 < 0:
            return b""
        return bytes(self.buf[info.payload : info.end])

    @property
    def partial(self) -> bool:
        """True when the L4 checksum is a partial seed (``NEEDS_CSUM``)."""
        return bool(self.buf[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM)

    def __len__(self) -> int:
        """Bytes of the Ethernet frame."""
        return len(self.buf) - VNET

    # -- rewriting -----------------------------------------------------------
    def set_src(self, address: bytes | None = None, port: int | None = None) -> None:
        """Rewrite the source address and/or port (ICMP echo: the identifier)."""
        self._set(Side.SRC, address, port)

    def set_dst(self, address: bytes | None = None, port: int | None = None) -> None:
        """Rewrite the destination address and/or port (ICMP echo: the identifier)."""
        self._set(Side.DST, address, port)

    def set_macs(self, src: bytes | None = None, dst: bytes | None = None) -> None:
        if src is not None:
            set_mac(self.buf, self.info, Side.SRC, src)
        if dst is not None:
            set_mac(self.buf, self.info, Side.DST, dst)

    def decrement_ttl(self) -> int:
        """Decrement TTL / hop limit; 0 means it ran out (the packet is unchanged)."""
        return decrement_ttl(self.buf, self.info)

    def _set(self, side: Side, address: bytes | None, port: int | None) -> None:
        partial = self.partial
        if address is not None:
            set_ip(self.buf, self.info, side, address, partial=partial)
        if port is not None:
            set_port(self.buf, self.info, side, port, partial=partial)
        self.info = parse_frame(self.buf, VNET)


Emitted = tuple[str, bytes | Packet]
"""A frame a function sends besides the packet it was given: see :attr:`Result.emit`."""


@dataclass(slots=True)
class Result:
    """A function's answer for one packet (build it with the helpers below)."""

    verdict: Verdict
    iface: str | None = None
    """FORWARD: the interface to send on; None for the other of two interfaces."""
    reason: str = ""
    """DROP / REPLY: why the packet itself did not go on (a counter name)."""
    lease: FlowLease | None = None
    """FORWARD: later packets of the flow may skip this function (see FlowLease)."""
    emit: list[Emitted] = field(default_factory=list)
    """Other frames to send: (interface, Ethernet frame without virtio header), or
    (interface, :class:`Packet`) for a packet the function kept from an earlier
    call (held until its next hop was resolved, say): that one leaves with its
    virtio-net header, so a GSO frame or a partial checksum goes as it came."""


def forward(
    iface: str | None = None,
    *,
    lease: FlowLease | None = None,
    emit: Iterable[Emitted] = (),
) -> Result:
    """Send the packet on; with a lease, the rest of the flow may skip the function."""
    return Result(Verdict.FORWARD, iface=iface, lease=lease, emit=list(emit))


def drop(reason: str, *, emit: Iterable[Emitted] = ()) -> Result:
    """Discard the packet, counted under `reason`."""
    return Result(Verdict.DROP, reason=reason, emit=list(emit))


def reply(packet: Packet, *frames: bytes, reason: str = "replied") -> Result:
    """Discard the packet and answer it: `frames` go back out of its interface."""
    return Result(Verdict.REPLY, reason=reason, emit=[(packet.iface, f) for f in frames])


def punt() -> Result:
    """Forward unchanged, undecided: keep the flow on the slow path."""
    return Result(Verdict.PUNT)


def observed_flow(packet: Packet, counters: Counter[str]) -> FlowKey | None:
    """The packet's flow, for a function that observes every frame and forwards it.

    None for a frame that has no flow, counted as ``malformed`` or ``not-ip``:
    the caller forwards it as it came (an observer never changes the traffic).
    """
    info = packet.info
    key = flow_key(info)
    if key is None:
        counters["malformed" if info.error is not None else "not-ip"] += 1
    return key


@dataclass(frozen=True, slots=True)
class NoConfig:
    """The configuration of a function that takes none."""


if TYPE_CHECKING:
    # A default lets `Function` alone mean `Function[Any]`, as it did before the
    # class was generic; typing_extensions has it on Python 3.11, but importing it
    # costs `pktchain fn` tens of milliseconds at start, so only the type checker does.
    from typing_extensions import TypeVar as TypeVarWithDefault

    C = TypeVarWithDefault("C", default=Any)
else:
    C = TypeVar("C")


class Function(Generic[C]):
    """Base class of every function; subclass it and override :meth:`process`.

    A function is generic in its configuration: ``class Firewall(Function[FirewallConfig])``
    makes ``self.config`` a ``FirewallConfig`` to the type checker; a plain
    ``Function`` subclass keeps an untyped ``config``.

    Class attributes a subclass sets:

    * ``KIND``: its name in listings (built-ins: ``firewall``, ...);
    * ``Config``: a frozen dataclass, its configuration schema (the class the
      function is generic in);
    * ``COUNTERS``: the counters it keeps (shown even at zero), each name with
      what it counts (``{"blocked-port": "packets to the blocked port"}``: the
      function's page in docs/functions/ lists them), or the names alone;
    * ``LIVE``: True when :meth:`reconfigure` may be called while it runs;
    * ``INTERFACES``: its interface names; two for a bump in the wire;
    * ``UNKNOWN_INTERFACE``: the drop reason (a counter) under which the driver
      refuses a frame on an interface not in ``INTERFACES``, so that
      :meth:`process` only ever sees its own interfaces;
    * ``FLOODED``: True for a function that owns addresses on its networks and
      must see broadcast (ARP) and unknown-unicast frames there, like a router
      or a load balancer answering for its virtual IP. A bump in the wire
      leaves it False: frames reach it only when a chain steers them to it, so
      forwarding everything from one interface to the other can never bridge a
      loop on the node's network.
    """

    KIND: ClassVar[str] = ""
    Config: ClassVar[type[Any]] = NoConfig
    COUNTERS: ClassVar[Mapping[str, str] | tuple[str, ...]] = ()
    LIVE: ClassVar[bool] = False
    INTERFACES: ClassVar[tuple[str, ...]] = ("ingress", "egress")
    UNKNOWN_INTERFACE: ClassVar[str] = "unknown-interface"
    FLOODED: ClassVar[bool] = False

    def __init__(self, config: C | None = None) -> None:
        self.config: C = self.Config() if config is None else config
        self.counters: Counter[str] = Counter(dict.fromkeys(self.COUNTERS, 0))
        self.clock_offset = 0.0
        """Seconds to add to ``now`` for wall-clock (Unix) time, set by the driver:
        ``now`` is a monotonic clock; records that leave the process want dates."""

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None = None) -> Self:
        """Build from a configuration mapping; ConfigError lists every wrong field."""
        return cls(load_config(cls.Config, data, subject=f"{cls.kind()} configuration"))

    @classmethod
    def counter_descriptions(cls) -> dict[str, str]:
        """Each declared counter with what it counts ("" where ``COUNTERS`` only names it)."""
        counters = cls.COUNTERS
        if isinstance(counters, Mapping):
            return dict(counters)
        return dict.fromkeys(counters, "")

    @classmethod
    def kind(cls) -> str:
        return cls.KIND or f"{cls.__module__}:{cls.__qualname__}"

    @classmethod
    def schema(cls) -> list[dict[str, Any]]:
        """The configuration schema as data: each field's type, default, bounds and help,
        a nested configuration's fields under ``fields`` (see :func:`describe`)."""
        return describe(cls.Config)

    def process(self, packet: Packet, now: float) -> Result:
        """Handle one packet that came in on one of ``INTERFACES``.

        Never raise for a bad packet: drop it with a reason, which the driver
        counts (a function does not count the reason it returns).
        """
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` wants to run next (None: no timer)."""
        return None

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Timers due at `now`; returns frames to emit (interface, Ethernet frame)."""
        return []

    def stop(self, now: float) -> None:
        """The driver is stopping: end what is open (e.g. export flows in progress)."""

    def take_records(self) -> list[dict[str, Any]]:
        """Records the function exports (e.g. ended flows), handed over once each;
        the driver writes them where the user said (JSON lines)."""
        return []

    def reconfigure(self, data: Mapping[str, Any]) -> None:
        """Replace the configuration while running (only when ``LIVE``)."""
        if not self.LIVE:
            raise ConfigError(
                [FieldError("", f"{self.kind()} cannot be reconfigured while it runs")],
                subject=f"{self.kind()} configuration",
            )
        self.apply_config(load_config(self.Config, data, subject=f"{self.kind()} configuration"))

    def apply_config(self, config: C) -> None:
        """Take a validated configuration; revoke the leases it affects."""
        self.config = config

    def mac(self, iface: str) -> str | None:
        """The MAC address the function itself uses on `iface` ("02:..."), or None to
        let the driver choose one. A function that sends from its own addresses
        (answering ARP, like the load balancer) names them here, so that the node's
        port carries the same address and frames to it are never flooded."""
        return None

    def peer(self, iface: str) -> str:
        """The other interface of a two-interface function (where FORWARD goes)."""
        first, *rest = self.INTERFACES
        if len(self.INTERFACES) == 2:
            return rest[0] if iface == first else first
        raise ValueError(f"{self.kind()} has {len(self.INTERFACES)} interfaces: name one")

    def status(self) -> dict[str, Any]:
        """What the API and CLI show: counters, plus a function's own tables."""
        return {"kind": self.kind(), "counters": dict(self.counters)}

    def tables(self) -> dict[str, TableSize]:
        """How full each of the function's tables is, by name (``connections``,
        ``nat-sessions``...), for the node's metrics; cheap enough for every scrape."""
        return {}


@dataclass(frozen=True)
class TableSize:
    """How full one of a function's tables is: `entries` now, at most `limit`
    (None: not bounded by a setting)."""

    entries: int
    limit: int | None = None


BUILTIN_FUNCTIONS: dict[str, str] = {
    "firewall": "pktchain.functions.firewall:Firewall",
    "load-balancer": "pktchain.functions.loadbalancer:LoadBalancer",
    "mirror": "pktchain.functions.mirror:Mirror",
    "rate-limiter": "pktchain.functions.ratelimit:RateLimiter",
    "flow-monitor": "pktchain.functions.flowmonitor:FlowMonitor",
    "l7-classifier": "pktchain.functions.l7:L7Classifier",
    "nat": "pktchain.functions.nat:NatFunction",
}
"""Built-in function kinds and where they live (imported on first use)."""


class FunctionLoadError(ValueError):
    """A function kind or import path that does not name a Function class."""


def function_class(kind: str) -> type[Function]:
    """The class for a built-in kind or a ``package.module:ClassName`` path."""
    return import_class(kind, Function, BUILTIN_FUNCTIONS, "a pktchain Function class")


F = TypeVar("F")


_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
IMPORT_PATH = re.compile(rf"{_DOTTED}:{_DOTTED}")
"""``package.module:ClassName``: dotted identifiers (an absolute module), a colon, the
class's dotted name."""


def import_class(kind: str, base: type[F], builtins: Mapping[str, str], what: str) -> type[F]:
    """The subclass of `base` that a built-in kind (a key of `builtins`) or a
    ``package.module:ClassName`` path names; FunctionLoadError saying why not."""
    path = builtins.get(kind, kind)
    module_name, _, attribute = path.partition(":")
    if not IMPORT_PATH.fullmatch(path):
        known = ", ".join(sorted(builtins))
        raise FunctionLoadError(
            f"unknown function {kind!r}: use a built-in ({known}) or package.module:ClassName"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionLoadError(f"function {kind!r}: cannot import {module_name}: {exc}") from exc
    found: object = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise FunctionLoadError(f"function {kind!r}: {module_name} has no {attribute}")
    if not (isinstance(found, type) and issubclass(found, base)):
        raise FunctionLoadError(f"function {kind!r}: {path} is not {what}")
    return found


def make_function(kind: str, config: Mapping[str, Any] | None = None) -> Function:
    """Load and build a function; FunctionLoadError or ConfigError on bad input."""
    return function_class(kind).from_config(config)


def frames_out(outputs: Sequence[Emitted]) -> list[tuple[str, bytes]]:
    """Emitted frames with their virtio-net header in front (zero for Ethernet frames),
    for the node."""
    return [
        (iface, bytes(frame.buf) if isinstance(frame, Packet) else ZERO_VNET + frame)
        for iface, frame in outputs
    ]
