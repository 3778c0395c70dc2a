"""Every node of a cluster as etcd knows it, and who joins, changes and leaves.

`ClusterView` lists ``/pktchain/<cluster>/nodes/`` and watches it
(`PrefixWatch`): `nodes` is every registered node's `NodeRecord`, and each
listener hears one `NodeChange` per node that joined, whose record changed
(its ports that are down, its API), or that left: stopped, or died and its
lease expired. `start()` lists the nodes and tells the listeners at once in
the calling thread; later changes reach them through `post` (the node's
`EventLoop.call_soon_threadsafe`), in the order etcd made them. A record
that is not valid JSON of a node is logged and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from pktchain.cluster.record import NodeRecord, nodes_prefix
from pktchain.etcd.client import EtcdClient, Event, EventType, KeyValue, Range
from pktchain.etcd.keys import DEFAULT_CLUSTER, prefix_end
from pktchain.etcd.watch import Post, PrefixWatch

__all__ = ["ClusterView", "NodeAction", "NodeChange", "NodeListener"]

log = logging.getLogger(__name__)


class NodeAction(Enum):
    JOINED = "joined"
    UPDATED = "updated"
    LEFT = "left"


@dataclass(frozen=True)
class NodeChange:
    """A node joined (old is None), changed its record, or left (new is None)."""

    action: NodeAction
    old: NodeRecord | None
    new: NodeRecord | None

    @property
    def record(self) -> NodeRecord:
        """The record after the change (before it, for a node that left)."""
        record = self.new if self.new is not None else self.old
        if record is None:
            raise ValueError("a node change names no node")
        return record

    @property
    def name(self) -> str:
        return self.record.name


NodeListener = Callable[[NodeChange], None]


class ClusterView:
    """The nodes registered in `cluster`, kept current from etcd."""

    def __init__(
        self, client: EtcdClient, *, cluster: str = DEFAULT_CLUSTER, post: Post | None = None
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.prefix = nodes_prefix(cluster)
        self._post = post
        self._nodes: Mapping[str, NodeRecord] = MappingProxyType({})
        self._listeners: list[NodeListener] = []
        self._watch: PrefixWatch | None = None
        self.revision = 0
        """The etcd revision `nodes` reflects."""

    @property
    def nodes(self) -> Mapping[str, NodeRecord]:
        """Every registered node by name: a snapshot that does not change."""
        return self._nodes

    @property
    def connected(self) -> bool:
        """Whether the watch reached etcd on its last attempt."""
        return self._watch is not None and self._watch.connected

    def add_listener(self, listener: NodeListener) -> Callable[[], None]:
        """Tell `listener` of every node that joins, changes or leaves; returns an
        unsubscribe function. Listeners run in order and should not raise."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def start(self) -> None:
        """List the nodes (listeners hear each as joined, now) and follow their
        changes. `EtcdError` if etcd cannot be reached."""
        if self._watch is not None:
            raise RuntimeError("the cluster view is already started")
        listed = self.client.range(self.prefix, prefix_end(self.prefix))
        self._reset(listed)
        self._watch = PrefixWatch(
            self.client,
            self.prefix,
            on_reset=self._reset,
            on_events=self._events,
            post=self._post,
            listed_at=listed.revision,
            name=f"etcd-watch:{self.cluster}:nodes",
        )
        self._watch.start()

    def close(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()

    # --- following etcd ------------------------------------------------------------------

    def _decode(self, kv: KeyValue) -> NodeRecord | None:
        name = kv.key[len(self.prefix) :].decode(errors="replace")
        try:
            record = NodeRecord.decode(kv.value)
        except ValueError as exc:
            log.warning("cluster %s: node key %s: %s; ignored", self.cluster, name, exc)
            return None
        if record.name != name:
            log.warning(
                "cluster %s: node key %s holds node %s; ignored", self.cluster, name, record.name
            )
            return None
        return record

    def _reset(self, listed: Range) -> None:
        if listed.revision <= self.revision:
            return
        found = {}
        for kv in listed.kvs:
            record = self._decode(kv)
            if record is not None:
                found[record.name] = record
        self._replace(listed.revision, found)

    def _events(self, revision: int, events: tuple[Event, ...]) -> None:
        if revision <= self.revision:
            return
        nodes = dict(self._nodes)
        for event in events:
            name = event.kv.key[len(self.prefix) :].decode(errors="replace")
            if event.type is EventType.DELETE:
                nodes.pop(name, None)
                continue
            record = self._decode(event.kv)
            if record is not None:
                nodes[name] = record
        self._replace(revision, nodes)

    def _replace(self, revision: int, nodes: dict[str, NodeRecord]) -> None:
        before = self._nodes
        changes = [
            NodeChange(NodeAction.LEFT, record, None)
            for name, record in before.items()
            if name not in nodes
        ]
        for name, record in nodes.items():
            old = before.get(name)
            if old is None:
                changes.append(NodeChange(NodeAction.JOINED, None, record))
            elif old != record:
                changes.append(NodeChange(NodeAction.UPDATED, old, record))
        self._nodes = MappingProxyType(nodes)
        self.revision = revision
        for change in changes:
            log.info("cluster %s: node %s %s", self.cluster, change.name, change.action.value)
            for listener in tuple(self._listeners):
                listener(change)
