"""Per-port rate limits on the datapath: what each class lets through, where, and the hold."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.router.function import Router
from pktchain.node.dataplane.datapath import BATCH, Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.limits import (
    DEFAULT_PORT_LIMITS,
    HOLD_STRIKES,
    PortLimits,
    Rate,
    RateDrop,
)
from pktchain.node.dataplane.ports import PortKind
from pktchain.node.router_file import parse_router
from support.memports import MemoryPort

VNET = bytes(10)
ROUTER = """
name: router
interfaces:
  inside:  {network: lan, mac: "02:00:00:00:01:01", address: 10.0.0.1/24}
  outside: {network: wan, mac: "02:00:00:00:02:01", address: 198.51.100.2/24,
            external: true, gateway: 198.51.100.10}
nat: {}
"""
ROUTER_MAC, ROUTER_IN = "02:00:00:00:01:01", "10.0.0.1"
H1_MAC, H1 = "02:00:00:00:01:0a", "10.0.0.10"
H2_MAC, H2 = "02:00:00:00:01:0b", "10.0.0.11"
OUT_MAC, OUT = "02:00:00:00:02:0a", "198.51.100.10"
SMALL = PortLimits(
    arp=Rate(10.0, 5), icmp_router=Rate(10.0, 3), flood=Rate(10.0, 4), slow_path=Rate(10.0, 6)
)


def lab(limits: PortLimits = SMALL) -> tuple[Datapath, dict[str, MemoryPort], Router]:
    """h1 and h2 on the router's inside network, o outside; every host known to the switch."""
    spec = parse_router(ROUTER)
    router = Router(spec.config)
    datapath = Datapath(port_limits=limits)
    ports = {"h1": MemoryPort("h1"), "h2": MemoryPort("h2"), "o": MemoryPort("o")}
    datapath.add_port(ports["h1"], "lan")
    datapath.add_port(ports["h2"], "lan")
    datapath.add_port(ports["o"], "wan")
    host = FunctionHost("router", SdkDriver(router), lambda: datapath.now)
    for iface in spec.config.interfaces:
        datapath.add_port(host.add_port(iface.name, iface.mac), spec.networks[iface.name])
    datapath.router_addresses = frozenset(
        iface.address.ip.packed for iface in spec.config.interfaces
    )
    return datapath, ports, router


def frame(packet: object) -> bytes:
    return VNET + bytes(packet)  # type: ignore[call-overload]


def arp_request(target: str = H2) -> bytes:
    return frame(
        Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=H1_MAC, psrc=H1, pdst=target)
    )


def broadcast_udp() -> bytes:
    return frame(Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff") / IP(src=H1, dst="10.0.0.255") / UDP())


def ping(dst: str, seq: int = 1) -> bytes:
    return frame(Ether(src=H1_MAC, dst=ROUTER_MAC) / IP(src=H1, dst=dst) / ICMP(seq=seq))


def syn(sport: int) -> bytes:
    return frame(
        Ether(src=H1_MAC, dst=ROUTER_MAC) / IP(src=H1, dst=OUT) / TCP(sport=sport, flags="S")
    )


def send(datapath: Datapath, port: MemoryPort, frames: list[bytes], now: float = 1.0) -> None:
    datapath.now = now
    for start in range(0, len(frames), BATCH):
        port.inbox.extend(frames[start : start + BATCH])
        datapath.drain(port)


def dropped(port: MemoryPort, reason: RateDrop) -> int:
    return port.drops[reason.value]


def test_arp_past_the_burst_is_dropped_until_tokens_come_back() -> None:
    datapath, ports, _router = lab()
    send(datapath, ports["h1"], [arp_request() for _ in range(8)])
    assert dropped(ports["h1"], RateDrop.ARP) == 3  # a burst of 5
    assert len(ports["h2"].sent) == 4  # the flood bucket (burst 4) lets four of them on
    send(datapath, ports["h1"], [arp_request() for _ in range(4)], now=1.3)  # 3 tokens back
    assert dropped(ports["h1"], RateDrop.ARP) == 4
    assert dropped(ports["h1"], RateDrop.FLOOD) == 1  # the fifth request of the first burst
    assert ports["h1"].policer is not None and ports["h1"].policer.dropped == 5


def test_broadcast_and_unknown_unicast_share_the_flood_bucket_known_unicast_takes_none() -> None:
    datapath, ports, _router = lab()
    send(datapath, ports["h2"], [frame(Ether(src=H2_MAC, dst=H1_MAC) / IP(src=H2, dst=H1))])
    unknown = frame(Ether(src=H1_MAC, dst="02:00:00:00:01:99") / IP(src=H1, dst="10.0.0.99"))
    known = frame(Ether(src=H1_MAC, dst=H2_MAC) / IP(src=H1, dst=H2) / UDP())
    send(datapath, ports["h1"], [broadcast_udp(), broadcast_udp(), unknown, unknown, unknown])
    assert dropped(ports["h1"], RateDrop.FLOOD) == 1
    ports["h2"].sent.clear()
    send(datapath, ports["h1"], [known] * 50)
    assert len(ports["h2"].sent) == 50  # a switched unicast frame is no flood
    assert dropped(ports["h1"], RateDrop.FLOOD) == 1
    assert ports["h2"].drops == {}  # each port has buckets of its own


def test_icmp_to_the_routers_address_has_its_own_bucket_transit_icmp_only_the_slow_path() -> None:
    datapath, ports, router = lab()
    send(datapath, ports["h1"], [ping(ROUTER_IN, seq) for seq in range(5)])
    assert dropped(ports["h1"], RateDrop.ICMP_ROUTER) == 2  # a burst of 3
    assert router.counters["rx-frames"] == 3
    # Through the router (to an outside address), ICMP is a frame for a function like
    # any other: the slow-path bucket (burst 6, 3 of it taken above) holds it.
    send(datapath, ports["h1"], [ping(OUT, seq) for seq in range(5)])
    assert dropped(ports["h1"], RateDrop.ICMP_ROUTER) == 2
    assert dropped(ports["h1"], RateDrop.SLOW_PATH) == 2


def test_frames_for_a_function_past_the_slow_path_burst_never_reach_it() -> None:
    datapath, ports, router = lab()
    send(datapath, ports["h1"], [syn(sport) for sport in range(1000, 1010)])
    assert dropped(ports["h1"], RateDrop.SLOW_PATH) == 4  # a burst of 6
    assert router.counters["rx-frames"] == 6
    send(datapath, ports["h1"], [syn(sport) for sport in range(2000, 2010)], now=1.5)
    assert router.counters["rx-frames"] == 6 + 5  # 10/s for half a second


def test_a_port_that_only_sends_what_its_limits_drop_is_held_after_two_windows() -> None:
    datapath, ports, _router = lab()
    h1 = ports["h1"]
    policer = h1.policer
    assert policer is not None
    send(datapath, h1, [broadcast_udp()] * BATCH)
    assert not policer.hold and policer.strikes == 1
    send(datapath, h1, [broadcast_udp()] * (BATCH // 2))  # half a window: not judged yet
    assert not policer.hold and policer.strikes == 1
    send(datapath, h1, [broadcast_udp()] * (BATCH // 2))
    assert policer.strikes == HOLD_STRIKES and policer.hold


def test_a_storm_read_a_few_frames_at_a_time_is_held_all_the_same() -> None:
    """A node that wakes at once for each frame reads a flood in small batches."""
    datapath, ports, _router = lab()
    h1 = ports["h1"]
    policer = h1.policer
    assert policer is not None
    reads_per_window = -(-BATCH // 3)  # a window closes at the first read past BATCH
    reads = 0
    while not policer.hold:
        send(datapath, h1, [broadcast_udp()] * 3)
        reads += 1
        assert reads <= HOLD_STRIKES * reads_per_window, "never held"
    assert policer.strikes == HOLD_STRIKES
    assert reads == HOLD_STRIKES * reads_per_window


def test_a_window_mostly_within_the_limits_ends_the_strikes() -> None:
    datapath, ports, _router = lab()
    h1 = ports["h1"]
    policer = h1.policer
    assert policer is not None
    send(datapath, ports["h2"], [frame(Ether(src=H2_MAC, dst=H1_MAC) / IP(src=H2, dst=H1))])
    known = frame(Ether(src=H1_MAC, dst=H2_MAC) / IP(src=H1, dst=H2) / UDP())
    send(datapath, h1, [broadcast_udp()] * BATCH)
    assert policer.strikes == 1
    send(datapath, h1, [known] * BATCH)  # switched unicast: no limit applies
    assert policer.strikes == 0 and not policer.hold


def test_a_full_batch_within_the_limits_holds_nothing() -> None:
    datapath, ports, _router = lab(DEFAULT_PORT_LIMITS)
    for _ in range(HOLD_STRIKES + 1):
        send(datapath, ports["h1"], [broadcast_udp()] * BATCH)
    policer = ports["h1"].policer
    assert policer is not None and not policer.hold and policer.strikes == 0
    assert ports["h1"].drops == {}


def test_a_limit_set_off_lets_everything_through() -> None:
    datapath, ports, _router = lab(
        PortLimits(arp=None, icmp_router=None, flood=None, slow_path=None)
    )
    send(datapath, ports["h1"], [arp_request()] * 300 + [broadcast_udp()] * 300)
    send(datapath, ports["h1"], [ping(ROUTER_IN, seq) for seq in range(300)])
    assert ports["h1"].drops == {}
    from_h1 = [f for f in ports["h2"].sent if Ether(f[10:]).src == H1_MAC]
    assert len(from_h1) == 600


def test_only_hosts_ports_are_policed_not_a_nic_of_the_nodes_namespace_nor_functions() -> None:
    datapath = Datapath(port_limits=SMALL)
    tap = MemoryPort("tap")
    host_veth = MemoryPort("veth")
    host_veth.kind, host_veth.netns = PortKind.AF_PACKET, "pc-lab.h1"
    uplink = MemoryPort("eth1")
    uplink.kind = PortKind.AF_PACKET
    for port in (tap, host_veth, uplink):
        datapath.add_port(port)
    spec = parse_router(ROUTER)
    host = FunctionHost("router", SdkDriver(Router(spec.config)), lambda: 1.0)
    function_port = host.add_port("inside", ROUTER_MAC)
    datapath.add_port(function_port, "lan")
    assert tap.policer is not None and host_veth.policer is not None
    assert uplink.policer is None and function_port.policer is None
    assert tap.counters()["policed"] and not uplink.counters()["policed"]


def test_the_fast_path_carries_a_fused_flow_past_the_slow_path_bucket() -> None:
    datapath, ports, _router = lab()
    # The router resolves the outside host (its gateway) first.
    reply = ARP(op=2, hwsrc=OUT_MAC, psrc=OUT, hwdst="02:00:00:00:02:01", pdst="198.51.100.2")
    send(datapath, ports["o"], [frame(Ether(src=OUT_MAC, dst="02:00:00:00:02:01") / reply)])
    udp = frame(
        Ether(src=H1_MAC, dst=ROUTER_MAC)
        / IP(src=H1, dst=OUT, flags="DF")
        / UDP(sport=4000, dport=53)
        / b"q"
    )
    send(datapath, ports["h1"], [udp] * 200)
    assert datapath.fused_entries() == 1
    assert dropped(ports["h1"], RateDrop.SLOW_PATH) == 0
    assert len(ports["o"].sent) == 200
