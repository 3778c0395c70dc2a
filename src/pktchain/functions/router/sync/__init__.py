"""Keeping a backup router's state in step with its master's (docs/ha-sync.md).

``records`` states the replicated state (hosts, port forwards, NAT sessions) as
typed records and their binary encoding; ``wire`` the authenticated frames;
``protocol`` the sans-IO sender (master) and receiver (backup). The transport
over TCP is :mod:`pktchain.node.hasync`.
"""

from pktchain.functions.router.sync.protocol import (
    LagStats,
    ReceiverSettings,
    SenderSettings,
    SyncEndpoint,
    SyncReceiver,
    SyncSender,
)
from pktchain.functions.router.sync.records import RouterState, Takeover

__all__ = [
    "LagStats",
    "ReceiverSettings",
    "RouterState",
    "SenderSettings",
    "SyncEndpoint",
    "SyncReceiver",
    "SyncSender",
    "Takeover",
]
