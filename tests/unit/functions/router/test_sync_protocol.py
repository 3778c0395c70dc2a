"""The state sync protocol in memory: snapshot, changes, acknowledgements, resends, resyncs.

A master router and a backup router (tests/support/hasync.py) are joined by
:class:`~support.hasync.Channel`, which carries each frame whole and may drop,
repeat or delay it; a virtual clock moves a millisecond per step. The backup
must always end with the master's view.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pktchain.functions.router.function import Router
from pktchain.functions.router.sync import (
    ReceiverSettings,
    SenderSettings,
    SyncReceiver,
    SyncSender,
)
from pktchain.functions.router.sync.wire import (
    LENGTH,
    Message,
    MessageType,
    encode_message,
)
from support.hasync import (
    H1,
    H2,
    SECRET,
    Channel,
    Fate,
    external_port,
    frames,
    lossy,
    make_router,
    outbound_tcp,
    outbound_udp,
    reply_to,
    send,
)

OTHER_SECRET = b"another secret, also 32 bytes..."


def pair(
    fate: Fate | None = None,
    sender: SenderSettings | None = None,
    receiver: ReceiverSettings | None = None,
    **router: object,
) -> Channel:
    master, backup = make_router(**router), make_router(seed=99)
    channel = Channel(
        SyncSender(master, SECRET, sender, rng=random.Random(1)),
        SyncReceiver(backup, SECRET, receiver, rng=random.Random(2)),
        master,
        backup,
    )
    if fate is not None:
        channel.fate = fate
    return channel


def churn(channel: Channel, count: int, first: int = 10000) -> None:
    """``count`` new UDP sessions on the master, and a TCP connection opened."""
    master = channel.master
    for sport in range(first, first + count):
        external_port(master, outbound_udp(H1 if sport % 2 else H2, sport, 53), channel.now)


def test_a_connected_backup_gets_the_snapshot_then_the_changes() -> None:
    channel = pair()
    churn(channel, 300)  # before the backup connects: in the snapshot (3 chunks)
    channel.connect()
    channel.run_until(channel.converged)
    receiver, sender = channel.receiver.counters(), channel.sender.counters()
    assert receiver["snapshots-completed"] == 1 and channel.receiver.in_sync
    assert sender["records-sent"] == 300 + 2 + 2  # sessions, two hosts and their forwards
    assert receiver["messages-applied"] == 4  # three chunks and END
    churn(channel, 50, first=20000)
    tcp = external_port(channel.master, outbound_tcp(H1, 41000, 80, "S"), channel.now)
    send(channel.master, ("wan", reply_to(tcp, proto="tcp", sport=80)), channel.now)
    channel.run_until(channel.converged)
    lag = channel.sender.lag.summary()
    # The TCP session opened and got established between two collections: one record.
    assert lag["changes"] == 51 and lag["p99"] is not None
    # Collected within one flush interval, acknowledged within the ack delay.
    assert lag["p99"] <= 0.005 + 0.005 + 0.003
    assert channel.sender.counters().get("resent", 0) == 0
    assert not any(name.startswith("refused-") for name in receiver)


def test_acknowledgements_are_cumulative_and_batched() -> None:
    channel = pair(receiver=ReceiverSettings(ack_every=8, ack_delay=0.05))
    channel.connect()
    channel.run_until(channel.converged)
    acks = channel.receiver.counters()["acks-sent"]
    # One message a step: ack after 8 messages, not after each.
    for first in range(30000, 30000 + 16 * 400, 400):
        churn(channel, 129, first=first)  # two messages each
        channel.run(6)
    channel.run_until(channel.converged)
    sent = channel.receiver.counters()["acks-sent"] - acks
    assert 3 <= sent <= 8  # 32 messages: four batches of eight, plus answers to ALIVEs


def test_a_lost_message_is_asked_for_and_sent_again() -> None:
    dropped: list[int] = []

    def drop_first_changes(direction: str, frame: bytes) -> list[int]:
        if direction == "down" and frame[5] == MessageType.CHANGES and not dropped:
            dropped.append(1)
            return []
        return [0]

    channel = pair(drop_first_changes)
    channel.connect()
    channel.run_until(channel.converged)
    churn(channel, 200)  # two CHANGES messages: the first is lost, the second shows the gap
    channel.run_until(channel.converged)
    assert dropped
    assert channel.receiver.counters()["nacks-sent"] >= 1
    assert channel.sender.counters()["nacks-received"] >= 1
    assert channel.sender.counters()["resent"] >= 1


def test_a_lost_tail_is_found_by_alive_or_resent_after_the_timeout() -> None:
    lost: list[int] = []

    def drop_last(direction: str, frame: bytes) -> list[int]:
        if direction == "down" and frame[5] == MessageType.CHANGES and not lost:
            lost.append(1)
            return []
        return [0]

    channel = pair(drop_last)
    channel.connect()
    channel.run_until(channel.converged)
    churn(channel, 5)  # one message, lost, and nothing after it
    ticks = channel.run_until(channel.converged)
    assert lost and channel.sender.counters()["resent"] == 1
    assert ticks * channel.tick <= 0.3  # by ALIVE's NACK (0.2 s) or the resend timeout


def test_duplicates_are_refused_and_acknowledged_again() -> None:
    def twice(direction: str, frame: bytes) -> list[int]:
        return [0, 1] if direction == "down" else [0]

    channel = pair(twice)
    churn(channel, 10)
    channel.connect()
    channel.run_until(channel.converged)
    churn(channel, 10, first=20000)
    channel.run_until(channel.converged)
    counters = channel.receiver.counters()
    assert counters["refused-duplicate"] >= 4
    assert counters["messages-applied"] == 3  # SNAPSHOT, END, CHANGES, each once


def test_reordered_messages_are_held_and_applied_in_order() -> None:
    def swap(direction: str, frame: bytes) -> list[int]:
        # Every other CHANGES message arrives five steps late.
        if direction == "down" and frame[5] == MessageType.CHANGES:
            seq = int.from_bytes(frame[16:24], "big")
            return [5] if seq % 2 else [0]
        return [0]

    channel = pair(swap)
    channel.connect()
    channel.run_until(channel.converged)
    for first in range(10000, 10600, 150):
        churn(channel, 150, first=first)
        channel.step()
    channel.run_until(channel.converged)
    assert channel.receiver.counters()["held-early"] >= 2


def test_reconnect_starts_a_new_stream_whose_snapshot_removes_what_ended() -> None:
    channel = pair()
    churn(channel, 20)
    channel.connect()
    channel.run_until(channel.converged)
    old = channel.sender.data_to_send()
    assert old == b""
    stale_frame = encode_message(SECRET, Message(MessageType.ALIVE, 1, 1))
    channel.disconnect()
    # While apart: sessions end and others open; the master notes nothing.
    channel.master.remove_host(H2)
    churn(channel, 20, first=50000)
    assert not channel.master.changes_pending()
    channel.connect()
    channel.run_until(channel.converged)
    counters = channel.receiver.counters()
    assert counters["streams"] == 2 and counters["swept"] >= 1
    assert channel.sender.counters()["resyncs"] == 2
    channel.receiver.on_bytes(stale_frame, channel.now)
    assert channel.receiver.counters()["refused-unknown-stream"] == 1


def test_a_start_for_another_connection_is_refused() -> None:
    channel = pair()
    channel.connect()
    hello = frames(channel.receiver.data_to_send())
    channel.sender.on_bytes(b"".join(hello), channel.now)
    start = channel.sender.data_to_send()
    channel.receiver.connection_lost(channel.now)
    channel.receiver.connection_made(channel.now)  # a new nonce
    channel.receiver.on_bytes(start, channel.now)
    assert channel.receiver.counters()["refused-stale-nonce"] == 1
    assert not channel.receiver.in_sync


def test_a_window_without_progress_ends_in_a_new_stream() -> None:
    blocked = [False]

    def block_acks(direction: str, frame: bytes) -> list[int]:
        return [] if blocked[0] and direction == "up" else [0]

    channel = pair(block_acks, sender=SenderSettings(window=4, stall_timeout=0.5))
    channel.connect()
    channel.run_until(channel.converged)
    blocked[0] = True
    churn(channel, 2000)  # sixteen messages, four at a time
    channel.run(300)
    assert channel.sender.unacknowledged == 4  # the window bounds what waits
    assert channel.master.changes_pending()  # the rest waits, coalesced, in the router
    channel.run(300)
    assert channel.sender.counters()["stalls"] >= 1
    blocked[0] = False
    channel.run_until(channel.converged)
    assert channel.sender.counters()["resyncs"] >= 2


def test_frames_under_another_secret_are_refused() -> None:
    master, backup = make_router(), make_router(seed=99)
    channel = Channel(
        SyncSender(master, SECRET), SyncReceiver(backup, OTHER_SECRET), master, backup
    )
    churn(channel, 5)
    channel.connect()
    channel.run(50)
    assert channel.sender.counters()["refused-bad-mac"] >= 1  # the HELLO
    assert channel.receiver.counters().get("messages-applied", 0) == 0
    assert backup.export_state() != master.export_state()


def test_reflected_frames_are_refused_as_the_wrong_direction() -> None:
    channel = pair()
    channel.connect()
    hello = channel.receiver.data_to_send()
    channel.receiver.on_bytes(hello, channel.now)
    assert channel.receiver.counters()["refused-wrong-direction"] == 1
    channel.sender.on_bytes(hello, channel.now)
    start = channel.sender.data_to_send()  # START, SNAPSHOT, END
    channel.sender.on_bytes(start, channel.now)
    assert channel.sender.counters()["refused-wrong-direction"] == len(frames(start)) == 3


def test_an_oversized_frame_closes_the_connection_and_a_new_one_resyncs() -> None:
    channel = pair(receiver=ReceiverSettings(max_frame=4096))
    churn(channel, 10)
    channel.connect()
    channel.run_until(channel.converged)
    channel.receiver.on_bytes(LENGTH.pack(4097) + b"x" * 100, channel.now)
    assert channel.receiver.counters()["refused-too-large"] == 1
    assert channel.receiver.wants_close
    channel.disconnect()
    channel.connect()
    churn(channel, 10, first=20000)
    channel.run_until(channel.converged)
    assert not channel.receiver.wants_close


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_garbage_is_counted_and_never_raises(data: bytes) -> None:
    channel = pair()
    channel.connect()
    for endpoint in (channel.receiver, channel.sender):
        endpoint.on_bytes(data, channel.now)
        endpoint.on_timer(channel.now + 10)
    refused = sum(
        value
        for endpoint in (channel.receiver, channel.sender)
        for name, value in endpoint.counters().items()
        if name.startswith("refused-")
    )
    assert refused >= 1 or len(data) < 4 + 20 + 32


def test_a_silent_peer_is_let_go() -> None:
    channel = pair(lambda direction, frame: [])
    channel.connect()
    channel.run(2100)
    assert channel.sender.wants_close and channel.receiver.wants_close


def test_takeover_stops_applying_and_adopts_the_copies() -> None:
    channel = pair()
    churn(channel, 10)
    channel.connect()
    channel.run_until(channel.converged)
    result = channel.receiver.takeover(channel.now)
    assert result.sessions == 10 and channel.receiver.wants_close
    churn(channel, 10, first=20000)
    channel.run(20)
    assert channel.receiver.counters()["refused-taken-over"] >= 1
    assert len(channel.backup.nat_sessions()) == 10


def test_settings_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="window: 0"):
        SenderSettings(window=0)
    with pytest.raises(ValueError, match="records_per_message"):
        SenderSettings(records_per_message=1000)
    with pytest.raises(ValueError, match=r"ack_every: 2\.5"):
        ReceiverSettings(ack_every=2.5)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    drop=st.floats(0, 0.3),
    duplicate=st.floats(0, 0.3),
    delay=st.floats(0, 0.3),
    bursts=st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=6),
)
def test_a_lossy_channel_converges_to_the_masters_view(
    seed: int, drop: float, duplicate: float, delay: float, bursts: list[tuple[int, bool]]
) -> None:
    rng = random.Random(seed)
    channel = pair(lossy(rng, drop, duplicate, delay), SenderSettings(window=16))
    churn(channel, 30)
    channel.connect()
    port = 40000
    for count, end_some in bursts:
        churn(channel, count, first=port)
        port += count
        if end_some:  # a TCP connection opened and reset, a forward added and removed
            tcp = external_port(channel.master, outbound_tcp(H2, port, 80, "S"), channel.now)
            channel.run(rng.randrange(10))
            send(channel.master, ("wan", reply_to(tcp, proto="tcp", sport=80)), channel.now)
            external_port(channel.master, outbound_tcp(H2, port, 80, "R"), channel.now)
            channel.master.add_port_forward("udp", 6000 + port % 100, H1, 6000)
            channel.run(rng.randrange(10))
            channel.master.remove_port_forward("udp", 6000 + port % 100)
        channel.run(rng.randrange(50))
    # Whatever was lost on the way, a reliable channel then brings the backup level.
    channel.fate = lambda direction, frame: [0]
    channel.run_until(channel.converged)
    assert_same_translation(channel.master, channel.backup)


def assert_same_translation(master: Router, backup: Router) -> None:
    for session in master.nat_sessions()[:5]:
        if session.proto.name == "UDP":
            reply = reply_to(session.external_port, sport=session.remote_port)
            assert send(backup, ("wan", reply), 1e5) == send(master, ("wan", reply), 1e5)
