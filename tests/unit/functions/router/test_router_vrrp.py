"""Two routers sharing virtual routers (VRRPv3): the router's side of it.

The routers are wired to each other in memory: what one sends on an interface
reaches the other's interface of the same name (one LAN per name), with a
fake clock that moves from one timer deadline to the next. Hosts are scapy
frames. The election itself is tested on VRRP instances alone
(test_vrrp_election.py); here, what being master or backup means for the
router: ARP for the virtual address, frames to the virtual MAC, the NAT on
the virtual address, advertisements never forwarded, a clean stop, and the
tracked gateway.
"""

from __future__ import annotations

from collections import defaultdict
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, cast

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRPv3

from pktchain.functions.nat.config import NatConfig
from pktchain.functions.router.function import Router, RouterConfig, RouterInterface
from pktchain.functions.router.vrrp import Tracker, TrackKind, VrrpConfig
from pktchain.functions.sdk import frames_out
from pktchain.messenger.ops import (
    Op,
    RouterControl,
    apply_command,
    parse_command,
    router_interface_factory,
)
from pktchain.messenger.wire import MessengerError
from pktchain.node.router_file import RouterFileError, parse_router
from support.router import receive, timers

VIP_IN, VIP_OUT = "10.0.0.1", "198.51.100.1"
VMAC_IN, VMAC_OUT = "00:00:5e:00:01:34", "00:00:5e:00:01:33"  # VRIDs 52 and 51
HOST, HOST_MAC = "10.0.0.10", "02:aa:00:00:00:0a"
SERVER, SERVER_MAC = "198.51.100.20", "02:bb:00:00:00:14"
VNET = bytes(10)
MAX_FRAMES = 10_000


def router(n: int, priority: int, **vrrp: Any) -> Router:
    """Router n (1 or 2): its own addresses .1+n, the pair's virtual ones .1."""
    interfaces = (
        RouterInterface("inside", f"02:00:00:00:01:0{n}", IPv4Interface(f"10.0.0.{n + 1}/24")),
        RouterInterface(
            "outside",
            f"02:00:00:00:02:0{n}",
            IPv4Interface(f"198.51.100.{n + 1}/24"),
            external=True,
        ),
    )
    settings: dict[str, Any] = {"priority": priority, "advert_interval_cs": 5}
    settings.update(vrrp)
    return Router(
        RouterConfig(
            interfaces=interfaces,
            upstream_gateway=IPv4Address(SERVER),
            nat=NatConfig(VIP_OUT, ("10.0.0.0/24",), port_seed=3),
            vrrp=(
                VrrpConfig(52, "inside", (IPv4Address(VIP_IN),), **settings),
                VrrpConfig(51, "outside", (IPv4Address(VIP_OUT),), **settings),
            ),
        )
    )


class Lans:
    """Routers whose same-named interfaces share a LAN; what hosts on each LAN saw."""

    def __init__(self, *routers: Router) -> None:
        self.routers = list(routers)
        self.dead: set[int] = set()
        self.now = 0.0
        self.seen: dict[str, list[Ether]] = defaultdict(list)

    def alive(self) -> list[Router]:
        return [r for r in self.routers if id(r) not in self.dead]

    def send(self, sender: Router | None, outputs: list[tuple[str, Any]]) -> None:
        """Hand what `sender` sent to every other live router, and note it for the hosts."""
        queue = [(sender, iface, bytes(frame)) for iface, frame in outputs]
        for _ in range(MAX_FRAMES):
            if not queue:
                return
            source, iface, data = queue.pop(0)
            if source is not None and id(source) in self.dead:
                continue
            self.seen[iface].append(Ether(data[10:]))
            for other in self.alive():
                if other is not source:
                    queue += [
                        (other, i, bytes(f)) for i, f in receive(other, iface, data, self.now)
                    ]
        raise AssertionError("frames kept coming")

    def host_sends(self, iface: str, frame: bytes) -> list[tuple[Router, str, Ether]]:
        """A host's frame reaches every live router; what each sent for it."""
        out = []
        for other in self.alive():
            for name, data in receive(other, iface, frame, self.now):
                out.append((other, name, Ether(bytes(data)[10:])))
        return out

    def run(self, until: float) -> None:
        for _ in range(MAX_FRAMES):
            due = [(d, r) for r in self.alive() if (d := r.next_deadline()) is not None]
            if not due:
                break
            deadline = min(d for d, _ in due)
            if deadline > until:
                break
            self.now = max(self.now, deadline)
            for d, r in due:
                if d <= self.now:
                    self.send(r, timers(r, self.now))
        self.now = max(self.now, until)

    def kill(self, router: Router) -> None:
        self.dead.add(id(router))


def states(r: Router) -> dict[str, str]:
    return {row["interface"]: row["state"] for row in r.vrrp_status()}


def arp_for(target: str) -> bytes:
    return VNET + bytes(
        Ether(src=HOST_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=HOST_MAC, psrc=HOST, hwdst="00:00:00:00:00:00", pdst=target)
    )


def ping_out(dst_mac: str, ident: int = 7) -> bytes:
    return VNET + bytes(
        Ether(src=HOST_MAC, dst=dst_mac)
        / IP(src=HOST, dst=SERVER, ttl=64)
        / ICMP(type=8, id=ident, seq=1)
        / b"x"
    )


@pytest.fixture
def pair() -> tuple[Lans, Router, Router]:
    r1, r2 = router(1, 200), router(2, 100)
    lans = Lans(r1, r2)
    lans.run(1.0)
    # The server on the outside answers ARP for itself (it is the upstream gateway).
    for r in (r1, r2):
        receive(
            r,
            "outside",
            VNET
            + bytes(
                Ether(src=SERVER_MAC, dst="ff:ff:ff:ff:ff:ff")
                / ARP(op=1, hwsrc=SERVER_MAC, psrc=SERVER, pdst=f"198.51.100.{3 if r is r2 else 2}")
            ),
            lans.now,
        )
    return lans, r1, r2


def test_the_higher_priority_router_is_master_of_both_and_answers_arp_from_the_virtual_mac(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    assert states(r1) == {"inside": "master", "outside": "master"}
    assert states(r2) == {"inside": "backup", "outside": "backup"}
    # The master's advertisements, as scapy decodes them: VRRPv3 to 224.0.0.18,
    # TTL 255, from the virtual MAC, the virtual address listed.
    adverts = [f for f in lans.seen["inside"] if VRRPv3 in f and f[VRRPv3].priority == 200]
    assert adverts
    advert = adverts[-1]
    assert (advert.src, advert[IP].dst, advert[IP].ttl) == (VMAC_IN, "224.0.0.18", 255)
    assert (advert[VRRPv3].vrid, advert[VRRPv3].addrlist) == (52, [VIP_IN])
    # A host asking for its gateway gets the master's answer only, from the virtual MAC.
    answers = lans.host_sends("inside", arp_for(VIP_IN))
    assert len(answers) == 1
    owner, iface, reply = answers[0]
    assert owner is r1 and iface == "inside"
    assert (reply.src, reply[ARP].hwsrc, reply[ARP].psrc, reply[ARP].op) == (
        VMAC_IN,
        VMAC_IN,
        VIP_IN,
        2,
    )
    # Each router still answers for its own address, from its own MAC.
    own = lans.host_sends("inside", arp_for("10.0.0.3"))
    assert [(r, f[ARP].hwsrc) for r, _i, f in own] == [(r2, "02:00:00:00:01:02")]


def test_frames_to_the_virtual_mac_go_through_the_masters_nat_only(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    lans.host_sends("inside", arp_for(VIP_IN))  # the host finds its gateway
    out = lans.host_sends("inside", ping_out(VMAC_IN))
    assert len(out) == 1
    sender, iface, echo = out[0]
    assert sender is r1 and iface == "outside"
    # Translated to the pair's virtual address: the backup will answer for it.
    assert (echo[IP].src, echo[IP].dst, echo.dst) == (VIP_OUT, SERVER, SERVER_MAC)
    # From the virtual MAC: every forwarded frame shows the LAN's bridges where it is.
    assert echo.src == VMAC_OUT
    assert r2.status()["counters"]["drop-not-our-mac"] >= 1
    # The server's answer to the virtual address comes back through the master.
    reply = VNET + bytes(
        Ether(src=SERVER_MAC, dst=VMAC_OUT)
        / IP(src=SERVER, dst=VIP_OUT, ttl=64)
        / ICMP(type=0, id=echo[ICMP].id, seq=1)
        / b"x"
    )
    back = lans.host_sends("outside", reply)
    assert [(r, i, f[IP].dst, f.dst, f.src) for r, i, f in back] == [
        (r1, "inside", HOST, HOST_MAC, VMAC_IN)
    ]


def test_advertisements_are_never_forwarded_and_the_masters_arp_teaches_the_backup_nothing(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, _r1, r2 = pair
    counters = r2.status()["counters"]
    assert counters["vrrp-in"] > 0
    # Nothing VRRP crossed from one LAN to the other.
    for iface, other in (("inside", 51), ("outside", 52)):
        assert not [f for f in lans.seen[iface] if VRRPv3 in f and f[VRRPv3].vrid == other]
    # The master's gratuitous ARP for the virtual address: no neighbour, no host.
    garp = [f for f in lans.seen["inside"] if ARP in f and f[ARP].psrc == VIP_IN]
    assert garp and garp[0].src == VMAC_IN
    assert counters["drop-arp-virtual-address"] >= 1
    assert VIP_IN not in {h.ip for h in r2.hosts()}
    assert VIP_IN not in {e.ip for e in r2.arp_table()}


def test_a_clean_stop_hands_over_within_skew_time_and_the_backup_takes_the_addresses(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    lans.send(r1, frames_out(r1.vrrp_shutdown(lans.now)))
    stopped = lans.now
    zero = [f for f in lans.seen["outside"] if VRRPv3 in f and f[VRRPv3].priority == 0]
    assert zero, "no priority 0 advertisement"
    lans.kill(r1)
    lans.run(stopped + 0.1)
    assert states(r2) == {"inside": "master", "outside": "master"}
    took = [row["last_transition"] for row in r2.vrrp_status()]
    # Skew_Time for priority 100 at 5 cs: (256 - 100) * 5 / 256 cs = 30.5 ms.
    assert all(t - stopped <= 0.031 for t in took), took
    answers = lans.host_sends("inside", arp_for(VIP_IN))
    assert [(r, f[ARP].hwsrc) for r, _i, f in answers] == [(r2, VMAC_IN)]
    out = lans.host_sends("inside", ping_out(VMAC_IN))
    assert [(r, f[IP].src, f.src) for r, _i, f in out] == [(r2, VIP_OUT, VMAC_OUT)]


def test_a_dead_master_is_replaced_after_master_down_interval(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    lans.kill(r1)
    killed = lans.now
    lans.run(killed + 1.0)
    assert states(r2) == {"inside": "master", "outside": "master"}
    # Master_Down_Interval at 5 cs, priority 100: 3 * 5 + 3.05 cs = 180.5 ms at most.
    took = [row["last_transition"] - killed for row in r2.vrrp_status()]
    assert all(0 < t <= 0.181 for t in took), took


def test_a_gateway_that_stops_answering_lowers_the_priority_and_the_other_preempts() -> None:
    track = (Tracker(TrackKind.GATEWAY, SERVER, 150),)
    r1, r2 = router(1, 200, track=track), router(2, 100)
    lans = Lans(r1, r2)
    lans.run(0.5)
    assert states(r1)["outside"] == "master"
    # The server answers r1's probes for a while: r1 stays master.
    for step in range(6):
        lans.run(0.5 + step * 0.5)
        receive(
            r1,
            "outside",
            VNET
            + bytes(
                Ether(src=SERVER_MAC, dst="02:00:00:00:02:01")
                / ARP(
                    op=2,
                    hwsrc=SERVER_MAC,
                    psrc=SERVER,
                    hwdst="02:00:00:00:02:01",
                    pdst="198.51.100.2",
                )
            ),
            lans.now,
        )
    assert states(r1)["outside"] == "master"
    probes = [
        f for f in lans.seen["outside"] if ARP in f and f[ARP].pdst == SERVER and f[ARP].op == 1
    ]
    assert probes
    # Then it falls silent: after three lost probes r1 is at 50 and r2 preempts.
    lans.run(lans.now + 2.5)
    status = {row["interface"]: row for row in r1.vrrp_status()}
    assert status["outside"]["effective_priority"] == 50
    assert status["outside"]["failed_trackers"] == [SERVER]
    assert states(r1)["outside"] == "backup" and states(r2)["outside"] == "master"
    assert r1.status()["counters"]["vrrp-gateway-down"] == 1


ROUTER_FILE = """\
name: router
interfaces:
  inside: {network: inside, mac: "02:00:00:00:01:01", address: 10.0.0.2/24}
  outside: {network: outside, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
            external: true, gateway: 198.51.100.20}
nat: {}
vrrp:
  - {vrid: 51, interface: outside, virtual_addresses: [198.51.100.1], priority: 200}
  - vrid: 52
    interface: inside
    virtual_addresses: [10.0.0.1]
    advert_interval: 0.05
    preempt_delay: 1.5
"""


def test_the_router_file_takes_vrrp_and_puts_the_nat_on_the_virtual_address() -> None:
    spec = parse_router(ROUTER_FILE)
    assert spec.config.nat is not None and spec.config.nat.external_address == VIP_OUT
    (outside, inside) = spec.config.vrrp
    assert (outside.vrid, outside.priority, outside.advert_interval_cs) == (51, 200, 100)
    assert (inside.vrid, inside.advert_interval_cs, inside.preempt_delay) == (52, 5, 1.5)


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        ("priority: 200}", 8, "vrrp[0].priority", "not in 1..255"),
        ("interface: outside, virtual", 8, "vrrp[0].interface", "not a router interface"),
        ("[198.51.100.1]", 8, "vrrp[0].virtual_addresses", "not a host of outside"),
        ("advert_interval: 0.05", 12, "vrrp[1].advert_interval", "hundredths"),
    ],
)
def test_a_wrong_vrrp_setting_is_named_with_its_line(
    change: str, line: int, field: str, words: str
) -> None:
    wrong = {
        "priority: 200}": "priority: 300}",
        "interface: outside, virtual": "interface: wan, virtual",
        "[198.51.100.1]": "[10.9.9.9]",
        "advert_interval: 0.05": "advert_interval: 0.005",
    }[change]
    with pytest.raises(RouterFileError) as caught:
        parse_router(ROUTER_FILE.replace(change, wrong), source="r.yaml")
    text = str(caught.value)
    assert field in text and words in text, text
    if field.endswith(("priority", "advert_interval")):
        assert f"r.yaml:{line}:" in text, text


def test_the_nat_on_an_address_that_is_neither_the_interfaces_nor_virtual_is_refused() -> None:
    text = ROUTER_FILE.replace("nat: {}", "nat: {external_address: 198.51.100.9}")
    with pytest.raises(RouterFileError) as caught:
        parse_router(text)
    assert "neither the external interface's address" in str(caught.value)


def test_removing_an_interface_that_carries_a_virtual_router_is_refused(tmp_path: Path) -> None:
    r = router(1, 200)
    with pytest.raises(ValueError, match="carries the virtual router"):
        r.remove_interface("inside")


def test_vrrp_set_through_the_messengers_operations_moves_the_master(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    make = router_interface_factory()
    command = parse_command(
        Op.VRRP_SET, {"interface": "outside", "vrid": 51, "priority": 50, "preempt": True}
    )
    status = apply_command(command, cast(RouterControl, _Control(r1)), make)
    assert isinstance(status, dict) and status["priority"] == 50
    lans.run(lans.now + 0.5)  # the new priority goes out; the other preempts
    assert states(r1)["outside"] == "backup" and states(r2)["outside"] == "master"
    assert states(r1)["inside"] == "master"  # the other virtual router did not move
    listed = apply_command(parse_command(Op.VRRP, {}), cast(RouterControl, _Control(r1)), make)
    assert isinstance(listed, list) and {row["vrid"] for row in listed} == {51, 52}


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        ({"interface": "outside", "vrid": 0}, "args.vrid", "1"),
        ({"interface": "outside", "vrid": 51, "priority": 256}, "args.priority", "255"),
        ({"interface": "outside", "vrid": 51, "preempt_delay": -1}, "args.preempt_delay", "0"),
        ({"interface": "outside", "vrid": 51, "colour": 3}, "args.colour", "unknown"),
    ],
)
def test_vrrp_set_arguments_are_checked_by_name(
    args: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(MessengerError) as caught:
        parse_command(Op.VRRP_SET, args)
    assert caught.value.field == field and words in caught.value.message


def test_vrrp_set_refuses_what_the_router_cannot_take_and_changes_nothing() -> None:
    r1 = router(1, 200)
    before = r1.vrrp_status()
    with pytest.raises(KeyError, match="VRID 9"):
        r1.vrrp_set("outside", 9, {"priority": 10})
    with pytest.raises(ValueError, match="advert_interval"):
        r1.vrrp_set("outside", 51, {"advert_interval": 0.005})
    with pytest.raises(ValueError, match="255"):
        r1.vrrp_set("outside", 51, {"priority": 255})  # not the address owner
    assert r1.vrrp_status() == before


class _Control:
    """The router as the messenger's operations call it (the node adds ports and timers)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    def vrrp(self) -> object:
        return self.router.vrrp_status()

    def vrrp_set(self, interface: str, vrid: int, changes: Any, /) -> object:
        return self.router.vrrp_set(interface, vrid, changes)


def test_a_master_known_gone_is_replaced_after_skew_time_not_master_down_interval(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    lans.kill(r1)
    gone = lans.now
    lans.send(r2, frames_out(r2.vrrp_master_gone(gone)))
    lans.run(gone + 0.05)
    assert states(r2) == {"inside": "master", "outside": "master"}
    took = [row["last_transition"] - gone for row in r2.vrrp_status()]
    assert all(0 < t <= 0.031 for t in took), took
    assert all(row["counters"]["master-gone"] == 1 for row in r2.vrrp_status())
    # A master, or a router following no one, ignores it.
    assert r2.vrrp_master_gone(lans.now) == []
    alone = router(1, 200)
    assert alone.vrrp_master_gone(0.0) == []


def test_a_draining_master_forwards_until_its_successor_is_heard(
    pair: tuple[Lans, Router, Router],
) -> None:
    lans, r1, r2 = pair
    lans.host_sends("inside", arp_for(VIP_IN))
    stop = lans.now
    frames = frames_out(r1.vrrp_shutdown(stop, drain=True))
    assert r1.vrrp_draining()
    # Its priority 0 goes out; it no longer advertises, but before the backup
    # takes over it still forwards what hosts send the virtual MAC.
    lans.send(r1, frames)
    out = lans.host_sends("inside", ping_out(VMAC_IN, ident=8))
    assert [(r, f[IP].src) for r, _i, f in out] == [(r1, VIP_OUT)]
    # The backup takes over (Skew_Time) and advertises: r1 lets go on hearing it.
    lans.run(stop + 0.1)
    assert states(r2) == {"inside": "master", "outside": "master"}
    assert not r1.vrrp_draining()
    assert r1.status()["counters"]["vrrp-successor-heard"] == 2
    out = lans.host_sends("inside", ping_out(VMAC_IN, ident=9))
    assert [r for r, _i, _f in out] == [r2]


def test_a_draining_master_that_hears_no_one_releases_when_told() -> None:
    alone = router(1, 200)
    lans = Lans(alone)
    lans.run(1.0)
    assert states(alone)["inside"] == "master"
    alone.vrrp_shutdown(lans.now, drain=True)
    assert alone.vrrp_draining()
    alone.vrrp_release()
    assert not alone.vrrp_draining()
    assert lans.host_sends("inside", ping_out(VMAC_IN)) == []
    assert alone.status()["counters"]["drop-not-our-mac"] == 1


def test_a_held_backup_follows_a_lower_master_until_let_go() -> None:
    r2 = router(2, 100)
    lans = Lans(r2)
    lans.run(1.0)
    assert states(r2)["inside"] == "master"
    r1 = router(1, 200)
    r1.vrrp_hold_preemption(True)  # its copy of r2's state is not complete yet
    lans.routers.append(r1)
    lans.run(3.0)
    assert states(r1) == {"inside": "backup", "outside": "backup"}
    assert states(r2) == {"inside": "master", "outside": "master"}
    assert all(row["counters"]["preempt-held"] > 10 for row in r1.vrrp_status())
    r1.vrrp_hold_preemption(False)
    let_go = lans.now
    lans.run(let_go + 0.5)
    assert states(r1) == {"inside": "master", "outside": "master"}
    assert states(r2) == {"inside": "backup", "outside": "backup"}
    # Master_Down_Interval at 5 cs for priority 200: 15 + 1.09 cs.
    assert all(row["last_transition"] - let_go <= 0.17 for row in r1.vrrp_status())
