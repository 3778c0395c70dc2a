"""Port security in the datapath: a secured port's frames are checked before anything
learns from them or forwards them, on the slow path and on the fused fast path.

Memory ports stand in for the hosts' NICs; the check comes from a Neutron port
through `pktchain.sfc.security`, as the node makes it.
"""

from __future__ import annotations

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.sdk import FlowLease, Function, Packet, Result, forward
from pktchain.node.dataplane.portsec import PortGuard
from pktchain.sfc.resources import FixedIp, Port
from pktchain.sfc.security import port_security
from support.memports import H1_MAC, H2_MAC, function_chain

VNET = bytes(10)
H1_IP, H2_IP = "10.0.0.1", "10.0.0.2"
THIEF_MAC = "02:00:00:00:00:66"


class Pass(Function):
    """A bump in the wire that leases every flow: later packets take the fast path."""

    KIND = "pass"

    def __init__(self, config: object = None) -> None:
        super().__init__(config)
        self.leases: dict[tuple[str, tuple[bytes, bytes, int, int, int]], FlowLease] = {}
        self.calls = 0

    def process(self, packet: Packet, now: float) -> Result:
        self.calls += 1
        lease = self.leases.setdefault((packet.iface, packet.key), FlowLease())
        return forward(lease=lease)


def secured(mac: str = H1_MAC, ip: str = H1_IP) -> PortGuard:
    security = port_security(Port(id="h1", mac_address=mac, fixed_ips=(FixedIp(ip),)))
    assert security is not None
    return PortGuard(security)


def udp(src_mac: str = H1_MAC, src_ip: str = H1_IP, payload: bytes = b"hello") -> bytes:
    return VNET + bytes(
        Ether(src=src_mac, dst=H2_MAC)
        / IP(src=src_ip, dst=H2_IP)
        / UDP(sport=5000, dport=7000)
        / payload
    )


def test_a_secured_port_forwards_what_it_sends_as_itself_and_counts_the_rest() -> None:
    datapath, h1, h2 = function_chain([])
    datapath.secure(h1, secured())
    broadcast = Ether(src=H1_MAC, dst="ff:ff:ff:ff:ff:ff")
    own_arp = VNET + bytes(broadcast / ARP(hwsrc=H1_MAC, psrc=H1_IP, pdst=H2_IP))
    h1.inbox.extend(
        [
            udp(),
            udp(src_mac=THIEF_MAC),
            udp(src_ip="10.0.0.9"),
            VNET + bytes(broadcast / ARP(hwsrc=H1_MAC, psrc=H2_IP, pdst=H2_IP)),
            own_arp,
        ]
    )
    datapath.drain(h1)
    assert h2.sent == [udp(), own_arp]
    assert dict(h1.drops) == {"spoofed-mac": 1, "spoofed-ip": 1, "spoofed-arp": 1}
    # The stolen MAC was never learned: nothing would be switched to the thief.
    assert h1.network is not None
    assert bytes.fromhex(THIEF_MAC.replace(":", "")) not in h1.network.macs.entries
    assert h1.counters()["secured"] is True and h2.counters()["secured"] is False


def test_the_check_holds_on_the_fast_path() -> None:
    function = Pass()
    datapath, h1, h2 = function_chain([function])
    datapath.secure(h1, secured())
    h1.inbox.extend([udp(payload=b"%d" % n) for n in range(4)])
    datapath.drain(h1)
    assert datapath.fused == 1 and datapath.fast_hits == 2 and function.calls == 2
    # Same 5-tuple (the fused entry's key) from another MAC: not carried.
    h1.inbox.extend([udp(src_mac=THIEF_MAC), udp(payload=b"after")])
    datapath.drain(h1)
    assert dict(h1.drops) == {"spoofed-mac": 1}
    assert datapath.fast_hits == 3 and function.calls == 2
    assert [Ether(frame[10:])[UDP].payload.load for frame in h2.sent] == [
        b"0",
        b"1",
        b"2",
        b"3",
        b"after",
    ]
    assert {Ether(frame[10:]).src for frame in h2.sent} == {H1_MAC}


def test_a_new_check_flushes_the_ports_fused_entries_and_the_macs_it_may_not_use() -> None:
    datapath, h1, h2 = function_chain([Pass()])
    h1.inbox.extend([udp(src_mac=THIEF_MAC)] * 3)
    datapath.drain(h1)  # unsecured: the entry is made for the other MAC
    assert h1.fast and datapath.fast_hits == 1
    assert h1.network is not None
    macs = h1.network.macs.entries
    assert bytes.fromhex(THIEF_MAC.replace(":", "")) in macs
    datapath.secure(h1, secured())
    assert h1.fast is None
    assert bytes.fromhex(THIEF_MAC.replace(":", "")) not in macs
    h1.inbox.append(udp(src_mac=THIEF_MAC))
    datapath.drain(h1)
    assert h1.drops["spoofed-mac"] == 1 and datapath.fast_hits == 1
    datapath.secure(h1, None)  # port security turned off: everything passes again
    h1.inbox.append(udp(src_mac=THIEF_MAC))
    datapath.drain(h1)
    assert len(h2.sent) == 4 and h1.drops["spoofed-mac"] == 1


def test_a_secured_port_drops_malformed_frames_even_unchecked() -> None:
    datapath, h1, h2 = function_chain([])
    datapath.check_frames = False
    datapath.secure(h1, secured())
    bad = bytearray(udp())
    bad[10 + 14] = 0x4F  # IHL 15: longer than the packet
    h1.inbox.extend([bytes(bad), udp()])
    datapath.drain(h1)
    assert h2.sent == [udp()]
    assert sum(h1.drops.values()) == 1
