"""Configuration of VRRP instances: one :class:`VrrpConfig` per virtual router (VRID, interface).

The settings are RFC 5798 §6.1's parameters with keepalived's names and units
where keepalived has them: the advertisement interval in seconds
(``advert_interval: 0.1``, kept in centiseconds as the wire carries it),
``preempt_delay`` in seconds, ``unicast_peers``, and tracked objects with
weights (``track``). A :class:`VrrpConfig` checks itself whole when it is
made and reports every wrong field at once in a :class:`VrrpConfigError`, as
:class:`~pktchain.functions.router.config.RouterConfigError` does for the
router; :func:`vrrp_config` and :func:`vrrp_configs` build them from the
mappings a YAML file gives, naming each wrong field by its path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from pktchain.errors import ConfigError, FieldError

__all__ = [
    "ADVERT_INTERVAL_RANGE",
    "CONFIG_KEYS",
    "MAX_PREEMPT_DELAY",
    "OWNER_PRIORITY",
    "TRACK_KEYS",
    "TrackKind",
    "Tracker",
    "VrrpConfig",
    "VrrpConfigError",
    "config_errors",
    "vrrp_config",
    "vrrp_configs",
]

OWNER_PRIORITY = 255
"""The priority of the router that owns the virtual addresses (RFC 5798 §5.2.4)."""
MAX_BACKUP_PRIORITY = 254
"""Backups use 1..254 (§5.2.4); 0 is only ever sent by a master that stops."""
ADVERT_INTERVAL_RANGE = (1, 4095)
"""Advertisement_Interval in centiseconds: the 12-bit Max Adver Int field (§5.2.7),
0.01 to 40.95 seconds."""
MAX_PREEMPT_DELAY = 1000.0
"""keepalived's upper bound on ``preempt_delay``, in seconds."""


class VrrpConfigError(ConfigError):
    """One or more wrong VRRP settings; ``errors`` names each field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(errors, subject="VRRP configuration")


class TrackKind(StrEnum):
    """What a tracker watches; the host of the instance reports its state."""

    INTERFACE = "interface"
    """A link: failed while the interface is down."""
    GATEWAY = "gateway"
    """A next hop: failed while it does not answer (the router's ARP says so)."""


@dataclass(frozen=True)
class Tracker:
    """Something whose failure lowers the instance's priority by ``weight``.

    ``target`` is the interface's name or the gateway's IPv4 address; it is
    also the tracker's name in :meth:`VrrpInstance.track
    <pktchain.functions.router.vrrp.instance.VrrpInstance.track>`.
    """

    kind: TrackKind
    target: str
    weight: int

    @property
    def name(self) -> str:
        """The name the host reports this tracker's state under."""
        return self.target


@dataclass(frozen=True)
class VrrpConfig:
    """One virtual router on one interface (RFC 5798 §6.1), as keepalived's ``vrrp_instance``.

    Addresses may be given as text; they are kept as :class:`IPv4Address`.
    """

    vrid: int
    """Virtual Router Identifier, 1..255; the virtual MAC is 00:00:5e:00:01:{vrid}."""
    interface: str
    """The router interface the virtual router lives on."""
    virtual_addresses: tuple[IPv4Address, ...]
    """The addresses the master holds (§6.1 IPv4_Addresses), 1..255 of them, in the
    order advertisements carry them."""
    priority: int = 100
    """1..254 for a backup (default 100), 255 for the router that owns the addresses."""
    advert_interval_cs: int = 100
    """Advertisement_Interval in centiseconds, 1..4095 (keepalived's ``advert_int``
    is in seconds: :func:`vrrp_config` converts)."""
    preempt: bool = True
    """Preempt_Mode: a higher-priority backup takes over from a lower-priority master.
    The owner always preempts, whatever this says (§6.1)."""
    preempt_delay: float = 0.0
    """Seconds after start (or after first seeing a lower-priority master) before a
    backup preempts, as keepalived's ``preempt_delay``; 0..1000."""
    accept: bool = False
    """Accept_Mode (§6.1): a master that does not own the addresses still takes packets
    addressed to them as its own. The owner always does."""
    unicast_peers: tuple[IPv4Address, ...] = ()
    """Send advertisements to each of these instead of 224.0.0.18, and accept only
    theirs (keepalived's ``unicast_peer``). Empty: multicast."""
    source_address: IPv4Address | None = None
    """The interface's primary address: the source of advertisements and the address
    compared when priorities tie (§6.4.3). Required to run the instance; the host may
    fill it in from the interface."""
    track: tuple[Tracker, ...] = ()
    """Objects whose failure lowers the priority by their weight."""
    track_floor: int = 1
    """The lowest priority tracking may bring the instance to (1..254, at most
    ``priority``); keepalived's effective priority never goes below 1."""
    track_owner: bool = False
    """Whether trackers lower the owner's 255 too (to at most 254)."""
    strict_addresses: bool = False
    """Drop an advertisement whose addresses differ from ours unless its sender owns
    them (priority 255), as RFC 3768 §7.1 asked. Off: counted only (RFC 5798 §7.1)."""
    name: str = ""
    """A label for status and logs; ``<interface>/<vrid>`` when empty."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "virtual_addresses", _addresses(self.virtual_addresses))
        object.__setattr__(self, "unicast_peers", _addresses(self.unicast_peers))
        object.__setattr__(self, "track", tuple(self.track))
        if self.source_address is not None and not isinstance(self.source_address, IPv4Address):
            with contextlib.suppress(ValueError):  # reported below
                object.__setattr__(self, "source_address", IPv4Address(str(self.source_address)))
        if not self.name and isinstance(self.interface, str):
            object.__setattr__(self, "name", f"{self.interface}/{self.vrid}")
        errors = config_errors(self)
        if errors:
            raise VrrpConfigError(errors)

    @property
    def owner(self) -> bool:
        """Whether this router owns the virtual addresses (priority 255)."""
        return self.priority == OWNER_PRIORITY

    @property
    def advert_interval(self) -> float:
        """Advertisement_Interval in seconds."""
        return self.advert_interval_cs / 100


def _addresses(values: Any) -> tuple[Any, ...]:
    """Each of ``values`` as an IPv4Address where it parses (left as is otherwise, to report)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        return (values,) if values is not None else ()
    out: list[Any] = []
    for value in values:
        if isinstance(value, IPv4Address):
            out.append(value)
            continue
        try:
            out.append(IPv4Address(str(value)))
        except ValueError:
            out.append(value)
    return tuple(out)


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _unicast_error(value: Any) -> str | None:
    """What keeps ``value`` from being one host's IPv4 address (None: nothing)."""
    if not isinstance(value, IPv4Address):
        return f"not an IPv4 address: {value!r}"
    if (
        value.is_multicast
        or value.is_loopback
        or value.is_unspecified
        or value == IPv4Address("255.255.255.255")
        or value.is_reserved
    ):
        return f"{value} is not a unicast host address"
    return None


def config_errors(config: VrrpConfig) -> list[FieldError]:
    """Every problem of one instance's settings, each naming its field."""
    errors: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        errors.append(FieldError(field, message))

    if not _int_in(config.vrid, 1, 255):
        bad("vrid", f"{config.vrid!r} is not in 1..255")
    if not isinstance(config.interface, str) or not config.interface:
        bad("interface", "give the name of the interface the virtual router is on")
    if not _int_in(config.priority, 1, OWNER_PRIORITY):
        bad("priority", f"{config.priority!r} is not in 1..255 (255: the address owner)")
    addresses = config.virtual_addresses
    if not addresses:
        bad("virtual_addresses", "give at least one address")
    elif len(addresses) > 255:
        bad("virtual_addresses", f"{len(addresses)} addresses; an advertisement carries 255")
    for i, address in enumerate(addresses):
        problem = _unicast_error(address)
        if problem is not None:
            bad(f"virtual_addresses[{i}]", problem)
    if len(set(addresses)) != len(addresses):
        bad("virtual_addresses", "an address is listed twice")
    low, high = ADVERT_INTERVAL_RANGE
    if not _int_in(config.advert_interval_cs, low, high):
        bad(
            "advert_interval",
            f"{config.advert_interval_cs!r} centiseconds is not in {low}..{high} "
            "(0.01 to 40.95 seconds)",
        )
    if not isinstance(config.preempt, bool):
        bad("preempt", f"{config.preempt!r} is not true or false")
    delay = config.preempt_delay
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_PREEMPT_DELAY
    ):
        bad("preempt_delay", f"{delay!r} is not a number of seconds in 0..{MAX_PREEMPT_DELAY:g}")
    for field in ("accept", "track_owner", "strict_addresses"):
        if not isinstance(getattr(config, field), bool):
            bad(field, f"{getattr(config, field)!r} is not true or false")
    source = config.source_address
    if source is not None:
        problem = _unicast_error(source)
        if problem is not None:
            bad("source_address", problem)
    for i, peer in enumerate(config.unicast_peers):
        problem = _unicast_error(peer)
        if problem is not None:
            bad(f"unicast_peers[{i}]", problem)
        elif source is not None and peer == source:
            bad(f"unicast_peers[{i}]", f"{peer} is this router's own source_address")
    if len(set(config.unicast_peers)) != len(config.unicast_peers):
        bad("unicast_peers", "a peer is listed twice")
    names: set[str] = set()
    for i, tracker in enumerate(config.track):
        if not isinstance(tracker, Tracker):
            bad(f"track[{i}]", f"not a tracker: {tracker!r}")
            continue
        if not _int_in(tracker.weight, 1, MAX_BACKUP_PRIORITY):
            bad(f"track[{i}].weight", f"{tracker.weight!r} is not in 1..254")
        if not isinstance(tracker.target, str) or not tracker.target:
            bad(f"track[{i}].{tracker.kind}", "give what to track")
        elif tracker.kind is TrackKind.GATEWAY:
            try:
                gateway: Any = IPv4Address(tracker.target)
            except ValueError:
                gateway = tracker.target
            problem = _unicast_error(gateway)
            if problem is not None:
                bad(f"track[{i}].gateway", problem)
        if tracker.name in names:
            bad(f"track[{i}]", f"{tracker.name!r} is tracked twice")
        names.add(tracker.name)
    if not _int_in(config.track_floor, 1, MAX_BACKUP_PRIORITY):
        bad("track_floor", f"{config.track_floor!r} is not in 1..254")
    elif _int_in(config.priority, 1, OWNER_PRIORITY) and config.track_floor > config.priority:
        bad("track_floor", f"{config.track_floor} is above the priority {config.priority}")
    if not isinstance(config.name, str):
        bad("name", f"{config.name!r} is not text")
    return errors


CONFIG_KEYS = (
    "vrid",
    "interface",
    "virtual_addresses",
    "priority",
    "advert_interval",
    "preempt",
    "preempt_delay",
    "accept",
    "unicast_peers",
    "source_address",
    "track",
    "track_floor",
    "track_owner",
    "strict_addresses",
    "name",
)
"""The keys of one instance's mapping (:func:`vrrp_config`)."""
TRACK_KEYS = ("interface", "gateway", "weight")
"""The keys of one tracker's mapping: ``interface`` or ``gateway``, and ``weight``."""
_REQUIRED: dict[str, Any] = {
    "vrid": 1,
    "interface": "-",
    "virtual_addresses": (IPv4Address("192.0.2.1"),),
}
"""The fields without a default, and what stands in for one that is missing or unreadable
while the others are checked."""


def _path(where: str, field: str) -> str:
    if not where:
        return field
    return f"{where}{field}" if field.startswith("[") else f"{where}.{field}"


def _centiseconds(value: Any) -> int | None:
    """Seconds (a number) as whole centiseconds; None when it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    hundredths = round(value * 100)
    if abs(value * 100 - hundredths) > 1e-6:
        return None
    return int(hundredths)


def _ipv4(value: Any) -> IPv4Address | None:
    """An address given as text (``10.0.0.1``, or ``10.0.0.1/24`` as keepalived allows)."""
    if isinstance(value, IPv4Address):
        return value
    if not isinstance(value, str):
        return None
    try:
        return IPv4Interface(value.strip()).ip
    except ValueError:
        return None


def vrrp_config(data: Mapping[str, Any], *, where: str = "") -> VrrpConfig:
    """One instance from a mapping with the keys of :data:`CONFIG_KEYS`.

    ``advert_interval`` and ``preempt_delay`` are seconds; addresses are text.
    Every wrong, missing or unknown field is reported at once in one
    :class:`VrrpConfigError`, each named by its path under ``where``
    (``vrrp[0].priority``).
    """
    errors: list[FieldError] = []

    def bad(field: str, message: str) -> None:
        errors.append(FieldError(_path(where, field), message))

    if not isinstance(data, Mapping):
        raise VrrpConfigError([FieldError(where, f"expected a mapping, got {data!r}")])
    for key in data:
        if key not in CONFIG_KEYS:
            bad(str(key), f"unknown field; the fields are {', '.join(CONFIG_KEYS)}")
    values: dict[str, Any] = {k: data[k] for k in CONFIG_KEYS if k in data}
    if "advert_interval" in values:
        interval = _centiseconds(values.pop("advert_interval"))
        if interval is None:
            bad("advert_interval", "give seconds as a number, in whole hundredths (0.01..40.95)")
        else:
            values["advert_interval_cs"] = interval
    for key in ("virtual_addresses", "unicast_peers"):
        if key not in values:
            continue
        listed = values[key]
        if not isinstance(listed, list | tuple):
            bad(key, f"expected a list of IPv4 addresses, got {listed!r}")
            del values[key]
            continue
        # What does not parse is kept as given: the configuration's own checks name it.
        values[key] = tuple(_ipv4(item) or item for item in listed)
    if values.get("source_address") is not None:
        values["source_address"] = _ipv4(values["source_address"]) or values["source_address"]
    if "track" in values:
        values["track"] = _trackers(values["track"], bad)
    if "name" in values and values["name"] is None:
        del values["name"]
    for key, stand_in in _REQUIRED.items():
        if key not in values:
            if key not in data:
                bad(key, "missing")
            values[key] = stand_in  # already reported: checks the other fields against it
    try:
        config = VrrpConfig(**values)
    except VrrpConfigError as exc:
        errors.extend(FieldError(_path(where, e.field), e.message) for e in exc.errors)
    if errors:
        raise VrrpConfigError(errors)
    return config


def _trackers(listed: Any, bad: Any) -> tuple[Tracker, ...]:
    if not isinstance(listed, list | tuple):
        bad(
            "track",
            f"expected a list of {{interface: NAME | gateway: ADDRESS, weight: N}}, got {listed!r}",
        )
        return ()
    trackers: list[Tracker] = []
    for i, item in enumerate(listed):
        if not isinstance(item, Mapping):
            bad(f"track[{i}]", f"expected {{interface: NAME, weight: N}}, got {item!r}")
            continue
        unknown = [k for k in item if k not in TRACK_KEYS]
        for key in unknown:
            bad(f"track[{i}].{key}", f"unknown field; the fields are {', '.join(TRACK_KEYS)}")
        kinds = [k for k in (TrackKind.INTERFACE, TrackKind.GATEWAY) if k.value in item]
        if len(kinds) != 1:
            bad(f"track[{i}]", "give exactly one of interface or gateway")
            continue
        kind = kinds[0]
        target = item[kind.value]
        if kind is TrackKind.GATEWAY and isinstance(target, IPv4Address):
            target = str(target)
        if not isinstance(target, str):
            bad(f"track[{i}].{kind}", f"expected a name or address, got {target!r}")
            continue
        if "weight" not in item:
            bad(f"track[{i}].weight", "missing")
            continue
        trackers.append(Tracker(kind, target, item["weight"]))
    return tuple(trackers)


def vrrp_configs(data: Any, *, where: str = "vrrp") -> tuple[VrrpConfig, ...]:
    """Every instance of a list of mappings, each as :func:`vrrp_config` reads it.

    Two instances may not share an interface and VRID, nor a name. All
    problems of all instances are reported together.
    """
    if not isinstance(data, list | tuple):
        raise VrrpConfigError([FieldError(where, f"expected a list of instances, got {data!r}")])
    errors: list[FieldError] = []
    configs: list[VrrpConfig] = []
    seen: dict[tuple[str, int], int] = {}
    names: dict[str, int] = {}
    for i, item in enumerate(data):
        try:
            config = vrrp_config(item, where=f"{where}[{i}]")
        except VrrpConfigError as exc:
            errors.extend(exc.errors)
            continue
        key = (config.interface, config.vrid)
        if key in seen:
            errors.append(
                FieldError(
                    f"{where}[{i}].vrid",
                    f"VRID {config.vrid} on {config.interface} is already {where}[{seen[key]}]",
                )
            )
        elif config.name in names:
            errors.append(
                FieldError(
                    f"{where}[{i}].name",
                    f"{config.name!r} is already the name of {where}[{names[config.name]}]",
                )
            )
        seen.setdefault(key, i)
        names.setdefault(config.name, i)
        configs.append(config)
    if errors:
        raise VrrpConfigError(errors)
    return tuple(configs)
