"""One VRRPv3 virtual router (RFC 5798, IPv4), sans-IO: its state table, timers and checks.

A :class:`VrrpInstance` is one VRID on one interface of its host (the router).
It reads no clock and opens no socket: the host calls :meth:`~VrrpInstance.start`,
:meth:`~VrrpInstance.shutdown`, :meth:`~VrrpInstance.receive` (an IPv4 packet
with protocol 112), :meth:`~VrrpInstance.track` (a tracked interface or gateway
failed or came back), :meth:`~VrrpInstance.reconfigure` and, at
:meth:`~VrrpInstance.next_deadline`, :meth:`~VrrpInstance.on_timer`, each with
``now`` in seconds; each returns the actions of
:mod:`~pktchain.functions.router.vrrp.actions` to carry out, in order.

The state machine of §6.4 is the table below (:data:`VRRP_TRANSITIONS`); the
events are received advertisements sorted by how their priority compares with
ours, the two timers, and the host's events. Anything the table does not list
leaves the state as it is and does nothing (an advertisement while in
Initialize is counted as ``drop-not-running``).

===========  ===========================  ==========  =========================================
state        event                        next state  step
===========  ===========================  ==========  =========================================
INITIALIZE   STARTUP_OWNER                MASTER      BECOME_MASTER: advertise, gratuitous ARP
                                                      for each address, take the addresses, set
                                                      Adver_Timer (§6.4.1)
INITIALIZE   STARTUP                      BACKUP      BECOME_BACKUP: Master_Adver_Interval =
                                                      Advertisement_Interval, set
                                                      Master_Down_Timer (§6.4.1)
BACKUP       SHUTDOWN                     INITIALIZE  STOP_BACKUP: cancel Master_Down_Timer
                                                      (§6.4.2)
BACKUP       MASTER_DOWN_TIMER            MASTER      BECOME_MASTER (§6.4.2)
BACKUP       ADVERT_PRIORITY_ZERO         BACKUP      SKEW: Master_Down_Timer = Skew_Time
                                                      (§6.4.2)
BACKUP       ADVERT_HIGHER                BACKUP      FOLLOW: learn Master_Adver_Interval,
                                                      reset Master_Down_Timer (§6.4.2)
BACKUP       ADVERT_EQUAL_HIGHER_ADDRESS  BACKUP      FOLLOW (priority >= ours, §6.4.2)
BACKUP       ADVERT_EQUAL_LOWER_ADDRESS   BACKUP      FOLLOW (priority >= ours, §6.4.2)
BACKUP       ADVERT_LOWER                 BACKUP      FOLLOW_OR_PREEMPT: FOLLOW without
                                                      Preempt_Mode or within preempt_delay,
                                                      else DISCARD (§6.4.2)
BACKUP       PRIORITY_CHANGED             BACKUP      RECOMPUTE: Skew_Time and
                                                      Master_Down_Interval
BACKUP       PRIORITY_OWNER               MASTER      BECOME_MASTER (the owner always preempts,
                                                      §6.1 Preempt_Mode)
BACKUP       RECONFIGURED                 BACKUP      RECOMPUTE
MASTER       SHUTDOWN                     INITIALIZE  STOP_MASTER: cancel Adver_Timer, advertise
                                                      priority 0, release the addresses (§6.4.3)
MASTER       ADVER_TIMER                  MASTER      ADVERTISE: send, reset Adver_Timer
                                                      (§6.4.3)
MASTER       ADVERT_PRIORITY_ZERO         MASTER      ADVERTISE (§6.4.3)
MASTER       ADVERT_HIGHER                BACKUP      YIELD: cancel Adver_Timer, learn
                                                      Master_Adver_Interval, set
                                                      Master_Down_Timer, release the addresses
                                                      (§6.4.3)
MASTER       ADVERT_EQUAL_HIGHER_ADDRESS  BACKUP      YIELD (§6.4.3)
MASTER       ADVERT_EQUAL_LOWER_ADDRESS   MASTER      DISCARD (§6.4.3)
MASTER       ADVERT_LOWER                 MASTER      DISCARD (§6.4.3)
MASTER       PRIORITY_CHANGED             MASTER      ADVERTISE: the new priority at once
MASTER       PRIORITY_OWNER               MASTER      ADVERTISE
MASTER       RECONFIGURED                 MASTER      REANNOUNCE: release and take changed
                                                      addresses, advertise, gratuitous ARP
===========  ===========================  ==========  =========================================

Times follow §6.1 exactly, in centiseconds: Skew_Time = ((256 - Priority) *
Master_Adver_Interval) / 256 and Master_Down_Interval = 3 *
Master_Adver_Interval + Skew_Time (:func:`skew_time`,
:func:`master_down_interval`; the division is exact, not truncated). The
priority in them is the instance's effective priority: the configured one less
the weights of its failed trackers, never below ``track_floor`` (1 unless
configured), the owner's 255 untouched unless ``track_owner``.

Received advertisements are checked as §7.1 says before the table sees them:
the packet alone by :func:`~pktchain.packet.vrrp.parse_advertisement` (TTL,
version, type, length, checksum), then the VRID, that the local router is not
the address owner, the sender against ``unicast_peers``, and the addresses
against ours (counted; dropped only with ``strict_addresses``). Every drop is
counted under ``drop-<reason>`` (:class:`VrrpDrop`); nothing on the receive
path raises.

``preempt_delay`` follows keepalived: a backup with Preempt_Mode follows a
lower-priority master, instead of discarding its advertisements, until
``preempt_delay`` seconds after it started, or after it first saw that
lower-priority master (having followed a better one, or been master itself).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from pktchain.errors import FieldError
from pktchain.functions.common.arp import ArpResponder
from pktchain.functions.router.vrrp.actions import (
    FrameKind,
    ReleaseAddresses,
    SendFrame,
    StateChanged,
    TakeAddresses,
    VrrpAction,
    VrrpState,
)
from pktchain.functions.router.vrrp.config import (
    OWNER_PRIORITY,
    VrrpConfig,
    VrrpConfigError,
)
from pktchain.packet.address import Buffer, format_ip, format_mac
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN
from pktchain.packet.vrrp import (
    VRRP_MULTICAST,
    Advertisement,
    advertisement_frame,
    parse_advertisement,
    virtual_mac,
)

__all__ = [
    "VRRP_TRANSITIONS",
    "VrrpDrop",
    "VrrpEvent",
    "VrrpInstance",
    "VrrpStatus",
    "VrrpStep",
    "master_down_interval",
    "skew_time",
]

_ZERO_VNET = bytes(VIRTIO_NET_HDR_LEN)


def skew_time(priority: int, master_adver_interval: int) -> float:
    """Skew_Time in centiseconds: ((256 - Priority) * Master_Adver_Interval) / 256 (§6.1).

    Exact: the product is an integer below 2**20 and the division is by a power
    of two, so the float holds the RFC's value without rounding.
    """
    return ((256 - priority) * master_adver_interval) / 256


def master_down_interval(priority: int, master_adver_interval: int) -> float:
    """Master_Down_Interval in centiseconds: (3 * Master_Adver_Interval) + Skew_Time (§6.1)."""
    return 3 * master_adver_interval + skew_time(priority, master_adver_interval)


class VrrpEvent(Enum):
    """What happens to an instance (the rows of :data:`VRRP_TRANSITIONS`)."""

    STARTUP = "startup"
    """The host started the instance; it does not own the addresses (§6.4.1)."""
    STARTUP_OWNER = "startup-owner"
    """The host started the instance; its priority is 255 (§6.4.1)."""
    SHUTDOWN = "shutdown"
    MASTER_DOWN_TIMER = "master-down-timer"
    ADVER_TIMER = "adver-timer"
    ADVERT_PRIORITY_ZERO = "advert-priority-zero"
    """The master stopped (§5.2.4)."""
    ADVERT_HIGHER = "advert-higher"
    """An advertisement with a priority above ours."""
    ADVERT_EQUAL_HIGHER_ADDRESS = "advert-equal-higher-address"
    """Our priority, from a primary address above ours: the sender wins (§6.4.3)."""
    ADVERT_EQUAL_LOWER_ADDRESS = "advert-equal-lower-address"
    """Our priority, from a primary address below ours: we win."""
    ADVERT_LOWER = "advert-lower"
    """An advertisement with a (non-zero) priority below ours."""
    PRIORITY_CHANGED = "priority-changed"
    """Tracking or the configuration changed our priority, now below 255."""
    PRIORITY_OWNER = "priority-owner"
    """Our priority became 255."""
    RECONFIGURED = "reconfigured"
    """The configuration changed (addresses, interval, peers, ...)."""


class VrrpStep(Enum):
    """What the instance does on a transition (see the module's table)."""

    BECOME_MASTER = "become-master"
    BECOME_BACKUP = "become-backup"
    STOP_BACKUP = "stop-backup"
    STOP_MASTER = "stop-master"
    SKEW = "skew"
    FOLLOW = "follow"
    FOLLOW_OR_PREEMPT = "follow-or-preempt"
    ADVERTISE = "advertise"
    YIELD = "yield"
    DISCARD = "discard"
    RECOMPUTE = "recompute"
    REANNOUNCE = "reannounce"


_S = VrrpState
_E = VrrpEvent
_P = VrrpStep
VRRP_TRANSITIONS: dict[tuple[VrrpState, VrrpEvent], tuple[VrrpState, VrrpStep]] = {
    (_S.INITIALIZE, _E.STARTUP_OWNER): (_S.MASTER, _P.BECOME_MASTER),
    (_S.INITIALIZE, _E.STARTUP): (_S.BACKUP, _P.BECOME_BACKUP),
    (_S.BACKUP, _E.SHUTDOWN): (_S.INITIALIZE, _P.STOP_BACKUP),
    (_S.BACKUP, _E.MASTER_DOWN_TIMER): (_S.MASTER, _P.BECOME_MASTER),
    (_S.BACKUP, _E.ADVERT_PRIORITY_ZERO): (_S.BACKUP, _P.SKEW),
    (_S.BACKUP, _E.ADVERT_HIGHER): (_S.BACKUP, _P.FOLLOW),
    (_S.BACKUP, _E.ADVERT_EQUAL_HIGHER_ADDRESS): (_S.BACKUP, _P.FOLLOW),
    (_S.BACKUP, _E.ADVERT_EQUAL_LOWER_ADDRESS): (_S.BACKUP, _P.FOLLOW),
    (_S.BACKUP, _E.ADVERT_LOWER): (_S.BACKUP, _P.FOLLOW_OR_PREEMPT),
    (_S.BACKUP, _E.PRIORITY_CHANGED): (_S.BACKUP, _P.RECOMPUTE),
    (_S.BACKUP, _E.PRIORITY_OWNER): (_S.MASTER, _P.BECOME_MASTER),
    (_S.BACKUP, _E.RECONFIGURED): (_S.BACKUP, _P.RECOMPUTE),
    (_S.MASTER, _E.SHUTDOWN): (_S.INITIALIZE, _P.STOP_MASTER),
    (_S.MASTER, _E.ADVER_TIMER): (_S.MASTER, _P.ADVERTISE),
    (_S.MASTER, _E.ADVERT_PRIORITY_ZERO): (_S.MASTER, _P.ADVERTISE),
    (_S.MASTER, _E.ADVERT_HIGHER): (_S.BACKUP, _P.YIELD),
    (_S.MASTER, _E.ADVERT_EQUAL_HIGHER_ADDRESS): (_S.BACKUP, _P.YIELD),
    (_S.MASTER, _E.ADVERT_EQUAL_LOWER_ADDRESS): (_S.MASTER, _P.DISCARD),
    (_S.MASTER, _E.ADVERT_LOWER): (_S.MASTER, _P.DISCARD),
    (_S.MASTER, _E.PRIORITY_CHANGED): (_S.MASTER, _P.ADVERTISE),
    (_S.MASTER, _E.PRIORITY_OWNER): (_S.MASTER, _P.ADVERTISE),
    (_S.MASTER, _E.RECONFIGURED): (_S.MASTER, _P.REANNOUNCE),
}
"""(state, event) -> (next state, step), RFC 5798 §6.4; see the module's table."""


class VrrpDrop(StrEnum):
    """Why an instance discarded a received packet, beyond the codec's
    :class:`~pktchain.packet.vrrp.VrrpError` (counted as ``drop-<reason>`` too)."""

    VRID_MISMATCH = "vrid-mismatch"
    """Another VRID: not this instance's (the speaker routes by VRID, §7.1)."""
    NOT_RUNNING = "not-running"
    """The instance is in Initialize (not started, or shut down)."""
    OWN_ADVERTISEMENT = "own-advertisement"
    """From our own source address: our advertisement came back."""
    UNKNOWN_PEER = "unknown-peer"
    """With unicast peers, from an address that is not one of them."""
    OWNER = "owner"
    """We own the addresses (priority 255): §7.1 has the owner discard advertisements."""
    ZERO_INTERVAL = "zero-interval"
    """Max Adver Int 0: a Master_Down_Interval of 0 would take over at once."""
    ADDRESS_MISMATCH = "address-mismatch"
    """The addresses differ from ours and ``strict_addresses`` is on (§7.1)."""


class _Timer(Enum):
    MASTER_DOWN = "master-down"
    ADVER = "adver"


@dataclass(frozen=True)
class VrrpStatus:
    """A snapshot of one instance, for the API and the command line."""

    name: str
    interface: str
    vrid: int
    state: VrrpState
    priority: int
    """As configured."""
    effective_priority: int
    """What the instance advertises and elects with: ``priority`` less failed trackers."""
    owner: bool
    virtual_mac: str
    virtual_addresses: tuple[str, ...]
    master_address: str | None
    """The master as last seen: our own source address while master, the sender of
    the advertisements followed while backup, None when unknown."""
    master_priority: int | None
    advert_interval_cs: int
    master_adver_interval_cs: int
    skew_time_cs: float
    master_down_interval_cs: float
    failed_trackers: tuple[str, ...]
    transitions: int
    last_transition: float | None
    counters: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        return {
            "name": self.name,
            "interface": self.interface,
            "vrid": self.vrid,
            "state": self.state.value,
            "priority": self.priority,
            "effective_priority": self.effective_priority,
            "owner": self.owner,
            "virtual_mac": self.virtual_mac,
            "virtual_addresses": list(self.virtual_addresses),
            "master_address": self.master_address,
            "master_priority": self.master_priority,
            "advert_interval_cs": self.advert_interval_cs,
            "master_adver_interval_cs": self.master_adver_interval_cs,
            "skew_time_cs": self.skew_time_cs,
            "master_down_interval_cs": self.master_down_interval_cs,
            "failed_trackers": list(self.failed_trackers),
            "transitions": self.transitions,
            "last_transition": self.last_transition,
            "counters": dict(self.counters),
        }


class VrrpInstance:
    """One virtual router (see the module docstring).

    ``config.source_address`` must be set: it is the source of the
    advertisements and our side of the address tie-break.
    """

    def __init__(self, config: VrrpConfig) -> None:
        self.config = config
        self.counters: defaultdict[str, int] = defaultdict(int)
        """Events and drops by name; drops are ``drop-<reason>``."""
        self._state = VrrpState.INITIALIZE
        self._failed: set[str] = set()
        self._apply(config)
        self._priority = self._effective_priority()
        self._master_adver_interval = config.advert_interval_cs
        self._timer: _Timer | None = None
        self._deadline: float | None = None
        self._preempt_after: float | None = None
        self._master: bytes | None = None
        self._preemption_held = False
        self._master_priority: int | None = None
        self._transitions = 0
        self._last_transition: float | None = None
        self._previous: VrrpConfig = config
        self._actions: list[VrrpAction] = []
        self._advert: Advertisement | None = None
        self._now = 0.0
        self._steps: dict[VrrpStep, Callable[[], None]] = {
            VrrpStep.BECOME_MASTER: self._become_master,
            VrrpStep.BECOME_BACKUP: self._become_backup,
            VrrpStep.STOP_BACKUP: self._stop_backup,
            VrrpStep.STOP_MASTER: self._stop_master,
            VrrpStep.SKEW: self._skew,
            VrrpStep.FOLLOW: self._follow,
            VrrpStep.FOLLOW_OR_PREEMPT: self._follow_or_preempt,
            VrrpStep.ADVERTISE: self._advertise_and_rearm,
            VrrpStep.YIELD: self._yield,
            VrrpStep.DISCARD: self._discard,
            VrrpStep.RECOMPUTE: self._recompute,
            VrrpStep.REANNOUNCE: self._reannounce,
        }

    def _apply(self, config: VrrpConfig) -> None:
        """Take the derived values of ``config``."""
        source = config.source_address
        if source is None:
            raise VrrpConfigError(
                [FieldError("source_address", "required to run: the interface's primary address")]
            )
        self.config = config
        self._source = source.packed
        self._addresses = tuple(a.packed for a in config.virtual_addresses)
        self._address_set = frozenset(self._addresses)
        self._peers = frozenset(p.packed for p in config.unicast_peers)
        self._mac = virtual_mac(config.vrid)
        self._garp = ArpResponder(self._mac, (), ())
        self._trackers = {t.name: t for t in config.track}
        self._failed &= set(self._trackers)

    # -- what the host reads ------------------------------------------------------------

    @property
    def state(self) -> VrrpState:
        """Initialize, Backup or Master."""
        return self._state

    @property
    def priority(self) -> int:
        """The effective priority: configured, less the weights of failed trackers."""
        return self._priority

    @property
    def interface(self) -> str:
        return self.config.interface

    @property
    def vrid(self) -> int:
        return self.config.vrid

    @property
    def virtual_mac(self) -> bytes:
        """00:00:5e:00:01:{VRID} (§7.3)."""
        return self._mac

    @property
    def master_adver_interval(self) -> int:
        """Master_Adver_Interval in centiseconds: learned from the master while backup."""
        return self._master_adver_interval

    @property
    def skew_time(self) -> float:
        """Skew_Time in centiseconds, from the effective priority."""
        return skew_time(self._priority, self._master_adver_interval)

    @property
    def master_down_interval(self) -> float:
        """Master_Down_Interval in centiseconds, from the effective priority."""
        return master_down_interval(self._priority, self._master_adver_interval)

    def next_deadline(self) -> float | None:
        """When :meth:`on_timer` should run next (None: no timer is set)."""
        return self._deadline

    def status(self) -> VrrpStatus:
        """A snapshot of the instance."""
        config = self.config
        master = self._master
        return VrrpStatus(
            name=config.name,
            interface=config.interface,
            vrid=config.vrid,
            state=self._state,
            priority=config.priority,
            effective_priority=self._priority,
            owner=config.owner,
            virtual_mac=format_mac(self._mac),
            virtual_addresses=tuple(str(a) for a in config.virtual_addresses),
            master_address=None if master is None else format_ip(master),
            master_priority=self._master_priority,
            advert_interval_cs=config.advert_interval_cs,
            master_adver_interval_cs=self._master_adver_interval,
            skew_time_cs=self.skew_time,
            master_down_interval_cs=self.master_down_interval,
            failed_trackers=tuple(sorted(self._failed)),
            transitions=self._transitions,
            last_transition=self._last_transition,
            counters=dict(sorted(self.counters.items())),
        )

    # -- what the host calls -------------------------------------------------------------

    def start(self, now: float) -> list[VrrpAction]:
        """The Startup event (§6.4.1); nothing if already running."""
        owner = self._priority == OWNER_PRIORITY
        return self._run(VrrpEvent.STARTUP_OWNER if owner else VrrpEvent.STARTUP, now)

    def shutdown(self, now: float) -> list[VrrpAction]:
        """The Shutdown event: a master advertises priority 0 and releases (§6.4.3)."""
        return self._run(VrrpEvent.SHUTDOWN, now)

    def on_timer(self, now: float) -> list[VrrpAction]:
        """Fire the timer if it is due."""
        if self._deadline is None or now < self._deadline:
            return []
        timer = self._timer
        self._timer = self._deadline = None
        if timer is _Timer.MASTER_DOWN:
            return self._run(VrrpEvent.MASTER_DOWN_TIMER, now)
        return self._run(VrrpEvent.ADVER_TIMER, now)

    def track(self, name: str, ok: bool, now: float) -> list[VrrpAction]:
        """A tracked interface or gateway is up (``ok``) or failed; raises ValueError if
        the instance tracks nothing by that name. A master advertises a new priority at once.
        """
        if name not in self._trackers:
            tracked = ", ".join(sorted(self._trackers)) or "nothing"
            raise ValueError(f"track: {self.config.name} tracks {tracked}, not {name!r}")
        if ok == (name not in self._failed):
            return []
        if ok:
            self._failed.discard(name)
            self.counters["tracker-recovered"] += 1
        else:
            self._failed.add(name)
            self.counters["tracker-failed"] += 1
        return self._priority_update(now)

    def master_gone(self, master: bytes | None, now: float) -> list[VrrpAction]:
        """The host knows that the master at ``master`` (its primary address; None:
        whichever it is, the host knowing of one other router only) stopped
        without a priority 0 advertisement, say because the connection its process
        held was closed by its end (the process died, its kernel lives on). A backup
        following that master takes it as the priority 0 advertisement it did not
        send: Master_Down_Timer = Skew_Time (§6.4.2). Anything else is ignored.
        """
        if self._state is not VrrpState.BACKUP or self._master is None:
            return []
        if master is not None and self._master != master:
            return []
        self.counters["master-gone"] += 1
        return self._run(VrrpEvent.ADVERT_PRIORITY_ZERO, now)

    def hold_preemption(self, held: bool) -> None:
        """While held, a backup follows a lower-priority master instead of preempting,
        as within ``preempt_delay`` (the host is not ready: say, its copy of the
        master's state is incomplete). A master that stops is still replaced."""
        self._preemption_held = held

    def tracks(self, name: str) -> bool:
        """Whether a tracker of that name is configured."""
        return name in self._trackers

    def reconfigure(self, config: VrrpConfig, now: float) -> list[VrrpAction]:
        """Take a new configuration of the same VRID on the same interface.

        Raises ValueError naming ``vrid`` or ``interface`` if either changed, or
        :class:`~pktchain.functions.router.vrrp.config.VrrpConfigError` without
        ``source_address``; the instance is unchanged then. A master re-announces
        (addresses taken and released as they changed, an advertisement, gratuitous
        ARP); a new priority is handled as tracking's is.
        """
        if config.vrid != self.config.vrid:
            raise ValueError(f"vrid: {config.vrid} cannot replace {self.config.vrid}; add it")
        if config.interface != self.config.interface:
            raise ValueError(
                f"interface: {config.interface!r} cannot replace {self.config.interface!r}"
            )
        previous = self.config
        self._apply(config)
        self._previous = previous
        self.counters["reconfigured"] += 1
        priority = self._effective_priority()
        if priority == self._priority or self._state is not VrrpState.BACKUP:
            # A master's re-announcement carries the new priority; in Initialize the
            # new priority is simply the one the next start uses.
            if priority != self._priority:
                self.counters["priority-changes"] += 1
                self._priority = priority
            return self._run(VrrpEvent.RECONFIGURED, now)
        return self._priority_update(now)

    def receive(self, packet: Buffer, now: float, offset: int = 0) -> list[VrrpAction]:
        """A received IPv4 packet (protocol 112) at ``packet[offset]``; never raises."""
        return self.receive_advertisement(parse_advertisement(packet, offset), now)

    def receive_advertisement(self, advert: Advertisement, now: float) -> list[VrrpAction]:
        """A parsed advertisement: the checks of §7.1, then the state table; never raises."""
        self.counters["rx-advertisements"] += 1
        if advert.error is not None:
            return self._drop(advert.error)
        if advert.vrid != self.config.vrid:
            return self._drop(VrrpDrop.VRID_MISMATCH)
        if self._state is VrrpState.INITIALIZE:
            return self._drop(VrrpDrop.NOT_RUNNING)
        if advert.src == self._source:
            return self._drop(VrrpDrop.OWN_ADVERTISEMENT)
        if self._peers and advert.src not in self._peers:
            return self._drop(VrrpDrop.UNKNOWN_PEER)
        if self._priority == OWNER_PRIORITY:
            return self._drop(VrrpDrop.OWNER)
        if advert.max_adver_int == 0:
            return self._drop(VrrpDrop.ZERO_INTERVAL)
        if (
            advert.address_count != len(self._addresses)
            or set(advert.addresses) != self._address_set
        ):
            self.counters["address-mismatch"] += 1
            if self.config.strict_addresses and advert.priority != OWNER_PRIORITY:
                return self._drop(VrrpDrop.ADDRESS_MISMATCH)
        priority = advert.priority
        if priority == 0:
            self.counters["rx-priority-zero"] += 1
            event = VrrpEvent.ADVERT_PRIORITY_ZERO
        elif priority > self._priority:
            event = VrrpEvent.ADVERT_HIGHER
        elif priority < self._priority:
            event = VrrpEvent.ADVERT_LOWER
        elif advert.src > self._source:  # §6.4.3: the higher primary address wins a tie
            event = VrrpEvent.ADVERT_EQUAL_HIGHER_ADDRESS
        else:
            event = VrrpEvent.ADVERT_EQUAL_LOWER_ADDRESS
        self._advert = advert
        try:
            return self._run(event, now)
        finally:
            self._advert = None

    # -- the machine ----------------------------------------------------------------------

    def _run(self, event: VrrpEvent, now: float) -> list[VrrpAction]:
        self._now = now
        self._actions = []
        row = VRRP_TRANSITIONS.get((self._state, event))
        if row is None:
            return []
        next_state, step = row
        old = self._state
        self._steps[step]()
        if next_state is not old:
            self._state = next_state
            self._transitions += 1
            self._last_transition = now
            self.counters[f"to-{next_state.value}"] += 1
            self._actions.append(
                StateChanged(
                    self.config.interface, self.config.vrid, old, next_state, now, event.value
                )
            )
        actions, self._actions = self._actions, []
        return actions

    def _drop(self, reason: str) -> list[VrrpAction]:
        self.counters[f"drop-{reason}"] += 1
        return []

    def _effective_priority(self) -> int:
        config = self.config
        if config.owner and not config.track_owner:
            return OWNER_PRIORITY
        lost = sum(self._trackers[name].weight for name in self._failed)
        if not lost:
            return config.priority
        return max(config.track_floor, min(config.priority - lost, OWNER_PRIORITY - 1))

    def _priority_update(self, now: float) -> list[VrrpAction]:
        priority = self._effective_priority()
        if priority == self._priority:
            return []
        self._priority = priority
        self.counters["priority-changes"] += 1
        owner = priority == OWNER_PRIORITY
        return self._run(VrrpEvent.PRIORITY_OWNER if owner else VrrpEvent.PRIORITY_CHANGED, now)

    def _set_timer(self, timer: _Timer, centiseconds: float) -> None:
        self._timer = timer
        self._deadline = self._now + centiseconds / 100

    def _cancel_timer(self) -> None:
        self._timer = self._deadline = None

    def _send_advertisement(self, priority: int) -> None:
        """One advertisement, to the group or to each unicast peer (§7.2)."""
        config = self.config
        interface = config.interface
        args = (config.vrid, priority, config.advert_interval_cs, self._addresses)
        if not config.unicast_peers:
            frame = advertisement_frame(*args, source=self._source, destination=VRRP_MULTICAST)
            self._actions.append(SendFrame(interface, frame, FrameKind.ADVERTISEMENT))
        else:
            for peer in config.unicast_peers:
                frame = advertisement_frame(*args, source=self._source, destination=peer.packed)
                self._actions.append(
                    SendFrame(interface, frame, FrameKind.ADVERTISEMENT, next_hop=peer.packed)
                )
        self.counters["tx-advertisements"] += 1
        if priority == 0:
            self.counters["tx-priority-zero"] += 1

    def _send_gratuitous_arp(self) -> None:
        """A gratuitous ARP request from the virtual MAC for each address (§6.4.1, §6.4.2)."""
        interface = self.config.interface
        for address in self._addresses:
            frame = _ZERO_VNET + self._garp.announcement(address)
            self._actions.append(SendFrame(interface, frame, FrameKind.GRATUITOUS_ARP))
        self.counters["tx-gratuitous-arp"] += len(self._addresses)

    def _take(self) -> None:
        config = self.config
        self._actions.append(
            TakeAddresses(
                config.interface,
                config.vrid,
                self._mac,
                self._addresses,
                config.owner or config.accept,
            )
        )

    def _release(self, config: VrrpConfig) -> None:
        addresses = tuple(a.packed for a in config.virtual_addresses)
        self._actions.append(ReleaseAddresses(config.interface, config.vrid, self._mac, addresses))

    def _learn(self) -> None:
        """Follow the advertisement at hand: its sender is the master."""
        advert = self._advert
        if advert is not None:
            self._master_adver_interval = advert.max_adver_int
            self._master = advert.src
            self._master_priority = advert.priority

    # -- the steps (the module's table) ---------------------------------------------------

    def _become_master(self) -> None:
        self._take()
        self._send_advertisement(self._priority)
        self._send_gratuitous_arp()
        self._set_timer(_Timer.ADVER, self.config.advert_interval_cs)
        self._master = self._source
        self._master_priority = self._priority

    def _become_backup(self) -> None:
        self._master_adver_interval = self.config.advert_interval_cs
        self._set_timer(_Timer.MASTER_DOWN, self.master_down_interval)
        self._preempt_after = self._now + self.config.preempt_delay
        self._master = self._master_priority = None

    def _stop_backup(self) -> None:
        self._cancel_timer()
        self._master = self._master_priority = None

    def _stop_master(self) -> None:
        self._cancel_timer()
        self._send_advertisement(0)
        self._release(self.config)
        self._master = self._master_priority = None

    def _skew(self) -> None:
        self._set_timer(_Timer.MASTER_DOWN, self.skew_time)
        self._master_priority = 0

    def _follow(self) -> None:
        advert = self._advert
        if advert is not None and advert.priority >= self._priority:
            # A master at least as good as us: a later lower-priority master starts
            # the preemption delay afresh.
            self._preempt_after = None
        self._learn()
        self._set_timer(_Timer.MASTER_DOWN, self.master_down_interval)

    def _follow_or_preempt(self) -> None:
        if not self.config.preempt:
            return self._follow()
        if self._preempt_after is None:
            self._preempt_after = self._now + self.config.preempt_delay
        if self._now < self._preempt_after:
            self.counters["preempt-delayed"] += 1
            self._learn()
            self._set_timer(_Timer.MASTER_DOWN, self.master_down_interval)
            return None
        if self._preemption_held:
            # The host is not ready to be master yet (its copy of the master's
            # state is incomplete): follow, as within preempt_delay.
            self.counters["preempt-held"] += 1
            self._learn()
            self._set_timer(_Timer.MASTER_DOWN, self.master_down_interval)
            return None
        return self._discard()

    def _advertise_and_rearm(self) -> None:
        self._send_advertisement(self._priority)
        self._set_timer(_Timer.ADVER, self.config.advert_interval_cs)
        self._master_priority = self._priority

    def _yield(self) -> None:
        self._cancel_timer()
        self._learn()
        self._set_timer(_Timer.MASTER_DOWN, self.master_down_interval)
        self._preempt_after = None
        self._release(self.config)

    def _discard(self) -> None:
        self.counters["discarded"] += 1

    def _recompute(self) -> None:
        # Skew_Time and Master_Down_Interval are derived on use from the priority and
        # Master_Adver_Interval, and the running Master_Down_Timer keeps its deadline.
        # Until a master is heard, Master_Adver_Interval is our own (§6.4.1), which
        # the configuration may just have changed.
        if self._master is None:
            self._master_adver_interval = self.config.advert_interval_cs

    def _reannounce(self) -> None:
        old, new = self._previous, self.config
        if (old.virtual_addresses, old.owner or old.accept) != (
            new.virtual_addresses,
            new.owner or new.accept,
        ):
            self._release(old)
            self._take()
        self._advertise_and_rearm()
        self._send_gratuitous_arp()
        self._master = self._source
