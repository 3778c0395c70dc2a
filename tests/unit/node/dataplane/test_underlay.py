"""Two nodes joined by the underlay (real UDP on loopback), memory ports for hosts.

n1 has host h1, n2 has host h2 and a native function f (a port pair); a
symmetric chain h1 -> f -> h2 is classified on n1 and crosses to n2 in NSH.
scapy decodes what goes over the underlay.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from scapy.contrib.nsh import NSH
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.sdk import FlowLeases, Function, Packet, Result, forward
from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from pktchain.node.dataplane.ports import SwitchPort
from pktchain.node.dataplane.steering import Steering
from pktchain.node.dataplane.underlay import (
    INITIAL_SI,
    REVERSE_SPI,
    Arrival,
    NshHeader,
    Underlay,
    decode_nsh,
    encapsulate,
    network_vni,
)
from pktchain.packet.nsh import build_nsh, build_vxlan_gpe
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan
from support.memports import MemoryPort

H1, H2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
F_IN, F_OUT = "02:00:00:00:0f:01", "02:00:00:00:0f:02"
PAIR = PairPlan("1a2b3c4d-0000-4000-8000-000000000001", "P", "f:ingress", "f:egress")


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class Counting(Function):
    def __init__(self) -> None:
        super().__init__(None)
        self.seen: list[tuple[str, bytes]] = []

    def process(self, packet: Packet, now: float) -> Result:
        self.seen.append((packet.iface, bytes(packet.buf)))
        return forward()


def udp_frame(src: str, dst: str, sip: str, dip: str, *, sport: int, dport: int) -> bytes:
    packet = Ether(src=src, dst=dst) / IP(src=sip, dst=dip) / UDP(sport=sport, dport=dport)
    return bytes(10) + bytes(packet / (b"x" * 32))


class Node:
    def __init__(self, name: str, address: str) -> None:
        self.datapath = Datapath()
        self.underlay = Underlay(name, (address, 0))
        self.datapath.underlay = self.underlay
        self.ports: dict[str, SwitchPort] = {}

    def host(self, name: str, address: str) -> MemoryPort:
        port = MemoryPort(name, mac=address)
        self.datapath.add_port(port)
        self.ports[name] = port
        return port

    def steer(self, plan: SteeringPlan) -> None:
        steering = Steering(self.ports)
        steering.underlay = self.underlay
        self.datapath.steering = steering
        steering.apply(plan)

    def peer(self, other: Node) -> None:
        joined, _left = self.underlay.set_peers({other.underlay.node: other.underlay.address})
        for peer in joined:
            self.datapath.add_peer(peer)

    def drain(self) -> int:
        return self.datapath.drain_underlay(self.underlay)


def wait_drain(node: Node, count: int = 1) -> None:
    """Read the underlay until `count` datagrams arrived (loopback: at once)."""
    got = 0
    for _ in range(1000):
        got += node.drain()
        if got >= count:
            return
    raise AssertionError(f"{node.underlay.node}: {got} of {count} datagrams arrived")


@pytest.fixture
def cluster() -> Iterator[tuple[Node, Node, MemoryPort, MemoryPort, Counting]]:
    n1, n2 = Node("n1", "127.0.0.1"), Node("n2", "127.0.0.2")
    h1 = n1.host("h1", H1)
    h2 = n2.host("h2", H2)
    function = Counting()
    host = FunctionHost("f", SdkDriver(function), lambda: 1.0)
    for side, address in (("ingress", F_IN), ("egress", F_OUT)):
        port = host.add_port(side, address)
        n2.datapath.add_port(port)
        n2.ports[port.name] = port
    n1.peer(n2)
    n2.peer(n1)
    assert n1.datapath.pin_remote(mac(H2), "n2")
    assert n2.datapath.pin_remote(mac(H1), "n1")
    classifier = ClassifierPlan("fc", "fc", protocol=17, logical_source_port="h1")
    remote = PairPlan(PAIR.id, PAIR.name, PAIR.ingress, PAIR.egress, node="n2")
    # The hosts have spoken (as ARP would have them do): their nodes know them.
    for node, port in ((n1, h1), (n2, h2)):
        hello = Ether(src=port.mac, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"h" * 46)
        port.inbox.append(bytes(10) + bytes(hello))
        node.datapath.drain(port)
        wait_drain(n2 if node is n1 else n1)
    h1.sent.clear()
    h2.sent.clear()
    n1.steer(
        SteeringPlan(
            (ChainPlan("c", "c", 7, (GroupPlan("g", "g", (remote,)),), (classifier,), True),)
        )
    )
    n2.steer(SteeringPlan((ChainPlan("c", "c", 7, (GroupPlan("g", "g", (PAIR,)),), (), True),)))
    yield n1, n2, h1, h2, function
    n1.underlay.close()
    n2.underlay.close()


def test_a_chain_crosses_to_the_node_of_its_function_and_back(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    n1, n2, h1, h2, function = cluster
    h1.inbox.append(udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4000, dport=53))
    n1.datapath.drain(h1)
    wait_drain(n2)
    assert [iface for iface, _frame in function.seen] == ["ingress"]
    assert function.seen[0][1][10:16] == mac(F_IN)  # delivered to the function's MAC
    assert len(h2.sent) == 1
    delivered = Ether(h2.sent[0][10:])
    assert (delivered.dst, delivered.src, delivered[IP].src) == (H2, H1, "10.0.0.1")
    assert n2.datapath.steering is not None
    assert n2.datapath.steering.stats.joined == 1

    # The reply crosses the same function, the other way, and goes home in NSH.
    h2.inbox.append(udp_frame(H2, H1, "10.0.0.2", "10.0.0.1", sport=53, dport=4000))
    n2.datapath.drain(h2)
    assert [iface for iface, _frame in function.seen] == ["ingress", "egress"]
    wait_drain(n1)
    assert len(h1.sent) == 1
    back = Ether(h1.sent[0][10:])
    assert (back.dst, back.src, back[IP].src) == (H1, H2, "10.0.0.2")


def test_what_crosses_the_underlay_decodes_as_vxlan_gpe_nsh_ethernet(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    n1, _n2, h1, _h2, _function = cluster
    # Read n2's socket ourselves: swap in a listener for the datagram n1 sends.
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind(("127.0.0.3", 0))
    spy.settimeout(5)
    n1.underlay.peers["n2"].address = spy.getsockname()
    h1.inbox.append(udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4001, dport=53))
    n1.datapath.drain(h1)
    data = spy.recv(65535)
    spy.close()
    # scapy's VXLAN layer knows GPE's next protocol; decode from the NSH on.
    flags, _reserved, next_protocol, vni = struct.unpack("!BHBI", data[:8])
    assert (flags, next_protocol, vni >> 8) == (0x0C, 4, network_vni("default"))
    nsh = NSH(data[8:])
    # A path of one hop and a frame without offload metadata: MD type 1, the
    # hop's tag in the first context word, the others zero.
    assert (nsh.spi, nsh.si, nsh.ttl, nsh.mdtype, nsh.nextproto) == (7, INITIAL_SI, 63, 1, 3)
    assert nsh.length == 6
    inner = Ether(bytes(nsh.payload))
    assert inner[IP].dst == "10.0.0.2"
    assert inner.dst == H2  # the original destination travels, not a function's MAC
    assert bytes(data[16:32]) == bytes.fromhex("1a2b3c4d") + bytes(12)


def test_offload_metadata_or_more_than_four_hops_take_md_type_2() -> None:
    frame = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4001, dport=53)
    partial = bytes([1, 0, 0, 0, 0, 0, 34, 0, 6, 0]) + frame[10:]  # NEEDS_CSUM
    short = NshHeader(network_vni("default"), 7, INITIAL_SI, tags=(1, 2, 3, 4))
    long = NshHeader(network_vni("default"), 7, INITIAL_SI, tags=(1, 2, 3, 4, 5))
    cases = [
        (short, frame, 1, 6),
        (short, partial, 2, 2 + 5 + 4),  # path TLV (1 + 4 words), offload TLV (1 + 3)
        (long, frame, 2, 2 + 6),
    ]
    for header, sent, md_type, words in cases:
        data = b"".join(bytes(part) for part in encapsulate(header, sent))
        nsh = NSH(data[8:])
        assert (nsh.mdtype, nsh.length) == (md_type, words)
        decoded = decode_nsh(data, 8, None, header.vni)
        assert isinstance(decoded, Arrival)
        assert decoded.fixed == (md_type == 1)
        assert decoded.tags[: len(header.tags)] == header.tags
        assert decoded.frame == sent


def test_an_md_type_2_path_joins_and_an_md_type_1_context_beyond_the_path_is_refused(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    _n1, n2, _h1, _h2, function = cluster
    vni = network_vni("default")
    good = NshHeader(vni, 7, INITIAL_SI, tags=(PAIR.tag,))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind(("127.0.0.1", 0))
    try:
        first = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4010, dport=53)
        sender.sendto(good.variable + first[10:], n2.underlay.address)
        wait_drain(n2)
        assert len(function.seen) == 1  # MD type 2 with the path TLV joins the path
        # MD type 1 whose second word is not zero on a path of one hop.
        other = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4011, dport=53)
        context = struct.pack("!4I", PAIR.tag, 9, 0, 0)
        nsh = build_nsh(7, INITIAL_SI, md_type=1, context=context)
        sender.sendto(build_vxlan_gpe(4, vni) + nsh + other[10:], n2.underlay.address)
        wait_drain(n2)
    finally:
        sender.close()
    counted = {k: v for p in n2.datapath.ports for k, v in p.drops.items()}
    assert counted.get("nsh-bad-path") == 1, counted
    assert len(function.seen) == 1


def test_spoofed_malformed_and_expired_nsh_are_counted_drops(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    _n1, n2, _h1, h2, function = cluster
    frame = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4002, dport=53)
    good = NshHeader(network_vni("default"), 7, INITIAL_SI, tags=(PAIR.tag,))
    cases = {
        "unknown-source": ("127.0.0.9", b"".join(encapsulate(good, frame))),
        "truncated-nsh": ("127.0.0.1", b"".join(encapsulate(good, frame))[:12]),
        "nsh-ttl-exhausted": (
            "127.0.0.1",
            b"".join(encapsulate(good.with_ttl(0), frame)),
        ),
        "nsh-unknown-spi": (
            "127.0.0.1",
            b"".join(encapsulate(NshHeader(good.vni, 99, INITIAL_SI, tags=good.tags), frame)),
        ),
        "nsh-unknown-si": (
            "127.0.0.1",
            b"".join(encapsulate(NshHeader(good.vni, 7, 100, tags=good.tags), frame)),
        ),
        "nsh-unknown-instance": (
            "127.0.0.1",
            b"".join(encapsulate(NshHeader(good.vni, 7, INITIAL_SI, tags=(5,)), frame)),
        ),
        "nsh-bad-path": (
            "127.0.0.1",
            b"".join(encapsulate(NshHeader(good.vni, 7 | REVERSE_SPI, INITIAL_SI), frame)),
        ),
    }
    for reason, (source, data) in cases.items():
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((source, 0))
        sender.sendto(data, n2.underlay.address)
        sender.close()
        wait_drain(n2)
        counted = dict(n2.underlay.drops) | {
            k: v for p in n2.datapath.ports for k, v in p.drops.items()
        }
        assert counted.get(reason) == 1, (reason, counted)
    assert function.seen == []
    assert h2.sent == []


def test_switched_frames_flood_to_peers_and_learn_where_hosts_are(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    n1, n2, h1, h2, _function = cluster
    arp = bytes(10) + bytes(
        Ether(src=H1, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1", pdst="10.0.0.2", hwsrc=H1)
    )
    h1.inbox.append(arp)
    n1.datapath.drain(h1)
    wait_drain(n2)
    assert len(h2.sent) == 1
    assert h2.sent[0][10:16] == mac("ff:ff:ff:ff:ff:ff")
    # n2 floods it to its own ports only (split horizon): nothing comes back.
    assert n1.drain() == 0
    assert h1.sent == []
    # A unicast answer to a host n2 knows is behind n1 goes straight there.
    reply = bytes(10) + bytes(
        Ether(src=H2, dst=H1) / ARP(op=2, psrc="10.0.0.2", pdst="10.0.0.1", hwsrc=H2, hwdst=H1)
    )
    h2.inbox.append(reply)
    n2.datapath.drain(h2)
    wait_drain(n1)
    assert [frame[10:16] for frame in h1.sent] == [mac(H1)]


class Bump(Function):
    """Forwards to its other interface unchanged, with one lease per flow."""

    def __init__(self) -> None:
        super().__init__(None)
        self.leases = FlowLeases()
        self.calls = 0

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        return forward(lease=self.leases.lease((packet.iface, packet.key)))


def add_function(node: Node, name: str, function: Function, n: int) -> PairPlan:
    host = FunctionHost(name, SdkDriver(function), lambda: 1.0)
    for side, last in (("ingress", 1), ("egress", 2)):
        port = host.add_port(side, f"02:00:00:00:{n:02x}:{last:02x}")
        node.datapath.add_port(port)
        node.ports[port.name] = port
    return PairPlan(
        f"{n:08x}-0000-4000-8000-000000000000", name, f"{name}:ingress", f"{name}:egress"
    )


def test_established_flows_across_nodes_take_the_fast_path_on_both() -> None:
    n1, n2 = Node("n1", "127.0.0.4"), Node("n2", "127.0.0.5")
    try:
        h1, h2 = n1.host("h1", H1), n2.host("h2", H2)
        f1, f2 = Bump(), Bump()
        p1 = add_function(n1, "f1", f1, 1)
        p2 = add_function(n2, "f2", f2, 2)
        n1.peer(n2)
        n2.peer(n1)
        n1.datapath.pin_remote(mac(H2), "n2")
        n2.datapath.pin_remote(mac(H1), "n1")
        hello = Ether(src=H2, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"h" * 46)
        h2.inbox.append(bytes(10) + bytes(hello))
        n2.datapath.drain(h2)
        on_n2 = PairPlan(p2.id, p2.name, p2.ingress, p2.egress, node="n2")
        on_n1 = PairPlan(p1.id, p1.name, p1.ingress, p1.egress, node="n1")
        groups1 = (GroupPlan("g1", "g1", (p1,)), GroupPlan("g2", "g2", (on_n2,)))
        groups2 = (GroupPlan("g1", "g1", (on_n1,)), GroupPlan("g2", "g2", (p2,)))
        classifier = ClassifierPlan("fc", "fc", protocol=17, logical_source_port="h1")
        n1.steer(SteeringPlan((ChainPlan("c", "c", 9, groups1, (classifier,), True),)))
        n2.steer(SteeringPlan((ChainPlan("c", "c", 9, groups2, (), True),)))
        frame = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4100, dport=53)
        for _ in range(5):
            h1.inbox.append(frame)
            n1.datapath.drain(h1)
            wait_drain(n2)
        assert [Ether(sent[10:])[IP].src for sent in h2.sent] == ["10.0.0.1"] * 5
        assert all(sent == h2.sent[0] for sent in h2.sent)
        # The first two take the slow path (a flow earns its entry with its second).
        assert (f1.calls, f2.calls) == (2, 2)
        assert n1.datapath.fast_hits == 3
        assert n2.datapath.fast_hits == 3
        # Counted where they are read: the hops' counters saw all five.
        assert n1.datapath.steering is not None
        assert [c.packets for c in n1.datapath.steering.counters.values()] == [5]
    finally:
        n1.underlay.close()
        n2.underlay.close()


def test_hellos_keep_a_peer_alive_and_silence_takes_it_for_dead(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    n1, n2, _h1, _h2, _function = cluster
    peer = n2.underlay.peers["n1"]
    n2.datapath.now = 10.0
    n1.underlay.send_hellos()
    wait_drain(n2)
    assert (peer.seen, n2.underlay.hellos_received) == (10.0, 1)
    assert n2.underlay.liveness(10.0 + n2.underlay.dead_after / 2) == ([], [])
    down, up = n2.underlay.liveness(10.0 + n2.underlay.dead_after)
    assert (down, up, peer.alive) == ([peer], [], False)
    n2.datapath.now = 11.0
    n1.underlay.send_hellos()
    wait_drain(n2)
    assert n2.underlay.liveness(11.0) == ([], [peer])
    assert peer.alive
    # A hello is no frame: nothing was switched or dropped.
    assert sum(n2.underlay.drops.values()) == 0
    assert all(port.sent == [] for port in n2.ports.values() if isinstance(port, MemoryPort))


def test_a_hello_decodes_as_oam_nsh_with_an_ethernet_frame_naming_the_node(
    cluster: tuple[Node, Node, MemoryPort, MemoryPort, Counting],
) -> None:
    n1, _n2, _h1, _h2, _function = cluster
    spy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spy.bind(("127.0.0.3", 0))
    spy.settimeout(5)
    n1.underlay.peers["n2"].address = spy.getsockname()
    n1.underlay.send_hellos()
    data = spy.recv(65535)
    spy.close()
    nsh = NSH(data[8:])
    assert (nsh.oam, nsh.spi, nsh.si, nsh.nextproto) == (1, 0, INITIAL_SI, 3)
    inner = Ether(bytes(nsh.payload))
    assert inner.type == 0x88B5
    assert b"pktchain hello n1" in bytes(inner.payload)


class TtlBump(Bump):
    """Takes one off the TTL (a rewrite the fast path fuses), one lease per flow."""

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        packet.decrement_ttl()
        return forward(lease=self.leases.lease((packet.iface, packet.key)))


def test_a_rewrite_fused_with_the_encapsulation_sends_what_the_slow_path_sent() -> None:
    n1, n2 = Node("n1", "127.0.0.6"), Node("n2", "127.0.0.7")
    try:
        h1, h2 = n1.host("h1", H1), n2.host("h2", H2)
        f1 = TtlBump()
        p1 = add_function(n1, "f1", f1, 1)
        p2 = add_function(n2, "f2", Bump(), 2)
        n1.peer(n2)
        n2.peer(n1)
        n1.datapath.pin_remote(mac(H2), "n2")
        n2.datapath.pin_remote(mac(H1), "n1")
        hello = Ether(src=H2, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"h" * 46)
        h2.inbox.append(bytes(10) + bytes(hello))
        n2.datapath.drain(h2)
        on_n2 = PairPlan(p2.id, p2.name, p2.ingress, p2.egress, node="n2")
        on_n1 = PairPlan(p1.id, p1.name, p1.ingress, p1.egress, node="n1")
        groups1 = (GroupPlan("g1", "g1", (p1,)), GroupPlan("g2", "g2", (on_n2,)))
        groups2 = (GroupPlan("g1", "g1", (on_n1,)), GroupPlan("g2", "g2", (p2,)))
        classifier = ClassifierPlan("fc", "fc", protocol=17, logical_source_port="h1")
        n1.steer(SteeringPlan((ChainPlan("c", "c", 9, groups1, (classifier,), True),)))
        n2.steer(SteeringPlan((ChainPlan("c", "c", 9, groups2, (), True),)))
        frame = udp_frame(H1, H2, "10.0.0.1", "10.0.0.2", sport=4200, dport=53)
        for _ in range(4):
            h1.inbox.append(frame)
            n1.datapath.drain(h1)
            wait_drain(n2)
        assert [Ether(sent[10:])[IP].ttl for sent in h2.sent] == [63] * 4
        assert all(sent == h2.sent[0] for sent in h2.sent)
        assert f1.calls == 2
        assert n1.datapath.fast_hits == 2
    finally:
        n1.underlay.close()
        n2.underlay.close()
