"""The neighbour cache the router and the load balancer share (RFC 826, RFC 1122 §2.3.2)."""

from __future__ import annotations

from pktchain.functions.common.arp import Hold, Merge, NeighborCache, NeighborState

IP = bytes([10, 0, 0, 7])
MAC = bytes.fromhex("020000000007")
OTHER_MAC = bytes.fromhex("020000000008")


def cache(queue_limit: int = 2, retries: int = 3) -> NeighborCache:
    return NeighborCache(
        "eth1", timeout=30.0, retry_interval=1.0, retries=retries, queue_limit=queue_limit
    )


def test_first_use_asks_once_and_frames_wait_until_the_answer() -> None:
    neighbors = cache()
    assert neighbors.resolve(IP, now=0.0)
    assert not neighbors.resolve(IP, now=0.1)  # already asked
    assert neighbors.hold(IP, bytearray(b"one"), "eth0", b"quote") is Hold.QUEUED
    assert neighbors.mac(IP) is None and neighbors.requested(IP)
    assert neighbors.release(IP) == []  # not resolved yet
    assert neighbors.confirm(IP, MAC, now=0.5, create=False) is Merge.CONFIRMED
    assert neighbors.mac(IP) == MAC
    (queued,) = neighbors.release(IP)
    assert (bytes(queued.frame), queued.in_iface, queued.original) == (b"one", "eth0", b"quote")
    assert neighbors.release(IP) == []


def test_the_queue_keeps_the_latest_frames() -> None:
    neighbors = cache(queue_limit=2)
    neighbors.resolve(IP, 0.0)
    results = [neighbors.hold(IP, bytearray([n]), None) for n in range(3)]
    assert results == [Hold.QUEUED, Hold.QUEUED, Hold.QUEUED_OVERFLOW]
    neighbors.confirm(IP, MAC, 0.1, create=False)
    assert [bytes(q.frame) for q in neighbors.release(IP)] == [b"\x01", b"\x02"]


def test_no_queue_refuses_the_frame_but_still_resolves() -> None:
    neighbors = cache(queue_limit=0)
    assert neighbors.resolve(IP, 0.0)
    assert neighbors.hold(IP, bytearray(b"x"), None) is Hold.REFUSED
    assert neighbors.requested(IP)


def test_unanswered_requests_are_retried_then_given_up_with_their_frames() -> None:
    neighbors = cache(retries=3)
    neighbors.resolve(IP, 0.0)
    neighbors.hold(IP, bytearray(b"waiting"), "eth0")
    assert neighbors.next_deadline() == 1.0
    assert neighbors.on_timer(0.5).requests == []  # not due
    assert neighbors.on_timer(1.0).requests == [IP]
    assert neighbors.on_timer(2.0).requests == [IP]
    change = neighbors.on_timer(3.0)
    assert change.requests == [] and change.forgotten == []
    ((ip, frames),) = change.failed
    assert ip == IP and [bytes(q.frame) for q in frames] == [b"waiting"]
    assert neighbors.entries == {}


def test_a_resolved_neighbour_is_verified_when_its_timeout_runs_out() -> None:
    neighbors = cache(retries=2)
    neighbors.resolve(IP, 0.0)
    neighbors.confirm(IP, MAC, 0.0, create=False)
    assert neighbors.on_timer(30.0).requests == [IP]
    assert neighbors.entries[IP].state is NeighborState.PROBE
    assert neighbors.mac(IP) == MAC  # still used while it is verified
    assert neighbors.on_timer(31.0).requests == [IP]
    assert neighbors.on_timer(32.0).forgotten == [IP]
    assert neighbors.mac(IP) is None


def test_a_neighbour_no_longer_used_is_forgotten_instead_of_verified() -> None:
    neighbors = cache()
    neighbors.confirm(IP, MAC, 0.0, create=True)
    change = neighbors.on_timer(30.0, used=set())
    assert change.forgotten == [IP] and change.requests == []


def test_rfc826_merge_refreshes_but_only_adds_what_was_for_us() -> None:
    neighbors = cache()
    assert neighbors.confirm(IP, MAC, 0.0, create=False) is Merge.IGNORED
    assert neighbors.entries == {}
    assert neighbors.confirm(IP, MAC, 0.0, create=True) is Merge.CONFIRMED
    assert neighbors.confirm(IP, OTHER_MAC, 1.0, create=False) is Merge.MAC_CHANGED
    assert neighbors.mac(IP) == OTHER_MAC


def test_a_permanent_entry_is_not_moved_by_arp() -> None:
    neighbors = cache()
    neighbors.resolve(IP, 0.0)
    neighbors.hold(IP, bytearray(b"held"), None)
    assert not neighbors.set_static(IP, MAC)  # nothing was resolved before
    assert [bytes(q.frame) for q in neighbors.release(IP)] == [b"held"]
    assert neighbors.confirm(IP, OTHER_MAC, 1.0, create=True) is Merge.PERMANENT_MISMATCH
    assert neighbors.confirm(IP, MAC, 1.0, create=True) is Merge.CONFIRMED
    assert neighbors.mac(IP) == MAC and neighbors.next_deadline() == float("inf")
    assert neighbors.set_static(IP, OTHER_MAC)  # the MAC in use changed
    assert neighbors.clear_static(IP) and neighbors.mac(IP) is None


def test_rows_list_the_interface_and_what_waits() -> None:
    neighbors = cache()
    neighbors.resolve(IP, 0.0)
    neighbors.hold(IP, bytearray(b"x"), None)
    (row,) = neighbors.rows()
    assert (row.interface, row.ip, row.mac, row.state, row.deadline, row.queued) == (
        "eth1",
        "10.0.0.7",
        None,
        NeighborState.INCOMPLETE,
        1.0,
        1,
    )
