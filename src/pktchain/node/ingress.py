"""The node's ingress check: is a frame fit to forward?

A frame whose IPv4, IPv6, ARP or L4 header is inconsistent (a length that
lies, a truncated header, a bad IHL or TCP data offset, ...) is dropped and
counted under the codec's reason name.  Any other EtherType is switched as it
is: a switch does not judge protocols it does not speak.
"""

from __future__ import annotations

from pktchain.node.tun import VNET_HDR_LEN
from pktchain.packet.parse import parse_frame


def frame_error(frame: bytes) -> str | None:
    """None if the frame (virtio-net header in front) parses cleanly, else the reason."""
    error = parse_frame(frame, VNET_HDR_LEN).error
    return None if error is None else error.value
