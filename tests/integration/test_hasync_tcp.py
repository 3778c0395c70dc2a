"""The state sync over real TCP on 127.0.0.1: a master and a backup, each on its own loop.

Each router lives in the thread of its own event loop (as in a node); the test
hands it work with ``loop.submit``. The backup connects through a
:class:`~support.tcp_proxy.TcpProxy`, which the test cuts and mends to break
the connection. Every wait polls a condition against a deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pytest

from pktchain.eventloop import LoopThread
from pktchain.functions.router.function import Router
from pktchain.functions.router.sync import SenderSettings, SyncReceiver, SyncSender
from pktchain.functions.router.sync.records import RouterState
from pktchain.node.hasync import Backoff, LinkClosed, SyncLink, read_secret_file
from support.hasync import H1, H2, SECRET, external_port, make_router, outbound_udp
from support.tcp_proxy import TcpProxy

T = TypeVar("T")
TIMEOUT = 20.0


@dataclass
class Side:
    router: Router
    thread: LoopThread
    link: SyncLink

    def run(self, fn: Callable[[Router, float], T]) -> T:
        """``fn(router, now)`` in the side's loop thread."""
        loop = self.thread.loop
        return loop.submit(lambda: fn(self.router, loop.now), TIMEOUT)

    def state(self) -> RouterState:
        return self.run(lambda router, _now: router.export_state())


@dataclass
class Pair:
    master: Side
    backup: Side
    sender: SyncSender
    receiver: SyncReceiver
    proxy: TcpProxy
    closed: list[LinkClosed]
    """Why the backup's connections closed, as its link reported."""

    def converged(self) -> bool:
        in_sync = self.master.run(
            lambda router, _now: (
                self.sender.in_sync
                and self.sender.unacknowledged == 0
                and not router.changes_pending()
            )
        )
        return in_sync and self.master.state() == self.backup.state()

    def churn(self, first: int, count: int) -> None:
        def open_sessions(router: Router, now: float) -> None:
            for sport in range(first, first + count):
                external_port(router, outbound_udp(H1 if sport % 2 else H2, sport, 53), now)

        self.master.run(open_sessions)


def wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def pair() -> Iterator[Pair]:
    master_router, backup_router = make_router(), make_router(seed=99)
    sender = SyncSender(master_router, SECRET, SenderSettings(resend_timeout=0.5))
    receiver = SyncReceiver(backup_router, SECRET)
    master_thread, backup_thread = LoopThread("test-master"), LoopThread("test-backup")
    master_link = SyncLink(sender, loop=master_thread.loop, listen=("127.0.0.1", 0))
    master_link.start()
    port = master_link.port
    assert port is not None
    proxy = TcpProxy(("127.0.0.1", port))
    closed: list[LinkClosed] = []
    backup_link = SyncLink(
        receiver,
        loop=backup_thread.loop,
        connect=("127.0.0.1", proxy.port),
        backoff=Backoff(0.05, 0.2),
        on_close=closed.append,
    )
    backup_link.start()
    master_thread.start()
    backup_thread.start()
    master = Side(master_router, master_thread, master_link)
    backup = Side(backup_router, backup_thread, backup_link)
    try:
        yield Pair(master, backup, sender, receiver, proxy, closed)
    finally:
        proxy.close()
        for side in (backup, master):
            side.thread.loop.submit(side.link.stop, TIMEOUT)
            side.thread.stop()


def test_backup_follows_the_master_across_a_broken_connection(pair: Pair) -> None:
    pair.churn(10000, 500)
    wait(pair.converged, "the first snapshot")
    pair.churn(20000, 300)
    wait(pair.converged, "live changes")
    lag = pair.master.run(lambda _router, _now: pair.sender.lag.summary())
    # The first 500 went in the snapshot or as changes, whichever came first.
    assert 300 <= lag["changes"] <= 800 and lag["p99"] is not None

    # Cut the connection; the master goes on changing (opens, a rule added and removed,
    # a host gone) while nobody listens; the backup reconnects and resyncs.
    pair.proxy.cut()
    wait(lambda: not pair.backup.run(lambda _r, _n: pair.backup.link.connected), "the cut")
    assert pair.backup.run(lambda _r, _n: pair.closed[-1]) is LinkClosed.BY_PEER
    pair.churn(30000, 200)

    def rules(router: Router, _now: float) -> None:
        router.add_port_forward("udp", 6000, H2, 6001)
        router.add_port_forward("tcp", 6001, H1, 22)
        router.remove_port_forward("udp", 6000)
        router.remove_host(H2)  # its sessions stay; its forward goes

    pair.master.run(rules)
    # The backup keeps trying, refused while the proxy listens no more.
    wait(
        lambda: (
            pair.backup.run(lambda _r, _n: pair.backup.link.counters.get("connect.failed", 0)) >= 2
        ),
        "refused reconnection attempts",
    )
    pair.proxy.mend()
    wait(pair.converged, "the resync after the cut")
    receiver = pair.backup.run(lambda _r, _n: pair.receiver.counters())
    sender = pair.master.run(lambda _r, _n: pair.sender.counters())
    # One stream per connection (more than two only if a loaded machine stalled a side
    # past the peer timeout), each brought to a whole snapshot.
    assert receiver["streams"] >= 2 and receiver["snapshots-completed"] == receiver["streams"]
    assert sender["resyncs"] == receiver["streams"]
    links = pair.backup.run(lambda _r, _n: pair.backup.link.counters)
    assert links["connections.opened"] == receiver["streams"]
    assert len(pair.backup.state().sessions) == 1000

    # The backup takes over: everything it holds becomes its own, with timers.
    result = pair.backup.run(lambda _r, now: pair.receiver.takeover(now))
    assert result.sessions == 1000
    assert all(s.expires < 1 << 62 for s in pair.backup.run(lambda r, _n: r.nat_sessions()))


def test_garbage_on_the_port_is_refused_and_the_backup_comes_back(pair: Pair) -> None:
    pair.churn(10000, 50)
    wait(pair.converged, "the first snapshot")
    port = pair.master.link.port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=5) as stranger:
        # The listener takes the newest connection: the backup's is closed.
        stranger.sendall(b"\x00\x00\x00\x60" + bytes(range(96)) + b"\xff\xff\xff\xff")
        wait(
            lambda: (
                pair.master.run(lambda _r, _n: pair.sender.counters().get("refused-too-large", 0))
                == 1
            ),
            "the refusal",
        )
        counters = pair.master.run(lambda _r, _n: pair.sender.counters())
        assert counters["refused-bad-mac"] == 1
    pair.churn(20000, 50)
    wait(pair.converged, "the backup back in sync")
    links = pair.master.run(lambda _r, _n: pair.master.link.counters)
    assert links["connections.opened"] >= 3  # the backup, the stranger, the backup again
    assert links["connections.closed.replaced"] >= 1


def test_secret_files_are_read_and_checked(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "secret"  # type: ignore[operator]
    path.write_bytes(SECRET + b"\n")
    assert read_secret_file(path) == SECRET
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="at least 16"):
        read_secret_file(path)
    with pytest.raises(ValueError, match="No such file"):
        read_secret_file(tmp_path / "missing")  # type: ignore[operator]
