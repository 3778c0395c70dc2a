"""The messenger's protocol without sockets: frames, the canonical encoding,
MACs, the replay guard, argument checking and one connection's replies."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

import pytest

from pktchain.messenger.client import make_request
from pktchain.messenger.connection import ServerConnection
from pktchain.messenger.ops import (
    ARGUMENTS,
    Command,
    HostNicRemove,
    Op,
    PortForwardAdd,
    RouterNicAdd,
    TransportProto,
    parse_command,
    to_json,
)
from pktchain.messenger.wire import (
    HEADER,
    ErrorType,
    FrameDecoder,
    FrameTooLargeError,
    MalformedMessageError,
    MessengerConfigError,
    MessengerError,
    ReplayGuard,
    canonical,
    check_secret,
    decode_json,
    encode_frame,
    sign,
    verify,
)

SECRET = b"0123456789abcdef0123456789abcdef"
NOW = 1_700_000_000.0


# -- frames -------------------------------------------------------------------


def test_frame_is_big_endian_length_then_body() -> None:
    assert encode_frame(b'{"a":1}') == b"\x00\x00\x00\x07" + b'{"a":1}'


def test_decoder_reassembles_frames_split_anywhere() -> None:
    stream = encode_frame(b"first") + encode_frame(b"") + encode_frame(b"third")
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(64)
        assert decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) == [
            b"first",
            b"",
            b"third",
        ]
        assert decoder.buffered == 0


def test_decoder_refuses_oversized_header_before_the_body() -> None:
    decoder = FrameDecoder(16)
    with pytest.raises(FrameTooLargeError) as info:
        decoder.feed(HEADER.pack(17))
    assert (info.value.length, info.value.maximum) == (17, 16)


# -- JSON, canonical form, MAC ----------------------------------------------------


def test_canonical_is_sorted_compact_ascii_without_mac() -> None:
    message = {"time": 1.5, "args": {"z": 1, "a": "é"}, "id": "1", "mac": "ff"}
    assert canonical(message) == b'{"args":{"a":"\\u00e9","z":1},"id":"1","time":1.5}'


def test_sign_is_hmac_sha256_of_canonical_form() -> None:
    message = {"id": "1", "op": "ping", "args": {}, "nonce": "n" * 8, "time": NOW}
    expected = hmac.new(SECRET, canonical(message), hashlib.sha256).hexdigest()
    assert sign(SECRET, message) == expected
    assert verify(SECRET, {**message, "mac": expected})
    assert not verify(SECRET, {**message, "mac": expected.upper()})
    assert not verify(SECRET, {**message, "time": NOW + 1, "mac": expected})
    assert not verify(b"another secret, sixteen+", {**message, "mac": expected})
    assert not verify(SECRET, message)
    assert not verify(SECRET, {**message, "mac": "é"})


@pytest.mark.parametrize(
    "body",
    [b"\xff", b"{", b"[1]", b'{"a":1,"a":2}', b'{"t":NaN}', b'{"t":Infinity}', b"[" * 100_000],
)
def test_decode_json_refuses(body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decode_json(body)


def test_secret_rules() -> None:
    assert check_secret(SECRET, insecure=False) == SECRET
    assert check_secret(None, insecure=True) is None
    for secret, insecure in ((None, False), (b"", False), (b"short", False), (SECRET, True)):
        with pytest.raises(MessengerConfigError, match=r"^secret: "):
            check_secret(secret, insecure)


# -- replay guard -------------------------------------------------------------------


def test_replay_guard_refuses_reused_nonce_and_stale_time() -> None:
    guard = ReplayGuard(window=30.0)
    guard.check("nonce-01", NOW, NOW)
    with pytest.raises(MessengerError) as info:
        guard.check("nonce-01", NOW, NOW + 1)
    assert (info.value.type, info.value.field) == (ErrorType.REPLAYED, "nonce")
    for sent in (NOW - 31, NOW + 31):
        with pytest.raises(MessengerError) as info:
            guard.check("nonce-02", sent, NOW)
        assert (info.value.type, info.value.field) == (ErrorType.REPLAYED, "time")


def test_replay_guard_forgets_nonces_once_they_would_be_stale() -> None:
    guard = ReplayGuard(window=30.0, capacity=2)
    guard.check("nonce-01", NOW, NOW)
    guard.check("nonce-02", NOW + 10, NOW + 10)
    with pytest.raises(MessengerError) as info:
        guard.check("nonce-03", NOW + 10, NOW + 10)
    assert info.value.type is ErrorType.BUSY
    guard.check("nonce-03", NOW + 31, NOW + 31)  # nonce-01 expired at NOW + 30
    assert len(guard) == 2


# -- arguments -------------------------------------------------------------------------

NIC = {"name": "eth1", "mac": "02:00:00:00:01:01", "ip": "10.0.1.1", "subnet": "10.0.1.0/24"}
EXTERNAL = {
    "name": "eth0",
    "mac": "02:00:00:00:00:01",
    "ip": "192.0.2.10",
    "subnet": "192.0.2.0/24",
    "gateway": "192.0.2.1",
    "external": True,
    "network_id": "public",
    "mtu": 9000,
}


def test_router_nic_add_builds_the_interface_address() -> None:
    command = parse_command(Op.ROUTER_NIC_ADD, {**NIC, "mac": "02-00-00-00-01-AB"})
    assert command == RouterNicAdd(
        name="eth1",
        mac="02:00:00:00:01:ab",
        address=IPv4Interface("10.0.1.1/24"),
        gateway=None,
        network_id="",
        external=False,
        mtu=1500,
    )
    external = parse_command(Op.ROUTER_NIC_ADD, EXTERNAL)
    assert isinstance(external, RouterNicAdd)
    assert external.gateway == IPv4Address("192.0.2.1") and external.mtu == 9000


BAD_ARGUMENTS: list[tuple[Op, dict[str, Any], str]] = [
    (Op.ROUTER_NIC_ADD, {**NIC, "name": ""}, "args.name"),
    (Op.ROUTER_NIC_ADD, {**NIC, "name": "a" * 16}, "args.name"),
    (Op.ROUTER_NIC_ADD, {**NIC, "name": "eth/1"}, "args.name"),
    (Op.ROUTER_NIC_ADD, {**NIC, "name": 7}, "args.name"),
    (Op.ROUTER_NIC_ADD, {k: v for k, v in NIC.items() if k != "mac"}, "args.mac"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mac": "02:00:00:00:01"}, "args.mac"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mac": "02:00:00:00:01:zz"}, "args.mac"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mac": "01:00:5e:00:00:01"}, "args.mac"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mac": "00:00:00:00:00:00"}, "args.mac"),
    (Op.ROUTER_NIC_ADD, {**NIC, "ip": "10.0.1.256"}, "args.ip"),
    (Op.ROUTER_NIC_ADD, {**NIC, "ip": "10.0.2.1"}, "args.ip"),
    (Op.ROUTER_NIC_ADD, {**NIC, "ip": "10.0.1.0"}, "args.ip"),
    (Op.ROUTER_NIC_ADD, {**NIC, "ip": "10.0.1.255"}, "args.ip"),
    (Op.ROUTER_NIC_ADD, {**NIC, "subnet": "10.0.1.0"}, "args.subnet"),
    (Op.ROUTER_NIC_ADD, {**NIC, "subnet": "10.0.1.1/24"}, "args.subnet"),
    (Op.ROUTER_NIC_ADD, {**NIC, "subnet": "10.0.1.0/33"}, "args.subnet"),
    (Op.ROUTER_NIC_ADD, {**NIC, "subnet": "10.0.1.0/31"}, "args.subnet"),
    (Op.ROUTER_NIC_ADD, {**NIC, "gateway": "10.0.1.254"}, "args.gateway"),
    (Op.ROUTER_NIC_ADD, {**EXTERNAL, "gateway": "198.51.100.1"}, "args.gateway"),
    (Op.ROUTER_NIC_ADD, {**EXTERNAL, "gateway": "192.0.2.10"}, "args.gateway"),
    (Op.ROUTER_NIC_ADD, {**NIC, "external": "yes"}, "args.external"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mtu": 67}, "args.mtu"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mtu": True}, "args.mtu"),
    (Op.ROUTER_NIC_ADD, {**NIC, "mtu": "1500"}, "args.mtu"),
    (Op.ROUTER_NIC_ADD, {**NIC, "network_id": "n" * 65}, "args.network_id"),
    (Op.ROUTER_NIC_ADD, {**NIC, "prefix": 24}, "args.prefix"),
    (Op.ROUTER_NIC_REMOVE, {}, "args.name"),
    (Op.HOST_NIC_ADD, {"mac": "02:00:00:00:01:02"}, "args.ip"),
    (Op.HOST_NIC_ADD, {"mac": "02:00:00:00:01:02", "ip": 167837954}, "args.ip"),
    (Op.HOST_NIC_REMOVE, {}, "args.mac"),
    (Op.HOST_NIC_REMOVE, {"mac": "02:00:00:00:01:02", "ip": "10.0.1.2"}, "args.ip"),
    (Op.HOSTS, {"all": True}, "args.all"),
    (
        Op.PORT_FORWARD_ADD,
        {"proto": "sctp", "external_port": 80, "inside_ip": "10.0.1.2", "inside_port": 80},
        "args.proto",
    ),
    (
        Op.PORT_FORWARD_ADD,
        {"proto": "tcp", "external_port": 0, "inside_ip": "10.0.1.2", "inside_port": 80},
        "args.external_port",
    ),
    (
        Op.PORT_FORWARD_ADD,
        {"proto": "tcp", "external_port": 80, "inside_ip": "10.0.1.2", "inside_port": 65536},
        "args.inside_port",
    ),
    (
        Op.PORT_FORWARD_ADD,
        {"proto": "tcp", "external_port": 80, "inside_ip": "::1", "inside_port": 80},
        "args.inside_ip",
    ),
    (Op.PORT_FORWARD_REMOVE, {"proto": "udp", "external_port": 8.5}, "args.external_port"),
]


@pytest.mark.parametrize(("op", "args", "field"), BAD_ARGUMENTS)
def test_every_bad_argument_is_named(op: Op, args: dict[str, Any], field: str) -> None:
    with pytest.raises(MessengerError) as info:
        parse_command(op, args)
    assert info.value.type is ErrorType.INVALID_ARGUMENT
    assert info.value.field == field
    assert info.value.message


def test_every_op_declares_its_arguments() -> None:
    assert set(ARGUMENTS) == set(Op)


def test_good_commands() -> None:
    assert parse_command(Op.HOST_NIC_REMOVE, {"ip": "10.0.1.2"}) == HostNicRemove(
        None, IPv4Address("10.0.1.2")
    )
    assert parse_command(
        Op.PORT_FORWARD_ADD,
        {"proto": "TCP", "external_port": 8080, "inside_ip": "10.0.1.2", "inside_port": 80},
    ) == PortForwardAdd(TransportProto.TCP, 8080, IPv4Address("10.0.1.2"), 80)


# -- results as JSON -------------------------------------------------------------------


class Kind(Enum):
    TRACKED = "tracked"


@dataclass(frozen=True)
class Entry:
    mac: bytes
    ip: IPv4Address
    kind: Kind
    ports: tuple[int, ...]
    extra: dict[str, object]


def test_results_become_json_values() -> None:
    entry = Entry(b"\x02\x00\x00\x00\x01\x02", IPv4Address("10.0.1.2"), Kind.TRACKED, (22,), {})
    assert to_json([entry, None, {3: frozenset({2, 1})}]) == [
        {
            "mac": "02:00:00:00:01:02",
            "ip": "10.0.1.2",
            "kind": "tracked",
            "ports": [22],
            "extra": {},
        },
        None,
        {"3": [1, 2]},
    ]


# -- one connection, without sockets -------------------------------------------------


def _connection(
    execute: Any = None, max_request: int = 4096
) -> tuple[ServerConnection, collections.Counter[str], list[Command]]:
    counters: collections.Counter[str] = collections.Counter()
    done: list[Command] = []

    def run(op: Op, command: Command) -> Any:
        done.append(command)
        return {"op": op.value}

    connection = ServerConnection(
        SECRET, ReplayGuard(), execute or run, counters=counters, max_request=max_request
    )
    return connection, counters, done


def _frame(message: dict[str, Any]) -> bytes:
    return encode_frame(json.dumps(message).encode())


def _read(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(body) for body in FrameDecoder(1 << 20).feed(data)]


def test_connection_answers_each_request_with_an_authentic_reply() -> None:
    connection, counters, done = _connection()
    request = make_request(SECRET, "ping", {}, request_id="r1", sent=NOW)
    connection.receive_data(_frame(request), NOW)
    (reply,) = _read(connection.data_to_send())
    assert verify(SECRET, reply)
    assert reply["id"] == "r1" and reply["nonce"] == request["nonce"] and reply["ok"] is True
    assert reply["result"] == {"op": "ping"}
    assert len(done) == 1 and counters["replies.ok"] == 1


def test_connection_checks_mac_before_anything_else() -> None:
    connection, counters, done = _connection()
    request = make_request(SECRET, "no_such_op", {"x": 1}, request_id="r1", sent=0.0)
    request["mac"] = "0" * 64
    connection.receive_data(_frame(request), NOW)
    (reply,) = _read(connection.data_to_send())
    assert reply["error"] == {"type": "Unauthenticated", "message": "bad mac", "field": None}
    assert reply["id"] is None and reply["nonce"] is None
    assert counters["unauthenticated"] == 1 and not done and not connection.closing


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": 1}, "id"),
        ({"nonce": "short"}, "nonce"),
        ({"time": "now"}, "time"),
        ({"time": True}, "time"),
        ({"args": []}, "args"),
        ({"op": 3}, "op"),
        ({"extra": 1}, "extra"),
    ],
)
def test_connection_names_bad_envelope_members(change: dict[str, Any], field: str) -> None:
    connection, _, done = _connection()
    request = {"id": "r1", "op": "ping", "args": {}, "nonce": "nonce-001", "time": NOW, **change}
    request["mac"] = sign(SECRET, request)
    connection.receive_data(_frame(request), NOW)
    (reply,) = _read(connection.data_to_send())
    assert reply["error"]["type"] == "MalformedMessage" and reply["error"]["field"] == field
    assert not done


def test_connection_closes_after_an_oversized_frame_but_answers_earlier_ones() -> None:
    connection, _, done = _connection(max_request=256)
    good = _frame(make_request(SECRET, "ping", {}, request_id="r1", sent=NOW))
    connection.receive_data(good + HEADER.pack(257) + b"x" * 257 + good, NOW)
    first, second = _read(connection.data_to_send())
    assert first["ok"] is True
    assert second["error"]["type"] == "MessageTooLarge"
    assert connection.closing and len(done) == 1
    connection.receive_data(good, NOW)
    assert connection.data_to_send() == b""


def test_connection_reports_unsendable_results_as_internal_errors() -> None:
    connection, counters, _ = _connection(execute=lambda op, command: float("nan"))
    connection.receive_data(
        _frame(make_request(SECRET, "ping", {}, request_id="r1", sent=NOW)), NOW
    )
    (reply,) = _read(connection.data_to_send())
    assert reply["error"]["type"] == "InternalError" and verify(SECRET, reply)
    assert counters["replies.error.InternalError"] == 1
