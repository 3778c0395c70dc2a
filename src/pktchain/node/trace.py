"""`pktchain trace` in the node: where would a packet go, where did it go.

A **dry run** (`Tracing.dry`) describes a packet by its fields (or takes a
whole frame), completes it from the node's tables (the source MAC and
address are the ingress port's host's; the destination MAC the destination
host's when it is on the ingress port's network, else the router's there),
and runs it through the node's real datapath in a forked copy of the node
(`pktchain.linux.sandbox`): nothing is sent, and whatever the packet would
change (MAC learning, flow entries, NAT sessions, counters) changes in the
copy only. The stages come from `pktchain.node.dataplane.pathrecord`. The
node's loop does not wait for the copy: it reads the result when the pipe
is readable. When the packet leaves for another node of the cluster, that
node is asked (its REST API, from the cluster's registry) to trace it as it
would arrive there, NSH and all, and its hops are added, each with its node.

A **live** trace (`Tracing.live`) marks the next packets that match a filter
on the node's ports and records the path each actually took, with the time
of each stage; marked packets take the slow path (their fused entry is set
aside while they are recorded), so every function they cross is seen.

Requests are dicts (the control socket's and the REST API's bodies); every
mistake is a `TraceRequestError` naming its field.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pktchain.linux.sandbox import SandboxError, fork_call
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.control import Deferred
from pktchain.node.dataplane.pathrecord import PathRecorder, run_arrival, run_frame
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.dataplane.underlay import Arrival
from pktchain.packet.address import mac_bytes
from pktchain.packet.describe import DescriptionError, FrameFilter, PacketSpec
from pktchain.packet.parse import parse_frame
from pktchain.sfc.resources import Port

if TYPE_CHECKING:
    from typing import Protocol

    from pktchain.cluster.view import ClusterView
    from pktchain.eventloop import EventLoop
    from pktchain.functions.router.function import Router
    from pktchain.node.chaining import Chaining
    from pktchain.node.dataplane.datapath import Datapath
    from pktchain.node.dataplane.functions import FunctionHost
    from pktchain.node.dataplane.ports import SwitchPort

    class NodeSettings(Protocol):
        @property
        def name(self) -> str: ...

        @property
        def api_token(self) -> str | None: ...

    class Node(Protocol):
        """What a trace reads of the node (`pktchain.node.daemon.Node`)."""

        @property
        def config(self) -> NodeSettings: ...

        @property
        def datapath(self) -> Datapath: ...

        @property
        def loop(self) -> EventLoop: ...

        @property
        def ports(self) -> dict[str, SwitchPort]: ...

        @property
        def functions(self) -> dict[str, FunctionHost]: ...

        @property
        def router(self) -> Router | None: ...

        @property
        def router_host(self) -> FunctionHost | None: ...

        @property
        def chaining(self) -> Chaining: ...

        @property
        def cluster(self) -> ClusterView | None: ...


__all__ = ["DRY_RUN_TIMEOUT", "MAX_LIVE_COUNT", "LiveTrace", "TraceRequestError", "Tracing"]

log = logging.getLogger(__name__)

DRY_RUN_TIMEOUT = 10.0
"""Seconds a dry run may take (the forked copy is killed then)."""
MAX_LIVE_COUNT = 1000
"""Packets one live trace may mark, at most."""
MAX_LIVE_TIMEOUT = 3600.0
REMOTE_TIMEOUT = 15.0
"""Seconds the next node of the cluster has to answer its part of a dry run."""
_ZERO_VNET = bytes(VNET_HDR_LEN)
_BROADCAST = b"\xff" * 6


class TraceRequestError(ValueError):
    """A trace request that names a wrong field; `field` is its name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def reply(self) -> dict[str, Any]:
        return {"ok": False, "error": str(self), "field": self.field}


def _words(value: object, field: str) -> list[str]:
    """FIELD=VALUE words: a list of strings, or a mapping of field to value."""
    if isinstance(value, Mapping):
        return [f"{name}={text}" for name, text in value.items()]
    if isinstance(value, list) and all(isinstance(word, str) for word in value):
        return list(value)
    raise TraceRequestError(field, "a list of FIELD=VALUE strings or an object of fields")


def _description(error: DescriptionError, field: str) -> TraceRequestError:
    return TraceRequestError(f"{field}.{error.errors[0][0]}", str(error))


@dataclass(frozen=True)
class Neighbour:
    """An address the node knows the MAC of, and where."""

    ip: bytes
    mac: bytes
    network: str | None
    router: bool = False


class Tracing:
    """The node's traces: dry runs and live ones (see the module)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.live_trace: LiveTrace | None = None

    # -- requests ---------------------------------------------------------------
    def dry(self, request: Mapping[str, Any]) -> Deferred:
        """Start a dry run; the Deferred's reply is ``{"ok": true, "trace": {...}}``."""
        deferred = Deferred()
        try:
            if "arrival" in request:
                port, arrival = self._arrival(request["arrival"])
                work = self._arrival_work(port, arrival)
            else:
                port, frame, packet = self._frame(request)
                work = self._frame_work(port, frame, packet)
        except TraceRequestError as exc:
            deferred.done(exc.reply())
            return deferred
        self._fork(work, deferred)
        return deferred

    def live(self, request: Mapping[str, Any]) -> Deferred:
        """Arm a live trace; the Deferred's reply comes with its packets or its timeout."""
        deferred = Deferred()
        try:
            trace = self._live(request, deferred)
        except TraceRequestError as exc:
            deferred.done(exc.reply())
            return deferred
        if self.live_trace is not None:
            deferred.done({"ok": False, "error": "a live trace is already armed on this node"})
            return deferred
        self.live_trace = trace
        datapath = self.node.datapath
        datapath.live = trace
        if datapath.kernel is not None:  # the kernel's packets never reach the trace
            ports = datapath.ports if trace.port is None else [trace.port]
            datapath.kernel.watch(getattr(port, "node_ifindex", 0) for port in ports)
        trace.timer = self.node.loop.call_later(trace.timeout, trace.finish)
        return deferred

    # -- the packet ----------------------------------------------------------------
    def _port(self, request: Mapping[str, Any], field: str = "from") -> SwitchPort:
        name = request.get(field)
        if not isinstance(name, str) or not name:
            raise TraceRequestError(field, "the ingress port's name is required")
        port = self.node.ports.get(name)
        if port is None:
            known = ", ".join(sorted(self.node.ports))
            raise TraceRequestError(field, f"no port {name!r} on this node (ports: {known})")
        if port.kind is PortKind.FUNCTION:
            raise TraceRequestError(field, f"{name} is a function's port: trace from a host's")
        return port

    def _frame(self, request: Mapping[str, Any]) -> tuple[SwitchPort, bytes, dict[str, Any]]:
        port = self._port(request)
        given = [key for key in ("fields", "frame") if request.get(key) is not None]
        if len(given) != 1:
            raise TraceRequestError("fields", "give the packet's fields or a whole frame")
        if given[0] == "frame":
            text = request["frame"]
            try:
                frame = bytes.fromhex(text) if isinstance(text, str) else b""
            except ValueError:
                frame = b""
            if len(frame) < 14:
                raise TraceRequestError("frame", "an Ethernet frame in hex (14 bytes or more)")
            return port, _ZERO_VNET + frame, {"source": "frame"}
        try:
            spec = PacketSpec.parse(_words(request["fields"], "fields"))
        except DescriptionError as exc:
            raise _description(exc, "fields") from None
        packet: dict[str, Any] = {"source": "fields"}
        eth_src = spec.eth_src or self._port_mac(port)
        if eth_src is None:
            raise TraceRequestError("fields.eth.src", f"port {port.name} has no known MAC: give it")
        src = None
        if spec.src is None:
            src = self._port_address(port, spec.version)
        eth_dst = spec.eth_dst
        if eth_dst is None:
            eth_dst, packet["eth.dst"] = self._destination_mac(port, spec.dst.packed)
        try:
            frame = spec.frame(eth_src=eth_src, eth_dst=eth_dst, src=src)
        except DescriptionError as exc:
            raise _description(exc, "fields") from None
        return port, _ZERO_VNET + frame, packet

    def _port_mac(self, port: SwitchPort) -> bytes | None:
        if port.mac:
            return mac_bytes(port.mac)
        if port.guard is not None:
            for mac, _networks in port.guard.security.grants:
                return mac_bytes(mac)
        return None

    def _port_address(self, port: SwitchPort, version: int) -> bytes | None:
        for model_port in self._model_ports():
            if port.name in {model_port.node_port, model_port.name}:
                for address in model_port.ip_addresses:
                    if address.version == version:
                        return address.packed
        return None

    def _model_ports(self) -> tuple[Port, ...]:
        return self.node.chaining.model.list(Port)

    def neighbours(self) -> list[Neighbour]:
        """Every address whose MAC the node knows: Neutron ports, the router's own
        interfaces and its neighbour cache."""
        found: list[Neighbour] = []
        for model_port in self._model_ports():
            if not model_port.mac_address:
                continue
            mac = mac_bytes(model_port.mac_address)
            network = self._network_of(mac)
            for address in model_port.ip_addresses:
                found.append(Neighbour(address.packed, mac, network))
        node = self.node
        router, host = node.router, node.router_host
        if router is not None and host is not None:
            for interface in router.interfaces():
                router_port = host.ports.get(interface.name)
                network = router_port.network.name if router_port and router_port.network else None
                found.append(
                    Neighbour(
                        interface.address.ip.packed, mac_bytes(interface.mac), network, router=True
                    )
                )
            for row in router.arp_table():
                if row.mac is None:
                    continue
                router_port = host.ports.get(row.interface)
                network = router_port.network.name if router_port and router_port.network else None
                found.append(
                    Neighbour(ipaddress.ip_address(row.ip).packed, mac_bytes(row.mac), network)
                )
        return found

    def _network_of(self, mac: bytes) -> str | None:
        for network in self.node.datapath.networks.values():
            if mac in network.macs.entries:
                return network.name
            text = mac.hex(":")
            if any(port.mac == text for port in network.ports):
                return network.name
        return None

    def _destination_mac(self, port: SwitchPort, dst: bytes) -> tuple[bytes, str]:
        """The destination MAC a host on `port` would use for `dst`, and whose it is."""
        here = port.network.name if port.network is not None else None
        neighbours = self.neighbours()
        for neighbour in neighbours:
            if neighbour.ip == dst and neighbour.network == here:
                what = "the router's" if neighbour.router else "the destination host's"
                return neighbour.mac, f"{what} (on network {here})"
        for neighbour in neighbours:
            if neighbour.router and neighbour.network == here:
                return neighbour.mac, f"the router's (the gateway of network {here})"
        for neighbour in neighbours:
            if neighbour.ip == dst:
                return neighbour.mac, "the destination host's (on another network)"
        raise TraceRequestError(
            "fields.eth.dst",
            f"no host or router on network {here} is known for {ipaddress.ip_address(dst)}: "
            "give eth.dst",
        )

    def _arrival(self, data: object) -> tuple[SwitchPort, Arrival]:
        """NSH another node would send: the peer's port and the decoded arrival."""
        if not isinstance(data, Mapping):
            raise TraceRequestError("arrival", "an object")
        underlay = self.node.datapath.underlay
        sender = data.get("from_node")
        peer = underlay.peers.get(sender) if underlay is not None and sender else None
        if peer is None:
            raise TraceRequestError("arrival.from_node", f"{sender!r} is not a peer of this node")
        try:
            vni, spi, si, ttl = (int(data[name]) for name in ("vni", "spi", "si", "ttl"))
            tags = tuple(int(tag) for tag in data.get("tags", ()))
            frame = bytes.fromhex(str(data["frame"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TraceRequestError(
                "arrival", f"vni, spi, si, ttl, tags and frame: {exc}"
            ) from None
        port = peer.ports.get(vni)
        if port is None:
            raise TraceRequestError("arrival.vni", f"no network of this node has VNI {vni}")
        arrival = Arrival(
            peer, vni, spi, si, ttl, tags, _ZERO_VNET + frame, fixed=bool(data.get("fixed"))
        )
        return port, arrival

    # -- dry runs ------------------------------------------------------------------
    def _recorder(self, *, dry: bool) -> PathRecorder:
        node = self.node
        node.datapath.now = node.loop.now
        return PathRecorder(
            node.datapath, list(node.functions.values()), dry=dry, node=node.config.name
        )

    def _frame_work(
        self, port: SwitchPort, frame: bytes, packet: dict[str, Any]
    ) -> Callable[[], Any]:
        def work() -> Any:
            trace = run_frame(self._recorder(dry=True), port, frame)
            trace["packet"] = packet
            return trace

        return work

    def _arrival_work(self, port: SwitchPort, arrival: Arrival) -> Callable[[], Any]:
        return lambda: run_arrival(self._recorder(dry=True), port, arrival)

    def _fork(self, work: Callable[[], Any], deferred: Deferred) -> None:
        loop = self.node.loop
        call = fork_call(work)

        def readable() -> None:
            if not call.read():
                return
            loop.remove_reader(call.fd)
            timer.cancel()
            try:
                trace = call.result()
            except SandboxError as exc:
                deferred.done({"ok": False, "error": f"dry run failed: {exc}"})
                return
            self._continue(trace, deferred)

        def timeout() -> None:
            loop.remove_reader(call.fd)
            call.kill()
            deferred.done({"ok": False, "error": f"dry run took more than {DRY_RUN_TIMEOUT:g} s"})

        timer = loop.call_later(DRY_RUN_TIMEOUT, timeout)
        loop.add_reader(call.fd, readable)

    def _continue(self, trace: dict[str, Any], deferred: Deferred) -> None:
        """Ask the next node of the cluster for its part, if the packet goes there."""
        arrivals = [hop.pop("arrival", None) for hop in trace["hops"]]
        egresses = [
            (hop, arrival)
            for hop, arrival in zip(trace["hops"], arrivals, strict=True)
            if hop["stage"] == "egress" and not hop.get("copy")
        ]
        # Followed when the packet itself leaves for one other node: a packet
        # flooded to several ports is shown leaving, not followed on each node.
        if len(egresses) != 1 or egresses[0][1] is None:
            deferred.done({"ok": True, "trace": trace})
            return
        last, arrival = egresses[0]
        target = last.get("node_to")
        view = self.node.cluster
        record = view.nodes.get(target) if view is not None and target else None
        if record is None or not record.api:
            trace["reason"] = f"continues on node {target}, whose API is not known"
            deferred.done({"ok": True, "trace": trace})
            return
        api_host = urllib.parse.urlsplit(record.api).hostname or ""
        if _loopback(api_host) and not (record.underlay and _loopback(record.underlay[0])):
            # A loopback API on a node reached over a real underlay is in another
            # namespace or machine: asking that address would reach this node's own.
            trace["reason"] = (
                f"continues on node {target}, whose API listens on {record.api}, "
                "which other nodes cannot reach (serve it on an address they can: --api)"
            )
            deferred.done({"ok": True, "trace": trace})
            return
        body = {"arrival": {**arrival, "from_node": self.node.config.name}}
        token = self.node.config.api_token
        loop = self.node.loop

        def ask() -> None:
            try:
                remote = _post(f"{record.api}/v2.0/pktchain/trace", body, token)
                part = remote["trace"]
                trace["hops"].extend(part["hops"])
                for key in ("result", "egress", "reason", "egresses"):
                    if key in part:
                        trace[key] = part[key]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                trace["reason"] = f"continues on node {target}, which did not answer: {exc}"
            loop.call_soon_threadsafe(lambda: deferred.done({"ok": True, "trace": trace}))

        threading.Thread(target=ask, name="trace-next-node", daemon=True).start()

    # -- live traces ---------------------------------------------------------------
    def _live(self, request: Mapping[str, Any], deferred: Deferred) -> LiveTrace:
        port = None
        if request.get("from") is not None:
            port = self._port(request)
        try:
            match = FrameFilter.parse(_words(request.get("fields") or [], "fields"))
        except DescriptionError as exc:
            raise _description(exc, "fields") from None
        count = request.get("count", 1)
        if (
            not isinstance(count, int)
            or isinstance(count, bool)
            or not 1 <= count <= MAX_LIVE_COUNT
        ):
            raise TraceRequestError("count", f"a whole number from 1 to {MAX_LIVE_COUNT}")
        timeout = request.get("timeout", 10.0)
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not 0 < timeout <= MAX_LIVE_TIMEOUT
        ):
            raise TraceRequestError("timeout", f"seconds, above 0 and at most {MAX_LIVE_TIMEOUT:g}")
        return LiveTrace(self, port, match, count, float(timeout), deferred)


class LiveTrace:
    """An armed live trace: the datapath hands it each batch while it is armed."""

    def __init__(  # noqa: PLR0917 - built in one place
        self,
        tracing: Tracing,
        port: SwitchPort | None,
        match: FrameFilter,
        count: int,
        timeout: float,
        deferred: Deferred,
    ) -> None:
        self.tracing = tracing
        self.port = port
        self.match = match
        self.count = count
        self.timeout = timeout
        self.deferred = deferred
        self.packets: list[dict[str, Any]] = []
        self.started = time.monotonic()
        self.timer: Any = None

    def forward(
        self,
        port: SwitchPort,
        frames: Iterable[bytes | bytearray],
        trace: Any,
        depth: int,
        via: Any = None,
    ) -> None:
        """The datapath's `_forward` for a batch while armed: matching frames are
        recorded one by one, the others forwarded in runs, in order."""
        datapath = self.tracing.node.datapath
        if self.port is not None and port is not self.port:
            datapath._forward(port, frames, trace, depth, via)
            return
        run: list[bytes | bytearray] = []
        for frame in frames:
            if len(self.packets) < self.count and self._matches(frame):
                if run:
                    datapath._forward(port, run, trace, depth, via)
                    run = []
                self._record(port, bytes(frame))
            else:
                run.append(frame)
        if run:
            datapath._forward(port, run, trace, depth, via)
        if len(self.packets) >= self.count:
            self.finish()

    def _matches(self, frame: bytes | bytearray) -> bool:
        if len(frame) < VNET_HDR_LEN + 14:
            return False
        return self.match.matches(frame, parse_frame(frame, VNET_HDR_LEN))

    def _record(self, port: SwitchPort, frame: bytes) -> None:
        recorder = self.tracing._recorder(dry=False)
        at = time.monotonic()
        trace = run_frame(recorder, port, frame)
        trace["monotonic"] = round(at, 6)
        self.packets.append(trace)

    def finish(self) -> None:
        """Disarm (count reached, or timeout) and reply with what was recorded."""
        tracing = self.tracing
        if tracing.live_trace is self:
            tracing.live_trace = None
            datapath = tracing.node.datapath
            datapath.live = None
            if datapath.kernel is not None:
                datapath.kernel.unwatch(datapath.kernel_tables())
        if self.timer is not None:
            self.timer.cancel()
        self.deferred.done(
            {
                "ok": True,
                "packets": self.packets,
                "complete": len(self.packets) >= self.count,
                "waited": round(time.monotonic() - self.started, 3),
            }
        )


def _loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is a loopback one."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _post(url: str, body: dict[str, Any], token: str | None) -> dict[str, Any]:
    """POST `body` as JSON to another node's API; its JSON answer."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=REMOTE_TIMEOUT) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ValueError(f"HTTP {exc.code}: {exc.read()[:200]!r}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
