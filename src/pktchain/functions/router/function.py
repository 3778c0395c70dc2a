"""The virtual router: sans-IO IPv4 routing with ARP, host tracking, ICMP, NAPT, port forwarding.

:class:`Router` is the SDN router of the virtual-routers thesis (chapter 4) done
as RFC 1812 asks. It is a function like any other
(:class:`~pktchain.functions.sdk.Function`): it gets every frame that reaches
one of its interfaces as a :class:`~pktchain.functions.sdk.Packet` in
:meth:`Router.process`, forwards it out of the interface its route names, and
emits what else it sends (ARP, ICMP, frames that waited for ARP, fragments);
timers go out through :meth:`Router.next_deadline` and run in
:meth:`Router.on_timer`. Unlike a bump in the wire it has as many interfaces as
its configuration gives and control calls add, and it is flooded (it owns
addresses). It never reads a clock or opens a socket. What it does:

* ARP (RFC 826): answers for its interface addresses and resolves next hops
  with the responder and neighbour cache of
  :mod:`~pktchain.functions.common.arp` (timeouts, retries, a bounded queue
  per next hop, host unreachable when resolution fails), and tracks the hosts
  of its internal subnets (:mod:`~pktchain.functions.router.hosts`); the
  addresses of ports with port security are bound to their port's MAC by the
  node (:meth:`Router.secure_neighbors`), and no ARP packet moves them;
* IPv4 forwarding (RFC 1812 §5): header checks (§5.2.2), martian sources
  (§5.3.7), no forwarding of broadcasts (§5.3.5) or link-layer broadcasts
  (§5.3.4), longest-prefix match over the connected subnets and a default
  route to the upstream gateway, TTL decrement with an incremental checksum
  (§5.3.1), fragmentation when DF is clear (§5.2.6);
* ICMP (RFC 1812 §4.3): time exceeded, destination unreachable (net, host,
  protocol and port for its own addresses, fragmentation needed with the
  next-hop MTU), echo replies for its own addresses; errors obey
  §4.3.2.7 and are rate limited (§4.3.2.8) by :mod:`~pktchain.functions.common.icmp`;
* NAPT on the external interface through :class:`~pktchain.functions.nat.napt.Nat`
  (RFC 4787/5382/5508/7857), hairpinning included, and port forwarding: admin
  rules and one automatic forwarding port per tracked host, as in the thesis;
  fragmented datagrams are translated fragment by fragment, in or out of
  order (RFC 4787 REQ-14), and non-atomic datagrams leaving with the external
  address get a fresh IPv4 ID (RFC 7857 §10) — both kept by
  :mod:`~pktchain.functions.router.fragments`;
* flow leases for the flows whose later packets the node's fast path may
  forward without the router, revoked when its treatment of the flow would
  change (:mod:`~pktchain.functions.router.leases`, docs/router.md);
* virtual routers (VRRPv3, RFC 5798) shared with other routers on a link,
  through :mod:`~pktchain.functions.router.vrrp`: while master of one, the
  router answers ARP for its virtual addresses with the virtual MAC, takes
  the frames sent to that MAC, and holds the addresses (the NAT's external
  address among them, docs/vrrp.md);
* state for a backup router: its hosts, port forwards and NAT sessions as
  records, whole or as the changes since last asked, applied on the backup,
  where they are not aged until it takes over
  (:mod:`~pktchain.functions.router.sync`, docs/ha-sync.md).

A bad frame is a counted drop with a reason (:class:`RouterDrop`), never an
exception out of :meth:`Router.process` or :meth:`Router.on_timer`; the router
counts its own (one frame may cost several drops: a full queue, released
fragments), and a packet it does not forward gets the first of them as its
``Result.reason``. Control calls (interfaces, hosts, port forwards) are
all-or-nothing, raise ValueError naming the wrong field, and revoke the leases
the change concerns.
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from ipaddress import IPv4Address, ip_address
from typing import Any, cast

from pktchain.functions.common.arp import (
    ArpEntry,
    ArpResponder,
    Heard,
    HeardArp,
    Hold,
    Merge,
    NeighborCache,
    NeighborState,
    Queued,
)
from pktchain.functions.common.embedded import (
    ERROR_TYPES,
    Embedded,
    icmp_checksum_ok,
    parse_embedded,
    refresh_icmp_checksum,
)
from pktchain.functions.common.fields import mac_error, ported_protocol
from pktchain.functions.common.icmp import (
    MAX_QUOTE,
    IcmpError,
    TokenBucket,
    echo_reply,
    error_allowed,
    icmp_error,
    unique_host_address,
)
from pktchain.functions.nat.napt import Nat
from pktchain.functions.nat.result import FlowRewrite, NatResult, NatVerdict
from pktchain.functions.nat.table import (
    MappingEntry,
    Session,
    SessionEntry,
    SessionKey,
    SessionRecord,
    SessionRefusal,
)
from pktchain.functions.router.config import (
    RouterConfig,
    RouterConfigError,
    RouterInterface,
    nat_errors,
    overlap_errors,
    vrrp_errors,
)
from pktchain.functions.router.fragments import (
    FRAGMENT_TRANSITIONS,
    Datagram,
    FragmentAction,
    FragmentEvent,
    FragmentKey,
    FragmentStatus,
    FragmentTable,
    HoldOutcome,
    IdGenerator,
    IdMemory,
)
from pktchain.functions.router.hosts import (
    HOST_TRANSITIONS,
    Host,
    HostAction,
    HostEntry,
    HostEvent,
    HostState,
)
from pktchain.functions.router.leases import (
    ROUTED_IDLE_TIMEOUT,
    CacheHint,
    FlowTuple,
    LeaseTable,
)
from pktchain.functions.router.sync.records import (
    ApplyRefusal,
    Change,
    Deletion,
    ForwardKey,
    ForwardRecord,
    HostRecord,
    Record,
    RecordKind,
    RouterState,
    StateKey,
    Takeover,
    state_key,
)
from pktchain.functions.router.vrrp import (
    ReleaseAddresses,
    SendFrame,
    StateChanged,
    TakeAddresses,
    VrrpAction,
    VrrpConfig,
    VrrpSpeaker,
)
from pktchain.functions.sdk import Emitted, Function, Packet, Result, TableSize, Verdict, forward
from pktchain.packet.address import Buffer, format_ip, mac_bytes
from pktchain.packet.checksum import complete_partial_checksum, update16
from pktchain.packet.headers import ETHERNET, IPV4, EtherType, IcmpType, IpProto, TcpFlag
from pktchain.packet.parse import FrameInfo, Malformed, parse_frame
from pktchain.packet.rewrite import Side, decrement_ttl, set_ip, set_mac
from pktchain.packet.views import Ipv4View
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN, VirtioNetHdr, parse_virtio_net_hdr
from pktchain.packet.vrrp import parse_advertisement

__all__ = [
    "ArpEntry",
    "CacheHint",
    "FlowTuple",
    "FragmentStatus",
    "HostEntry",
    "HostState",
    "IcmpError",
    "NeighborState",
    "PortForward",
    "Router",
    "RouterConfig",
    "RouterConfigError",
    "RouterDrop",
    "RouterInterface",
]


class RouterDrop(StrEnum):
    """Why the router did not forward a frame; counted as ``drop-<value>``."""

    UNKNOWN_INTERFACE = "unknown-interface"
    TRUNCATED_VNET = "truncated-vnet-header"
    MALFORMED = "malformed"  # also counted as ``malformed-<Malformed value>``
    VLAN_TAGGED = "vlan-tagged"  # router interfaces are untagged
    NOT_OUR_MAC = "not-our-mac"  # unicast to another station, flooded to us
    UNSUPPORTED_ETHERTYPE = "unsupported-ethertype"
    IPV6 = "ipv6"  # the router is IPv4 only
    ARP_OPERATION = "arp-operation"
    ARP_BAD_SENDER = "arp-bad-sender"
    ARP_FOREIGN_SUBNET = "arp-foreign-subnet"
    ARP_ADDRESS_CONFLICT = "arp-address-conflict"  # someone claims the router's address
    ARP_IGNORED = "arp-ignored"  # nothing to learn or answer
    ARP_SECURED = "arp-secured"  # claims a secured port's address for another MAC
    IP_CHECKSUM = "ip-checksum"  # RFC 1812 §5.2.2
    MARTIAN_SOURCE = "martian-source"  # RFC 1812 §5.3.7
    OWN_SOURCE = "own-source"  # a packet claiming to come from the router
    BROADCAST = "broadcast-destination"  # RFC 1812 §5.3.5: directed broadcasts not forwarded
    MULTICAST = "multicast-destination"  # no multicast routing
    LINK_BROADCAST = "link-broadcast"  # RFC 1812 §5.3.4: unicast IP in a link broadcast
    TTL_EXCEEDED = "ttl-exceeded"
    NO_ROUTE = "no-route"
    TOO_BIG = "too-big"  # DF set: fragmentation needed sent
    CANNOT_FRAGMENT = "cannot-fragment"  # too big, DF clear, but GSO or IP options
    ARP_QUEUE_FULL = "arp-queue-full"
    ARP_FAILED = "arp-failed"  # next hop did not answer: host unreachable sent
    NAT = "nat"  # the NAT refused it (its counters say why)
    NAT_BYPASS = "nat-bypass"  # from outside straight to a private address
    LOCAL_DELIVERY = "local-delivery"  # TCP/UDP/other for the router: unreachable sent
    LOCAL_ICMP = "local-icmp"  # ICMP for the router other than echo: consumed
    LOCAL_FRAGMENT = "local-fragment"  # no reassembly of datagrams for the router
    FRAGMENT_TIMEOUT = "fragment-timeout"  # held, its first fragment never came
    FRAGMENT_QUEUE_FULL = "fragment-queue-full"  # fragment_queue_limit reached
    FRAGMENT_MEMORY = "fragment-memory"  # fragment_held_bytes reached
    FRAGMENT_EVICTED = "fragment-evicted"  # held by a datagram evicted from a full table
    FRAGMENT_REFUSED = "fragment-refused"  # the NAT refused its datagram's first fragment
    FRAGMENT_OVERLAP = "fragment-overlap"  # would overwrite the transport header (RFC 1858)
    FRAGMENTED_ICMP_ERROR = "fragmented-icmp-error"  # its checksum covers what we cannot see
    ICMP_CHECKSUM = "icmp-checksum"  # RFC 1122 §3.2.2: bad ICMP silently discarded
    ARP_VIRTUAL = "arp-virtual-address"  # ARP from another router holding a virtual address
    INTERFACE_REMOVED = "interface-removed"  # queued for an interface that went away
    INTERNAL_ERROR = "internal-error"  # a frame no check caught; should stay 0


@dataclass(frozen=True, slots=True)
class PortForward:
    """A port forwarding rule: TCP/UDP ``external_port`` of the external address to a host."""

    proto: IpProto
    external_port: int
    inside_ip: str
    inside_port: int
    automatic: bool
    """True for the automatic forwarding port of a tracked host."""


_VNET = VIRTIO_NET_HDR_LEN
_ZERO_VNET = bytes(_VNET)
_DST_MAC = slice(_VNET + ETHERNET.offset("dst"), _VNET + ETHERNET.offset("dst") + 6)
_SRC_MAC = slice(_VNET + ETHERNET.offset("src"), _VNET + ETHERNET.offset("src") + 6)
_ZERO_MAC = bytes(6)
_LIMITED_BROADCAST = b"\xff" * 4
_IPV4_SIZE = IPV4.size
_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ECHO_TYPES = frozenset((int(IcmpType.ECHO_REQUEST), int(IcmpType.ECHO_REPLY)))
_ECHO_REQUEST = int(IcmpType.ECHO_REQUEST)
_SYN_FIN_RST = int(TcpFlag.SYN | TcpFlag.FIN | TcpFlag.RST)
_ETH_ARP = int(EtherType.ARP)
_ETH_IPV4 = int(EtherType.IPV4)
_ETH_IPV6 = int(EtherType.IPV6)
_VRRP = int(IpProto.VRRP)
_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
# Errors in the transport header: the IPv4 header is sound, so the router can
# still forward the packet (routers do not judge transport headers); only the
# NAT, which needs the ports, refuses it.
_L4_ERRORS = frozenset(
    (
        Malformed.TRUNCATED_TCP,
        Malformed.TCP_DATA_OFFSET,
        Malformed.TCP_OPTIONS,
        Malformed.TRUNCATED_UDP,
        Malformed.UDP_LENGTH,
        Malformed.TRUNCATED_ICMP,
    )
)
_INF = float("inf")
_NO_BINDINGS: Mapping[bytes, bytes] = {}
_VRRP_SETTABLE = frozenset(("priority", "preempt", "preempt_delay", "advert_interval", "accept"))
GATEWAY_PROBE_INTERVAL = 0.5
"""Seconds between the ARP requests that probe a gateway a virtual router tracks."""
GATEWAY_PROBES_LOST = 3
"""Probes left unanswered before a tracked gateway counts as failed."""


@dataclass(slots=True)
class _GatewayProbe:
    """A tracked gateway: when it last answered ARP, when to ask it next."""

    name: str
    heard: float = 0.0
    due: float = 0.0
    ok: bool = True


# RFC 1858 §3.2: a later fragment starting inside the transport header would
# overwrite, at the receiver, the ports and checksum the NAT translated in the
# first fragment. The shortest header of each protocol the NAT translates:
_TRANSPORT_HEADER = {_TCP: 20, _UDP: 8, _ICMP: 8}
_FOLLOWED = NatResult(NatVerdict.TRANSLATED)
"""What a later fragment's translation stands in for: no session of its own."""


class _Port:
    """A router interface as the packet path uses it: addresses as bytes and ints."""

    __slots__ = (
        "address",
        "arp",
        "broadcast",
        "config",
        "external",
        "mac",
        "mask",
        "mtu",
        "name",
        "neighbors",
        "net",
        "source_mac",
        "virtual",
        "virtual_macs",
    )

    def __init__(
        self, config: RouterInterface, neighbors: NeighborCache, owned: Container[bytes]
    ) -> None:
        network = config.network
        self.neighbors = neighbors
        """The next hops on this interface, resolved or being resolved (ARP)."""
        self.config = config
        self.name = config.name
        self.mac = mac_bytes(config.mac)
        self.address = config.address.ip.packed
        self.arp = ArpResponder(self.mac, frozenset((self.address,)), owned)
        """Answers ARP for the interface's address; ``owned``: all the router's."""
        self.mask = int(network.netmask)
        self.net = int(network.network_address)
        self.broadcast = network.broadcast_address.packed
        self.mtu = config.mtu
        self.external = config.external
        self.virtual: dict[bytes, ArpResponder] = {}
        """The virtual addresses this interface holds as VRRP master, each with the
        responder that answers ARP for it from its virtual MAC."""
        self.virtual_macs: dict[bytes, int] = {}
        """The virtual MACs it holds, by MAC: the VRID."""
        self.source_mac = self.mac
        """The source of the frames it forwards: a virtual MAC it holds, else its own,
        so that the LAN's bridges learn where the virtual MAC is from every frame."""

    def contains(self, address: bytes) -> bool:
        """Whether ``address`` is on this interface's subnet."""
        return int.from_bytes(address, "big") & self.mask == self.net

    def host_address(self, address: bytes) -> bool:
        """Whether ``address`` may be a host of the subnet (not network, broadcast or ours)."""
        return (
            self.contains(address)
            and address not in (self.address, self.broadcast)
            and int.from_bytes(address, "big") != self.net
        )


def _ip_only(info: FrameInfo) -> FrameInfo:
    """The parse of a frame whose IPv4 header is sound, whatever its transport header."""
    return info if info.error is None else info._replace(error=None, l4=-1)


class Router(Function):
    """The virtual router (see the module docstring)."""

    KIND = "router"
    Config = RouterConfig
    INTERFACES = ()
    """None of its own: the router's interfaces come from its configuration and
    change at run time (:meth:`interfaces`)."""
    FLOODED = True  # it answers ARP for its addresses: broadcasts must reach it

    config: RouterConfig
    """The configuration the router was made with (interfaces may have changed since)."""

    def __init__(
        self, config: RouterConfig | None = None, *, idle_timeout: float = ROUTED_IDLE_TIMEOUT
    ) -> None:
        super().__init__(config)
        config = self.config
        self._ports: dict[str, _Port] = {}
        self._local: dict[bytes, _Port] = {}
        self._broadcasts: set[bytes] = set()
        self._routes: list[_Port] = []
        self._external: _Port | None = None
        gateway = config.upstream_gateway
        self._gateway = None if gateway is None else IPv4Address(gateway).packed
        self._nat = None if config.nat is None else Nat(config.nat)
        self._hosts: dict[bytes, Host] = {}
        self._secured: dict[str, dict[bytes, bytes]] = {}
        """By interface: the addresses whose MAC the node knows from their port's
        binding (port security), which no ARP packet can change."""
        self._forwards: dict[tuple[int, int], PortForward] = {}
        self._auto_cursor = config.auto_forward_range[0]
        self._bucket = TokenBucket(config.icmp_error_rate, config.icmp_error_burst)
        self._generation = 0
        self._now = 0.0
        self._out: list[Emitted] = []
        """Frames sent besides the packet at hand (Ethernet, or held with their vnet header)."""
        self._packet: bytearray | None = None
        """The buffer of the packet :meth:`process` was given, while it is handled."""
        self._sent_on: str | None = None
        """Where the packet at hand was forwarded (None: it was not)."""
        self._reason = ""
        """Why the packet at hand was not forwarded: its first drop, else what the router
        did with it (a counter name either way)."""
        self._answered = False
        self._hint: CacheHint | None = None
        self._leases = LeaseTable(idle_timeout)
        self._leased_generation = 0
        """The generation the leases were last checked against."""
        self._announce: list[tuple[str, bytes]] = []
        """Gratuitous ARP for interfaces that came up, sent by the next timer."""
        self._datagrams = FragmentTable(
            timeout=config.fragment_timeout,
            datagram_limit=config.fragment_datagram_limit,
            queue_limit=config.fragment_queue_limit,
            held_bytes=config.fragment_held_bytes,
        )
        self._release: list[tuple[str, bytes]] = []
        """Held fragments whose first fragment came: processed after the frame at hand."""
        self._ids: IdGenerator | None = None
        if config.nat is not None and config.ip_id_rewrite:
            self._ids = IdGenerator(random.Random(config.nat.port_seed))
        self._id_memory = IdMemory(limit=config.ip_id_memory, lifetime=config.fragment_timeout)
        # Hosts and port forwards added, changed or gone since the last
        # take_changes(); None while nobody replicates the router.
        self._changed_hosts: set[bytes] | None = None
        self._changed_forwards: set[ForwardKey] | None = None
        for iface in config.interfaces:
            self._attach(iface)
        self._vrrp = VrrpSpeaker(self._with_source(v) for v in config.vrrp)
        self._vrrp_started = False
        self._virtual_all = {a.packed for v in config.vrrp for a in v.virtual_addresses}
        """Every virtual address of every virtual router, held here or not."""
        self._gateways = {
            IPv4Address(t.target).packed: _GatewayProbe(t.target)
            for v in config.vrrp
            for t in v.track
            if t.kind == "gateway"
        }
        """Gateways the virtual routers track, probed by ARP."""
        self._draining = False
        self._draining_actions: list[ReleaseAddresses] = []
        """What a stopped master releases once its successor is heard."""
        self.on_vrrp_event: Callable[[StateChanged], None] | None = None
        """Called with each state change of a virtual router (the host logs it, moves
        its state sync's direction, feeds its event stream)."""

    # -- tables and counters ----------------------------------------------------------

    @property
    def generation(self) -> int:
        """Bumped whenever cached forwarding decisions may have become wrong."""
        return self._generation

    @property
    def nat(self) -> Nat | None:
        """The NAT core, when NAT is on."""
        return self._nat

    def interfaces(self) -> list[RouterInterface]:
        """The interfaces, in the order they were attached."""
        return [port.config for port in self._ports.values()]

    def hosts(self) -> list[HostEntry]:
        """The host table: tracked hosts with their automatic forwarding port."""
        return [h.entry() for h in sorted(self._hosts.values(), key=lambda h: (h.iface, h.ip))]

    def arp_table(self) -> list[ArpEntry]:
        """The neighbour cache, by interface and address."""
        return [row for name in sorted(self._ports) for row in self._ports[name].neighbors.rows()]

    def nat_table(self, limit: int | None = None) -> list[MappingEntry]:
        """The NAT's mappings, static (port forwards) and dynamic; empty without NAT.

        With `limit`, only the first that many (in external port order)."""
        return [] if self._nat is None else self._nat.mappings(limit)

    def nat_sessions(self) -> list[SessionEntry]:
        """The NAT's sessions; empty without NAT."""
        return [] if self._nat is None else self._nat.sessions()

    def port_forwards(self) -> list[PortForward]:
        """Admin and automatic port forwarding rules, by protocol and port."""
        return [self._forwards[key] for key in sorted(self._forwards)]

    def fragments(self) -> FragmentStatus:
        """The fragmented datagrams the NAT tracks and the fragments it holds."""
        return self._datagrams.status()

    def tables(self) -> dict[str, TableSize]:
        """Hosts, neighbours (every interface's), fragmented datagrams, leases, and
        with NAT its sessions and mappings."""
        config = self.config
        tables = {
            "hosts": TableSize(len(self._hosts)),
            "neighbours": TableSize(sum(len(p.neighbors.rows()) for p in self._ports.values())),
            "fragments": TableSize(len(self._datagrams), config.fragment_datagram_limit),
            "leases": TableSize(len(self._leases)),
        }
        nat = self._nat
        if nat is not None:
            tables["nat-sessions"] = TableSize(nat.session_count(), nat.config.max_sessions)
            tables["nat-mappings"] = TableSize(nat.mapping_count())
        return tables

    def status(self) -> dict[str, Any]:
        """Counters (packets and drops by name; the NAT's follow with a ``nat-`` prefix)
        and the number of flows leased to the fast path."""
        counters = dict(self.counters)
        for name, value in self._vrrp.counters.items():
            counters["vrrp-" + name] = value  # what reached no virtual router
        if self._nat is not None:
            for name, value in self._nat.counters().items():
                counters["nat-" + name] = value
        return {"kind": self.kind(), "counters": counters, "leases": len(self._leases)}

    def mac(self, iface: str) -> str | None:
        """The MAC of interface `iface` (the node's port carries it)."""
        port = self._ports.get(iface)
        return None if port is None else port.config.mac

    def _count(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount

    def _drop(self, reason: RouterDrop) -> None:
        self._fate("drop-" + reason.value)

    def _answering(self) -> None:
        """What is being sent answers the packet at hand (if there is one)."""
        if self._packet is not None:
            self._answered = True

    def _fate(self, counter: str) -> None:
        """Count what became of a frame: a drop, or taken in (held, answered, learned).

        The first fate of the packet at hand is the Result's reason, which the
        driver counts; any other (a second one, or one outside ``process``) is
        counted here.
        """
        if self._packet is not None and not self._reason:
            self._reason = counter
        else:
            self.counters[counter] += 1

    # -- the packet path ----------------------------------------------------------------

    def process(self, packet: Packet, now: float) -> Result:
        """Handle a frame that arrived on one of the interfaces; never raises for a bad one."""
        self._out = []
        self._hint = None
        self._release = []
        self._packet = packet.buf
        self._sent_on = None
        self._reason = ""
        self._answered = False
        self._now = max(self._now, now)
        self._count("rx-frames")
        try:
            self._receive(packet.iface, packet.buf, packet.info, now)
            # Fragments that waited for this first fragment: translated now (each
            # a fragment, so none of them makes a hint).
            self._packet = None
            while self._release:
                held_iface, held = self._release.pop(0)
                self._count("fragments-released")
                self._receive(held_iface, bytearray(held), None, now)
        except (ValueError, IndexError, struct.error):
            # Every frame-level problem is checked above this line; this keeps
            # the node's loop alive if one slipped through.
            self._drop(RouterDrop.INTERNAL_ERROR)
        self._packet = None
        if self._generation != self._leased_generation:
            self._prune()
        out = self._out
        if self._sent_on is not None:
            hint = self._hint
            lease = None if hint is None or out else self._leases.lease(hint, now)
            return forward(self._sent_on, lease=lease, emit=out)
        verdict = Verdict.REPLY if self._answered else Verdict.DROP
        return Result(verdict, reason=self._reason, emit=out)

    def _send(self, iface: str, frame: bytearray) -> None:
        """Send a frame that has its virtio-net header: the packet at hand, or another."""
        self._count("tx-frames")
        if frame is self._packet:
            self._sent_on = iface
        elif frame[:_VNET] == _ZERO_VNET:
            self._out.append((iface, bytes(frame[_VNET:])))
        else:
            # Held with its offload header (a GSO frame, a partial checksum): it
            # leaves with it.
            self._out.append((iface, Packet(bytearray(frame), iface)))

    def _send_arp(self, iface: str, frame: bytes) -> None:
        self._count("tx-frames")
        self._out.append((iface, frame))

    def _receive(self, iface: str, buf: bytearray, info: FrameInfo | None, now: float) -> None:
        port = self._ports.get(iface)
        if port is None:
            return self._drop(RouterDrop.UNKNOWN_INTERFACE)
        vnet = parse_virtio_net_hdr(buf)
        if vnet is None:
            return self._drop(RouterDrop.TRUNCATED_VNET)
        if info is None:
            info = parse_frame(buf, _VNET)
        error = info.error
        if error is not None and not (info.ip_version == 4 and error in _L4_ERRORS):
            self._count("malformed-" + error.value)
            return self._drop(RouterDrop.MALFORMED)
        if info.vlans:
            return self._drop(RouterDrop.VLAN_TAGGED)
        dst_mac = bytes(buf[_DST_MAC])
        link_broadcast = bool(dst_mac[0] & 1)
        if not link_broadcast and dst_mac != port.mac and dst_mac not in port.virtual_macs:
            return self._drop(RouterDrop.NOT_OUR_MAC)
        ethertype = info.ethertype
        if ethertype == _ETH_ARP:
            return self._arp_in(port, buf, info, now)
        if ethertype == _ETH_IPV4:
            if info.proto == _VRRP:
                # Advertisements to 224.0.0.18 or to this router (unicast
                # peers) are the virtual routers'; none is ever forwarded.
                return self._vrrp_in(port, buf, now)
            return self._ipv4_in(port, buf, info, vnet, now, link_broadcast=link_broadcast)
        if ethertype == _ETH_IPV6:
            return self._drop(RouterDrop.IPV6)
        return self._drop(RouterDrop.UNSUPPORTED_ETHERTYPE)

    # -- ARP (RFC 826) ------------------------------------------------------------------

    def _request(self, port: _Port, target: bytes) -> None:
        self._send_arp(port.name, port.arp.request(port.address, target))
        self._count("arp-requests-sent")

    def _answer_arp(
        self, port: _Port, heard: HeardArp, responder: ArpResponder | None = None
    ) -> None:
        self._send_arp(port.name, (responder or port.arp).reply(heard))
        self._answering()
        self._fate("arp-replies-sent")

    def _arp_in(self, port: _Port, buf: bytearray, info: FrameInfo, now: float) -> None:
        heard = port.arp.hear(buf, info.l3)
        virtual = port.virtual.get(heard.tpa) if port.virtual else None
        if virtual is not None:
            # For a virtual address this interface holds: answered from its virtual MAC.
            heard = virtual.hear(buf, info.l3)
        elif heard.spa in self._virtual_all and heard.kind in (Heard.NEIGHBOR, Heard.CONFLICT):
            # The master of a virtual router this one is backup of (or a
            # router outside pktchain holding it): never a neighbour or a host.
            return self._drop(RouterDrop.ARP_VIRTUAL)
        kind = heard.kind
        probe = self._gateways.get(heard.spa) if self._gateways else None
        if probe is not None and kind is Heard.NEIGHBOR:
            self._gateway_heard(probe, now)
        if kind is Heard.BAD_OPERATION:
            return self._drop(RouterDrop.ARP_OPERATION)
        if kind is Heard.OWN or kind is Heard.BAD_SENDER:
            return self._drop(RouterDrop.ARP_BAD_SENDER)
        if kind is Heard.PROBE:
            # RFC 5227 §2.1.1 probe: answer if it is for our address, learn nothing.
            if heard.answer_due:
                return self._answer_arp(port, heard, virtual)
            return self._drop(RouterDrop.ARP_IGNORED)
        if kind is Heard.CONFLICT:
            return self._drop(RouterDrop.ARP_ADDRESS_CONFLICT)
        sha, spa = heard.sha, heard.spa
        if not port.host_address(spa):
            return self._drop(RouterDrop.ARP_FOREIGN_SUBNET)
        owner = self._secured.get(port.name, _NO_BINDINGS).get(spa)
        if owner is not None and owner != sha:
            return self._drop(RouterDrop.ARP_SECURED)
        # RFC 826 "merge": update an entry we have; add one only if the packet is
        # for us. A gratuitous ARP (spa == tpa) thus refreshes but never creates.
        self._confirm(port, spa, sha, now, create=heard.for_us)
        if not port.external:
            self._host_seen(port, sha, spa, now)
        if heard.answer_due:
            return self._answer_arp(port, heard, virtual)
        learned = "arp-in-" + ("gratuitous" if spa == heard.tpa else "other")
        self._fate(learned)
        return None

    def _confirm(self, port: _Port, ip: bytes, mac: bytes, now: float, *, create: bool) -> None:
        merge = port.neighbors.confirm(ip, mac, now, create=create)
        if merge is Merge.PERMANENT_MISMATCH:
            self._count("arp-permanent-mismatch")
            return
        if merge is Merge.MAC_CHANGED:
            self._generation += 1
            self._count("arp-mac-changed")
        self._flush(port, ip)

    def _flush(self, port: _Port, ip: bytes) -> None:
        """Send the frames that waited for ``ip``, now that it is resolved."""
        mac = port.neighbors.mac(ip)
        if mac is None:
            return
        for queued in port.neighbors.release(ip):
            queued.frame[_DST_MAC] = mac
            self._send(port.name, queued.frame)

    def _emit(  # noqa: PLR0917 - internal, one shape for all callers
        self,
        out: _Port,
        next_hop: bytes,
        frame: bytearray,
        now: float,
        in_iface: str | None,
        original: bytes | None,
    ) -> bytes | None:
        """Send ``frame`` to ``next_hop`` or queue it until resolved; the MAC if sent."""
        neighbors = out.neighbors
        mac = neighbors.mac(next_hop)
        if mac is not None:
            frame[_DST_MAC] = mac
            self._send(out.name, frame)
            return mac
        if neighbors.resolve(next_hop, now):
            self._request(out, next_hop)
        quote = original if original is not None else bytes(frame[_VNET + ETHERNET.size :])
        # The packet at hand is held as a copy: its buffer is the driver's.
        waiting = bytearray(frame) if frame is self._packet else frame
        held = neighbors.hold(next_hop, waiting, in_iface, quote[:MAX_QUOTE])
        if held is Hold.REFUSED:
            self._drop(RouterDrop.ARP_QUEUE_FULL)  # the queue allows nothing
            return None
        if held is Hold.QUEUED_OVERFLOW:
            # RFC 1122 §2.3.2.2 keeps the latest: the oldest waiting frame went.
            self._discard(1, RouterDrop.ARP_QUEUE_FULL)
        if frame is self._packet:
            self._fate("arp-queued")
        else:
            self._count("arp-queued")
        return None

    # -- host tracking and automatic port forwarding ------------------------------------

    def _host_seen(self, port: _Port, mac: bytes, ip: bytes, now: float) -> None:
        if not port.host_address(ip):
            return
        owner = self._secured.get(port.name, _NO_BINDINGS).get(ip)
        if owner is not None and owner != mac:
            self._count("host-secured-mismatch")
            return
        host = self._hosts.get(ip)
        if host is None:
            if len(self._hosts) >= self.config.host_limit:
                self._count("host-table-full")
                return
            host = Host(mac, ip, port.name, port.config.network_id, now, HostState.ACTIVE)
            host.deadline = now + self.config.host_aging
            self._hosts[ip] = host
            self._auto_forward(host)
            self._count("hosts-learned")
            self._host_changed(ip)
            return
        host.last_seen = now
        if host.state is HostState.STATIC:
            if host.mac != mac:
                self._count("host-mac-mismatch")
            return
        if host.mac != mac:
            host.mac = mac
            self._count("host-mac-changed")
            self._host_changed(ip)
        next_state, _ = HOST_TRANSITIONS[host.state, HostEvent.SEEN]
        if host.state is not next_state:
            host.state = next_state or HostState.ACTIVE
            self._host_changed(ip)
        host.tries = 0
        host.deadline = now + self.config.host_aging

    def _auto_forward(self, host: Host) -> None:
        service = self.config.auto_forward_service_port
        nat = self._nat
        if nat is None or service is None or not nat.config.is_internal(host.ip):
            return
        low, high = self.config.auto_forward_range
        span = high - low + 1
        start = self._auto_cursor
        for step in range(span):
            port = low + (start - low + step) % span
            if (_TCP, port) in self._forwards:
                continue
            try:
                nat.add_port_forward(IpProto.TCP, port, host.ip, service)
            except ValueError:
                continue  # a NAT mapping holds it
            host.forward_port = port
            self._forwards[_TCP, port] = PortForward(
                IpProto.TCP, port, format_ip(host.ip), service, automatic=True
            )
            self._forward_changed((_TCP, port))
            self._auto_cursor = low + (port - low + 1) % span
            return
        self._count("auto-forward-exhausted")

    def _forget_host(self, host: Host) -> None:
        del self._hosts[host.ip]
        self._host_changed(host.ip)
        port = host.forward_port
        if port is not None and self._nat is not None:
            self._forwards.pop((_TCP, port), None)
            self._forward_changed((_TCP, port))
            with contextlib.suppress(KeyError):  # already gone with its interface
                self._nat.remove_port_forward(IpProto.TCP, port)
            host.forward_port = None
        self._generation += 1

    # -- IPv4 (RFC 1812 §5) -------------------------------------------------------------

    def _ipv4_in(
        self,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
        *,
        link_broadcast: bool,
    ) -> None:
        if not Ipv4View(buf, info.l3).checksum_ok():
            return self._drop(RouterDrop.IP_CHECKSUM)
        src, dst = info.src, info.dst
        if not unique_host_address(src) or src in self._broadcasts:
            return self._drop(RouterDrop.MARTIAN_SOURCE)
        if src in self._local:
            return self._drop(RouterDrop.OWN_SOURCE)
        if not port.external and not link_broadcast:
            self._host_seen(port, bytes(buf[_SRC_MAC]), src, now)
        if dst == _LIMITED_BROADCAST or dst in self._broadcasts:
            return self._drop(RouterDrop.BROADCAST)
        if not unique_host_address(dst):
            return self._drop(RouterDrop.MULTICAST)
        if link_broadcast:
            return self._drop(RouterDrop.LINK_BROADCAST)
        flow = (info.proto, src, info.sport, dst, info.dport)
        if dst in self._local:
            return self._local_in(port, buf, info, vnet, now, flow)
        return self._forward(port, buf, info, vnet, now, flow)

    def _local_in(  # noqa: PLR0917 - internal
        self,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
        flow: FlowTuple,
    ) -> None:
        proto = info.proto
        ok = info.error is None and not info.fragment
        if ok and proto == _ICMP and buf[info.l4] == _ECHO_REQUEST:
            # RFC 1812 §4.3.3.6: a router answers echo requests for its addresses.
            if not icmp_checksum_ok(buf, info.l4, info.end):
                return self._drop(RouterDrop.ICMP_CHECKSUM)
            self._answering()
            self._fate("icmp-out-echo-reply")
            return self._send_own(echo_reply(buf, info.l3, info.l4, info.end), now)
        nat = self._nat
        if nat is not None and info.dst == nat.config.external:
            return self._nat_in(port, buf, info, vnet, now, flow)
        if info.fragment:
            return self._drop(RouterDrop.LOCAL_FRAGMENT)
        if info.error is not None:
            self._count("malformed-" + info.error.value)
            return self._drop(RouterDrop.MALFORMED)
        if proto == _ICMP:
            return self._drop(RouterDrop.LOCAL_ICMP)
        kind = (
            IcmpError.PORT_UNREACHABLE if proto in (_TCP, _UDP) else IcmpError.PROTOCOL_UNREACHABLE
        )
        self._error(port, buf, info.l3, info.end, kind, now)
        return self._drop(RouterDrop.LOCAL_DELIVERY)

    def _nat_in(  # noqa: PLR0917 - internal
        self,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
        flow: FlowTuple,
    ) -> None:
        """A packet for the external address: inbound, or hairpinned from inside."""
        nat = self._nat
        if nat is None:
            return None
        if Ipv4View(buf, info.l3).ttl <= 1:
            # Translation makes it a forwarded packet; the error quotes it as it
            # arrived, which is what its sender can match (RFC 1812 §5.3.1).
            self._error(port, buf, info.l3, info.end, IcmpError.TTL_EXCEEDED, now)
            return self._drop(RouterDrop.TTL_EXCEEDED)
        original = bytes(buf[info.l3 : min(info.end, info.l3 + MAX_QUOTE)])
        restore = self._id_given(nat, buf, info, now)
        result = self._translate(nat, port, buf, info, vnet, now)
        if result is None:
            return None
        if restore is not None:
            self._restore_id(buf, info, restore)
        translated = parse_frame(buf, _VNET)
        if translated.dst in self._local:
            return self._drop(RouterDrop.NAT)
        return self._forward(
            port, buf, translated, vnet, now, flow, nat_result=result, original=original
        )

    def _nat_ok(self, result: NatResult, now: float) -> bool:
        if result.verdict is NatVerdict.TRANSLATED:
            return True
        if result.verdict is NatVerdict.REPLY and result.reply is not None:
            # An ICMP error the NAT asks for (RFC 5508 REQ-8, RFC 5382 REQ-4): it
            # is the router's error, so it shares the rate limit.
            if self._bucket.take(now):
                self._count("icmp-out-nat")
                self._answering()
                self._send_own(result.reply, now)
            else:
                self._count("icmp-rate-limited")
        self._drop(RouterDrop.NAT)
        return False

    # -- NAT of forwarded packets: whole datagrams, fragments, the IPv4 ID ----------------

    def _translate(  # noqa: PLR0917 - internal
        self,
        nat: Nat,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
    ) -> NatResult | None:
        """Translate a packet that arrived on ``port``; None: dropped or held (counted)."""
        if info.fragment:
            return self._translate_fragment(nat, port, buf, info, vnet, now)
        result = self._nat_translate(nat, port, buf, info, vnet, now)
        if not self._nat_ok(result, now):
            return None
        if self._ids is not None and not port.external:
            ip = Ipv4View(buf, info.l3)
            if not ip.df:
                # RFC 6864 §4: with DF clear the datagram is non-atomic even
                # whole (a router further on may fragment it), so its ID must
                # stay unique for the translated source (RFC 7857 §10).
                self._new_id(ip, info.src, info.proto, now)
        return result

    def _nat_translate(  # noqa: PLR0917 - internal
        self,
        nat: Nat,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
    ) -> NatResult:
        if port.external:
            return nat.translate_inbound(buf, 0, now, info=info, partial=vnet.needs_csum)
        return nat.translate_outbound(
            buf, 0, now, info=info, partial=vnet.needs_csum, reply_from=port.address
        )

    def _new_id(self, ip: Ipv4View, original_src: bytes, proto: int, now: float) -> None:
        """Give the translated datagram ``ip`` a fresh ID; remember the one it had."""
        if self._ids is None:
            return
        src, dst = ip.src, ip.dst
        ident = self._ids.next_id(src, dst, proto)
        self._id_memory.remember((src, dst, proto, ident), original_src, ip.identification, now)
        _set_ident(ip, ident)
        self._count("ip-id-rewritten")

    def _translate_fragment(  # noqa: PLR0917 - internal
        self,
        nat: Nat,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
    ) -> NatResult | None:
        """RFC 4787 REQ-14: one fragment of a datagram, in or out of order.

        The first fragment is translated as the whole datagram would be (its
        transport checksum covers the whole datagram, and an incremental update
        is right for the whole); the later ones get the addresses and ID it left
        with, or wait for it (see :mod:`~pktchain.functions.router.fragments`).
        """
        ip = Ipv4View(buf, info.l3)
        key: FragmentKey = (port.external, info.src, info.dst, info.proto, ip.identification)
        offset = ip.fragment_offset
        result: NatResult | None = None
        if offset:
            if offset * 8 < _TRANSPORT_HEADER.get(info.proto, 0):
                self._drop(RouterDrop.FRAGMENT_OVERLAP)
                return None
            event = FragmentEvent.LATER
        elif info.proto == _ICMP and info.error is None and buf[info.l4] in ERROR_TYPES:
            # An ICMP error is at most 576 bytes (RFC 1812 §4.3.2.3); a fragmented
            # one cannot be checked (RFC 5508 REQ-3) nor its checksum recomputed.
            self._drop(RouterDrop.FRAGMENTED_ICMP_ERROR)
            event = FragmentEvent.FIRST_REFUSED
        else:
            result = self._nat_translate(nat, port, buf, info._replace(fragment=False), vnet, now)
            ok = self._nat_ok(result, now)
            event = FragmentEvent.FIRST_TRANSLATED if ok else FragmentEvent.FIRST_REFUSED
        datagram = self._datagrams.get(key)
        next_state, action = FRAGMENT_TRANSITIONS[
            None if datagram is None else datagram.state, event
        ]
        if next_state is None:
            return None  # not reached: only timers forget datagrams
        if datagram is None:
            datagram, evicted = self._datagrams.add(key, next_state, now)
            if evicted is not None:
                self._count("fragment-datagrams-evicted")
                self._discard(len(evicted.held), RouterDrop.FRAGMENT_EVICTED)
        datagram.state = next_state
        if action is FragmentAction.HOLD:
            outcome = self._datagrams.hold(datagram, port.name, bytes(buf))
            if outcome is HoldOutcome.QUEUE_FULL:
                self._drop(RouterDrop.FRAGMENT_QUEUE_FULL)
                return None
            if outcome is HoldOutcome.MEMORY_FULL:
                self._drop(RouterDrop.FRAGMENT_MEMORY)
                return None
            self._fate("fragments-held")
            return None
        if action is FragmentAction.FOLLOW:
            self._follow(buf, info, ip, datagram)
            return _FOLLOWED
        if action is FragmentAction.DROP:
            self._drop(RouterDrop.FRAGMENT_REFUSED)
            return None
        if action is FragmentAction.DISCARD:
            held = self._datagrams.take_held(datagram)
            self._discard(len(held), RouterDrop.FRAGMENT_REFUSED)
            return None
        if event is not FragmentEvent.FIRST_TRANSLATED:
            return None  # refused: the NAT or the ICMP check counted it
        if action is FragmentAction.KEEP:
            _set_ident(ip, datagram.ident)
        elif self._ids is not None and not port.external:
            self._new_id(ip, info.src, info.proto, now)
        datagram.src, datagram.dst, datagram.ident = ip.src, ip.dst, ip.identification
        if action is FragmentAction.RELEASE:
            self._release.extend(self._datagrams.take_held(datagram))
        self._count("fragments-translated")
        return result

    def _follow(self, buf: bytearray, info: FrameInfo, ip: Ipv4View, datagram: Datagram) -> None:
        """A later fragment: the addresses and ID its first fragment left with."""
        if info.src != datagram.src:
            set_ip(buf, info, Side.SRC, datagram.src)
        if info.dst != datagram.dst:
            set_ip(buf, info, Side.DST, datagram.dst)
        if ip.identification != datagram.ident:
            _set_ident(ip, datagram.ident)
        self._count("fragments-translated")

    def _discard(self, count: int, reason: RouterDrop) -> None:
        if count:
            self._count("drop-" + reason.value, count)

    def _id_given(
        self, nat: Nat, buf: bytearray, info: FrameInfo, now: float
    ) -> tuple[bytes, int] | None:
        """For an ICMP error quoting a datagram whose ID the router gave: who sent it, and
        with which ID."""
        if info.proto != _ICMP or info.error is not None or info.fragment:
            return None
        if buf[info.l4] not in ERROR_TYPES:
            return None
        embedded = parse_embedded(buf, info.l4, info.end)
        if not isinstance(embedded, Embedded) or embedded.src != nat.config.external:
            return None
        ident = Ipv4View(buf, embedded.l3).identification
        return self._id_memory.recall((embedded.src, embedded.dst, embedded.proto, ident), now)

    def _restore_id(self, buf: bytearray, info: FrameInfo, given: tuple[bytes, int]) -> None:
        """RFC 5508 REQ-4a: the embedded datagram goes back as its sender sent it, ID included."""
        embedded = parse_embedded(buf, info.l4, info.end)
        if not isinstance(embedded, Embedded) or embedded.src != given[0]:
            return
        _set_ident(Ipv4View(buf, embedded.l3), given[1])
        refresh_icmp_checksum(buf, info.l4, info.end)
        self._count("ip-id-restored")

    def _route(self, dst: bytes) -> tuple[_Port, bytes] | None:
        """Longest prefix over the connected subnets, then the default route."""
        value = int.from_bytes(dst, "big")
        for port in self._routes:
            if value & port.mask == port.net:
                return port, dst
        external = self._external
        if external is not None and self._gateway is not None:
            return external, self._gateway
        return None

    def _forward(  # noqa: PLR0917 - internal
        self,
        port: _Port,
        buf: bytearray,
        info: FrameInfo,
        vnet: VirtioNetHdr,
        now: float,
        flow: FlowTuple,
        *,
        nat_result: NatResult | None = None,
        original: bytes | None = None,
    ) -> None:
        quote: Buffer = buf if original is None else original
        q3, qend = (info.l3, info.end) if original is None else (0, len(original))
        route = self._route(info.dst)
        if route is None:
            self._error(port, quote, q3, qend, IcmpError.NET_UNREACHABLE, now)
            return self._drop(RouterDrop.NO_ROUTE)
        out, next_hop = route
        nat = self._nat
        translate_out = False
        if nat is not None and nat_result is None:
            if port.external and not out.external:
                return self._drop(RouterDrop.NAT_BYPASS)
            translate_out = out.external and not port.external
        ip = Ipv4View(buf, info.l3)
        if nat_result is None and ip.ttl <= 1:
            # RFC 1812 §5.3.1: time exceeded, quoting the packet as received.
            self._error(port, quote, q3, qend, IcmpError.TTL_EXCEEDED, now)
            return self._drop(RouterDrop.TTL_EXCEEDED)
        size = info.end - info.l3
        if vnet.gso_type and info.payload > info.l3:
            # A GSO frame leaves as gso_size segments, each with every header.
            size = info.payload - info.l3 + vnet.gso_size
        fragment_mtu = 0
        if size > out.mtu:
            if ip.df:
                # RFC 1812 §5.2.7.1 / RFC 1191 §4: fragmentation needed, next-hop MTU.
                self._error(port, quote, q3, qend, IcmpError.FRAGMENTATION_NEEDED, now, mtu=out.mtu)
                return self._drop(RouterDrop.TOO_BIG)
            if vnet.gso_type or ip.header_length != _IPV4_SIZE:
                return self._drop(RouterDrop.CANNOT_FRAGMENT)
            fragment_mtu = out.mtu
        if original is None and out.neighbors.mac(next_hop) is None:
            original = bytes(buf[info.l3 : min(info.end, info.l3 + MAX_QUOTE)])
        if translate_out and nat is not None:
            nat_result = self._translate(nat, port, buf, info, vnet, now)
            if nat_result is None:
                return None
        decrement_ttl(buf, _ip_only(info))
        set_mac(buf, info, Side.SRC, out.source_mac)
        self._count("forwarded")
        if fragment_mtu:
            # Left as fragments (counted as made below): no reason to count again.
            for fragment in self._fragments(buf, info, vnet, fragment_mtu):
                self._emit(out, next_hop, fragment, now, port.name, original)
            return None
        sent_to = self._emit(out, next_hop, buf, now, port.name, original)
        if sent_to is not None:
            self._hint = self._make_hint(port, out, sent_to, buf, info, flow, nat_result)
        return None

    def _make_hint(  # noqa: PLR0917 - internal
        self,
        port: _Port,
        out: _Port,
        dst_mac: bytes,
        buf: bytearray,
        info: FrameInfo,
        flow: FlowTuple,
        nat_result: NatResult | None,
    ) -> CacheHint | None:
        if info.error is not None or info.fragment:
            return None
        proto = info.proto
        if proto == _TCP:
            if info.tcp_flags & _SYN_FIN_RST:
                return None  # state changes must reach the NAT (and stay visible)
        elif proto == _ICMP:
            if buf[info.l4] not in _ECHO_TYPES:
                return None  # errors are translated one by one
        elif proto != _UDP:
            return None
        rewrite: FlowRewrite | None = None
        session: Session | None = None
        if nat_result is not None:
            if not nat_result.cacheable or nat_result.rewrite is None:
                return None
            if self._ids is not None and not port.external and not Ipv4View(buf, info.l3).df:
                # Non-atomic: each datagram got a fresh ID, which the node's fast
                # path would not give; the flow stays with the router.
                return None
            rewrite, session = nat_result.rewrite, nat_result.session
        return CacheHint(
            port.name,
            flow,
            out.name,
            out.source_mac,
            dst_mac,
            out.mtu,
            rewrite,
            session,
            not port.external,
            self._generation,
        )

    def _fragments(
        self, buf: bytearray, info: FrameInfo, vnet: VirtioNetHdr, mtu: int
    ) -> list[bytearray]:
        """RFC 791 §3.2 / RFC 1812 §5.2.6: split a datagram without options into fragments."""
        if vnet.needs_csum:
            complete_partial_checksum(
                buf, vnet.csum_start, vnet.csum_offset, base=_VNET, end=info.end
            )
        l3, end = info.l3, info.end
        header = bytes(buf[l3 : l3 + _IPV4_SIZE])
        original = Ipv4View(header)
        first_offset, more = original.fragment_offset, original.mf
        ethernet = bytes(buf[_VNET:l3])
        data = memoryview(buf)[l3 + _IPV4_SIZE : end]
        chunk = (mtu - _IPV4_SIZE) // 8 * 8
        frames: list[bytearray] = []
        for start in range(0, len(data), chunk):
            part = data[start : start + chunk]
            piece = bytearray(header)
            view = Ipv4View(piece)
            view.total_length = _IPV4_SIZE + len(part)
            view.fragment_offset = first_offset + start // 8
            view.mf = more or start + chunk < len(data)
            view.fix_checksum()
            frames.append(bytearray(_ZERO_VNET + ethernet + piece + part))
        self._count("fragments-made", len(frames))
        return frames

    # -- ICMP the router sends (RFC 1812 §4.3) -------------------------------------------

    def _error(  # noqa: PLR0917 - internal
        self,
        port: _Port,
        packet: Buffer,
        l3: int,
        end: int,
        kind: IcmpError,
        now: float,
        *,
        mtu: int = 0,
    ) -> None:
        """Send ``kind`` about ``packet[l3:end]`` from ``port``'s address, if allowed."""
        if not error_allowed(packet, l3, end, link_broadcast=False) or (
            bytes(packet[l3 + 12 : l3 + 16]) in self._local
        ):
            self._count("icmp-suppressed")  # RFC 1812 §4.3.2.7
            return
        if not self._bucket.take(now):
            self._count("icmp-rate-limited")  # RFC 1812 §4.3.2.8
            return
        self._count(kind.counter)
        self._answering()
        self._send_own(icmp_error(packet, l3, end, kind, source=port.address, mtu=mtu), now)

    def _send_own(self, packet: bytes, now: float) -> None:
        """Route and send an IPv4 datagram the router made."""
        route = self._route(packet[16:20])
        if route is None:
            self._count("own-no-route")
            return
        out, next_hop = route
        header = ETHERNET.pack(dst=_ZERO_MAC, src=out.mac, ethertype=_ETH_IPV4)
        frame = bytearray(_ZERO_VNET + header + packet)
        self._emit(out, next_hop, frame, now, None, packet[:MAX_QUOTE])

    # -- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` should run next (None: nothing pending)."""
        if self._announce or not self._vrrp_started:
            return self._now
        deadline = min((p.neighbors.next_deadline() for p in self._ports.values()), default=_INF)
        deadline = min(deadline, min((h.deadline for h in self._hosts.values()), default=_INF))
        vrrp = self._vrrp.next_deadline()
        if vrrp is not None:
            deadline = min(deadline, vrrp)
        if self._gateways:
            deadline = min(deadline, *(p.due for p in self._gateways.values()))
        fragments = self._datagrams.next_deadline()
        if fragments is not None:
            deadline = min(deadline, fragments)
        if self._nat is not None:
            nat_deadline = self._nat.next_deadline()
            if nat_deadline is not None:
                deadline = min(deadline, nat_deadline)
        return None if deadline == _INF else deadline

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Run what is due: announcements, ARP retries and expiry, host aging, fragments,
        NAT timers; take in what the fast path carried, and revoke the leases gone stale."""
        announcements, self._announce = self._announce, []
        self._out = []
        self._hint = None
        self._packet = None
        self._now = max(self._now, now)
        # Before the NAT's timers: a session the fast path carried must not expire.
        self._leases.sync(now, self._touch)
        try:
            if not self._vrrp_started:
                self._vrrp_started = True
                self._vrrp_apply(self._vrrp.start(now), now)
                self._resolve_gateway(now)
            self._vrrp_apply(self._vrrp.on_timer(now), now)
            self._gateway_timers(now)
            self._neighbor_timers(now)
            self._host_timers(now)
            for datagram in self._datagrams.expire(now):
                # RFC 791 §3.2: the first fragment did not come in time.
                self._discard(len(datagram.held), RouterDrop.FRAGMENT_TIMEOUT)
            if self._nat is not None:
                result = self._nat.on_timer(now)
                for reply in result.replies:
                    self._nat_ok(reply, now)
        except (ValueError, IndexError, struct.error):
            self._drop(RouterDrop.INTERNAL_ERROR)
        self._prune()
        # Only the router's own frames leave from its timers: none was held with
        # an offload header, so each is a plain Ethernet frame.
        return announcements + [
            (iface, frame if isinstance(frame, bytes) else frame.ethernet)
            for iface, frame in self._out
        ]

    def _neighbor_timers(self, now: float) -> None:
        for port in list(self._ports.values()):
            change = port.neighbors.on_timer(now)  # a router verifies every neighbour
            for ip in change.requests:
                self._request(port, ip)
            for _ip, queued in change.failed:
                self._fail_queue(queued, now)
            for _ip in change.forgotten:
                self._generation += 1
                self._count("arp-entries-expired")

    def _fail_queue(self, waiting: list[Queued], now: float) -> None:
        """Resolution failed: host unreachable for each waiting packet (RFC 1812 §4.3.3.1)."""
        self._count("arp-resolution-failed")
        for queued in waiting:
            self._drop(RouterDrop.ARP_FAILED)
            back = self._ports.get(queued.in_iface) if queued.in_iface is not None else None
            if back is not None:
                data = queued.original
                self._error(back, data, 0, len(data), IcmpError.HOST_UNREACHABLE, now)

    def _host_timers(self, now: float) -> None:
        retries = self.config.arp_retries
        for host in [h for h in self._hosts.values() if h.deadline <= now]:
            if host.state is HostState.ACTIVE:
                event = HostEvent.EXPIRED
            elif host.tries < retries:
                event = HostEvent.RETRY_DUE
            else:
                event = HostEvent.RETRIES_EXHAUSTED
            row = HOST_TRANSITIONS.get((host.state, event))
            port = self._ports.get(host.iface)
            if row is None or port is None:
                host.deadline = _INF
                continue
            next_state, action = row
            if action is HostAction.REMOVE or next_state is None:
                self._forget_host(host)
                self._count("hosts-aged-out")
                continue
            if host.state is not next_state:
                host.state = next_state
                self._host_changed(host.ip)
            host.tries = 1 if event is HostEvent.EXPIRED else host.tries + 1
            host.deadline = now + self.config.arp_retry_interval
            self._request(port, host.ip)

    # -- virtual routers (VRRPv3, RFC 5798; docs/vrrp.md) -------------------------------

    def _with_source(self, config: VrrpConfig) -> VrrpConfig:
        """`config` with its interface's address as the advertisements' source."""
        port = self._ports.get(config.interface)
        if config.source_address is not None or port is None:
            return config
        return replace(config, source_address=port.config.address.ip)

    def _vrrp_in(self, port: _Port, buf: bytearray, now: float) -> None:
        if self._draining_actions:
            self._successor_heard(port, buf)
        self._vrrp_apply(self._vrrp.receive_frame(port.name, buf, now), now)
        self._fate("vrrp-in")

    def _successor_heard(self, port: _Port, buf: bytearray) -> None:
        """A draining master hears another router advertise one of the virtual routers
        it still holds: that one's addresses go now."""
        advert = parse_advertisement(buf, _VNET + ETHERNET.size)
        if advert.error is not None or advert.priority == 0:
            return
        for action in [a for a in self._draining_actions if a.interface == port.name]:
            if action.vrid == advert.vrid:
                self._draining_actions.remove(action)
                self._release_virtual(action)
                self._count("vrrp-successor-heard")

    def _vrrp_apply(self, actions: list[VrrpAction], now: float) -> None:
        """Do what the virtual routers ask: send, take or release addresses, log."""
        for action in actions:
            if isinstance(action, SendFrame):
                port = self._ports.get(action.interface)
                if port is None:
                    self._count("vrrp-unknown-interface")
                elif action.next_hop is None:
                    self._send_arp(port.name, action.frame[_VNET:])
                else:
                    # A unicast advertisement: to the peer's MAC, resolved by ARP.
                    self._emit(port, action.next_hop, bytearray(action.frame), now, None, None)
            elif isinstance(action, TakeAddresses):
                self._take_virtual(action)
            elif isinstance(action, ReleaseAddresses):
                if self._draining:
                    self._draining_actions.append(action)
                else:
                    self._release_virtual(action)
            elif isinstance(action, StateChanged):
                self._count(f"vrrp-{action.new.value.lower()}")
                if self.on_vrrp_event is not None:
                    self.on_vrrp_event(action)

    def _take_virtual(self, action: TakeAddresses) -> None:
        port = self._ports.get(action.interface)
        if port is None:
            self._count("vrrp-unknown-interface")
            return
        responder = ArpResponder(action.mac, frozenset(action.addresses), self._local)
        external = self._nat.config.external if self._nat is not None else None
        for address in action.addresses:
            port.virtual[address] = responder
            # The NAT's external address takes the NAT's traffic on the master
            # whatever Accept_Mode says: translating it is what the master is for.
            if action.accept or address == external:
                self._local.setdefault(address, port)
        port.virtual_macs[action.mac] = action.vrid
        port.source_mac = next(iter(port.virtual_macs))
        self._generation += 1

    def _release_virtual(self, action: ReleaseAddresses) -> None:
        port = self._ports.get(action.interface)
        if port is None:
            return
        for address in action.addresses:
            port.virtual.pop(address, None)
            if address != port.address and self._local.get(address) is port:
                del self._local[address]
        port.virtual_macs.pop(action.mac, None)
        port.source_mac = next(iter(port.virtual_macs), port.mac)
        self._generation += 1

    def _resolve_gateway(self, now: float) -> None:
        """A router of a pair resolves its upstream gateway from the start, master or
        not: a backup that takes over forwards at once instead of after ARP (the
        neighbour cache then verifies the entry as it does every other)."""
        port, gateway = self._external, self._gateway
        if not self.config.vrrp or port is None or gateway is None:
            return
        if port.neighbors.resolve(gateway, now):
            self._request(port, gateway)

    def _gateway_timers(self, now: float) -> None:
        """Probe the tracked gateways; one that stopped answering fails its trackers."""
        for address, probe in self._gateways.items():
            if probe.due > now:
                continue
            if probe.heard == 0.0:
                probe.heard = now  # started: a gateway has its probes' time to answer
            probe.due = now + GATEWAY_PROBE_INTERVAL
            silent = now - probe.heard > GATEWAY_PROBES_LOST * GATEWAY_PROBE_INTERVAL
            if silent:
                if probe.ok:
                    probe.ok = False
                    self._count("vrrp-gateway-down")
                # Said again while it lasts: a controller may have reported otherwise.
                self._vrrp_apply(self._vrrp.track(probe.name, False, now), now)
            port = next((p for p in self._routes if p.contains(address)), None)
            if port is not None:
                self._request(port, address)

    def _gateway_heard(self, probe: _GatewayProbe, now: float) -> None:
        probe.heard = now
        if not probe.ok:
            probe.ok = True
            self._count("vrrp-gateway-up")
        # Said at each answer (nothing happens when nothing changes): a controller
        # may have reported the gateway down meanwhile.
        self._vrrp_apply(self._vrrp.track(probe.name, True, now), now)

    def vrrp_status(self) -> list[dict[str, Any]]:
        """Each virtual router's state, priorities, timers and counters."""
        return [instance.status().as_dict() for instance in self._vrrp.instances()]

    def vrrp_track(self, name: str, ok: bool, now: float) -> list[tuple[str, bytes]]:
        # ValueError from the speaker when no virtual router tracks `name`.
        """Report a tracked object's state (an interface, a gateway); returns the frames
        to send (a master advertises its new priority at once)."""
        return self._vrrp_run(lambda: self._vrrp.track(name, ok, now), now)

    def vrrp_set(self, interface: str, vrid: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a virtual router's `changes` (priority, preempt, preempt_delay,
        advert_interval in seconds, accept) at run time; its status after. What it
        sends (an advertisement of a new priority) leaves with the next timer.
        ValueError (or KeyError for no such virtual router) names what is wrong."""
        instance = self._vrrp.instance(interface, vrid)
        values = dict(changes)
        unknown = sorted(set(values) - _VRRP_SETTABLE)
        if unknown:
            raise ValueError(f"{unknown[0]}: not a setting vrrp_set changes")
        if "advert_interval" in values:
            seconds = values.pop("advert_interval")
            centiseconds = round(seconds * 100)
            if abs(centiseconds - seconds * 100) > 1e-6 or not 1 <= centiseconds <= 4095:
                raise ValueError(
                    f"advert_interval: {seconds} is not in whole hundredths of 0.01..40.95 s"
                )
            values["advert_interval_cs"] = centiseconds
        try:
            config = replace(instance.config, **values)
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        errors = vrrp_errors(
            tuple(config if i is instance else i.config for i in self._vrrp.instances()),
            [p.config for p in self._ports.values()],
        )
        if errors:
            raise ValueError("; ".join(errors))
        self._announce += self._vrrp_run(
            lambda: self._vrrp.reconfigure(config, self._now), self._now
        )
        return instance.status().as_dict()

    def vrrp_hold_preemption(self, held: bool) -> None:
        """While held, the virtual routers do not preempt a lower-priority master (the
        pair's state sync has not given this router a complete copy yet)."""
        self._vrrp.hold_preemption(held)

    def vrrp_master_gone(self, now: float) -> list[tuple[str, bytes]]:
        """The other router of the pair is known to have stopped (its end of the state
        sync closed the connection): every virtual router following a master takes
        over after Skew_Time rather than Master_Down_Interval; the frames to send."""
        return self._vrrp_run(lambda: self._vrrp.master_gone(None, now), now)

    def vrrp_shutdown(self, now: float, *, drain: bool = False) -> list[tuple[str, bytes]]:
        """Stop every virtual router (a master advertises priority 0, so that its
        backup takes over at once, §6.4.3); returns the frames to send.

        With `drain`, a master keeps its virtual addresses and MAC, and so goes on
        forwarding what hosts still send it, until it hears another router
        advertise that virtual router (the backup took over and its gratuitous ARP
        is moving the hosts), or the host gives up waiting (:meth:`vrrp_draining`,
        then :meth:`vrrp_release`): make before break, as a clean stop should be.
        """
        self._draining_actions = []
        self._draining = drain
        frames = self._vrrp_run(lambda: self._vrrp.shutdown(now), now)
        self._draining = False
        self._vrrp_started = True  # and not again
        return frames

    def vrrp_draining(self) -> bool:
        """Whether a stopped master still holds addresses until its successor is heard."""
        return bool(self._draining_actions)

    def vrrp_release(self) -> None:
        """Let go of every address a draining master still holds."""
        actions, self._draining_actions = self._draining_actions, []
        for action in actions:
            self._release_virtual(action)

    def _vrrp_run(self, step: Any, now: float) -> list[tuple[str, bytes]]:
        self._out = []
        self._packet = None
        self._now = max(self._now, now)
        self._vrrp_apply(step(), now)
        self._prune()
        out, self._out = self._out, []
        return [(iface, f if isinstance(f, bytes) else f.ethernet) for iface, f in out]

    # -- flow leases (see router/leases.py) ---------------------------------------------

    def _hint_valid(self, hint: CacheHint) -> bool:
        """Whether a flow treated as ``hint`` says would still be treated so."""
        return hint.generation == self._generation and (hint.session is None or hint.session.alive)

    def _touch(self, hint: CacheHint, now: float) -> bool:
        """Account a packet the fast path forwarded under ``hint``; False: revoke its lease."""
        if not self._hint_valid(hint):
            return False
        if hint.session is None or self._nat is None:
            return True
        return self._nat.touch(hint.session, now, outbound=hint.outbound)

    def _prune(self) -> None:
        """Revoke the leases of flows the router would no longer treat as it did."""
        self._leased_generation = self._generation
        self._leases.prune(self._hint_valid)

    # -- control: interfaces ------------------------------------------------------------

    def _attach(self, iface: RouterInterface) -> None:
        config = self.config
        neighbors = NeighborCache(
            iface.name,
            timeout=config.arp_timeout,
            retry_interval=config.arp_retry_interval,
            retries=config.arp_retries,
            queue_limit=config.arp_queue_limit,
        )
        port = _Port(iface, neighbors, self._local)
        self._ports[iface.name] = port
        self._local[port.address] = port
        self._broadcasts.add(port.broadcast)
        self._routes = sorted(self._ports.values(), key=lambda p: -p.config.network.prefixlen)
        if iface.external:
            self._external = port
            if self.config.upstream_gateway is None and iface.gateway is not None:
                self._gateway = iface.gateway.packed
        self._generation += 1
        # RFC 5227 §3 "ARP announcement": a request with the sender and target
        # address both the router's, so that hosts update stale cache entries.
        self._announce.append((port.name, port.arp.announcement(port.address)))

    def add_interface(self, iface: RouterInterface) -> None:
        """Attach an interface; RouterConfigError (a ValueError) lists every problem."""
        if not isinstance(iface, RouterInterface):
            raise RouterConfigError(["iface: give a RouterInterface"])
        current = [p.config for p in self._ports.values()]
        errors = overlap_errors([*current, iface])
        errors.extend(nat_errors(self.config.nat, [*current, iface]))
        if iface.external:
            if self._nat is not None:
                errors.append("external: the NAT's external interface cannot be replaced")
            gateway = self.config.upstream_gateway
            if gateway is not None and ip_address(gateway) not in iface.network:
                errors.append(f"address: upstream_gateway {gateway} is not on {iface.network}")
            if (
                gateway is not None
                and iface.gateway is not None
                and str(iface.gateway) != str(gateway)
            ):
                errors.append(f"gateway: {iface.gateway} differs from upstream_gateway {gateway}")
        if errors:
            raise RouterConfigError(errors)
        self._attach(iface)
        self._prune()

    def remove_interface(self, name: str) -> RouterInterface:
        """Detach an interface with its neighbours and hosts; returns its configuration."""
        port = self._ports.get(name)
        if port is None:
            raise ValueError(f"name: no interface {name!r}")
        if port.external and self._nat is not None:
            raise ValueError(f"name: {name!r} is the NAT's external interface")
        held = [i.config.vrid for i in self._vrrp.instances() if i.config.interface == name]
        if held:
            raise ValueError(f"name: {name!r} carries the virtual router(s) of VRID {held}")
        for neighbor in port.neighbors.entries.values():
            for _ in neighbor.queue:
                self._drop(RouterDrop.INTERFACE_REMOVED)
        for host in [h for h in self._hosts.values() if h.iface == name]:
            self._forget_host(host)
        del self._ports[name]
        self._secured.pop(name, None)
        del self._local[port.address]
        self._broadcasts.discard(port.broadcast)
        self._routes = [p for p in self._routes if p is not port]
        if self._external is port:
            self._external = None
            if self.config.upstream_gateway is None:
                self._gateway = None
        self._generation += 1
        self._prune()
        return port.config

    # -- control: hosts -----------------------------------------------------------------

    def add_host(self, mac: str, ip: str, network_id: str = "") -> HostEntry:
        """A host NIC joining an internal subnet (the cloud controller's announcement).

        The host is tracked until :meth:`remove_host` (no aging), its MAC is a
        permanent neighbour entry, and it gets an automatic forwarding port.
        Announcing a known host again updates it.
        """
        errors: list[str] = []
        problem = mac_error(mac, unicast=True)
        if problem is not None:
            errors.append(f"mac: {problem}")
        try:
            address = ip_address(ip)
        except ValueError:
            raise ValueError(f"ip: not an IP address: {ip!r}") from None
        if not isinstance(address, IPv4Address):
            raise ValueError(f"ip: {ip} is not IPv4")
        packed = address.packed
        port = next((p for p in self._routes if not p.external and p.host_address(packed)), None)
        if port is None:
            errors.append(f"ip: {ip} is not a host address of any internal interface")
        elif network_id and port.config.network_id and network_id != port.config.network_id:
            errors.append(
                f"network_id: {network_id!r} is not {port.name!r}'s "
                f"network {port.config.network_id!r}"
            )
        existing = self._hosts.get(packed)
        if existing is None and len(self._hosts) >= self.config.host_limit:
            errors.append(f"ip: the host table is full ({self.config.host_limit}, host_limit)")
        if errors or port is None:
            raise ValueError("; ".join(errors))
        hw = mac_bytes(mac)
        now = self._now
        if existing is None:
            host = Host(
                hw, packed, port.name, network_id or port.config.network_id, now, HostState.STATIC
            )
            self._hosts[packed] = host
            self._auto_forward(host)
            self._count("hosts-announced")
        else:
            host = existing
            host.mac, host.state, host.deadline, host.tries = hw, HostState.STATIC, _INF, 0
            host.network_id = network_id or host.network_id
        if port.neighbors.set_static(packed, hw):
            self._generation += 1
        self._host_changed(packed)
        self._flush(port, packed)
        self._prune()
        return host.entry()

    def remove_host(self, mac_or_ip: str) -> HostEntry:
        """Forget a host (its NIC left): its forwarding port and neighbour entry go too."""
        try:
            address = ip_address(mac_or_ip)
            matches = [h for h in self._hosts.values() if h.ip == address.packed]
        except ValueError:
            try:
                hw = mac_bytes(mac_or_ip)
            except (ValueError, TypeError, AttributeError):
                raise ValueError(f"mac_or_ip: neither a MAC nor an IP: {mac_or_ip!r}") from None
            matches = [h for h in self._hosts.values() if h.mac == hw]
        if not matches:
            raise ValueError(f"mac_or_ip: no host {mac_or_ip!r}")
        if len(matches) > 1:
            raise ValueError(f"mac_or_ip: {mac_or_ip!r} names {len(matches)} hosts; give the IP")
        host = matches[0]
        entry = host.entry()
        self._forget_host(host)
        port = self._ports.get(host.iface)
        if port is not None:
            port.neighbors.forget(host.ip)
            secured = self._secured.get(port.name, _NO_BINDINGS).get(host.ip)
            if secured is not None:
                port.neighbors.set_static(host.ip, secured)  # the binding stays
        self._count("hosts-removed")
        self._prune()
        return entry

    # -- control: port security ------------------------------------------------------------

    def secure_neighbors(self, iface: str, bindings: Mapping[str, str]) -> None:
        """The addresses of interface `iface`'s subnet that ports with port
        security own, each with its port's MAC (the node's bindings; replaces
        the interface's previous ones).

        Each is a permanent neighbour entry with that MAC, and an ARP packet
        that claims one for another MAC is dropped (``arp-secured``) without
        changing the cache or the host table. Addresses outside the subnet are
        left out.
        """
        port = self._ports.get(iface)
        if port is None:
            raise ValueError(f"iface: no interface {iface!r}")
        fresh: dict[bytes, bytes] = {}
        for text, mac in bindings.items():
            packed = ip_address(text).packed
            if port.host_address(packed):
                fresh[packed] = mac_bytes(mac)
        old = self._secured.get(iface, _NO_BINDINGS)
        neighbors = port.neighbors
        for gone in old.keys() - fresh.keys():
            host = self._hosts.get(gone)
            if host is not None and host.state is HostState.STATIC:
                neighbors.set_static(gone, host.mac)  # the controller's announcement
            elif neighbors.clear_static(gone):
                self._generation += 1
        for packed, hw in fresh.items():
            if neighbors.set_static(packed, hw):
                self._generation += 1
        if fresh:
            self._secured[iface] = fresh
        else:
            self._secured.pop(iface, None)
        self._prune()

    # -- control: port forwarding ---------------------------------------------------------

    def add_port_forward(
        self, proto: str, external_port: int, inside_ip: str, inside_port: int
    ) -> PortForward:
        """Forward TCP/UDP ``external_port`` of the external address to an inside host's port."""
        nat = self._nat
        errors: list[str] = []
        if nat is None:
            raise ValueError("nat: port forwarding needs NAT on the external interface")
        number = ported_protocol(str(proto))
        if number is None:
            errors.append(f"proto: {proto!r} is not tcp or udp")
        for name, value in (("external_port", external_port), ("inside_port", inside_port)):
            if not isinstance(value, int) or not 1 <= value <= 0xFFFF:
                errors.append(f"{name}: {value!r} is not in 1..65535")
        packed = b""
        try:
            address = ip_address(inside_ip)
            packed = address.packed
            if not any(not p.external and p.host_address(packed) for p in self._routes):
                errors.append(f"inside_ip: {inside_ip} is not a host of any internal interface")
        except ValueError:
            errors.append(f"inside_ip: not an IP address: {inside_ip!r}")
        if number is not None and (int(number), external_port) in self._forwards:
            errors.append(f"external_port: {number.name} {external_port} is already forwarded")
        if errors or number is None:
            raise ValueError("; ".join(errors))
        nat.add_port_forward(number, external_port, packed, inside_port)
        rule = PortForward(number, external_port, format_ip(packed), inside_port, automatic=False)
        self._forwards[int(number), external_port] = rule
        self._forward_changed((int(number), external_port))
        self._prune()
        return rule

    def remove_port_forward(self, proto: str, external_port: int) -> PortForward:
        """Remove an admin rule (its sessions end; cached flows see ``session.alive`` false)."""
        nat = self._nat
        number = ported_protocol(str(proto))
        if number is None:
            raise ValueError(f"proto: {proto!r} is not tcp or udp")
        rule = self._forwards.get((int(number), external_port))
        if nat is None or rule is None:
            raise ValueError(f"external_port: no {number.name} rule on {external_port}")
        if rule.automatic:
            raise ValueError(
                f"external_port: {external_port} is the automatic forwarding port of "
                f"{rule.inside_ip}; remove the host instead"
            )
        nat.remove_port_forward(number, external_port)
        del self._forwards[int(number), external_port]
        self._forward_changed((int(number), external_port))
        self._prune()
        return rule

    # -- state for a backup router (docs/ha-sync.md) ------------------------------------

    def _host_changed(self, ip: bytes) -> None:
        if self._changed_hosts is not None:
            self._changed_hosts.add(ip)

    def _forward_changed(self, key: ForwardKey) -> None:
        if self._changed_forwards is not None:
            self._changed_forwards.add(key)

    def track_changes(self, enabled: bool) -> None:
        """Start afresh, or stop, noting what a backup must be told (:meth:`take_changes`).

        Noted: a host learned, announced, changing MAC or state (probed, or
        answering a probe) or gone; a port forward added or removed; a NAT
        session opened, moved to another TCP state or ended. Not noted: what
        only refreshes a timer (a packet of a known flow, a host seen again),
        which the backup does not age.
        """
        self._changed_hosts = set() if enabled else None
        self._changed_forwards = set() if enabled else None
        if self._nat is not None:
            self._nat.track_changes(enabled)

    def changes_pending(self) -> bool:
        """Whether anything changed since it was last taken."""
        return bool(
            self._changed_hosts
            or self._changed_forwards
            or (self._nat is not None and self._nat.changes_pending())
        )

    def take_changes(self, limit: int) -> list[Change]:
        """At most ``limit`` changes since they were last taken: the current record of
        each key noted, or its :class:`Deletion`.

        Hosts come before port forwards and forwards before sessions, so that a
        backup applying them in order has a session's port forward (and a
        forward's host) before the session, and a removed forward's port free
        before a new mapping takes it.
        """
        changes: list[Change] = []
        hosts, forwards = self._changed_hosts, self._changed_forwards
        if hosts is None or forwards is None:
            return changes
        while hosts and len(changes) < limit:
            ip = hosts.pop()
            changes.append(self._host_record(ip) or Deletion(RecordKind.HOST, ip))
        while forwards and len(changes) < limit:
            key = forwards.pop()
            changes.append(self._forward_record(key) or Deletion(RecordKind.FORWARD, key))
        nat = self._nat
        if nat is not None and len(changes) < limit:
            for session_key in nat.take_changed(limit - len(changes)):
                record = nat.session_record(session_key)
                changes.append(record or Deletion(RecordKind.SESSION, session_key))
        return changes

    def snapshot_keys(self) -> list[StateKey]:
        """Every key of the replicated state, hosts, then forwards, then sessions."""
        keys: list[StateKey] = [(RecordKind.HOST, ip) for ip in self._hosts]
        keys.extend((RecordKind.FORWARD, key) for key in self._forwards)
        if self._nat is not None:
            keys.extend((RecordKind.SESSION, key) for key in self._nat.session_keys())
        return keys

    def state_keys(self) -> set[StateKey]:
        """The keys of the replicated state, as a set."""
        return set(self.snapshot_keys())

    def record(self, key: StateKey) -> Record | None:
        """The current record of ``key``; None when it has no value."""
        kind, value = key
        if kind is RecordKind.HOST:
            return self._host_record(cast(bytes, value))
        if kind is RecordKind.FORWARD:
            return self._forward_record(cast(ForwardKey, value))
        if self._nat is None:
            return None
        return self._nat.session_record(cast(SessionKey, value))

    def _host_record(self, ip: bytes) -> HostRecord | None:
        host = self._hosts.get(ip)
        if host is None:
            return None
        return HostRecord(
            host.ip, host.mac, host.iface, host.network_id, host.state, host.forward_port
        )

    def _forward_record(self, key: ForwardKey) -> ForwardRecord | None:
        rule = self._forwards.get(key)
        if rule is None:
            return None
        inside = IPv4Address(rule.inside_ip).packed
        return ForwardRecord(key[0], key[1], inside, rule.inside_port, rule.automatic)

    def export_state(self) -> RouterState:
        """The whole replicated state, each part in key order."""
        nat = self._nat
        sessions: list[SessionRecord] = []
        if nat is not None:
            for key in sorted(nat.session_keys()):
                record = nat.session_record(key)
                if record is not None:
                    sessions.append(record)
        return RouterState(
            tuple(h for ip in sorted(self._hosts) if (h := self._host_record(ip)) is not None),
            tuple(
                f for key in sorted(self._forwards) if (f := self._forward_record(key)) is not None
            ),
            tuple(sessions),
        )

    def import_state(
        self, state: RouterState, now: float
    ) -> Counter[ApplyRefusal | SessionRefusal]:
        """Become a copy of ``state``: apply every record, delete every key it lacks.

        What is applied is held as a backup holds it (:meth:`apply_changes`);
        :meth:`takeover` makes it the router's own. Returns the records refused.
        """
        records = state.records()
        refused = self.apply_changes(records, now)
        stale = self.state_keys()
        stale.difference_update(state_key(record) for record in records)
        self.delete_keys(stale)
        return refused

    def apply_changes(
        self, changes: Iterable[Change], now: float
    ) -> Counter[ApplyRefusal | SessionRefusal]:
        """Apply a master's changes, in order; returns the refused ones, by reason.

        The master's view wins over what this router holds (a host, a rule or a
        dynamic mapping in the way is replaced), except that an admin rule is
        never displaced by a session. What is applied is not aged here: learned
        hosts and sessions wait, without timers, for the master to delete them
        or for :meth:`takeover`.
        """
        refused: Counter[ApplyRefusal | SessionRefusal] = Counter()
        self._now = max(self._now, now)
        for change in changes:
            reason = self._apply(change, now)
            if reason is not None:
                refused[reason] += 1
        self._prune()
        return refused

    def delete_keys(self, keys: Iterable[StateKey]) -> None:
        """Delete what ``keys`` name: sessions first, then forwards, then hosts."""
        ordered = sorted(keys, key=lambda key: -key[0])
        self.apply_changes((Deletion(kind, value) for kind, value in ordered), self._now)

    def _apply(self, change: Change, now: float) -> ApplyRefusal | SessionRefusal | None:
        nat = self._nat
        if isinstance(change, SessionRecord):
            return ApplyRefusal.NO_NAT if nat is None else nat.install_session(change)
        if isinstance(change, ForwardRecord):
            return self._install_forward(change)
        if isinstance(change, HostRecord):
            return self._install_host(change, now)
        if change.kind is RecordKind.SESSION:
            if nat is not None:
                nat.discard_session(cast(SessionKey, change.key))
        elif change.kind is RecordKind.FORWARD:
            self._drop_forward(cast(ForwardKey, change.key))
        else:
            self._drop_host(cast(bytes, change.key))
        return None

    def _install_host(self, record: HostRecord, now: float) -> ApplyRefusal | None:
        ip = record.ip
        port = next((p for p in self._routes if not p.external and p.host_address(ip)), None)
        if port is None:
            return ApplyRefusal.HOST_NO_INTERFACE
        host = self._hosts.get(ip)
        if host is None:
            if len(self._hosts) >= self.config.host_limit:
                return ApplyRefusal.HOST_TABLE_FULL
            host = Host(record.mac, ip, port.name, record.network_id, now, record.state)
            self._hosts[ip] = host
        else:
            if host.state is HostState.STATIC and record.state is not HostState.STATIC:
                old = self._ports.get(host.iface)
                if old is not None:
                    old.neighbors.forget(ip)
            host.mac, host.iface, host.state = record.mac, port.name, record.state
            host.network_id = record.network_id
            if host.forward_port is not None and host.forward_port != record.forward_port:
                # The automatic rule this router gave the host itself (it learned
                # the host before the master's record came) is not the master's.
                self._drop_auto_forward(ip, host.forward_port)
        # The master ages its learned hosts; here they wait for it (or a takeover).
        host.deadline = _INF
        host.tries = 0
        host.forward_port = record.forward_port  # its rule comes as a ForwardRecord
        if record.state is HostState.STATIC:
            port.neighbors.set_static(ip, record.mac)
        else:
            # The master's view of the host's MAC, as a neighbour to verify: after a
            # takeover its packets go out at once instead of waiting for ARP.
            port.neighbors.confirm(ip, record.mac, now, create=True)
        self._generation += 1
        return None

    def _drop_host(self, ip: bytes) -> None:
        host = self._hosts.pop(ip, None)
        if host is None:
            return
        port = self._ports.get(host.iface)
        if host.state is HostState.STATIC and port is not None:
            port.neighbors.forget(ip)
        if host.forward_port is not None:
            self._drop_auto_forward(ip, host.forward_port)
        self._generation += 1

    def _drop_auto_forward(self, ip: bytes, port: int) -> None:
        """Drop the automatic rule of host `ip` on `port`, if that is what `port` holds."""
        key = (_TCP, port)
        rule = self._forwards.get(key)
        if rule is not None and rule.automatic and rule.inside_ip == format_ip(ip):
            self._drop_forward(key)

    def _install_forward(self, record: ForwardRecord) -> ApplyRefusal | None:
        nat = self._nat
        if nat is None:
            return ApplyRefusal.NO_NAT
        key = record.key
        proto = IpProto(record.proto)
        rule = PortForward(
            proto,
            record.external_port,
            format_ip(record.inside_ip),
            record.inside_port,
            record.automatic,
        )
        current = self._forwards.get(key)
        if current == rule:
            return None
        # The master's rule replaces this router's at the port; one this router
        # cannot hold (its inside address is none of this router's hosts: the
        # backup's own address, say) still takes the port from this router's own.
        if current is not None:
            self._drop_forward(key)
        if not any(not p.external and p.host_address(record.inside_ip) for p in self._routes):
            return ApplyRefusal.FORWARD_INVALID
        nat.free_external_port(record.proto, record.external_port)
        try:
            nat.add_port_forward(proto, record.external_port, record.inside_ip, record.inside_port)
        except ValueError:
            return ApplyRefusal.FORWARD_INVALID
        self._forwards[key] = rule
        return None

    def _drop_forward(self, key: ForwardKey) -> None:
        rule = self._forwards.pop(key, None)
        if rule is not None and self._nat is not None:
            with contextlib.suppress(KeyError):
                self._nat.remove_port_forward(rule.proto, key[1])

    def takeover(self, now: float) -> Takeover:
        """Make the state applied from a master the router's own, from ``now``.

        Every copied NAT session gets a timer (the lifetime of its state, as if
        a packet had just refreshed it) and every copied learned host its aging,
        both from ``now``. Hosts, forwards and sessions then live as if this
        router had made them.
        """
        self._now = max(self._now, now)
        sessions = 0 if self._nat is None else self._nat.adopt_synced(now)
        hosts = 0
        aging = self.config.host_aging
        for host in self._hosts.values():
            if host.state is not HostState.STATIC and host.deadline == _INF:
                host.state, host.tries, host.deadline = HostState.ACTIVE, 0, now + aging
                hosts += 1
        return Takeover(sessions, hosts)


def _set_ident(ip: Ipv4View, ident: int) -> None:
    """Set the IPv4 ID, updating the header checksum (RFC 1624 eqn. 3)."""
    old = ip.identification
    if old != ident:
        ip.identification = ident
        ip.checksum = update16(ip.checksum, old, ident)
