"""All the VRRP instances of one router: received packets routed by interface and VRID.

A router may run several virtual routers (different VRIDs, or the same VRID
on different interfaces, as keepalived's ``vrrp_instance`` blocks). The
:class:`VrrpSpeaker` holds one :class:`~pktchain.functions.router.vrrp.instance.VrrpInstance`
per (interface, VRID): it parses each received packet once, hands it to the
instance its interface and VRID name (so that a bad packet is counted by the
virtual router it was meant for), counts what names no instance
(``drop-vrid-not-configured``, §7.1), and gathers the instances' timers,
tracking and status. It is as sans-IO as the instances: calls return their
actions, in order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pktchain.functions.router.vrrp.actions import VrrpAction
from pktchain.functions.router.vrrp.config import VrrpConfig
from pktchain.functions.router.vrrp.instance import VrrpInstance, VrrpStatus
from pktchain.packet.address import Buffer
from pktchain.packet.headers import EtherType
from pktchain.packet.parse import parse_frame
from pktchain.packet.virtio import VIRTIO_NET_HDR_LEN
from pktchain.packet.vrrp import parse_advertisement

__all__ = ["VrrpSpeaker"]

_ETH_IPV4 = int(EtherType.IPV4)


class VrrpSpeaker:
    """The VRRP instances of one host, keyed by (interface, VRID)."""

    def __init__(self, configs: Iterable[VrrpConfig] = ()) -> None:
        self._instances: dict[tuple[str, int], VrrpInstance] = {}
        self.counters: defaultdict[str, int] = defaultdict(int)
        """What reached no instance, by name (``drop-<reason>``)."""
        for config in configs:
            self.add(config)

    def add(self, config: VrrpConfig) -> VrrpInstance:
        """A new instance, not started; ValueError naming ``vrid`` if the interface has it."""
        key = (config.interface, config.vrid)
        if key in self._instances:
            raise ValueError(f"vrid: {config.vrid} already runs on {config.interface}")
        instance = VrrpInstance(config)
        self._instances[key] = instance
        return instance

    def remove(self, interface: str, vrid: int, now: float) -> list[VrrpAction]:
        """Shut an instance down (a master advertises priority 0) and forget it."""
        instance = self.instance(interface, vrid)
        actions = instance.shutdown(now)
        del self._instances[(interface, vrid)]
        return actions

    def reconfigure(self, config: VrrpConfig, now: float) -> list[VrrpAction]:
        """Give the instance of ``config``'s interface and VRID its new configuration
        (:meth:`VrrpInstance.reconfigure`); KeyError if there is none."""
        return self.instance(config.interface, config.vrid).reconfigure(config, now)

    def instance(self, interface: str, vrid: int) -> VrrpInstance:
        """The instance of ``vrid`` on ``interface``; KeyError naming both if none."""
        try:
            return self._instances[(interface, vrid)]
        except KeyError:
            raise KeyError(f"no VRRP instance of VRID {vrid} on {interface!r}") from None

    def instances(self) -> list[VrrpInstance]:
        """Every instance, by interface then VRID."""
        return [self._instances[key] for key in sorted(self._instances)]

    def start(self, now: float) -> list[VrrpAction]:
        """Start every instance."""
        return [action for i in self.instances() for action in i.start(now)]

    def shutdown(self, now: float) -> list[VrrpAction]:
        """Shut every instance down (masters advertise priority 0 and release)."""
        return [action for i in self.instances() for action in i.shutdown(now)]

    def receive(
        self, interface: str, packet: Buffer, now: float, offset: int = 0
    ) -> list[VrrpAction]:
        """An IPv4 packet (protocol 112) received on ``interface``; never raises."""
        self.counters["rx-packets"] += 1
        advert = parse_advertisement(packet, offset)
        instance = self._instances.get((interface, advert.vrid))
        if instance is None:
            if advert.vrid < 0:
                self.counters[f"drop-{advert.error}"] += 1
            else:
                self.counters["drop-vrid-not-configured"] += 1
            return []
        return instance.receive_advertisement(advert, now)

    def receive_frame(
        self, interface: str, frame: Buffer, now: float, offset: int = VIRTIO_NET_HDR_LEN
    ) -> list[VrrpAction]:
        """A frame as the router gets it (``virtio_net_hdr``, then Ethernet at
        ``offset``) carrying an advertisement; never raises."""
        info = parse_frame(frame, offset)
        if info.error is not None or info.ethertype != _ETH_IPV4:
            self.counters["rx-packets"] += 1
            self.counters["drop-not-ipv4"] += 1
            return []
        return self.receive(interface, memoryview(frame)[: info.end], now, info.l3)

    def track(self, name: str, ok: bool, now: float) -> list[VrrpAction]:
        """Report a tracker's state to every instance that tracks ``name``; ValueError if none."""
        tracking = [i for i in self.instances() if i.tracks(name)]
        if not tracking:
            raise ValueError(f"track: no VRRP instance tracks {name!r}")
        return [action for i in tracking for action in i.track(name, ok, now)]

    def master_gone(self, master: bytes | None, now: float) -> list[VrrpAction]:
        """The router at ``master`` (None: the one other router) is known to have
        stopped: every instance following it
        takes over after Skew_Time (:meth:`VrrpInstance.master_gone`)."""
        return [action for i in self.instances() for action in i.master_gone(master, now)]

    def hold_preemption(self, held: bool) -> None:
        """Hold (or let go) every instance's preemption (:meth:`VrrpInstance.hold_preemption`)."""
        for instance in self._instances.values():
            instance.hold_preemption(held)

    def next_deadline(self) -> float | None:
        """The earliest timer of all instances (None: none is set)."""
        deadlines = [d for i in self._instances.values() if (d := i.next_deadline()) is not None]
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> list[VrrpAction]:
        """Fire every instance timer that is due."""
        return [action for i in self.instances() for action in i.on_timer(now)]

    def status(self) -> list[VrrpStatus]:
        """A snapshot of every instance."""
        return [i.status() for i in self.instances()]
