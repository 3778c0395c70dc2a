"""The L7 parsers: HTTP/1.x Host and TLS SNI from real client bytes, prefixes and garbage.

ClientHellos come from OpenSSL itself (Python's ``ssl`` over memory BIOs) and
from scapy's TLS layer: two independent producers of the bytes a client sends.
"""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.tls.extensions import ServerName, TLS_Ext_ServerName, TLS_Ext_SupportedGroups
from scapy.layers.tls.handshake import TLSClientHello
from scapy.layers.tls.record import TLS

from pktchain.functions.l7 import (
    Outcome,
    http_host,
    parse_first_payload,
    parse_http_host,
    parse_tls_sni,
    tls_sni,
)


def openssl_client_hello(server_name: str | None) -> bytes:
    """The first flight of an OpenSSL client, as it would go on the wire."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def scapy_client_hello(*extensions: object) -> bytes:
    return bytes(TLS(msg=[TLSClientHello(ext=list(extensions))]))


def records(handshake: bytes, *cuts: int) -> bytes:
    """The handshake message cut into several TLS handshake records (RFC 8446 §5.1)."""
    pieces = [handshake[a:b] for a, b in zip((0, *cuts), (*cuts, len(handshake)), strict=True)]
    return b"".join(b"\x16\x03\x01" + len(p).to_bytes(2, "big") + p for p in pieces)


HELLO = openssl_client_hello("Www.Example.TEST")
REQUEST = (
    b"GET /index.html HTTP/1.1\r\nUser-Agent: curl/8\r\nHost: Example.test\r\nAccept: */*\r\n\r\n"
)


# -- TLS --------------------------------------------------------------------------------
def test_sni_of_an_openssl_client_hello_in_lower_case() -> None:
    assert tls_sni(HELLO) == "www.example.test"


def test_sni_of_a_scapy_client_hello() -> None:
    hello = scapy_client_hello(TLS_Ext_ServerName(servernames=[ServerName(servername=b"a.b.c")]))
    assert parse_tls_sni(hello) == (Outcome.FOUND, "a.b.c")


def test_a_client_hello_without_server_name_has_no_sni() -> None:
    assert parse_tls_sni(openssl_client_hello(None)) == (Outcome.ABSENT, None)
    assert parse_tls_sni(scapy_client_hello(TLS_Ext_SupportedGroups(groups=[29]))) == (
        Outcome.ABSENT,
        None,
    )


def test_a_client_hello_without_extensions_has_no_sni() -> None:
    # RFC 8446 §4.1.2 fields up to the compression methods, and nothing after.
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    assert parse_tls_sni(records(handshake)) == (Outcome.ABSENT, None)


def test_every_prefix_of_a_client_hello_is_incomplete() -> None:
    outcomes = {parse_tls_sni(HELLO[:n])[0] for n in range(len(HELLO))}
    assert outcomes == {Outcome.INCOMPLETE}


def test_a_client_hello_over_several_records() -> None:
    handshake = HELLO[5:]
    assert tls_sni(records(handshake, 3)) == "www.example.test"  # cut inside the header
    assert tls_sni(records(handshake, 100, 200)) == "www.example.test"
    partial = records(handshake, 100)
    assert parse_tls_sni(partial[: 5 + 100 + 5 + 10])[0] is Outcome.INCOMPLETE


def test_other_records_and_messages_are_not_a_client_hello() -> None:
    application_data = b"\x17\x03\x03\x00\x05hello"
    server_hello = b"\x16\x03\x03\x00\x04\x02\x00\x00\x00"
    assert parse_tls_sni(application_data)[0] is Outcome.ABSENT
    assert parse_tls_sni(server_hello)[0] is Outcome.ABSENT
    assert parse_tls_sni(b"\x16\x02")[0] is Outcome.ABSENT  # not TLS 1.x / SSL 3
    assert parse_tls_sni(b"\x16\x03")[0] is Outcome.INCOMPLETE


def test_oversized_or_empty_records_are_refused() -> None:
    assert parse_tls_sni(b"\x16\x03\x01\x40\x01" + b"\x01")[0] is Outcome.ABSENT  # 2^14 + 1
    assert parse_tls_sni(b"\x16\x03\x01\x00\x00")[0] is Outcome.ABSENT


@pytest.mark.parametrize(
    "name", [b"10.0.0.1.", b"bad name", b"caf\xc3\xa9.test", b"trailing.dot.", b""]
)
def test_unusable_server_names_are_absent(name: bytes) -> None:
    hello = scapy_client_hello(TLS_Ext_ServerName(servernames=[ServerName(servername=name)]))
    assert parse_tls_sni(hello) == (Outcome.ABSENT, None)


def test_a_length_pointing_past_the_hello_is_absent_not_an_error() -> None:
    hello = bytearray(HELLO)
    at = 5 + 4 + 2 + 32  # record, handshake header, legacy_version, random
    hello[at] = 200  # a session id longer than the 32 bytes allowed and than what follows
    assert parse_tls_sni(bytes(hello))[0] is Outcome.ABSENT


# -- HTTP -------------------------------------------------------------------------------
def test_host_of_a_request_in_lower_case() -> None:
    assert http_host(REQUEST) == "example.test"


@pytest.mark.parametrize(
    ("value", "host"),
    [
        (b"example.test:8080", "example.test"),
        (b"[2001:db8::1]:8080", "[2001:db8::1]"),
        (b"[2001:db8::1]", "[2001:db8::1]"),
        (b"  spaced.test \t", "spaced.test"),
        (b"10.0.0.1", "10.0.0.1"),
    ],
)
def test_host_without_its_port(value: bytes, host: str) -> None:
    assert http_host(b"GET / HTTP/1.1\r\nHost:" + value + b"\r\n\r\n") == host


@pytest.mark.parametrize(
    "value", [b"", b"a b", b"example.test:80x", b"[2001:db8::1", b"[::1]x", b"x/y"]
)
def test_unusable_host_values_are_absent(value: bytes) -> None:
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: " + value + b"\r\n\r\n")[0] is Outcome.ABSENT


def test_line_ends_leading_empty_lines_and_absolute_form() -> None:
    assert http_host(b"\r\nGET / HTTP/1.0\nhost: bare.test\n\n") == "bare.test"
    assert http_host(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n") == "a.test"


def test_a_request_without_host_is_absent_once_its_header_ends() -> None:
    assert parse_http_host(b"GET / HTTP/1.0\r\nAccept: */*\r\n")[0] is Outcome.INCOMPLETE
    assert parse_http_host(b"GET / HTTP/1.0\r\nAccept: */*\r\n\r\n")[0] is Outcome.ABSENT


def test_a_space_before_the_colon_is_not_a_host_field() -> None:
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost : evil.test\r\n\r\n")[0] is Outcome.ABSENT


def test_every_prefix_of_a_request_before_its_host_is_incomplete() -> None:
    end = REQUEST.index(b"\r\nAccept")
    outcomes = {parse_http_host(REQUEST[:n])[0] for n in range(end + 2)}
    assert outcomes == {Outcome.INCOMPLETE}
    assert parse_http_host(REQUEST[: end + 2]) == (Outcome.FOUND, "example.test")


@pytest.mark.parametrize(
    "data",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/2\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"A" * 40 + b" / HTTP/1.1\r\n",
        b"\x00\x01\x02",
        b"220 mail.example.test ESMTP\r\n",
    ],
)
def test_what_is_not_an_http1_request_is_absent(data: bytes) -> None:
    assert parse_http_host(data)[0] is Outcome.ABSENT


def test_first_payload_picks_the_parser_by_its_first_byte() -> None:
    assert parse_first_payload(HELLO) == (Outcome.FOUND, {"tls_sni": "www.example.test"})
    assert parse_first_payload(REQUEST) == (Outcome.FOUND, {"http_host": "example.test"})
    assert parse_first_payload(b"") == (Outcome.INCOMPLETE, {})
    assert parse_first_payload(b"\x00") == (Outcome.ABSENT, {})


# -- never raising ------------------------------------------------------------------------
@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for result in (http_host(data), tls_sni(data)):
        assert result is None or isinstance(result, str)
    parse_first_payload(data)
    parse_first_payload(b"\x16\x03\x01" + data)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_damaged_client_hellos_never_raise(data: st.DataObject) -> None:
    hello = bytearray(HELLO)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(hello) - 1))
        hello[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(hello)))
    name = tls_sni(bytes(hello[:cut]))
    assert name is None or isinstance(name, str)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_damaged_requests_never_raise(data: st.DataObject) -> None:
    request = bytearray(REQUEST)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(request) - 1))
        request[at] = data.draw(st.integers(0, 255))
    host = http_host(bytes(request))
    assert host is None or isinstance(host, str)
