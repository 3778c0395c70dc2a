"""Every frame a port receives is accounted for: forwarded, or dropped under a reason.

The datapath of a whole node (support.datapath_fuzz: hosts on two networks,
one port secured, the router with NAT, a chain of every built-in function)
takes mutated frames of every kind the codec knows (support.frame_fuzz) and
must raise nothing, have every function raise nothing, and keep each port's
ledger: received = forwarded + drops by reason.
"""

from __future__ import annotations

import math
import random

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.functions.firewall import Firewall
from pktchain.functions.nat import NatFunction
from pktchain.functions.sdk import Function, Packet, Result, forward, reply
from pktchain.node.dataplane.datapath import MAX_DEPTH
from pktchain.node.dataplane.functions import FunctionHost, SdkDriver
from support.datapath_fuzz import OPEN, OUTSIDE, SECURED, VNET, fuzz_lab, ledger_ports
from support.frame_fuzz import Endpoints, Mutator, Seed, build_seeds
from support.memports import H1_MAC, H2_MAC, function_chain

SOURCES: dict[str, Endpoints] = {"open": OPEN, "secured": SECURED, "outside": OUTSIDE}


@pytest.fixture(scope="module")
def seeds() -> dict[str, list[Seed]]:
    return {name: build_seeds(ends) for name, ends in SOURCES.items()}


@pytest.mark.parametrize("seed", [1, 2])
def test_mutated_frames_into_every_port_are_each_forwarded_or_counted(
    seeds: dict[str, list[Seed]], seed: int
) -> None:
    lab = fuzz_lab()
    before = {port["name"]: port["rx_packets"] for port in lab.port_status()}
    mutators = {name: Mutator(seeds[name], seed * 10 + n) for n, name in enumerate(SOURCES)}
    rng = random.Random(seed)
    sent = dict.fromkeys(SOURCES, 0)
    for _ in range(4000):
        name = rng.choice(("open", "open", "secured", "outside"))
        # Now and then a virtio-net header that is not all zeros: another
        # node's NSH may carry any (its offload TLV).
        vnet = VNET if rng.random() > 0.03 else rng.randbytes(len(VNET))
        lab.send(name, vnet + mutators[name].one())
        sent[name] += 1
    assert lab.ledger() == []
    received = {port["name"]: port["rx_packets"] for port in lab.port_status()}
    for name, count in sent.items():
        # What was sent, and what other hosts and the router sent back there.
        assert received[name] - before[name] >= count
    verdicts = {status["name"]: status["verdicts"] for status in lab.function_status()}
    # The frames reached every function of the chain, and the router.
    assert all(sum(counts.values()) > 0 for counts in verdicts.values()), verdicts


class Bounce(Function):
    """Forwards every frame to `target` (a MAC): two that name each other bounce for ever."""

    KIND = "bounce"
    INTERFACES = ("ingress", "egress")

    def __init__(self, target: str) -> None:
        super().__init__(None)
        self.target = bytes.fromhex(target.replace(":", ""))

    def process(self, packet: Packet, now: float) -> Result:
        packet.buf[len(VNET) : len(VNET) + 6] = self.target
        return forward()


def test_a_frame_dropped_for_crossing_too_many_functions_was_received_where_it_is_counted() -> None:
    datapath, h1, _h2 = function_chain([])
    macs = {
        "f1": ("02:00:00:00:0e:01", "02:00:00:00:0e:02"),
        "f2": ("02:00:00:00:0e:03", "02:00:00:00:0e:04"),
    }
    peers = {"f1": macs["f2"][0], "f2": macs["f1"][0]}
    for name, (ingress, egress) in macs.items():
        host = FunctionHost(name, SdkDriver(Bounce(peers[name])), lambda: 1.0)
        datapath.add_port(host.add_port("ingress", ingress))
        datapath.add_port(host.add_port("egress", egress))
    to_f1 = bytes.fromhex(macs["f1"][0].replace(":", "") + H1_MAC.replace(":", "") + "88b5")
    h1.inbox.append(VNET + to_f1 + bytes(46))
    datapath.drain(h1)
    counters = [port.counters() for port in datapath.ports]
    depth = [port for port in counters if port["drops"].get("function-depth")]
    assert len(depth) == 1 and depth[0]["drops"]["function-depth"] == 1
    crossed = sum(port["tx_packets"] for port in counters if port["kind"] == "function")
    assert crossed == MAX_DEPTH + 1  # handed to a function at depths 0 to 16
    assert ledger_ports(counters) == []


def test_a_frame_a_host_addressed_to_a_bump_in_the_wire_crosses_it_once() -> None:
    # Found by bench/fuzz.py: the firewall forwards a frame whose destination
    # is its own ingress out of its egress, where the switch sends it back to
    # the ingress, sixteen times over (function-depth).
    firewall = Firewall.from_config({"default": "accept"})
    datapath, h1, _h2 = function_chain([firewall])
    ingress = next(port for port in datapath.ports if port.name == "f0:ingress")
    assert ingress.mac is not None
    to_firewall = bytes.fromhex(ingress.mac.replace(":", "") + H1_MAC.replace(":", "") + "88b5")
    h1.inbox.append(VNET + to_firewall + bytes(46))
    datapath.drain(h1)
    counters = {port.name: port.counters() for port in datapath.ports}
    assert counters["f0:ingress"]["tx_packets"] == 1  # handed to the firewall once
    assert counters["f0:egress"]["drops"] == {"function-loop": 1}
    assert ledger_ports(counters.values()) == []


def test_a_host_cannot_take_a_functions_address_and_its_traffic() -> None:
    # Found by bench/fuzz.py: a frame from an unsecured port whose source was
    # a function's MAC moved the function's static entry to that port (which
    # then received the function's traffic) and let it age out.
    firewall = Firewall.from_config({"default": "accept"})
    datapath, h1, _h2 = function_chain([firewall])
    ingress = next(port for port in datapath.ports if port.name == "f0:ingress")
    assert ingress.mac is not None and ingress.network is not None
    mac = bytes.fromhex(ingress.mac.replace(":", ""))
    thief = bytes.fromhex("ffffffffffff" + ingress.mac.replace(":", "") + "88b5") + bytes(46)
    h1.inbox.append(VNET + thief)
    datapath.drain(h1)
    assert h1.counters()["drops"] == {"static-src-mac": 1}
    entry = ingress.network.macs.entries[mac]
    assert entry.port is ingress and entry.seen == math.inf
    assert ingress.network.macs.expire(1e12) == 1  # h2, learned: the function's stays
    assert mac in ingress.network.macs.entries
    assert ledger_ports(port.counters() for port in datapath.ports) == []


def test_a_nat_function_in_a_chain_passes_its_translated_packets_on() -> None:
    nat = NatFunction.from_config(
        {"external_address": "10.0.0.200", "internal_networks": ["10.77.0.0/16"]}
    )
    datapath, h1, h2 = function_chain([nat])
    udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.77.0.77", dst="10.0.0.2") / UDP(dport=53)
    for _ in range(3):
        h1.inbox.append(VNET + bytes(udp / b"query"))
        datapath.drain(h1)
    # The NAT translated the first two; the third took the fused entry they made.
    assert nat.counters["translated"] == 2 and datapath.fast_hits == 1
    assert [Ether(frame[len(VNET) :])[IP].src for frame in h2.sent] == ["10.0.0.200"] * 3


class Pass(Function):
    """A bump in the wire that forwards everything."""

    KIND = "pass"
    INTERFACES = ("ingress", "egress")

    def process(self, packet: Packet, now: float) -> Result:
        return forward()


def test_with_the_flow_table_full_the_oldest_flow_makes_room_and_every_path_is_whole() -> None:
    # Found by bench/fuzz.py: a host sending flows at random filled the flow
    # table; every other host's new flow was then steered into the chain's
    # first function and lost at its egress, which had no entry to go on by.
    datapath, h1, h2 = function_chain([Pass()])
    steering = datapath.steering
    assert steering is not None
    steering.max_flows = 2
    for sport in range(1000, 1006):
        udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.0.0.1", dst="10.0.0.2")
        h1.inbox.append(VNET + bytes(udp / UDP(sport=sport, dport=53) / b"q"))
        datapath.drain(h1)
    assert len(h2.sent) == 6  # each crossed the function and reached h2
    assert len(steering.flows) == 2 and steering.stats.table_full == 4
    assert [flow.key[3] for flow in steering.flows.values()] == [1004, 1005]
    assert ledger_ports(port.counters() for port in datapath.ports) == []


class Inbound(Function):
    """Sends, for each packet, one from h2's address out of its ingress, as a
    NAT sends the packets of an outside host it translated inbound, and
    forwards nothing."""

    KIND = "inbound"
    INTERFACES = ("ingress", "egress")

    def process(self, packet: Packet, now: float) -> Result:
        from_h2 = Ether(src=H2_MAC, dst=H1_MAC) / IP(src="10.0.0.2", dst="10.0.0.1")
        from_h2 /= UDP(sport=7, dport=7)  # no flow the steering knows
        return reply(packet, bytes(from_h2), reason="answered")


def test_what_a_bump_in_the_wire_sends_from_another_hosts_address_takes_none_of_its_traffic() -> (
    None
):
    # Found by bench/fuzz.py: the NAT sent a packet from h2's MAC out of its
    # ingress, the switch learned h2 there, and every frame for h2 went into
    # the NAT from then on.
    datapath, h1, h2 = function_chain([Inbound()])
    h1.sent.clear()
    udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53)
    h1.inbox.append(VNET + bytes(udp / b"q"))  # steered into the function
    datapath.drain(h1)
    assert [Ether(frame[len(VNET) :]).src for frame in h1.sent] == [H2_MAC]
    other = Ether(src=H1_MAC, dst=H2_MAC, type=0x88B5) / bytes(46)  # not steered: switched
    h1.inbox.append(VNET + bytes(other))
    datapath.drain(h1)
    assert [Ether(frame[len(VNET) :]).type for frame in h2.sent] == [0x88B5]


class Answers(Function):
    """Answers each packet from its own ingress address (as the router answers
    a ping), and forwards nothing."""

    KIND = "answers"
    INTERFACES = ("ingress", "egress")

    def process(self, packet: Packet, now: float) -> Result:
        answer = Ether(src=F0_INGRESS, dst=H1_MAC) / IP(src="10.0.0.9", dst="10.0.0.1")
        return reply(packet, bytes(answer / UDP(sport=7, dport=7)), reason="answered")


F0_INGRESS = "02:00:00:00:01:01"


def test_a_function_that_sends_from_its_own_address_keeps_it_pinned() -> None:
    # Found by bench/fuzz.py: the router's frames from its own MAC refreshed
    # its static entry into one that ages and moves, and a host that then
    # sent from that MAC took the router's traffic.
    datapath, h1, h2 = function_chain([Answers()])
    h1.sent.clear()  # h2's hello
    udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53)
    h1.inbox.append(VNET + bytes(udp / b"q"))  # steered into the function, which answers
    datapath.drain(h1)
    assert [Ether(frame[len(VNET) :]).src for frame in h1.sent] == [F0_INGRESS]
    claim = Ether(src=F0_INGRESS, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / bytes(46)
    h2.inbox.append(VNET + bytes(claim))
    datapath.drain(h2)
    assert h2.drops["static-src-mac"] == 1
    to_function = Ether(src=H1_MAC, dst=F0_INGRESS, type=0x88B5) / bytes(46)
    h1.inbox.append(VNET + bytes(to_function))
    datapath.drain(h1)
    assert not [f for f in h2.sent if Ether(f[len(VNET) :]).dst == F0_INGRESS]
    assert ledger_ports(port.counters() for port in datapath.ports) == []


VMAC = "00:00:5e:00:01:07"


class Virtual(Answers):
    """Owns addresses on its network (FLOODED, as the router): answers from a
    virtual MAC (VRRP's) that is not its port's."""

    KIND = "virtual"
    FLOODED = True

    def process(self, packet: Packet, now: float) -> Result:
        answer = Ether(src=VMAC, dst=H1_MAC) / IP(src="10.0.0.9", dst="10.0.0.1")
        return reply(packet, bytes(answer / UDP(sport=7, dport=7)), reason="answered")


def test_a_function_that_owns_addresses_is_learned_where_it_sends_from_them() -> None:
    datapath, h1, h2 = function_chain([Virtual()])
    udp = Ether(src=H1_MAC, dst=H2_MAC) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(dport=53)
    h1.inbox.append(VNET + bytes(udp / b"q"))
    datapath.drain(h1)
    h2.sent.clear()
    to_vmac = Ether(src=H1_MAC, dst=VMAC, type=0x88B5) / bytes(46)
    h1.inbox.append(VNET + bytes(to_vmac))
    datapath.drain(h1)
    assert h2.sent == []  # switched to the function, not flooded
    assert ledger_ports(port.counters() for port in datapath.ports) == []
