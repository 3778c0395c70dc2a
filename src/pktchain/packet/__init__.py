"""The packet codec: declared header layouts, zero-copy parsing, builders and checksums.

Everything the data plane does to a packet goes through here:

* :mod:`~pktchain.packet.headers` states each header's layout once, with its RFC;
* :func:`parse_frame` / :func:`parse_ip` find every layer of a frame without
  copying it and never raise (a :class:`Malformed` reason instead);
* :func:`flow_key` turns the parse result into a hashable 5-tuple;
* the views (:class:`Ipv4View`, :class:`TcpView`, ...) read and write fields in place;
* :mod:`~pktchain.packet.rewrite` changes addresses, ports and TTL with
  incremental checksums, partial (offloaded) checksums included;
* :func:`build` and the layer classes make frames for tests and the slow path;
* :mod:`~pktchain.packet.nsh` and :mod:`~pktchain.packet.virtio` cover NSH over
  VXLAN-GPE and the ``virtio_net_hdr`` of TAP / AF_PACKET.

Submodules are imported on first use of one of their names, so that a command
that needs only the parser does not pay for the builders.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pktchain.packet.address import (
        Buffer,
        IpLike,
        MacLike,
        WritableBuffer,
        format_ip,
        format_mac,
        ip_bytes,
        mac_bytes,
    )
    from pktchain.packet.checksum import (
        adjust_checksum,
        adjust_seed,
        complete_partial_checksum,
        internet_checksum,
        l4_checksum,
        l4_checksum_ok,
        ones_sum,
        partial_checksum_seed,
        pseudo_header_sum,
        update16,
        update32,
        update_seed16,
        update_seed32,
    )
    from pktchain.packet.flow import FlowKey, flow_key
    from pktchain.packet.headers import (
        VXLAN_GPE_PORT,
        ArpOp,
        EtherType,
        GpeNextProtocol,
        IcmpType,
        Icmpv6Type,
        IpProto,
        NshMdType,
        NshNextProtocol,
        TcpFlag,
    )
    from pktchain.packet.layers import (
        Arp,
        Ethernet,
        Icmp,
        Icmpv6,
        Ipv4,
        Ipv6,
        Ipv6Extension,
        Ipv6Fragment,
        Layer,
        Nsh,
        Tcp,
        Udp,
        Vlan,
        VxlanGpe,
        build,
    )
    from pktchain.packet.nsh import (
        ContextTlv,
        GpeInfo,
        NshInfo,
        parse_context_tlvs,
        parse_inner,
        parse_nsh,
        parse_vxlan_gpe,
    )
    from pktchain.packet.options import Option, parse_options
    from pktchain.packet.parse import FrameInfo, Malformed, parse_frame, parse_ip
    from pktchain.packet.rewrite import Side, decrement_ttl, set_ip, set_mac, set_port
    from pktchain.packet.views import (
        ArpView,
        EthernetView,
        Icmpv6View,
        IcmpView,
        Ipv4View,
        Ipv6View,
        NshView,
        TcpView,
        UdpView,
        VirtioNetHdrView,
        VlanTagView,
        VxlanGpeView,
    )
    from pktchain.packet.virtio import (
        VIRTIO_NET_HDR_LEN,
        GsoType,
        VirtioNetFlag,
        VirtioNetHdr,
        complete_checksum,
        needs_csum_header,
        parse_virtio_net_hdr,
    )

_SOURCES: dict[str, str] = {
    "FlowKey": "pktchain.packet.flow",
    "flow_key": "pktchain.packet.flow",
    "Option": "pktchain.packet.options",
    "parse_options": "pktchain.packet.options",
    "FrameInfo": "pktchain.packet.parse",
    "Malformed": "pktchain.packet.parse",
    "parse_frame": "pktchain.packet.parse",
    "parse_ip": "pktchain.packet.parse",
    "Side": "pktchain.packet.rewrite",
    "decrement_ttl": "pktchain.packet.rewrite",
    "set_ip": "pktchain.packet.rewrite",
    "set_mac": "pktchain.packet.rewrite",
    "set_port": "pktchain.packet.rewrite",
    "Buffer": "pktchain.packet.address",
    "IpLike": "pktchain.packet.address",
    "MacLike": "pktchain.packet.address",
    "WritableBuffer": "pktchain.packet.address",
    "format_ip": "pktchain.packet.address",
    "format_mac": "pktchain.packet.address",
    "ip_bytes": "pktchain.packet.address",
    "mac_bytes": "pktchain.packet.address",
    "Arp": "pktchain.packet.layers",
    "Ethernet": "pktchain.packet.layers",
    "Icmp": "pktchain.packet.layers",
    "Icmpv6": "pktchain.packet.layers",
    "Ipv4": "pktchain.packet.layers",
    "Ipv6": "pktchain.packet.layers",
    "Ipv6Extension": "pktchain.packet.layers",
    "Ipv6Fragment": "pktchain.packet.layers",
    "Layer": "pktchain.packet.layers",
    "Nsh": "pktchain.packet.layers",
    "Tcp": "pktchain.packet.layers",
    "Udp": "pktchain.packet.layers",
    "Vlan": "pktchain.packet.layers",
    "VxlanGpe": "pktchain.packet.layers",
    "build": "pktchain.packet.layers",
    "adjust_checksum": "pktchain.packet.checksum",
    "adjust_seed": "pktchain.packet.checksum",
    "complete_partial_checksum": "pktchain.packet.checksum",
    "internet_checksum": "pktchain.packet.checksum",
    "l4_checksum": "pktchain.packet.checksum",
    "l4_checksum_ok": "pktchain.packet.checksum",
    "ones_sum": "pktchain.packet.checksum",
    "partial_checksum_seed": "pktchain.packet.checksum",
    "pseudo_header_sum": "pktchain.packet.checksum",
    "update16": "pktchain.packet.checksum",
    "update32": "pktchain.packet.checksum",
    "update_seed16": "pktchain.packet.checksum",
    "update_seed32": "pktchain.packet.checksum",
    "VXLAN_GPE_PORT": "pktchain.packet.headers",
    "ArpOp": "pktchain.packet.headers",
    "EtherType": "pktchain.packet.headers",
    "GpeNextProtocol": "pktchain.packet.headers",
    "IcmpType": "pktchain.packet.headers",
    "Icmpv6Type": "pktchain.packet.headers",
    "IpProto": "pktchain.packet.headers",
    "NshMdType": "pktchain.packet.headers",
    "NshNextProtocol": "pktchain.packet.headers",
    "TcpFlag": "pktchain.packet.headers",
    "ContextTlv": "pktchain.packet.nsh",
    "GpeInfo": "pktchain.packet.nsh",
    "NshInfo": "pktchain.packet.nsh",
    "parse_context_tlvs": "pktchain.packet.nsh",
    "parse_inner": "pktchain.packet.nsh",
    "parse_nsh": "pktchain.packet.nsh",
    "parse_vxlan_gpe": "pktchain.packet.nsh",
    "ArpView": "pktchain.packet.views",
    "EthernetView": "pktchain.packet.views",
    "Icmpv6View": "pktchain.packet.views",
    "IcmpView": "pktchain.packet.views",
    "Ipv4View": "pktchain.packet.views",
    "Ipv6View": "pktchain.packet.views",
    "NshView": "pktchain.packet.views",
    "TcpView": "pktchain.packet.views",
    "UdpView": "pktchain.packet.views",
    "VirtioNetHdrView": "pktchain.packet.views",
    "VlanTagView": "pktchain.packet.views",
    "VxlanGpeView": "pktchain.packet.views",
    "VIRTIO_NET_HDR_LEN": "pktchain.packet.virtio",
    "GsoType": "pktchain.packet.virtio",
    "VirtioNetFlag": "pktchain.packet.virtio",
    "VirtioNetHdr": "pktchain.packet.virtio",
    "complete_checksum": "pktchain.packet.virtio",
    "needs_csum_header": "pktchain.packet.virtio",
    "parse_virtio_net_hdr": "pktchain.packet.virtio",
}


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(source), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "VIRTIO_NET_HDR_LEN",
    "VXLAN_GPE_PORT",
    "Arp",
    "ArpOp",
    "ArpView",
    "Buffer",
    "ContextTlv",
    "EtherType",
    "Ethernet",
    "EthernetView",
    "FlowKey",
    "FrameInfo",
    "GpeInfo",
    "GpeNextProtocol",
    "GsoType",
    "Icmp",
    "IcmpType",
    "IcmpView",
    "Icmpv6",
    "Icmpv6Type",
    "Icmpv6View",
    "IpLike",
    "IpProto",
    "Ipv4",
    "Ipv4View",
    "Ipv6",
    "Ipv6Extension",
    "Ipv6Fragment",
    "Ipv6View",
    "Layer",
    "MacLike",
    "Malformed",
    "Nsh",
    "NshInfo",
    "NshMdType",
    "NshNextProtocol",
    "NshView",
    "Option",
    "Side",
    "Tcp",
    "TcpFlag",
    "TcpView",
    "Udp",
    "UdpView",
    "VirtioNetFlag",
    "VirtioNetHdr",
    "VirtioNetHdrView",
    "Vlan",
    "VlanTagView",
    "VxlanGpe",
    "VxlanGpeView",
    "WritableBuffer",
    "adjust_checksum",
    "adjust_seed",
    "build",
    "complete_checksum",
    "complete_partial_checksum",
    "decrement_ttl",
    "flow_key",
    "format_ip",
    "format_mac",
    "internet_checksum",
    "ip_bytes",
    "l4_checksum",
    "l4_checksum_ok",
    "mac_bytes",
    "needs_csum_header",
    "ones_sum",
    "parse_context_tlvs",
    "parse_frame",
    "parse_inner",
    "parse_ip",
    "parse_nsh",
    "parse_options",
    "parse_virtio_net_hdr",
    "parse_vxlan_gpe",
    "partial_checksum_seed",
    "pseudo_header_sum",
    "set_ip",
    "set_mac",
    "set_port",
    "update16",
    "update32",
    "update_seed16",
    "update_seed32",
]
