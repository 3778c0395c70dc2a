"""The learning switch's datapath and MAC table, driven with in-memory ports."""

from __future__ import annotations

from collections import deque

import pytest

from pktchain.node.datapath import BATCH, Datapath
from pktchain.node.ports import Port, PortKind
from pktchain.node.switch import MacTable
from pktchain.node.tun import VNET_HDR_LEN

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


class MemoryPort(Port):
    """A port whose wire is two Python queues."""

    def __init__(self, name: str, *, refuse: OSError | None = None) -> None:
        self.inbox: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self._refuse = refuse
        super().__init__(
            name=name,
            kind=PortKind.TAP,
            fd=-1,
            recv=self._recv,
            send=self._send,
            netns=None,
            ifname=name,
        )

    def _recv(self) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def _send(self, data: bytes) -> int:
        if self._refuse is not None:
            raise self._refuse
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        pass


def switch_with(*ports: MemoryPort, check=lambda _f: None, aging: float = 300.0) -> Datapath:  # type: ignore[no-untyped-def]
    datapath = Datapath(MacTable(aging=aging, max_entries=4), check)
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
    assert dp.floods == 1
    assert p1.rx_packets == 2 and p2.tx_packets == 2 and p2.tx_bytes == 2 * (len(first) - 10)


def test_broadcast_goes_everywhere_but_the_ingress_port() -> None:
    p1, p2, p3 = MemoryPort("p1"), MemoryPort("p2"), MemoryPort("p3")
    dp = switch_with(p1, p2, p3)
    bcast = frame(BROADCAST, mac(1), ethertype=0x0806)
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


def test_frame_check_reason_becomes_the_drop_reason() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2, check=lambda f: "ipv4-total-length" if f[-1:] == b"!" else None)
    deliver(dp, p1, frame(BROADCAST, mac(1), payload=b"!" * 46), frame(BROADCAST, mac(1)))
    assert p1.drops == {"ipv4-total-length": 1}
    assert len(p2.sent) == 1


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
    assert dp.macs.lookup(bytes.fromhex("020000000005")) is p1
    deliver(dp, p2, frame(BROADCAST, mac(5)), now=1.0)
    assert dp.macs.lookup(bytes.fromhex("020000000005")) is p2
    assert dp.macs.stats.moved == 1
    deliver(dp, p2, frame(BROADCAST, mac(5)), now=8.0)  # refresh
    assert dp.macs.expire(15.0) == 0
    assert dp.macs.expire(18.5) == 1
    assert dp.macs.lookup(bytes.fromhex("020000000005")) is None


def test_table_is_bounded_and_forwarding_goes_on_when_full() -> None:
    p1, p2 = MemoryPort("p1"), MemoryPort("p2")
    dp = switch_with(p1, p2)  # max_entries=4
    deliver(dp, p1, *(frame(BROADCAST, mac(n)) for n in range(1, 11)))
    assert len(dp.macs.entries) == 4
    assert dp.macs.stats.full == 6
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
    assert dp.macs.lookup(bytes.fromhex("020000000002")) is None
    assert [p.index for p in dp.ports] == [0, 1]
    deliver(dp, p1, frame(mac(2), mac(1)))
    assert len(p3.sent) == 2  # flooded again, not sent to the removed port
    assert p2.sent == []


def test_mac_table_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="aging"):
        MacTable(aging=0)
    with pytest.raises(ValueError, match="size"):
        MacTable(max_entries=0)
