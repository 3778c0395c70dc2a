"""One VRRP instance: its state table, the timer arithmetic of RFC 5798 §6.1, the receive
checks of §7.1, tracking, reconfiguration and status; and the speaker that routes packets
to instances by interface and VRID.

Advertisements come from scapy (``IP() / VRRPv3()``), the independent builder;
what the instance sends is parsed back with scapy too.
"""

from __future__ import annotations

import itertools
import json
import re
from fractions import Fraction
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP, VRRPv3

from pktchain.functions.router.vrrp import (
    VRRP_TRANSITIONS,
    FrameKind,
    ReleaseAddresses,
    SendFrame,
    StateChanged,
    TakeAddresses,
    Tracker,
    TrackKind,
    VrrpAction,
    VrrpConfig,
    VrrpEvent,
    VrrpInstance,
    VrrpSpeaker,
    VrrpState,
    VrrpStep,
    master_down_interval,
    skew_time,
)
from pktchain.functions.router.vrrp import (
    instance as instance_module,
)
from support.vrrp import IP_AT, instance

EXAMPLES = settings(max_examples=150, deadline=None)
VIP = "10.0.0.254"
GROUP = "224.0.0.18"
PEER = "10.0.0.2"  # above our 10.0.0.1: wins a tie
LOWER_PEER = "10.0.0.0"  # below it: loses a tie (any address; the check is on the bytes)


def advert(**fields: Any) -> bytes:
    """A sound advertisement for VRID 7 from PEER, unless told otherwise (ip_* for IP fields)."""
    ip = {"src": PEER, "dst": "224.0.0.18", "ttl": 255}
    ip.update({k[3:]: v for k, v in fields.items() if k.startswith("ip_")})
    vrrp: dict[str, Any] = {"vrid": 7, "priority": 100, "adv": 100, "addrlist": [VIP]}
    vrrp.update({k: v for k, v in fields.items() if not k.startswith("ip_")})
    vrrp.setdefault("ipcount", len(vrrp["addrlist"]))
    return bytes(IP(**ip) / VRRPv3(**vrrp))


def frames(actions: list[VrrpAction], kind: FrameKind | None = None) -> list[SendFrame]:
    return [a for a in actions if isinstance(a, SendFrame) and (kind is None or a.kind is kind)]


def sent_vrrp(action: SendFrame) -> Any:
    return Ether(action.frame[10:])[VRRPv3]


def backup(**settings: Any) -> VrrpInstance:
    router = instance(**settings)
    router.start(0.0)
    assert router.state is VrrpState.BACKUP
    return router


def master(**settings: Any) -> VrrpInstance:
    router = backup(**settings)
    router.on_timer(100.0)
    assert router.state is VrrpState.MASTER
    return router


# -- §6.1: the timer arithmetic ------------------------------------------------------------


@pytest.mark.parametrize(
    ("priority", "interval", "skew", "down"),
    [
        (100, 100, 60.9375, 360.9375),
        (255, 100, 0.390625, 300.390625),
        (254, 100, 0.78125, 300.78125),
        (1, 100, 99.609375, 399.609375),
        (200, 10, 2.1875, 32.1875),
        (150, 4095, 1695.5859375, 13980.5859375),
    ],
)
def test_skew_time_and_master_down_interval_in_centiseconds(
    priority: int, interval: int, skew: float, down: float
) -> None:
    assert skew_time(priority, interval) == skew
    assert master_down_interval(priority, interval) == down


@EXAMPLES
@given(st.integers(1, 255), st.integers(1, 4095))
def test_the_arithmetic_is_exact(priority: int, interval: int) -> None:
    exact_skew = Fraction((256 - priority) * interval, 256)
    assert Fraction(skew_time(priority, interval)) == exact_skew
    assert Fraction(master_down_interval(priority, interval)) == 3 * interval + exact_skew


def test_a_backup_times_out_after_master_down_interval_of_its_own_interval() -> None:
    router = instance(priority=100, advert_interval_cs=100)
    (change,) = router.start(5.0)
    assert isinstance(change, StateChanged) and change.new is VrrpState.BACKUP
    assert router.state is VrrpState.BACKUP and router.master_adver_interval == 100
    assert router.next_deadline() == pytest.approx(5.0 + 3.609375)
    assert router.on_timer(8.6) == [] and router.state is VrrpState.BACKUP


def test_a_backup_learns_the_masters_interval() -> None:
    router = backup(priority=100, advert_interval_cs=100)
    router.receive(advert(priority=200, adv=50), 1.0)
    assert router.master_adver_interval == 50
    assert router.next_deadline() == pytest.approx(1.0 + master_down_interval(100, 50) / 100)
    assert router.status().master_address == PEER and router.status().master_priority == 200


# -- §6.4: the state table -------------------------------------------------------------------


def test_the_documented_table_is_the_one_in_force() -> None:
    rows = re.findall(
        r"^(INITIALIZE|BACKUP|MASTER)\s+([A-Z_]+)\s+([A-Z]+)\s+([A-Z_]+)",
        instance_module.__doc__ or "",
        re.MULTILINE,
    )
    documented = {
        (VrrpState[s], VrrpEvent[e]): (VrrpState[n], VrrpStep[step.rstrip(":")])
        for s, e, n, step in rows
    }
    assert documented == VRRP_TRANSITIONS


def test_the_owner_starts_as_master_at_once() -> None:
    router = instance(priority=255, virtual_addresses=(IPv4Address(VIP), IPv4Address("10.0.0.253")))
    actions = router.start(2.0)
    assert router.state is VrrpState.MASTER
    assert [type(a) for a in actions] == [
        TakeAddresses,
        SendFrame,
        SendFrame,
        SendFrame,
        StateChanged,
    ]
    take = actions[0]
    assert isinstance(take, TakeAddresses)
    assert take.mac.hex(":") == "00:00:5e:00:01:07" and take.accept
    assert take.addresses == (IPv4Address(VIP).packed, IPv4Address("10.0.0.253").packed)
    (sent,) = frames(actions, FrameKind.ADVERTISEMENT)
    vrrp = sent_vrrp(sent)
    assert (vrrp.priority, vrrp.vrid, vrrp.adv, vrrp.addrlist) == (255, 7, 100, [VIP, "10.0.0.253"])
    assert sent.next_hop is None
    garps = [Ether(f.frame[10:]) for f in frames(actions, FrameKind.GRATUITOUS_ARP)]
    assert [(g.src, g[ARP].hwsrc, g[ARP].psrc, g[ARP].pdst) for g in garps] == [
        ("00:00:5e:00:01:07", "00:00:5e:00:01:07", VIP, VIP),
        ("00:00:5e:00:01:07", "00:00:5e:00:01:07", "10.0.0.253", "10.0.0.253"),
    ]
    change = actions[-1]
    assert isinstance(change, StateChanged)
    assert (change.old, change.new, change.now, change.event) == (
        VrrpState.INITIALIZE,
        VrrpState.MASTER,
        2.0,
        "startup-owner",
    )
    assert router.next_deadline() == pytest.approx(3.0)


def test_master_down_timer_makes_a_backup_master() -> None:
    router = backup(accept=False)
    deadline = router.next_deadline()
    assert deadline is not None
    actions = router.on_timer(deadline)
    assert router.state is VrrpState.MASTER
    take = actions[0]
    assert isinstance(take, TakeAddresses) and not take.accept
    assert len(frames(actions, FrameKind.ADVERTISEMENT)) == 1
    assert len(frames(actions, FrameKind.GRATUITOUS_ARP)) == 1
    assert router.next_deadline() == pytest.approx(deadline + 1.0)
    assert router.status().master_address == "10.0.0.1"


def test_a_master_advertises_every_interval() -> None:
    router = master(advert_interval_cs=25)
    start = router.next_deadline()
    assert start is not None
    times = []
    now = start
    for _ in range(4):
        actions = router.on_timer(now)
        (sent,) = frames(actions)
        assert sent_vrrp(sent).adv == 25
        times.append(now)
        next_deadline = router.next_deadline()
        assert next_deadline is not None
        now = next_deadline
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.25] * 3
    assert router.on_timer(now - 0.01) == []


def test_priority_zero_sets_the_backups_timer_to_skew_time() -> None:
    router = backup(priority=100)
    router.receive(advert(priority=200), 1.0)
    assert router.receive(advert(priority=0), 2.0) == []
    assert router.next_deadline() == pytest.approx(2.0 + 0.609375)
    assert router.counters["rx-priority-zero"] == 1


def test_a_master_answers_priority_zero_with_an_advertisement() -> None:
    router = master()
    actions = router.receive(advert(priority=0), 101.5)
    (sent,) = frames(actions)
    assert sent_vrrp(sent).priority == 100
    assert router.state is VrrpState.MASTER
    assert router.next_deadline() == pytest.approx(102.5)


@pytest.mark.parametrize(
    ("priority", "source", "yields"),
    [(101, PEER, True), (100, PEER, True), (100, LOWER_PEER, False), (99, PEER, False)],
)
def test_a_master_yields_to_a_better_advertisement(
    priority: int, source: str, yields: bool
) -> None:
    router = master(priority=100)
    actions = router.receive(advert(priority=priority, ip_src=source, adv=40), 101.0)
    if not yields:
        assert actions == [] and router.state is VrrpState.MASTER
        assert router.counters["discarded"] == 1
        return
    assert router.state is VrrpState.BACKUP
    release, change = actions
    assert isinstance(release, ReleaseAddresses) and release.addresses == (IPv4Address(VIP).packed,)
    assert isinstance(change, StateChanged) and change.new is VrrpState.BACKUP
    assert router.master_adver_interval == 40
    assert router.next_deadline() == pytest.approx(101.0 + master_down_interval(100, 40) / 100)


@pytest.mark.parametrize(("preempt", "follows"), [(True, False), (False, True)])
def test_a_backup_discards_a_lower_master_only_with_preempt(preempt: bool, follows: bool) -> None:
    router = backup(priority=100, preempt=preempt)
    before = router.next_deadline()
    router.receive(advert(priority=50, adv=200), 1.0)
    if follows:
        assert router.next_deadline() == pytest.approx(1.0 + master_down_interval(100, 200) / 100)
        assert router.master_adver_interval == 200
    else:
        assert router.next_deadline() == before and router.counters["discarded"] == 1
    router.receive(advert(priority=100, ip_src=LOWER_PEER), 2.0)  # ties are followed (>=)
    assert router.next_deadline() == pytest.approx(2.0 + 3.609375)


def test_a_clean_shutdown_sends_priority_zero_and_releases() -> None:
    router = master()
    actions = router.shutdown(150.0)
    sent, release, change = actions
    assert isinstance(sent, SendFrame) and sent_vrrp(sent).priority == 0
    assert isinstance(release, ReleaseAddresses)
    assert isinstance(change, StateChanged) and change.new is VrrpState.INITIALIZE
    assert router.next_deadline() is None and router.counters["tx-priority-zero"] == 1
    assert router.shutdown(151.0) == []
    assert router.receive(advert(), 152.0) == [] and router.counters["drop-not-running"] == 1


def test_a_backup_shuts_down_silently() -> None:
    router = backup()
    (change,) = router.shutdown(1.0)
    assert isinstance(change, StateChanged) and change.new is VrrpState.INITIALIZE
    assert router.next_deadline() is None
    assert [type(a) for a in router.start(2.0)] == [StateChanged]
    assert router.state is VrrpState.BACKUP
    assert router.start(3.0) == []


# -- §7.1: the receive checks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "counter"),
    [
        (advert(ip_ttl=254), "drop-ttl"),
        (
            bytes(IP(src=PEER, dst="224.0.0.18", ttl=255) / VRRP(vrid=7, addrlist=[VIP])),
            "drop-version",
        ),
        (advert(type=2), "drop-type"),
        (advert(ipcount=3), "drop-truncated"),
        (advert(ipcount=0), "drop-length"),
        (advert(chksum=0xBEEF), "drop-checksum"),
        (advert(vrid=8), "drop-vrid-mismatch"),
        (advert(ip_src="10.0.0.1"), "drop-own-advertisement"),
        (advert(adv=0), "drop-zero-interval"),
        (bytes(IP(src=PEER, dst=GROUP, ttl=255) / UDP()), "drop-not-vrrp"),
        (b"\x45" + bytes(30), "drop-ip-malformed"),
    ],
    ids=[
        "ttl",
        "version",
        "type",
        "truncated",
        "length",
        "checksum",
        "vrid-mismatch",
        "own-advertisement",
        "zero-interval",
        "not-vrrp",
        "ip-malformed",
    ],
)
def test_each_failed_check_is_a_counted_drop(packet: bytes, counter: str) -> None:
    router = backup()
    deadline = router.next_deadline()
    assert router.receive(packet, 1.0) == []
    assert router.counters[counter] == 1
    assert router.counters["rx-advertisements"] == 1
    assert router.next_deadline() == deadline  # the timer did not hear it


def test_the_owner_discards_advertisements() -> None:
    router = instance(priority=255)
    router.start(0.0)
    assert router.receive(advert(priority=255), 0.5) == []
    assert router.counters["drop-owner"] == 1 and router.state is VrrpState.MASTER


def test_address_mismatches_are_counted_and_dropped_only_when_strict() -> None:
    loose = backup()
    loose.receive(advert(priority=200, addrlist=["10.0.0.253"]), 1.0)
    assert loose.counters["address-mismatch"] == 1
    assert loose.status().master_priority == 200  # followed all the same
    loose.receive(advert(priority=200, addrlist=[VIP, "10.0.0.253"]), 1.1)
    assert loose.counters["address-mismatch"] == 2
    strict = backup(strict_addresses=True)
    before = strict.next_deadline()
    strict.receive(advert(priority=200, addrlist=["10.0.0.253"]), 1.0)
    assert strict.counters["drop-address-mismatch"] == 1 and strict.next_deadline() == before
    strict.receive(advert(priority=255, addrlist=["10.0.0.253"]), 1.0)  # the owner knows best
    assert strict.status().master_priority == 255
    assert strict.counters["address-mismatch"] == 2


def test_with_unicast_peers_only_their_advertisements_count() -> None:
    router = backup(unicast_peers=(IPv4Address(PEER),))
    router.receive(advert(priority=200, ip_src="10.0.0.3", ip_dst="10.0.0.1"), 1.0)
    assert router.counters["drop-unknown-peer"] == 1
    router.receive(advert(priority=200, ip_dst="10.0.0.1"), 1.0)
    assert router.status().master_address == PEER


def test_unicast_advertisements_go_to_each_peer() -> None:
    peers = (IPv4Address("10.0.0.2"), IPv4Address("10.0.0.3"))
    router = master(unicast_peers=peers)
    actions = router.on_timer(101.0)
    sent = frames(actions)
    assert [s.next_hop for s in sent] == [p.packed for p in peers]
    for action, peer in zip(sent, peers, strict=True):
        ether = Ether(action.frame[10:])
        assert ether[IP].dst == str(peer) and ether[IP].ttl == 255
        assert ether.dst == "00:00:00:00:00:00" and ether.src == "00:00:5e:00:01:07"
    assert router.counters["tx-advertisements"] == 2  # one at becoming master, one now


# -- tracking --------------------------------------------------------------------------------------

LAN = Tracker(TrackKind.INTERFACE, "lan", 30)
GATEWAY = Tracker(TrackKind.GATEWAY, "10.0.0.9", 50)


@pytest.mark.parametrize(
    ("settings", "failed", "priority"),
    [
        ({"priority": 100}, (), 100),
        ({"priority": 100}, ("lan",), 70),
        ({"priority": 100}, ("lan", "10.0.0.9"), 20),
        ({"priority": 60}, ("lan", "10.0.0.9"), 1),  # never below 1
        ({"priority": 100, "track_floor": 40}, ("lan", "10.0.0.9"), 40),
        ({"priority": 255}, ("lan", "10.0.0.9"), 255),  # the owner is not lowered
        ({"priority": 255, "track_owner": True}, ("lan",), 225),
        ({"priority": 255, "track_owner": True, "track_floor": 250}, ("lan",), 250),
    ],
)
def test_failed_trackers_lower_the_priority(
    settings: dict[str, Any], failed: tuple[str, ...], priority: int
) -> None:
    router = instance(track=(LAN, GATEWAY), **settings)
    for name in failed:
        router.track(name, False, 0.0)
    assert router.priority == priority
    status = router.status()
    assert (status.priority, status.effective_priority) == (settings["priority"], priority)
    assert status.failed_trackers == tuple(sorted(failed))


def test_a_master_advertises_a_new_priority_at_once() -> None:
    router = master(track=(LAN,))
    actions = router.track("lan", False, 101.2)
    (sent,) = frames(actions)
    assert sent_vrrp(sent).priority == 70
    assert router.next_deadline() == pytest.approx(102.2)
    assert router.track("lan", False, 101.3) == []  # no change, nothing sent
    (sent,) = frames(router.track("lan", True, 101.4))
    assert sent_vrrp(sent).priority == 100
    assert (router.counters["tracker-failed"], router.counters["tracker-recovered"]) == (1, 1)


def test_a_backup_recomputes_its_skew_with_its_new_priority() -> None:
    router = backup(track=(LAN,))
    assert router.track("lan", False, 1.0) == []
    assert router.skew_time == skew_time(70, 100)
    assert router.master_down_interval == master_down_interval(70, 100)


def test_a_backup_whose_priority_reaches_255_takes_over() -> None:
    router = backup(priority=200)
    actions = router.reconfigure(VrrpConfig(**{**_settings(router), "priority": 255}), 3.0)
    assert router.state is VrrpState.MASTER
    assert isinstance(actions[0], TakeAddresses) and actions[0].accept
    assert sent_vrrp(frames(actions)[0]).priority == 255


def test_tracking_an_unknown_name_is_the_callers_mistake() -> None:
    router = instance(track=(LAN,))
    with pytest.raises(ValueError, match="tracks lan, not 'wan'"):
        router.track("wan", False, 0.0)


# -- reconfiguration ------------------------------------------------------------------------------


def _settings(router: VrrpInstance) -> dict[str, Any]:
    config = router.config
    return {f: getattr(config, f) for f in VrrpConfig.__dataclass_fields__}


def test_a_master_reannounces_changed_addresses() -> None:
    router = master()
    new = VrrpConfig(
        **{**_settings(router), "virtual_addresses": (IPv4Address("10.0.0.250"),), "name": ""}
    )
    actions = router.reconfigure(new, 101.0)
    release, take = actions[0], actions[1]
    assert isinstance(release, ReleaseAddresses) and release.addresses == (IPv4Address(VIP).packed,)
    assert isinstance(take, TakeAddresses) and take.addresses == (IPv4Address("10.0.0.250").packed,)
    assert sent_vrrp(frames(actions, FrameKind.ADVERTISEMENT)[0]).addrlist == ["10.0.0.250"]
    (garp,) = frames(actions, FrameKind.GRATUITOUS_ARP)
    assert Ether(garp.frame[10:])[ARP].psrc == "10.0.0.250"
    same = router.reconfigure(new, 101.5)
    assert [type(a) for a in same] == [SendFrame, SendFrame]  # advertisement and ARP only


def test_a_new_interval_is_the_masters_next_one() -> None:
    router = master()
    router.reconfigure(VrrpConfig(**{**_settings(router), "advert_interval_cs": 20}), 101.0)
    assert router.next_deadline() == pytest.approx(101.2)


def test_vrid_and_interface_cannot_change() -> None:
    router = backup()
    with pytest.raises(ValueError, match="vrid"):
        router.reconfigure(VrrpConfig(**{**_settings(router), "vrid": 8, "name": ""}), 1.0)
    with pytest.raises(ValueError, match="interface"):
        router.reconfigure(VrrpConfig(**{**_settings(router), "interface": "eth1"}), 1.0)
    assert router.config.vrid == 7 and router.config.interface == "eth0"


# -- status --------------------------------------------------------------------------------------


def test_the_status_is_plain_data() -> None:
    router = master(name="VI_1")
    router.receive(advert(ip_ttl=3), 101.0)
    snapshot = router.status().as_dict()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["name"] == "VI_1" and snapshot["state"] == "master"
    assert snapshot["virtual_mac"] == "00:00:5e:00:01:07"
    assert snapshot["virtual_addresses"] == [VIP] and snapshot["master_address"] == "10.0.0.1"
    assert snapshot["transitions"] == 2 and snapshot["last_transition"] == 100.0
    assert snapshot["counters"]["drop-ttl"] == 1 and snapshot["counters"]["to-master"] == 1
    assert snapshot["counters"]["to-backup"] == 1
    assert snapshot["master_down_interval_cs"] == 360.9375 and snapshot["skew_time_cs"] == 60.9375


# -- the speaker ---------------------------------------------------------------------------------


def _config(**settings: Any) -> VrrpConfig:
    values: dict[str, Any] = {
        "vrid": 7,
        "interface": "eth0",
        "virtual_addresses": (IPv4Address(VIP),),
        "source_address": IPv4Address("10.0.0.1"),
    }
    values.update(settings)
    return VrrpConfig(**values)


def test_the_speaker_routes_by_interface_and_vrid() -> None:
    speaker = VrrpSpeaker([_config(), _config(vrid=8), _config(interface="eth1")])
    speaker.start(0.0)
    speaker.receive("eth0", advert(vrid=8, priority=200), 1.0)
    assert speaker.instance("eth0", 8).status().master_priority == 200
    assert speaker.instance("eth0", 7).status().master_priority is None
    assert speaker.instance("eth1", 7).status().master_priority is None
    speaker.receive("eth0", advert(vrid=9), 1.0)
    speaker.receive("eth2", advert(vrid=7), 1.0)
    assert speaker.counters["drop-vrid-not-configured"] == 2
    speaker.receive("eth1", advert(vrid=7, ip_ttl=1), 1.0)  # counted by the instance it names
    assert speaker.instance("eth1", 7).counters["drop-ttl"] == 1
    speaker.receive("eth0", b"\x45", 1.0)  # no VRID to name: the speaker counts it
    assert speaker.counters["drop-ip-malformed"] == 1
    assert speaker.next_deadline() == min(i.next_deadline() or 1e9 for i in speaker.instances())
    assert [s.name for s in speaker.status()] == ["eth0/7", "eth0/8", "eth1/7"]
    with pytest.raises(KeyError, match="VRID 9"):
        speaker.instance("eth0", 9)
    with pytest.raises(ValueError, match="vrid"):
        speaker.add(_config())


def test_the_speaker_reads_frames_as_the_router_gets_them() -> None:
    speaker = VrrpSpeaker([_config()])
    speaker.start(0.0)
    frame = bytes(10) + bytes(
        Ether(src="00:00:5e:00:01:07", dst="01:00:5e:00:00:12") / IP(advert(priority=200))
    )
    speaker.receive_frame("eth0", frame + bytes(6), 1.0)  # Ethernet padding after the packet
    assert speaker.instance("eth0", 7).status().master_priority == 200
    speaker.receive_frame("eth0", bytes(10) + bytes(Ether() / ARP()), 1.0)
    speaker.receive_frame("eth0", b"\x00" * 3, 1.0)
    assert speaker.counters["drop-not-ipv4"] == 2


def test_the_speaker_tracks_shuts_down_and_removes() -> None:
    speaker = VrrpSpeaker([_config(track=(LAN,)), _config(vrid=8), _config(vrid=9, track=(LAN,))])
    speaker.start(0.0)
    speaker.on_timer(10.0)
    assert all(i.state is VrrpState.MASTER for i in speaker.instances())
    actions = speaker.track("lan", False, 10.5)
    assert sorted(sent_vrrp(a).vrid for a in frames(actions)) == [7, 9]
    with pytest.raises(ValueError, match="no VRRP instance tracks 'wan'"):
        speaker.track("wan", False, 10.5)
    again = speaker.reconfigure(_config(vrid=8, priority=120), 10.6)
    assert sent_vrrp(frames(again)[0]).priority == 120
    gone = speaker.remove("eth0", 8, 11.0)
    assert sent_vrrp(frames(gone)[0]).priority == 0
    assert len(speaker.instances()) == 2
    down = speaker.shutdown(12.0)
    assert sorted(sent_vrrp(a).priority for a in frames(down)) == [0, 0]
    assert speaker.next_deadline() is None


# -- nothing on the receive path raises ---------------------------------------------------------


@EXAMPLES
@given(st.binary(max_size=80), st.sampled_from(["idle", "backup", "master"]))
def test_arbitrary_bytes_never_raise(data: bytes, state: str) -> None:
    speaker = VrrpSpeaker([_config(priority=255 if state == "master" else 100)])
    if state != "idle":
        speaker.start(0.0)
    speaker.receive("eth0", data, 1.0)
    speaker.receive_frame("eth0", data, 1.0)
    speaker.receive_frame("eth0", bytes(10) + bytes(Ether()) + data, 1.0)
    speaker.instance("eth0", 7).receive(data, 1.0, offset=len(data) // 2)


@EXAMPLES
@given(st.data())
def test_mutated_advertisements_never_raise(data: st.DataObject) -> None:
    router = backup()
    packet = bytearray(advert(priority=data.draw(st.integers(0, 255))))
    for _ in range(data.draw(st.integers(0, 3))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    router.receive(bytes(packet[: data.draw(st.integers(0, len(packet)))]), 1.0)
    assert router.state in (VrrpState.BACKUP, VrrpState.MASTER)
    total = sum(v for k, v in router.counters.items() if k.startswith("drop-"))
    assert router.counters["rx-advertisements"] == 1 and total <= 1


def test_sent_frames_are_for_the_wire() -> None:
    router = master()
    for action in frames(router.on_timer(101.0)):
        assert action.frame[:10] == bytes(10)
        assert Ether(action.frame[10:])[IP].ttl == 255
        assert router.receive(action.frame, 101.0, IP_AT) == []  # its own: dropped
    assert router.counters["drop-own-advertisement"] == 1
