"""The load balancer's connection table: one entry per client connection, and the SNAT ports.

The services and backends a connection is pinned to (:class:`ServiceRuntime`,
:class:`BackendRuntime`) are kept here too, beside the connections that name
them and that they hold.

A connection is found from either side: by the client's 5-tuple toward the
VIP (``client ip, client port, vip, vport, proto``) and by the backend's view
of it (``backend ip, backend port, snat port, proto``; the other address is
always ``source_ip``). It pins the backend chosen for the connection's first
packet, so that later changes of the Maglev table (a backend added, drained,
down) never move an established connection.

TCP connections follow the state table of the NAT
(:data:`pktchain.functions.common.tcp.TCP_TRANSITIONS`, RFC 6146 §3.5.2 as RFC
7857 §2.1 asks of a NAT44), the client being the internal side: it chooses the
idle timeout (opening, established, closing) and nothing else; a packet of a
known connection is always forwarded. UDP flows are NEW until the backend
answers, then REPLIED.
"""

from __future__ import annotations

import struct
from enum import Enum

from pktchain.functions.common.tcp import Lifetime, TcpSessionState
from pktchain.functions.loadbalancer.config import Backend, Protocol, Service
from pktchain.functions.loadbalancer.health import Target
from pktchain.functions.loadbalancer.maglev import MaglevTable, flow_hash
from pktchain.functions.sdk import FlowLease

__all__ = [
    "BackendRuntime",
    "BackendState",
    "ClientKey",
    "Connection",
    "ServerKey",
    "ServiceRuntime",
    "SnatPorts",
    "UdpState",
]

ClientKey = tuple[bytes, int, bytes, int, int]
"""(client ip, client port, vip, vport, IP protocol)."""

ServerKey = tuple[bytes, int, int, int]
"""(backend ip, backend port, snat port, IP protocol); the other address is ``source_ip``."""


class UdpState(Enum):
    """A UDP flow: has the backend answered yet."""

    NEW = "new"
    REPLIED = "replied"


ESTABLISHED_LIFETIMES = frozenset(
    (TcpSessionState.ESTABLISHED, TcpSessionState.INT_FIN, TcpSessionState.EXT_FIN)
)
"""TCP states whose idle timeout is the established one (RFC 6146 §3.5.2.2)."""


class Connection:
    """One client connection through the load balancer."""

    __slots__ = (
        "alive",
        "backend",
        "client_ip",
        "client_mac",
        "client_port",
        "created",
        "expires",
        "lease",
        "proto",
        "service",
        "snat_port",
        "state",
        "vip",
        "vport",
    )

    def __init__(  # noqa: PLR0917 - one constructor call site
        self,
        service: ServiceRuntime,
        backend: BackendRuntime,
        key: ClientKey,
        client_mac: bytes,
        snat_port: int,
        now: float,
    ) -> None:
        self.service = service
        self.backend = backend
        self.client_ip, self.client_port, self.vip, self.vport, self.proto = key
        self.client_mac = client_mac
        self.snat_port = snat_port
        self.state: TcpSessionState | UdpState = (
            TcpSessionState.CLOSED if service.tcp else UdpState.NEW
        )
        self.created = now
        self.expires = now
        self.lease: FlowLease | None = None
        self.alive = True

    @property
    def client_key(self) -> ClientKey:
        return (self.client_ip, self.client_port, self.vip, self.vport, self.proto)

    @property
    def server_key(self) -> ServerKey:
        backend = self.backend
        return (backend.ip, backend.port, self.snat_port, self.proto)

    @property
    def established(self) -> bool:
        """Whether later packets may take the fast path (a lease may be given)."""
        return self.state is TcpSessionState.ESTABLISHED or self.state is UdpState.REPLIED

    @property
    def answered(self) -> bool:
        """Whether the backend has answered (a SYN not yet answered may be re-balanced)."""
        return self.state not in (TcpSessionState.CLOSED, TcpSessionState.INT_SYN, UdpState.NEW)


def lifetime_of(state: TcpSessionState | UdpState) -> Lifetime:
    """The timeout a connection in ``state`` is idle-expired after."""
    if isinstance(state, UdpState) or state in ESTABLISHED_LIFETIMES:
        return Lifetime.ESTABLISHED
    if state in (TcpSessionState.CLOSED, TcpSessionState.INT_SYN, TcpSessionState.EXT_SYN):
        return Lifetime.OPENING
    return Lifetime.CLOSING


class SnatPorts:
    """Source ports of ``source_ip``, per backend endpoint and protocol.

    A port is unique per (protocol, backend ip, backend port): that is all the
    backend's side of a connection needs to be told apart. The client's own
    port is kept when it is free (RFC 4787 REQ-3 "port preservation"), else
    the next free one from a point the client port spreads out.
    """

    __slots__ = ("_used", "high", "low")

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._used: dict[tuple[int, bytes, int], set[int]] = {}

    def take(self, proto: int, ip: bytes, port: int, preferred: int) -> int | None:
        """A free port toward ``ip:port`` (None: every port of the range is in use)."""
        used = self._used.setdefault((proto, ip, port), set())
        low, span = self.low, self.high - self.low + 1
        if len(used) >= span:
            return None
        if low <= preferred <= self.high and preferred not in used:
            used.add(preferred)
            return preferred
        start = (preferred * 2654435761) % span  # Knuth's multiplicative spread
        for step in range(span):
            candidate = low + (start + step) % span
            if candidate not in used:
                used.add(candidate)
                return candidate
        return None

    def release(self, proto: int, ip: bytes, port: int, sport: int) -> None:
        used = self._used.get((proto, ip, port))
        if used is None:
            return
        used.discard(sport)
        if not used:
            del self._used[proto, ip, port]

    def in_use(self) -> int:
        return sum(len(ports) for ports in self._used.values())


class BackendState(Enum):
    """How a backend stands for new connections."""

    UP = "up"
    DOWN = "down"  # its health check fails
    DRAINING = "draining"  # configured so: no new connections, the old ones go on
    REMOVED = "removed"  # gone from the configuration: draining, its leases revoked


_KEY = struct.Struct("!4sH4sHB")


class BackendRuntime:
    """A backend of one service, with its connections (removed ones until they end)."""

    __slots__ = (
        "config",
        "connections",
        "drain_since",
        "ip",
        "name",
        "port",
        "removed",
        "target",
    )

    def __init__(self, config: Backend) -> None:
        self.config = config
        self.ip = config.ip.packed
        self.port = config.port
        self.name = config.name
        self.target: Target | None = None
        self.connections: set[Connection] = set()
        self.drain_since: float | None = None
        """When it started draining; ``_UNSTAMPED`` until the next timer reads the clock."""
        self.removed = False
        """Gone from the configuration; kept while its connections drain."""

    @property
    def healthy(self) -> bool:
        return self.target is None or self.target.up

    @property
    def in_table(self) -> bool:
        """Whether new connections may go to it."""
        return not self.removed and not self.config.draining and self.healthy

    @property
    def state(self) -> BackendState:
        if self.removed:
            return BackendState.REMOVED
        if self.config.draining:
            return BackendState.DRAINING
        return BackendState.UP if self.healthy else BackendState.DOWN


class ServiceRuntime:
    """A configured service, its backends and its Maglev table."""

    __slots__ = ("backends", "built", "config", "members", "slots", "table", "tcp")

    def __init__(self, config: Service) -> None:
        self.config = config
        self.tcp = config.proto is Protocol.TCP
        self.backends: dict[tuple[bytes, int], BackendRuntime] = {}
        self.members: tuple[BackendRuntime, ...] = ()
        """The backends in the table, in the order of its indices."""
        self.table: MaglevTable | None = None
        self.slots: dict[str, int] = {}
        self.built: tuple[tuple[str, int], ...] | None = None
        """(name, weight) of each member when the table was built."""

    def pick(self, key: ClientKey) -> BackendRuntime | None:
        """The backend the Maglev table gives the flow ``key`` (None: no backend in it)."""
        if self.table is None:
            return None
        index = self.table.lookup(flow_hash(_KEY.pack(*key)))
        return None if index is None else self.members[index]
