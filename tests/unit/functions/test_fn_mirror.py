"""The mirror function: scapy builds the frames that go in and decodes what comes out."""

from __future__ import annotations

import io
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.mirror import Mirror
from pktchain.functions.sdk import Driver, FlowLease, Packet, Result, Verdict, make_function
from pktchain.functions.sdk.schema import ConfigError
from pktchain.packet.checksum import partial_checksum_seed
from pktchain.packet.headers import IpProto
from pktchain.packet.virtio import needs_csum_header

CLIENT_MAC = "02:00:00:00:00:01"
SERVER_MAC = "02:00:00:00:00:02"


def ether(layer: ScapyPacket, *, reply: bool = False) -> bytes:
    src, dst = (SERVER_MAC, CLIENT_MAC) if reply else (CLIENT_MAC, SERVER_MAC)
    return bytes(Ether(src=src, dst=dst) / layer)


def web(
    sport: int = 40000, *, reply: bool = False, flags: str = "PA", payload: bytes = b"x"
) -> bytes:
    """A TCP segment of a client 10.0.0.1:sport talking to 10.0.1.1:80, or its answer."""
    if reply:
        return ether(
            IP(src="10.0.1.1", dst="10.0.0.1") / TCP(sport=80, dport=sport, flags=flags) / payload,
            reply=True,
        )
    return ether(
        IP(src="10.0.0.1", dst="10.0.1.1") / TCP(sport=sport, dport=80, flags=flags) / payload
    )


def dns(sport: int = 5353) -> bytes:
    return ether(IP(src="10.0.0.1", dst="10.0.1.1") / UDP(sport=sport, dport=53) / b"q")


def mirror(**config: Any) -> Mirror:
    function = make_function("mirror", config)
    assert isinstance(function, Mirror)
    return function


def send(function: Mirror, frame: bytes, iface: str = "ingress", now: float = 0.0) -> Result:
    packet = Packet.from_ethernet(frame, iface)
    result = Driver(function).process(packet, now)[1]  # as the node runs it: drops counted
    if result.verdict is Verdict.FORWARD:
        assert packet.ethernet == frame  # the mirror never changes what it forwards
    return result


def copies(result: Result) -> list[bytes]:
    assert all(iface == "mirror" for iface, _frame in result.emit)
    return [frame for _iface, frame in result.emit]


# -- forwarding and copying ----------------------------------------------------
def test_forwards_ingress_to_egress_and_copies_the_frame_to_mirror() -> None:
    frame = web()
    result = send(mirror(), frame)
    assert (result.verdict, result.iface) == (Verdict.FORWARD, "egress")
    (copy,) = copies(result)
    assert copy == frame
    decoded = Ether(copy)
    assert decoded[TCP].dport == 80
    assert bytes(decoded[TCP].payload) == b"x"


def test_forwards_egress_to_ingress_and_copies_the_return_traffic() -> None:
    result = send(mirror(), web(reply=True), "egress")
    assert (result.verdict, result.iface) == (Verdict.FORWARD, "ingress")
    assert copies(result) == [web(reply=True)]


def test_a_copied_flow_is_forwarded_without_a_lease() -> None:
    assert send(mirror(), web()).lease is None


def test_direction_ingress_copies_only_what_came_in_on_ingress() -> None:
    function = mirror(direction="ingress")
    assert copies(send(function, web())) == [web()]
    back = send(function, web(reply=True), "egress")
    assert copies(back) == []
    assert back.iface == "ingress"


def test_direction_egress_copies_only_the_return_traffic() -> None:
    function = mirror(direction="egress")
    assert copies(send(function, web())) == []
    assert copies(send(function, web(reply=True), "egress")) == [web(reply=True)]


def test_an_uncopied_direction_of_a_copied_flow_is_leased() -> None:
    function = mirror(direction="ingress")
    assert send(function, web()).lease is None
    assert isinstance(send(function, web(reply=True), "egress").lease, FlowLease)


# -- the filter ----------------------------------------------------------------
def test_filter_on_destination_port_copies_requests_and_their_answers() -> None:
    function = mirror(filter={"protocol": "tcp", "dport": 80})
    assert copies(send(function, web())) == [web()]
    assert copies(send(function, web(reply=True), "egress")) == [web(reply=True)]


def test_filter_one_way_copies_only_packets_matching_as_written() -> None:
    function = mirror(filter={"protocol": "tcp", "dport": 80, "both_ways": False})
    assert copies(send(function, web())) == [web()]
    assert copies(send(function, web(reply=True), "egress")) == []


def test_filter_leaves_other_flows_uncopied_and_leased() -> None:
    function = mirror(filter={"protocol": "tcp", "dport": 80})
    result = send(function, dns())
    assert copies(result) == []
    assert isinstance(result.lease, FlowLease)
    assert result.iface == "egress"


def test_filter_protocol_by_number() -> None:
    function = mirror(filter={"protocol": 17})
    assert copies(send(function, dns())) == [dns()]
    assert copies(send(function, web())) == []


def test_filter_on_source_prefix() -> None:
    function = mirror(filter={"src": "10.0.0.0/24", "both_ways": False})
    assert copies(send(function, web())) == [web()]
    assert copies(send(function, web(reply=True), "egress")) == []


def test_filter_on_destination_prefix_both_ways() -> None:
    function = mirror(filter={"dst": "10.0.1.0/24"})
    assert copies(send(function, web())) == [web()]
    assert copies(send(function, web(reply=True), "egress")) == [web(reply=True)]


def test_filter_on_an_ipv6_prefix_does_not_match_ipv4() -> None:
    function = mirror(filter={"src": "2001:db8::/32"})
    six = ether(IPv6(src="2001:db8::1", dst="2001:db8:1::1") / UDP(sport=1, dport=2))
    other = ether(IPv6(src="2001:db9::1", dst="2001:db9:1::1") / UDP(sport=1, dport=2))
    assert copies(send(function, six)) == [six]
    assert copies(send(function, other)) == []
    assert copies(send(function, web())) == []


def test_filter_ports_never_match_an_icmp_echo_identifier() -> None:
    function = mirror(filter={"dport": 80})
    ping = ether(IP(src="10.0.0.1", dst="10.0.1.1") / ICMP(id=80, seq=1))
    assert copies(send(function, ping)) == []


def test_filter_does_not_copy_arp() -> None:
    function = mirror(filter={"protocol": "tcp"})
    arp = bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"))
    result = send(function, arp)
    assert copies(result) == []
    assert result.lease is None  # not a 5-tuple flow: nothing to lease


def test_without_filter_arp_is_copied() -> None:
    arp = bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.0.0.2"))
    assert copies(send(mirror(), arp)) == [arp]


# -- snap length and sampling -----------------------------------------------------
def test_snaplen_truncates_the_copy_not_the_forwarded_frame() -> None:
    function = mirror(snaplen=54)
    frame = web(payload=b"y" * 500)
    result = send(function, frame)
    (copy,) = copies(result)
    assert copy == frame[:54]
    assert Ether(copy)[TCP].dport == 80  # headers kept: 14 + 20 + 20 bytes
    assert function.counters["truncated"] == 1


def test_snaplen_longer_than_the_frame_copies_it_whole() -> None:
    function = mirror(snaplen=1500)
    assert copies(send(function, web())) == [web()]
    assert function.counters["truncated"] == 0


def test_sampling_copies_the_first_then_every_nth_selected_packet() -> None:
    function = mirror(sample=3)
    copied = [bool(copies(send(function, web(40000 + i)))) for i in range(7)]
    assert copied == [True, False, False, True, False, False, True]
    assert function.counters["not-sampled"] == 4
    assert function.counters["copied"] == 3


def test_sampled_out_packets_of_a_selected_flow_are_still_not_leased() -> None:
    function = mirror(sample=2)
    send(function, web())
    assert send(function, web()).lease is None


def test_copy_of_a_partial_checksum_frame_has_its_checksum_completed() -> None:
    frame = bytearray(web(payload=b"abc" * 10))
    parsed = Packet.from_ethernet(bytes(frame), "ingress").info
    l4 = parsed.l4 - 10
    length = parsed.end - parsed.l4
    seed = partial_checksum_seed(parsed.src, parsed.dst, int(IpProto.TCP), length)
    frame[l4 + 16 : l4 + 18] = seed.to_bytes(2, "big")
    vnet = needs_csum_header(parsed).pack()  # offsets from the frame's start
    packet = Packet(bytearray(vnet + frame), "ingress")
    result = mirror().process(packet, 0.0)
    (copy,) = copies(result)
    decoded = Ether(copy)
    sent = decoded[TCP].chksum
    del decoded[TCP].chksum
    assert Ether(bytes(decoded))[TCP].chksum == sent  # scapy computes the same checksum
    assert bytes(packet.buf[10:]) == bytes(frame)  # forwarded as it came, still partial


def test_destination_mac_addresses_the_copies_to_a_collector() -> None:
    function = mirror(destination_mac="02:00:00:00:00:99")
    frame = web()
    result = send(function, frame)
    (copy,) = copies(result)
    assert Ether(copy).dst == "02:00:00:00:00:99"
    assert copy[6:] == frame[6:]  # the rest as it was, source MAC included


def test_destination_mac_applies_before_snaplen() -> None:
    function = mirror(destination_mac="ff:ff:ff:ff:ff:ff", snaplen=20)
    (copy,) = copies(send(function, web()))
    assert copy == b"\xff" * 6 + web()[6:20]


# -- what is not ordinary traffic ----------------------------------------------------
def test_a_malformed_frame_is_forwarded_counted_and_copied_without_filter() -> None:
    function = mirror()
    broken = web()[:40]  # IP header promises more than is there
    result = send(function, broken)
    assert result.verdict is Verdict.FORWARD
    assert copies(result) == [broken]
    assert result.lease is None
    assert function.counters["malformed"] == 1


def test_a_malformed_frame_is_not_copied_with_a_filter() -> None:
    function = mirror(filter={"protocol": "tcp"})
    result = send(function, web()[:40])
    assert result.verdict is Verdict.FORWARD
    assert copies(result) == []


def test_frames_arriving_on_the_mirror_interface_are_dropped() -> None:
    function = mirror()
    result = send(function, web(), "mirror")
    assert (result.verdict, result.reason) == (Verdict.DROP, "mirror-input")
    assert function.counters["mirror-input"] == 1


def test_peer_pairs_ingress_and_egress_only() -> None:
    function = mirror()
    assert function.INTERFACES == ("ingress", "egress", "mirror")
    assert function.peer("ingress") == "egress"
    assert function.peer("egress") == "ingress"
    with pytest.raises(ValueError, match="mirror"):
        function.peer("mirror")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["ingress", "egress"]))
def test_arbitrary_bytes_are_forwarded_never_raised(data: bytes, iface: str) -> None:
    function = mirror(filter={"protocol": "tcp", "src": "10.0.0.0/8", "dport": 80}, snaplen=20)
    result = function.process(Packet.from_ethernet(data, iface), 0.0)
    assert result.verdict is Verdict.FORWARD


# -- leases ------------------------------------------------------------------------
def test_the_lease_of_a_flow_is_reused_while_valid() -> None:
    function = mirror(filter={"protocol": "tcp"})
    first = send(function, dns()).lease
    assert first is not None
    assert send(function, dns()).lease is first
    assert send(function, dns(5354)).lease is not first
    assert function.status()["leases"] == 2


def test_reconfiguring_revokes_every_lease_and_applies_the_new_filter() -> None:
    function = mirror(filter={"protocol": "tcp"})
    lease = send(function, dns()).lease
    assert lease is not None
    function.reconfigure({"filter": {"protocol": "udp"}})
    assert not lease.valid
    assert copies(send(function, dns())) == [dns()]
    assert function.status()["leases"] == 0


def test_an_idle_lease_is_revoked_by_the_timer() -> None:
    function = mirror(filter={"protocol": "tcp"}, lease_idle=10)
    lease = send(function, dns(), now=100.0).lease
    assert lease is not None
    assert function.next_deadline() == 110.0
    function.on_timer(110.0)
    assert not lease.valid
    assert function.counters["leases-expired"] == 1
    assert function.next_deadline() is None


def test_a_lease_in_use_on_the_fast_path_is_kept() -> None:
    function = mirror(filter={"protocol": "tcp"}, lease_idle=10)
    lease = send(function, dns(), now=100.0).lease
    assert lease is not None
    lease.packets, lease.bytes, lease.seen = 5, 500, 108.0  # as the node counts
    function.on_timer(110.0)
    assert lease.valid
    assert function.next_deadline() == 118.0  # idle seconds after the fast path last used it
    function.on_timer(118.0)
    assert not lease.valid


def test_a_full_lease_table_forwards_without_a_lease() -> None:
    function = mirror(filter={"protocol": "tcp"}, max_leases=1)
    assert send(function, dns(1)).lease is not None
    result = send(function, dns(2))
    assert result.lease is None
    assert result.verdict is Verdict.FORWARD
    assert function.counters["lease-table-full"] == 1


def test_max_leases_zero_never_leases() -> None:
    function = mirror(filter={"protocol": "tcp"}, max_leases=0)
    assert send(function, dns()).lease is None


# -- configuration and status ----------------------------------------------------------
def test_config_errors_are_all_reported_with_their_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        make_function(
            "mirror",
            {
                "direction": "sideways",
                "snaplen": -1,
                "sample": 0,
                "lease_idle": 0,
                "destination_mac": "02:00:00:00:00",
                "filter": {"protocol": "tcpx", "dport": 70000, "src": "10.0.0.300/8"},
                "bogus": 1,
            },
        )
    fields = sorted(error.field for error in caught.value.errors)
    assert fields == [
        "bogus",
        "destination_mac",
        "direction",
        "filter.dport",
        "filter.protocol",
        "filter.src",
        "lease_idle",
        "sample",
        "snaplen",
    ]


def test_protocol_number_out_of_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"filter\.protocol: protocol 300"):
        make_function("mirror", {"filter": {"protocol": 300}})


def test_status_shows_counters_and_settings() -> None:
    function = mirror(sample=2, snaplen=100)
    send(function, web())
    status = function.status()
    assert status["kind"] == "mirror"
    assert status["counters"]["copied"] == 1
    assert status["counters"]["forwarded"] == 1
    assert (status["sample"], status["snaplen"], status["direction"]) == (2, 100, "any")


def test_copies_written_as_pcap_decode_as_the_frames_sent() -> None:
    formats = pytest.importorskip("pktchain.packet.streams")
    from scapy.utils import rdpcap

    function = mirror(snaplen=60)
    frames = [web(), web(reply=True), dns()]
    stream = bytearray()
    encoder = formats.PcapEncoder()
    stream += encoder.header()
    for i, frame in enumerate(frames):
        iface = "egress" if i == 1 else "ingress"
        for copy in copies(send(function, frame, iface)):
            stream += encoder.encode(formats.Frame(copy), now_ns=(i + 1) * 1_000_000_000)
    read = rdpcap(io.BytesIO(bytes(stream)))
    assert [bytes(p) for p in read] == [f[:60] for f in frames]
