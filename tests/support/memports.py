"""In-memory ports for driving the datapath without a kernel."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from pktchain.node.dataplane.ports import PortKind, SwitchPort
from pktchain.packet.address import Buffer


class MemoryPort(SwitchPort):
    """A port whose wire is two Python queues."""

    def __init__(self, name: str, *, mac: str | None = None, refuse: OSError | None = None) -> None:
        self.inbox: deque[bytes] = deque()
        self.sent: list[bytes] = []
        self._refuse = refuse
        super().__init__(
            name=name,
            kind=PortKind.TAP,
            fd=-1,
            recv=self._recv,
            send=self._send,
            sendv=self._sendv,
            netns=None,
            ifname=name,
            mac=mac,
        )

    def _recv(self) -> bytes:
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def _send(self, data: bytes) -> int:
        if self._refuse is not None:
            raise self._refuse
        self.sent.append(data)
        return len(data)

    def _sendv(self, parts: Sequence[Buffer]) -> int:
        return self._send(b"".join(parts))

    def close(self) -> None:
        pass
