"""The etcd client and `PrefixWatch` against a real etcd: fail-over, errors, watching."""

from __future__ import annotations

import threading
import time

import pytest

from pktchain.etcd.client import (
    EtcdClient,
    EtcdRequestError,
    EtcdUnreachableError,
    Event,
    EventType,
    GrpcCode,
    Range,
)
from pktchain.etcd.watch import PrefixWatch
from pktchain.lab.wait import wait_until
from support.etcd import EtcdServer, free_port
from support.tcp_proxy import TcpProxy

WAIT = 10.0


def test_calls_fail_over_to_the_next_endpoint(etcd: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    client = EtcdClient([dead, etcd.url])
    revision = client.put(b"/t/a", b"1")
    assert client.range(b"/t/a").kvs[0].mod_revision == revision
    etcd.kill()
    with pytest.raises(EtcdUnreachableError) as caught:
        client.range(b"/t/a")
    message = str(caught.value)
    assert f"{dead}: connection refused" in message and f"{etcd.url}: connection refused" in message
    assert not caught.value.ambiguous


def test_refusals_carry_etcds_code(etcd: EtcdServer) -> None:
    client = EtcdClient(etcd.url)
    with pytest.raises(EtcdRequestError, match="requested lease not found") as caught:
        client.put(b"/t/a", b"1", lease=12345)
    assert caught.value.code == GrpcCode.NOT_FOUND.value
    lease, ttl = client.lease_grant(2)
    assert ttl == 2 and client.lease_keepalive(lease) == 2
    client.lease_revoke(lease)
    assert client.lease_keepalive(lease) == 0
    client.lease_revoke(lease)  # already gone: no error


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resets: list[Range] = []
        self.events: list[tuple[int, tuple[Event, ...]]] = []
        self.connection: list[bool] = []

    def reset(self, listed: Range) -> None:
        with self.lock:
            self.resets.append(listed)

    def changed(self, revision: int, events: tuple[Event, ...]) -> None:
        with self.lock:
            self.events.append((revision, events))

    def watched(self) -> list[bytes]:
        with self.lock:
            return [event.kv.key for _, events in self.events for event in events]


def test_a_prefix_watch_lists_follows_and_lists_again_after_a_compaction(
    etcd: EtcdServer,
) -> None:
    client = EtcdClient(etcd.url)
    client.put(b"/w/before", b"0")
    client.put(b"/x/other", b"0")
    proxy = TcpProxy(("127.0.0.1", etcd.client_port))
    seen = Recorder()
    watch = PrefixWatch(
        EtcdClient(proxy.url),
        b"/w/",
        on_reset=seen.reset,
        on_events=seen.changed,
        on_connection=seen.connection.append,
    )
    watch.start()
    try:
        wait_until(lambda: bool(seen.resets), timeout=WAIT, what="the first list")
        assert [kv.key for kv in seen.resets[0].kvs] == [b"/w/before"]
        # One transaction's events arrive together, at one revision.
        client.txn([], [_put(b"/w/a"), _put(b"/w/b")])
        client.delete(b"/w/before")
        wait_until(lambda: len(seen.events) == 2, timeout=WAIT, what="two revisions")
        (first, together), (second, deleted) = seen.events
        assert [e.kv.key for e in together] == [b"/w/a", b"/w/b"] and second == first + 1
        assert deleted[0].type is EventType.DELETE and watch.revision == second

        proxy.cut()
        wait_until(lambda: seen.connection == [False], timeout=WAIT, what="disconnection")
        client.put(b"/w/late", b"1")
        client.put(b"/w/later", b"1")
        # Compacting up to now drops the revision the watch resumes from (late's).
        client.compact(client.range(b"/").revision)
        proxy.mend()
        wait_until(lambda: len(seen.resets) == 2, timeout=2 * WAIT, what="a second list")
        assert watch.relists == 1 and seen.connection == [False, True]
        assert {kv.key for kv in seen.resets[1].kvs} == {b"/w/a", b"/w/b", b"/w/late", b"/w/later"}
        client.put(b"/w/after", b"2")
        wait_until(lambda: seen.watched()[-1:] == [b"/w/after"], timeout=WAIT, what="following")
    finally:
        stopping = time.monotonic()
        watch.stop()
        proxy.close()
    assert not watch.running and time.monotonic() - stopping < 5.0
    assert b"/x/other" not in seen.watched()


def _put(key: bytes) -> dict[str, object]:
    from pktchain.etcd.client import op_put

    return op_put(key, b"1")
