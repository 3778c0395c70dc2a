"""Elections between VRRP instances wired to each other in memory, on a fake clock.

Each test puts two or three :class:`~pktchain.functions.router.vrrp.VrrpInstance`
objects on one :class:`support.vrrp.Link` and runs the clock from timer to
timer: who becomes master, and exactly when, follows from RFC 5798's rules
(§6.4) and times (§6.1), so the times are asserted to the microsecond.
"""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3

from pktchain.functions.router.vrrp import (
    FrameKind,
    ReleaseAddresses,
    TakeAddresses,
    Tracker,
    TrackKind,
    VrrpState,
    master_down_interval,
    skew_time,
)
from support.vrrp import Link, instance

A = IPv4Address("10.0.0.1")
B = IPv4Address("10.0.0.2")
C = IPv4Address("10.0.0.3")


def down(priority: int, interval: int = 100) -> float:
    """Master_Down_Interval in seconds."""
    return master_down_interval(priority, interval) / 100


def only_master(link: Link) -> object:
    masters = link.masters()
    assert len(masters) == 1, [m.config.name for m in masters]
    return masters[0]


def test_two_routers_elect_exactly_one_master_the_higher_priority() -> None:
    low = instance(source_address=A, priority=100, name="low")
    high = instance(source_address=B, priority=200, name="high")
    link = Link([low, high])
    link.start(low)
    link.start(high)
    link.run_until(down(200) - 0.001)
    assert link.masters() == []
    link.run_until(down(200))
    assert only_master(link) is high
    assert link.became_master(high) == [pytest.approx(down(200))]
    for t in (5.0, 10.0, 60.0):
        link.run_until(t)
        assert only_master(link) is high and low.state is VrrpState.BACKUP
    assert link.became_master(low) == []
    assert low.status().master_address == str(B) and low.status().master_priority == 200
    # One advertisement a second from the master (3.21875, 4.21875, ... 59.21875), none
    # from the backup.
    assert len(link.adverts(high)) == 57
    assert link.adverts(low) == []


def test_equal_priorities_elect_the_higher_address() -> None:
    # A router that starts later follows a master of equal priority, whatever its
    # address (§6.4.2: "greater than or equal"): the address decides between masters.
    first = instance(source_address=A, priority=100)
    second = instance(source_address=B, priority=100)
    link = Link([first, second])
    link.start(first)
    link.run_until(1.0)
    link.start(second)
    link.run_until(1.0 + down(100))
    assert first.state is VrrpState.MASTER and second.state is VrrpState.BACKUP
    link.run_until(30.0)
    assert only_master(link) is first
    # Both time out at the same instant and become master before they hear each other
    # (a millisecond on the wire): the higher address wins the tie.
    x = instance(source_address=A, priority=100)
    y = instance(source_address=B, priority=100)
    tie = Link([x, y], delay=0.001)
    tie.start(x)
    tie.start(y)
    tie.run_until(30.0)
    assert only_master(tie) is y
    assert len(tie.became_master(x)) == 1 and x.state is VrrpState.BACKUP


def test_a_higher_priority_router_preempts_when_it_starts() -> None:
    low = instance(source_address=A, priority=100)
    high = instance(source_address=B, priority=200)
    link = Link([low, high])
    link.start(low)
    link.run_until(10.0)
    assert only_master(link) is low
    link.start(high)
    # It discards the lower master's advertisements and times out (§6.4.2).
    link.run_until(10.0 + down(200) - 0.001)
    assert only_master(link) is low
    link.run_until(10.0 + down(200))
    assert only_master(link) is high
    assert high.counters["discarded"] >= 3
    # The old master yielded to its first advertisement and released the addresses.
    yielded = [a for _, who, a in link.actions if who is low and isinstance(a, ReleaseAddresses)]
    assert len(yielded) == 1
    link.run_until(40.0)
    assert only_master(link) is high


def test_without_preemption_a_better_backup_waits_for_the_master_to_fail() -> None:
    low = instance(source_address=A, priority=100)
    high = instance(source_address=B, priority=200, preempt=False)
    link = Link([low, high])
    link.start(low)
    link.run_until(10.0)
    link.start(high)
    link.run_until(60.0)
    assert only_master(link) is low
    assert high.status().master_priority == 100 and high.master_adver_interval == 100
    link.kill(low)
    last = link.adverts(low)[-1].at
    link.run_until(80.0)
    assert only_master(link) is high
    assert link.became_master(high) == [pytest.approx(last + down(200))]


def test_preempt_delay_holds_a_better_backup_back_after_it_starts() -> None:
    low = instance(source_address=A, priority=100)
    high = instance(source_address=B, priority=200, preempt_delay=10.0)
    link = Link([low, high])
    link.start(low)
    link.run_until(5.0)
    link.start(high)  # at 5.0: may preempt from 15.0
    link.run_until(15.0)
    assert only_master(link) is low
    assert high.counters["preempt-delayed"] >= 9
    # The first lower advertisement after 15.0 is discarded; the timer it would have
    # reset runs out Master_Down_Interval after the last one followed.
    followed = max(s.at for s in link.adverts(low) if s.at < 15.0)
    link.run_until(30.0)
    assert only_master(link) is high
    assert link.became_master(high) == [pytest.approx(followed + down(200))]


def test_the_owner_takes_over_at_once() -> None:
    backup = instance(source_address=A, priority=100)
    owner = instance(source_address=B, priority=255, preempt=False)  # the owner preempts anyway
    link = Link([backup, owner])
    link.start(backup)
    link.run_until(10.0)
    assert only_master(link) is backup
    link.start(owner)
    assert only_master(link) is owner
    assert link.became_master(owner) == [10.0]
    taken = [a for _, who, a in link.actions if who is owner and isinstance(a, TakeAddresses)]
    assert len(taken) == 1 and taken[0].accept
    link.run_until(30.0)
    assert only_master(link) is owner
    assert owner.counters["drop-owner"] == 0  # the backup never advertised again


def test_a_clean_shutdown_hands_over_after_skew_time() -> None:
    master = instance(source_address=A, priority=200)
    backup = instance(source_address=B, priority=100)
    link = Link([master, backup])
    link.start(master)
    link.start(backup)
    link.run_until(10.25)
    assert only_master(link) is master
    link.shutdown(master)
    (zero,) = [s for s in link.adverts(master) if s.at == 10.25]
    assert Ether(zero.action.frame[10:])[VRRPv3].priority == 0
    assert master.state is VrrpState.INITIALIZE and link.masters() == []
    link.run_until(20.0)
    assert only_master(link) is backup
    assert link.became_master(backup) == [pytest.approx(10.25 + skew_time(100, 100) / 100)]


def test_a_dead_master_is_replaced_after_master_down_interval() -> None:
    master = instance(source_address=A, priority=200, advert_interval_cs=10)
    backup = instance(source_address=B, priority=100, advert_interval_cs=100)
    link = Link([master, backup])
    link.start(master)
    link.start(backup)
    link.run_until(5.0)
    assert only_master(link) is master
    assert backup.master_adver_interval == 10  # learned from the master (§6.4.2)
    link.kill(master)
    last = link.adverts(master)[-1].at
    link.run_until(10.0)
    assert only_master(link) is backup
    # 3 * 10 + (256 - 100) * 10 / 256 centiseconds: 0.360938 s after the last advertisement.
    assert link.became_master(backup) == [pytest.approx(last + down(100, 10), abs=1e-9)]
    assert link.became_master(backup)[0] - last < 0.37
    # The backup sends its own interval now, and gratuitous ARP for the address.
    sent = [s for s in link.sent if s.sender is backup]
    assert {s.action.kind for s in sent} == {FrameKind.ADVERTISEMENT, FrameKind.GRATUITOUS_ARP}
    assert Ether(link.adverts(backup)[0].action.frame[10:])[VRRPv3].adv == 100
    # When the old master comes back it takes over again (preemption).
    link.revive(master)
    master_again = link.became_master(master)
    link.shutdown(master)
    link.start(master)
    link.run_until(20.0)
    assert only_master(link) is master
    assert len(link.became_master(master)) == len(master_again) + 1


def test_with_three_routers_the_next_best_takes_over_first() -> None:
    best = instance(source_address=A, priority=250)
    second = instance(source_address=B, priority=150)
    third = instance(source_address=C, priority=50)
    link = Link([best, second, third])
    for router in (best, second, third):
        link.start(router)
    link.run_until(10.0)
    assert only_master(link) is best
    link.kill(best)
    last = link.adverts(best)[-1].at
    link.run_until(20.0)
    assert only_master(link) is second
    assert link.became_master(second) == [pytest.approx(last + down(150))]
    assert link.became_master(third) == []  # its longer skew let the second speak first


def test_a_failed_tracker_lowers_the_master_and_the_backup_preempts() -> None:
    lan = Tracker(TrackKind.INTERFACE, "lan", 60)
    master = instance(source_address=A, priority=150, track=(lan,))
    backup = instance(source_address=B, priority=100)
    link = Link([master, backup])
    link.start(master)
    link.start(backup)
    link.run_until(10.5)
    assert only_master(link) is master
    link.track(master, "lan", False)
    # The new priority goes out at once (not at the next interval).
    (now,) = [s for s in link.adverts(master) if s.at == 10.5]
    assert Ether(now.action.frame[10:])[VRRPv3].priority == 90
    # The backup discards it and times out Master_Down_Interval after the last
    # advertisement it followed.
    followed = max(s.at for s in link.adverts(master) if s.at < 10.5)
    link.run_until(followed + down(100))
    assert only_master(link) is backup
    assert link.became_master(backup) == [pytest.approx(followed + down(100))]
    # The interface comes back: 150 again, and it preempts in turn.
    link.track(master, "lan", True)
    link.run_until(30.0)
    assert only_master(link) is master


def test_unicast_peers_elect_without_multicast() -> None:
    a = instance(source_address=A, priority=200, unicast_peers=(B,))
    b = instance(source_address=B, priority=100, unicast_peers=(A,))
    stranger = instance(source_address=C, priority=250)  # multicast, not a listed peer
    link = Link([a, b, stranger])
    link.start(a)
    link.start(b)
    link.run_until(10.0)
    assert only_master(link) is a
    for sent in link.adverts(a):
        ip = Ether(sent.action.frame[10:])[IP]
        assert ip.dst == str(B) and sent.action.next_hop == B.packed
    # A multicast advertisement from an unlisted router is counted and ignored.
    link.start(stranger)
    link.run_until(20.0)
    assert a.state is VrrpState.MASTER and b.status().master_address == str(A)
    heard = len(link.adverts(stranger))
    assert heard >= 6
    assert a.counters["drop-unknown-peer"] == b.counters["drop-unknown-peer"] == heard
