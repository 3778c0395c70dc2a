"""A router pair's state sync as the node runs it: which side sends, when to take over.

The node of each router of a pair runs one :class:`HaSync` (`pktchain node
--ha-listen ADDR --ha-peer ADDR --ha-secret-file FILE`, docs/ha.md). Its role
follows the router's virtual routers (VRRP):

- while some virtual router of this router is **master**, the node is the
  pair's master: a :class:`~pktchain.functions.router.sync.SyncSender` serves
  the router's state on ``--ha-listen`` to the backup that connects;
- otherwise it is the **backup**: a
  :class:`~pktchain.functions.router.sync.SyncReceiver` connects to
  ``--ha-peer`` and keeps a copy of the master's sessions, mappings, forwards
  and hosts in the router's own tables, without timers.

On becoming master the backup takes the copy over at once (each session's
timer restarted from now), before any packet it now receives is translated,
and starts serving. A backup whose connection its master's end closed (the
master's process ended while its kernel lives: a crash, a kill) tells its
virtual routers so: they take over after Skew_Time instead of waiting
Master_Down_Interval for advertisements that will not come
(:meth:`~pktchain.functions.router.function.Router.vrrp_master_gone`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pktchain.eventloop import EventLoop, Timer
from pktchain.functions.router.function import Router
from pktchain.functions.router.sync import SyncReceiver, SyncSender
from pktchain.functions.router.vrrp import StateChanged, VrrpState
from pktchain.logs import event
from pktchain.node.hasync import LinkClosed, SyncLink
from pktchain.tunnel.client import Backoff

__all__ = ["HaRole", "HaSync"]

log = logging.getLogger("pktchain.node")

RECONNECT = Backoff(initial=0.05, maximum=0.5)
HOLD_CHECK = 0.05
"""Seconds between two looks at whether a backup's copy is complete enough to preempt."""
"""How soon a backup dials its master again: the pair is on one link."""


class HaRole:
    MASTER = "master"
    BACKUP = "backup"


class HaSync:
    """The node's side of its router pair's state sync (see the module docstring).

    ``send_frames`` sends frames the router made outside a packet or a timer;
    ``rearm`` sets the router's timer again after a takeover moved it.
    """

    def __init__(
        self,
        router: Router,
        secret: bytes,
        *,
        loop: EventLoop,
        listen: tuple[str, int],
        peer: tuple[str, int],
        send_frames: Callable[[list[tuple[str, bytes]]], None],
        rearm: Callable[[], None],
    ) -> None:
        self.router = router
        self.secret = secret
        self.loop = loop
        self.listen = listen
        self.peer = peer
        self._send_frames = send_frames
        self._rearm = rearm
        self.role: str | None = None
        self._link: SyncLink | None = None
        self._sender: SyncSender | None = None
        self._receiver: SyncReceiver | None = None
        self.takeovers = 0
        self.last_takeover: dict[str, Any] | None = None
        self.masters_gone = 0
        self._held = False
        self._hold: Timer | None = None

    def start(self) -> None:
        """Start as the backup: the virtual routers start as backups too."""
        self._become_backup()
        self._hold = self.loop.call_every(HOLD_CHECK, self._hold_preemption)

    def _hold_preemption(self) -> None:
        """A backup preempts only with a complete copy of its master's state: its
        virtual routers follow a lower-priority master until the copy is in sync."""
        receiver = self._receiver
        held = self.role == HaRole.BACKUP and (receiver is None or not receiver.in_sync)
        if held != self._held:
            self._held = held
            self.router.vrrp_hold_preemption(held)

    def stop(self) -> None:
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        self._stop_link()

    def _stop_link(self) -> None:
        if self._link is not None:
            self._link.stop()
            self._link = None

    def vrrp_changed(self, change: StateChanged) -> None:
        """A virtual router changed state: follow it (called from inside the router)."""
        master = change.new is VrrpState.MASTER or any(
            row["state"] == VrrpState.MASTER.value for row in self.router.vrrp_status()
        )
        if master and self.role != HaRole.MASTER:
            self._become_master(change.now)
        elif not master and self.role == HaRole.MASTER:
            self._become_backup()

    def _become_master(self, now: float) -> None:
        receiver = self._receiver
        if receiver is not None:
            # A complete copy came at least once; changes since were applied as they came.
            in_sync = receiver.counters().get("snapshots-completed", 0) > 0
            taken = receiver.takeover(now)
            self.takeovers += 1
            self.last_takeover = {
                "at": now,
                "had_copy": in_sync,
                "sessions": taken.sessions,
                "hosts": taken.hosts,
            }
            log.warning(
                "ha: master now; took over %d sessions and %d hosts (%s)",
                taken.sessions,
                taken.hosts,
                "from a complete copy" if in_sync else "WITHOUT a complete copy of the master's",
                extra=event(
                    "ha_takeover",
                    sessions=taken.sessions,
                    hosts=taken.hosts,
                    complete_copy=in_sync,
                ),
            )
            self._rearm()
        self._stop_link()
        self._receiver = None
        self._sender = SyncSender(self.router, self.secret)
        self._link = SyncLink(self._sender, loop=self.loop, listen=self.listen)
        self._link.start()
        self.role = HaRole.MASTER

    def _become_backup(self) -> None:
        if self.role is not None:
            log.warning(
                "ha: backup now; following the master at %s:%d",
                *self.peer,
                extra=event("ha_backup", peer=f"{self.peer[0]}:{self.peer[1]}"),
            )
        self._stop_link()
        self._sender = None
        self._receiver = SyncReceiver(self.router, self.secret)
        self._link = SyncLink(
            self._receiver,
            loop=self.loop,
            connect=self.peer,
            backoff=Backoff(RECONNECT.initial, RECONNECT.maximum),
            on_close=self._closed,
        )
        self._link.start()
        self.role = HaRole.BACKUP

    def _closed(self, reason: LinkClosed) -> None:
        if self.role != HaRole.BACKUP or reason not in (LinkClosed.BY_PEER, LinkClosed.RESET):
            return
        # The master's end closed or reset the connection: its process is gone
        # (its kernel answered for it). No advertisement will say so.
        self.masters_gone += 1
        log.warning(
            "ha: the master's end closed the sync (%s): take over after Skew_Time",
            reason,
            extra=event("ha_master_gone", reason=reason.value),
        )
        self._send_frames(self.router.vrrp_master_gone(self.loop.now))
        self._rearm()

    def status(self) -> dict[str, Any]:
        """The role, the link, the protocol's own status and counters, takeovers."""
        endpoint = self._sender if self._sender is not None else self._receiver
        link = self._link
        return {
            "role": self.role,
            "listen": f"{self.listen[0]}:{self.listen[1]}",
            "peer": f"{self.peer[0]}:{self.peer[1]}",
            "connected": link is not None and link.connected,
            "link": dict(link.counters) if link is not None else {},
            "sync": endpoint.status() if endpoint is not None else {},
            "takeovers": self.takeovers,
            "last_takeover": self.last_takeover,
            "masters_gone": self.masters_gone,
            "preemption_held": self._held,
        }
