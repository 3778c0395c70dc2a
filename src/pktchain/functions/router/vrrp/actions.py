"""What a VRRP instance asks its host to do: send frames, take or release the addresses.

The instance is sans-IO: every call returns a list of these, in the order the
host should carry them out. On becoming master that is :class:`TakeAddresses`
(answer ARP for the virtual addresses with the virtual MAC, receive frames sent
to that MAC), :class:`StateChanged`, then :class:`SendFrame` for the
advertisement and one gratuitous ARP per address; on leaving master,
:class:`ReleaseAddresses` before :class:`StateChanged`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pktchain.packet.address import format_ip, format_mac

__all__ = [
    "FrameKind",
    "ReleaseAddresses",
    "SendFrame",
    "StateChanged",
    "TakeAddresses",
    "VrrpAction",
    "VrrpState",
]


class VrrpState(Enum):
    """The states of a virtual router (RFC 5798 §6.4)."""

    INITIALIZE = "initialize"
    BACKUP = "backup"
    MASTER = "master"


class FrameKind(Enum):
    """What a :class:`SendFrame` carries."""

    ADVERTISEMENT = "advertisement"
    GRATUITOUS_ARP = "gratuitous-arp"


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send ``frame`` on ``interface``.

    ``frame`` is a zero ``virtio_net_hdr`` and an Ethernet frame from the virtual
    MAC, as the router's own frames are. For a unicast advertisement
    ``next_hop`` is the peer's IPv4 address (4 bytes) and the Ethernet
    destination is left zero: the host resolves the peer's MAC (its ARP) and
    writes it there. Multicast advertisements and gratuitous ARP are complete
    (``next_hop`` None).
    """

    interface: str
    frame: bytes
    kind: FrameKind
    next_hop: bytes | None = None


@dataclass(frozen=True, slots=True)
class TakeAddresses:
    """Become the virtual router on ``interface`` (RFC 5798 §6.4.3).

    Answer ARP requests for ``addresses`` with ``mac`` (§8.1.2: never with the
    interface's own MAC), receive and forward frames sent to ``mac``. ``accept``:
    packets addressed to ``addresses`` are the host's own (the owner, or
    Accept_Mode); otherwise they are not accepted as local (§6.4.3).
    """

    interface: str
    vrid: int
    mac: bytes
    addresses: tuple[bytes, ...]
    accept: bool

    def __str__(self) -> str:
        listed = ", ".join(format_ip(a) for a in self.addresses)
        return f"take {listed} as {format_mac(self.mac)} on {self.interface}"


@dataclass(frozen=True, slots=True)
class ReleaseAddresses:
    """Stop being the virtual router on ``interface`` (RFC 5798 §6.4.2).

    Stop answering ARP for ``addresses``, discard frames sent to ``mac`` and do
    not accept packets addressed to ``addresses``.
    """

    interface: str
    vrid: int
    mac: bytes
    addresses: tuple[bytes, ...]

    def __str__(self) -> str:
        listed = ", ".join(format_ip(a) for a in self.addresses)
        return f"release {listed} ({format_mac(self.mac)}) on {self.interface}"


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The instance moved from ``old`` to ``new`` at ``now``, because of ``event``.

    For the host's log, its state-sync peer (a new master takes over the
    sessions) and the status page.
    """

    interface: str
    vrid: int
    old: VrrpState
    new: VrrpState
    now: float
    event: str


VrrpAction = SendFrame | TakeAddresses | ReleaseAddresses | StateChanged
"""Anything an instance returns."""
