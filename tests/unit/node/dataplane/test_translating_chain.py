"""Native functions that translate, in a service chain: the NAT and its kin.

A function that rewrites a packet's addresses or ports changes the 5-tuple
the steering follows a flow by.  What such a function sends back on its hop's
return port goes on along the path of the packet the steering gave it, and
the flow's entries beyond the hop take the new 5-tuple, both ways: later
packets, the replies to the translated address, the fused fast path and ICMP
errors about the flow all follow (docs/sfc.md, "Functions that translate").

h1 (10.77.0.77, inside) and h2 (10.0.0.2, outside) are memory ports; a
symmetric chain steers h1's UDP to h2 through the functions, and back.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, UDP, IPerror, UDPerror
from scapy.layers.l2 import Ether

from pktchain.functions.nat import NatFunction
from pktchain.functions.sdk import FlowLeases, Function, Packet, Result, drop, forward
from pktchain.node.dataplane.steering import MAX_TRANSLATIONS, Flow
from pktchain.packet.address import ip_bytes as ipv4
from support.datapath_fuzz import VNET, ledger_ports
from support.memports import H1_MAC, H2_MAC, MemoryPort, function_chain

INSIDE, OUTSIDE, EXTERNAL = "10.77.0.77", "10.0.0.2", "10.0.0.200"
NAT_EGRESS = "02:00:00:00:{:02x}:02"
"""The egress MAC of function n (1-based) of `function_chain`."""


def nat(external: str = EXTERNAL, inside: str = "10.77.0.0/16", **config: object) -> NatFunction:
    return NatFunction.from_config(
        {"external_address": external, "internal_networks": [inside], **config}
    )


def send(port: MemoryPort, frame: Ether) -> None:
    port.inbox.append(VNET + bytes(frame))


def outbound(sport: int = 5000, payload: bytes = b"query") -> Ether:
    return (
        Ether(src=H1_MAC, dst=H2_MAC)
        / IP(src=INSIDE, dst=OUTSIDE, flags="DF", id=7)
        / UDP(sport=sport, dport=53)
        / payload
    )


def taken(port: MemoryPort) -> list[Ether]:
    """The frames `port` sent since the last call, decoded."""
    frames = [Ether(frame[len(VNET) :]) for frame in port.sent]
    port.sent.clear()
    return frames


def reply_to(
    frame: Ether, dst_mac: str, src_mac: str = H2_MAC, payload: bytes = b"answer"
) -> Ether:
    """The answer to the packet `frame`, from the host that received it (h2)."""
    return (
        Ether(src=src_mac, dst=dst_mac)
        / IP(src=frame[IP].dst, dst=frame[IP].src, flags="DF", id=9)
        / UDP(sport=frame[UDP].dport, dport=frame[UDP].sport)
        / payload
    )


def checksums_right(frame: Ether) -> bool:
    """Whether the IP and UDP checksums are what scapy computes afresh."""
    fresh = frame.copy()
    del fresh[IP].chksum
    del fresh[UDP].chksum
    rebuilt = Ether(bytes(fresh))
    return (frame[IP].chksum, frame[UDP].chksum) == (rebuilt[IP].chksum, rebuilt[UDP].chksum)


def one_flow(datapath_flows: dict[int, Flow]) -> Flow:
    flows = [flow for flow in datapath_flows.values() if flow.chain is not None]
    assert len(flows) == 1, flows
    return flows[0]


def keys_held(flow: Flow) -> set[tuple[str, tuple[bytes, bytes, int, int, int]]]:
    """Every (port, key) whose table holds an entry of `flow`."""
    return {
        (port.name, key)
        for port, key in flow.entries
        if port.flows is not None
        and port.flows.get(key) is not None
        and port.flows[key].flow is flow
    }


def test_a_nat_in_a_chain_translates_both_ways_and_replies_come_back_to_the_inside_host() -> None:
    function = nat()
    datapath, h1, h2 = function_chain([function])
    h1.sent.clear()
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    assert out[IP].src == EXTERNAL and out[IP].dst == OUTSIDE
    assert out.dst == H2_MAC  # the destination h1 addressed, restored at the path's end
    # h2 answers the external address; its neighbour entry names the NAT's egress.
    send(h2, reply_to(out, NAT_EGRESS.format(1)))
    datapath.drain(h2)
    (back,) = taken(h1)
    assert (back.src, back.dst) == (H2_MAC, H1_MAC)
    assert (back[IP].src, back[IP].dst, back[UDP].sport, back[UDP].dport) == (
        OUTSIDE,
        INSIDE,
        53,
        5000,
    )
    assert checksums_right(out) and checksums_right(back)
    assert function.status()["session_count"] == 1
    steering = datapath.steering
    assert steering is not None and steering.stats.translated == 1
    flow = one_flow(steering.flows)
    translated = (ipv4(EXTERNAL), ipv4(OUTSIDE), 17, out[UDP].sport, 53)
    assert flow.translations == [translated]
    held = keys_held(flow)
    assert ("f0:egress", translated) in held  # the path's end, under the new 5-tuple
    reply_key = (ipv4(OUTSIDE), ipv4(EXTERNAL), 17, 53, out[UDP].sport)
    assert ("h2", reply_key) in held  # the way back starts under the translated reply's
    assert ledger_ports(port.counters() for port in datapath.ports) == []


def test_the_fast_path_carries_a_translated_flow_with_exactly_the_slow_paths_bytes() -> None:
    function = nat()
    datapath, h1, h2 = function_chain([function])
    h1.sent.clear()
    outputs = []
    for n in range(4):
        send(h1, outbound())
        datapath.drain(h1)
        assert datapath.fast_hits == max(0, n - 1)  # the second packet made the entry
        outputs.append(bytes(h2.sent.pop()))
    assert outputs[2] == outputs[1] == outputs[3]  # fused and slow: the same bytes
    assert function.counters["translated"] == 2  # the NAT saw only the first two
    replies = []
    out = Ether(outputs[0][len(VNET) :])
    for _ in range(4):
        send(h2, reply_to(out, NAT_EGRESS.format(1)))
        datapath.drain(h2)
        replies.append(bytes(h1.sent.pop()))
    assert datapath.fast_hits == 2 + 2  # replies 3 and 4 took the fused entry on h2's port
    assert replies[2] == replies[1] == replies[3]
    assert Ether(replies[3][len(VNET) :])[IP].dst == INSIDE
    assert function.counters["translated"] == 4
    assert function.status()["leased_sessions"] == 1
    assert ledger_ports(port.counters() for port in datapath.ports) == []


def test_a_translated_flows_entries_and_fused_entries_go_with_the_flow() -> None:
    function = nat()
    datapath, h1, h2 = function_chain([function])
    steering = datapath.steering
    assert steering is not None
    for _ in range(3):
        send(h1, outbound())
        datapath.drain(h1)
    (out, *_rest) = taken(h2)
    for _ in range(3):
        send(h2, reply_to(out, NAT_EGRESS.format(1)))
        datapath.drain(h2)
    assert datapath.fused_entries() == 2  # h1's flow and h2's replies
    flow = one_flow(steering.flows)
    held = keys_held(flow)
    assert len(held) == 4 + 2  # the path's 4 entries, and 2 under translated 5-tuples
    assert steering.expire(steering.now + steering.idle_timeout + 1) == 1
    assert all(not port.flows for port in datapath.ports if port.flows is not None)
    assert datapath.fused_entries() == 0
    # Its next packet is pinned again, and translated by the same NAT session.
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (again,) = taken(h2)
    assert (again[IP].src, again[UDP].sport) == (EXTERNAL, out[UDP].sport)
    send(h2, reply_to(again, NAT_EGRESS.format(1)))
    datapath.drain(h2)
    assert [frame[IP].dst for frame in taken(h1)] == [INSIDE]


class Pass(Function):
    """A bump in the wire that forwards everything, each flow with a lease (and
    notes what it saw)."""

    KIND = "pass"
    INTERFACES = ("ingress", "egress")

    def __init__(self) -> None:
        super().__init__(None)
        self.seen: list[tuple[str, int]] = []
        self.leases = FlowLeases(limit=64)

    def process(self, packet: Packet, now: float) -> Result:
        self.seen.append((packet.iface, packet.info.proto))
        return forward(lease=self.leases.lease((packet.iface, packet.key)))


def test_a_nat_between_other_functions_and_two_nats_in_a_row_translate_and_come_back() -> None:
    first, last = Pass(), Pass()
    # nat2 translates what nat1 made: 10.0.0.200 -> 10.0.0.201.
    nat1, nat2 = nat(), nat("10.0.0.201", "10.0.0.200/32")
    datapath, h1, h2 = function_chain([first, nat1, nat2, last])
    taken(h1)
    for _ in range(3):
        send(h1, outbound())
        datapath.drain(h1)
    outs = taken(h2)
    assert [frame[IP].src for frame in outs] == ["10.0.0.201"] * 3
    assert datapath.fast_hits == 1
    for _ in range(3):
        send(h2, reply_to(outs[0], NAT_EGRESS.format(3)))
        datapath.drain(h2)
    backs = taken(h1)
    assert [(frame[IP].dst, frame[UDP].dport, frame.dst) for frame in backs] == [
        (INSIDE, 5000, H1_MAC)
    ] * 3
    # Both replies on the slow path crossed every function backwards.
    assert first.seen.count(("egress", 17)) == 2 and last.seen.count(("egress", 17)) == 2
    steering = datapath.steering
    assert steering is not None
    assert steering.stats.translated == 2
    assert len(one_flow(steering.flows).translations) == 2
    assert ledger_ports(port.counters() for port in datapath.ports) == []


class ReplyPort(Function):
    """Rewrites the source port of the replies it forwards back (egress -> ingress),
    53 -> 5300: a function that translates on the reverse path."""

    KIND = "reply-port"
    INTERFACES = ("ingress", "egress")

    def process(self, packet: Packet, now: float) -> Result:
        info = packet.info
        if packet.iface == "egress" and info.proto == 17 and info.sport == 53:
            packet.set_src(port=5300)
        return forward()


def test_a_function_that_translates_replies_moves_the_way_there_too() -> None:
    datapath, h1, h2 = function_chain([Pass(), ReplyPort()])
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    send(h2, reply_to(out, H1_MAC))
    datapath.drain(h2)
    (back,) = taken(h1)
    assert (back[UDP].sport, back.dst) == (5300, H1_MAC)
    # h1 answers the port it heard from: the chain takes it, as a packet of the flow.
    send(h1, reply_to(back, H2_MAC, src_mac=H1_MAC))
    datapath.drain(h1)
    (onward,) = taken(h2)
    assert (onward[UDP].dport, onward.dst) == (5300, H2_MAC)
    steering = datapath.steering
    assert steering is not None
    flow = one_flow(steering.flows)
    # The replies' new source port, then h1's packets to it, which the function
    # passes on as they are: the way to h2 now carries them too.
    assert flow.translations == [
        (ipv4(OUTSIDE), ipv4(INSIDE), 17, 5300, 5000),
        (ipv4(INSIDE), ipv4(OUTSIDE), 17, 5000, 5300),
    ]
    assert steering.stats.classified == 1  # the same flow all along
    function_ports = [port for port in datapath.ports if port.name.startswith("f1:")]
    assert sum(int(port.counters()["tx_packets"]) for port in function_ports) == 3


def test_an_icmp_error_about_a_translated_packet_comes_back_through_the_nat() -> None:
    function = nat()
    datapath, h1, h2 = function_chain([Pass(), function])
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    error = (
        Ether(src=H2_MAC, dst=NAT_EGRESS.format(2))
        / IP(src=OUTSIDE, dst=EXTERNAL)
        / ICMP(type=3, code=3)
        / bytes(out[IP])[:28]
    )
    for _ in range(3):
        send(h2, error)
        datapath.drain(h2)
    backs = taken(h1)
    assert len(backs) == 3
    for back in backs:
        assert (back.dst, back[IP].dst) == (H1_MAC, INSIDE)
        assert (back[IPerror].src, back[UDPerror].sport) == (INSIDE, 5000)
    steering = datapath.steering
    assert steering is not None and steering.stats.related == 3
    assert datapath.fast_hits == 0  # an error is no flow of its own: never fused
    assert datapath.fuse_refused["icmp-error"] == 3
    assert ledger_ports(port.counters() for port in datapath.ports) == []


def test_the_nats_refusal_reaches_the_inside_host_back_through_the_chain() -> None:
    first = Pass()
    function = nat(max_sessions=0)
    datapath, h1, _h2 = function_chain([first, function])
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (refusal,) = taken(h1)
    assert (refusal[ICMP].type, refusal[ICMP].code) == (3, 13)
    assert (refusal.dst, refusal[IP].src, refusal[IP].dst) == (H1_MAC, EXTERNAL, INSIDE)
    assert ("egress", 1) in first.seen  # back through the firewall's place in the chain
    assert ledger_ports(port.counters() for port in datapath.ports) == []


class Masquerade(Function):
    """Gives every packet from the inside the same source, 10.0.0.200:4000: two flows
    then translate to one 5-tuple."""

    KIND = "masquerade"
    INTERFACES = ("ingress", "egress")

    def process(self, packet: Packet, now: float) -> Result:
        if packet.iface == "ingress":
            packet.set_src(ipv4(EXTERNAL), 4000)
        return forward()


def test_a_translated_5_tuple_another_flow_holds_goes_to_the_newest_flow() -> None:
    datapath, h1, h2 = function_chain([Masquerade()])
    steering = datapath.steering
    assert steering is not None
    taken(h1)
    for sport in (5000, 5001, 5000):
        send(h1, outbound(sport))
        datapath.drain(h1)
    assert [(frame[IP].src, frame[UDP].sport) for frame in taken(h2)] == [(EXTERNAL, 4000)] * 3
    # The second flow took the 5-tuple from the first, which the third packet
    # pinned again and took it back from the second.
    assert steering.stats.translation_collisions == 2
    assert steering.stats.classified == 3
    flow = one_flow(steering.flows)
    assert flow.key[3] == 5000
    assert ledger_ports(port.counters() for port in datapath.ports) == []


class NewPortEachPacket(Function):
    """Gives each packet another source port: a flow translated without end."""

    KIND = "new-port"
    INTERFACES = ("ingress", "egress")

    def __init__(self) -> None:
        super().__init__(None)
        self.next = 20000

    def process(self, packet: Packet, now: float) -> Result:
        if packet.iface != "ingress":
            return drop("not-expected")
        self.next += 1
        packet.set_src(port=self.next)
        return forward()


def test_one_flow_is_translated_to_a_bounded_number_of_5_tuples() -> None:
    datapath, h1, h2 = function_chain([NewPortEachPacket()])
    steering = datapath.steering
    assert steering is not None
    count = MAX_TRANSLATIONS + 5
    for _ in range(count):
        send(h1, outbound())
        datapath.drain(h1)
    assert len(taken(h2)) == count  # each went on along the path all the same
    flow = one_flow(steering.flows)
    assert len(flow.translations) == MAX_TRANSLATIONS
    assert steering.stats.translations_refused == 5
    assert len(flow.entries) == 4 + 2 * MAX_TRANSLATIONS


def test_an_icmp_error_about_a_chained_flow_crosses_the_chain_backwards() -> None:
    function = Pass()
    datapath, h1, h2 = function_chain([function])
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    error = (
        Ether(src=H2_MAC, dst=H1_MAC)
        / IP(src=OUTSIDE, dst=INSIDE)
        / ICMP(type=3, code=3)
        / bytes(out[IP])[:28]
    )
    send(h2, error)
    datapath.drain(h2)
    (back,) = taken(h1)
    assert back[ICMP].type == 3 and back.dst == H1_MAC
    assert function.seen == [("ingress", 17), ("egress", 1)]


@pytest.mark.parametrize("dst_mac", [H1_MAC, "02:00:00:00:01:02"])
def test_replies_are_steered_back_whatever_mac_the_outside_host_sends_them_to(
    dst_mac: str,
) -> None:
    datapath, h1, h2 = function_chain([nat()])
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    send(h2, reply_to(out, dst_mac))
    datapath.drain(h2)
    assert [(frame.dst, frame[IP].dst) for frame in taken(h1)] == [(H1_MAC, INSIDE)]


def test_a_reply_after_its_flow_was_forgotten_is_dropped_after_the_nat() -> None:
    # docs/sfc.md, "What to configure for a NAT in a chain", 4.
    function = nat()
    datapath, h1, h2 = function_chain([function])
    steering = datapath.steering
    assert steering is not None
    taken(h1)
    send(h1, outbound())
    datapath.drain(h1)
    (out,) = taken(h2)
    steering.expire(steering.now + steering.idle_timeout + 1)
    send(h2, reply_to(out, NAT_EGRESS.format(1)))
    datapath.drain(h2)
    assert taken(h1) == []
    assert function.counters["translated"] == 2  # the NAT still knew the mapping
    ingress = next(port for port in datapath.ports if port.name == "f0:ingress")
    assert ingress.counters()["drops"] == {"function-loop": 1}
    # The inside host's next packet pins the flow again, and the replies follow.
    send(h1, outbound())
    datapath.drain(h1)
    send(h2, reply_to(out, NAT_EGRESS.format(1)))
    datapath.drain(h2)
    assert [frame[IP].dst for frame in taken(h1)] == [INSIDE]
