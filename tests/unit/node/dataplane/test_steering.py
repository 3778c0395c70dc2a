"""Chain steering on the datapath: paths, pinning, symmetry, taps, graphs, live changes.

The service functions are played by the test: `route_back` does what an IP
forwarding appliance does (new source MAC, the next hop's destination MAC),
`bump_back` what a bump in the wire does (hands the frame back unchanged).
"""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw, raw

from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.steering import Steering
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan
from pktchain.sfc.resources import LbField
from support.memports import MemoryPort

VNET = bytes(10)
H1, H2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
PORT_MACS = {
    "h1": H1,
    "h2": H2,
    "h3": "02:00:00:00:00:03",
    **{
        f"vm{n}:{side}": f"02:00:00:00:{n}{s}:00"
        for n in range(1, 5)
        for s, side in enumerate(("in", "out"))
    },
}


def pair(n: int, weight: int = 1) -> PairPlan:
    return PairPlan(f"pp{n}-id", f"PP{n}", f"vm{n}:in", f"vm{n}:out", weight)


HTTP = ClassifierPlan(
    "fc-id",
    "FC_demo",
    protocol=6,
    destination_ports=(80, 80),
    logical_source_port="h1",
    logical_destination_port="h2",
)
PG1 = GroupPlan("pg1-id", "PG1", (pair(1), pair(2)))
PG2 = GroupPlan("pg2-id", "PG2", (pair(3),))


def chain(*groups: GroupPlan, symmetric: bool = False, classifiers=(HTTP,), **kw) -> ChainPlan:  # type: ignore[no-untyped-def]
    return ChainPlan("pc1-id", "PC1", 1, groups, tuple(classifiers), symmetric, **kw)


class Node:
    """A datapath with steering over memory ports named like the seed-003 demo."""

    def __init__(self) -> None:
        self.ports = {name: MemoryPort(name, mac=mac) for name, mac in PORT_MACS.items()}
        self.datapath = Datapath()
        for port in self.ports.values():
            self.datapath.add_port(port)
        self.steering = Steering(self.ports)
        self.datapath.steering = self.steering
        # h2 and h1 announce themselves so that normal switching knows them.
        self.send("h2", raw(Ether(src=H2, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.2")))
        self.send("h1", raw(Ether(src=H1, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="10.0.0.1")))
        self.clear()

    def apply(self, *chains: ChainPlan, groups: tuple[GroupPlan, ...] = ()) -> None:
        """Apply `chains`; `groups` are groups that exist outside them."""
        members = {(g.id, p.id) for c in chains for g in c.groups for p in g.pairs}
        members |= {(g.id, p.id) for g in groups for p in g.pairs}
        self.steering.apply(SteeringPlan(chains, frozenset(members)))

    def send(self, port: str, frame: bytes, now: float = 0.0) -> None:
        self.ports[port].inbox.append(VNET + frame)
        self.datapath.now = now
        self.steering.now = now
        self.datapath.drain(self.ports[port])

    def take(self, port: str) -> list[bytes]:
        """Frames sent to `port` since the last take, without their vnet header."""
        frames = [f[10:] for f in self.ports[port].sent]
        self.ports[port].sent.clear()
        return frames

    def clear(self) -> None:
        for name in self.ports:
            self.take(name)

    def where(self, *names: str) -> dict[str, int]:
        return {name: len(self.ports[name].sent) for name in names if self.ports[name].sent}


def http(
    sport: int = 40000,
    payload: bytes = b"GET / HTTP/1.1\r\n\r\n",
    flags: str = "PA",
    seq: int = 0,
) -> bytes:
    return raw(
        Ether(src=H1, dst=H2)
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=sport, dport=80, flags=flags, seq=seq)
        / Raw(payload)
    )


def reply(sport: int = 40000) -> bytes:
    return raw(
        Ether(src=H2, dst=H1)
        / IP(src="10.0.0.2", dst="10.0.0.1")
        / TCP(sport=80, dport=sport)
        / Raw(b"HTTP/1.1 200 OK\r\n\r\n")
    )


def route_back(frame: bytes, out_port: str, next_mac: str) -> bytes:
    """What an IP-forwarding function does before sending out of `out_port`."""
    return (
        bytes.fromhex(next_mac.replace(":", ""))
        + bytes.fromhex(PORT_MACS[out_port].replace(":", ""))
        + frame[12:]
    )


def dst_mac(frame: bytes) -> str:
    return frame[:6].hex(":")


def test_flow_crosses_one_pair_per_group_then_reaches_its_destination() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    node.send("h1", http())
    first = node.where("vm1:in", "vm2:in")
    assert sum(first.values()) == 1
    vm = next(iter(first))[:3]
    (frame,) = node.take(f"{vm}:in")
    assert dst_mac(frame) == PORT_MACS[f"{vm}:in"]
    assert frame[6:] == http()[6:]  # only the destination MAC was rewritten
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    (frame,) = node.take("vm3:in")
    assert dst_mac(frame) == PORT_MACS["vm3:in"]
    node.send("vm3:out", route_back(frame, "vm3:out", H2))
    (delivered,) = node.take("h2")
    assert dst_mac(delivered) == H2 and delivered[12:] == http()[12:]
    assert node.where(*PORT_MACS) == {}  # nothing flooded anywhere
    status = node.steering.status()
    (pc1,) = status["chains"]
    assert (pc1["packets"], pc1["flows"]) == (1, 1)
    assert {(h["group"], h["port_pair_name"], h["packets"]) for h in pc1["hops"]} == {
        (0, "PP1" if vm == "vm1" else "PP2", 1),
        (1, "PP3", 1),
    }


def test_later_packets_of_the_flow_take_the_same_pairs() -> None:
    node = Node()
    node.apply(chain(PG1))
    seen = set()
    for _ in range(20):
        node.send("h1", http(sport=41000))
        seen.update(node.where("vm1:in", "vm2:in"))
        node.clear()
    assert len(seen) == 1
    assert node.steering.stats.classified == 1


def test_a_bump_in_the_wire_gets_the_destination_restored_and_moves_no_address() -> None:
    node = Node()
    node.apply(chain(PG2))
    node.send("h1", http())
    (frame,) = node.take("vm3:in")
    node.send("vm3:out", frame)  # handed back untouched, our rewrite still in it
    (delivered,) = node.take("h2")
    assert delivered == http()
    assert (
        node.datapath.network().macs.lookup(bytes.fromhex(H1.replace(":", ""))) is node.ports["h1"]
    )


def test_a_new_connection_on_a_reused_port_is_classified_afresh() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    node.send("h1", http(sport=45000, flags="S"))
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    node.clear()
    # The connection ends; PG2 leaves the chain; the client reuses its port
    # for a connection of its own (a new initial sequence number).
    node.apply(chain(PG1), groups=(PG2,))
    node.send("h1", http(sport=45000, flags="S", seq=1))
    frame = node.take(f"{vm}:in")[0]  # same hash, same PG1 instance
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    assert node.where("vm3:in") == {}  # the new connection follows the new chain
    assert len(node.take("h2")) == 1
    # The SYN that comes back from the function mid-path is not a new flow.
    assert node.steering.stats.classified == 2


def test_a_syn_sent_again_is_the_connection_it_opened_not_a_new_flow() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    syn = http(sport=45000, flags="S", seq=7)
    node.send("h1", syn)
    # No SYN-ACK came back in time: the client sends the same SYN, with the
    # same initial sequence number, again (RFC 9293 §3.8.1, RFC 6298 §5).
    node.send("h1", syn, now=1.0)
    assert sum(node.where("vm1:in", "vm2:in").values()) == 2
    assert len(node.where("vm1:in", "vm2:in")) == 1  # both to the same instance
    assert node.steering.stats.classified == 1
    (pc1,) = node.steering.status()["chains"]
    assert pc1["flows"] == 1
    assert all(hop["flows"] == 1 for hop in pc1["hops"])


def test_a_one_armed_function_uses_one_port_both_ways() -> None:
    node = Node()
    one_arm = PairPlan("arm-id", "ARM", "vm4:in", "vm4:in")
    node.apply(chain(GroupPlan("g-id", "G", (one_arm,)), PG2))
    node.send("h1", http())
    (frame,) = node.take("vm4:in")
    node.send("vm4:in", route_back(frame, "vm4:in", H2))  # back out of the same port
    (frame,) = node.take("vm3:in")
    node.send("vm3:out", route_back(frame, "vm3:out", H2))
    assert len(node.take("h2")) == 1


def test_unclassified_traffic_is_switched_normally() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    other = raw(Ether(src=H1, dst=H2) / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=53))
    node.send("h1", other)
    assert node.take("h2") == [other]
    assert node.where(*PORT_MACS) == {}
    assert node.steering.stats.unclassified == 1


def test_symmetric_replies_cross_the_same_instances_in_reverse() -> None:
    node = Node()
    node.apply(chain(PG1, PG2, symmetric=True))
    for sport in range(42000, 42040):
        node.send("h1", http(sport))
        (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
        frame = node.take(f"{vm}:in")[0]
        node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
        node.send("vm3:out", route_back(node.take("vm3:in")[0], "vm3:out", H2))
        assert len(node.take("h2")) == 1
        # The reply enters the chain at its end and walks it backwards.
        node.send("h2", reply(sport))
        (back,) = node.take("vm3:out")
        assert dst_mac(back) == PORT_MACS["vm3:out"]
        node.send("vm3:in", route_back(back, "vm3:in", H1))
        assert node.where("vm1:out", "vm2:out") == {f"{vm}:out": 1}
        back = node.take(f"{vm}:out")[0]
        assert dst_mac(back) == PORT_MACS[f"{vm}:out"]
        node.send(f"{vm}:in", route_back(back, f"{vm}:in", H1))
        (home,) = node.take("h1")
        assert home[12:] == reply(sport)[12:]
    reverse = [
        h for h in node.steering.status()["chains"][0]["hops"] if h["direction"] == "reverse"
    ]
    assert sum(h["packets"] for h in reverse if h["group"] == 1) == 40


def test_weights_share_flows_in_proportion() -> None:
    node = Node()
    node.apply(chain(GroupPlan("pg-id", "PG", (pair(1, weight=1), pair(2, weight=3)))))
    for sport in range(2000, 4400):
        node.send("h1", http(sport))
    counts = Counter({name: len(node.ports[name].sent) for name in ("vm1:in", "vm2:in")})
    assert counts.total() == 2400
    assert abs(counts["vm1:in"] / 2400 - 0.25) < 0.025
    assert abs(counts["vm2:in"] / 2400 - 0.75) < 0.025


def test_lb_fields_choose_what_the_hash_sees() -> None:
    node = Node()
    by_source = GroupPlan("pg-id", "PG", (pair(1), pair(2), pair(4)), (LbField.IP_SRC,))
    node.apply(chain(by_source))
    for sport in range(30000, 30050):
        node.send("h1", http(sport))
    # One source address: every flow hashes alike, whatever its ports.
    assert len(node.where("vm1:in", "vm2:in", "vm4:in")) == 1


def test_tap_gets_a_copy_and_what_it_sends_back_is_dropped() -> None:
    node = Node()
    tap_group = GroupPlan("tg-id", "TAP", (pair(4),), tap=True)
    node.apply(chain(tap_group, PG2))
    node.send("h1", http())
    (copy,) = node.take("vm4:in")
    (original,) = node.take("vm3:in")
    assert dst_mac(copy) == PORT_MACS["vm4:in"] and copy[6:] == http()[6:]
    assert dst_mac(original) == PORT_MACS["vm3:in"]
    node.send("vm4:out", route_back(copy, "vm4:out", H2))
    assert node.ports["vm4:out"].drops["tap-return"] == 1
    node.send("vm3:out", route_back(original, "vm3:out", H2))
    assert len(node.take("h2")) == 1  # delivered once


def test_removing_a_pair_repins_only_its_flows() -> None:
    node = Node()
    node.apply(chain(PG1))
    placement = {}
    for sport in range(50000, 50060):
        node.send("h1", http(sport))
        (vm,) = node.where("vm1:in", "vm2:in")
        placement[sport] = vm
        node.clear()
    assert set(placement.values()) == {"vm1:in", "vm2:in"}
    node.apply(chain(GroupPlan("pg1-id", "PG1", (pair(2),))))
    assert node.steering.stats.repinned == list(placement.values()).count("vm1:in")
    for sport in placement:
        node.send("h1", http(sport))
        assert node.where("vm1:in", "vm2:in") == {"vm2:in": 1}
        node.clear()


def test_changing_a_chain_keeps_running_flows_on_their_path() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    node.send("h1", http(sport=60000))
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    node.clear()
    node.apply(chain(PG1), groups=(PG2,))  # PG2 leaves the chain: new flows skip vm3
    node.send(f"{vm}:out", route_back(http(sport=60000), f"{vm}:out", H2))
    assert node.where("vm3:in") == {"vm3:in": 1}  # the running flow keeps vm3
    node.clear()
    node.send("h1", http(sport=60001))
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    frame = node.take(f"{vm}:in")[0]
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    assert node.where("vm3:in") == {} and len(node.take("h2")) == 1


def test_deleting_a_group_repins_the_flows_that_crossed_it() -> None:
    node = Node()
    node.apply(chain(PG1, PG2))
    node.send("h1", http(sport=60000))
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    node.apply(chain(PG1))  # PG2 is gone from the model altogether
    assert node.steering.stats.repinned == 1
    node.clear()
    node.send("h1", http(sport=60000))
    frame = node.take(f"{vm}:in")[0]  # re-pinned: same hash, same PG1 instance
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    assert node.where("vm3:in") == {} and len(node.take("h2")) == 1


def test_a_flow_that_passed_over_an_empty_group_is_pinned_again_when_it_has_an_instance() -> None:
    node = Node()
    empty = GroupPlan("pg2-id", "PG2", ())  # its instance is not there yet (another node's)
    node.apply(chain(PG1, empty))
    node.send("h1", http(sport=61000))
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    node.clear()
    node.apply(chain(PG1, PG2))  # now it is
    assert node.steering.stats.repinned == 1
    node.send("h1", http(sport=61000))
    frame = node.take(f"{vm}:in")[0]  # the same PG1 instance (same hash)
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    assert node.where("vm3:in") == {"vm3:in": 1}  # and PG2's instance now


def test_a_new_plan_classifies_flows_that_were_not_steered() -> None:
    node = Node()
    node.apply(chain(PG2, classifiers=()))  # the chain has lost its classifier
    node.send("h1", http())
    assert node.take("h2") == [http()]
    node.apply(chain(PG2))
    node.send("h1", http())
    assert node.where("vm3:in", "h2") == {"vm3:in": 1}


def test_service_graph_continues_into_the_matching_destination_chain() -> None:
    node = Node()
    after = ClassifierPlan("fc2-id", "FC_after", protocol=6)
    first = ChainPlan("a-id", "A", 1, (PG1,), (HTTP,), successors=("b-id",))
    second = ChainPlan("b-id", "B", 2, (PG2,), (after,))
    node.steering.apply(SteeringPlan((first, second)))
    node.send("h1", http())
    (vm,) = [n[:3] for n in node.where("vm1:in", "vm2:in")]
    frame = node.take(f"{vm}:in")[0]
    node.send(f"{vm}:out", route_back(frame, f"{vm}:out", H2))
    (frame,) = node.take("vm3:in")
    node.send("vm3:out", route_back(frame, "vm3:out", H2))
    assert len(node.take("h2")) == 1
    chains = {c["name"]: c for c in node.steering.status()["chains"]}
    assert chains["B"]["flows"] == 1


def test_idle_flows_expire() -> None:
    node = Node()
    node.apply(chain(PG1))
    node.send("h1", http(), now=1.0)
    assert len(node.steering.flows) == 1
    assert node.steering.expire(now=100.0) == 0
    assert node.steering.expire(now=1.0 + node.steering.idle_timeout + 1) == 1
    assert node.ports["h1"].flows == {}


def test_a_gso_sized_frame_is_steered_intact() -> None:
    node = Node()
    node.apply(chain(PG2))
    big = http(payload=bytes(range(256)) * 250)
    node.send("h1", big)
    (frame,) = node.take("vm3:in")
    assert len(frame) == len(big) and frame[6:] == big[6:]


def test_non_ip_frames_on_a_steered_port_are_switched() -> None:
    node = Node()
    node.apply(chain(PG1))
    arp = raw(Ether(src=H1, dst=H2) / ARP(op=2, psrc="10.0.0.1", pdst="10.0.0.2"))
    node.send("h1", arp)
    assert node.take("h2") == [arp]


def test_a_plan_naming_a_port_the_node_lacks_is_refused() -> None:
    node = Node()
    ghost = GroupPlan("g-id", "G", (PairPlan("x", "X", "ghost:in", "ghost:out"),))
    with pytest.raises(ValueError, match="ghost:in, ghost:out"):
        node.apply(chain(ghost))


def test_classifier_fields() -> None:
    from pktchain.packet.parse import parse_frame

    info = parse_frame(VNET + http(sport=1234), 10)
    assert HTTP.matches(info)
    assert not ClassifierPlan("x", "x", protocol=17).matches(info)
    assert not ClassifierPlan("x", "x", ip_version=6).matches(info)
    net = ipaddress.ip_network
    assert ClassifierPlan("x", "x", source_prefix=net("10.0.0.0/24")).matches(info)
    assert not ClassifierPlan("x", "x", destination_prefix=net("10.0.1.0/24")).matches(info)
    assert ClassifierPlan("x", "x", source_ports=(1000, 2000)).matches(info)
    assert not ClassifierPlan("x", "x", source_ports=(1235, 2000)).matches(info)


def _named(name: str, key: str, value: str, n: int) -> ChainPlan:
    classifier = ClassifierPlan(
        f"fc-{name}",
        name,
        protocol=6,
        destination_ports=(80, 80),
        logical_source_port="h1",
        logical_destination_port="h2",
        l7=((key, value),),
    )
    group = GroupPlan(f"pg-{name}", name, (pair(n),))
    return ChainPlan(f"pc-{name}", name, n, (group,), (classifier,))


def test_l7_classifiers_wait_for_the_first_payload_then_match_the_host() -> None:
    node = Node()
    node.apply(_named("a", "http_host", "a.test", 1), _named("b", "http_host", "b.test", 2))
    # The handshake goes as it is: nothing is known of the host yet.
    node.send("h1", http(flags="S", payload=b""))
    assert node.where("h2", "vm1:in", "vm2:in") == {"h2": 1}
    assert node.steering.stats.l7_pending == 1
    node.clear()
    node.send("h1", http(payload=b"GET / HTTP/1.1\r\nHost: B.test:80\r\n\r\n"))
    assert node.where("h2", "vm1:in", "vm2:in") == {"vm2:in": 1}
    node.clear()
    node.send("h1", http(payload=b"more data"))  # the flow is pinned now
    assert node.where("h2", "vm1:in", "vm2:in") == {"vm2:in": 1}


def test_an_l7_classifier_matches_the_tls_server_name() -> None:
    from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName
    from scapy.layers.tls.handshake import TLSClientHello
    from scapy.layers.tls.record import TLS

    hello = raw(
        TLS(
            msg=[
                TLSClientHello(
                    ext=[TLS_Ext_ServerName(servernames=[ServerName(servername=b"a.test")])]
                )
            ]
        )
    )
    node = Node()
    node.apply(_named("a", "tls_sni", "a.test", 1), _named("b", "http_host", "a.test", 2))
    node.send("h1", http(sport=443, payload=hello))
    assert node.where("h2", "vm1:in", "vm2:in") == {"vm1:in": 1}


def test_a_flow_whose_payload_names_no_host_is_switched() -> None:
    node = Node()
    node.apply(_named("a", "http_host", "a.test", 1))
    node.send("h1", http(payload=b"\x16\x03\x01 not a hello"))
    assert node.where("h2", "vm1:in") == {"h2": 1}
