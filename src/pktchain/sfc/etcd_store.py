"""The chaining model's resources in etcd, shared by every node of a cluster.

`EtcdStore` plays the part `SqliteStore` plays for one node, for a cluster:
each node's `SfcModel` holds the whole cluster's resources, etcd holds them
for all, and every change made on any node reaches every other.

Keys, under ``/pktchain/<cluster>/`` (`pktchain.etcd.keys`):

- ``sfc/<collection>/<id>``: a resource, as the JSON of its `to_dict()` (what
  `SqliteStore` writes, `resource_json`), such as
  ``sfc/port_pairs/6f1c...``;
- ``sfc/version``: rewritten by every change. Its mod revision is the
  revision of the last change of any resource, and guards every write.

A change. The model works a change out on its own state and checks every rule
(`pktchain.sfc.rules`); then this store's precommit hook writes it as one etcd
transaction: *if* ``sfc/version`` was last changed at the revision this
model's state reflects, put each created or updated resource, delete each
deleted one and put ``sfc/version``; *else* read every ``sfc/`` key. One
request to the API is one model transaction, and so one etcd transaction. If
the comparison fails, another node changed the state first: nothing is
written, the hook raises `StateOutdated` holding what the failure branch read,
and `SfcModel.run` catches the model up to it and works the change out again,
up to `DEFAULT_ATTEMPTS` times. So the rules hold across the cluster as they
hold on one node: of two nodes that make conflicting changes at once, one
commits, and the other sees the rule it breaks against the first one's
change.

The watch. Each node lists ``sfc/`` at a revision and watches from the next
(`PrefixWatch`); each revision's events (a transaction's, never split) become
one `SfcModel.sync`, which tells the model's listeners one `Change` per
resource, without writing anything back. A node's own changes come back
through the watch too and change nothing. A watch whose start revision was
compacted lists again and syncs to the list. Events are handed to `post` (the
node's `EventLoop.call_soon_threadsafe`), so they are applied on the thread
the node changes its model on.

etcd down. A write is refused with `EtcdUnavailableError` (503
``ServiceUnavailable``, naming etcd's URLs): nothing is committed, and reads
keep answering from the last state the node knew. The watch retries; when
etcd is back it resumes from the last revision it handed on (or lists again),
so no change made by anyone in the meantime is missed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pktchain.etcd.client import (
    EtcdClient,
    EtcdRequestError,
    EtcdUnreachableError,
    Event,
    EventType,
    Range,
    compare_mod_revision,
    op_delete,
    op_put,
    op_range,
)
from pktchain.etcd.keys import DEFAULT_CLUSTER, cluster_prefix, prefix_end
from pktchain.etcd.watch import Post, PrefixWatch
from pktchain.sfc.errors import BadRequest, ErrorKind, SfcError, StateOutdated
from pktchain.sfc.model import Change, SfcModel
from pktchain.sfc.resources import RESOURCE_CLASSES, ResourceKind, resource_json
from pktchain.sfc.state import SfcState

__all__ = [
    "DEFAULT_MAX_TXN_OPS",
    "ClusterState",
    "EtcdContentError",
    "EtcdMismatchError",
    "EtcdStore",
    "EtcdStoreError",
    "EtcdTransactionTooLarge",
    "EtcdUnavailableError",
    "EtcdWriteError",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_TXN_OPS = 128
"""etcd's default ``--max-txn-ops``: the operations one transaction may hold."""

_VERSION = b"version"
_KINDS: tuple[ResourceKind, ...] = tuple(RESOURCE_CLASSES)
"""Kinds in dependency order, the order `SfcModel.sync` takes them in."""


# --- errors ------------------------------------------------------------------------------


class EtcdStoreError(SfcError):
    """The cluster's state in etcd cannot be read or written.

    Neutron answers a server-side failure of this kind with 503 Service
    Unavailable: the request was valid, nothing was changed, and it may
    succeed once etcd answers. `endpoints` are etcd's URLs.
    """

    kind = ErrorKind.UNAVAILABLE
    neutron_type = "ServiceUnavailable"

    def __init__(self, endpoints: Sequence[str], detail: str) -> None:
        super().__init__(f"Cluster state in etcd at {', '.join(endpoints)}: {detail}")
        self.endpoints = tuple(endpoints)
        self.detail = detail


class EtcdUnavailableError(EtcdStoreError):
    """No etcd endpoint answered. `ambiguous`: the write was sent and not
    answered, so it may have been made; the watch will show it if it was."""

    def __init__(self, cause: EtcdUnreachableError, doing: str) -> None:
        reasons = "; ".join(cause.reasons)
        if cause.ambiguous:
            detail = (
                f"etcd did not answer in time ({reasons}); the change may or may not have "
                "been made, and shows here once etcd answers"
            )
        else:
            detail = f"etcd is unreachable ({reasons}); {doing}"
        super().__init__(cause.endpoints, detail)
        self.ambiguous = cause.ambiguous


class EtcdWriteError(EtcdStoreError):
    """etcd refused the write (its message says why); nothing was changed."""


class EtcdContentError(EtcdStoreError):
    """A key under ``sfc/`` is not a resource, or the resources break a rule."""


class EtcdMismatchError(EtcdStoreError):
    """The model holds other resources than etcd, where the two must agree."""


class EtcdTransactionTooLarge(BadRequest):
    """A change touches more resources than etcd takes in one transaction."""

    def __init__(self, resources: int, limit: int) -> None:
        super().__init__(
            f"The change touches {resources} resources; etcd takes at most {limit} "
            f"operations in one transaction (its --max-txn-ops), the version key "
            "included: make it in smaller requests."
        )


# --- what etcd holds ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterState:
    """The resources under ``sfc/`` at one etcd `revision`, in `SfcModel.sync`'s
    form (each kind in creation order), and ``sfc/version``'s mod revision."""

    revision: int
    version: int
    data: Mapping[str, Sequence[Mapping[str, Any]]]

    def __len__(self) -> int:
        return sum(len(records) for records in self.data.values())


def _content(data: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """The resources by collection and id, order aside, as JSON values."""
    normal: Mapping[str, Sequence[Mapping[str, Any]]] = json.loads(json.dumps(data))
    return {
        collection: {str(record["id"]): record for record in records}
        for collection, records in normal.items()
        if records
    }


# --- the store ---------------------------------------------------------------------------


class EtcdStore:
    """A cluster's chaining resources in etcd, kept in step with one model.

    `attach(model)` loads the cluster's resources into the model, writes
    every later change of the model to etcd before the model commits it,
    and applies every other node's changes to the model as they come. Hand
    `post` the function that runs a callback on the thread the model is
    changed on (`EventLoop.call_soon_threadsafe`); without one, other nodes'
    changes are applied on the watch's thread, under the model's lock.
    `writer` (the node's name) is recorded in ``sfc/version`` with each change.
    """

    def __init__(
        self,
        client: EtcdClient,
        *,
        cluster: str = DEFAULT_CLUSTER,
        post: Post | None = None,
        writer: str = "",
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
    ) -> None:
        self.client = client
        self.cluster = cluster
        base = cluster_prefix(cluster) + "sfc/"
        self.prefix = base.encode()
        self.version_key = self.prefix + _VERSION
        self.max_txn_ops = max_txn_ops
        self._post = post
        self._writer = writer
        self._model: SfcModel | None = None
        self._remove_hook: Callable[[], None] | None = None
        self._watch: PrefixWatch | None = None
        self._revision = 0
        """The etcd revision the model's state reflects."""
        self._version = 0
        """``sfc/version``'s mod revision in that state: what a write compares."""
        self._written: SfcState | None = None
        """The model's state as this store last left it; another means it changed
        behind the store (a later precommit hook refused a written change)."""
        self.writes = 0
        """Changes this store wrote."""
        self.outdated = 0
        """Writes refused because another writer had changed the state first."""

    def __repr__(self) -> str:
        return f"EtcdStore({self.client!r}, cluster={self.cluster!r})"

    # --- state ---------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The etcd revision the attached model's state reflects."""
        return self._revision

    @property
    def connected(self) -> bool:
        """Whether the watch reached etcd on its last attempt."""
        return self._watch is not None and self._watch.connected

    @property
    def relists(self) -> int:
        """How many times the watch listed again after a compaction."""
        return self._watch.relists if self._watch is not None else 0

    def key(self, kind: ResourceKind, id: str) -> bytes:
        """The key of a resource: ``/pktchain/<cluster>/sfc/<collection>/<id>``."""
        return self.prefix + f"{kind.collection}/{id}".encode()

    # --- reading ---------------------------------------------------------------------------

    def read(self) -> ClusterState:
        """Every resource under ``sfc/`` now; `EtcdContentError` naming a key that
        holds no resource, `EtcdUnavailableError` when etcd cannot be reached."""
        try:
            found = self.client.range(self.prefix, prefix_end(self.prefix))
        except EtcdUnreachableError as exc:
            raise EtcdUnavailableError(exc, "the cluster's state cannot be read") from exc
        except EtcdRequestError as exc:
            raise EtcdStoreError(self.client.endpoints, exc.detail) from exc
        return self._parse(found, strict=True)

    def _parse(self, found: Range, *, strict: bool) -> ClusterState:
        version = 0
        rows: dict[ResourceKind, list[tuple[int, bytes, dict[str, Any]]]] = {k: [] for k in _KINDS}
        for kv in found.kvs:
            name = kv.key[len(self.prefix) :]
            if name == _VERSION:
                version = kv.mod_revision
                continue
            try:
                kind, record = self._decode(name, kv.value)
            except ValueError as exc:
                if strict:
                    raise EtcdContentError(self.client.endpoints, str(exc)) from exc
                log.error("cluster %s: %s; ignored", self.cluster, exc)
                continue
            rows[kind].append((kv.create_revision, kv.key, record))
        # A kind's creation order is its keys' create revisions (one
        # transaction's creations share one: their keys' order decides).
        data = {
            kind.collection: [row[2] for row in sorted(rows[kind], key=lambda r: (r[0], r[1]))]
            for kind in _KINDS
        }
        return ClusterState(found.revision, version, data)

    def _decode(self, name: bytes, value: bytes) -> tuple[ResourceKind, dict[str, Any]]:
        """A resource's key (after the prefix) and value; ValueError saying what is wrong."""
        where = (self.prefix + name).decode(errors="replace")
        collection, _, id = name.decode(errors="replace").partition("/")
        try:
            kind = ResourceKind.from_collection(collection)
        except ValueError:
            raise ValueError(f"key {where} is not under a resource collection") from None
        try:
            record = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"key {where} does not hold JSON ({exc})") from exc
        if not isinstance(record, dict) or record.get("id") != id:
            raise ValueError(f"key {where} does not hold a {kind.label.lower()} with id {id}")
        return kind, record

    def load_into(self, model: SfcModel) -> ClusterState:
        """Put the cluster's resources into `model`, which must be empty (no tracking
        afterwards: `attach` does that). Returns what was loaded."""
        if len(model.state):
            raise EtcdMismatchError(
                self.client.endpoints, "cannot load into a model that already holds resources"
            )
        state = self.read()
        try:
            model.sync(state.data)
        except SfcError as exc:
            raise EtcdContentError(
                self.client.endpoints,
                f"the resources at revision {state.revision} break the model's rules: "
                f"{exc.message}",
            ) from exc
        return state

    # --- keeping a model in step ---------------------------------------------------------

    def attach(self, model: SfcModel) -> Callable[[], None]:
        """Keep `model` and the cluster's state in step; returns a function that stops it.

        An empty model gets the cluster's resources; one that holds resources
        must hold what etcd holds (`load_into` first). Attach after the model's
        other precommit hooks, so that theirs refuse a change before it is
        written for every node.
        """
        if self._model is not None:
            raise RuntimeError("this store is already attached to a model")
        state = self.read()
        with model.lock:
            if len(model.state):
                if _content(model.export()) != _content(state.data):
                    raise EtcdMismatchError(
                        self.client.endpoints,
                        "the model holds other resources than etcd; attach an empty model",
                    )
            else:
                try:
                    model.sync(state.data)
                except SfcError as exc:
                    raise EtcdContentError(
                        self.client.endpoints,
                        f"the resources at revision {state.revision} break the model's "
                        f"rules: {exc.message}",
                    ) from exc
            self._model = model
            self._remember(state, model)
            self._remove_hook = model.add_precommit_hook(self._persist)
        self._watch = PrefixWatch(
            self.client,
            self.prefix,
            on_reset=self._on_reset,
            on_events=self._on_events,
            post=self._post,
            listed_at=state.revision,
            name=f"etcd-watch:{self.cluster}:sfc",
        )
        self._watch.start()
        log.info(
            "cluster %s: %d resources at etcd revision %d", self.cluster, len(state), state.revision
        )
        return self.detach

    def detach(self) -> None:
        """Stop writing the model's changes and following etcd's (idempotent)."""
        if self._remove_hook is not None:
            self._remove_hook()
        self._remove_hook = None
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.stop()
        self._model = None
        self._written = None

    def close(self) -> None:
        self.detach()

    def _remember(self, state: ClusterState, model: SfcModel) -> None:
        self._revision = state.revision
        self._version = state.version
        self._written = model.state

    # --- writing ---------------------------------------------------------------------------

    def _persist(self, changes: tuple[Change, ...], new_state: SfcState) -> None:
        model = self._model
        if model is None:
            return
        if model.state is not self._written:
            # A precommit hook after this one refused a change this store had
            # written: the model is behind etcd. Catch up, then work it out again.
            state = self._parse(self._read_for_write(), strict=False)
            raise StateOutdated(
                "The model was behind the cluster's state; the change was not made.",
                partial(self._adopt, state),
            )
        touched = dict.fromkeys((change.kind, change.id) for change in changes)
        if len(touched) + 1 > self.max_txn_ops:
            raise EtcdTransactionTooLarge(len(touched), self.max_txn_ops)
        ops: list[dict[str, Any]] = []
        for kind, id in touched:
            resource = new_state.find(kind.resource_class, id)
            if resource is None:
                ops.append(op_delete(self.key(kind, id)))
            else:
                ops.append(op_put(self.key(kind, id), resource_json(resource).encode()))
        ops.append(op_put(self.version_key, json.dumps({"writer": self._writer}).encode()))
        try:
            result = self.client.txn(
                [compare_mod_revision(self.version_key, self._version)],
                ops,
                [op_range(self.prefix, prefix_end(self.prefix))],
            )
        except EtcdUnreachableError as exc:
            raise EtcdUnavailableError(exc, "the change was not made") from exc
        except EtcdRequestError as exc:
            raise EtcdWriteError(
                self.client.endpoints, f"etcd refused the change: {exc.detail}"
            ) from exc
        if result.succeeded:
            self._revision = self._version = result.revision
            self._written = new_state
            self.writes += 1
            return
        self.outdated += 1
        state = self._parse(result.range(0), strict=False)
        raise StateOutdated(
            f"The cluster's state changed (etcd revision {state.revision}) while the change "
            f"was worked out on revision {self._revision}; it was not made.",
            partial(self._adopt, state),
        )

    def _read_for_write(self) -> Range:
        try:
            return self.client.range(self.prefix, prefix_end(self.prefix))
        except EtcdUnreachableError as exc:
            raise EtcdUnavailableError(exc, "the change was not made") from exc
        except EtcdRequestError as exc:
            raise EtcdWriteError(self.client.endpoints, exc.detail) from exc

    # --- following ---------------------------------------------------------------------------

    def _adopt(self, state: ClusterState) -> None:
        """Make the model hold `state` unless it already reflects a later revision."""
        model = self._model
        if model is None:
            return
        with model.lock:
            if state.revision <= self._revision and model.state is self._written:
                return
            self._sync(model, state)

    def _on_reset(self, found: Range) -> None:
        self._adopt(self._parse(found, strict=False))

    def _on_events(self, revision: int, events: tuple[Event, ...]) -> None:
        model = self._model
        if model is None:
            return
        with model.lock:
            if revision <= self._revision:
                return  # this node's own change, or one it caught up with already
            if model.state is not self._written:
                try:
                    found = self.client.range(self.prefix, prefix_end(self.prefix))
                except (EtcdUnreachableError, EtcdRequestError) as exc:
                    log.warning("cluster %s: cannot list to catch up: %s", self.cluster, exc)
                    return
                self._sync(model, self._parse(found, strict=False))
                return
            tables = {
                collection: {str(record["id"]): record for record in records}
                for collection, records in model.export().items()
            }
            version = self._version
            for event in events:
                name = event.kv.key[len(self.prefix) :]
                if name == _VERSION:
                    version = event.kv.mod_revision if event.type is EventType.PUT else 0
                    continue
                if event.type is EventType.DELETE:
                    collection, _, id = name.decode(errors="replace").partition("/")
                    tables.get(collection, {}).pop(id, None)
                    continue
                try:
                    kind, record = self._decode(name, event.kv.value)
                except ValueError as exc:
                    log.error("cluster %s: %s; ignored", self.cluster, exc)
                    continue
                tables[kind.collection][str(record["id"])] = record
            data = {collection: list(table.values()) for collection, table in tables.items()}
            self._sync(model, ClusterState(revision, version, data))

    def _sync(self, model: SfcModel, state: ClusterState) -> None:
        """Make the model hold `state` (the model's lock is held)."""
        try:
            changes = model.sync(state.data)
        except SfcError as exc:
            log.error(
                "cluster %s: the resources at etcd revision %d break the model's rules (%s); "
                "this node keeps the state it had",
                self.cluster,
                state.revision,
                exc.message,
            )
            changes = ()
        self._remember(state, model)
        if changes:
            log.debug(
                "cluster %s: revision %d: %d changes", self.cluster, state.revision, len(changes)
            )
