"""The handshake by which the two ends of a tunnel prove they hold the same key.

Before the first frame, the client and the server exchange a hello each and
then a proof each; the key itself never crosses the wire::

    client                                                server
      | HELLO(role=client, nonce_c, addresses_c)  --------->  |
      |  <---------  HELLO(role=server, nonce_s, addresses_s) |
      | PROOF_c = HMAC-SHA256(K, LABEL_c | HELLO_c | HELLO_s) ->| checks PROOF_c,
      |  <--------- PROOF_s = HMAC-SHA256(K, LABEL_s | HELLO_c | HELLO_s)  or closes
    checks PROOF_s, or closes
      |  frames (wire.py), both ways                          |

What each side does, as one table (state → message received → what it sends,
next state):

    role    state         received    sends      next
    client  (start)       -           HELLO_c    AWAIT_HELLO
    client  AWAIT_HELLO   HELLO_s     PROOF_c    AWAIT_PROOF
    client  AWAIT_PROOF   PROOF_s ok  -          DONE
    server  (start)       -           -          AWAIT_HELLO
    server  AWAIT_HELLO   HELLO_c     HELLO_s    AWAIT_PROOF
    server  AWAIT_PROOF   PROOF_c ok  PROOF_s    DONE

Anything else (a bad hello, a proof that does not verify) ends in FAILED with
a `Fault`, and the connection is closed without another byte.

Why this is sound, and what it relies on:

- HMAC-SHA256 (RFC 2104 with SHA-256, FIPS 180-4) is a pseudo-random
  function of the key: without the key nobody can compute a proof for a
  transcript they have not seen proved, and a proof reveals nothing usable
  about the key. Proofs are compared in constant time
  (`hmac.compare_digest`).
- Each side's nonce is 32 fresh random bytes (`os.urandom`), and each proof
  covers both hellos, so a proof recorded on one connection is worthless on
  any other: this is the challenge-response of CHAP (RFC 1994 §2), made
  mutual, with each side's challenge bound into the other's answer.
- The two proofs carry different labels, so one side's proof can never be
  reflected back as the other's; a hello with the wrong role is refused.
- The server proves itself only after the client has, so a stranger who
  connects learns no proof at all; the addresses each side announces are in
  the hellos, hence covered by both proofs.
- Keys are at least `MIN_KEY` bytes: a proof seen on the wire lets an
  eavesdropper test guesses of the key offline, which a random key of that
  size defeats.

What it does not do: after the handshake the frames are the original's,
without encryption or a MAC each. An attacker on the path can read them and,
by hijacking the TCP connection, inject some; run the tunnel over IPsec or
WireGuard where the underlay is hostile. docs/tunnel.md says the same.

Sans-IO: `Handshake.receive(data)` returns what to send and whether the
handshake is over; the bytes after the last handshake message are handed back
as the first bytes of the frame stream.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from pktchain.packet.address import Buffer
from pktchain.packet.layout import Field, Layout
from pktchain.tunnel.wire import CloseReason, Fault

__all__ = [
    "ADDRESS_SIZE",
    "HELLO",
    "LABELS",
    "MAGIC",
    "MAX_ADDRESSES",
    "MIN_KEY",
    "PROOF_SIZE",
    "VERSION",
    "Handshake",
    "HandshakeResult",
    "Role",
    "State",
    "check_key",
    "decode_address",
    "encode_address",
    "proof",
]

MAGIC = b"PKTT"
"""First bytes of every hello. As a frame header they would announce 20555
bytes, above any MTU, so a ``--no-auth`` end refuses a hello at once."""

VERSION = 1
NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size
ADDRESS_SIZE = 16
"""Each announced address is 16 bytes: IPv6 as is, IPv4 as an IPv4-mapped IPv6
address (RFC 4291 §2.5.5.2)."""
MAX_ADDRESSES = 16
MIN_KEY = 16
"""Shortest key accepted, in bytes (128 bits)."""

HELLO = Layout(
    "tunnel hello",
    "docs/tunnel.md 'Authentication'",
    [
        Field("magic", 0, "4s", 'b"PKTT"'),
        Field("version", 4, "B", "1"),
        Field("role", 5, "B", "see Role"),
        Field("nonce", 6, f"{NONCE_SIZE}s", "random, new for every connection"),
        Field("count", 6 + NONCE_SIZE, "B", f"addresses that follow (0-{MAX_ADDRESSES})"),
    ],
)
"""The fixed part of a hello; `count` addresses of `ADDRESS_SIZE` bytes follow."""

_V4_MAPPED = bytes(10) + b"\xff\xff"


class Role(IntEnum):
    """Which end of the connection a hello comes from."""

    CLIENT = 1
    SERVER = 2


_ROLES = {int(role): role for role in Role}

LABELS = {
    Role.CLIENT: b"pktchain tunnel v1 client proof",
    Role.SERVER: b"pktchain tunnel v1 server proof",
}
"""What each role's proof starts with, so that neither can pass for the other's."""


class State(Enum):
    AWAIT_HELLO = "await-hello"
    AWAIT_PROOF = "await-proof"
    DONE = "done"
    FAILED = "failed"


def check_key(key: bytes) -> None:
    """Raise ValueError if `key` is too short to be a tunnel key."""
    if len(key) < MIN_KEY:
        raise ValueError(f"the key must be at least {MIN_KEY} bytes, not {len(key)}")


def proof(key: bytes, role: Role, client_hello: bytes, server_hello: bytes) -> bytes:
    """The proof `role` sends: HMAC-SHA256 over its label and both hellos."""
    return hmac.new(key, LABELS[role] + client_hello + server_hello, hashlib.sha256).digest()


def encode_address(address: bytes) -> bytes:
    """A 4- or 16-byte address as the 16 bytes a hello carries."""
    if len(address) == 4:
        return _V4_MAPPED + address
    if len(address) == ADDRESS_SIZE:
        return address
    raise ValueError(f"an IP address is 4 or 16 bytes, not {len(address)}")


def decode_address(encoded: bytes) -> bytes:
    """The 4- or 16-byte address of a hello's 16-byte field."""
    prefix = len(_V4_MAPPED)
    return encoded[prefix:] if encoded[:prefix] == _V4_MAPPED else encoded


def encode_hello(role: Role, nonce: bytes, addresses: Sequence[bytes]) -> bytes:
    if len(addresses) > MAX_ADDRESSES:
        raise ValueError(f"at most {MAX_ADDRESSES} addresses, not {len(addresses)}")
    fixed = HELLO.pack(
        magic=MAGIC, version=VERSION, role=int(role), nonce=nonce, count=len(addresses)
    )
    return fixed + b"".join(encode_address(a) for a in addresses)


@dataclass(frozen=True)
class HandshakeResult:
    """What one `Handshake.receive` call produced."""

    send: bytes = b""
    """Bytes to send to the peer now."""
    done: bool = False
    """True on the call that completed the handshake."""
    rest: bytes = b""
    """When done: the bytes received after the handshake (the first frames)."""
    fault: Fault | None = None
    """Why the handshake failed; the connection must then be closed."""


_MAGIC_AT = HELLO.offset("magic")
_VERSION = HELLO.accessor("version")
_ROLE = HELLO.accessor("role")
_COUNT = HELLO.accessor("count")


class Handshake:
    """One side of the handshake (see the module docstring for the exchange)."""

    def __init__(
        self,
        role: Role,
        key: bytes,
        addresses: Sequence[bytes] = (),
        *,
        nonce: bytes | None = None,
    ) -> None:
        check_key(key)
        if nonce is None:
            nonce = os.urandom(NONCE_SIZE)
        elif len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes, not {len(nonce)}")
        self.role = role
        self.state = State.AWAIT_HELLO
        self.peer_addresses: tuple[bytes, ...] = ()
        """The addresses the peer announced, 4 or 16 bytes each (once it said hello)."""
        self._key = key
        self._hello = encode_hello(role, nonce, addresses)
        self._peer_hello = b""
        self._buffer = bytearray()

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def start(self) -> bytes:
        """What to send as soon as the connection is up: the client speaks first."""
        return self._hello if self.role is Role.CLIENT else b""

    def receive(self, data: Buffer) -> HandshakeResult:
        if self.state in (State.DONE, State.FAILED):
            raise RuntimeError(f"the handshake is over ({self.state.value})")
        self._buffer += data
        send = b""
        while True:
            if self.state is State.AWAIT_HELLO:
                hello = self._take_hello()
                if isinstance(hello, Fault):
                    return self._fail(hello)
                if hello is None:
                    break
                self._peer_hello = hello
                self.state = State.AWAIT_PROOF
                # The client proves first; the server answers the hello with its own.
                send += self._proof(Role.CLIENT) if self.role is Role.CLIENT else self._hello
                continue
            if self.state is State.AWAIT_PROOF:
                if len(self._buffer) < PROOF_SIZE:
                    break
                received = bytes(self._buffer[:PROOF_SIZE])
                del self._buffer[:PROOF_SIZE]
                peer = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
                if not hmac.compare_digest(received, self._proof(peer)):
                    return self._fail(
                        Fault(CloseReason.WRONG_KEY, f"the {peer.name.lower()}'s proof is wrong")
                    )
                if self.role is Role.SERVER:
                    send += self._proof(Role.SERVER)
                self.state = State.DONE
                rest = bytes(self._buffer)
                self._buffer.clear()
                return HandshakeResult(send=send, done=True, rest=rest)
        return HandshakeResult(send=send)

    def _proof(self, role: Role) -> bytes:
        mine, theirs = self._hello, self._peer_hello
        client_hello, server_hello = (mine, theirs) if self.role is Role.CLIENT else (theirs, mine)
        return proof(self._key, role, client_hello, server_hello)

    def _fail(self, fault: Fault) -> HandshakeResult:
        self.state = State.FAILED
        self._buffer.clear()
        return HandshakeResult(fault=fault)

    def _take_hello(self) -> bytes | Fault | None:
        """The peer's whole hello taken from the buffer, None if incomplete, or a fault."""
        buffer = self._buffer
        head = bytes(buffer[_MAGIC_AT : _MAGIC_AT + len(MAGIC)])
        if head != MAGIC[: len(head)]:
            return Fault(
                CloseReason.NOT_A_HANDSHAKE,
                f"the peer sent {head.hex()} instead of a hello (is it running with --no-auth?)",
            )
        if len(buffer) < HELLO.size:
            return None
        version = _VERSION.read_int(buffer)
        if version != VERSION:
            return Fault(
                CloseReason.BAD_VERSION, f"handshake version {version}, expected {VERSION}"
            )
        expected = Role.SERVER if self.role is Role.CLIENT else Role.CLIENT
        role = _ROLE.read_int(buffer)
        if role != expected:
            known = _ROLES.get(role)
            what = known.name.lower() if known is not None else f"role {role}"
            return Fault(
                CloseReason.BAD_ROLE,
                f"the peer says it is a {what}, expected a {expected.name.lower()}",
            )
        count = _COUNT.read_int(buffer)
        if count > MAX_ADDRESSES:
            return Fault(
                CloseReason.BAD_HELLO,
                f"the hello announces {count} addresses (at most {MAX_ADDRESSES})",
            )
        size = HELLO.size + count * ADDRESS_SIZE
        if len(buffer) < size:
            return None
        hello = bytes(buffer[:size])
        del buffer[:size]
        self.peer_addresses = tuple(
            decode_address(hello[at : at + ADDRESS_SIZE])
            for at in range(HELLO.size, size, ADDRESS_SIZE)
        )
        return hello
