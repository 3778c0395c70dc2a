"""The NSH-aware function SDK: NshPacket, NshFunction, NshDriver, and the stamp example.

Frames are built with pktchain's builders and the answers read with scapy's
NSH and VXLAN-GPE dissectors; malformed input of every kind is a counted drop,
and hypothesis feeds the driver arbitrary bytes to show that nothing raises.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.contrib import nsh as scapy_nsh
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from pktchain.functions.nshstamp import NshStamp
from pktchain.functions.sdk import ConfigError, FunctionLoadError
from pktchain.functions.sdk.nsh import (
    NshDriver,
    NshDrop,
    NshFunction,
    NshPacket,
    NshVerdict,
    make_nsh_function,
    nsh_function_class,
)
from pktchain.packet import (
    ContextTlv,
    VirtioNetHdr,
    build_nsh,
    build_vxlan_gpe,
    context_tlv,
    encode_context_tlvs,
    offload_tlv,
    path_tlv,
)

HERE, THERE = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
INNER = bytes(
    Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
    / IP(src="10.0.0.1", dst="10.0.0.2")
    / TCP(sport=40000, dport=80)
    / Raw(b"x" * 20)
)
UNKNOWN = ContextTlv(0x0200, 0x07, b"abc", unassigned=True)


def ethernet(nsh: bytes, inner: bytes = INNER) -> bytes:
    return bytes(Ether(src=THERE, dst=HERE, type=0x894F)) + nsh + inner


def md2(si: int = 255, tlvs: bytes = b"", spi: int = 10) -> bytes:
    return build_nsh(spi, si, ttl=40, tlvs=tlvs)


def answer_of(frame: bytes) -> Ether:
    packet = Ether(frame)
    assert (packet.src, packet.dst, packet.type) == (HERE, THERE, 0x894F)
    return packet


# --------------------------------------------------------------------------- NshPacket


def test_decode_encode_round_trip_keeps_unknown_tlvs() -> None:
    tlvs = path_tlv([1, 2]) + encode_context_tlvs([UNKNOWN])
    wire = md2(200, tlvs) + INNER
    packet = NshPacket.decode(wire)
    assert isinstance(packet, NshPacket)
    assert (packet.spi, packet.si, packet.ttl, packet.md_type) == (10, 200, 40, 2)
    assert packet.path == (1, 2)
    assert packet.tlvs[1] == UNKNOWN
    assert packet.inner == INNER
    assert packet.flow() is not None
    assert packet.encode() == wire
    assert len(packet) == len(wire)


def test_md1_context_is_carried_and_takes_no_tlvs() -> None:
    context = bytes(range(16))
    wire = build_nsh(3, 9, md_type=1, context=context) + INNER
    packet = NshPacket.decode(wire)
    assert isinstance(packet, NshPacket)
    assert packet.context == context
    assert packet.encode() == wire
    with pytest.raises(ValueError, match="MD type 1"):
        packet.add_tlv(0xFFF6, 0x80, b"1234")


def test_add_tlv_until_the_nsh_is_full() -> None:
    packet = NshPacket(5, 255, inner=INNER)
    added = 0
    while packet.add_tlv(0xFFF6, 0x80, bytes(120)):
        added += 1
    assert added == 1  # 8 + 124 = 132; a second would make 256
    assert packet.add_tlv(0xFFF6, 0x81, bytes(100))  # 132 + 104 = 236
    assert not packet.add_tlv(0xFFF6, 0x82, bytes(16))  # 236 + 20 > 252
    assert packet.add_tlv(0xFFF6, 0x82, bytes(12))  # exactly 252
    layer = Ether(ethernet(packet.encode(), b""))[scapy_nsh.NSH]
    assert layer.length == 63
    with pytest.raises(ValueError, match="127"):
        packet.add_tlv(1, 1, bytes(128))
    with pytest.raises(ValueError, match="out of range"):
        packet.add_tlv(1 << 16, 1)


def test_offload_metadata_is_read() -> None:
    header = VirtioNetHdr(1, 1, 66, 1448, 34, 16)
    packet = NshPacket.decode(md2(tlvs=offload_tlv(header.pack())) + INNER)
    assert isinstance(packet, NshPacket)
    assert packet.offload == header
    assert packet.path is None


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\0\0\0", "truncated-nsh"),
        (bytes([0x40]) + md2()[1:], "nsh-version"),
        (bytes([0x0F, 0xC6, 0x00, 0x03]) + bytes(4), "nsh-md-type"),
        (bytes([0x0F, 0xC2, 0x0F, 0x03]) + bytes(4), "unsupported-md-type"),
        (build_nsh(1, 1, md_type=1)[:20], "truncated-nsh"),
        (md2(tlvs=bytes.fromhex("fff6807f 00000000")), "nsh-tlv"),
    ],
)
def test_decode_says_what_is_malformed(wire: bytes, reason: str) -> None:
    assert NshPacket.decode(wire) == reason


# --------------------------------------------------------------------------- the driver


def test_stamp_over_ethernet_answers_the_sender_with_si_decremented() -> None:
    driver = NshDriver(NshStamp.from_config({"name": "fw-1"}))
    answer = driver.receive_ethernet(ethernet(md2(200, encode_context_tlvs([UNKNOWN]))), 0.0)
    assert answer is not None
    layer = answer_of(answer)[scapy_nsh.NSH]
    assert (layer.spi, layer.si, layer.ttl, layer.mdtype) == (10, 199, 40, 2)
    classes = [(t.class_, t.type, t.reserved, t.length) for t in layer.vlch]
    assert classes == [(0x0200, 0x07, 1, 3), (0xFFF6, 0x81, 0, 4)]
    stamp = NshPacket.decode(bytes(layer))
    assert isinstance(stamp, NshPacket)
    assert stamp.tlvs[-1].value == b"fw-1"
    assert bytes(layer.payload) == INNER
    stats = driver.stats()
    assert stats["in"] == {"packets": 1, "bytes": 14 + 16 + len(INNER)}
    assert stats["out"]["packets"] == 1
    assert stats["status"]["counters"]["stamped"] == 1


def test_md1_goes_through_with_its_context() -> None:
    context = b"0123456789abcdef"
    driver = NshDriver(NshStamp())
    answer = driver.receive_ethernet(ethernet(build_nsh(4, 3, md_type=1, context=context)), 0.0)
    assert answer is not None
    layer = answer_of(answer)[scapy_nsh.NSH]
    assert (layer.si, layer.mdtype, layer.context_header) == (2, 1, context)
    assert bytes(layer.payload) == INNER
    assert driver.function.counters["md1-unstamped"] == 1


def test_over_vxlan_gpe_the_header_comes_back_as_it_came() -> None:
    gpe = build_vxlan_gpe(vni=0)
    driver = NshDriver(NshStamp())
    answer = driver.receive_gpe(gpe + md2(7) + INNER, 0.0)
    assert answer is not None
    assert answer[:8] == gpe
    packet = UDP(bytes(UDP(sport=4790, dport=4790) / Raw(answer)))
    assert (packet[VXLAN].NextProtocol, packet[scapy_nsh.NSH].si) == (4, 6)
    assert bytes(packet[scapy_nsh.NSH].payload) == INNER


def test_malformed_input_is_counted_by_reason() -> None:
    driver = NshDriver(NshStamp())
    assert driver.receive_ethernet(b"\x02" * 10, 0.0) is None
    assert driver.receive_ethernet(bytes(Ether(type=0x0800)) + md2(), 0.0) is None
    assert driver.receive_ethernet(ethernet(md2()[:5], b""), 0.0) is None
    assert driver.receive_ethernet(ethernet(md2(si=0)), 0.0) is None
    assert driver.receive_gpe(b"\0" * 4, 0.0) is None
    assert driver.receive_gpe(build_vxlan_gpe(3) + INNER, 0.0) is None
    assert driver.stats()["dropped"] == {
        "gpe-not-nsh": 1,
        "not-nsh": 1,
        "service-index-exhausted": 1,
        "truncated-ethernet": 1,
        "truncated-nsh": 1,
        "truncated-vxlan-gpe": 1,
    }
    assert driver.packets_in == 6
    assert driver.packets_out == 0


@given(st.binary(max_size=300))
def test_no_input_makes_the_driver_raise(data: bytes) -> None:
    driver = NshDriver(NshStamp())
    driver.receive_ethernet(data, 0.0)
    driver.receive_ethernet(ethernet(data, b""), 0.0)
    driver.receive_gpe(build_vxlan_gpe() + data, 0.0)
    assert driver.packets_in == 3
    assert driver.packets_out + sum(driver.drops.values()) == 3


class Reclassify(NshFunction):
    def process(self, packet: NshPacket, now: float) -> NshVerdict:
        if packet.spi == 1:
            packet.spi, packet.si = 99, 255
            return packet
        if packet.spi == 2:
            return NshDrop("policy")
        if packet.spi == 3:
            return None
        if packet.spi == 4:
            packet.tlvs.extend([ContextTlv(1, 1, bytes(120))] * 3)
            return packet
        raise RuntimeError("boom")


def test_verdicts_errors_and_reclassification() -> None:
    errors: list[str] = []
    driver = NshDriver(Reclassify(), on_error=lambda kind, message: errors.append(kind))
    answer = driver.receive_ethernet(ethernet(md2(spi=1, si=200)), 0.0)
    assert answer is not None
    layer = Ether(answer)[scapy_nsh.NSH]
    assert (layer.spi, layer.si) == (99, 255)  # reclassified: sent as set
    for spi in (2, 3, 4, 5):
        assert driver.receive_ethernet(ethernet(md2(spi=spi)), 0.0) is None
    assert dict(driver.drops) == {
        "policy": 1,
        "dropped": 1,
        "encode-error": 1,
        "function-error": 1,
    }
    assert driver.function.counters["policy"] == 1
    assert errors == ["ValueError", "RuntimeError"]
    assert driver.stats()["errors"] == {"ValueError": 1, "RuntimeError": 1}


def test_lost_answers_move_from_out_to_dropped() -> None:
    driver = NshDriver(NshStamp())
    answer = driver.receive_ethernet(ethernet(md2()), 0.0)
    assert answer is not None
    driver.lost("send-emsgsize", len(answer))
    assert driver.stats()["out"] == {"packets": 0, "bytes": 0}
    assert driver.drops["send-emsgsize"] == 1


# --------------------------------------------------------------------------- loading


def test_loading_functions_by_name() -> None:
    assert nsh_function_class("stamp") is NshStamp
    assert nsh_function_class(f"{__name__}:Reclassify") is Reclassify
    assert make_nsh_function("stamp", {"name": "a"}).config.name == "a"  # type: ignore[attr-defined]
    with pytest.raises(FunctionLoadError, match="built-in"):
        nsh_function_class("nope")
    with pytest.raises(FunctionLoadError, match="not an NshFunction"):
        nsh_function_class("pktchain.functions.mirror:Mirror")
    with pytest.raises(ConfigError) as caught:
        make_nsh_function("stamp", {"name": "x" * 128, "colour": 1})
    assert {error.field for error in caught.value.errors} == {"name", "colour"}


def test_context_tlv_and_add_tlv_agree() -> None:
    packet = NshPacket(1, 1)
    assert packet.add_tlv(0xFFF6, 0x80, b"\0\0\0\x05")
    assert packet.encode()[8:] == context_tlv(0xFFF6, 0x80, b"\0\0\0\x05")
