"""The flow monitor: scapy-built frames in, flow counters and IPFIX-style records out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Packet as ScapyPacket

from pktchain.functions.flowmonitor import FlowEndReason, FlowMonitor
from pktchain.functions.sdk import Driver, FlowLease, Packet, Result, Verdict, make_function
from pktchain.functions.sdk.schema import ConfigError

CLIENT, SERVER = "10.0.0.1", "10.0.1.1"
ETH = 14


def ether(layer: ScapyPacket) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / layer)


def up(flags: str = "A", payload: bytes = b"", sport: int = 40000) -> bytes:
    """Client to server."""
    return ether(IP(src=CLIENT, dst=SERVER) / TCP(sport=sport, dport=80, flags=flags) / payload)


def down(flags: str = "A", payload: bytes = b"", sport: int = 40000) -> bytes:
    """Server to client."""
    return ether(IP(src=SERVER, dst=CLIENT) / TCP(sport=80, dport=sport, flags=flags) / payload)


def ip_size(frame: bytes) -> int:
    return len(Ether(frame)[1])


def monitor(**config: Any) -> FlowMonitor:
    function = make_function("flow-monitor", config)
    assert isinstance(function, FlowMonitor)
    return function


def send(function: FlowMonitor, frame: bytes, now: float, iface: str | None = None) -> Result:
    if iface is None:
        iface = "ingress" if Ether(frame)[1].src == CLIENT else "egress"
    packet = Packet.from_ethernet(frame, iface)
    result = function.process(packet, now)
    assert result.verdict is Verdict.FORWARD
    assert packet.ethernet == frame  # the monitor never changes a packet
    return result


def connection(function: FlowMonitor, body: bytes = b"response" * 10) -> list[bytes]:
    """A whole short TCP connection at t = 1..7; returns its frames in order."""
    frames = [
        up("S"),
        down("SA"),
        up("A"),
        up("PA", b"GET / HTTP/1.1\r\n\r\n"),
        down("PA", body),
        up("FA"),
        down("FA"),
        up("A"),
    ]
    for t, frame in enumerate(frames, start=1):
        send(function, frame, float(t))
    return frames


# -- forwarding and leases ------------------------------------------------------------
def test_forwards_to_the_other_interface_with_a_lease() -> None:
    function = monitor()
    result = send(function, up("S"), 1.0)
    assert result.iface == "egress"
    assert isinstance(result.lease, FlowLease)
    assert send(function, down("SA"), 1.1).iface == "ingress"


def test_each_direction_has_its_lease_reused_while_valid() -> None:
    function = monitor()
    first = send(function, up("S"), 1.0).lease
    reverse = send(function, down("SA"), 1.1).lease
    assert reverse is not None and reverse is not first
    assert send(function, up("A"), 1.2).lease is first


def test_arp_and_malformed_frames_are_forwarded_without_a_flow() -> None:
    function = monitor()
    arp = bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=SERVER))
    assert send(function, arp, 1.0, "ingress").lease is None
    assert send(function, up("PA", b"abc")[:40], 1.0, "ingress").lease is None
    assert function.counters["not-ip"] == 1
    assert function.counters["malformed"] == 1
    assert function.status()["flows"] == 0


def test_a_fragment_is_counted_but_not_leased() -> None:
    function = monitor()
    fragment = ether(IP(src=CLIENT, dst=SERVER, flags="MF") / UDP(sport=1, dport=2) / (b"d" * 32))
    assert send(function, fragment, 1.0).lease is None
    assert function.status()["flows"] == 1


def test_frames_on_an_unknown_interface_are_dropped() -> None:
    function = monitor()
    result = Driver(function).process(Packet.from_ethernet(up(), "mirror"), 0.0)[1]
    assert (result.verdict, result.reason) == (Verdict.DROP, "unknown-interface")
    assert function.counters["unknown-interface"] == 1


# -- records ----------------------------------------------------------------------------
def test_a_finished_connection_is_exported_once_with_both_directions() -> None:
    function = monitor(end_wait=2.0)
    frames = connection(function)
    assert function.take_records() == []
    assert function.next_deadline() == 9.0  # the second FIN at t=7, plus end_wait
    function.on_timer(9.0)
    (record,) = function.take_records()
    ups = [frames[i] for i in (0, 2, 3, 5, 7)]
    downs = [frames[i] for i in (1, 4, 6)]
    assert record == {
        "sourceIPv4Address": CLIENT,
        "destinationIPv4Address": SERVER,
        "protocolIdentifier": 6,
        "sourceTransportPort": 40000,
        "destinationTransportPort": 80,
        "flowStartMilliseconds": 1000,
        "flowEndMilliseconds": 8000,
        "flowDurationMilliseconds": 7000,
        "packetDeltaCount": 5,
        "octetDeltaCount": sum(map(ip_size, ups)),
        "packetTotalCount": 5,
        "octetTotalCount": sum(map(ip_size, ups)),
        "reversePacketDeltaCount": 3,
        "reverseOctetDeltaCount": sum(map(ip_size, downs)),
        "reversePacketTotalCount": 3,
        "reverseOctetTotalCount": sum(map(ip_size, downs)),
        "tcpControlBits": 0x1B,  # FIN SYN PSH ACK
        "reverseTcpControlBits": 0x1B,
        "flowEndReason": FlowEndReason.END_OF_FLOW,
    }
    assert function.take_records() == []
    assert function.status()["flows"] == 0
    assert function.counters["end-of-flow"] == 1


def test_fast_path_counts_on_the_lease_are_added_as_ip_octets() -> None:
    function = monitor()
    lease = send(function, up("S"), 1.0).lease
    reverse = send(function, down("SA"), 1.1).lease
    assert lease is not None and reverse is not None
    # The node counts whole Ethernet frames: 10 segments of 1000 IP bytes.
    reverse.packets, reverse.bytes, reverse.seen = 10, 10 * (1000 + ETH), 5.0
    send(function, up("R"), 6.0)
    function.on_timer(8.0)
    (record,) = function.take_records()
    assert record["reversePacketDeltaCount"] == 11
    assert record["reverseOctetDeltaCount"] == ip_size(down("SA")) + 10_000
    assert record["flowEndMilliseconds"] == 6000


def test_a_reset_ends_the_flow_and_revokes_its_leases() -> None:
    function = monitor(end_wait=1.0)
    lease = send(function, up("S"), 1.0).lease
    send(function, down("RA"), 1.5)
    function.on_timer(2.5)
    (record,) = function.take_records()
    assert record["flowEndReason"] == FlowEndReason.END_OF_FLOW
    assert lease is not None and not lease.valid


def test_the_last_ack_after_both_fins_counts_in_the_same_record() -> None:
    function = monitor(end_wait=2.0)
    lease = send(function, up("FA"), 1.0).lease
    send(function, down("FA"), 1.1)
    assert lease is not None and lease.valid  # the last ACK may take the fast path
    lease.packets, lease.bytes, lease.seen = 1, len(up("A")), 1.2
    function.on_timer(3.1)
    (record,) = function.take_records()
    assert record["packetDeltaCount"] == 2
    assert record["flowEndMilliseconds"] == 1200


def test_a_syn_on_an_ended_flow_exports_it_and_starts_a_new_one() -> None:
    function = monitor(end_wait=30.0)
    send(function, up("FA"), 1.0)
    send(function, down("FA"), 1.1)
    send(function, up("S"), 2.0)
    (record,) = function.take_records()
    assert record["flowEndReason"] == FlowEndReason.END_OF_FLOW
    assert record["packetDeltaCount"] == 1
    assert function.status()["flows"] == 1
    assert function.counters["flows"] == 2


def test_a_syn_ack_seen_first_makes_its_receiver_the_initiator() -> None:
    function = monitor()
    send(function, down("SA"), 1.0)
    function.end_all()
    (record,) = function.take_records()
    assert record["sourceIPv4Address"] == CLIENT
    assert (record["packetDeltaCount"], record["reversePacketDeltaCount"]) == (0, 1)


# -- timeouts ---------------------------------------------------------------------------
def test_an_idle_flow_is_exported_and_its_leases_revoked() -> None:
    function = monitor(idle_timeout=15)
    lease = send(function, up("S"), 1.0).lease
    assert function.next_deadline() == 16.0
    function.on_timer(16.0)
    (record,) = function.take_records()
    assert record["flowEndReason"] == FlowEndReason.IDLE_TIMEOUT
    assert lease is not None and not lease.valid
    assert function.next_deadline() is None


def test_fast_path_activity_keeps_a_flow_from_idling_out() -> None:
    function = monitor(idle_timeout=15, active_timeout=1000)
    lease = send(function, ether(IP(src=CLIENT, dst=SERVER) / UDP(sport=1, dport=2)), 1.0).lease
    assert lease is not None
    lease.packets, lease.bytes, lease.seen = 3, 3 * 50, 10.0
    function.on_timer(16.0)
    assert function.take_records() == []
    assert function.next_deadline() == 25.0
    function.on_timer(25.0)
    (record,) = function.take_records()
    assert record["flowEndReason"] == FlowEndReason.IDLE_TIMEOUT
    assert record["packetDeltaCount"] == 4


def test_a_long_flow_is_reported_at_each_active_timeout_with_deltas() -> None:
    function = monitor(idle_timeout=50, active_timeout=60)
    lease = send(function, up("S"), 0.0).lease
    assert lease is not None
    lease.packets, lease.bytes, lease.seen = 100, 100 * (ETH + 1000), 59.0
    function.on_timer(60.0)
    (first,) = function.take_records()
    assert first["flowEndReason"] == FlowEndReason.ACTIVE_TIMEOUT
    assert first["packetDeltaCount"] == 101
    lease.packets, lease.bytes, lease.seen = 150, 150 * (ETH + 1000), 119.0
    function.on_timer(120.0)
    (second,) = function.take_records()
    assert second["flowEndReason"] == FlowEndReason.ACTIVE_TIMEOUT
    assert (second["packetDeltaCount"], second["octetDeltaCount"]) == (50, 50_000)
    assert second["packetTotalCount"] == 151
    assert second["flowStartMilliseconds"] == 0
    assert lease.valid  # the flow goes on


# -- the table and the records' bounds ----------------------------------------------------
def test_a_full_table_evicts_the_idlest_old_flow_for_lack_of_resources() -> None:
    function = monitor(max_flows=2)
    busy = send(function, up("S", sport=1), 1.0).lease
    idle = send(function, up("S", sport=2), 2.0).lease
    assert busy is not None and idle is not None
    busy.seen = 5.0
    send(function, up("S", sport=3), 6.0)
    (record,) = function.take_records()
    assert record["flowEndReason"] == FlowEndReason.LACK_OF_RESOURCES
    assert record["sourceTransportPort"] == 2
    assert not idle.valid and busy.valid
    assert function.status()["flows"] == 2


def test_end_all_forces_every_flow_out() -> None:
    function = monitor()
    lease = send(function, up("S", sport=1), 1.0).lease
    send(function, up("S", sport=2), 1.0)
    assert function.end_all() == 2
    reasons = {r["flowEndReason"] for r in function.take_records()}
    assert reasons == {FlowEndReason.FORCED_END}
    assert lease is not None and not lease.valid
    assert function.next_deadline() is None


def test_records_not_taken_are_bounded_oldest_lost_first() -> None:
    function = monitor(max_records=2)
    for sport in (1, 2, 3):
        send(function, up("S", sport=sport), 1.0)
    function.end_all()
    records = function.take_records()
    assert [r["sourceTransportPort"] for r in records] == [2, 3]
    assert function.counters["records-lost"] == 1


# -- record contents by protocol ------------------------------------------------------------
def test_ipv6_udp_record_uses_ipv6_elements_and_has_no_tcp_bits() -> None:
    function = monitor()
    frame = ether(IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5000, dport=53) / b"q")
    send(function, frame, 1.0, "ingress")
    function.end_all()
    (record,) = function.take_records()
    assert record["sourceIPv6Address"] == "2001:db8::1"
    assert record["destinationIPv6Address"] == "2001:db8::2"
    assert record["protocolIdentifier"] == 17
    assert record["octetDeltaCount"] == len(IPv6(bytes(Ether(frame)[IPv6])))
    assert "tcpControlBits" not in record


def test_icmp_echo_request_and_reply_are_one_flow_without_ports() -> None:
    function = monitor()
    send(function, ether(IP(src=CLIENT, dst=SERVER) / ICMP(id=7)), 1.0)
    send(function, ether(IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=7)), 1.1)
    function.end_all()
    (record,) = function.take_records()
    assert (record["packetDeltaCount"], record["reversePacketDeltaCount"]) == (1, 1)
    assert "sourceTransportPort" not in record


def test_clock_offset_makes_timestamps_absolute() -> None:
    function = monitor()
    function.clock_offset = 1_700_000_000.0
    send(function, up("S"), 2.5)
    function.end_all()
    (record,) = function.take_records()
    assert record["flowStartMilliseconds"] == 1_700_000_002_500


# -- status and top talkers -------------------------------------------------------------------
def test_top_talkers_rank_flows_and_sources_by_octets() -> None:
    function = monitor(top=2)
    send(function, up("PA", b"a" * 100, sport=1), 1.0)
    send(function, up("PA", b"a" * 300, sport=2), 1.0)
    send(function, down("PA", b"a" * 1000, sport=3), 1.0)
    send(function, up("PA", b"a" * 10, sport=4), 1.0)
    status = function.status()
    top = status["top_flows"]
    assert [t["flow"] for t in top] == [
        f"{SERVER}:80 -> {CLIENT}:3 proto 6",
        f"{CLIENT}:2 -> {SERVER}:80 proto 6",
    ]
    assert top[0]["octets"] == 1040
    assert status["top_sources"] == [
        {"source": SERVER, "octets": 1040, "packets": 1},
        {"source": CLIENT, "octets": 3 * 40 + 410, "packets": 3},
    ]
    assert status["flows"] == 4


def test_status_lists_flags_by_name_per_direction() -> None:
    function = monitor()
    send(function, up("S"), 1.0)
    send(function, down("SA"), 1.1)
    (flow,) = function.flows()
    assert flow["tcp_flags"] == ["SYN", "SYN|ACK"]
    assert flow["packets"] == 2


# -- configuration -----------------------------------------------------------------------------
def test_config_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        make_function(
            "flow-monitor",
            {"idle_timeout": 0, "active_timeout": "soon", "max_flows": 0, "top": -1, "x": 1},
        )
    fields = sorted(error.field for error in caught.value.errors)
    assert fields == ["active_timeout", "idle_timeout", "max_flows", "top", "x"]


def test_reconfiguring_a_smaller_table_evicts_the_surplus() -> None:
    function = monitor()
    for sport in (1, 2, 3):
        send(function, up("S", sport=sport), float(sport))
    function.reconfigure({"max_flows": 1})
    records = function.take_records()
    assert [r["flowEndReason"] for r in records] == [FlowEndReason.LACK_OF_RESOURCES] * 2
    assert function.status()["flows"] == 1


def test_reconfigured_timeouts_apply_to_existing_flows() -> None:
    function = monitor(idle_timeout=100)
    send(function, up("S"), 1.0)
    function.reconfigure({"idle_timeout": 5})
    assert function.next_deadline() == 6.0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["ingress", "egress"]))
def test_arbitrary_bytes_are_forwarded_never_raised(data: bytes, iface: str) -> None:
    function = monitor()
    result = function.process(Packet.from_ethernet(data, iface), 1.0)
    assert result.verdict is Verdict.FORWARD
    function.end_all()
