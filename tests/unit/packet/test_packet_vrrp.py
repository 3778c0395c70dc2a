"""VRRPv3 advertisements (RFC 5798) built by pktchain and read by scapy, and the reverse.

scapy's ``VRRPv3`` dissector is the independent oracle: it decodes the frames
:func:`~pktchain.packet.vrrp.advertisement_frame` builds (fields and checksum,
which scapy computes over the IPv4 pseudo-header), and
:func:`~pktchain.packet.vrrp.parse_advertisement` reads what scapy builds.
Every check of the packet alone (§7.1) has a packet that fails it, and
hypothesis draws advertisements for round trips and arbitrary or mutated bytes
that must come back as a reason, never an exception.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP, VRRPv3

from pktchain.packet import EtherType, IpProto, VrrpType
from pktchain.packet.headers import VRRP as VRRP_LAYOUT
from pktchain.packet.vrrp import (
    MAX_ADVER_INT,
    VRRP_MULTICAST,
    VRRP_MULTICAST_MAC,
    VrrpError,
    advertisement_frame,
    advertisement_packet,
    parse_advertisement,
    virtual_mac,
)

EXAMPLES = settings(max_examples=200, deadline=None)
VNET = bytes(10)
SOURCE = IPv4Address("192.0.2.2").packed
VIPS = [IPv4Address("192.0.2.254").packed, IPv4Address("192.0.2.253").packed]

vrids = st.integers(1, 255)
priorities = st.integers(0, 255)
intervals = st.integers(0, MAX_ADVER_INT)
ipv4s = st.integers(1, 0xDFFFFFFF).map(lambda n: n.to_bytes(4, "big"))
address_lists = st.lists(ipv4s, min_size=1, max_size=20)
adverts = st.tuples(vrids, priorities, intervals, address_lists)
"""(vrid, priority, max_adver_int, addresses)"""
GROUP = "224.0.0.18"


def scapy_advert(**fields: object) -> bytes:
    """An IPv4 VRRPv3 packet from scapy: TTL 255 to the group unless told otherwise."""
    ip = {"src": "192.0.2.2", "dst": "224.0.0.18", "ttl": 255}
    ip.update({k[3:]: v for k, v in fields.items() if k.startswith("ip_")})
    vrrp = {k: v for k, v in fields.items() if not k.startswith("ip_")}
    vrrp.setdefault("addrlist", ["192.0.2.254"])
    vrrp.setdefault("ipcount", len(vrrp["addrlist"]))  # type: ignore[arg-type]
    return bytes(IP(**ip) / VRRPv3(**vrrp))


def test_the_header_is_declared_once() -> None:
    assert VRRP_LAYOUT.size == 8
    assert int(IpProto.VRRP) == 112
    assert VrrpType.ADVERTISEMENT == 1
    wire = VRRP_LAYOUT.pack(version=3, type=1, vrid=7, priority=100, count=1, max_adver_int=100)
    assert wire == bytes.fromhex("3107640100640000")


def test_virtual_mac_is_00005e0001_and_the_vrid() -> None:
    assert virtual_mac(1).hex(":") == "00:00:5e:00:01:01"
    assert virtual_mac(255).hex(":") == "00:00:5e:00:01:ff"
    for bad in (0, 256):
        with pytest.raises(ValueError, match="vrid"):
            virtual_mac(bad)


def test_scapy_decodes_a_multicast_advertisement() -> None:
    frame = advertisement_frame(5, 100, 100, VIPS, source=SOURCE)
    assert frame[:10] == VNET
    ether = Ether(frame[10:])
    assert ether.src == "00:00:5e:00:01:05" and ether.dst == "01:00:5e:00:00:12"
    assert ether.type == EtherType.IPV4
    ip = ether[IP]
    assert (ip.src, ip.dst, ip.ttl, ip.proto) == ("192.0.2.2", "224.0.0.18", 255, 112)
    vrrp = ether[VRRPv3]
    assert (vrrp.version, vrrp.type, vrrp.vrid, vrrp.priority) == (3, 1, 5, 100)
    assert (vrrp.ipcount, vrrp.res, vrrp.adv) == (2, 0, 100)
    assert vrrp.addrlist == ["192.0.2.254", "192.0.2.253"]
    # The checksum scapy computes itself, over the IPv4 pseudo-header.
    again = IP(bytes(ip))
    del again.chksum
    del again[VRRPv3].chksum
    rebuilt = IP(bytes(again))
    assert rebuilt[VRRPv3].chksum == vrrp.chksum
    # And the IP header checksum.
    assert rebuilt.chksum == ip.chksum


def test_a_unicast_advertisement_leaves_the_destination_mac_to_the_sender() -> None:
    peer = IPv4Address("192.0.2.3").packed
    frame = advertisement_frame(5, 100, 100, VIPS, source=SOURCE, destination=peer)
    ether = Ether(frame[10:])
    assert ether.dst == "00:00:00:00:00:00" and ether[IP].dst == "192.0.2.3"
    assert ether[IP].ttl == 255
    chosen = advertisement_frame(
        5, 100, 100, VIPS, source=SOURCE, destination=peer, eth_dst=b"\2" * 6
    )
    assert Ether(chosen[10:]).dst == "02:02:02:02:02:02"
    assert parse_advertisement(frame, 24).ok


@EXAMPLES
@given(adverts, ipv4s, ipv4s)
def test_scapy_reads_what_is_built(
    advert: tuple[int, int, int, list[bytes]], source: bytes, dst: bytes
) -> None:
    vrid, priority, interval, addresses = advert
    packet = advertisement_packet(*advert, source=source, destination=dst)
    vrrp = IP(packet)[VRRPv3]
    assert (vrrp.version, vrrp.type, vrrp.vrid, vrrp.priority) == (3, 1, vrid, priority)
    assert (vrrp.ipcount, vrrp.adv) == (len(addresses), interval)
    assert [IPv4Address(a).packed for a in vrrp.addrlist] == addresses
    again = IP(bytes(IP(packet)))  # scapy's own checksum of the same fields
    del again[VRRPv3].chksum
    assert IP(bytes(again))[VRRPv3].chksum == vrrp.chksum


@EXAMPLES
@given(adverts, ipv4s, ipv4s)
def test_what_scapy_builds_is_read(
    advert: tuple[int, int, int, list[bytes]], source: bytes, dst: bytes
) -> None:
    vrid, priority, interval, addresses = advert
    listed = [str(IPv4Address(a)) for a in addresses]
    packet = bytes(
        IP(src=str(IPv4Address(source)), dst=str(IPv4Address(dst)), ttl=255)
        / VRRPv3(vrid=vrid, priority=priority, adv=interval, ipcount=len(listed), addrlist=listed)
    )
    parsed = parse_advertisement(packet)
    assert parsed.error is None and parsed.ok
    assert (parsed.vrid, parsed.priority, parsed.max_adver_int) == (vrid, priority, interval)
    assert (parsed.version, parsed.type, parsed.ttl) == (3, 1, 255)
    assert parsed.address_count == len(addresses) and parsed.addresses == tuple(addresses)
    assert (parsed.src, parsed.dst) == (source, dst)


@EXAMPLES
@given(vrids, priorities, intervals, address_lists, ipv4s)
def test_build_and_parse_round_trip(
    vrid: int, priority: int, interval: int, addresses: list[bytes], source: bytes
) -> None:
    frame = advertisement_frame(vrid, priority, interval, addresses, source=source)
    advert = parse_advertisement(memoryview(frame), 24)
    assert advert.ok
    assert (advert.vrid, advert.priority, advert.max_adver_int) == (vrid, priority, interval)
    assert advert.addresses == tuple(addresses)
    assert (advert.src, advert.dst, advert.ttl) == (source, VRRP_MULTICAST, 255)


def test_the_reserved_bits_are_sent_as_zero_and_ignored_on_receipt() -> None:
    packet = advertisement_packet(1, 100, 0xFFF, VIPS, source=SOURCE)
    assert packet[20 + 4] >> 4 == 0
    advert = parse_advertisement(scapy_advert(res=0xF, adv=100))
    assert advert.ok and advert.max_adver_int == 100


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (scapy_advert(ip_ttl=254), VrrpError.TTL),
        (scapy_advert(ip_ttl=1), VrrpError.TTL),
        (bytes(IP(src="192.0.2.2", dst="224.0.0.18", ttl=255) / VRRP(vrid=1)), VrrpError.VERSION),
        (scapy_advert(version=4), VrrpError.VERSION),
        (scapy_advert(type=2), VrrpError.TYPE),
        (scapy_advert(ipcount=2), VrrpError.TRUNCATED),
        (scapy_advert(ipcount=0), VrrpError.LENGTH),
        (scapy_advert(chksum=0x1234), VrrpError.CHECKSUM),
        (
            bytes(IP(src="192.0.2.2", dst="224.0.0.18", ttl=255, proto=112) / b"\x31\x01"),
            VrrpError.TRUNCATED,
        ),
        (bytes(IP(dst="224.0.0.18", ttl=255) / UDP()), VrrpError.NOT_VRRP),
        (
            bytes(IP(src="192.0.2.2", dst="224.0.0.18", ttl=255, flags="MF") / VRRPv3()),
            VrrpError.FRAGMENT,
        ),
        (b"\x45\x00", VrrpError.IP_MALFORMED),
        (b"", VrrpError.IP_MALFORMED),
    ],
    ids=[
        "ttl-254",
        "ttl-1",
        "version-2",
        "version-4",
        "type-2",
        "count-beyond-the-packet",
        "bytes-beyond-the-count",
        "checksum",
        "shorter-than-the-header",
        "udp",
        "fragment",
        "truncated-ip",
        "empty",
    ],
)
def test_each_check_of_the_packet_has_its_reason(packet: bytes, reason: VrrpError) -> None:
    advert = parse_advertisement(packet)
    assert advert.error is reason
    assert not advert.ok


def test_a_wrong_ip_header_checksum_is_its_own_reason() -> None:
    packet = bytearray(scapy_advert())
    packet[10] ^= 0xFF
    assert parse_advertisement(packet).error is VrrpError.IP_CHECKSUM


def test_a_bad_packet_still_names_its_vrid() -> None:
    advert = parse_advertisement(scapy_advert(vrid=42, ip_ttl=64))
    assert advert.error is VrrpError.TTL and advert.vrid == 42 and advert.ttl == 64


def test_the_checksum_covers_the_pseudo_header() -> None:
    packet = bytearray(scapy_advert())
    assert parse_advertisement(bytes(packet)).ok
    # Another destination, IP header checksum fixed: the VRRP checksum no longer holds.
    moved = IP(bytes(packet))
    moved.dst = "224.0.0.19"
    del moved.chksum
    assert parse_advertisement(bytes(moved)).error is VrrpError.CHECKSUM


def test_ip_options_are_skipped() -> None:
    from scapy.layers.inet import IPOption_Router_Alert

    packet = bytes(
        IP(src="192.0.2.2", dst="224.0.0.18", ttl=255, options=[IPOption_Router_Alert()])
        / VRRPv3(vrid=3, addrlist=["192.0.2.254"], ipcount=1)
    )
    advert = parse_advertisement(packet)
    assert advert.ok and advert.vrid == 3 and advert.addresses == (VIPS[0],)


def test_builders_name_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="addresses"):
        advertisement_packet(1, 100, 100, [], source=SOURCE)
    with pytest.raises(ValueError, match="max_adver_int"):
        advertisement_packet(1, 100, MAX_ADVER_INT + 1, VIPS, source=SOURCE)
    with pytest.raises(ValueError, match="priority"):
        advertisement_packet(1, 256, 100, VIPS, source=SOURCE)
    with pytest.raises(ValueError, match="vrid"):
        advertisement_packet(0, 100, 100, VIPS, source=SOURCE)
    with pytest.raises(ValueError, match="4-byte"):
        advertisement_packet(1, 100, 100, [b"\1" * 16], source=SOURCE)


def test_the_group_mac_maps_224_0_0_18() -> None:
    assert VRRP_MULTICAST_MAC.hex(":") == "01:00:5e:00:00:12"
    assert Ether(bytes(Ether() / IP(dst="224.0.0.18"))).dst == "01:00:5e:00:00:12"


@EXAMPLES
@given(st.binary(max_size=120), st.integers(-3, 130))
def test_arbitrary_bytes_never_raise(data: bytes, offset: int) -> None:
    advert = parse_advertisement(data, offset)
    assert advert.error is not None or (advert.version == 3 and advert.ttl == 255)


@EXAMPLES
@given(st.data())
def test_mutated_advertisements_never_raise(data: st.DataObject) -> None:
    packet = bytearray(advertisement_packet(9, 100, 100, VIPS, source=SOURCE))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(packet) - 1))
        packet[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    advert = parse_advertisement(bytes(packet[:cut]))
    if advert.ok:
        assert advert.addresses and len(advert.addresses) == advert.address_count


def test_gratuitous_arp_layout_is_what_scapy_reads() -> None:
    # The gratuitous ARP of a virtual address comes from the virtual MAC: RFC 5798 §6.4.2.
    from pktchain.functions.common.arp import ArpResponder

    frame = ArpResponder(virtual_mac(5), (), ()).announcement(VIPS[0])
    arp = Ether(frame)[ARP]
    assert Ether(frame).src == "00:00:5e:00:01:05" and Ether(frame).dst == "ff:ff:ff:ff:ff:ff"
    assert (arp.op, arp.hwsrc, arp.psrc, arp.pdst) == (
        1,
        "00:00:5e:00:01:05",
        "192.0.2.254",
        "192.0.2.254",
    )
