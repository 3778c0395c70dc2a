"""The router's host table: the hosts of its internal subnets, with their state table.

A :class:`Host` is a machine seen on (or announced for) an internal subnet:
the thesis's "host tracking", with the automatic forwarding port the router gave
it. The table is sans-IO bookkeeping like the neighbour cache of
:mod:`~pktchain.functions.common.arp`: the router decides and sends.

Host states (learned hosts age out, announced ones stay):

========  ==================  ========  ================================
state     event               next      action
========  ==================  ========  ================================
ACTIVE    SEEN                ACTIVE    restart the aging timer
ACTIVE    EXPIRED             PROBING   send an ARP request to the host
PROBING   SEEN                ACTIVE    restart the aging timer
PROBING   RETRY_DUE           PROBING   send another request
PROBING   RETRIES_EXHAUSTED   (gone)    release its forwarding port
STATIC    any                 STATIC    none (until the controller removes it)
========  ==================  ========  ================================

This module also answers for the names of the former
``pktchain.functions.router_arp`` module that now live in
:mod:`~pktchain.functions.common.arp` (the neighbour cache), so that old
import path keeps every name it had.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pktchain.functions import forward_names
from pktchain.packet.address import format_ip, format_mac

__all__ = ["HOST_TRANSITIONS", "Host", "HostAction", "HostEntry", "HostEvent", "HostState"]


class HostState(Enum):
    """Where a tracked host is in its life (see the module's table)."""

    ACTIVE = "active"
    PROBING = "probing"
    STATIC = "static"


class HostEvent(Enum):
    """What happens to a tracked host."""

    SEEN = "seen"
    EXPIRED = "expired"
    RETRY_DUE = "retry-due"
    RETRIES_EXHAUSTED = "retries-exhausted"


class HostAction(Enum):
    """What the router does on a host transition."""

    REFRESH = "refresh"
    SEND_REQUEST = "send-request"
    REMOVE = "remove"


HOST_TRANSITIONS: dict[tuple[HostState, HostEvent], tuple[HostState | None, HostAction]] = {
    (HostState.ACTIVE, HostEvent.SEEN): (HostState.ACTIVE, HostAction.REFRESH),
    (HostState.ACTIVE, HostEvent.EXPIRED): (HostState.PROBING, HostAction.SEND_REQUEST),
    (HostState.PROBING, HostEvent.SEEN): (HostState.ACTIVE, HostAction.REFRESH),
    (HostState.PROBING, HostEvent.RETRY_DUE): (HostState.PROBING, HostAction.SEND_REQUEST),
    (HostState.PROBING, HostEvent.RETRIES_EXHAUSTED): (None, HostAction.REMOVE),
}
"""(state, event) -> (next state or None for removal, action). STATIC has no rows."""


class Host:
    """A host the router tracks on an internal subnet."""

    __slots__ = (
        "deadline",
        "first_seen",
        "forward_port",
        "iface",
        "ip",
        "last_seen",
        "mac",
        "network_id",
        "state",
        "tries",
    )

    def __init__(  # noqa: PLR0917 - one constructor call site
        self, mac: bytes, ip: bytes, iface: str, network_id: str, now: float, state: HostState
    ) -> None:
        self.mac = mac
        self.ip = ip
        self.iface = iface
        self.network_id = network_id
        self.first_seen = now
        self.last_seen = now
        self.state = state
        self.deadline = float("inf")
        self.tries = 0
        self.forward_port: int | None = None

    def entry(self) -> HostEntry:
        """The row of the host table."""
        return HostEntry(
            format_mac(self.mac),
            format_ip(self.ip),
            self.iface,
            self.network_id,
            self.first_seen,
            self.last_seen,
            self.forward_port,
            self.state,
        )


@dataclass(frozen=True, slots=True)
class HostEntry:
    """A row of the host table as listed to people and the API."""

    mac: str
    ip: str
    interface: str
    network_id: str
    first_seen: float
    last_seen: float
    forward_port: int | None
    """The automatic forwarding port (TCP, external address) leading to the host's
    service port; None when automatic forwarding is off or no port was free."""
    state: HostState


__getattr__ = forward_names(__name__, "pktchain.functions.common.arp")
