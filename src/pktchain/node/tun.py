"""The node's TAP devices, by their former path: they are made by :mod:`pktchain.linux.tuntap`.

The node creates each TAP port inside its host's namespace with
:func:`~pktchain.linux.tuntap.open_tap` (virtio-net headers and offloads on),
entering it with :func:`pktchain.linux.netns.entered`. This module keeps the
names code imported from here before those modules existed; new code imports
them from :mod:`pktchain.linux`.
"""

from __future__ import annotations

from pktchain.linux.netns import entered as in_netns
from pktchain.linux.tuntap import (
    DEFAULT_OFFLOADS,
    IFF_NO_PI,
    IFF_TAP,
    IFF_VNET_HDR,
    IFNAMSIZ,
    SIOCGIFHWADDR,
    TUN_DEVICE,
    TUNSETIFF,
    TUNSETOFFLOAD,
    TUNSETPERSIST,
    TUNSETVNETHDRSZ,
    VNET_HDR_LEN,
    TapError,
    TunOffload,
    open_tap,
    tap_mac,
)

__all__ = [
    "DEFAULT_OFFLOADS",
    "IFF_NO_PI",
    "IFF_TAP",
    "IFF_VNET_HDR",
    "IFNAMSIZ",
    "SIOCGIFHWADDR",
    "TUNSETIFF",
    "TUNSETOFFLOAD",
    "TUNSETPERSIST",
    "TUNSETVNETHDRSZ",
    "TUN_DEVICE",
    "VNET_HDR_LEN",
    "TapError",
    "TunOffload",
    "in_netns",
    "open_tap",
    "tap_mac",
]
