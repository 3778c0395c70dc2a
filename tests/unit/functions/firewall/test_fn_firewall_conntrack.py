"""The firewall's connection tracking: TCP states, query flows, related errors, leases, timers."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPv6,
)

from pktchain.functions.firewall.conntrack import TCP_TRANSITIONS, ConntrackTcpState, TcpEvent
from pktchain.functions.firewall.function import Firewall
from pktchain.functions.sdk import FlowLease, Result, Verdict, make_function
from support.fn_frames import (
    CLIENT,
    CLIENT6,
    SERVER,
    SERVER6,
    TcpConversation,
    packet,
    tcp,
    udp,
)

STATEFUL = [
    {"action": "accept", "state": ["established", "related"]},
    {"action": "drop", "state": ["invalid"]},
    {"action": "accept", "direction": "ingress", "state": ["new"]},
]
"""Anything may start from the ingress side; only answers come back."""


def firewall(rules: list[dict[str, object]] | None = None, **config: object) -> Firewall:
    made = make_function("firewall", {"rules": STATEFUL if rules is None else rules, **config})
    assert isinstance(made, Firewall)
    return made


def states(fw: Firewall) -> list[str]:
    return [conn["state"] for conn in fw.status()["connections"]]


def lease_of(result: Result) -> FlowLease:
    assert result.verdict is Verdict.FORWARD
    assert result.lease is not None
    return result.lease


# -- the TCP table -----------------------------------------------------------------------


def test_every_state_can_be_left() -> None:
    """Each TCP state has a row in the table: no connection is stuck but by its timer."""
    assert {state for state, _ in TCP_TRANSITIONS} == set(ConntrackTcpState)


def test_a_reset_ends_every_state() -> None:
    for state in ConntrackTcpState:
        assert TCP_TRANSITIONS[state, TcpEvent.ORIG_RST] is ConntrackTcpState.CLOSED
        assert TCP_TRANSITIONS[state, TcpEvent.REPLY_RST] is ConntrackTcpState.CLOSED


def test_the_handshake_moves_through_its_states() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.client_sends("S")
    assert states(fw) == ["syn-sent"]
    talk.server_sends("SA")
    assert states(fw) == ["syn-received"]
    talk.client_sends("A")
    assert states(fw) == ["established"]
    assert (fw.counters["state-new"], fw.counters["state-established"]) == (1, 2)


def test_the_answer_to_a_syn_is_established() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.client_sends("S")
    assert talk.server_sends("SA").verdict is Verdict.FORWARD  # only answers come back


def test_a_syn_from_the_other_side_is_new_and_dropped_by_direction() -> None:
    fw = firewall()
    result = fw.process(packet(tcp("S", src=SERVER, dst=CLIENT), "egress", forward=False), 0.0)
    assert result.reason == "drop-policy"


def test_a_segment_without_a_connection_is_invalid() -> None:
    fw = firewall()
    result = fw.process(packet(tcp("A", seq=5, ack=6)), 0.0)
    assert result.reason == "drop-rule"
    assert fw.counters["state-invalid"] == 1
    assert fw.status()["connection_count"] == 0


def test_a_syn_ack_without_a_syn_is_invalid() -> None:
    fw = firewall()
    assert fw.process(packet(tcp("SA")), 0.0).reason == "drop-rule"


def test_pickup_tracks_a_connection_met_mid_stream() -> None:
    fw = firewall(tcp_pickup=True)
    talk = TcpConversation(fw)
    assert talk.client_sends("A", payload=b"data").verdict is Verdict.FORWARD
    assert states(fw) == ["established"]
    assert fw.counters["state-new"] == 1
    assert talk.server_sends("A").lease is not None  # the answer establishes it


def test_a_dropped_answer_moves_nothing() -> None:
    """A SYN-ACK the rules refuse never reached the client: the connection stays syn-sent."""
    fw = firewall(
        [
            {
                "action": "drop",
                "direction": "egress",
                "source": [f"{SERVER}/32"],
                "sport": [80],
                "protocol": "tcp",
            },
            *STATEFUL,
        ]
    )
    talk = TcpConversation(fw)
    talk.client_sends("S")
    assert talk.server_sends("SA").verdict is Verdict.DROP
    assert states(fw) == ["syn-sent"]


def test_a_refused_connection_closes() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.client_sends("S")
    assert talk.server_sends("RA").verdict is Verdict.FORWARD
    assert states(fw) == ["closed"]


def test_simultaneous_open() -> None:
    """RFC 9293 §3.5 figure 7: both SYNs cross, then both SYN-ACKs."""
    fw = firewall([{"action": "accept"}])
    talk = TcpConversation(fw)
    talk.client_sends("S")
    talk.server_sends("S")
    assert states(fw) == ["syn-sent2"]
    talk.client_sends("SA")
    talk.server_sends("SA")
    assert states(fw) == ["syn-received"]
    talk.client_sends("A")
    assert states(fw) == ["established"]


def test_a_syn_in_an_established_connection_is_invalid() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    assert talk.client_sends("S").reason == "drop-rule"
    assert states(fw) == ["established"]


def test_a_retransmitted_syn_ack_after_the_handshake_passes() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    talk.server_seq -= 1  # the same SYN-ACK again: its ACK was lost
    assert talk.server_sends("SA").verdict is Verdict.FORWARD
    assert states(fw) == ["established"]


def test_closing_both_ways_reaches_time_wait() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    talk.client_sends("FA")
    assert states(fw) == ["fin-original"]
    talk.server_sends("A", payload=b"more")  # half-close: the server still sends
    talk.server_sends("FA")
    assert states(fw) == ["fin-both"]
    talk.client_sends("A")
    assert states(fw) == ["time-wait"]


def test_the_server_may_close_first() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    talk.server_sends("FA")
    assert states(fw) == ["fin-reply"]
    talk.client_sends("FA")
    talk.server_sends("A")
    assert states(fw) == ["time-wait"]


def test_a_new_syn_after_time_wait_opens_a_new_connection() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    talk.client_sends("FA")
    talk.server_sends("FA")
    talk.client_sends("A")
    assert talk.client_sends("S").verdict is Verdict.FORWARD
    assert states(fw) == ["syn-sent"]
    assert fw.status()["connection_count"] == 1


def test_a_reset_closes_an_established_connection() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open()
    talk.server_sends("R")
    assert states(fw) == ["closed"]
    assert talk.client_sends("A").verdict is Verdict.FORWARD  # in flight: still part of it


# -- UDP, ICMP and the rest ------------------------------------------------------------------


def test_udp_is_established_once_answered() -> None:
    fw = firewall()
    assert fw.process(packet(udp()), 0.0).verdict is Verdict.FORWARD
    answer = udp(src=SERVER, dst=CLIENT, sport=53, dport=5000)
    assert fw.process(packet(answer, "egress", forward=False), 0.0).verdict is Verdict.FORWARD
    assert states(fw) == ["replied"]
    assert (fw.counters["state-new"], fw.counters["state-established"]) == (1, 1)


def test_udp_from_outside_is_new_and_dropped() -> None:
    fw = firewall()
    stranger = udp(src=SERVER, dst=CLIENT, sport=53, dport=5000)
    assert fw.process(packet(stranger, "egress", forward=False), 0.0).reason == "drop-policy"


def test_an_echo_reply_is_established() -> None:
    fw = firewall()
    fw.process(packet(IP(src=CLIENT, dst=SERVER) / ICMP(type=8, id=9)), 0.0)
    answer = IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=9)
    assert fw.process(packet(answer, "egress", forward=False), 0.0).lease is not None


def test_an_echo_reply_nobody_asked_for_is_invalid() -> None:
    fw = firewall()
    answer = IP(src=SERVER, dst=CLIENT) / ICMP(type=0, id=9)
    assert fw.process(packet(answer, "egress", forward=False), 0.0).reason == "drop-rule"


def test_an_icmpv6_echo_reply_is_established() -> None:
    fw = firewall()
    fw.process(packet(IPv6(src=CLIENT6, dst=SERVER6) / ICMPv6EchoRequest(id=3)), 0.0)
    answer = IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6EchoReply(id=3)
    assert fw.process(packet(answer, "egress", forward=False), 0.0).verdict is Verdict.FORWARD


def test_neighbour_discovery_is_untracked() -> None:
    fw = firewall([{"action": "accept", "state": ["untracked"]}])
    solicitation = IPv6(src=CLIENT6, dst="ff02::1:ff00:10") / ICMPv6ND_NS(tgt=SERVER6)
    assert fw.process(packet(solicitation), 0.0).verdict is Verdict.FORWARD
    assert fw.status()["connection_count"] == 0


def test_other_protocols_are_tracked_by_address_pair() -> None:
    fw = firewall()
    gre = IP(src=CLIENT, dst=SERVER, proto=47) / b"\x00\x00\x08\x00"
    back = IP(src=SERVER, dst=CLIENT, proto=47) / b"\x00\x00\x08\x00"
    fw.process(packet(gre), 0.0)
    assert fw.process(packet(back, "egress", forward=False), 0.0).lease is not None


def udp_unreachable(about: IP, sender: str = SERVER, to: str = CLIENT) -> IP:
    return IP(src=sender, dst=to) / ICMP(type=3, code=3) / bytes(about)


def test_an_error_about_a_tracked_flow_is_related() -> None:
    fw = firewall()
    query = udp()
    fw.process(packet(query), 0.0)
    result = fw.process(packet(udp_unreachable(query), "egress", forward=False), 0.0)
    assert result.verdict is Verdict.FORWARD
    assert result.lease is None  # errors are judged one by one
    assert fw.counters["state-related"] == 1


def test_an_error_from_a_router_on_the_way_is_related() -> None:
    fw = firewall()
    query = udp()
    fw.process(packet(query), 0.0)
    error = IP(src="198.51.100.1", dst=CLIENT) / ICMP(type=11, code=0) / bytes(query)
    assert fw.process(packet(error, "egress", forward=False), 0.0).verdict is Verdict.FORWARD


def test_an_error_about_nothing_tracked_is_invalid() -> None:
    fw = firewall()
    error = udp_unreachable(udp(sport=6000))
    assert fw.process(packet(error, "egress", forward=False), 0.0).reason == "drop-rule"


def test_an_error_sent_the_wrong_way_is_invalid() -> None:
    """The error must go to the host that sent the offending packet."""
    fw = firewall()
    query = udp()
    fw.process(packet(query), 0.0)
    misdirected = udp_unreachable(query, sender=CLIENT, to=SERVER)
    assert fw.process(packet(misdirected), 0.0).reason == "drop-rule"


def test_an_icmpv6_error_about_a_tracked_flow_is_related() -> None:
    fw = firewall()
    query = udp(src=CLIENT6, dst=SERVER6)
    fw.process(packet(query), 0.0)
    error = IPv6(src=SERVER6, dst=CLIENT6) / ICMPv6DestUnreach(code=4) / bytes(query)
    assert fw.process(packet(error, "egress", forward=False), 0.0).verdict is Verdict.FORWARD
    assert fw.counters["state-related"] == 1


def test_an_error_about_a_tcp_connection_is_related() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.client_sends("S")
    syn = tcp("S", seq=1000)
    error = IP(src="198.51.100.1", dst=CLIENT) / ICMP(type=3, code=4) / bytes(syn)[:28]
    assert fw.process(packet(error, "egress", forward=False), 0.0).verdict is Verdict.FORWARD


# -- leases ---------------------------------------------------------------------------------


def test_no_lease_before_the_connection_is_established() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    assert talk.client_sends("S").lease is None
    assert talk.server_sends("SA").lease is None
    assert fw.process(packet(udp()), 0.0).lease is None


def test_without_state_rules_a_udp_flow_is_leased_from_its_first_packet() -> None:
    fw = firewall([{"action": "accept", "protocol": "udp", "dport": 53}])
    lease = lease_of(fw.process(packet(udp()), 0.0))  # one way, never answered
    assert lease_of(fw.process(packet(udp()), 1.0)) is lease
    talk = TcpConversation(fw)
    assert talk.client_sends("S").verdict is Verdict.DROP  # no rule for TCP: default drop


def test_without_state_rules_tcp_still_waits_for_its_handshake() -> None:
    fw = firewall([{"action": "accept"}])
    talk = TcpConversation(fw)
    assert talk.client_sends("S").lease is None
    assert talk.server_sends("SA").lease is None
    lease_of(talk.client_sends("A"))


def test_one_lease_serves_both_directions() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    assert lease_of(talk.server_sends("A", payload=b"x")) is lease
    assert lease_of(talk.client_sends("A", payload=b"y")) is lease
    assert fw.counters["leases-granted"] == 1


def test_the_lease_survives_a_half_close() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    talk.client_sends("FA")
    assert lease.valid
    assert lease_of(talk.server_sends("A", payload=b"rest")) is lease


def test_the_second_fin_revokes_the_lease() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    talk.client_sends("FA")
    result = talk.server_sends("FA")
    assert not lease.valid
    assert result.lease is None
    assert talk.client_sends("A").lease is None  # the last ACK is seen, not cached


def test_a_reset_revokes_the_lease() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    talk.client_sends("RA")
    assert not lease.valid
    assert fw.counters["leases-revoked"] == 1


def test_the_udp_answer_gets_the_lease() -> None:
    fw = firewall()
    fw.process(packet(udp()), 0.0)
    answer = udp(src=SERVER, dst=CLIENT, sport=53, dport=5000)
    lease = lease_of(fw.process(packet(answer, "egress", forward=False), 0.0))
    assert lease_of(fw.process(packet(udp()), 0.0)) is lease


def test_fast_path_counts_reach_the_rule_and_the_connection() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    lease.packets, lease.bytes, lease.seen = 10, 15000, 5.0
    status = fw.status()
    assert status["rules"][0]["packets"] == 2 + 10  # the SYN-ACK, the ACK, the fast path
    (conn,) = status["connections"]
    assert (conn["packets"], conn["bytes"]) == (3 + 10, 3 * 54 + 15000)
    assert conn["leased"]
    assert fw.status()["rules"][0]["packets"] == 12  # counted once


# -- timers ---------------------------------------------------------------------------------


def opened_udp(fw: Firewall, now: float = 0.0) -> FlowLease:
    fw.process(packet(udp()), now)
    answer = udp(src=SERVER, dst=CLIENT, sport=53, dport=5000)
    return lease_of(fw.process(packet(answer, "egress", forward=False), now))


def test_an_idle_connection_expires_and_its_lease_ends() -> None:
    fw = firewall()
    lease = opened_udp(fw)
    assert fw.next_deadline() is not None
    fw.on_timer(119.0)
    assert lease.valid
    fw.on_timer(120.0)  # udp_replied: 120 s
    assert not lease.valid
    assert fw.status()["connection_count"] == 0
    assert fw.counters["conn-expired"] == 1


def test_expiry_counts_activity_on_the_fast_path() -> None:
    fw = firewall()
    lease = opened_udp(fw)
    lease.seen = 100.0  # the node carried a packet at t=100
    fw.on_timer(120.0)
    assert lease.valid
    assert fw.next_deadline() == 220.0
    fw.on_timer(220.0)
    assert not lease.valid


def test_an_unanswered_flow_expires_sooner() -> None:
    fw = firewall(timeouts={"udp": 5, "udp_replied": 500})
    fw.process(packet(udp()), 0.0)
    assert fw.next_deadline() == 5.0
    fw.on_timer(5.0)
    assert fw.status()["connection_count"] == 0


def test_a_reset_shortens_the_deadline() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    talk.open(now=0.0)
    talk.client_sends("R", now=1.0)
    assert fw.next_deadline() == 11.0  # tcp_closed: 10 s
    fw.on_timer(11.0)
    assert fw.status()["connection_count"] == 0


def test_nothing_to_time_without_connections() -> None:
    assert firewall().next_deadline() is None


# -- the table limit -----------------------------------------------------------------------


def test_a_full_table_evicts_the_oldest_unanswered_connection() -> None:
    fw = firewall(max_connections=2)
    fw.process(packet(udp(sport=1)), 0.0)
    fw.process(packet(udp(sport=2)), 1.0)
    assert fw.process(packet(udp(sport=3)), 2.0).verdict is Verdict.FORWARD
    ports = [conn["sport"] for conn in fw.status()["connections"]]
    assert ports == [2, 3]
    assert fw.counters["conn-evicted"] == 1


def test_answered_connections_are_never_evicted() -> None:
    fw = firewall(max_connections=1)
    lease = opened_udp(fw)
    result = fw.process(packet(udp(sport=9)), 1.0)
    assert (result.verdict, result.reason) == (Verdict.DROP, "drop-table-full")
    assert lease.valid


# -- reconfiguration -----------------------------------------------------------------------


def two_connections(fw: Firewall) -> tuple[FlowLease, FlowLease]:
    web = TcpConversation(fw, dport=80)
    mail = TcpConversation(fw, dport=25, sport=40001)
    return lease_of(web.open()), lease_of(mail.open())


def test_new_rules_revoke_exactly_the_leases_they_judge_differently() -> None:
    fw = firewall()
    web, mail = two_connections(fw)
    fw.reconfigure({"rules": [{"action": "reject", "protocol": "tcp", "dport": [25]}, *STATEFUL]})
    assert web.valid
    assert not mail.valid
    assert fw.counters["leases-revoked"] == 1


def test_a_revoked_connection_meets_the_new_rules() -> None:
    fw = firewall()
    mail = TcpConversation(fw, dport=25)
    mail.open()
    fw.reconfigure({"rules": [{"action": "reject", "protocol": "tcp", "dport": [25]}, *STATEFUL]})
    result = mail.client_sends("A", payload=b"MAIL FROM")
    assert result.verdict is Verdict.REPLY  # the client gets a RST


def test_an_uncached_answer_direction_does_not_matter() -> None:
    """The lease covers only the directions it was given for."""
    fw = firewall()
    web = lease_of(TcpConversation(fw).open())
    fw.reconfigure({"rules": [{"action": "drop", "direction": "egress"}, *STATEFUL]})
    assert web.valid


def test_the_answer_direction_is_judged_too() -> None:
    fw = firewall()
    talk = TcpConversation(fw)
    web = lease_of(talk.open())
    talk.server_sends("A", payload=b"page")  # the answers are on the fast path too
    fw.reconfigure(
        {
            "rules": [
                {"action": "drop", "direction": "egress", "protocol": "tcp", "sport": [80]},
                *STATEFUL,
            ]
        }
    )
    assert not web.valid


def test_rules_that_change_nothing_keep_every_lease_and_counter() -> None:
    fw = firewall()
    web, mail = two_connections(fw)
    before = fw.status()["rules"][0]["packets"]
    fw.reconfigure({"rules": [{"action": "drop", "protocol": "udp"}, *STATEFUL]})
    assert web.valid and mail.valid
    rules = fw.status()["rules"]
    assert (rules[0]["packets"], rules[1]["packets"]) == (0, before)


def test_new_timeouts_apply_to_tracked_connections() -> None:
    fw = firewall()
    lease = opened_udp(fw)
    fw.reconfigure({"rules": STATEFUL, "timeouts": {"udp_replied": 10}})
    assert fw.next_deadline() == 10.0
    fw.on_timer(10.0)
    assert not lease.valid


def test_a_rule_for_one_direction_does_not_keep_a_two_way_lease() -> None:
    fw = firewall([{"action": "accept"}])
    talk = TcpConversation(fw)
    lease = lease_of(talk.open())
    talk.server_sends("A", payload=b"x")
    fw.reconfigure({"rules": [{"action": "accept", "direction": "ingress"}]})
    assert not lease.valid  # the server's answers come in on egress
