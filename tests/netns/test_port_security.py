"""Port security on real hosts: no host on a secured port can pose as another.

Three hosts on the router's inside network and one outside, each a namespace
whose NIC is a TAP port of the node (every port is secured: it has a MAC and
addresses). `mallory` crafts frames with scapy and sends them from its own
namespace through an AF_PACKET socket on its NIC, as any program of a host
could; what reaches the other hosts is captured on their NICs, and what the
node refused is read from its port counters. The real `openstack` client turns
allowed address pairs and port security on and off, and the real kernel stacks
of the hosts (ping, their ARP caches, SLAAC) show the effect; the router's
neighbour for a secured host is its port's binding, and a host whose port is
not secured still moves by gratuitous ARP.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import DHCP6_Advertise
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import ICMPv6ND_RA, ICMPv6NDOptPrefixInfo, IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet

from pktchain.lab import Lab, LabHost, node_host_spec, wait_until
from pktchain.node.process import NodeProcess
from support.nat_lab import OUTSIDE, ROUTER, ROUTER_IN
from support.openstack_cli import OPENSTACK, Openstack

# Hosts' traffic through the node: `make test` runs it with veth and with TAP host NICs.
pytestmark = [
    pytest.mark.datapath,
    pytest.mark.skipif(not OPENSTACK.exists(), reason="the openstack CLI is not installed"),
]

INSIDE, INSIDE_MAC = "10.0.0.10", "02:00:00:00:01:0a"
INSIDE2, INSIDE2_MAC = "10.0.0.11", "02:00:00:00:01:0b"
MALLORY, MALLORY_MAC = "10.0.0.66", "02:00:00:00:01:66"
ROUTER_IN_MAC = ROUTER["interfaces"]["inside"]["mac"]
OTHER_MAC = "02:00:00:00:01:77"
BROADCAST = "ff:ff:ff:ff:ff:ff"
MARK_PORT = 9999
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

TOPOLOGY: dict[str, Any] = {
    "lab": "portsec",
    "hosts": {
        "inside": node_host_spec("inside", INSIDE_MAC, f"{INSIDE}/24", ROUTER_IN),
        "inside2": node_host_spec("inside", INSIDE2_MAC, f"{INSIDE2}/24", ROUTER_IN),
        "mallory": {
            **node_host_spec("inside", MALLORY_MAC, f"{MALLORY}/24", ROUTER_IN),
            # One interface answers ARP for its own addresses only (a macvlan joins later).
            "sysctls": {"net.ipv4.conf.all.arp_ignore": 1},
        },
        "outside": node_host_spec("outside", "02:00:00:00:02:0a", f"{OUTSIDE}/24"),
    },
}
HOSTS = ("inside", "inside2", "mallory", "outside")


@pytest.fixture
def secured(
    router_node: Callable[..., tuple[Lab, NodeProcess]], tmp_path: Path
) -> tuple[Lab, NodeProcess, Openstack]:
    lab, node = router_node(TOPOLOGY, ROUTER)
    openstack = Openstack(f"{node.api_url()}/v2.0", tmp_path, ("--os-auth-type", "none"))
    # Every host reaches the router: links are up and the router knows them.
    for name in ("inside", "inside2", "mallory"):
        wait_until(
            lambda name=name: ping(lab.host(name), ROUTER_IN, count=1),  # type: ignore[misc]
            timeout=15,
            what=f"{name} pings the router",
        )
    return lab, node, openstack


# -- sending and capturing ----------------------------------------------------


def inject(host: LabHost, packets: list[Packet], *, interval: float = 0.0) -> int:
    """Send crafted Ethernet frames from `host`'s NIC, as any program there could."""
    sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    with sock:
        sock.bind(("eth0", 0))
        for packet in packets:
            sock.send(bytes(packet))
            if interval:
                time.sleep(interval)  # pacing an attack, not waiting for anything
    return len(packets)


class Capture:
    """Every frame `host` receives on eth0 from the moment this is made."""

    def __init__(self, host: LabHost) -> None:
        self.host = host
        self._sock = host.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("eth0", 0))
        self._sock.setblocking(False)
        self.frames: list[Ether] = []

    def close(self) -> None:
        self._sock.close()

    def received(self, match: Callable[[Ether], bool] = lambda _: True) -> list[Ether]:
        for _ in range(10_000):
            try:
                data, address = self._sock.recvfrom(65535)
            except BlockingIOError:
                break
            if address[2] != PACKET_OUTGOING:
                self.frames.append(Ether(data))
        return [frame for frame in self.frames if match(frame)]

    def wait_for(self, match: Callable[[Ether], bool], what: str) -> Ether:
        found: list[Ether] = []

        def arrived() -> bool:
            found[:] = self.received(match)
            return bool(found)

        wait_until(arrived, timeout=10, what=f"{self.host.name} receives {what}")
        return found[0]


@contextmanager
def capture(host: LabHost) -> Iterator[Capture]:
    wire = Capture(host)
    try:
        yield wire
    finally:
        wire.close()


def marked(mark: bytes) -> Callable[[Ether], bool]:
    return lambda frame: UDP in frame and frame[UDP].dport == MARK_PORT and mark in bytes(frame)


def udp(
    src_mac: str, src: str, mark: bytes, dst_mac: str = INSIDE_MAC, dst: str = INSIDE
) -> Packet:
    return (
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=src, dst=dst)
        / UDP(sport=MARK_PORT, dport=MARK_PORT)
        / mark
    )


def ping(host: LabHost, target: str, *, count: int = 3, source: str | None = None) -> bool:
    argv = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1", target]
    if source is not None:
        argv[1:1] = ["-I", source]
    return host.run(argv, timeout=15).ok


def drops(node: NodeProcess, host: str) -> dict[str, int]:
    return dict(node.port(f"{host}:eth0")["drops"])


def spoofed(node: NodeProcess, host: str) -> dict[str, int]:
    return {k: v for k, v in drops(node, host).items() if k.startswith("spoofed-")}


def wait_drops(node: NodeProcess, host: str, expected: dict[str, int]) -> None:
    wait_until(
        lambda: all(spoofed(node, host).get(k, 0) >= v for k, v in expected.items()),
        timeout=10,
        what=f"{host}'s port counts {expected}",
    )


def neighbour(host: LabHost, address: str) -> str | None:
    """The MAC `host`'s kernel holds for `address`, if any."""
    shown = host.run(["ip", "neigh", "show", address, "dev", "eth0"], timeout=10).stdout
    found = re.search(r"lladdr ([0-9a-f:]{17})", shown)
    return found.group(1) if found else None


def router_neighbour(node: NodeProcess, address: str) -> str | None:
    return next((e["mac"] for e in node.router()["arp"] if e["ip"] == address), None)


# -- the tests ------------------------------------------------------------------


def test_a_secured_port_sends_only_as_itself(secured: tuple[Lab, NodeProcess, Openstack]) -> None:
    lab, node, _ = secured
    assert all(node.port(f"{name}:eth0")["secured"] for name in HOSTS)
    inside = lab.host("inside")
    with capture(inside) as wire:
        sent = inject(
            lab.host("mallory"),
            [udp(INSIDE2_MAC, MALLORY, b"stolen-mac")] * 5
            + [udp(MALLORY_MAC, INSIDE2, b"stolen-ip")] * 5
            + [udp(OTHER_MAC, "10.0.0.77", b"made-up")] * 5
            + [
                # An ARP reply telling inside that inside2 is at mallory's MAC.
                Ether(src=MALLORY_MAC, dst=INSIDE_MAC)
                / ARP(op=2, hwsrc=MALLORY_MAC, psrc=INSIDE2, hwdst=INSIDE_MAC, pdst=INSIDE)
            ]
            * 5
            + [udp(MALLORY_MAC, MALLORY, b"sentinel")],
        )
        # Frames from one port are forwarded in order: once the last is there,
        # whatever of the others was let through is there too.
        wire.wait_for(marked(b"sentinel"), "mallory's own frame")
        assert sent == 21
        assert wire.received(marked(b"stolen")) == []
        assert wire.received(marked(b"made-up")) == []
        assert wire.received(lambda f: ARP in f and f[ARP].psrc == INSIDE2) == []
    wait_drops(node, "mallory", {"spoofed-mac": 10, "spoofed-ip": 5, "spoofed-arp": 5})
    assert spoofed(node, "mallory") == {"spoofed-mac": 10, "spoofed-ip": 5, "spoofed-arp": 5}
    assert neighbour(inside, INSIDE2) in (None, INSIDE2_MAC)
    # The hosts' own traffic (ARP, IPv6 link-local, DAD, MLD) was never refused.
    for name in ("inside", "inside2", "outside"):
        assert spoofed(node, name) == {}, name


def test_an_arp_claim_on_a_host_or_the_router_stops_no_traffic_through_the_nat(
    secured: tuple[Lab, NodeProcess, Openstack],
) -> None:
    lab, node, openstack = secured
    inside2, mallory = lab.host("inside2"), lab.host("mallory")
    claims = [
        # Gratuitous ARP for inside2's address and for the router's, to everyone.
        Ether(src=MALLORY_MAC, dst=BROADCAST)
        / ARP(op=1, hwsrc=MALLORY_MAC, psrc=INSIDE2, pdst=INSIDE2),
        Ether(src=MALLORY_MAC, dst=BROADCAST)
        / ARP(op=1, hwsrc=MALLORY_MAC, psrc=ROUTER_IN, pdst=ROUTER_IN),
        # Replies nobody asked for: to the router about inside2, to inside2 about the router.
        Ether(src=MALLORY_MAC, dst=ROUTER_IN_MAC)
        / ARP(op=2, hwsrc=MALLORY_MAC, psrc=INSIDE2, hwdst=ROUTER_IN_MAC, pdst=ROUTER_IN),
        Ether(src=MALLORY_MAC, dst=INSIDE2_MAC)
        / ARP(op=2, hwsrc=MALLORY_MAC, psrc=ROUTER_IN, hwdst=INSIDE2_MAC, pdst=INSIDE2),
    ]
    sent = under_attack(inside2, lambda: inject(mallory, claims * 40, interval=0.02))
    wait_drops(node, "mallory", {"spoofed-arp": sent})
    assert router_neighbour(node, INSIDE2) == INSIDE2_MAC
    assert neighbour(inside2, ROUTER_IN) == ROUTER_IN_MAC

    # With its port security off, mallory's claims reach the router; the
    # router's neighbour for inside2 is still the one its port is bound to.
    openstack("port set --disable-port-security mallory:eth0")
    wait_until(lambda: not node.port("mallory:eth0")["secured"], timeout=10, what="unsecured")
    refused = node.router()["counters"].get("drop-arp-secured", 0)
    to_router = [claims[2], claims[0]]
    sent = under_attack(inside2, lambda: inject(mallory, to_router * 60, interval=0.02))
    wait_until(
        lambda: node.router()["counters"].get("drop-arp-secured", 0) >= refused + sent,
        timeout=10,
        what="the router refuses every claim",
    )
    assert router_neighbour(node, INSIDE2) == INSIDE2_MAC
    assert [h["mac"] for h in node.router()["hosts"] if h["ip"] == INSIDE2] in ([], [INSIDE2_MAC])


def under_attack(victim: LabHost, attack: Callable[[], int]) -> int:
    """Run `attack` while `victim` pings the outside host through the NAT every
    50 ms; every echo must come back. Returns what the attack sent."""
    outcome: dict[str, str] = {}

    def pinging() -> None:
        argv = ["ping", "-n", "-i", "0.05", "-c", "100", "-W", "1", OUTSIDE]
        outcome["ping"] = victim.run(argv, timeout=30).stdout

    pinger = threading.Thread(target=pinging)
    pinger.start()
    try:
        sent = attack()
    finally:
        pinger.join(timeout=40)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", outcome.get("ping", ""))
    assert summary is not None, outcome
    assert summary.group(1) == summary.group(2) == "100", outcome["ping"]
    return sent


def test_router_advertisements_and_dhcp_servers_are_not_a_hosts_to_send(
    secured: tuple[Lab, NodeProcess, Openstack],
) -> None:
    lab, node, openstack = secured
    inside, mallory = lab.host("inside"), lab.host("mallory")
    mallory_lla = "fe80::ff:fe00:166"  # its MAC's modified EUI-64
    rogue = [
        Ether(src=MALLORY_MAC, dst="33:33:00:00:00:01")
        / IPv6(src=mallory_lla, dst="ff02::1", hlim=255)  # RFC 4861 §6.1.2
        / ICMPv6ND_RA(routerlifetime=1800)
        / ICMPv6NDOptPrefixInfo(prefix="2001:db8:66::", prefixlen=64),
        Ether(src=MALLORY_MAC, dst=BROADCAST)
        / IP(src=MALLORY, dst="255.255.255.255")
        / UDP(sport=67, dport=68)
        / BOOTP(op=2, yiaddr="10.0.0.200", chaddr=bytes.fromhex("02000000010a"))
        / DHCP(options=[("message-type", "offer"), ("server_id", MALLORY), "end"]),
        Ether(src=MALLORY_MAC, dst="33:33:00:01:00:02")
        / IPv6(src=mallory_lla, dst="ff02::1:2")
        / UDP(sport=547, dport=546)
        / DHCP6_Advertise(),
    ]
    legitimate = [
        # What a host sends before it has an address: DHCP discover, an ARP probe.
        Ether(src=MALLORY_MAC, dst=BROADCAST)
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / BOOTP(chaddr=bytes.fromhex("020000000166"), xid=66)
        / DHCP(options=[("message-type", "discover"), "end"]),
        Ether(src=MALLORY_MAC, dst=BROADCAST)
        / ARP(op=1, hwsrc=MALLORY_MAC, psrc="0.0.0.0", pdst="10.0.0.99"),
    ]
    with capture(inside) as wire:
        inject(mallory, rogue * 3 + legitimate)
        wire.wait_for(lambda f: ARP in f and f[ARP].pdst == "10.0.0.99", "the ARP probe")
        assert wire.received(lambda f: BOOTP in f and f[BOOTP].xid == 66)
        assert wire.received(lambda f: ICMPv6ND_RA in f) == []
        assert wire.received(lambda f: UDP in f and f[UDP].sport in (67, 547)) == []
    wait_drops(node, "mallory", {"spoofed-ra": 3, "spoofed-dhcp": 6})
    assert "spoofed-ip" not in spoofed(node, "mallory")
    assert "2001:db8:66:" not in inside.run(["ip", "-6", "addr"]).stdout

    # Port security off: the same advertisement reaches inside, whose kernel
    # takes an address from it (the guard above is what kept it away).
    openstack("port set --disable-port-security mallory:eth0")
    wait_until(lambda: not node.port("mallory:eth0")["secured"], timeout=10, what="unsecured")
    with capture(inside) as wire:
        inject(mallory, rogue[:1])
        wire.wait_for(lambda f: ICMPv6ND_RA in f, "the router advertisement")
    wait_until(
        lambda: "2001:db8:66:" in inside.run(["ip", "-6", "addr"]).stdout,
        timeout=10,
        what="inside configures an address from the advertisement",
    )


def test_allowed_address_pairs_let_a_second_address_and_mac_through(
    secured: tuple[Lab, NodeProcess, Openstack],
) -> None:
    lab, node, openstack = secured
    mallory = lab.host("mallory")
    mallory.run(["ip", "addr", "add", "10.0.0.50/24", "dev", "eth0"], check=True)
    assert not ping(mallory, INSIDE, count=2, source="10.0.0.50")
    wait_until(
        lambda: sum(spoofed(node, "mallory").values()) > 0,
        timeout=10,
        what="mallory's port refuses its second address",
    )
    openstack("port set --allowed-address ip-address=10.0.0.50 mallory:eth0")
    wait_until(
        lambda: ping(mallory, INSIDE, count=1, source="10.0.0.50"),
        timeout=15,
        what="mallory's second address reaches inside",
    )

    # A second MAC with its own address: a macvlan on mallory's NIC.
    argv = ["ip", "link", "add", "link", "eth0", "name", "mv0", "address", OTHER_MAC]
    mallory.run([*argv, "type", "macvlan", "mode", "bridge"], check=True)
    mallory.run(["ip", "addr", "add", "10.0.0.51/32", "dev", "mv0"], check=True)
    mallory.run(["ip", "link", "set", "mv0", "up"], check=True)
    mallory.run(["ip", "route", "add", f"{INSIDE}/32", "dev", "mv0", "src", "10.0.0.51"])
    before = spoofed(node, "mallory").get("spoofed-mac", 0)
    assert not ping(mallory, INSIDE, count=2, source="mv0")
    wait_until(
        lambda: spoofed(node, "mallory").get("spoofed-mac", 0) > before,
        timeout=10,
        what="mallory's port refuses the second MAC",
    )
    openstack(
        f"port set --allowed-address ip-address=10.0.0.51,mac-address={OTHER_MAC} mallory:eth0"
    )
    wait_until(
        lambda: ping(mallory, INSIDE, count=1, source="mv0"),
        timeout=15,
        what="mallory's macvlan reaches inside",
    )
    # Each MAC with its own addresses only: the macvlan's MAC with eth0's address is refused.
    with capture(lab.host("inside")) as wire:
        inject(mallory, [udp(OTHER_MAC, "10.0.0.50", b"mixed"), udp(OTHER_MAC, "10.0.0.51", b"ok")])
        wire.wait_for(marked(b"ok"), "the pair's own frame")
        assert wire.received(marked(b"mixed")) == []


def test_port_security_off_lets_everything_through_and_on_again_stops_it(
    secured: tuple[Lab, NodeProcess, Openstack],
) -> None:
    lab, node, openstack = secured
    mallory = lab.host("mallory")
    spoofs = [udp(INSIDE2_MAC, INSIDE2, b"as-inside2"), udp(OTHER_MAC, "192.0.2.1", b"as-nobody")]
    openstack("port set --disable-port-security mallory:eth0")
    assert openstack.json("port show mallory:eth0")["port_security_enabled"] is False
    wait_until(lambda: not node.port("mallory:eth0")["secured"], timeout=10, what="unsecured")
    with capture(lab.host("inside")) as wire:
        inject(mallory, spoofs)
        wire.wait_for(marked(b"as-inside2"), "the first spoof")
        wire.wait_for(marked(b"as-nobody"), "the second spoof")
    openstack("port set --enable-port-security mallory:eth0")
    wait_until(lambda: node.port("mallory:eth0")["secured"], timeout=10, what="secured again")
    with capture(lab.host("inside")) as wire:
        inject(mallory, [*spoofs, udp(MALLORY_MAC, MALLORY, b"sentinel")])
        wire.wait_for(marked(b"sentinel"), "mallory's own frame")
        assert wire.received(marked(b"as-")) == []


def test_a_port_pairs_ports_are_exempt(secured: tuple[Lab, NodeProcess, Openstack]) -> None:
    """A service function forwards other hosts' traffic: its ports are not held to
    their own addresses while a port pair names them."""
    lab, node, openstack = secured
    openstack("sfc port pair create --ingress mallory:eth0 --egress mallory:eth0 PP")
    wait_until(lambda: not node.port("mallory:eth0")["secured"], timeout=10, what="exempt")
    forwarded = udp(MALLORY_MAC, "192.0.2.1", b"forwarded")
    with capture(lab.host("inside")) as wire:
        inject(lab.host("mallory"), [forwarded])
        wire.wait_for(marked(b"forwarded"), "a frame from another host's address")
    openstack("sfc port pair delete PP")
    wait_until(lambda: node.port("mallory:eth0")["secured"], timeout=10, what="secured again")
    assert node.port("inside:eth0")["secured"]


@pytest.mark.parametrize("option", ["--tap", "--veth"])
def test_a_nic_given_addresses_on_the_command_line_is_secured(
    lab_factory: Callable[..., Lab], unique_name: Callable[[str], str], tmp_path: Path, option: str
) -> None:
    lab = lab_factory({"lab": "taps", "hosts": {"h1": {}, "h2": {}}})
    h1, h2 = lab.host("h1"), lab.host("h2")
    taps = (option, f"{h1.netns}:eth0@10.0.0.1/24", option, f"{h2.netns}:eth0@10.0.0.2/24")
    with NodeProcess(unique_name("node"), args=taps, log_path=tmp_path / "node.log") as node:
        wait_until(lambda: ping(h1, "10.0.0.2", count=1), timeout=15, what="h1 pings h2")
        port = node.port(f"{h1.netns}:eth0")
        assert port["secured"] is True
        assert port["kind"] == option.removeprefix("--")
        h1_mac = port["mac"]
        with capture(h2) as wire:
            inject(
                h1,
                [
                    udp(h1_mac, "10.0.0.9", b"not-h1", dst_mac=BROADCAST, dst="10.0.0.2"),
                    udp(h1_mac, "10.0.0.1", b"h1", dst_mac=BROADCAST, dst="10.0.0.2"),
                ],
            )
            wire.wait_for(marked(b"h1"), "h1's own frame")
            assert wire.received(marked(b"not-h1")) == []
        assert node.port(f"{h1.netns}:eth0")["drops"].get("spoofed-ip") == 1


def test_a_host_whose_port_is_not_secured_moves_to_a_new_mac_by_gratuitous_arp(
    secured: tuple[Lab, NodeProcess, Openstack],
) -> None:
    lab, node, openstack = secured
    inside2 = lab.host("inside2")
    openstack("port set --disable-port-security inside2:eth0")
    wait_until(lambda: not node.port("inside2:eth0")["secured"], timeout=10, what="unsecured")
    # The binding is gone: the router resolves inside2 by ARP again.
    assert ping(inside2, ROUTER_IN, count=1)
    wait_until(
        lambda: router_neighbour(node, INSIDE2) == INSIDE2_MAC,
        timeout=10,
        what="the router resolves inside2",
    )
    new_mac = "02:00:00:00:01:bb"
    inside2.run(["ip", "link", "set", "eth0", "address", new_mac], check=True)
    announcement = Ether(src=new_mac, dst=BROADCAST) / ARP(
        op=1, hwsrc=new_mac, psrc=INSIDE2, pdst=INSIDE2
    )
    inject(inside2, [announcement])
    wait_until(
        lambda: router_neighbour(node, INSIDE2) == new_mac,
        timeout=10,
        what="the router follows inside2's gratuitous ARP",
    )
    assert ping(inside2, OUTSIDE, count=3)
    assert node.router()["counters"].get("drop-arp-secured", 0) == 0
