"""What happened to one packet in the datapath, stage by stage: `pktchain trace`.

A `PathRecorder` watches the real datapath handle one frame: it wraps the
datapath's own methods (steering, functions, floods, taps, the ports' and
the underlay's sends) for the time of that frame, so the stages it reports
are the decisions the packet loop's code made, not a second description of
them. Nothing is wrapped while no packet is being recorded: the packet loop
pays nothing (the wrappers are instance attributes over the class's
methods, put in place and taken away around the frame).

It serves both kinds of trace:

* a **dry run** (`dry=True`) runs in a forked copy of the node
  (`pktchain.linux.sandbox`): every way out is replaced by a recorder that
  sends nothing, functions that do not declare ``TRACEABLE`` are not called
  (assumed to forward the packet unchanged), and whatever the frame changes
  (MAC learning, flow entries, NAT sessions, counters) is the copy's;
* a **live** trace (`dry=False`) records a real packet in the node itself:
  the sends go through, each stage gets its monotonic time.

Each stage is one hop, a dict with ``stage`` and ``us`` (microseconds since the
frame came in) and the stage's own fields (docs/trace.md lists them).
Frames a function emits besides the packet (replies, mirror copies) and tap
copies are recorded with ``"copy": true``: the packet's own fate is that of the
hops without it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pktchain.functions.sdk import VNET, Function, FunctionLoadError, Result, Verdict, drop, forward
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.dataplane.steering import pair_scores
from pktchain.node.dataplane.underlay import SPI_SWITCHED, decode_nsh
from pktchain.packet.describe import fields_of, header_diff
from pktchain.packet.nsh import parse_vxlan_gpe
from pktchain.packet.parse import FLOW_END, FLOW_START, FrameInfo, parse_frame

if TYPE_CHECKING:
    from pktchain.node.dataplane.datapath import Datapath
    from pktchain.node.dataplane.functions import FunctionHost, FunctionPort
    from pktchain.node.dataplane.ports import SwitchPort
    from pktchain.node.dataplane.steering import FlowEntry, FlowKey

__all__ = ["NOT_TRACEABLE", "PathRecorder", "entry_view", "key_view"]

NOT_TRACEABLE = "not-traceable"
"""The drop reason of a function of more than two interfaces that a dry run cannot call."""

_GPE_SIZE = 8

Hop = dict[str, Any]


def key_view(key: FlowKey) -> dict[str, Any]:
    """A flow key as a trace shows it."""
    import ipaddress

    src, dst, proto, sport, dport = key
    return {
        "src": str(ipaddress.ip_address(src)) if src else "",
        "dst": str(ipaddress.ip_address(dst)) if dst else "",
        "proto": proto,
        "sport": sport,
        "dport": dport,
    }


def entry_view(entry: FlowEntry) -> dict[str, Any]:
    """A flow table entry as a trace shows it: the flow's chain and path, and where it goes."""
    flow = entry.flow
    view: dict[str, Any] = {
        "chain": flow.chain.name if flow.chain is not None else None,
        "path": [pair.name for _group, pair in flow.pairs],
        "next": entry.out.name if entry.out is not None else "switch",
        "direction": "reverse" if entry.reverse else "forward",
    }
    if entry.hop is not None:
        view["group"] = entry.hop.chain.groups[entry.hop.group].name
        view["port_pair"] = entry.hop.pair.name
    if entry.drop is not None:
        view["drop"] = entry.drop
    if entry.taps:
        view["taps"] = [tap.name for tap, _mac, _counters in entry.taps]
    if entry.nsh is not None:
        view["nsh"] = {"spi": entry.nsh.spi, "si": entry.nsh.si}
    return view


class PathRecorder:
    """Records the stages of one frame through `datapath` (see the module)."""

    def __init__(
        self,
        datapath: Datapath,
        hosts: Iterable[FunctionHost],
        *,
        dry: bool,
        node: str | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.datapath = datapath
        self.hosts = list(hosts)
        self.dry = dry
        self.node = node
        self.clock = clock
        self.hops: list[Hop] = []
        self.start = clock()
        self._copying = 0
        self._emitted: set[int] = set()
        self._steer_hop: Hop | None = None
        self._function_hop: Hop | None = None
        self._arrival_hop: Hop | None = None
        self._undo: list[Callable[[], None]] = []
        self.set_aside: tuple[dict[Any, Any], Any, Any] | None = None
        """A fused entry taken out of its table while the frame is recorded."""

    # -- hops ------------------------------------------------------------------
    def hop(self, stage: str, **fields: Any) -> Hop:
        if not self.hops:
            self.start = self.clock()  # times count from the frame's first stage
        record: Hop = {"stage": stage, "us": round((self.clock() - self.start) / 1000, 1)}
        if self.node is not None:
            record["node"] = self.node
        if self._copying:
            record["copy"] = True
        record.update(fields)
        self.hops.append(record)
        return record

    # -- wrapping --------------------------------------------------------------
    def install(self) -> None:
        """Put the wrappers in place (take them away with `remove`)."""
        datapath = self.datapath
        self._wrap(datapath, "_steer", self._steer)
        self._wrap(datapath, "_forward", self._forward)
        self._wrap(datapath, "_tap", self._tap)
        self._wrap(datapath, "flood", self._flood)
        self._wrap(datapath, "_arrive", self._arrive)
        steering = datapath.steering
        if steering is not None:
            self._wrap(steering, "classify", self._classify)
            self._wrap(steering, "follow", self._follow)
            self._wrap(steering, "related", self._related)
            self._wrap(steering, "arrive", self._join)
        for port in datapath.ports:
            if port.kind is PortKind.FUNCTION:
                continue
            self._slot(port, "send", self._sender(port))
            self._slot(port, "sendv", self._vector_sender(port))
        underlay = datapath.underlay
        if underlay is not None:
            self._wrap(underlay, "sendmsg", self._underlay_send)
        for host in self.hosts:
            self._wrap(host, "handle", self._handler(host))
            function = getattr(host.driver, "function", None)
            if isinstance(function, Function):
                self._wrap(function, "process", self._processor(function))
            if self.dry:
                self._wrap(host, "sink", self._sink(host))

    def remove(self) -> None:
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()

    def _wrap(self, owner: object, name: str, make: Callable[[Any], Any]) -> None:
        """Shadow `owner.name` with `make(original)` as an instance attribute."""
        original = getattr(owner, name)
        had = name in vars(owner)
        setattr(owner, name, make(original))

        def undo() -> None:
            if had:
                setattr(owner, name, original)
            else:
                delattr(owner, name)

        self._undo.append(undo)

    def _slot(self, port: SwitchPort, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(port, name)
        setattr(port, name, make(original))
        self._undo.append(lambda: setattr(port, name, original))

    # -- the datapath's stages ---------------------------------------------------
    def _forward(self, original: Callable[..., None]) -> Callable[..., None]:
        def forward_(
            port: SwitchPort,
            frames: Iterable[bytes | bytearray],
            trace: Any,
            depth: int,
            via: Any = None,
        ) -> None:
            frames = list(frames)
            emitted = any(id(frame) in self._emitted for frame in frames)
            if emitted:
                self._copying += 1
            before = Counter(port.drops)
            try:
                original(port, frames, trace, depth, via)
            finally:
                self._record_drops(port, before)
                if emitted:
                    self._copying -= 1

        return forward_

    def _record_drops(self, port: SwitchPort, before: Counter[str]) -> None:
        for reason, count in port.drops.items():
            if count > before.get(reason, 0):
                self.hop("drop", port=port.name, reason=reason)

    def _arrive(self, original: Callable[..., None]) -> Callable[..., None]:
        def arrive(port: SwitchPort, arrival: Any) -> None:
            before = Counter(port.drops)
            steering = self.datapath.steering
            info = parse_frame(arrival.frame, VNET_HDR_LEN)
            hop = None
            if steering is not None and info.error is None and info.ip_version:
                key: FlowKey = info[FLOW_START:FLOW_END]
                hop = self.hop(
                    "steering",
                    port=port.name,
                    flow=key_view(key),
                    nsh={"spi": arrival.spi, "si": arrival.si},
                )
                existing = steering.arrivals.get((arrival.spi << 8 | arrival.si, key))
                if existing is not None:
                    hop["decision"] = "pinned"
                    hop["why"] = "an existing entry of this SPI, SI and flow pins it"
                    hop["entry"] = entry_view(existing)
            self._arrival_hop = hop
            try:
                original(port, arrival)
            finally:
                self._arrival_hop = None
            self._record_drops(port, before)

        return arrive

    def _join(self, original: Callable[..., FlowEntry | str]) -> Callable[..., Any]:
        def arrive(arrival: Any, at: SwitchPort, info: FrameInfo, key: FlowKey) -> Any:
            joined = original(arrival, at, info, key)
            hop = self._arrival_hop
            if hop is not None:
                if isinstance(joined, str):
                    hop["decision"] = "refused"
                    hop["why"] = joined
                else:
                    hop["decision"] = "joined"
                    hop["why"] = (
                        "the first packet of the flow here: the SPI names the chain, the SI "
                        "the hop, the NSH's path the instance of every hop"
                    )
                    hop["entry"] = entry_view(joined)
            return joined

        return arrive

    def _steer(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def steer(  # noqa: PLR0917 - the datapath's own signature
            port: SwitchPort,
            frame: bytes | bytearray,
            info: FrameInfo,
            src_entry: Any,
            trace: Any,
            depth: int,
            via: Any = None,
        ) -> Any:
            key: FlowKey = info[FLOW_START:FLOW_END]
            table = port.flows
            existing = table.get(key) if table is not None else None
            hop = self.hop("steering", port=port.name, flow=key_view(key))
            if existing is not None:
                hop["decision"] = "pinned" if existing.flow.chain is not None else "unsteered"
                hop["entry"] = entry_view(existing)
                hop["why"] = "an existing flow entry pins this flow"
            self._steer_hop = hop
            try:
                return original(port, frame, info, src_entry, trace, depth, via)
            finally:
                self._steer_hop = None

        return steer

    def _classify(self, original: Callable[..., FlowEntry]) -> Callable[..., FlowEntry]:
        def classify(
            port: SwitchPort, frame: bytes | bytearray, info: FrameInfo, key: FlowKey
        ) -> FlowEntry:
            steering = self.datapath.steering
            classifiers = []
            if steering is not None:
                for classifier, chain in steering._by_source.get(port.name, ()):
                    why = classifier.mismatch(info)
                    seen: dict[str, Any] = {
                        "classifier": classifier.name or classifier.id,
                        "chain": chain.name or chain.id,
                        "matched": why is None,
                    }
                    if why is not None:
                        seen["why"] = why
                    elif classifier.l7:
                        seen["l7"] = dict(classifier.l7)
                    classifiers.append(seen)
            entry = original(port, frame, info, key)
            hop = self._steer_hop or self.hop("steering", port=port.name, flow=key_view(key))
            hop["classifiers"] = classifiers
            if not classifiers:
                hop["why"] = "no flow classifier names this port as its logical source port"
            flow = entry.flow
            if flow.chain is None:
                hop["decision"] = "unsteered"
                if classifiers and not hop.get("why"):
                    hop["why"] = (
                        "no classifier matched"
                        if not any(c["matched"] for c in classifiers)
                        else "waiting for the flow's first payload (an L7 classifier)"
                    )
            else:
                hop["decision"] = "classified"
                hop["why"] = "the first packet of the flow: a path is chosen and pinned"
                hop["groups"] = [
                    {
                        "group": group.name or group.id,
                        "lb_fields": [field.value for field in group.lb_fields] or ["5-tuple"],
                        "chosen": pair.name or pair.id,
                        "pairs": [
                            {
                                "pair": candidate.name or candidate.id,
                                "weight": candidate.weight,
                                "score": None if score == float("-inf") else round(score, 6),
                            }
                            for candidate, score in pair_scores(group, frame, info)
                        ],
                    }
                    for group, pair in flow.pairs
                ]
            hop["entry"] = entry_view(entry)
            return entry

        return classify

    def _follow(self, original: Callable[..., FlowEntry | None]) -> Callable[..., Any]:
        def follow(via: FlowEntry, port: SwitchPort, frame: Any, info: Any, key: Any) -> Any:
            entry = original(via, port, frame, info, key)
            if entry is not None and self._steer_hop is not None:
                self._steer_hop["decision"] = "followed"
                self._steer_hop["why"] = (
                    "sent on by the function its path took it into: it goes on along that path"
                )
                self._steer_hop["entry"] = entry_view(entry)
            return entry

        return follow

    def _related(self, original: Callable[..., FlowEntry | None]) -> Callable[..., Any]:
        def related(port: SwitchPort, frame: Any, info: Any) -> Any:
            entry = original(port, frame, info)
            if entry is not None and self._steer_hop is not None:
                self._steer_hop["decision"] = "related"
                self._steer_hop["why"] = "an ICMP error: it follows the flow it quotes"
                self._steer_hop["entry"] = entry_view(entry)
            return entry

        return related

    def _tap(self, original: Callable[..., None]) -> Callable[..., None]:
        def tap(taps: Any, frame: Any, trace: Any, depth: int) -> None:
            taps = list(taps)
            self.hop("tap", ports=[port.name for port, _mac, _counters in taps])
            self._copying += 1
            try:
                original(taps, frame, trace, depth)
            finally:
                self._copying -= 1

        return tap

    def _flood(self, original: Callable[..., None]) -> Callable[..., None]:
        def flood(ingress: SwitchPort, network: Any, frame: Any, trace: Any, depth: int) -> None:
            self.hop(
                "flood",
                port=ingress.name,
                network=network.name,
                why="broadcast or multicast"
                if frame[VNET_HDR_LEN] & 1
                else "destination MAC not in the network's MAC table",
            )
            original(ingress, network, frame, trace, depth)

        return flood

    # -- functions -------------------------------------------------------------
    def _handler(self, host: FunctionHost) -> Callable[[Any], Any]:
        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def handle(port: FunctionPort, frame: bytearray) -> Any:
                info = parse_frame(frame, VNET)
                before = fields_of(frame, info)
                function = getattr(host.driver, "function", None)
                hop = self.hop(
                    "function",
                    function=host.name,
                    kind=function.kind() if isinstance(function, Function) else None,
                    port=port.name,
                    iface=port.iface,
                )
                self._function_hop = hop
                try:
                    answer = original(port, frame)
                finally:
                    self._function_hop = None
                hop["left_us"] = round((self.clock() - self.start) / 1000, 1)
                if answer is None:
                    hop["verdict"] = "error"
                    hop["reason"] = "function-error"
                    return None
                outputs, lease = answer
                hop["lease"] = lease is not None and lease.valid
                hop["out"] = []
                for iface, sent in outputs:
                    out_port = host.ports.get(iface)
                    name = out_port.name if out_port is not None else iface
                    if sent is frame:
                        after = fields_of(sent, parse_frame(sent, VNET))
                        hop["rewrite"] = header_diff(before, after)
                        hop["out"].append(name)
                    else:
                        self._emitted.add(id(sent))
                        hop.setdefault("emitted", []).append(name)
                return answer

            return handle

        return make

    def _processor(self, function: Function) -> Callable[[Any], Any]:
        def make(original: Callable[..., Result]) -> Callable[..., Result]:
            def process(packet: Any, now: float) -> Result:
                hop = self._function_hop
                if self.dry and not function.TRACEABLE:
                    if hop is not None:
                        hop["traceable"] = False
                        hop["note"] = "not traceable: assumed to forward the packet unchanged"
                    bump = len(function.INTERFACES) == 2
                    result = forward() if bump else drop(NOT_TRACEABLE)
                else:
                    before = {name: size.entries for name, size in _tables(function).items()}
                    result = original(packet, now)
                    if hop is not None:
                        after = {name: size.entries for name, size in _tables(function).items()}
                        grown = {
                            name: after.get(name, 0) - before.get(name, 0)
                            for name in {*before, *after}
                            if after.get(name, 0) != before.get(name, 0)
                        }
                        if grown:
                            hop["state"] = grown
                if hop is not None:
                    hop["verdict"] = result.verdict.value
                    if result.reason and result.verdict in (Verdict.DROP, Verdict.REPLY):
                        hop["reason"] = result.reason
                return result

            return process

        return make

    def _sink(self, host: FunctionHost) -> Callable[[Any], Any]:
        def make(original: Callable[..., None]) -> Callable[..., None]:
            def sink(iface: str, frame: bytes | bytearray) -> None:
                self.hop("egress", port=f"{host.name}:{iface}", kind="pcap", delivered=True)

            return sink

        return make

    # -- the ways out ----------------------------------------------------------
    def _sender(self, port: SwitchPort) -> Callable[[Any], Any]:
        def make(original: Callable[[Any], int]) -> Callable[[Any], int]:
            if port.kind is PortKind.UNDERLAY:
                # A peer node's port encapsulates and hands the datagram to the
                # underlay's `sendmsg`, which records it (and sends nothing in a dry run).
                return original

            def send(frame: Any) -> int:
                self._egress(port, bytes(frame))
                return len(frame) if self.dry else original(frame)

            return send

        return make

    def _vector_sender(self, port: SwitchPort) -> Callable[[Any], Any]:
        def make(original: Callable[[Sequence[Any]], int]) -> Callable[[Sequence[Any]], int]:
            if port.kind is PortKind.UNDERLAY:
                return original  # as `_sender` says

            def sendv(parts: Sequence[Any]) -> int:
                frame = b"".join(bytes(part) for part in parts)
                self._egress(port, frame)
                return len(frame) if self.dry else original(parts)

            return sendv

        return make

    def _egress(self, port: SwitchPort, frame: bytes) -> None:
        info = parse_frame(frame, VNET_HDR_LEN)
        hop = self.hop(
            "egress",
            port=port.name,
            kind=port.kind.value,
            host=port.host,
            network=port.network.name if port.network is not None else None,
            frame=fields_of(frame, info),
        )
        if frame[VNET_HDR_LEN + 12 : VNET_HDR_LEN + 14] == b"\x89\x4f":
            hop["nsh"] = True

    def _underlay_send(self, original: Callable[..., int]) -> Callable[..., int]:
        def sendmsg(parts: Sequence[Any], address: tuple[str, int]) -> int:
            data = b"".join(bytes(part) for part in parts)
            underlay = self.datapath.underlay
            peer = None
            if underlay is not None:
                peer = next((p for p in underlay.peers.values() if p.address == address), None)
            gpe = parse_vxlan_gpe(data, 0)
            arrival = decode_nsh(data, _GPE_SIZE, peer, gpe.vni)
            hop = self.hop(
                "egress",
                kind="underlay",
                node_to=peer.name if peer is not None else None,
                address=f"{address[0]}:{address[1]}",
            )
            if not isinstance(arrival, str):
                port = peer.ports.get(gpe.vni) if peer is not None else None
                hop["port"] = port.name if port is not None else None
                hop["frame"] = fields_of(arrival.frame, parse_frame(arrival.frame, VNET_HDR_LEN))
                hop["nsh"] = {
                    "vni": arrival.vni,
                    "spi": arrival.spi,
                    "si": arrival.si,
                    "ttl": arrival.ttl,
                    "tags": list(arrival.tags),
                    "switched": arrival.spi == SPI_SWITCHED,
                }
                hop["arrival"] = {
                    "vni": arrival.vni,
                    "spi": arrival.spi,
                    "si": arrival.si,
                    "ttl": arrival.ttl,
                    "tags": list(arrival.tags),
                    "fixed": arrival.fixed,
                    "frame": arrival.frame[VNET_HDR_LEN:].hex(),
                }
            return len(data) if self.dry else original(parts, address)

        return sendmsg


def _tables(function: Function) -> dict[str, Any]:
    try:
        return function.tables()
    except (FunctionLoadError, ValueError, KeyError, AttributeError):
        return {}


# -- one frame, from its port to its end ------------------------------------------
def ingress(recorder: PathRecorder, port: SwitchPort, frame: bytes, *, bypass: bool) -> None:
    """The stages a frame meets before the datapath's code decides: its port and
    network, its parse, the fast path, port security and the rate limits.

    With `bypass`, a fused entry the frame would take is set aside while it
    is recorded (`restore_fused` puts it back), so that every stage is seen.
    """
    info = parse_frame(frame, VNET_HDR_LEN)
    recorder.hop(
        "ingress",
        port=port.name,
        kind=port.kind.value,
        host=port.host,
        network=port.network.name if port.network is not None else None,
        frame=fields_of(frame, info),
    )
    if info.error is not None:
        recorder.hop("parse", ok=False, reason=info.error.value)
        return
    fast = port.fast
    key = info[FLOW_START:FLOW_END]
    fused = fast.get(key) if fast is not None and info.ip_version else None
    if fused is None:
        recorder.hop("fast-path", hit=False, why="no fused entry for this flow on the port")
    else:
        from pktchain.node.dataplane.datapath import Datapath

        fits = Datapath._fast_fits(fused, frame, info)
        recorder.hop(
            "fast-path",
            hit=fits,
            out=fused.out.name,
            functions=len(fused.leases),
            why="a fused entry carries the flow: one lookup and one rewrite"
            if fits
            else "a fused entry exists, but this packet may not take it "
            "(SYN/FIN/RST, fragment, TTL, size or MAC)",
        )
        if fits and bypass and fast is not None:
            del fast[key]
            recorder.set_aside = (fast, key, fused)
    guard = port.guard
    if guard is None:
        recorder.hop("port-security", secured=False)
    else:
        refused = guard.check(frame, info)
        recorder.hop(
            "port-security",
            secured=True,
            ok=refused is None,
            **({"reason": refused} if refused is not None else {}),
        )
    policer = port.policer
    if policer is not None:
        now = recorder.datapath.now
        buckets = {
            name: round(bucket.tokens(now), 1)
            for name in ("arp", "icmp_router", "flood", "slow_path")
            if (bucket := getattr(policer, name)) is not None
        }
        recorder.hop("rate-limits", held=policer.hold, tokens=buckets)


def restore_fused(recorder: PathRecorder) -> None:
    """Put back the fused entry `ingress` set aside, unless the frame made a new one
    or a lease it stood for was revoked meanwhile."""
    aside = recorder.set_aside
    if aside is None:
        return
    recorder.set_aside = None
    table, key, fused = aside
    if key not in table and all(lease.valid for lease in fused.leases):
        table[key] = fused


def run_frame(recorder: PathRecorder, port: SwitchPort, frame: bytes) -> dict[str, Any]:
    """Record `frame` (virtio-net header first) received on `port`, all the way."""
    datapath = recorder.datapath
    ingress(recorder, port, frame, bypass=True)
    fused, refused = datapath.fused, Counter(datapath.fuse_refused)
    recorder.install()
    try:
        datapath._forward(port, (frame,), None, 0)
    finally:
        recorder.remove()
        restore_fused(recorder)
    _fusing(recorder, fused, refused)
    return summary(recorder.hops)


def run_arrival(recorder: PathRecorder, port: SwitchPort, arrival: Any) -> dict[str, Any]:
    """Record a datagram from another node (`port` is that peer's port here)."""
    datapath = recorder.datapath
    info = parse_frame(arrival.frame, VNET_HDR_LEN)
    recorder.hop(
        "ingress",
        port=port.name,
        kind=port.kind.value,
        host=port.host,
        network=port.network.name if port.network is not None else None,
        frame=fields_of(arrival.frame, info),
        nsh={"spi": arrival.spi, "si": arrival.si, "ttl": arrival.ttl, "tags": list(arrival.tags)},
    )
    fused, refused = datapath.fused, Counter(datapath.fuse_refused)
    recorder.install()
    try:
        if arrival.spi == SPI_SWITCHED:
            datapath._forward(port, (arrival.frame,), None, 0)
        else:
            steering = datapath.steering
            akey = (arrival.spi << 8 | arrival.si, info[FLOW_START:FLOW_END])
            if steering is not None and akey in steering.arrival_fast:
                recorder.hop("fast-path", hit=True, why="a fused entry carries the flow's NSH")
                del steering.arrival_fast[akey]  # the copy's: every stage is seen
            datapath._arrive(port, arrival)
    finally:
        recorder.remove()
    _fusing(recorder, fused, refused)
    return summary(recorder.hops)


_NOT_FUSED = {
    "first-packet": "a flow earns its fused entry with its second packet",
    "function-not-cached": "a function forwarded it without a flow lease: "
    "the flow's packets keep reaching that function",
    "function-fanout": "a function sent it out on more than one interface",
    "function-error": "a function failed on it",
    "flood": "it was flooded: a fused entry has one way out",
    "tap": "a tap copies it: taps stay on the slow path",
    "nsh-function": "it crossed an NSH-aware function",
    "icmp-error": "an ICMP error follows the flow it quotes, on the slow path",
    "lease-revoked": "a function revoked its lease while the packet crossed",
    "port-security": "an ICMPv6 message from a secured port other than an echo: "
    "it is checked packet by packet",
    "table-full": "the port's table of fused entries is full",
}
"""Why a packet made no fused entry, by the datapath's reason (`Datapath.fuse_refused`)."""


def _fusing(recorder: PathRecorder, fused: int, refused: Counter[str]) -> None:
    """Whether the packet made a fused entry, and why not; said of a packet that
    left by a port (a dropped one's copies, such as an ICMP error, make none)."""
    if not any(hop["stage"] == "egress" and not hop.get("copy") for hop in recorder.hops):
        return
    datapath = recorder.datapath
    if datapath.fused > fused:
        recorder.hop(
            "fast-path-install",
            installed=True,
            why="every function forwarded with a lease: later packets take the fused entry",
        )
        return
    for reason, count in datapath.fuse_refused.items():
        if count > refused.get(reason, 0):
            why = _NOT_FUSED.get(reason, "")
            recorder.hop("fast-path-install", installed=False, reason=reason, why=why)
            return


def summary(hops: list[Hop]) -> dict[str, Any]:
    """The trace's outcome from its hops: delivered (and where) or dropped (and why)."""
    terminals = [
        hop
        for hop in hops
        if not hop.get("copy")
        and (
            hop["stage"] in ("egress", "drop")
            or (hop["stage"] == "function" and hop.get("verdict") in ("drop", "reply", "error"))
            or (hop["stage"] == "parse" and not hop.get("ok", True))
        )
    ]
    egresses = [hop for hop in terminals if hop["stage"] == "egress"]
    if egresses:
        result: dict[str, Any] = {
            "result": "delivered",
            "egress": egresses[0].get("port"),
            "reason": None,
        }
        if len(egresses) > 1:
            result["egresses"] = [hop.get("port") for hop in egresses]
        return {"hops": hops, **result}
    if not terminals:
        return {"hops": hops, "result": "dropped", "egress": None, "reason": "no-egress"}
    last = terminals[-1]
    reason = str(last.get("reason", "dropped"))
    if last["stage"] == "function":
        reason = f"{last['function']}: {reason}"
    return {"hops": hops, "result": "dropped", "egress": None, "reason": reason}
