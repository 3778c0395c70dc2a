"""Service-chain steering in the node: compiled chains and per-flow pinned paths.

The chaining model (`pktchain.sfc`) is compiled into a `SteeringPlan`: for each
port chain, its classifiers and its ordered groups of port pairs, with node
port names in place of model ids.  `Steering` applies a plan to live traffic.

How a flow is steered.  The first packet of a flow that arrives on a port
named as some classifier's logical source port, and matches that classifier,
is *classified*: one port pair is chosen in each group of the chain (weighted
rendezvous hash of the group's `lb_fields`, so that each pair gets its weight's
share of the flows), and a flow entry is installed for every hop of that path
in the flow table of the port the packet will arrive on at that hop:

    source port     --key-->  send to pair 1's ingress port, dst MAC := its MAC
    pair 1 egress   --key-->  send to pair 2's ingress port, dst MAC := its MAC
    ...
    pair N egress   --key-->  normal switching (restoring the original dst MAC
                              if the function left our rewrite in place)

For a symmetric chain the reverse entries are installed at the same time, on
the classifier's logical destination port and then on each chosen pair's
ingress port, in reverse order, so that replies cross the very same instances
whatever the hash would say.  Later packets of the flow find their entry with
one dict lookup on the port they arrive on; the chain's length does not
matter.  A flow that matches no classifier gets a "normal" entry, so it is not
classified again until the plan changes.

What a change does (the semantics of live updates):

- a new plan applies to new flows at once: flows that were not steered (their
  "normal" entries) are classified again on their next packet;
- a flow already steered keeps its pinned path, even if its chain's groups or
  classifiers change, so that a long transfer is not moved under its feet;
- unless a port pair of its path is gone (deleted, or removed from its group,
  or its chain deleted): then the flow's entries are removed and its next
  packet is classified again (re-pinned) under the current plan.

Functions that translate.  A native function that rewrites addresses or
ports (a NAT) changes the key the rest of the path was installed under.  The
datapath knows which entry steered the packet into the function (functions
answer within its call), so what the function sends back on the port its hop
returns on goes on along that path (`follow`), and the flow's entries beyond
the hop take the new key, the reverse path's its reverse: later packets and
the replies to the translated address follow too.  ICMP errors go along the
path of the flow whose packet they quote (`related`).

Flows idle for longer than the idle timeout are forgotten, and with the table
full the oldest flow makes room for a new one (`_make_room`).  Tap groups send
a copy to the chosen tap function; what that function sends back from its
egress port is dropped (`tap-return`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pktchain.functions.common.embedded import Unusable, parse_embedded
from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.dataplane.underlay import (
    INITIAL_SI,
    INITIAL_TTL,
    REVERSE_SPI,
    NshHeader,
    network_vni,
    node_mac,
)
from pktchain.packet.headers import TCP as TCP_HEADER
from pktchain.packet.headers import TcpFlag
from pktchain.sfc.plan import (
    ChainPlan,
    ClassifierPlan,
    GroupPlan,
    PairPlan,
    PathDirection,
    SteeringPlan,
)
from pktchain.sfc.resources import LbField

if TYPE_CHECKING:
    from pktchain.functions.sdk import FlowLease
    from pktchain.node.dataplane.fastpath import FusedEntry
    from pktchain.node.dataplane.ports import SwitchPort
    from pktchain.node.dataplane.underlay import Arrival, Underlay
    from pktchain.packet.parse import FrameInfo

log = logging.getLogger(__name__)

FlowKey = tuple[bytes, bytes, int, int, int]
"""(source IP, destination IP, protocol, source port, destination port) as parsed."""

ArrivalKey = tuple[int, FlowKey]
"""(SPI << 8 | SI, inner flow key) of NSH arriving from another node."""

DEFAULT_IDLE_TIMEOUT = 300.0
DEFAULT_MAX_FLOWS = 262_144
MAX_TRANSLATIONS = 16
"""5-tuples one flow may be translated to along its path (each hop that
translates it adds one): a function that gives each packet a new one does
not grow the flow table without bound."""
TAP_RETURN = "tap-return"
"""The drop reason of what a tap function sends back."""

ETH_DST = VNET_HDR_LEN
ETH_SRC = VNET_HDR_LEN + 6
ETH_TYPE = VNET_HDR_LEN + 12
ICMP = 1
TCP = 6
UDP = 17
ICMPV6 = 58
_SEQ_AT = TCP_HEADER.offset("seq")


class HopCounters:
    """Packets, bytes and flows through one port pair of one chain, in one direction."""

    __slots__ = ("bytes", "chain", "direction", "flows", "group", "packets", "pair")

    def __init__(
        self, chain: ChainPlan, group: int, pair: PairPlan, direction: PathDirection
    ) -> None:
        self.chain = chain
        self.group = group
        self.pair = pair
        self.direction = direction
        self.packets = 0
        self.bytes = 0
        self.flows = 0


class Flow:
    """One steered (or deliberately unsteered) flow and the entries it installed."""

    __slots__ = (
        "arrivals",
        "chain",
        "entries",
        "isn",
        "key",
        "lease",
        "packets",
        "pairs",
        "path",
        "seen",
        "skipped",
        "started",
        "translations",
    )

    def __init__(self, key: FlowKey, chain: ChainPlan | None, now: float, isn: bytes = b"") -> None:
        self.key = key
        self.chain = chain
        self.isn = isn
        """The initial sequence number of the TCP SYN that opened the flow
        (`syn_isn`), b"" when its first packet was no SYN."""
        self.pairs: list[tuple[GroupPlan, PairPlan]] = []
        self.skipped: set[str] = set()
        """Groups its path passed over for want of a live instance: when one comes,
        the flow is pinned again (`Steering.apply`)."""
        self.entries: list[tuple[SwitchPort, FlowKey]] = []
        """Every (port, key) it holds an entry under: its own key and the keys
        its translated packets carry (`Steering.follow`)."""
        self.path: list[tuple[SwitchPort, FlowEntry]] = []
        """The entries of its path as placed, each once (whatever keys it holds)."""
        self.translations: list[FlowKey] = []
        """The 5-tuples functions of its path translated it to, in order."""
        self.arrivals: list[ArrivalKey] = []
        """Its entries for NSH from other nodes (`Steering.arrivals`)."""
        self.started = now
        self.seen = now
        self.packets = 0
        self.lease: FlowLease | None = None
        """Made when a fused fast-path entry depends on this flow; revoked with it."""


class FlowEntry:
    """What to do with a packet of `flow` arriving on the port whose table holds this.

    `out` None means normal switching (after restoring the destination MAC
    when it still is `restore_from`).  `drop` set means drop with that reason.
    `first` marks the entry where the flow was classified: a TCP SYN arriving
    there with another initial sequence number than the flow's opens a new
    connection on the same 5-tuple (a client reusing its port), which is
    classified afresh rather than inheriting the old path.  The same SYN sent
    again (no SYN-ACK in time) belongs to the connection it opened.

    `gap` places the entry on its path: it takes frames that have crossed
    `gap` hops of the path counted in the forward direction (0: before the
    first; the reverse path counts down, from the number of hops at the
    destination to 0 back at the source), and `reverse` says which way they
    travel.  -1 for entries of no path (unsteered flows).  A function that
    changes a packet's 5-tuple moves every entry beyond its hop to the new
    key (`Steering.follow`).
    """

    __slots__ = (
        "drop",
        "first",
        "flow",
        "gap",
        "hop",
        "learn",
        "mac",
        "nsh",
        "out",
        "restore_from",
        "restore_to",
        "reverse",
        "taps",
    )

    def __init__(
        self,
        flow: Flow,
        *,
        out: SwitchPort | None = None,
        mac: bytes = b"",
        taps: tuple[tuple[SwitchPort, bytes, HopCounters], ...] = (),
        hop: HopCounters | None = None,
        learn: bool = True,
        restore_from: bytes | None = None,
        restore_to: bytes = b"",
        drop: str | None = None,
        first: bool = False,
        nsh: NshHeader | None = None,
        gap: int = -1,
        reverse: bool = False,
    ) -> None:
        self.flow = flow
        self.gap = gap
        self.reverse = reverse
        self.nsh = nsh
        """The NSH to send the frame with: when `out` is another node (a
        `PeerPort`) or an NSH-aware function; and at the end of a path that
        crosses nodes (`out` None), where the switch sends the frame to another
        node.  Its inner destination is restored first, as at a path's end."""
        self.first = first
        self.out = out
        self.mac = mac
        self.taps = taps
        self.hop = hop
        self.learn = learn
        self.restore_from = restore_from
        self.restore_to = restore_to
        self.drop = drop


@dataclass
class SteeringStats:
    classified: int = 0
    unclassified: int = 0
    repinned: int = 0
    expired: int = 0
    table_full: int = 0
    path_loops: int = 0
    joined: int = 0
    """Flows whose path this node joined from NSH another node sent."""
    l7_pending: int = 0
    """Packets switched unsteered while their flow waited for its first payload."""
    translated: int = 0
    """Times a function of a path changed a flow's 5-tuple and the flow's
    entries beyond it took the new one (`Steering.follow`)."""
    translation_collisions: int = 0
    """Translated 5-tuples that another steered flow held: that flow was forgotten."""
    translations_refused: int = 0
    """Translations not installed: the flow had `MAX_TRANSLATIONS` already."""
    related: int = 0
    """ICMP errors steered along the path of the flow whose packet they quote."""


@dataclass
class Steering:
    """Applies a `SteeringPlan` to the node's ports; see the module docstring."""

    ports: Mapping[str, SwitchPort]
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_flows: int = DEFAULT_MAX_FLOWS
    plan: SteeringPlan = field(default_factory=SteeringPlan)
    now: float = 0.0

    def __post_init__(self) -> None:
        self.flows: OrderedDict[int, Flow] = OrderedDict()
        """id(flow) -> flow, oldest first: when the table is full, the oldest makes room."""
        self.stats = SteeringStats()
        self.counters: dict[tuple[str, int, str, PathDirection], HopCounters] = {}
        self._by_source: dict[str, list[tuple[ClassifierPlan, ChainPlan]]] = {}
        self._by_spi: dict[int, ChainPlan] = {}
        self._steered_ports: set[str] = set()
        self.underlay: Underlay | None = None
        """Set on a node of a cluster: where pairs of other nodes are reached."""
        self.node_mac = node_mac("pktchain")
        """The source MAC of NSH this node sends its NSH-aware functions."""
        self.arrivals: dict[ArrivalKey, FlowEntry] = {}
        """What to do with NSH from other nodes, by SPI, SI and inner flow."""
        self.arrival_fast: dict[ArrivalKey, FusedEntry] = {}
        """Fused entries of journeys that began with NSH from another node."""

    # -- plans ---------------------------------------------------------------
    def apply(self, plan: SteeringPlan) -> None:
        """Make `plan` the current one (see the module docstring for what flows do)."""
        unknown = sorted(plan.port_names() - set(self.ports))
        if unknown:
            raise ValueError(f"plan uses ports the node does not have: {', '.join(unknown)}")
        old = self.plan
        self.plan = plan
        # Fused fast-path entries were made under the old plan: new flows must
        # meet the new one, and steered flows find their pinned path again.
        for port in self.ports.values():
            if port.fast:
                port.fast.clear()  # the kernel's copies (kfastpath.KernelTable) too
            port.fast = None
        self.arrival_fast = {}
        self._by_source = {}
        self._by_spi = {chain.spi: chain for chain in plan.chains}
        for chain in plan.chains:
            for classifier in chain.classifiers:
                if classifier.logical_source_port is not None:
                    self._by_source.setdefault(classifier.logical_source_port, []).append(
                        (classifier, chain)
                    )
        members = plan.members()
        staffed = {group_id for group_id, _pair_id in members}
        for flow in list(self.flows.values()):
            if flow.chain is None:
                self._remove(flow)  # classify again under the new plan
            elif (
                plan.chain(flow.chain.id) is None
                or any((group.id, pair.id) not in members for group, pair in flow.pairs)
                or not flow.skipped.isdisjoint(staffed)
            ):
                # An instance it was pinned to is gone, or a group it passed over
                # for want of one has one now.
                self._remove(flow)
                self.stats.repinned += 1
        # Ports keep a table while the plan or a running flow needs one.
        wanted = plan.port_names() | {
            port.name for flow in self.flows.values() for port, _key in flow.entries
        }
        for name in self._steered_ports - wanted:
            self.ports[name].flows = None
        for name in wanted - self._steered_ports:
            self.ports[name].flows = {}
        self._steered_ports = wanted
        live_counters = {
            (chain.id, index, pair.id)
            for chain in plan.chains
            for index, group in enumerate(chain.groups)
            for pair in group.pairs
        }
        self.counters = {
            key: value for key, value in self.counters.items() if key[:3] in live_counters
        }
        if old.chains or plan.chains:
            log.info("steering plan: %d chains, %d flows kept", len(plan.chains), len(self.flows))

    # -- the slow path -------------------------------------------------------
    def classify(
        self, port: SwitchPort, frame: bytes | bytearray, info: FrameInfo, key: FlowKey
    ) -> FlowEntry:
        """First packet of a flow on a steered port: choose its path, install it."""
        table = port.flows
        if table is None:  # pragma: no cover - the datapath only calls for steered ports
            raise ValueError(f"port {port.name} is not steered")
        names: dict[str, str] | None = None
        isn = syn_isn(frame, info)
        for classifier, chain in self._by_source.get(port.name, ()):
            if not classifier.matches(info):
                continue
            if classifier.l7:
                if names is None:
                    names = l7_names(frame, info)
                    if names is None:
                        # No payload yet (a TCP handshake): switch it as it is and
                        # classify the flow on its first payload.
                        self.stats.l7_pending += 1
                        return FlowEntry(Flow(key, None, self.now, isn), first=True)
                if any(names.get(k) != v for k, v in classifier.l7):
                    continue
            return self._install(
                chain=chain,
                classifier=classifier,
                port=port,
                frame=frame,
                info=info,
                key=key,
                isn=isn,
            )
        flow = Flow(key, None, self.now, isn)
        entry = FlowEntry(flow, first=True)
        self._make_room()
        self._add_entry(flow, port, key, entry)
        self.flows[id(flow)] = flow
        self.stats.unclassified += 1
        return entry

    def _install(
        self,
        *,
        chain: ChainPlan,
        classifier: ClassifierPlan,
        port: SwitchPort,
        frame: bytes | bytearray,
        info: FrameInfo,
        key: FlowKey,
        isn: bytes,
    ) -> FlowEntry:
        flow = Flow(key, chain, self.now, isn)
        chosen: list[tuple[ChainPlan, int, GroupPlan, PairPlan]] = []
        for link in self._graph_path(chain, info):
            for index, group in enumerate(link.groups):
                pair = choose_pair(group, frame, info)
                if pair is not None:  # a group whose pairs all weigh 0 is passed over
                    chosen.append((link, index, group, pair))
                else:
                    flow.skipped.add(group.id)
        flow.pairs = [(group, pair) for _link, _index, group, pair in chosen]
        if _crosses_nodes(chosen, port, frame):
            return self._install_across(
                flow, classifier=classifier, port=port, frame=frame, key=key, chosen=chosen
            )
        ends = {port.name, classifier.logical_destination_port}

        def entry(at: SwitchPort, **kwargs: Any) -> tuple[SwitchPort, FlowEntry]:
            # Addresses are learned only from the hosts at the ends of the path:
            # a function that hands frames back unchanged must not move them.
            return at, FlowEntry(flow, learn=at.name in ends, **kwargs)

        forward: list[tuple[SwitchPort, FlowEntry]] = []
        tap_returns: list[tuple[SwitchPort, FlowEntry]] = []
        hops: list[tuple[ChainPlan, int, PairPlan]] = []
        taps: list[tuple[SwitchPort, bytes, HopCounters]] = []
        current = port
        for link, index, group, pair in chosen:
            counters = self._counters(link, index, pair, PathDirection.FORWARD)
            counters.flows += 1
            if group.tap:
                tap = self.ports[pair.ingress]
                taps.append((tap, _mac(tap), counters))
                tap_returns.append(entry(self.ports[pair.egress], drop=TAP_RETURN, gap=len(hops)))
                continue
            target = self.ports[pair.ingress]
            forward.append(
                entry(
                    current,
                    out=target,
                    mac=_mac(target),
                    taps=tuple(taps),
                    hop=counters,
                    gap=len(hops),
                )
            )
            taps = []
            hops.append((link, index, pair))
            current = self.ports[pair.egress]
        forward.append(
            entry(
                current,
                taps=tuple(taps),
                restore_from=_mac(self.ports[hops[-1][2].ingress]) if hops else None,
                restore_to=bytes(frame[ETH_DST:ETH_SRC]),
                gap=len(hops),
            )
        )

        reverse: list[tuple[SwitchPort, FlowEntry]] = []
        destination = classifier.logical_destination_port
        if chain.symmetric and destination is not None and hops:
            back = self.ports[destination]
            for gap, (link, index, pair) in zip(
                range(len(hops), 0, -1), reversed(hops), strict=True
            ):
                counters = self._counters(link, index, pair, PathDirection.REVERSE)
                counters.flows += 1
                target = self.ports[pair.egress]
                reverse.append(
                    entry(back, out=target, mac=_mac(target), hop=counters, gap=gap, reverse=True)
                )
                back = self.ports[pair.ingress]
            reverse.append(
                entry(
                    back,
                    restore_from=_mac(self.ports[hops[0][2].egress]),
                    restore_to=bytes(frame[ETH_SRC:ETH_TYPE]),
                    gap=0,
                    reverse=True,
                )
            )

        first = forward[0][1]
        first.first = True
        self._make_room()
        rkey: FlowKey = (key[1], key[0], key[2], key[4], key[3])
        placed: set[tuple[str, FlowKey]] = set()
        for at_key, (at, flow_entry) in [(key, e) for e in forward + tap_returns] + [
            (rkey, e) for e in reverse
        ]:
            if (at.name, at_key) in placed:
                # The path comes back to a port it already left from: the
                # first entry wins and the rest of the path is unreachable.
                self.stats.path_loops += 1
                log.warning("chain %s: path visits port %s twice", chain.name, at.name)
                continue
            placed.add((at.name, at_key))
            if at.flows is not None:
                self._add_entry(flow, at, at_key, flow_entry)
        self.flows[id(flow)] = flow
        self.stats.classified += 1
        return first

    # -- across nodes --------------------------------------------------------
    def _install_across(
        self,
        flow: Flow,
        *,
        classifier: ClassifierPlan,
        port: SwitchPort,
        frame: bytes | bytearray,
        key: FlowKey,
        chosen: list[tuple[ChainPlan, int, GroupPlan, PairPlan]],
    ) -> FlowEntry:
        """Install a path that crosses other nodes: this node's part of it.

        The path is followed here up to its first pair on another node, which
        gets the frame in NSH naming every hop's instance; that node follows it
        on (`arrive`).  Tap groups are left out of such paths.  For a symmetric
        chain whose destination port is here, the way back is installed too;
        otherwise the node where the chain ends learns it from the frames.
        """
        chain = flow.chain
        network = port.network
        if chain is None or network is None:  # pragma: no cover - _install made them
            raise ValueError("a steered flow has a chain and a network")
        hops = [(link, index, pair) for link, index, group, pair in chosen if not group.tap]
        tags = tuple(pair.tag for _link, _index, pair in hops)
        placed = self._path(
            flow,
            PathDirection.FORWARD,
            hops,
            tags,
            start=0,
            at=port,
            original_dst=bytes(frame[ETH_DST:ETH_SRC]),
            ttl=INITIAL_TTL,
        )
        placed[0][1].learn = True
        destination = classifier.logical_destination_port
        reverse: list[tuple[SwitchPort, FlowEntry]] = []
        if chain.symmetric and destination is not None and hops:
            reverse = self._path(
                flow,
                PathDirection.REVERSE,
                hops,
                tags,
                start=0,
                at=self.ports[destination],
                original_dst=bytes(frame[ETH_SRC:ETH_TYPE]),
                ttl=INITIAL_TTL,
            )
        first = placed[0][1]
        first.first = True
        self._make_room()
        self._place(flow, key, placed, reverse)
        self.stats.classified += 1
        return first

    def arrive(
        self, arrival: Arrival, at: SwitchPort, info: FrameInfo, key: FlowKey
    ) -> FlowEntry | str:
        """NSH with no entry yet: join its path here, or say why not.

        The frame came from another node (`at` is that peer's port), or back
        from an NSH-aware function of this node (`at` is its egress port).

        The SPI names the chain (and the direction), the path TLV the instance
        of every hop, the SI the hop the frame goes to.  This node follows the
        path from there as far as it stays here, and hands it on to the next
        node in NSH.  Where a symmetric chain ends here, on a port of this
        node, the way back is installed from the same instances.
        """
        spi = arrival.spi
        direction = PathDirection.REVERSE if spi & REVERSE_SPI else PathDirection.FORWARD
        chain = self._by_spi.get(spi & ~REVERSE_SPI)
        if chain is None:
            return "nsh-unknown-spi"
        forward_info = info
        if direction is PathDirection.REVERSE:
            forward_info = info._replace(
                src=info.dst, dst=info.src, sport=info.dport, dport=info.sport
            )
        groups = [
            (link, index, group)
            for link in self._graph_path(chain, forward_info)
            for index, group in enumerate(link.groups)
            if not group.tap and group.pairs
        ]
        tags = arrival.tags
        if arrival.fixed:
            # MD type 1: the path's hops take the first context words, the rest are zero.
            if len(groups) > len(tags) or any(tags[len(groups) :]):
                return "nsh-bad-path"
            tags = tags[: len(groups)]
        if len(groups) != len(tags):
            return "nsh-bad-path"
        hops: list[tuple[ChainPlan, int, PairPlan]] = []
        flow = Flow(key, chain, self.now)
        for (link, index, group), tag in zip(groups, tags, strict=True):
            pair = next((p for p in group.pairs if p.tag == tag), None)
            if pair is None:
                return "nsh-unknown-instance"
            hops.append((link, index, pair))
            flow.pairs.append((group, pair))
        start = INITIAL_SI - arrival.si
        if not 0 <= start <= len(hops):
            return "nsh-unknown-si"
        if arrival.peer is None:
            # Back from a function of this node: it must be the hop before
            # `start`, sending back on the port a function of that hop returns on.
            travel = hops if direction is PathDirection.FORWARD else hops[::-1]
            pair = travel[start - 1][2] if start else None
            back = None
            if pair is not None:
                back = pair.egress if direction is PathDirection.FORWARD else pair.ingress
            if pair is None or pair.node or not pair.nsh or back != at.name:
                return "nsh-unexpected-si"
        frame = arrival.frame
        placed = self._path(
            flow,
            direction,
            hops,
            tags,
            start=start,
            at=at,
            original_dst=frame[ETH_DST:ETH_SRC],
            ttl=arrival.ttl - 1 if arrival.peer is not None else arrival.ttl,
        )
        reverse: list[tuple[SwitchPort, FlowEntry]] = []
        end = placed[-1][1]
        if (
            direction is PathDirection.FORWARD
            and chain.symmetric
            and end.out is None
            and end.drop is None
        ):
            # The chain ends here: if the destination is a port of this node,
            # this is the egress, and it learns the way back from the frame.
            dst = self._port_of(at, frame[ETH_DST:ETH_SRC])
            if dst is not None and dst.kind is not PortKind.UNDERLAY:
                reverse = self._path(
                    flow,
                    PathDirection.REVERSE,
                    hops,
                    tags,
                    start=0,
                    at=dst,
                    original_dst=frame[ETH_SRC:ETH_TYPE],
                    ttl=INITIAL_TTL,
                )
        self._make_room()
        arrival_entry = placed[0][1]
        self._place(flow, key, placed[1:], reverse)
        akey: ArrivalKey = (spi << 8 | arrival.si, key)
        self.arrivals[akey] = arrival_entry
        flow.arrivals.append(akey)
        self.stats.joined += 1
        return arrival_entry

    def _path(
        self,
        flow: Flow,
        direction: PathDirection,
        hops: list[tuple[ChainPlan, int, PairPlan]],
        tags: tuple[int, ...],
        *,
        start: int,
        at: SwitchPort,
        original_dst: bytes,
        ttl: int,
    ) -> list[tuple[SwitchPort, FlowEntry]]:
        """The entries that take a frame at `at` from hop `start` of its path on.

        Hops here are entered with the function's MAC as destination, as on
        one node; the first hop elsewhere ends this node's part: the frame goes
        to that node in NSH with its original destination back.  Where the
        path ends here, the frame is switched; to another node in NSH when its
        destination is there, so that it learns the path.
        """
        chain = flow.chain
        if chain is None:  # pragma: no cover - callers check
            raise ValueError("a path needs a chain")
        forward = direction is PathDirection.FORWARD
        travel = hops if forward else hops[::-1]
        spi = chain.spi | (0 if forward else REVERSE_SPI)
        network = at.network
        vni = network_vni(network.name) if network is not None else 0
        placed: list[tuple[SwitchPort, FlowEntry]] = []
        current = at
        last_mac: bytes | None = None
        for position in range(start, len(travel)):
            link, index, pair = travel[position]
            # Where the entry sits on the path, counted in forward hops (FlowEntry.gap).
            gap = position if forward else len(travel) - position
            if pair.node:
                peer = self._peer_port(pair.node, vni)
                if peer is None:
                    placed.append(
                        (
                            current,
                            FlowEntry(
                                flow, drop="nsh-no-peer", learn=False, gap=gap, reverse=not forward
                            ),
                        )
                    )
                    return placed
                header = NshHeader(vni, spi, INITIAL_SI - position, ttl, tags)
                placed.append(
                    (
                        current,
                        FlowEntry(
                            flow,
                            out=peer,
                            nsh=header,
                            restore_from=last_mac,
                            restore_to=original_dst,
                            learn=False,
                            gap=gap,
                            reverse=not forward,
                        ),
                    )
                )
                return placed
            counters = self._counters(link, index, pair, direction)
            counters.flows += 1
            target = self.ports[pair.ingress if forward else pair.egress]
            previous_mac, last_mac = last_mac, _mac(target)
            if pair.nsh:
                # The function hands the frame back in NSH, its SI one less:
                # the rest of the path is joined then (`arrive`).
                header = NshHeader(vni, spi, INITIAL_SI - position, ttl, tags)
                placed.append(
                    (
                        current,
                        FlowEntry(
                            flow,
                            out=target,
                            mac=last_mac + self.node_mac,
                            nsh=header,
                            restore_from=previous_mac,
                            restore_to=original_dst,
                            hop=counters,
                            learn=False,
                            gap=gap,
                            reverse=not forward,
                        ),
                    )
                )
                return placed
            placed.append(
                (
                    current,
                    FlowEntry(
                        flow,
                        out=target,
                        mac=last_mac,
                        hop=counters,
                        learn=False,
                        gap=gap,
                        reverse=not forward,
                    ),
                )
            )
            current = self.ports[pair.egress if forward else pair.ingress]
        # The path ends here: the frame is switched as it leaves the last
        # function (one that routes may send it elsewhere than it was going).
        # Where the switch sends it to another node, it goes in NSH with the
        # path's last SI, so that the node of its destination learns the way
        # back (`arrive`).
        end = None
        if current is not at:
            end = NshHeader(vni, spi, INITIAL_SI - len(travel), ttl, tags)
        placed.append(
            (
                current,
                FlowEntry(
                    flow,
                    restore_from=last_mac,
                    restore_to=original_dst,
                    nsh=end,
                    learn=False,
                    gap=len(travel) if forward else 0,
                    reverse=not forward,
                ),
            )
        )
        return placed

    def _port_of(self, near: SwitchPort, address: bytes) -> SwitchPort | None:
        """The port of `near`'s network where `address` is: learned, or a port's own."""
        network = near.network
        if network is None:  # pragma: no cover - every added port has a network
            return None
        found = network.macs.lookup(address)
        if found is not None:
            return found
        text = address.hex(":")
        return next((p for p in network.ports if p.mac == text), None)

    def _peer_port(self, node: str, vni: int) -> SwitchPort | None:
        underlay = self.underlay
        peer = None if underlay is None else underlay.peers.get(node)
        return None if peer is None else peer.ports.get(vni)

    def _place(
        self,
        flow: Flow,
        key: FlowKey,
        forward: list[tuple[SwitchPort, FlowEntry]],
        reverse: list[tuple[SwitchPort, FlowEntry]],
    ) -> None:
        """Put a flow's entries in the tables of their ports (given one if need be)."""
        rkey: FlowKey = (key[1], key[0], key[2], key[4], key[3])
        placed: set[tuple[str, FlowKey]] = set()
        for at_key, (at, flow_entry) in [(key, e) for e in forward] + [(rkey, e) for e in reverse]:
            if (at.name, at_key) in placed:
                self.stats.path_loops += 1
                log.warning("chain %s: path visits port %s twice", flow.chain, at.name)
                continue
            placed.add((at.name, at_key))
            if at.flows is None:
                at.flows = {}
                self._steered_ports.add(at.name)
            self._add_entry(flow, at, at_key, flow_entry)
        self.flows[id(flow)] = flow

    def _graph_path(self, chain: ChainPlan, info: FrameInfo) -> list[ChainPlan]:
        """The chain, then the graph successors whose classifiers match, in order."""
        path = [chain]
        visited = {chain.id}
        current = chain
        while current.successors:
            following = None
            for successor_id in current.successors:
                successor = self.plan.chain(successor_id)
                if (
                    successor is not None
                    and successor.id not in visited
                    and any(c.matches(info) for c in successor.classifiers)
                ):
                    following = successor
                    break
            if following is None:
                break
            path.append(following)
            visited.add(following.id)
            current = following
        return path

    def _counters(
        self, chain: ChainPlan, group: int, pair: PairPlan, direction: PathDirection
    ) -> HopCounters:
        key = (chain.id, group, pair.id, direction)
        counters = self.counters.get(key)
        if counters is None:
            counters = self.counters[key] = HopCounters(chain, group, pair, direction)
        return counters

    def _add_entry(self, flow: Flow, port: SwitchPort, key: FlowKey, entry: FlowEntry) -> None:
        table = port.flows
        if table is None:  # pragma: no cover - callers check
            return
        previous = table.get(key)
        if previous is not None and previous.flow is not flow:
            self._remove(previous.flow)
        table[key] = entry
        flow.entries.append((port, key))
        flow.path.append((port, entry))

    # -- functions that translate ---------------------------------------------
    def follow(
        self,
        via: FlowEntry,
        port: SwitchPort,
        frame: bytes | bytearray,
        info: FrameInfo,
        key: FlowKey,
    ) -> FlowEntry | None:
        """The entry a frame takes on `port`, sent there by the native function
        that `via` steered its packet into; None if it does not go on along
        `via`'s path (the function answered on another port).

        A native function answers within the datapath's call, so what it sends
        back on the port its hop returns on is the steered packet going on,
        whatever its 5-tuple: a NAT, or any function that rewrites addresses or
        ports, changes the key the flow's later entries were installed under.
        The flow's entries beyond the hop, in both directions, then take the
        new 5-tuple as well (the reverse path its reverse), so that its later
        packets, and the replies to the translated address, follow the same
        path: replies reach the function that translated, which translates
        them back to the key the rest of the reverse path knows.  They go
        with the flow.

        An ICMP error or a fragment goes on along the path without installing
        anything: its 5-tuple is not the flow's.  A 5-tuple another steered
        flow holds there goes to this one (the other is forgotten and pinned
        again on its next packet), counted as a `translation_collision`.
        """
        flow = via.flow
        if via.gap < 0 or not flow.entries:
            return None  # an entry of no path, or a flow forgotten meanwhile
        ahead = -1 if via.reverse else 1
        gap = via.gap + ahead
        following = next(
            (
                entry
                for at, entry in flow.path
                if at is port
                and entry.gap == gap
                and entry.reverse is via.reverse
                and entry.drop != TAP_RETURN
            ),
            None,
        )
        if following is None or info.fragment or is_icmp_error(frame, info):
            return following
        if len(flow.translations) >= MAX_TRANSLATIONS:
            self.stats.translations_refused += 1
            return following
        back: FlowKey = (key[1], key[0], key[2], key[4], key[3])
        for at, entry in list(flow.path):
            if entry.gap >= 0 and (entry.gap - via.gap) * ahead > 0:
                self._rekey(flow, at, key if entry.reverse is via.reverse else back, entry)
        flow.translations.append(key)
        self.stats.translated += 1
        return following

    def _rekey(self, flow: Flow, port: SwitchPort, key: FlowKey, entry: FlowEntry) -> None:
        """Put `entry` of `flow` under one more key in `port`'s table."""
        table = port.flows
        if table is None:  # pragma: no cover - a path's ports keep their tables
            return
        previous = table.get(key)
        if previous is entry:
            return
        if previous is not None and previous.flow is not flow:
            if previous.flow.chain is not None:
                self.stats.translation_collisions += 1
            self._remove(previous.flow)
        table[key] = entry
        flow.entries.append((port, key))

    def related(
        self, port: SwitchPort, frame: bytes | bytearray, info: FrameInfo
    ) -> FlowEntry | None:
        """The entry an ICMP error takes on `port`: that of the steered flow whose
        packet it quotes (RFC 792; RFC 5508 §4.2), going the other way.

        So an error about a translated packet goes back through the function
        that translated it, which translates the error too, and an error from
        the destination crosses the chain's functions as the replies do.
        None for any other packet, or an error about no steered flow.
        """
        table = port.flows
        if table is None or info.proto != ICMP or not is_icmp_error(frame, info):
            return None
        quoted = parse_embedded(frame, info.l4, info.end)
        if isinstance(quoted, Unusable):
            return None
        entry = table.get((quoted.dst, quoted.src, quoted.proto, quoted.dport, quoted.sport))
        if entry is None or entry.flow.chain is None:
            return None
        self.stats.related += 1
        return entry

    def _make_room(self) -> None:
        """With the table full, forget its oldest flow for the one being added.

        A path is installed whole or not at all: a flow steered packet by
        packet would reach its first function and be lost at its egress,
        which has no entry to go on by. So the oldest flow goes (counted as
        `table_full`), as a full conntrack table drops its oldest; if it was
        still running, its next packet is classified again, onto the same
        instances (the choice is a hash of the flow). A host that sends
        flows at random thus takes no room for good from any other.
        """
        while len(self.flows) >= self.max_flows and self.flows:
            _id, oldest = self.flows.popitem(last=False)
            self._remove(oldest)
            self.stats.table_full += 1

    def _remove(self, flow: Flow) -> None:
        if flow.lease is not None:
            flow.lease.revoke()
        for port, key in flow.entries:
            table = port.flows
            entry = None if table is None else table.get(key)
            if entry is not None and entry.flow is flow:
                del table[key]  # type: ignore[union-attr]
        flow.entries.clear()
        flow.path.clear()
        for akey in flow.arrivals:
            arrival = self.arrivals.get(akey)
            if arrival is not None and arrival.flow is flow:
                del self.arrivals[akey]
        flow.arrivals.clear()
        self.flows.pop(id(flow), None)

    # -- timers and status ---------------------------------------------------
    def expire(self, now: float) -> int:
        limit = now - self.idle_timeout
        stale = [flow for flow in self.flows.values() if flow.seen < limit]
        for flow in stale:
            self._remove(flow)
        self.stats.expired += len(stale)
        return len(stale)

    def forget_port(self, port: SwitchPort) -> None:
        """A port is going away: drop every flow with an entry on it."""
        table = port.flows
        if table:
            for flow in {id(entry.flow): entry.flow for entry in table.values()}.values():
                self._remove(flow)
        port.flows = None
        self._steered_ports.discard(port.name)

    def status(self) -> dict[str, Any]:
        chains: dict[str, dict[str, Any]] = {}
        for chain in self.plan.chains:
            chains[chain.id] = {
                "id": chain.id,
                "name": chain.name,
                "spi": chain.spi,
                "packets": 0,
                "bytes": 0,
                "flows": 0,
                "hops": [],
            }
        pairs: dict[str, dict[str, Any]] = {}
        for (chain_id, group, pair_id, direction), hop in sorted(
            self.counters.items(), key=lambda item: (item[0][0], item[0][1], item[0][2])
        ):
            record = {
                "group": group,
                "group_name": hop.chain.groups[group].name,
                "port_pair": pair_id,
                "port_pair_name": hop.pair.name,
                "direction": direction.value,
                "packets": hop.packets,
                "bytes": hop.bytes,
                "flows": hop.flows,
            }
            chain_status = chains.get(chain_id)
            if chain_status is not None:
                chain_status["hops"].append(record)
                if group == 0 and direction is PathDirection.FORWARD:
                    chain_status["packets"] += hop.packets
                    chain_status["bytes"] += hop.bytes
                    chain_status["flows"] += hop.flows
            totals = pairs.setdefault(
                pair_id, {"name": hop.pair.name, "packets": 0, "bytes": 0, "flows": 0}
            )
            totals["packets"] += hop.packets
            totals["bytes"] += hop.bytes
            totals["flows"] += hop.flows
        return {
            "chains": list(chains.values()),
            "port_pairs": pairs,
            "flows": len(self.flows),
            "stats": vars(self.stats).copy(),
        }

    def flow_table(self, limit: int = 1000) -> list[dict[str, Any]]:
        rows = []
        for flow in list(self.flows.values())[:limit]:
            rows.append(
                {
                    **_key_fields(flow.key),
                    "chain": flow.chain.name if flow.chain else None,
                    "path": [pair.name for _group, pair in flow.pairs],
                    "translated": [_key_fields(key) for key in flow.translations],
                    "packets": flow.packets,
                    "idle": round(self.now - flow.seen, 1),
                }
            )
        return rows


def _key_fields(key: FlowKey) -> dict[str, Any]:
    """A flow key as the flow table shows it."""
    src, dst, proto, sport, dport = key
    return {
        "src": str(ipaddress.ip_address(src)) if src else "",
        "dst": str(ipaddress.ip_address(dst)) if dst else "",
        "proto": proto,
        "sport": sport,
        "dport": dport,
    }


def l7_names(frame: bytes | bytearray, info: FrameInfo) -> dict[str, str] | None:
    """The HTTP Host or TLS server name in a TCP packet's payload; None if it has none.

    Only a flow's first payload segment is read (the l7-classifier function's
    parser): a name that starts in it and ends in a later segment is not seen
    (see docs/sfc.md).
    """
    if info.proto != TCP or info.l4 < 0 or info.payload >= info.end:
        return None
    from pktchain.functions.l7 import parse_first_payload

    _outcome, names = parse_first_payload(bytes(frame[info.payload : info.end]))
    return dict(names)


ICMP_ERRORS = frozenset((3, 4, 5, 11, 12))
"""ICMPv4 types that quote the datagram they are about (RFC 792)."""
ICMPV6_ERRORS = frozenset((1, 2, 3, 4))
"""ICMPv6 error types (RFC 4443 §2.1: below 128)."""


def is_icmp_error(frame: bytes | bytearray, info: FrameInfo) -> bool:
    """Whether the packet is an ICMP or ICMPv6 error (about another packet)."""
    if info.l4 < 0 or info.fragment or info.payload <= info.l4:
        return False
    if info.proto == ICMP:
        return info.ip_version == 4 and frame[info.l4] in ICMP_ERRORS
    return info.proto == ICMPV6 and frame[info.l4] in ICMPV6_ERRORS


def _crosses_nodes(
    chosen: list[tuple[ChainPlan, int, GroupPlan, PairPlan]],
    port: SwitchPort,
    frame: bytes | bytearray,
) -> bool:
    """Whether a path leaves this node: a pair elsewhere, or its destination."""
    if any(pair.node or pair.nsh for _link, _index, group, pair in chosen if not group.tap):
        return True
    network = port.network
    destination = None if network is None else network.macs.lookup(bytes(frame[ETH_DST:ETH_SRC]))
    return destination is not None and destination.kind is PortKind.UNDERLAY


def syn_isn(frame: bytes | bytearray, info: FrameInfo) -> bytes:
    """The initial sequence number a TCP SYN (without ACK) carries, as sent; b"" for
    any other packet.

    A SYN sent again because no SYN-ACK came in time carries the same one
    (RFC 9293 §3.8.1); a new connection on the same 5-tuple picks another
    (RFC 9293 §3.4.1).
    """
    if info.proto != TCP or info.tcp_flags & (TcpFlag.SYN | TcpFlag.ACK) != TcpFlag.SYN:
        return b""
    at = info.l4 + _SEQ_AT
    return bytes(frame[at : at + 4])


def _mac(port: SwitchPort) -> bytes:
    if port.mac is None:
        raise ValueError(f"port {port.name} has no known MAC address")
    return bytes.fromhex(port.mac.replace(":", ""))


def lb_values(fields: tuple[LbField, ...], frame: bytes | bytearray, info: FrameInfo) -> bytes:
    """The bytes a group hashes for a flow: its lb_fields, or the 5-tuple by default."""
    if not fields:
        return b"%b|%b|%d|%d|%d" % (info.src, info.dst, info.proto, info.sport, info.dport)
    parts = []
    for name in fields:
        if name is LbField.ETH_SRC:
            parts.append(frame[ETH_SRC:ETH_TYPE])
        elif name is LbField.ETH_DST:
            parts.append(frame[ETH_DST:ETH_SRC])
        elif name is LbField.IP_SRC:
            parts.append(info.src)
        elif name is LbField.IP_DST:
            parts.append(info.dst)
        else:
            wanted = TCP if name in (LbField.TCP_SRC, LbField.TCP_DST) else UDP
            source = name in (LbField.TCP_SRC, LbField.UDP_SRC)
            port = (info.sport if source else info.dport) if info.proto == wanted else -1
            parts.append(b"%d" % port)
    return b"|".join(parts)


def pair_scores(
    group: GroupPlan, frame: bytes | bytearray, info: FrameInfo
) -> list[tuple[PairPlan, float]]:
    """Each pair of `group` with its score for the flow (`choose_pair`): -inf for weight 0."""
    values = lb_values(group.lb_fields, frame, info)
    scores = []
    for pair in group.pairs:
        if pair.weight <= 0:
            scores.append((pair, -math.inf))
            continue
        digest = hashlib.blake2b(values + pair.id.encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 0.5) / 2.0**64
        scores.append((pair, -pair.weight / math.log(u)))
    return scores


def choose_pair(group: GroupPlan, frame: bytes | bytearray, info: FrameInfo) -> PairPlan | None:
    """Weighted rendezvous hashing: each pair wins its weight's share of flows.

    Each pair scores ``-weight / ln(u)`` with `u` uniform in (0, 1) drawn from a
    hash of the flow's lb_fields and the pair's id; the highest score wins.
    Removing a pair moves only the flows it had.  Pairs of weight 0 take no new
    flows; None when every pair has weight 0.
    """
    best: PairPlan | None = None
    best_score = -math.inf
    for pair, score in pair_scores(group, frame, info):
        if score > best_score:
            best, best_score = pair, score
    return best
