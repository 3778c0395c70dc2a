"""An NSH-aware function (correlation "nsh") on one node: it is given the frame
in NSH over Ethernet and gives it back with the SI one less; scapy plays the
function and decodes what the node sends it."""

from __future__ import annotations

from scapy.contrib.nsh import NSH
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from pktchain.node.dataplane.datapath import Datapath
from pktchain.node.dataplane.ports import SwitchPort
from pktchain.node.dataplane.steering import Steering
from pktchain.node.dataplane.underlay import INITIAL_SI, REVERSE_SPI, node_mac
from pktchain.sfc.plan import ChainPlan, ClassifierPlan, GroupPlan, PairPlan, SteeringPlan
from support.memports import MemoryPort

H1, H2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
SF_IN, SF_OUT = "02:00:00:00:0e:01", "02:00:00:00:0e:02"
PAIR = PairPlan("5e000000-0000-4000-8000-000000000001", "sf", "sf-in", "sf-out", nsh=True)


def node() -> tuple[Datapath, dict[str, MemoryPort]]:
    datapath = Datapath()
    ports = {
        name: MemoryPort(name, mac=address)
        for name, address in (("h1", H1), ("h2", H2), ("sf-in", SF_IN), ("sf-out", SF_OUT))
    }
    for port in ports.values():
        datapath.add_port(port)
    steering = Steering(dict[str, SwitchPort](ports))
    datapath.steering = steering
    classifier = ClassifierPlan(
        "fc", "fc", protocol=17, logical_source_port="h1", logical_destination_port="h2"
    )
    group = GroupPlan("g", "g", (PAIR,))
    steering.apply(SteeringPlan((ChainPlan("c", "c", 42, (group,), (classifier,), True),)))
    # The hosts have spoken (as ARP would have them do): the switch knows them.
    for name in ("h1", "h2"):
        port = ports[name]
        hello = bytes(Ether(src=port.mac, dst="ff:ff:ff:ff:ff:ff", type=0x88B5) / (b"h" * 46))
        port.inbox.append(bytes(10) + hello)
        datapath.drain(port)
    for port in ports.values():
        port.sent.clear()
    return datapath, ports


def udp(src: str, dst: str, sip: str, dip: str, *, sport: int, dport: int) -> bytes:
    packet = Ether(src=src, dst=dst) / IP(src=sip, dst=dip) / UDP(sport=sport, dport=dport)
    return bytes(10) + bytes(packet / (b"p" * 20))


def play_function(datapath: Datapath, given: bytes, back_on: MemoryPort) -> NSH:
    """Do what an NSH-aware function does: SI minus one, back to the sender's MAC."""
    frame = Ether(given[10:])
    assert frame.type == 0x894F
    nsh = frame[NSH]
    answer = Ether(src=frame.dst, dst=frame.src, type=0x894F) / nsh.copy()
    answer[NSH].si = nsh.si - 1
    back_on.inbox.append(bytes(10) + bytes(answer))
    datapath.drain(back_on)
    return nsh


def test_the_function_gets_nsh_and_the_path_goes_on_when_it_gives_it_back() -> None:
    datapath, ports = node()
    ports["h1"].inbox.append(udp(H1, H2, "10.0.0.1", "10.0.0.2", sport=5000, dport=53))
    datapath.drain(ports["h1"])
    (given,) = ports["sf-in"].sent
    outer = Ether(given[10:])
    assert (outer.dst, outer.src) == (SF_IN, node_mac("pktchain").hex(":"))
    nsh = play_function(datapath, given, ports["sf-out"])
    assert (nsh.spi, nsh.si, nsh.mdtype, nsh.nextproto) == (42, INITIAL_SI, 2, 3)
    inner = Ether(bytes(nsh.payload))
    assert (inner.dst, inner[IP].dst, inner[UDP].dport) == (H2, "10.0.0.2", 53)
    (delivered,) = ports["h2"].sent
    assert Ether(delivered[10:])[IP].src == "10.0.0.1"
    assert Ether(delivered[10:]).dst == H2

    # The reply is given to the function on its egress, on the reverse path.
    ports["h2"].inbox.append(udp(H2, H1, "10.0.0.2", "10.0.0.1", sport=53, dport=5000))
    datapath.drain(ports["h2"])
    (given_back,) = ports["sf-out"].sent
    nsh = play_function(datapath, given_back, ports["sf-in"])
    assert (nsh.spi, nsh.si) == (42 | REVERSE_SPI, INITIAL_SI)
    (home,) = ports["h1"].sent
    assert (Ether(home[10:]).dst, Ether(home[10:])[IP].src) == (H1, "10.0.0.2")


def test_a_function_that_does_not_decrement_the_si_is_a_counted_drop() -> None:
    datapath, ports = node()
    ports["h1"].inbox.append(udp(H1, H2, "10.0.0.1", "10.0.0.2", sport=5001, dport=53))
    datapath.drain(ports["h1"])
    (given,) = ports["sf-in"].sent
    frame = Ether(given[10:])
    same = Ether(src=frame.dst, dst=frame.src, type=0x894F) / frame[NSH].copy()
    ports["sf-out"].inbox.append(bytes(10) + bytes(same))
    datapath.drain(ports["sf-out"])
    # SI 255 again: the path would start over at the function; it must not loop.
    assert ports["h2"].sent == []
    assert len(ports["sf-in"].sent) == 1
    assert ports["sf-out"].drops["nsh-unexpected-si"] == 1


def test_malformed_nsh_from_a_function_is_a_counted_drop() -> None:
    datapath, ports = node()
    ports["h1"].inbox.append(udp(H1, H2, "10.0.0.1", "10.0.0.2", sport=5002, dport=53))
    datapath.drain(ports["h1"])
    broken = bytes(10) + bytes.fromhex(H1.replace(":", "") + SF_OUT.replace(":", "")) + b"\x89\x4f"
    ports["sf-out"].inbox.append(broken + b"\x00\x06")
    datapath.drain(ports["sf-out"])
    assert ports["sf-out"].drops["truncated-nsh"] == 1
    assert ports["h2"].sent == []
