"""The L4 load balancer: virtual services spread over backends by Maglev, with health checks.

:class:`LoadBalancer` is a NAT load balancer that owns its addresses, the shape
of Linux IPVS masquerading with source NAT (or of HAProxy in TCP mode, without
terminating connections). It has two interfaces:

* ``frontend``, where it answers ARP for the virtual IPs (VIPs) of its
  services and clients send to them;
* ``backend``, where it answers ARP for its ``source_ip``, resolves the
  backends' MACs by ARP (the router's neighbour cache,
  :class:`~pktchain.functions.common.arp.NeighborCache`) and sends
  connections and health checks from ``source_ip``.

Both may join one network (a one-arm load balancer: each interface answers
only for its own addresses), or two networks (clients on one side, backends
on the other).

A client's first packet to ``vip:port/proto`` picks a backend from the
service's Maglev table (:mod:`~pktchain.functions.loadbalancer.maglev`, weighted,
consistent), opens a connection entry
(:mod:`~pktchain.functions.loadbalancer.connections`) and is translated: destination
to the backend, source to ``source_ip`` and a port of it (so the backend's
replies come back here whatever its routes), TTL decremented. Replies are
translated back to come from the VIP and sent to the MAC the client's packets
came from. An established connection is forwarded with a :class:`FlowLease`
(one per connection, both directions), so the node's fast path carries it
until a FIN or RST, idle expiry, or a change that concerns it.

Backends are checked by TCP SYNs the load balancer itself sends through the
dataplane from its timer (:mod:`~pktchain.functions.loadbalancer.health`); a
backend marked down or draining leaves the Maglev tables but keeps its
connections (a draining one until ``drain_timeout``). ICMP errors about a
connection are translated both ways (RFC 5508 §4.2, as IPVS does); echo
requests to a VIP or to ``source_ip`` are answered. IPv4 only.

Every bad packet is a counted drop (:class:`LbDrop`), never an exception out
of :meth:`LoadBalancer.process` or :meth:`LoadBalancer.on_timer`.
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum
from ipaddress import IPv4Address
from typing import Any, ClassVar

from pktchain.functions.common.arp import (
    ArpResponder,
    Heard,
    Hold,
    Merge,
    NeighborCache,
    NeighborState,
)
from pktchain.functions.common.embedded import (
    ERROR_TYPES,
    icmp_checksum_ok,
    parse_embedded,
    refresh_icmp_checksum,
    rewrite_embedded,
)
from pktchain.functions.common.icmp import echo_reply
from pktchain.functions.common.reject import tcp_reset
from pktchain.functions.common.tcp import Lifetime, TcpSessionState, tcp_event, tcp_transition
from pktchain.functions.loadbalancer.config import (
    Backend,
    HealthCheck,
    LoadBalancerConfig,
    Protocol,
    config_errors,
)
from pktchain.functions.loadbalancer.connections import (
    BackendRuntime,
    BackendState,
    ClientKey,
    Connection,
    ServerKey,
    ServiceRuntime,
    SnatPorts,
    UdpState,
    lifetime_of,
)
from pktchain.functions.loadbalancer.health import CheckResult, Target
from pktchain.functions.loadbalancer.maglev import MaglevTable
from pktchain.functions.sdk import (
    Deadlines,
    FlowLease,
    Function,
    Packet,
    Result,
    TableSize,
    Verdict,
    drop,
    forward,
)
from pktchain.functions.sdk.schema import ConfigError, load_config
from pktchain.packet.address import format_mac, mac_bytes
from pktchain.packet.headers import EtherType, IcmpType, IpProto, TcpFlag
from pktchain.packet.layers import Ethernet, Ipv4, Tcp, build
from pktchain.packet.rewrite import Side
from pktchain.packet.views import IcmpView, Ipv4View, TcpView
from pktchain.packet.virtio import (
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_LEN,
    complete_checksum,
    parse_virtio_net_hdr,
)

__all__ = [
    "BACKEND",
    "FRONTEND",
    "BackendState",
    "LbDrop",
    "LoadBalancer",
    "LoadBalancerConfig",
]

FRONTEND = "frontend"
BACKEND = "backend"


class LbDrop(StrEnum):
    """Why a frame did not go on; each is a counter of the same name."""

    UNKNOWN_INTERFACE = "unknown-interface"  # refused by the driver (Function.UNKNOWN_INTERFACE)
    MALFORMED = "malformed"
    VLAN_TAGGED = "vlan-tagged"  # the interfaces are untagged
    NOT_OUR_MAC = "not-our-mac"  # unicast to another station, flooded to us
    UNSUPPORTED_ETHERTYPE = "unsupported-ethertype"
    IPV6 = "ipv6"  # IPv4 only
    LINK_BROADCAST = "link-broadcast"  # RFC 1812 §5.3.4: unicast IP in a link broadcast
    IP_CHECKSUM = "ip-checksum"  # RFC 1812 §5.2.2
    FRAGMENT = "fragment"  # no reassembly: a fragment names no connection
    NOT_FOR_US = "not-for-us"  # an address the load balancer does not own
    UNSUPPORTED_PROTOCOL = "unsupported-protocol"
    NO_SERVICE = "no-service"  # a VIP port without a service (TCP: RST sent)
    NO_BACKEND = "no-backend"  # every backend down or draining (TCP: RST sent)
    NO_CONNECTION = "no-connection"  # not a SYN, no connection (TCP: RST sent)
    TABLE_FULL = "table-full"  # max_connections reached
    SNAT_PORTS_EXHAUSTED = "snat-ports-exhausted"
    TTL_EXCEEDED = "ttl-exceeded"
    ARP_PENDING = "arp-pending"  # held until the backend's MAC is known (sent then)
    ARP_QUEUE_FULL = "arp-queue-full"  # arp_queue_limit is 0
    GSO_UNRESOLVED = "gso-unresolved"  # a GSO frame cannot wait for ARP
    ARP_OPERATION = "arp-operation"
    ARP_BAD_SENDER = "arp-bad-sender"
    ARP_OWN = "arp-own"  # its own ARP from the other interface (both on one network)
    ARP_ADDRESS_CONFLICT = "arp-address-conflict"  # someone claims one of our addresses
    ARP_ANSWERED = "arp-answered"  # a request for our address: replied
    ARP_LEARNED = "arp-learned"  # a backend's MAC taken in
    ARP_IGNORED = "arp-ignored"  # nothing to learn or answer
    ICMP_CHECKSUM = "icmp-checksum"  # RFC 1122 §3.2.2: bad ICMP silently discarded
    ICMP_ECHO_ANSWERED = "icmp-echo-answered"
    ICMP_UNSUPPORTED = "icmp-unsupported"  # ICMP other than echo requests and errors
    ICMP_EMBEDDED = "icmp-embedded-unusable"  # an error whose quoted packet is unusable
    ICMP_NO_CONNECTION = "icmp-no-connection"  # an error about no known connection
    HEALTH_CHECK_ANSWER = "health-check-answer"  # a backend's answer to a check: consumed
    INTERNAL_ERROR = "internal-error"  # a frame no check caught; should stay 0


EVENT_COUNTERS = (
    "to-backend",
    "to-client",
    "connections-opened",
    "connections-expired",
    "connections-cut",
    "connections-rebalanced",
    "leases-granted",
    "leases-revoked",
    "rst-sent",
    "icmp-errors-translated",
    "arp-requests-sent",
    "arp-replies-sent",
    "arp-announcements-sent",
    "arp-queued",
    "arp-queue-overflow",
    "arp-resolution-failed",
    "arp-held-dropped",
    "arp-mac-changed",
    "health-checks-sent",
    "health-checks-passed",
    "health-checks-failed",
    "backends-marked-up",
    "backends-marked-down",
    "maglev-rebuilds",
)
"""Counters of what happened (the drop reasons are counters too)."""

DROPS: dict[LbDrop, str] = {
    LbDrop.UNKNOWN_INTERFACE: "frames on an interface it does not have, refused by the driver",
    LbDrop.MALFORMED: "frames that do not parse (also counted as malformed-<why>)",
    LbDrop.VLAN_TAGGED: "VLAN-tagged frames (the interfaces are untagged)",
    LbDrop.NOT_OUR_MAC: "unicast frames to another station, flooded to it",
    LbDrop.UNSUPPORTED_ETHERTYPE: "frames that are neither IPv4, ARP nor IPv6",
    LbDrop.IPV6: "IPv6 packets (IPv4 only)",
    LbDrop.LINK_BROADCAST: "unicast IP in a link-layer broadcast (RFC 1812 §5.3.4)",
    LbDrop.IP_CHECKSUM: "IPv4 headers with a wrong checksum (RFC 1812 §5.2.2)",
    LbDrop.FRAGMENT: "IP fragments (no reassembly: a fragment names no connection)",
    LbDrop.NOT_FOR_US: "packets to an address the load balancer does not own",
    LbDrop.UNSUPPORTED_PROTOCOL: "protocols other than TCP, UDP and ICMP",
    LbDrop.NO_SERVICE: "packets to a VIP port without a service (TCP: a RST sent)",
    LbDrop.NO_BACKEND: "new connections while every backend is down or draining (TCP: a RST sent)",
    LbDrop.NO_CONNECTION: "TCP segments other than a SYN without a connection (a RST sent)",
    LbDrop.TABLE_FULL: "new connections beyond max_connections",
    LbDrop.SNAT_PORTS_EXHAUSTED: "new connections with no source port of source_ip free",
    LbDrop.TTL_EXCEEDED: "packets whose TTL ran out",
    LbDrop.ARP_PENDING: "packets held until the backend's MAC is known (sent then)",
    LbDrop.ARP_QUEUE_FULL: "packets not held for ARP: arp_queue_limit is 0",
    LbDrop.GSO_UNRESOLVED: "GSO frames to a backend whose MAC is unknown (they cannot wait)",
    LbDrop.ARP_OPERATION: "ARP that is neither a request nor a reply",
    LbDrop.ARP_BAD_SENDER: "ARP from an unusable sender address",
    LbDrop.ARP_OWN: "its own ARP, from its other interface (both on one network)",
    LbDrop.ARP_ADDRESS_CONFLICT: "ARP from a host claiming one of its addresses",
    LbDrop.ARP_ANSWERED: "ARP requests for one of its addresses, answered",
    LbDrop.ARP_LEARNED: "ARP that taught it a backend's MAC",
    LbDrop.ARP_IGNORED: "ARP with nothing to learn or answer",
    LbDrop.ICMP_CHECKSUM: "ICMP with a wrong checksum, silently discarded (RFC 1122 §3.2.2)",
    LbDrop.ICMP_ECHO_ANSWERED: "echo requests to a VIP or source_ip, answered",
    LbDrop.ICMP_UNSUPPORTED: "ICMP other than echo requests and errors",
    LbDrop.ICMP_EMBEDDED: "ICMP errors whose quoted packet is unusable",
    LbDrop.ICMP_NO_CONNECTION: "ICMP errors about no known connection",
    LbDrop.HEALTH_CHECK_ANSWER: "backends' answers to health checks, consumed",
    LbDrop.INTERNAL_ERROR: "frames no check caught (should stay 0)",
}
"""What each drop counter counts."""

EVENTS = {
    "to-backend": "packets forwarded to a backend",
    "to-client": "packets forwarded back to a client",
    "connections-opened": "connections opened",
    "connections-expired": "connections ended by their idle or closing timeout",
    "connections-cut": "connections cut: drain_timeout ran out, their service or "
    "source_ip went away, or they were closed",
    "connections-rebalanced": "connections started over on a backend picked again (a new "
    "SYN on an ended one; a backend that left the table before answering)",
    "leases-granted": "fast-path leases given to connections",
    "leases-revoked": "leases revoked (FIN or RST, expiry, or a change that concerns them)",
    "rst-sent": "TCP resets sent",
    "icmp-errors-translated": "ICMP errors about a connection, translated (RFC 5508 §4.2)",
    "arp-requests-sent": "ARP requests sent for backends",
    "arp-replies-sent": "ARP replies sent for its addresses",
    "arp-announcements-sent": "gratuitous ARP sent for its addresses",
    "arp-queued": "packets held while a backend's MAC is resolved",
    "arp-queue-overflow": "held packets that pushed out an older one (arp_queue_limit)",
    "arp-resolution-failed": "backend addresses given up after arp_retries",
    "arp-held-dropped": "held packets dropped with an address given up",
    "arp-mac-changed": "backends whose MAC changed",
    "health-checks-sent": "health-check SYNs sent",
    "health-checks-passed": "health checks answered by a SYN-ACK",
    "health-checks-failed": "health checks refused or timed out",
    "backends-marked-up": "backends brought up by their checks",
    "backends-marked-down": "backends taken down by their checks",
    "maglev-rebuilds": "Maglev tables built again",
}
"""What each counter of EVENT_COUNTERS counts."""


_VNET = VIRTIO_NET_HDR_LEN
_ZERO_MAC = bytes(6)
_INF = float("inf")
_UNSTAMPED = -_INF  # a drain started by a reconfiguration: the next timer stamps it
_TCP = int(IpProto.TCP)
_UDP = int(IpProto.UDP)
_ICMP = int(IpProto.ICMP)
_ETH_IPV4 = int(EtherType.IPV4)
_ETH_ARP = int(EtherType.ARP)
_ETH_IPV6 = int(EtherType.IPV6)
_SYN = int(TcpFlag.SYN)
_ACK = int(TcpFlag.ACK)
_FIN = int(TcpFlag.FIN)
_RST = int(TcpFlag.RST)
_SYN_FIN_RST = _SYN | _FIN | _RST
_TTL = 64  # RFC 1700 default TTL for the load balancer's own datagrams (RFC 1122 §3.2.1.7)
_CHECK_WINDOW = 1024  # window of a health-check SYN: it carries no data


class LoadBalancer(Function[LoadBalancerConfig]):
    """Virtual services spread over backends (see the module docstring and the docs)."""

    KIND = "load-balancer"
    Config = LoadBalancerConfig
    COUNTERS: ClassVar[Mapping[str, str]] = {
        **{reason.value: DROPS.get(reason, "") for reason in LbDrop},
        **{name: EVENTS.get(name, "") for name in EVENT_COUNTERS},
    }
    LIVE = True
    INTERFACES = (FRONTEND, BACKEND)
    FLOODED = True  # it owns addresses: ARP requests for them must reach it

    def __init__(self, config: LoadBalancerConfig | None = None) -> None:
        if config is None:
            # Say which fields are required rather than fail on a constructor.
            config = load_config(LoadBalancerConfig, {}, subject=f"{self.KIND} configuration")
        self._now = 0.0
        self._applied: LoadBalancerConfig | None = None
        self._services: dict[tuple[bytes, int, int], ServiceRuntime] = {}
        self._vips: frozenset[bytes] = frozenset()
        self._targets: dict[tuple[bytes, int], Target] = {}
        self._probes: dict[tuple[bytes, int, int], Target] = {}
        self._by_client: dict[ClientKey, Connection] = {}
        self._by_server: dict[ServerKey, Connection] = {}
        self._idle: Deadlines[Connection] = Deadlines()
        """When each connection's idle timeout is due (its lease's activity included)."""
        self._outbox: list[tuple[str, bytes]] = []
        self._announce: list[tuple[str, bytes]] = []
        self._random = random.Random()
        self._arp: dict[str, ArpResponder] = {}
        self._frontend_mac = b""
        self._backend_mac = b""
        self._source_ip = b""
        self._ports = SnatPorts(config.snat_port_min, config.snat_port_max)
        self._neighbors = NeighborCache(
            BACKEND,
            timeout=config.arp_timeout,
            retry_interval=config.arp_retry_interval,
            retries=config.arp_retries,
            queue_limit=config.arp_queue_limit,
        )
        super().__init__(config)
        self.apply_config(config)

    # -- drops and replies (the driver counts each under its reason) ----------------------

    def _drop(self, reason: LbDrop, emit: Iterable[tuple[str, bytes]] = ()) -> Result:
        return drop(reason.value, emit=emit)

    def _reply(self, reason: LbDrop, frames: list[tuple[str, bytes]]) -> Result:
        return Result(Verdict.REPLY, reason=reason.value, emit=[*frames])

    # -- the packet path ------------------------------------------------------------------

    def process(self, packet: Packet, now: float) -> Result:
        """Handle one frame; a bad one is a counted drop, never an exception."""
        self._now = max(self._now, now)
        try:
            return self._process(packet, now)
        except (ValueError, IndexError, struct.error):
            return self._drop(LbDrop.INTERNAL_ERROR)

    def _process(self, packet: Packet, now: float) -> Result:
        iface = packet.iface
        own_mac = self._frontend_mac if iface == FRONTEND else self._backend_mac
        info = packet.info
        if info.error is not None:
            self.counters["malformed-" + info.error.value] += 1
            return self._drop(LbDrop.MALFORMED)
        if info.vlans:
            return self._drop(LbDrop.VLAN_TAGGED)
        dst_mac = packet.dst_mac
        link_broadcast = bool(dst_mac[0] & 1)
        if not link_broadcast and dst_mac != own_mac:
            return self._drop(LbDrop.NOT_OUR_MAC)
        ethertype = info.ethertype
        if ethertype == _ETH_ARP:
            return self._arp_in(packet, now)
        if ethertype == _ETH_IPV6:
            return self._drop(LbDrop.IPV6)
        if ethertype != _ETH_IPV4:
            return self._drop(LbDrop.UNSUPPORTED_ETHERTYPE)
        if link_broadcast:
            return self._drop(LbDrop.LINK_BROADCAST)
        ip = Ipv4View(packet.buf, info.l3)
        if not ip.checksum_ok():
            return self._drop(LbDrop.IP_CHECKSUM)
        if info.fragment:
            return self._drop(LbDrop.FRAGMENT)
        proto = info.proto
        if iface == FRONTEND:
            if info.dst not in self._vips:
                return self._drop(LbDrop.NOT_FOR_US)
            if proto in (_TCP, _UDP):
                return self._from_client(packet, ip.ttl, now)
        else:
            if info.dst != self._source_ip:
                return self._drop(LbDrop.NOT_FOR_US)
            if proto in (_TCP, _UDP):
                return self._from_backend(packet, ip.ttl, now)
        if proto == _ICMP:
            return self._icmp_in(packet, ip.ttl, now)
        return self._drop(LbDrop.UNSUPPORTED_PROTOCOL)

    def _from_client(self, packet: Packet, ttl: int, now: float) -> Result:
        info = packet.info
        proto = info.proto
        key: ClientKey = (info.src, info.sport, info.dst, info.dport, proto)
        flags = info.tcp_flags
        conn = self._by_client.get(key)
        if conn is not None and self._rebalance(conn, flags):
            self._end(conn, "connections-rebalanced")
            conn = None
        if conn is None:
            service = self._services.get((info.dst, info.dport, proto))
            if service is None:
                return self._refuse(packet, LbDrop.NO_SERVICE)
            if proto == _TCP and flags & (_SYN | _ACK | _RST) != _SYN:
                # RFC 9293 §3.10.7.1: a segment for no connection is answered by a reset.
                return self._refuse(packet, LbDrop.NO_CONNECTION)
            if ttl <= 1:
                return self._drop(LbDrop.TTL_EXCEEDED)
            backend = service.pick(key)
            if backend is None:
                return self._refuse(packet, LbDrop.NO_BACKEND)
            if len(self._by_client) >= self.config.max_connections:
                return self._drop(LbDrop.TABLE_FULL)
            snat_port = self._ports.take(proto, backend.ip, backend.port, info.sport)
            if snat_port is None:
                return self._drop(LbDrop.SNAT_PORTS_EXHAUSTED)
            conn = Connection(service, backend, key, packet.src_mac, snat_port, now)
            self._by_client[key] = conn
            self._by_server[conn.server_key] = conn
            backend.connections.add(conn)
            self.counters["connections-opened"] += 1
        elif ttl <= 1:
            return self._drop(LbDrop.TTL_EXCEEDED)
        elif packet.src_mac != conn.client_mac:
            conn.client_mac = packet.src_mac  # replies go where the client's packets come from
            self._revoke(conn)
        self._track(conn, flags, outbound=True, now=now)
        backend = conn.backend
        packet.set_dst(backend.ip, backend.port)
        packet.set_src(self._source_ip, conn.snat_port)
        packet.decrement_ttl()
        return self._send_backend(packet, backend.ip, now, conn, flags)

    def _rebalance(self, conn: Connection, flags: int) -> bool:
        """Whether a client's packet should start its connection over on a new backend.

        A fresh SYN after both FINs or a RST opens a new connection (RFC 9293
        §3.10.7.4 lets a SYN reopen a TIME-WAIT connection); a SYN retransmitted
        to a backend that never answered, or a UDP datagram, goes elsewhere
        when that backend has left the table: it has no state to lose.
        """
        if conn.proto == _UDP:
            return not conn.backend.healthy
        if flags & (_SYN | _ACK | _RST) != _SYN:
            return False
        if conn.state in (TcpSessionState.BOTH_FIN, TcpSessionState.TRANSITORY):
            return True
        return not conn.answered and not conn.backend.in_table

    def _from_backend(self, packet: Packet, ttl: int, now: float) -> Result:
        info = packet.info
        proto = info.proto
        flags = info.tcp_flags
        conn = self._by_server.get((info.src, info.sport, info.dport, proto))
        if conn is None:
            if proto == _TCP:
                target = self._probes.get((info.src, info.sport, info.dport))
                if target is not None:
                    return self._check_answer(packet, target, now)
            return self._refuse(packet, LbDrop.NO_CONNECTION)
        if ttl <= 1:
            return self._drop(LbDrop.TTL_EXCEEDED)
        self._track(conn, flags, outbound=False, now=now)
        packet.set_src(conn.vip, conn.vport)
        packet.set_dst(conn.client_ip, conn.client_port)
        packet.decrement_ttl()
        packet.set_macs(src=self._frontend_mac, dst=conn.client_mac)
        self.counters["to-client"] += 1
        return forward(FRONTEND, lease=self._lease(conn, flags))

    def _track(self, conn: Connection, flags: int, *, outbound: bool, now: float) -> None:
        """Move the connection's state and idle timer for one of its packets."""
        if conn.proto == _UDP:
            if not outbound:
                conn.state = UdpState.REPLIED
            self._arm(conn, now + self.config.udp_timeout)
            return
        if flags & (_FIN | _RST):
            self._revoke(conn)  # the connection ends: see it again
        state = conn.state
        if not isinstance(state, TcpSessionState):
            return
        conn.state, lifetime = tcp_transition(state, tcp_event(flags, outbound))
        if lifetime is not Lifetime.KEEP:
            self._arm(conn, now + self._timeout(lifetime))

    def _timeout(self, lifetime: Lifetime) -> float:
        config = self.config
        if lifetime is Lifetime.ESTABLISHED:
            return float(config.tcp_established_timeout)
        if lifetime is Lifetime.CLOSING:
            return float(config.tcp_closing_timeout)
        return float(config.tcp_opening_timeout)

    def _lease(self, conn: Connection, flags: int) -> FlowLease | None:
        """The connection's lease for a packet that may take it (None: it may not)."""
        if not conn.established or flags & _SYN_FIN_RST or conn.backend.removed:
            return None
        lease = conn.lease
        if lease is None or not lease.valid:
            if lease is not None:
                self._fold(conn, lease)
            lease = conn.lease = FlowLease()
            self.counters["leases-granted"] += 1
        return lease

    def _fold(self, conn: Connection, lease: FlowLease) -> None:
        """Take the activity the fast path saw on ``lease`` into the connection's timer."""
        if lease.seen:
            idle = (
                self.config.udp_timeout
                if conn.proto == _UDP
                else self._timeout(lifetime_of(conn.state))
            )
            conn.expires = max(conn.expires, lease.seen + idle)

    def _revoke(self, conn: Connection) -> None:
        lease = conn.lease
        if lease is None:
            return
        conn.lease = None
        self._fold(conn, lease)
        if lease.valid:
            lease.revoke()
            self.counters["leases-revoked"] += 1

    def _send_backend(
        self, packet: Packet, ip: bytes, now: float, conn: Connection | None = None, flags: int = 0
    ) -> Result:
        """Forward a translated packet to a backend (or hold it while its MAC is resolved)."""
        mac = self._neighbors.mac(ip)
        if mac is None:
            packet.set_macs(src=self._backend_mac, dst=_ZERO_MAC)
            return self._hold(packet, ip, now)
        packet.set_macs(src=self._backend_mac, dst=mac)
        self.counters["to-backend"] += 1
        return forward(BACKEND, lease=None if conn is None else self._lease(conn, flags))

    def _hold(self, packet: Packet, ip: bytes, now: float) -> Result:
        buf = packet.buf
        vnet = parse_virtio_net_hdr(buf)
        if vnet is None or vnet.gso_type:
            return self._drop(LbDrop.GSO_UNRESOLVED)
        if vnet.needs_csum:
            # The frame will leave as an emitted frame, without its virtio header.
            complete_checksum(buf, vnet, _VNET)
            buf[0] &= ~VIRTIO_NET_HDR_F_NEEDS_CSUM
        queued, emit = self._hold_frame(ip, buf[_VNET:], now)
        return self._drop(LbDrop.ARP_PENDING if queued else LbDrop.ARP_QUEUE_FULL, emit=emit)

    def _hold_frame(
        self, ip: bytes, frame: bytearray, now: float
    ) -> tuple[bool, list[tuple[str, bytes]]]:
        """Queue an Ethernet frame for ``ip``: whether it was, and the ARP request to emit.

        ``ip`` is resolved even when no frame may wait (``arp_queue_limit`` 0).
        """
        neighbors = self._neighbors
        emit = [self._arp_request(ip)] if neighbors.resolve(ip, now) else []
        held = neighbors.hold(ip, frame, BACKEND)
        if held is Hold.REFUSED:
            return False, emit
        self.counters["arp-queued"] += 1
        if held is Hold.QUEUED_OVERFLOW:
            self.counters["arp-queue-overflow"] += 1
        return True, emit

    def _refuse(self, packet: Packet, reason: LbDrop) -> Result:
        """A TCP segment nobody takes gets a reset (RFC 9293 §3.10.7.1); anything else a drop.

        The reset goes back to the sender from the address and MAC the segment
        was sent to (one of ours: anything else was dropped before).
        """
        info = packet.info
        if info.proto != _TCP or info.tcp_flags & _RST:
            return self._drop(reason)
        self.counters["rst-sent"] += 1
        return self._reply(reason, [(packet.iface, tcp_reset(packet.buf, info))])

    # -- ICMP -------------------------------------------------------------------------------

    def _icmp_in(self, packet: Packet, ttl: int, now: float) -> Result:
        info = packet.info
        buf = packet.buf
        vnet = parse_virtio_net_hdr(buf)
        if vnet is not None and vnet.needs_csum and not vnet.gso_type:
            complete_checksum(buf, vnet, _VNET)
            buf[0] &= ~VIRTIO_NET_HDR_F_NEEDS_CSUM
        if not icmp_checksum_ok(buf, info.l4, info.end):
            return self._drop(LbDrop.ICMP_CHECKSUM)
        icmp_type = IcmpView(buf, info.l4).type
        if icmp_type == IcmpType.ECHO_REQUEST:
            own = self._frontend_mac if packet.iface == FRONTEND else self._backend_mac
            datagram = echo_reply(buf, info.l3, info.l4, info.end)
            frame = build(Ethernet(dst=packet.src_mac, src=own, type=_ETH_IPV4), datagram)
            return self._reply(LbDrop.ICMP_ECHO_ANSWERED, [(packet.iface, frame)])
        if icmp_type not in ERROR_TYPES:
            return self._drop(LbDrop.ICMP_UNSUPPORTED)
        embedded = parse_embedded(buf, info.l4, info.end)
        if not isinstance(embedded, tuple) or embedded.proto not in (_TCP, _UDP):
            return self._drop(LbDrop.ICMP_EMBEDDED)
        if ttl <= 1:
            return self._drop(LbDrop.TTL_EXCEEDED)
        if packet.iface == BACKEND:
            # About a packet sent to a backend: src source_ip:snat, dst backend.
            conn = self._by_server.get(
                (embedded.dst, embedded.dport, embedded.sport, embedded.proto)
            )
            if conn is None or embedded.src != self._source_ip:
                return self._drop(LbDrop.ICMP_NO_CONNECTION)
            rewrite_embedded(buf, embedded, Side.SRC, conn.client_ip, conn.client_port)
            rewrite_embedded(buf, embedded, Side.DST, conn.vip, conn.vport)
            refresh_icmp_checksum(buf, info.l4, info.end)
            # As IPVS does, the error seems to come from the VIP the client talks to.
            packet.set_src(conn.vip)
            packet.set_dst(conn.client_ip)
            packet.decrement_ttl()
            packet.set_macs(src=self._frontend_mac, dst=conn.client_mac)
            self.counters["icmp-errors-translated"] += 1
            self.counters["to-client"] += 1
            return forward(FRONTEND)
        # About a reply sent to a client: src vip:vport, dst client.
        conn = self._by_client.get(
            (embedded.dst, embedded.dport, embedded.src, embedded.sport, embedded.proto)
        )
        if conn is None:
            return self._drop(LbDrop.ICMP_NO_CONNECTION)
        backend = conn.backend
        rewrite_embedded(buf, embedded, Side.SRC, backend.ip, backend.port)
        rewrite_embedded(buf, embedded, Side.DST, self._source_ip, conn.snat_port)
        refresh_icmp_checksum(buf, info.l4, info.end)
        packet.set_src(self._source_ip)
        packet.set_dst(backend.ip)
        packet.decrement_ttl()
        self.counters["icmp-errors-translated"] += 1
        return self._send_backend(packet, backend.ip, now)

    # -- ARP (RFC 826) ----------------------------------------------------------------------

    def _arp_request(self, ip: bytes) -> tuple[str, bytes]:
        self.counters["arp-requests-sent"] += 1
        return (BACKEND, self._arp[BACKEND].request(self._source_ip, ip))

    def _announcement(self, iface: str, address: bytes) -> tuple[str, bytes]:
        """RFC 5227 §3 announcement: hosts update cache entries that point elsewhere."""
        return (iface, self._arp[iface].announcement(address))

    def _arp_in(self, packet: Packet, now: float) -> Result:
        iface = packet.iface
        responder = self._arp[iface]
        heard = responder.hear(packet.buf, packet.info.l3)
        kind = heard.kind
        if kind is Heard.BAD_OPERATION:
            return self._drop(LbDrop.ARP_OPERATION)
        if kind is Heard.OWN:
            return self._drop(LbDrop.ARP_OWN)
        if kind is Heard.BAD_SENDER:
            return self._drop(LbDrop.ARP_BAD_SENDER)
        if kind is Heard.CONFLICT:
            return self._drop(LbDrop.ARP_ADDRESS_CONFLICT)
        emit: list[tuple[str, bytes]] = []
        learned = False
        sha, spa = heard.sha, heard.spa
        if iface == BACKEND and kind is Heard.NEIGHBOR:
            # RFC 826 "merge": refresh a known entry; add a backend only when the
            # packet is for us, so that a gratuitous ARP never creates one.
            create = heard.for_us and spa in self._backend_ips()
            merge = self._neighbors.confirm(spa, sha, now, create=create)
            learned = merge is not Merge.IGNORED
            if merge is Merge.MAC_CHANGED:
                self.counters["arp-mac-changed"] += 1
                self._revoke_to(spa)
            for queued in self._neighbors.release(spa):
                queued.frame[0:6] = sha
                emit.append((BACKEND, bytes(queued.frame)))
                self.counters["to-backend"] += 1
        if heard.answer_due:
            # RFC 5227 §2.1.1 probes (sender 0.0.0.0) are answered too.
            emit.insert(0, (iface, responder.reply(heard)))
            self.counters["arp-replies-sent"] += 1
            return self._reply(LbDrop.ARP_ANSWERED, emit)
        return self._drop(LbDrop.ARP_LEARNED if learned else LbDrop.ARP_IGNORED, emit)

    def _backend_ips(self) -> set[bytes]:
        return {b.ip for s in self._services.values() for b in s.backends.values()}

    def _revoke_to(self, ip: bytes) -> None:
        """The way to ``ip`` changed: its connections' cached treatment is stale."""
        for service in self._services.values():
            for backend in service.backends.values():
                if backend.ip == ip:
                    for conn in backend.connections:
                        self._revoke(conn)

    # -- health checks ------------------------------------------------------------------------

    def _send_check(self, target: Target, now: float) -> list[tuple[str, bytes]]:
        health = self.config.health
        seq = self._random.getrandbits(32)
        target.start_probe(seq, now, health.interval, health.timeout)
        self.counters["health-checks-sent"] += 1
        mac = self._neighbors.mac(target.ip)
        frame = build(
            Ethernet(dst=mac or _ZERO_MAC, src=self._backend_mac),
            Ipv4(src=self._source_ip, dst=target.ip, ttl=_TTL, df=True),
            Tcp(
                sport=target.source_port,
                dport=target.port,
                seq=seq,
                flags=_SYN,
                window=_CHECK_WINDOW,
            ),
        )
        if mac is not None:
            return [(BACKEND, frame)]
        return self._hold_frame(target.ip, bytearray(frame), now)[1]

    def _check_answer(self, packet: Packet, target: Target, now: float) -> Result:
        """A backend answered a check: SYN-ACK passes it (and gets a RST), RST fails it."""
        info = packet.info
        flags = info.tcp_flags
        tcp = TcpView(packet.buf, info.l4)
        expected = target.probe_seq
        current = (
            expected is not None and bool(flags & _ACK) and tcp.ack == (expected + 1) & 0xFFFFFFFF
        )
        if flags & _RST:
            if current:
                self._record(target, CheckResult.REFUSED, now)
            return self._drop(LbDrop.HEALTH_CHECK_ANSWER)
        if current and flags & _SYN:
            self._record(target, CheckResult.SYN_ACK, now)
        if not flags & _ACK:
            return self._drop(LbDrop.HEALTH_CHECK_ANSWER)
        # RFC 9293 §3.10.5 ABORT (and §3.10.7.3 for a stale answer): <SEQ=SEG.ACK><CTL=RST>.
        frame = build(
            Ethernet(dst=packet.src_mac, src=self._backend_mac),
            Ipv4(src=self._source_ip, dst=target.ip, ttl=_TTL, df=True),
            Tcp(sport=target.source_port, dport=target.port, seq=tcp.ack, flags=_RST, window=0),
        )
        self.counters["rst-sent"] += 1
        return self._reply(LbDrop.HEALTH_CHECK_ANSWER, [(BACKEND, frame)])

    def _record(self, target: Target, result: CheckResult, now: float) -> None:
        health = self.config.health
        self.counters["health-checks-passed" if result.passed else "health-checks-failed"] += 1
        if not target.record(result, now, rise=health.rise, fall=health.fall):
            return
        self.counters["backends-marked-up" if target.up else "backends-marked-down"] += 1
        for service in self._services.values():
            touched = False
            for backend in service.backends.values():
                if backend.target is not target:
                    continue
                touched = True
                if not target.up and not service.tcp:
                    # UDP flows of a dead backend go elsewhere on their next datagram.
                    for conn in backend.connections:
                        self._revoke(conn)
            if touched:
                self._rebuild(service)

    # -- timers ---------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` should run next."""
        if self._outbox or self._announce:
            return self._now
        deadline = self._neighbors.next_deadline()
        for target in self._targets.values():
            deadline = min(deadline, target.deadline)
        for service in self._services.values():
            for backend in service.backends.values():
                if backend.drain_since is not None and backend.connections:
                    deadline = min(deadline, backend.drain_since + self.config.drain_timeout)
        idle = self._idle.next()
        if idle is not None:
            deadline = min(deadline, idle)
        if deadline == _INF:
            return None
        return max(deadline, self._now) if deadline == -_INF else deadline

    def on_timer(self, now: float) -> list[tuple[str, bytes]]:
        """Run what is due: announcements, ARP, health checks, drains, idle connections."""
        self._now = max(self._now, now)
        out: list[tuple[str, bytes]] = []
        try:
            out.extend(self._announce)
            self.counters["arp-announcements-sent"] += len(self._announce)
            self._announce = []
            out.extend(self._outbox)
            self._outbox = []
            self._neighbor_timers(now, out)
            self._health_timers(now, out)
            self._drain_timers(now)
            self._connection_timers(now)
        except (ValueError, IndexError, struct.error):
            self.counters[LbDrop.INTERNAL_ERROR] += 1
        return out

    def _neighbor_timers(self, now: float, out: list[tuple[str, bytes]]) -> None:
        used = self._backend_ips()
        change = self._neighbors.on_timer(now, used)
        for ip in change.requests:
            out.append(self._arp_request(ip))
        for _ip, frames in change.failed:
            # A health check waiting here fails by its own timeout; clients retransmit.
            self.counters["arp-resolution-failed"] += 1
            self.counters["arp-held-dropped"] += len(frames)
        for ip in change.forgotten:
            self._revoke_to(ip)

    def _health_timers(self, now: float, out: list[tuple[str, bytes]]) -> None:
        for target in list(self._targets.values()):
            if target.probe_deadline <= now:
                self._record(target, CheckResult.TIMEOUT, now)
            if target.next_check <= now:
                if target.probe_seq is not None:
                    self._record(target, CheckResult.TIMEOUT, now)
                out.extend(self._send_check(target, now))

    def _drain_timers(self, now: float) -> None:
        limit = self.config.drain_timeout
        for service in self._services.values():
            for backend in list(service.backends.values()):  # removed ones may go
                since = backend.drain_since
                if since == _UNSTAMPED:
                    # Marked by a reconfiguration, which has no `now` of its own.
                    backend.drain_since = since = now
                if since is not None and backend.connections and since + limit <= now:
                    for conn in list(backend.connections):
                        self._end(conn, "connections-cut")

    def _arm(self, conn: Connection, expires: float) -> None:
        conn.expires = expires
        scheduled = self._idle.get(conn)
        if scheduled is None or expires < scheduled:
            self._idle.set(conn, expires)

    def _connection_timers(self, now: float) -> None:
        for conn in list(self._idle.pop_due(now)):
            if conn.lease is not None:
                self._fold(conn, conn.lease)  # consult the fast path's last packet
            if conn.expires > now:
                self._idle.set(conn, conn.expires)
            else:
                self._end(conn, "connections-expired")

    def _end(self, conn: Connection, counter: str) -> None:
        """Forget a connection: its lease, its entries, its port."""
        if not conn.alive:
            return
        conn.alive = False
        self._idle.discard(conn)
        self._revoke(conn)
        self._by_client.pop(conn.client_key, None)
        self._by_server.pop(conn.server_key, None)
        backend = conn.backend
        backend.connections.discard(conn)
        self._ports.release(conn.proto, backend.ip, backend.port, conn.snat_port)
        self.counters[counter] += 1
        if backend.removed and not backend.connections:
            service = conn.service
            if service.backends.get((backend.ip, backend.port)) is backend:
                del service.backends[backend.ip, backend.port]

    # -- configuration --------------------------------------------------------------------------

    def apply_config(self, config: LoadBalancerConfig) -> None:
        """Take a validated configuration; end or revoke only what the change concerns."""
        errors = config_errors(config)
        if errors:
            raise ConfigError(errors, subject=f"{self.KIND} configuration")
        before = self._applied
        frontend_mac = mac_bytes(config.frontend_mac)
        backend_mac = mac_bytes(config.backend_mac)
        source_ip = config.source_ip.packed
        if before is not None and source_ip != self._source_ip:
            # Every connection's backend side names the old address: they cannot go on.
            for conn in list(self._by_client.values()):
                self._end(conn, "connections-cut")
            for target in list(self._targets.values()):
                self._drop_target(target)
        if before is not None and (
            frontend_mac != self._frontend_mac or backend_mac != self._backend_mac
        ):
            for conn in list(self._by_client.values()):
                self._revoke(conn)  # their cached frames carry the old MAC
        self.config = config
        self._frontend_mac, self._backend_mac, self._source_ip = (
            frontend_mac,
            backend_mac,
            source_ip,
        )
        self._ports.low, self._ports.high = config.snat_port_min, config.snat_port_max
        neighbors = self._neighbors
        neighbors.timeout = config.arp_timeout
        neighbors.retry_interval = config.arp_retry_interval
        neighbors.retries = config.arp_retries
        neighbors.queue_limit = config.arp_queue_limit
        old_vips = self._vips
        self._apply_services(config)
        self._vips = frozenset(s.vip.packed for s in config.services)
        owned = self._vips | {source_ip}
        macs = frozenset((frontend_mac, backend_mac))
        self._arp = {
            FRONTEND: ArpResponder(frontend_mac, self._vips, owned, macs),
            BACKEND: ArpResponder(backend_mac, frozenset((source_ip,)), owned, macs),
        }
        self._apply_static_macs(config)
        self._apply_targets(config.health)
        resize = before is None or before.table_size != config.table_size
        for service in self._services.values():
            self._rebuild(service, force=resize)
        # Announce what is new to the links: addresses, or addresses at a new MAC.
        if before is None or frontend_mac != mac_bytes(before.frontend_mac):
            vips: Iterable[bytes] = self._vips
        else:
            vips = self._vips - old_vips
        self._announce.extend(self._announcement(FRONTEND, vip) for vip in sorted(vips))
        if (
            before is None
            or backend_mac != mac_bytes(before.backend_mac)
            or source_ip != before.source_ip.packed
        ):
            self._announce.append(self._announcement(BACKEND, source_ip))
        self._applied = config

    def _apply_services(self, config: LoadBalancerConfig) -> None:
        """Services and backends added, changed, removed.

        A removed service's connections are cut (its VIP may be gone); a removed
        backend drains like a draining one, its connections on the slow path.
        """
        wanted = {(s.vip.packed, s.port, s.proto.number): s for s in config.services}
        for key in [k for k in self._services if k not in wanted]:
            for backend in self._services.pop(key).backends.values():
                for conn in list(backend.connections):
                    self._end(conn, "connections-cut")
        for key, spec in wanted.items():
            found = self._services.get(key)
            if found is None:
                service = self._services[key] = ServiceRuntime(spec)
            else:
                service = found
            service.config = spec
            backends = {(b.ip.packed, b.port): b for b in spec.backends}
            for name in [n for n in service.backends if n not in backends]:
                gone = service.backends[name]
                if not gone.connections:
                    del service.backends[name]
                    continue
                if not gone.removed:
                    gone.removed = True
                    gone.target = None
                    if gone.drain_since is None:
                        gone.drain_since = _UNSTAMPED
                    for conn in gone.connections:
                        self._revoke(conn)  # its treatment is no longer configured
            for name, backend_spec in backends.items():
                known = service.backends.get(name)
                if known is None:
                    backend = service.backends[name] = BackendRuntime(backend_spec)
                else:
                    backend = known
                    if backend.removed:  # back before its connections ended
                        backend.removed = False
                        backend.drain_since = None
                backend.config = backend_spec
                if backend_spec.draining and backend.drain_since is None:
                    backend.drain_since = _UNSTAMPED
                elif not backend_spec.draining:
                    backend.drain_since = None

    def _apply_static_macs(self, config: LoadBalancerConfig) -> None:
        static: dict[bytes, bytes] = {}
        for removed in (True, False):  # configured backends win over removed ones
            for service in self._services.values():
                for backend in service.backends.values():
                    text = backend.config.mac
                    if backend.removed is removed and text is not None:
                        static[backend.ip] = mac_bytes(text)
        neighbors = self._neighbors
        permanent = NeighborState.PERMANENT
        for ip in [ip for ip, n in neighbors.entries.items() if n.state is permanent]:
            if ip not in static:
                neighbors.clear_static(ip)
                self._revoke_to(ip)
        for ip, mac in static.items():
            if neighbors.set_static(ip, mac):
                self._revoke_to(ip)
            for queued in neighbors.release(ip):
                queued.frame[0:6] = mac
                self._outbox.append((BACKEND, bytes(queued.frame)))

    def _apply_targets(self, health: HealthCheck) -> None:
        """One health-check target per checked ``ip:port``, shared by the backends on it."""
        wanted: dict[tuple[bytes, int], None] = {}
        for service in self._services.values():
            for backend in service.backends.values():
                port = _check_port(backend.config, service.tcp)
                backend.target = None
                if health.enabled and port is not None and not backend.removed:
                    wanted[backend.ip, port] = None
        for key in [k for k in self._targets if k not in wanted]:
            self._drop_target(self._targets[key])
        for ip, port in wanted:
            if (ip, port) in self._targets:
                continue
            source_port = self._ports.take(_TCP, ip, port, self._random.randrange(32768, 61000))
            if source_port is None:
                continue  # no port left toward it: unchecked (counted as up)
            target = Target(
                ip,
                port,
                source_port,
                initial=health.init_state,
                rise=health.rise,
                fall=health.fall,
            )
            self._targets[ip, port] = target
            self._probes[ip, port, source_port] = target
        for service in self._services.values():
            for backend in service.backends.values():
                port = _check_port(backend.config, service.tcp)
                if port is not None and not backend.removed:
                    backend.target = self._targets.get((backend.ip, port))

    def _drop_target(self, target: Target) -> None:
        self._targets.pop((target.ip, target.port), None)
        self._probes.pop((target.ip, target.port, target.source_port), None)
        self._ports.release(_TCP, target.ip, target.port, target.source_port)

    def _rebuild(self, service: ServiceRuntime, *, force: bool = False) -> None:
        """Build the service's Maglev table again if the backends taking connections changed."""
        members = tuple(
            sorted((b for b in service.backends.values() if b.in_table), key=lambda b: b.name)
        )
        built = tuple((b.name, b.config.weight) for b in members)
        if built == service.built and not force:
            return
        service.built = built
        service.members = members
        if not members:
            service.table = None
            service.slots = {}
        else:
            table = MaglevTable(
                [b.name.encode() for b in members],
                [b.config.weight for b in members],
                self.config.table_size,
            )
            service.table = table
            service.slots = {b.name: n for b, n in zip(members, table.slots(), strict=True)}
        self.counters["maglev-rebuilds"] += 1

    # -- status ---------------------------------------------------------------------------------

    def mac(self, iface: str) -> str | None:
        """The configured frontend and backend MACs: the node's ports carry them."""
        if iface == FRONTEND:
            return mac_bytes(self.config.frontend_mac).hex(":")
        if iface == BACKEND:
            return mac_bytes(self.config.backend_mac).hex(":")
        return None

    def tables(self) -> dict[str, TableSize]:
        return {
            "connections": TableSize(len(self._by_client), self.config.max_connections),
            "neighbours": TableSize(len(self._neighbors.rows())),
        }

    def status(self) -> dict[str, Any]:
        """Services, backends (state, weight, connections, health), table size, counters."""
        states: Counter[str] = Counter(c.state.value for c in self._by_client.values())
        return {
            "kind": self.kind(),
            "counters": dict(self.counters),
            "table_size": self.config.table_size,
            "connections": {"total": len(self._by_client), "states": dict(states)},
            "snat_ports_in_use": self._ports.in_use(),
            "services": [self._service_status(s) for s in self._services.values()],
            "neighbors": [
                {"ip": row.ip, "mac": row.mac, "state": row.state.value, "queued": row.queued}
                for row in self._neighbors.rows()
            ],
        }

    def _service_status(self, service: ServiceRuntime) -> dict[str, Any]:
        spec = service.config
        return {
            "name": spec.label,
            "vip": str(spec.vip),
            "port": spec.port,
            "proto": spec.proto.value,
            "backends_in_table": len(service.members),
            "backends": [self._backend_status(b, service) for b in service.backends.values()],
        }

    def _backend_status(self, backend: BackendRuntime, service: ServiceRuntime) -> dict[str, Any]:
        spec = backend.config
        target = backend.target
        health: dict[str, Any] | None = None
        if target is not None:
            entry = target.entry()
            health = {
                "state": entry.state.value,
                "port": target.port,
                "last_result": entry.last_result.value if entry.last_result else None,
                "last_check": entry.last_check,
                "last_change": entry.last_change,
                "checks": entry.checks,
                "successes": entry.successes,
                "failures": entry.failures,
                "rtt": entry.rtt,
            }
        mac = self._neighbors.mac(backend.ip)
        return {
            "ip": str(spec.ip),
            "port": spec.port,
            "weight": spec.weight,
            "state": backend.state.value,
            "mac": format_mac(mac) if mac is not None else None,
            "connections": len(backend.connections),
            "slots": service.slots.get(backend.name, 0),
            "drain_since": None if backend.drain_since == _UNSTAMPED else backend.drain_since,
            "health": health,
        }

    # -- for tests and tools ----------------------------------------------------------------------

    def connection(
        self, client: str, client_port: int, vip: str, port: int, proto: str = "tcp"
    ) -> Connection | None:
        """The connection of a client's ``client:client_port -> vip:port`` flow, if any."""
        key = (
            IPv4Address(client).packed,
            client_port,
            IPv4Address(vip).packed,
            port,
            Protocol(proto).number,
        )
        return self._by_client.get(key)

    def close(self, connection: Connection) -> None:
        """Forget a connection now (its lease is revoked): its next packet finds none."""
        self._end(connection, "connections-cut")


def _check_port(backend: Backend, tcp: bool) -> int | None:
    if backend.check_port is not None:
        return backend.check_port
    return backend.port if tcp else None
