"""The fused fast path: a flow's later packets skip the functions and come out the same.

An SDK function routes between two networks (rewriting MACs, addresses, ports
and the TTL, like a NAT router would); its first packet takes the slow path and
installs a fused entry on the ingress port; later packets must leave exactly as
the function would have sent them (checked against the function run directly,
and decoded by scapy), except those the fast path must hand back (SYN/FIN/RST,
fragments, TTL running out, a revoked lease).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.sdk import FlowLease, FlowLeases, Function, Packet, Result, drop, forward
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.ports import SwitchPort
from pktchain.node.dataplane.steering import Steering
from pktchain.packet.parse import parse_frame
from pktchain.packet.virtio import VirtioNetHdr, needs_csum_header
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan
from support.memports import MemoryPort

VNET = bytes(10)
H1, H2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
FN_A, FN_B = "02:00:00:00:00:a1", "02:00:00:00:00:b1"
NEW_SRC = bytes([192, 0, 2, 1])


@dataclass(frozen=True)
class RouterishConfig:
    rewrite_payload: bool = False


class Routerish(Function):
    """a -> b: source NAT to 192.0.2.1 port+1000, TTL-1, MACs set; leases per flow."""

    KIND = "routerish"
    Config = RouterishConfig
    INTERFACES = ("a", "b")

    def __init__(self, config: RouterishConfig | None = None) -> None:
        super().__init__(config)
        self.leases: dict[tuple[bytes, bytes, int, int, int], FlowLease] = {}
        self.calls = 0

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        if packet.iface != "a" or not packet.ok:
            return drop("not-from-a")
        key = packet.key
        if not packet.decrement_ttl():
            return drop("ttl")
        packet.set_macs(
            src=bytes.fromhex(FN_B.replace(":", "")), dst=bytes.fromhex(H2.replace(":", ""))
        )
        packet.set_src(NEW_SRC, packet.sport + 1000)
        if self.config.rewrite_payload:
            packet.buf[-1] ^= 0xFF
        lease = self.leases.setdefault(key, FlowLease())
        return forward("b", lease=lease)


def lab(
    config: RouterishConfig | None = None,
) -> tuple[Datapath, MemoryPort, MemoryPort, Routerish]:
    datapath = Datapath()
    h1, h2 = MemoryPort("h1"), MemoryPort("h2")
    datapath.add_port(h1, "left")
    datapath.add_port(h2, "right")
    function = Routerish(config)
    host = FunctionHost("r", SdkDriver(function), lambda: 1.0)
    datapath.add_port(host.add_port("a", FN_A), "left")
    datapath.add_port(host.add_port("b", FN_B), "right")
    # h2 is known on the right (it spoke once), so frames to it are not flooded.
    h2.inbox.append(VNET + bytes(Ether(src=H2, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"x" * 46)))
    datapath.drain(h2)
    function.calls = 0
    return datapath, h1, h2, function


def udp(sport: int = 5000, ttl: int = 64, payload: bytes = b"hello") -> bytes:
    return VNET + bytes(
        Ether(src=H1, dst=FN_A)
        / IP(src="10.0.0.1", dst="198.51.100.7", ttl=ttl)
        / UDP(sport=sport, dport=53)
        / payload
    )


def tcp(flags: str, sport: int = 40000, payload: bytes = b"") -> bytes:
    return VNET + bytes(
        Ether(src=H1, dst=FN_A)
        / IP(src="10.0.0.1", dst="198.51.100.7")
        / TCP(sport=sport, dport=80, flags=flags, seq=1000, ack=1)
        / payload
    )


def expected(frame: bytes) -> bytes:
    """What the function itself sends for `frame`."""
    packet = Packet(bytearray(frame), "a")
    result = Routerish().process(packet, 0.0)
    assert result.verdict.value == "forward"
    return bytes(packet.buf)


def send(datapath: Datapath, port: MemoryPort, frame: bytes) -> None:
    port.inbox.append(frame)
    datapath.drain(port)


def test_the_second_packet_installs_a_fused_entry_and_later_ones_skip_the_function() -> None:
    datapath, h1, h2, function = lab()
    for n in range(5):
        send(datapath, h1, udp(payload=b"p%d" % n))
    assert function.calls == 2
    assert datapath.fuse_refused["first-packet"] == 1
    assert datapath.fused == 1 and datapath.fast_hits == 3
    assert h2.sent == [expected(udp(payload=b"p%d" % n)) for n in range(5)]
    for sent in h2.sent:
        decoded = Ether(sent[10:])
        assert (
            decoded[IP].src == "192.0.2.1" and decoded[IP].ttl == 63 and decoded[UDP].sport == 6000
        )
        rebuilt = Ether(sent[10:])
        del rebuilt[IP].chksum, rebuilt[UDP].chksum
        rebuilt = Ether(bytes(rebuilt))
        assert (rebuilt[IP].chksum, rebuilt[UDP].chksum) == (
            decoded[IP].chksum,
            decoded[UDP].chksum,
        )


def test_cached_packets_are_counted_on_the_lease() -> None:
    datapath, h1, _h2, function = lab()
    for _ in range(4):
        send(datapath, h1, udp())
    (lease,) = function.leases.values()
    assert lease.packets == 2  # the first two went through the function
    assert lease.bytes == 2 * (len(udp()) - 10)
    assert lease.seen == datapath.now


def test_a_batch_is_credited_to_the_lease_before_any_packet_takes_the_slow_path() -> None:
    datapath, h1, _h2, function = lab()
    for payload in (b"one", b"two"):
        send(datapath, h1, tcp("A", payload=payload))  # the entry is installed
    (lease,) = function.leases.values()
    seen_by_function: list[int] = []
    process = function.process

    def watching(packet: Packet, now: float) -> Result:
        seen_by_function.append(lease.packets)
        return process(packet, now)

    function.process = watching  # type: ignore[method-assign]
    # One batch: three packets on the fast path, then a FIN for the function.
    h1.inbox.extend([tcp("A", payload=b"fast")] * 3 + [tcp("FA")])
    assert datapath.drain(h1) == 4
    assert datapath.fast_hits == 3
    # The lease counts what the function did not see: the three, before the FIN.
    assert seen_by_function == [3]
    assert lease.packets == 3 and not datapath.uncredited


def test_counts_of_a_batch_on_the_fast_path_reach_lease_flow_and_hop_when_it_ends() -> None:
    datapath, h1, _h2, function = lab()
    for _ in range(2):
        send(datapath, h1, udp())
    (lease,) = function.leases.values()
    h1.inbox.extend([udp()] * 10)
    datapath.now = 7.0
    assert datapath.drain(h1) == 10
    assert lease.packets == 10 and lease.bytes == 10 * (len(udp()) - 10)
    assert lease.seen == 7.0
    (fused,) = h1.fast.values() if h1.fast else ()
    assert fused.packets == 0 and fused.seen == 7.0


@pytest.mark.parametrize("flags", ["S", "F", "R", "FA", "RA"])
def test_tcp_syn_fin_rst_always_reach_the_function(flags: str) -> None:
    datapath, h1, h2, function = lab()
    for payload in (b"data", b"more", b"again"):
        send(datapath, h1, tcp("A", payload=payload))
    assert function.calls == 2 and datapath.fast_hits == 1
    send(datapath, h1, tcp(flags))
    assert function.calls == 3
    assert h2.sent[-1] == expected(tcp(flags))


def test_an_entry_made_with_df_set_carries_only_df_set_packets() -> None:
    datapath, h1, h2, function = lab()

    def frame(flags: str) -> bytes:
        return VNET + bytes(
            Ether(src=H1, dst=FN_A)
            / IP(src="10.0.0.1", dst="198.51.100.7", flags=flags, id=77)
            / UDP(sport=5000, dport=53)
            / b"hello"
        )

    for _ in range(2):
        send(datapath, h1, frame("DF"))
    assert datapath.fused == 1
    # A non-atomic datagram of the same flow: a NAT might give it a new ID.
    send(datapath, h1, frame(""))
    assert function.calls == 3 and datapath.fast_hits == 0
    send(datapath, h1, frame("DF"))
    assert function.calls == 3 and datapath.fast_hits == 1
    assert h2.sent[-1] == expected(frame("DF"))


def test_a_one_packet_flow_costs_no_entry() -> None:
    datapath, h1, _h2, _function = lab()
    send(datapath, h1, udp())
    assert datapath.fused_entries() == 0


def test_a_packet_whose_ttl_would_run_out_goes_to_the_function() -> None:
    datapath, h1, h2, function = lab()
    send(datapath, h1, udp())
    send(datapath, h1, udp())
    send(datapath, h1, udp(ttl=1))
    assert function.calls == 3
    assert len(h2.sent) == 2  # the function dropped it


def test_revoking_the_lease_sends_the_flow_back_through_the_function() -> None:
    datapath, h1, _h2, function = lab()
    for _ in range(3):
        send(datapath, h1, udp())
    assert function.calls == 2 and datapath.fused_entries() == 1
    function.leases.pop(next(iter(function.leases))).revoke()
    assert datapath.fused_entries() == 0
    for _ in range(3):
        send(datapath, h1, udp())
    assert function.calls == 4  # a new lease: two more slow-path packets
    assert datapath.fused_entries() == 1


def test_a_rewrite_the_fast_path_cannot_reproduce_stays_on_the_slow_path() -> None:
    datapath, h1, h2, function = lab(RouterishConfig(rewrite_payload=True))
    for _ in range(3):
        send(datapath, h1, udp())
    assert function.calls == 3
    assert datapath.fuse_refused["rewrite-not-fusable"] == 2
    assert len(h2.sent) == 3


def test_partial_checksum_frames_get_their_seed_updated() -> None:
    datapath, h1, h2, _function = lab()
    plain = udp()
    info = parse_frame(plain, 10)
    header = needs_csum_header(info)
    # The sender leaves the pseudo-header sum in the checksum field (NEEDS_CSUM).
    ether = Ether(plain[10:])
    ether[UDP].chksum = 0
    seed = _seed(ether)
    ether[UDP].chksum = seed
    partial = header.pack() + bytes(ether)
    for _ in range(3):
        send(datapath, h1, partial)
    assert datapath.fast_hits == 1
    assert h2.sent[0] == h2.sent[2] == expected(partial)
    out = Ether(h2.sent[2][10:])
    assert out[UDP].chksum == _seed(out)


def _seed(ether: Ether) -> int:
    from pktchain.packet.checksum import partial_checksum_seed

    ip = ether[IP]
    return partial_checksum_seed(
        bytes(map(int, ip.src.split("."))), bytes(map(int, ip.dst.split("."))), 17, len(ip[UDP])
    )


def test_icmp_echo_identifier_and_checksum_follow_the_rewrite() -> None:
    datapath, h1, h2, _function = lab()
    echo = VNET + bytes(
        Ether(src=H1, dst=FN_A)
        / IP(src="10.0.0.1", dst="198.51.100.7")
        / ICMP(id=77, seq=1)
        / b"ping"
    )
    for _ in range(3):
        send(datapath, h1, echo)
    assert datapath.fast_hits == 1
    assert h2.sent[2] == expected(echo)
    out = Ether(h2.sent[2][10:])
    assert out[ICMP].id == 1077
    check = Ether(h2.sent[2][10:])
    del check[ICMP].chksum
    assert Ether(bytes(check))[ICMP].chksum == out[ICMP].chksum


def test_another_flow_does_not_hit_the_entry() -> None:
    datapath, h1, _h2, function = lab()
    for _ in range(2):
        send(datapath, h1, udp(sport=1))
        send(datapath, h1, udp(sport=2))
    assert function.calls == 4
    assert datapath.fused_entries() == 2


def test_idle_entries_expire() -> None:
    datapath, h1, _h2, _function = lab()
    send(datapath, h1, udp())
    send(datapath, h1, udp())
    assert datapath.expire_fused(now=1000.0, idle=300.0) == 1
    assert datapath.fused_entries() == 0


def test_virtio_header_is_carried_unchanged() -> None:
    datapath, h1, h2, _function = lab()
    gso = VirtioNetHdr(2, 0, 0, 0, 0, 0).pack()  # DATA_VALID: the checksum was checked
    for _ in range(3):
        send(datapath, h1, gso + udp()[10:])
    assert datapath.fast_hits == 1
    assert h2.sent[2][:10] == gso


class Bump(Function):
    """Forwards to the other interface unchanged, one lease per flow."""

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.leases = FlowLeases()
        self.calls = 0

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        return forward(lease=self.leases.lease((packet.iface, packet.key)))


class Watch(Function):
    """A tap: counts the copies it is given."""

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.calls = 0

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        return drop("watched")


def steered_lab(
    tap: Function | None = None,
) -> tuple[Datapath, MemoryPort, MemoryPort, Steering, Bump]:
    """h1 -> bump -> h2 as a symmetric chain, as a port pair of a native function.

    With `tap`, a tap group of that function comes first in the chain.
    """
    datapath = Datapath()
    h1, h2 = MemoryPort("h1", mac=H1), MemoryPort("h2", mac=H2)
    ports: dict[str, SwitchPort] = {"h1": h1, "h2": h2}
    for port in (h1, h2):
        datapath.add_port(port)
    bump = Bump()
    functions: list[tuple[str, Function, str, str]] = [("b", bump, FN_A, FN_B)]
    if tap is not None:
        functions.append(("t", tap, "02:00:00:00:00:a2", "02:00:00:00:00:b2"))
    for name, function, ingress_mac, egress_mac in functions:
        host = FunctionHost(name, SdkDriver(function), lambda: 1.0)
        for side, mac in (("ingress", ingress_mac), ("egress", egress_mac)):
            port = host.add_port(side, mac)
            datapath.add_port(port)
            ports[port.name] = port
    steering = Steering(ports)
    datapath.steering = steering
    classifier = ClassifierPlan(
        "fc", "fc", protocol=17, logical_source_port="h1", logical_destination_port="h2"
    )
    groups = (GroupPlan("g", "g", (PairPlan("p", "p", "b:ingress", "b:egress"),)),)
    if tap is not None:
        watch = PairPlan("pt", "pt", "t:ingress", "t:egress")
        groups = (GroupPlan("gt", "gt", (watch,), tap=True), *groups)
    steering.apply(SteeringPlan((ChainPlan("c", "c", 1, groups, (classifier,), True),)))
    h2.inbox.append(VNET + bytes(Ether(src=H2, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"x" * 46)))
    datapath.drain(h2)
    return datapath, h1, h2, steering, bump


def to_h2(payload: bytes = b"x") -> bytes:
    return VNET + bytes(
        Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=7, dport=9) / payload
    )


def test_a_chain_of_bumps_is_fused_and_sends_frames_as_they_came() -> None:
    datapath, h1, h2, steering, bump = steered_lab()
    for n in range(4):
        send(datapath, h1, to_h2(b"%d" % n))
    assert bump.calls == 2 and datapath.fast_hits == 2
    assert h2.sent == [to_h2(b"%d" % n) for n in range(4)]  # restored, untouched
    (hop,) = [c for c in steering.counters.values() if c.direction.value == "forward"]
    assert hop.packets == 4  # the fast path counts the chain's hop too
    (lease,) = bump.leases
    assert lease.packets == 2  # and the function's lease, not the steering flow's


def test_a_steering_flow_that_goes_takes_its_fused_entry_with_it() -> None:
    datapath, h1, _h2, steering, bump = steered_lab()
    for _ in range(3):
        send(datapath, h1, to_h2())
    assert datapath.fused_entries() == 1
    steering.expire(now=10_000.0)
    assert datapath.fused_entries() == 0
    send(datapath, h1, to_h2())
    assert bump.calls == 3  # classified again, through the function


def test_a_tap_before_the_functions_gets_a_copy_of_every_packet() -> None:
    watch = Watch()
    datapath, h1, h2, _steering, bump = steered_lab(tap=watch)
    for n in range(4):
        send(datapath, h1, to_h2(b"%d" % n))
    assert watch.calls == 4  # a fused entry would send no copies: there is none
    assert bump.calls == 4 and datapath.fast_hits == 0
    assert datapath.fuse_refused["tap"] == 4
    assert h2.sent == [to_h2(b"%d" % n) for n in range(4)]
