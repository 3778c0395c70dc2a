"""One tunnel connection's protocol: the handshake (unless --no-auth), then frames.

A `Session` is what a TCP connection carries, without the socket: it is fed
the bytes received and `now`, and says what to send, which packets arrived,
when it opened and why it must close. Both the server and the client drive
one per connection (server.py, client.py), and the unit tests drive two
against each other.

Without a key the session is open from the start and the stream is exactly
the original tool's; with a key, frames flow only after `auth.Handshake` has
succeeded, and the handshake (connect included) must end within `timeout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pktchain.packet.address import Buffer
from pktchain.tunnel.auth import MAGIC, Handshake, Role
from pktchain.tunnel.wire import HEADER, CloseReason, Fault, FrameDecoder

__all__ = ["HANDSHAKE_TIMEOUT", "Received", "Session"]

HANDSHAKE_TIMEOUT = 5.0
"""Seconds a connection may take to connect and authenticate."""


@dataclass(frozen=True, slots=True)
class Received:
    """What one `Session.receive` call produced."""

    packets: list[bytes] = field(default_factory=list)
    """Whole packets, in order."""
    send: bytes = b""
    """Handshake bytes to send to the peer now."""
    opened: bool = False
    """True on the call that completed the handshake."""
    fault: Fault | None = None
    """Why the connection must now be closed (after delivering `packets`)."""


class Session:
    """The protocol of one connection, for `role`, with `key` or without (None)."""

    def __init__(
        self,
        role: Role,
        *,
        key: bytes | None,
        mtu: int,
        now: float,
        addresses: Sequence[bytes] = (),
        timeout: float = HANDSHAKE_TIMEOUT,
        nonce: bytes | None = None,
    ) -> None:
        self.role = role
        self.decoder = FrameDecoder(mtu)
        self.handshake = None if key is None else Handshake(role, key, addresses, nonce=nonce)
        self._deadline = now + timeout
        # The first bytes of the stream, kept to recognise a hello sent to an
        # end running --no-auth (see `_explain`).
        self._head = b""

    @property
    def open(self) -> bool:
        """True once frames may flow (at once with --no-auth)."""
        return self.handshake is None or self.handshake.done

    @property
    def peer_addresses(self) -> tuple[bytes, ...]:
        """Addresses the peer announced in its hello (none with --no-auth)."""
        return () if self.handshake is None else self.handshake.peer_addresses

    def start(self) -> bytes:
        """What to send once the connection is up."""
        return b"" if self.handshake is None else self.handshake.start()

    def deadline(self) -> float | None:
        """When `on_timer` must be called, or None once the session is open."""
        return None if self.open else self._deadline

    def on_timer(self, now: float) -> Fault | None:
        if self.open or now < self._deadline:
            return None
        return Fault(CloseReason.HANDSHAKE_TIMEOUT, "no handshake within the time limit")

    def receive(self, data: Buffer) -> Received:
        handshake = self.handshake
        if handshake is not None and not handshake.done:
            result = handshake.receive(data)
            if result.fault is not None or not result.done:
                return Received(send=result.send, fault=result.fault)
            packets = self.decoder.feed(result.rest) if result.rest else []
            return Received(packets, result.send, True, self.decoder.fault)
        if len(self._head) < HEADER.size:
            self._head += bytes(data[: HEADER.size - len(self._head)])
        packets = self.decoder.feed(data)
        fault = self.decoder.fault
        return Received(packets, fault=None if fault is None else self._explain(fault))

    def end_of_stream(self) -> Fault:
        """Why the connection ends when the peer closes it (a clean close included)."""
        if not self.open:
            return Fault(
                CloseReason.PEER_CLOSED_IN_HANDSHAKE,
                "closed by the peer in the handshake (another key there, or --no-auth?)",
            )
        if self.decoder.buffered:
            return Fault(
                CloseReason.PEER_CLOSED_MID_FRAME,
                f"closed by the peer with {self.decoder.buffered} bytes of a frame unfinished",
            )
        return Fault(CloseReason.PEER_CLOSED, "closed by the peer")

    def _explain(self, fault: Fault) -> Fault:
        # A hello's magic read as a frame header is a length of 20555: refused
        # on those two bytes alone, so they are all the evidence there is.
        if self.handshake is None and self._head == MAGIC[: HEADER.size]:
            return Fault(
                fault.reason,
                f"{fault.detail} (it looks like a hello: the peer has a key, "
                "this end runs --no-auth)",
            )
        return fault
