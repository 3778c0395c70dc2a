"""The stamp: an NSH-aware function that signs every MD type 2 packet it sees with its name.

The smallest useful NSH-aware function, and the built-in example of
:class:`~pktchain.functions.sdk.nsh.NshFunction` (``pktchain nsh-fn stamp``):
it appends one context header of class 0xFFF6 (pktchain's), type 0x81
(:attr:`~pktchain.packet.nsh.PktchainTlv.EXAMPLE_STAMP`), whose value is its
``name`` in UTF-8, so that a capture at the end of a chain shows every stamp
the packet collected, in order. It changes nothing else: the driver takes one
off the service index; MD type 1 packets and packets whose NSH has no room
left (252 bytes) go on unstamped, counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from pktchain.functions.sdk.nsh import NshFunction, NshPacket, NshVerdict
from pktchain.functions.sdk.schema import check
from pktchain.packet.headers import NshMdType
from pktchain.packet.nsh import PKTCHAIN_MD_CLASS, TLV_MAX_VALUE, PktchainTlv

__all__ = ["NshStamp", "NshStampConfig"]


def _name_fits(name: str) -> str | None:
    size = len(name.encode())
    if not 0 < size <= TLV_MAX_VALUE:
        return f"1 to {TLV_MAX_VALUE} bytes of UTF-8, got {size}"
    return None


@dataclass(frozen=True, slots=True)
class NshStampConfig:
    name: str = field(
        default="stamp",
        metadata=check(test=_name_fits, help="what the stamp says: this function's name"),
    )


class NshStamp(NshFunction[NshStampConfig]):
    """Appends a context header naming itself to every MD type 2 packet."""

    KIND = "stamp"
    Config = NshStampConfig
    COUNTERS: ClassVar[Mapping[str, str]] = {
        "stamped": "MD type 2 packets the stamp was added to",
        "md1-unstamped": "MD type 1 packets, sent on with their fixed context as it came",
        "no-room": "MD type 2 packets whose NSH had no room for the stamp (252 bytes)",
    }

    def __init__(self, config: NshStampConfig | None = None) -> None:
        super().__init__(config)
        self._value = self.config.name.encode()

    def process(self, packet: NshPacket, now: float) -> NshVerdict:
        if packet.md_type != NshMdType.VARIABLE:
            self.counters["md1-unstamped"] += 1
        elif packet.add_tlv(PKTCHAIN_MD_CLASS, PktchainTlv.EXAMPLE_STAMP, self._value):
            self.counters["stamped"] += 1
        else:
            self.counters["no-room"] += 1
        return packet
