"""VRRPv3 (RFC 5798, IPv4) for the router: the election that moves a virtual address.

Two routers (or more) on a link share virtual addresses; the one elected
master holds them, under the virtual MAC ``00:00:5e:00:01:{VRID}``, and the
others take over when it stops advertising. This package is the protocol
alone, sans-IO like the router: ``config`` holds the settings
(:class:`VrrpConfig`, built from YAML-like mappings by :func:`vrrp_config`),
``instance`` one virtual router with its state table, timers and receive
checks (:class:`VrrpInstance`), ``speaker`` all of a router's instances
(:class:`VrrpSpeaker`), and ``actions`` what they ask the host to do. The wire
format is :mod:`pktchain.packet.vrrp`. docs/vrrp.md is the manual and
docs/vrrp-conformance.md maps RFC 5798's requirements to their tests.
"""

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
    Tracker,
    TrackKind,
    VrrpConfig,
    VrrpConfigError,
    vrrp_config,
    vrrp_configs,
)
from pktchain.functions.router.vrrp.instance import (
    VRRP_TRANSITIONS,
    VrrpDrop,
    VrrpEvent,
    VrrpInstance,
    VrrpStatus,
    VrrpStep,
    master_down_interval,
    skew_time,
)
from pktchain.functions.router.vrrp.speaker import VrrpSpeaker

__all__ = [
    "VRRP_TRANSITIONS",
    "FrameKind",
    "ReleaseAddresses",
    "SendFrame",
    "StateChanged",
    "TakeAddresses",
    "TrackKind",
    "Tracker",
    "VrrpAction",
    "VrrpConfig",
    "VrrpConfigError",
    "VrrpDrop",
    "VrrpEvent",
    "VrrpInstance",
    "VrrpSpeaker",
    "VrrpState",
    "VrrpStatus",
    "VrrpStep",
    "master_down_interval",
    "skew_time",
    "vrrp_config",
    "vrrp_configs",
]
