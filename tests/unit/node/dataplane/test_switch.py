"""The learning switch's datapath and MAC table, driven with in-memory ports."""

from __future__ import annotations

import pytest

from pktchain.linux.tuntap import VNET_HDR_LEN
from pktchain.node.dataplane.datapath import BATCH, Datapath
from pktchain.node.dataplane.switch import STATIC, MacTable
from support.memports import MemoryPort

VNET = bytes(VNET_HDR_LEN)
BROADCAST = "ff:ff:ff:ff:ff:ff"


def mac(n: int) -> str:
    return f"02:00:00:00:00:{n:02x}"


def frame(dst: str, src: str, ethertype: int = 0x88B5, payload: bytes = b"x" * 46) -> bytes:
    return (
        VNET
        + bytes.fromhex(dst.replace(":", ""))
        + bytes.fromhex(src.replace(":", ""))
        + ethertype.to_bytes(2, "big")
        + payload
    )


def switch_with(*ports: MemoryPort, aging: float = 300.0) -> Datapath:
    datapath = Datapath(mac_aging=aging, mac_table_size=4)
    for port in ports:
        datapath.add_port(port)
    return datapath


def deliver(datapath: Datapath, port: MemoryPort, *frames: bytes, now: float = 0.0) -> None:
    port.inbox.extend(frames)
    datapath.now = now
    while port.inbox:
        datapath.drain(port)


def test_unknown_unicast_is_flooded_then_learned_addresses_are_switched() -> None:
    p1, p2, p3 = MemoryPort("p1"), MemoryPort("p2"), MemoryPort("p3")
    dp = switch_with(p1, p2, p3)
    first = frame(mac(2), mac(1))
    deliver(dp, p1, first)
    assert p2.sent == [first] and p3.sent == [first] and p1.sent == []
    reply = frame(mac(1), mac(2))
    deliver(dp, p2, reply)
    assert p1.sent == [reply] and p3.sent == [first]  # learned: not flooded
    again = frame(mac(2), mac(1), payload=b"y" * 46)
    deliver(dp, p1, again)
    assert p2.sent == [first, again] and p3.sent == [first]
    assert dp.network().floods == 1
    assert p1.rx_packets == 2 and p2.tx_packets == 2 and p2.tx_bytes == 2 * (len(first) - 10)


def test_broadcast_goes_everywhere_but_the_ingress_port() -> None:
    p1, p2, p3 = MemoryPort("p1"), MemoryPort("p2"), MemoryPort("p3")
    dp = switch_with(p1, p2, p3)
    arp_request = bytes.fromhex("00010800060400010200000000010a000001" + "00" * 6 + "0a000002")
    bcast = frame(BROADCAST, mac(1), ethertype=0x0806, payload=arp_request + bytes(18))
    deliver(dp, p1, bcast)
    assert p1.sent == [] and p2.sent == [bcast] and p3.sent == [bcast]


def test_frame_for_the_ingress_port_is_dropped_with_a_reason() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)
    deliver(dp, p1, frame(BROADCAST, mac(1)), frame(BROADCAST, mac(3)))
    deliver(dp, p1, frame(mac(3), mac(1)))
    assert p1.drops["same-port"] == 1
    assert len(p2.sent) == 2


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (VNET + b"\x01\x02\x03", "runt"),
        (b"", "runt"),
        (frame(mac(2), "01:00:5e:00:00:01"), "bad-src-mac"),
        (frame(mac(2), "00:00:00:00:00:00"), "bad-src-mac"),
    ],
)
def test_bad_frames_are_counted_drops(raw: bytes, reason: str) -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)
    good = frame(BROADCAST, mac(1))
    deliver(dp, p1, raw, good)
    assert p1.drops == {reason: 1}
    assert p2.sent == [good]  # traffic after the bad frame still flows


def test_malformed_ip_is_dropped_under_the_codec_reason_and_others_switched() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)
    udp = bytes.fromhex("0001000200080000")  # ports 1 -> 2, length 8, no checksum
    ipv4 = bytes.fromhex("4500001c000100004011") + bytes(10) + udp  # a 28-byte datagram
    lying = bytearray(ipv4)
    lying[2:4] = (600).to_bytes(2, "big")  # total length beyond the frame
    good = frame(BROADCAST, mac(1), 0x0800, ipv4 + bytes(18))
    bad = frame(BROADCAST, mac(1), 0x0800, bytes(lying) + bytes(18))
    other = frame(BROADCAST, mac(1), 0x88B5, b"\xff" * 46)  # unknown EtherType: not judged
    deliver(dp, p1, bad, good, other)
    assert p1.drops == {"truncated-ipv4": 1}
    assert p2.sent == [good, other]


def test_frame_check_can_be_turned_off() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = Datapath(check_frames=False)
    dp.add_port(p1)
    dp.add_port(p2)
    lying = frame(BROADCAST, mac(1), 0x0800, bytes.fromhex("4500ffff") + bytes(42))
    deliver(dp, p1, lying)
    assert p1.drops == {} and p2.sent == [lying]


def test_transmit_refused_by_the_kernel_is_counted_on_the_output_port() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2", refuse=OSError(105, "No buffer space"))
    dp = switch_with(p1, p2)
    deliver(dp, p1, frame(BROADCAST, mac(1)))
    deliver(dp, p2, frame(BROADCAST, mac(2)))  # p2 learned
    deliver(dp, p1, frame(mac(2), mac(1)))
    assert p2.tx_errors == {"ENOBUFS": 2}
    assert p2.tx_packets == 0


def test_station_move_and_aging() -> None:
    p1, p2, p3 = MemoryPort("p1"), MemoryPort("p2"), MemoryPort("p3")
    dp = switch_with(p1, p2, p3, aging=10.0)
    deliver(dp, p1, frame(BROADCAST, mac(5)), now=0.0)
    assert dp.network().macs.lookup(bytes.fromhex("020000000005")) is p1
    deliver(dp, p2, frame(BROADCAST, mac(5)), now=1.0)
    assert dp.network().macs.lookup(bytes.fromhex("020000000005")) is p2
    assert dp.network().macs.stats.moved == 1
    deliver(dp, p2, frame(BROADCAST, mac(5)), now=8.0)  # refresh
    assert dp.network().macs.expire(15.0) == 0
    assert dp.network().macs.expire(18.5) == 1
    assert dp.network().macs.lookup(bytes.fromhex("020000000005")) is None


def test_table_is_bounded_and_forwarding_goes_on_when_full() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)  # max_entries=4
    deliver(dp, p1, *(frame(BROADCAST, mac(n)) for n in range(1, 11)))
    assert len(dp.network().macs.entries) == 4
    assert dp.network().macs.stats.full == 6
    assert len(p2.sent) == 10


def test_drain_reads_at_most_one_batch() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)
    p1.inbox.extend(frame(BROADCAST, mac(1)) for _ in range(BATCH + 5))
    assert dp.drain(p1) == BATCH
    assert dp.drain(p1) == 5
    assert dp.drain(p1) == 0


def test_removing_a_port_forgets_its_addresses() -> None:
    p1, p2, p3 = MemoryPort("p1"), MemoryPort("p2"), MemoryPort("p3")
    dp = switch_with(p1, p2, p3)
    deliver(dp, p2, frame(BROADCAST, mac(2)))
    dp.remove_port(p2)
    assert dp.network().macs.lookup(bytes.fromhex("020000000002")) is None
    deliver(dp, p1, frame(mac(2), mac(1)))
    assert len(p3.sent) == 2  # flooded again, not sent to the removed port
    assert p2.sent == []


def test_mac_table_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="aging"):
        MacTable(aging=0)
    with pytest.raises(ValueError, match="size"):
        MacTable(max_entries=0)


def test_networks_are_separate_broadcast_domains() -> None:
    a1, a2, b1, b2 = (MemoryPort(n) for n in ("a1", "a2", "b1", "b2"))
    dp = Datapath()
    dp.add_port(a1, "inside")
    dp.add_port(a2, "inside")
    dp.add_port(b1, "outside")
    dp.add_port(b2, "outside")
    deliver(dp, b1, frame(BROADCAST, mac(9)))  # b1's host is learned in "outside"
    assert b2.sent and not a1.sent and not a2.sent
    deliver(dp, a1, frame(BROADCAST, mac(1)))
    assert a2.sent and len(b1.sent) == 0 and len(b2.sent) == 1
    # An address learned in the other network is unknown here: flooded inside only.
    deliver(dp, a1, frame(mac(9), mac(1)))
    assert len(a2.sent) == 2 and b1.sent == [] and len(b2.sent) == 1
    assert dp.network("inside").macs.lookup(bytes.fromhex("020000000009")) is None
    assert dp.network("outside").macs.lookup(bytes.fromhex("020000000009")) is b1


def test_a_static_entry_seen_again_on_its_port_stays_static() -> None:
    table: MacTable[str] = MacTable(aging=300.0)
    table.learn(b"\x02\x00\x00\x00\x00\x09", "router", STATIC)
    table.learn(b"\x02\x00\x00\x00\x00\x09", "router", 5.0)  # its own frame
    table.learn(b"\x02\x00\x00\x00\x00\x09", "host", 6.0)  # a claim from elsewhere
    assert table.lookup(b"\x02\x00\x00\x00\x00\x09") == "router"
    assert table.expire(1_000_000.0) == 0
