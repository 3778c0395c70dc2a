"""The router's replicated state: snapshots, restores, change records, takeover.

A master and a backup router of the same configuration (tests/support/hasync.py)
see scapy-built frames; the backup, given the master's state, must translate
the same packets to the same bytes.
"""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from pktchain.functions.common.tcp import (
    ARMED_LIFETIME,
    TCP_TRANSITIONS,
    Lifetime,
    TcpSessionState,
)
from pktchain.functions.nat.table import SYNCED, SessionRecord, SessionRefusal
from pktchain.functions.router.function import HostState, Router
from pktchain.functions.router.sync.records import (
    ApplyRefusal,
    Deletion,
    ForwardRecord,
    HostRecord,
    RecordKind,
)
from pktchain.packet.headers import IpProto
from support.hasync import (
    H1,
    H1_MAC,
    H2,
    LAN0_IP,
    VNET,
    WAN_IP,
    external_port,
    from_h1,
    from_wan,
    make_router,
    outbound_echo,
    outbound_tcp,
    outbound_udp,
    reply_to,
    send,
)
from support.router import receive, timers

H1_B, REMOTE_B = bytes([10, 0, 0, 5]), bytes([198, 51, 100, 7])
UDP_TIMEOUT = 300.0
ESTABLISHED_TIMEOUT = 7440.0


def busy_master() -> tuple[Router, dict[str, int]]:
    """A master with UDP, TCP and ICMP sessions, a port clash, a port forward, a static
    host; returns the external ports it gave."""
    master = make_router()
    ports = {
        "udp-h1": external_port(master, outbound_udp(H1, 5000, 53), 1.0),
        # Same inside port from another host: it cannot keep it (RFC 4787 REQ-3).
        "udp-h2": external_port(master, outbound_udp(H2, 5000, 53), 1.0),
        "tcp": external_port(master, outbound_tcp(H1, 41000, 80, "S"), 1.0),
        "echo": external_port(master, outbound_echo(H2, 777), 1.0),
    }
    send(master, ("wan", reply_to(ports["tcp"], proto="tcp", sport=80)), 1.1)  # established
    master.add_port_forward("udp", 6000, H2, 6001)
    master.add_host("02:aa:00:00:00:09", "10.0.1.9", "")
    return master, ports


def test_restored_backup_translates_like_the_master() -> None:
    master, ports = busy_master()
    assert ports["udp-h2"] != 5000
    backup = make_router(seed=99)  # another port seed: its own choices would differ
    refused = backup.import_state(master.export_state(), 2.0)
    assert refused == {}
    assert backup.export_state() == master.export_state()
    replies = [
        reply_to(ports["udp-h1"]),
        reply_to(ports["udp-h2"]),
        reply_to(ports["tcp"], proto="tcp", sport=80, flags="A"),
        reply_to(ports["echo"], proto="icmp"),
        reply_to(6000, sport=999),  # the port forward, open to anyone
    ]
    for reply in replies:
        expected = send(master, ("wan", reply), 3.0)
        assert expected, reply
        assert send(backup, ("wan", reply), 3.0) == expected
    # Outbound packets of the same flows leave by the same ports, byte for byte.
    for packet in (outbound_udp(H2, 5000, 53), outbound_tcp(H1, 41000, 80, "A")):
        assert send(backup, packet, 3.0) == send(master, packet, 3.0)
    # The filtering follows the sessions: a remote address H1 never sent to is refused
    # by both (address-dependent filtering, RFC 4787 REQ-8).
    stranger = from_wan(IP(src="198.51.100.99", dst=WAN_IP) / UDP(sport=53, dport=ports["udp-h1"]))
    assert send(backup, ("wan", stranger), 3.0) == send(master, ("wan", stranger), 3.0) == []
    nat = backup.nat
    assert nat is not None and nat.counters()["filtered"] == 1


def test_restore_replaces_what_the_backup_held_of_its_own() -> None:
    master, ports = busy_master()
    backup = make_router(seed=99)
    # The backup's own flow holds the port the master gave H2's flow (the inside port
    # is kept when free), and the backup has a rule of its own.
    assert external_port(backup, outbound_udp(H1, ports["udp-h2"], 9999), 1.0) == ports["udp-h2"]
    backup.add_port_forward("tcp", 7000, H1, 7001)
    backup.import_state(master.export_state(), 2.0)
    assert backup.export_state() == master.export_state()
    expected = send(master, ("wan", reply_to(ports["udp-h2"])), 3.0)
    assert send(backup, ("wan", reply_to(ports["udp-h2"])), 3.0) == expected


def test_non_atomic_datagrams_get_the_same_ports_and_the_backups_own_ids() -> None:
    # The IPv4 ID generator is not replicated (docs/ha-sync.md): the ID of a DF-clear
    # datagram comes from each router's own keyed generator; addresses and ports agree.
    master, _ = busy_master()
    backup = make_router(seed=99)
    backup.import_state(master.export_state(), 2.0)
    packet = outbound_udp(H2, 5000, 53, df=False)
    (name, sent), (_, expected) = send(backup, packet, 3.0)[0], send(master, packet, 3.0)[0]
    mine, theirs = Ether(sent[10:]), Ether(expected[10:])
    assert (mine[IP].src, mine[UDP].sport) == (theirs[IP].src, theirs[UDP].sport)
    assert mine[IP].id != theirs[IP].id and name == "wan"


def test_copied_sessions_do_not_age_until_takeover() -> None:
    master, _ = busy_master()
    backup = make_router(seed=99)
    backup.import_state(master.export_state(), 2.0)
    assert all(s.expires == SYNCED for s in backup.nat_sessions())
    timers(backup, 1e6)  # far past every timeout: the backup does not age copies
    assert len(backup.nat_sessions()) == len(master.nat_sessions())
    learned = [h for h in backup.hosts() if h.state is HostState.ACTIVE]
    assert learned  # H1 and H2 were learned by the master
    result = backup.takeover(2e6)
    assert result.sessions == len(master.nat_sessions())
    assert result.hosts == len(learned)
    by_proto = {s.proto: s for s in backup.nat_sessions()}
    assert by_proto[IpProto.UDP].expires == 2e6 + UDP_TIMEOUT
    assert by_proto[IpProto.TCP].expires == 2e6 + ESTABLISHED_TIMEOUT
    timers(backup, 2e6 + UDP_TIMEOUT - 1)
    assert any(s.proto is IpProto.UDP for s in backup.nat_sessions())
    timers(backup, 2e6 + UDP_TIMEOUT + 1)
    assert not any(s.proto is IpProto.UDP for s in backup.nat_sessions())
    assert [s.proto for s in backup.nat_sessions()] == [IpProto.TCP]
    # The learned hosts age again, from the takeover.
    timers(backup, 2e6 + 600 + 1)
    assert all(h.state is not HostState.ACTIVE or h.ip == "10.0.1.9" for h in backup.hosts())


def test_takeover_restarts_each_tcp_state_with_its_lifetime() -> None:
    for state in TcpSessionState:
        lifetime = ARMED_LIFETIME[state]
        backup = make_router()
        record = SessionRecord(
            6, bytes([10, 0, 0, 5]), 40000, bytes([1, 2, 3, 4]), 80, 40000, state
        )
        assert backup.apply_changes([record], 1.0) == {}
        backup.takeover(100.0)
        (session,) = backup.nat_sessions()
        nat = backup.nat
        assert nat is not None
        timeouts = {
            Lifetime.OPENING: nat.config.tcp_opening_timeout,
            Lifetime.INCOMING_SYN: nat.config.tcp_incoming_syn_timeout,
            Lifetime.ESTABLISHED: nat.config.tcp_established_timeout,
            Lifetime.CLOSING: nat.config.tcp_closing_timeout,
        }
        assert session.expires == 100 + timeouts[lifetime], state


def test_armed_lifetime_is_the_one_every_transition_into_a_state_arms() -> None:
    for (_state, _event), (next_state, lifetime) in TCP_TRANSITIONS.items():
        if lifetime is not Lifetime.KEEP:
            assert ARMED_LIFETIME[next_state] is lifetime


def test_changes_are_opens_state_moves_and_ends_not_refreshes() -> None:
    master = make_router()
    master.track_changes(True)
    master.take_changes(1000)  # nothing yet
    port = external_port(master, outbound_udp(H1, 5000, 53), 1.0)
    (opened,) = master.take_changes(1000)
    assert opened == SessionRecord(17, H1_B, 5000, REMOTE_B, 53, port, None)
    # A refresh of the same flow, both ways, is no change.
    external_port(master, outbound_udp(H1, 5000, 53), 2.0)
    send(master, ("wan", reply_to(port)), 2.0)
    assert not master.changes_pending()
    # TCP: each state move is one change with the new state; plain segments are none.
    external_port(master, outbound_tcp(H1, 41000, 80, "S"), 3.0)
    assert [c.state for c in master.take_changes(10) if isinstance(c, SessionRecord)] == [
        TcpSessionState.INT_SYN
    ]
    tcp_port = port_of(master, 41000)
    send(master, ("wan", reply_to(tcp_port, proto="tcp", sport=80)), 3.1)
    (established,) = master.take_changes(10)
    assert isinstance(established, SessionRecord)
    assert established.state is TcpSessionState.ESTABLISHED
    for _ in range(3):
        external_port(master, outbound_tcp(H1, 41000, 80, "A"), 3.2)
    assert master.take_changes(10) == []
    external_port(master, outbound_tcp(H1, 41000, 80, "FA"), 3.3)
    (closing,) = master.take_changes(10)
    assert isinstance(closing, SessionRecord) and closing.state is TcpSessionState.INT_FIN
    # An expired session is a deletion of its key.
    timers(master, 3.0 + UDP_TIMEOUT + 2)
    (gone,) = master.take_changes(10)
    assert gone == Deletion(RecordKind.SESSION, (17, H1_B, 5000, REMOTE_B, 53))


def port_of(router: Router, internal_port: int) -> int:
    return next(s.external_port for s in router.nat_sessions() if s.internal_port == internal_port)


def test_changes_coalesce_and_respect_the_limit() -> None:
    master = make_router()
    master.track_changes(True)
    for sport in range(2000, 2050):
        external_port(master, outbound_udp(H1, sport, 53), 1.0)
    first = master.take_changes(20)
    assert len(first) == 20
    rest = master.take_changes(1000)
    assert len(first) + len(rest) == 50
    # Opened and ended between two takes: only the deletion of its key is left.
    external_port(master, outbound_udp(H1, 3000, 53), 2.0)
    timers(master, 2.0 + UDP_TIMEOUT + 2)
    changes = master.take_changes(1000)
    assert all(isinstance(c, Deletion) for c in changes)
    assert len(changes) == 51
    master.track_changes(False)
    external_port(master, outbound_udp(H1, 4000, 53), 1000.0)
    assert not master.changes_pending() and master.take_changes(10) == []


def replay(master: Router, backup: Router, now: float) -> None:
    backup.apply_changes(master.take_changes(10_000), now)
    assert backup.export_state() == master.export_state()


def test_incremental_changes_keep_the_backup_equal_deletes_included() -> None:
    master, backup = make_router(), make_router(seed=99)
    master.track_changes(True)
    backup.import_state(master.export_state(), 0.5)
    for sport in range(5000, 5005):
        external_port(master, outbound_udp(H1, sport, 53), 1.0)
    external_port(master, outbound_tcp(H2, 41000, 80, "S"), 1.0)
    replay(master, backup, 1.0)
    send(master, ("wan", reply_to(port_of(master, 41000), proto="tcp", sport=80)), 1.1)
    replay(master, backup, 1.1)
    master.add_port_forward("udp", 6000, H2, 6001)
    send(master, ("wan", reply_to(6000, sport=7777)), 1.2)  # a session on the forward
    replay(master, backup, 1.2)
    master.remove_port_forward("udp", 6000)  # the rule and its session go
    replay(master, backup, 1.3)
    entry = master.add_host("02:aa:00:00:00:09", "10.0.1.9", "")
    replay(master, backup, 1.4)
    assert entry.forward_port is not None
    master.remove_host("10.0.1.9")
    replay(master, backup, 1.5)
    timers(master, 1.0 + UDP_TIMEOUT + 2)  # the UDP sessions expire; the TCP one lives
    replay(master, backup, 400.0)
    assert [s.proto for s in backup.nat_sessions()] == [IpProto.TCP]
    # RST: the TCP session moves to TRANSITORY, then expires.
    external_port(master, outbound_tcp(H2, 41000, 80, "R"), 401.0)
    replay(master, backup, 401.0)
    (tcp,) = backup.export_state().sessions
    assert tcp.state is TcpSessionState.TRANSITORY
    timers(master, 401.0 + 241)
    replay(master, backup, 642.0)
    assert backup.nat_sessions() == []


def test_apply_refuses_what_does_not_fit_and_counts_why() -> None:
    backup = make_router()
    no_nat = make_router(nat=None)
    outside = bytes([192, 168, 9, 9])
    refused = backup.apply_changes(
        [
            HostRecord(outside, b"\x02" * 6, "lan9", "", HostState.ACTIVE, None),
            ForwardRecord(17, 6000, outside, 6001, False),
            SessionRecord(17, outside, 1, bytes([1, 1, 1, 1]), 2, 3, None),
            SessionRecord(17, bytes([10, 0, 0, 5]), 1, bytes([1, 1, 1, 1]), 2, 3, None),
            SessionRecord(6, bytes([10, 0, 0, 5]), 1, bytes([1, 1, 1, 1]), 2, 4, None),
        ],
        1.0,
    )
    assert refused == {
        ApplyRefusal.HOST_NO_INTERFACE: 1,
        ApplyRefusal.FORWARD_INVALID: 1,
        SessionRefusal.NOT_INTERNAL: 1,
        SessionRefusal.STATE: 1,
    }
    assert len(backup.nat_sessions()) == 1
    assert no_nat.apply_changes([ForwardRecord(17, 6000, bytes([10, 0, 0, 5]), 1, False)], 1.0) == {
        ApplyRefusal.NO_NAT: 1
    }
    # A session may not take a port an admin rule of this router holds for another host.
    backup.add_port_forward("udp", 7000, H2, 7001)
    clash = SessionRecord(17, bytes([10, 0, 0, 5]), 9, bytes([1, 1, 1, 1]), 2, 7000, None)
    assert backup.apply_changes([clash], 2.0) == {SessionRefusal.PORT_CONFLICT: 1}


def test_announced_host_keeps_its_permanent_neighbour_on_the_backup() -> None:
    master, backup = make_router(), make_router(seed=99)
    master.remove_host(H1)
    master.add_host(H1_MAC, H1, "net-a")
    backup.import_state(master.export_state(), 1.0)
    (host,) = [h for h in backup.hosts() if h.ip == H1]
    assert host.state is HostState.STATIC and host.forward_port is not None
    entry = next(e for e in backup.arp_table() if e.ip == H1)
    assert entry.mac == H1_MAC and entry.state.value == "permanent"
    # The host's automatic forwarding port leads to its service on the backup too.
    syn = reply_to(host.forward_port, proto="tcp", sport=40000, flags="S")
    out = send(backup, ("wan", syn), 2.0)
    packet = Ether(out[0][1][10:])
    assert (packet[IP].dst, packet[TCP].dport) == (H1, 22)
    # Deleting it on the backup removes its rule and its permanent neighbour entry.
    backup.apply_changes([Deletion(RecordKind.HOST, bytes([10, 0, 0, 5]))], 3.0)
    assert not any(h.ip == H1 for h in backup.hosts())
    assert not any(f.inside_ip == H1 for f in backup.port_forwards())


def test_hairpin_sessions_replicate() -> None:
    master, backup = make_router(), make_router(seed=99)
    master.add_port_forward("udp", 6000, H2, 6001)
    hairpin = from_h1(IP(src=H1, dst=WAN_IP, flags="DF") / UDP(sport=5555, dport=6000) / b"x")
    expected = send(master, ("lan0", hairpin), 1.0)
    assert expected and expected[0][0] == "lan1"
    backup.import_state(master.export_state(), 1.5)
    assert backup.export_state() == master.export_state()
    assert send(backup, ("lan0", hairpin), 2.0) == send(master, ("lan0", hairpin), 2.0)


def learn(router: Router, ip: str, mac: str, now: float) -> None:
    """A station on lan0 asks for the router's address: the router learns it."""
    request = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=mac, psrc=ip, pdst=LAN0_IP)
    receive(router, "lan0", VNET + bytes(request), now)


def forwards_of(router: Router, ip: str) -> list[int]:
    return sorted(f.external_port for f in router.port_forwards() if f.inside_ip == ip)


def test_a_host_the_backup_learned_itself_keeps_only_the_masters_forwarding_port() -> None:
    # The backup sees the same broadcasts as the master and learns hosts itself, giving
    # each an automatic forwarding port of its own choosing; the master's record of the
    # host must leave it only the master's.
    master, backup = make_router(), make_router(seed=99)
    master.track_changes(True)
    backup.import_state(master.export_state(), 0.5)
    learn(master, "10.0.0.7", "02:aa:00:00:00:07", 1.0)  # moves the master's cursor on
    master.remove_host("10.0.0.7")
    replay(master, backup, 1.0)
    learn(master, "10.0.0.8", "02:aa:00:00:00:08", 2.0)
    learn(backup, "10.0.0.8", "02:aa:00:00:00:08", 2.0)
    assert forwards_of(backup, "10.0.0.8") != forwards_of(master, "10.0.0.8")
    replay(master, backup, 2.0)
    assert forwards_of(backup, "10.0.0.8") == forwards_of(master, "10.0.0.8")


def test_a_masters_rule_the_backup_cannot_hold_still_takes_the_port_from_its_own() -> None:
    # The master gave an automatic port to a station that is the backup itself (its own
    # address): the backup refuses the rule, and keeps no rule of its own on that port.
    backup = make_router()
    learn(backup, "10.0.0.8", "02:aa:00:00:00:08", 1.0)
    (port,) = forwards_of(backup, "10.0.0.8")
    own = ForwardRecord(6, port, bytes([10, 0, 0, 1]), 22, True)  # lan0's own address
    assert backup.apply_changes([own], 2.0) == {ApplyRefusal.FORWARD_INVALID: 1}
    assert all(f.external_port != port for f in backup.port_forwards())
    syn = reply_to(port, proto="tcp", sport=40000, flags="S")
    assert all(name != "lan0" for name, _ in send(backup, ("wan", syn), 3.0))
