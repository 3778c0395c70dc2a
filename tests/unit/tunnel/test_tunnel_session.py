"""One tunnel connection's protocol without sockets: handshake, frames, faults, timeout."""

from __future__ import annotations

from pktchain.tunnel.auth import Role
from pktchain.tunnel.session import HANDSHAKE_TIMEOUT, Received, Session
from pktchain.tunnel.wire import CloseReason, encode_frame

KEY = b"0123456789abcdef-tunnel-test-key"
PACKET = b"\x45" + bytes(27)


def pump(a: Session, b: Session, data: bytes) -> tuple[list[Received], list[Received]]:
    """Deliver `data` to `b`, its replies to `a`, and so on until nothing is left."""
    got_a: list[Received] = []
    got_b: list[Received] = []
    receiver, sender = b, a
    while data:
        result = receiver.receive(data)
        (got_b if receiver is b else got_a).append(result)
        data = result.send
        receiver, sender = sender, receiver
    return got_a, got_b


def test_without_a_key_the_session_is_open_at_once_and_speaks_only_frames() -> None:
    session = Session(Role.CLIENT, key=None, mtu=1500, now=0.0)
    assert session.open and session.start() == b"" and session.deadline() is None
    received = session.receive(encode_frame(PACKET) * 2)
    assert received.packets == [PACKET, PACKET] and received.fault is None


def test_with_a_key_frames_flow_after_the_handshake() -> None:
    client = Session(Role.CLIENT, key=KEY, mtu=1500, now=0.0, addresses=[b"\x0a\x00\x00\x02"])
    server = Session(Role.SERVER, key=KEY, mtu=1500, now=0.0)
    assert not client.open and client.deadline() == HANDSHAKE_TIMEOUT
    got_client, got_server = pump(client, server, client.start())
    assert any(r.opened for r in got_server) and any(r.opened for r in got_client)
    assert client.open and server.open and server.deadline() is None
    assert server.peer_addresses == (b"\x0a\x00\x00\x02",)
    assert server.receive(encode_frame(PACKET)).packets == [PACKET]


def test_frames_that_arrive_with_the_last_proof_are_delivered() -> None:
    client = Session(Role.CLIENT, key=KEY, mtu=1500, now=0.0)
    server = Session(Role.SERVER, key=KEY, mtu=1500, now=0.0)
    proof_c = client.receive(server.receive(client.start()).send).send
    proof_s = server.receive(proof_c)
    assert proof_s.opened
    received = client.receive(proof_s.send + encode_frame(PACKET))
    assert received.opened and received.packets == [PACKET]


def test_a_zero_length_frame_closes_after_the_packets_before_it() -> None:
    session = Session(Role.SERVER, key=None, mtu=1500, now=0.0)
    received = session.receive(encode_frame(PACKET) + b"\x00\x00")
    assert received.packets == [PACKET]
    assert received.fault is not None and received.fault.reason is CloseReason.ZERO_LENGTH_FRAME


def test_a_hello_sent_to_an_end_without_a_key_is_explained() -> None:
    client = Session(Role.CLIENT, key=KEY, mtu=1500, now=0.0)
    server = Session(Role.SERVER, key=None, mtu=1500, now=0.0)
    hello = client.start()
    received = server.receive(hello[:1])
    assert received.fault is None
    received = server.receive(hello[1:])
    assert received.fault is not None and received.fault.reason is CloseReason.FRAME_TOO_LONG
    assert "the peer has a key, this end runs --no-auth" in received.fault.detail


def test_the_handshake_times_out() -> None:
    server = Session(Role.SERVER, key=KEY, mtu=1500, now=100.0, timeout=2.0)
    assert server.deadline() == 102.0
    assert server.on_timer(101.9) is None
    fault = server.on_timer(102.0)
    assert fault is not None and fault.reason is CloseReason.HANDSHAKE_TIMEOUT


def test_end_of_stream_says_where_the_peer_stopped() -> None:
    authenticating = Session(Role.SERVER, key=KEY, mtu=1500, now=0.0)
    assert authenticating.end_of_stream().reason is CloseReason.PEER_CLOSED_IN_HANDSHAKE
    session = Session(Role.SERVER, key=None, mtu=1500, now=0.0)
    assert session.end_of_stream().reason is CloseReason.PEER_CLOSED
    session.receive(encode_frame(PACKET)[:5])
    fault = session.end_of_stream()
    assert fault.reason is CloseReason.PEER_CLOSED_MID_FRAME and "5 bytes" in fault.detail
