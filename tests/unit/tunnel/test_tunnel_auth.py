"""The tunnel's handshake without sockets: both ends prove they hold the key."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pktchain.tunnel.auth import (
    HELLO,
    MAGIC,
    MAX_ADDRESSES,
    PROOF_SIZE,
    Handshake,
    HandshakeResult,
    Role,
    State,
    proof,
)
from pktchain.tunnel.wire import CloseReason, encode_frame

KEY = b"0123456789abcdef-tunnel-test-key"
OTHER_KEY = b"fedcba9876543210-another-key!!!!"
CLIENT_NONCE = bytes(range(32))
SERVER_NONCE = bytes(range(100, 132))
CLIENT_IP = bytes([192, 168, 77, 2])
SERVER_IP = bytes([192, 168, 77, 1])


def pair(client_key: bytes = KEY, server_key: bytes = KEY) -> tuple[Handshake, Handshake]:
    client = Handshake(Role.CLIENT, client_key, [CLIENT_IP], nonce=CLIENT_NONCE)
    server = Handshake(Role.SERVER, server_key, [SERVER_IP], nonce=SERVER_NONCE)
    return client, server


def run(client: Handshake, server: Handshake) -> tuple[HandshakeResult, HandshakeResult]:
    """Exchange messages until one side is done or failed; the last result of each."""
    to_server = client.start()
    assert server.start() == b""
    last_client = last_server = HandshakeResult()
    while to_server:
        last_server = server.receive(to_server)
        if not last_server.send:
            break
        last_client = client.receive(last_server.send)
        to_server = last_client.send
    return last_client, last_server


def test_the_hello_layout_is_pinned() -> None:
    client, _ = pair()
    hello = client.start()
    assert hello == (
        b"PKTT"  # magic
        + b"\x01"  # version
        + b"\x01"  # role: client
        + CLIENT_NONCE
        + b"\x01"  # one address follows
        + bytes(10) + b"\xff\xff" + CLIENT_IP  # IPv4-mapped (RFC 4291 §2.5.5.2)
    )  # fmt: skip
    assert HELLO.size == 39


def test_same_key_both_sides_done_and_addresses_exchanged() -> None:
    client, server = pair()
    hello_c = client.start()
    r = server.receive(hello_c)
    hello_s = r.send
    assert hello_s[:4] == MAGIC and not r.done
    r = client.receive(hello_s)
    assert len(r.send) == PROOF_SIZE and not r.done
    # The client's proof: HMAC-SHA256 over its label and both hellos, exactly.
    expected = hmac.new(
        KEY, b"pktchain tunnel v1 client proof" + hello_c + hello_s, hashlib.sha256
    ).digest()
    assert r.send == expected
    r = server.receive(r.send)
    assert r.done and len(r.send) == PROOF_SIZE
    assert r.send == proof(KEY, Role.SERVER, hello_c, hello_s)
    r = client.receive(r.send)
    assert r.done and r.fault is None
    assert client.state is server.state is State.DONE
    assert client.peer_addresses == (SERVER_IP,)
    assert server.peer_addresses == (CLIENT_IP,)


def test_frames_sent_right_behind_the_handshake_are_handed_back() -> None:
    client, server = pair()
    hello_s = server.receive(client.start()).send
    proof_c = client.receive(hello_s).send
    frame = encode_frame(b"\x45" + bytes(19))
    r = server.receive(proof_c + frame)
    assert r.done and r.rest == frame
    r = client.receive(r.send + frame + frame)
    assert r.done and r.rest == frame + frame


def test_byte_at_a_time_delivery_completes() -> None:
    client, server = pair()
    results = [server.receive(bytes([b])) for b in client.start()]
    hello_s = b"".join(r.send for r in results)
    results = [client.receive(bytes([b])) for b in hello_s]
    proof_c = b"".join(r.send for r in results)
    results = [server.receive(bytes([b])) for b in proof_c]
    assert results[-1].done
    assert client.receive(results[-1].send).done


def test_a_client_with_another_key_is_refused_by_the_server() -> None:
    client, server = pair(client_key=OTHER_KEY)
    _, last_server = run(client, server)
    assert last_server.fault is not None
    assert last_server.fault.reason is CloseReason.WRONG_KEY
    assert last_server.send == b""  # no proof for a stranger
    assert server.state is State.FAILED


def test_a_server_with_another_key_is_refused_by_the_client() -> None:
    # Only an impostor server gets this far: it answers the client's proof
    # with one made under its own key.
    client, impostor = pair(server_key=OTHER_KEY)
    hello_c = client.start()
    hello_s = impostor.receive(hello_c).send
    client.receive(hello_s)
    r = client.receive(proof(OTHER_KEY, Role.SERVER, hello_c, hello_s))
    assert r.fault is not None and r.fault.reason is CloseReason.WRONG_KEY
    assert "server's proof" in r.fault.detail
    assert client.state is State.FAILED


def test_the_clients_own_proof_reflected_back_is_refused() -> None:
    client, server = pair()
    hello_s = server.receive(client.start()).send
    proof_c = client.receive(hello_s).send
    r = client.receive(proof_c)
    assert r.fault is not None and r.fault.reason is CloseReason.WRONG_KEY


def test_a_proof_from_an_earlier_connection_is_refused() -> None:
    client, server = pair()
    hello_s = server.receive(client.start()).send
    recorded = client.receive(hello_s).send
    # A replay against a fresh server: its nonce differs, so the proof does not verify.
    replayed_client = Handshake(Role.CLIENT, KEY, [CLIENT_IP], nonce=CLIENT_NONCE)
    fresh = Handshake(Role.SERVER, KEY, [SERVER_IP])
    fresh.receive(replayed_client.start())
    r = fresh.receive(recorded)
    assert r.fault is not None and r.fault.reason is CloseReason.WRONG_KEY


def test_original_framing_sent_to_a_handshake_is_not_a_hello() -> None:
    _, server = pair()
    r = server.receive(encode_frame(b"\x45" + bytes(83)))
    assert r.fault is not None and r.fault.reason is CloseReason.NOT_A_HANDSHAKE
    assert "--no-auth" in r.fault.detail


def test_two_clients_are_refused() -> None:
    client, _ = pair()
    other = Handshake(Role.CLIENT, KEY)
    r = other.receive(client.start())
    assert r.fault is not None and r.fault.reason is CloseReason.BAD_ROLE
    assert "client" in r.fault.detail


def test_another_version_is_refused() -> None:
    client, server = pair()
    hello = bytearray(client.start())
    hello[4] = 2
    r = server.receive(bytes(hello))
    assert r.fault is not None and r.fault.reason is CloseReason.BAD_VERSION


def test_too_many_addresses_are_refused() -> None:
    client, server = pair()
    hello = bytearray(client.start())
    hello[HELLO.offset("count")] = MAX_ADDRESSES + 1
    r = server.receive(bytes(hello))
    assert r.fault is not None and r.fault.reason is CloseReason.BAD_HELLO


def test_ipv6_addresses_travel_as_they_are() -> None:
    v6 = bytes.fromhex("fd000000000000000000000000000002")
    client = Handshake(Role.CLIENT, KEY, [v6, CLIENT_IP])
    server = Handshake(Role.SERVER, KEY)
    server.receive(client.start())
    assert server.peer_addresses == (v6, CLIENT_IP)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Handshake(Role.CLIENT, b"short")


def test_a_finished_handshake_takes_no_more_bytes() -> None:
    client, server = pair(client_key=OTHER_KEY)
    run(client, server)
    with pytest.raises(RuntimeError, match="over"):
        server.receive(b"more")
