"""A node's key in etcd, kept under a lease for as long as the node runs.

`NodeRegistration.register()` grants a lease of `ttl` seconds and creates
``/pktchain/<cluster>/nodes/<name>`` under it in one transaction that
requires the key to be absent: while another node of the same name holds the
key, registering is refused with `NodeNameTaken`, naming that node. Then a
thread renews the lease every third of its TTL and writes the record again
whenever `update()` changed it (the ports that are down, the API's URL), under
the same lease. When the node stops, `close()` revokes the lease and the key
goes at once; when the node dies, etcd deletes the key once the lease
expires, `ttl` seconds after the last renewal (and within about half a
second more: etcd's leader checks for expired leases twice a second).

etcd's TTLs are whole seconds, and etcd raises a TTL below its minimum (one
and a half election timeouts, rounded up: 2 s with etcd's default 1 s
election timeout) to that minimum; `granted_ttl` is what etcd granted.

If etcd cannot be reached the thread keeps trying; if the lease expired in
the meantime, it registers the node again under a new lease, unless another
node took the name meanwhile (`lost` is then true and an error is logged).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from typing import Any

from pktchain.cluster.record import (
    DEFAULT_LEASE_TTL,
    NodeNameTaken,
    NodeRecord,
    node_key,
)
from pktchain.etcd.client import (
    EtcdClient,
    EtcdError,
    EtcdRequestError,
    EtcdUnreachableError,
    GrpcCode,
    compare_create_revision,
    op_put,
    op_range,
)
from pktchain.etcd.keys import DEFAULT_CLUSTER

__all__ = ["NodeRegistration"]

log = logging.getLogger(__name__)

UNREACHABLE_RETRY = 0.5
"""Seconds between attempts while etcd cannot be reached."""


# --- the registration -------------------------------------------------------------------------


class NodeRegistration:
    """One node's key in etcd, under a lease that a thread keeps alive."""

    def __init__(
        self,
        client: EtcdClient,
        record: NodeRecord,
        *,
        cluster: str = DEFAULT_CLUSTER,
        ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        self.client = client
        self.cluster = cluster
        self.key = node_key(cluster, record.name)
        self.ttl = math.ceil(ttl)
        """The TTL asked of etcd: whole seconds."""
        self.granted_ttl = 0
        """The TTL etcd granted (at least its minimum)."""
        self.lease = 0
        self.lost = False
        """Whether another node took the name while this one's lease had expired."""
        self.renewals = 0
        """How many times the lease has been kept alive."""
        self._record = record
        self._written: NodeRecord | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"etcd-lease:{record.name}", daemon=True
        )

    @property
    def record(self) -> NodeRecord:
        """The record as the node last set it (`written` once etcd has it)."""
        return self._record

    @property
    def written(self) -> bool:
        """Whether etcd holds the current record under a live lease, as far as known."""
        return self._written == self._record and not self.lost

    def register(self) -> None:
        """Create the node's key under a new lease, and keep the lease alive.

        `NodeNameTaken` if another node holds the name; `EtcdError` if etcd
        cannot be reached or refuses.
        """
        if self._thread.is_alive():
            raise RuntimeError("this node is already registered")
        self._claim()
        self._thread.start()

    def update(self, **fields: Any) -> NodeRecord:
        """Change the record (``ports_down=[...]``, ``api=...``, ``underlay=...``);
        the registration's thread writes it under the same lease. Returns it."""
        if "name" in fields:
            raise ValueError("a node's name cannot change while it is registered")
        if "ports_down" in fields:
            fields["ports_down"] = tuple(str(port) for port in fields["ports_down"])
        with self._changed:
            self._record = dataclasses.replace(self._record, **fields)
            self._changed.notify_all()
            return self._record

    def flush(self, timeout: float) -> bool:
        """Wait until etcd holds the current record; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.written:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return self.written
                self._changed.wait(remaining)
            return True

    def close(self, *, revoke: bool = True) -> None:
        """Stop renewing the lease. With `revoke`, end it now: the key goes at once;
        without, the key stays until the lease expires, as if the node had died."""
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join(10.0)
        if revoke and self.lease and not self.lost:
            try:
                self.client.lease_revoke(self.lease)
            except EtcdError as exc:
                log.warning(
                    "node %s: cannot revoke its lease (%s); its key goes within %d s",
                    self._record.name,
                    exc,
                    self.granted_ttl,
                )
        self.lease = 0

    # --- the lease ---------------------------------------------------------------------------

    def _claim(self) -> None:
        """Create the key under a new lease; NodeNameTaken if it exists."""
        lease, granted = self.client.lease_grant(self.ttl)
        record = self._record
        try:
            result = self.client.txn(
                [compare_create_revision(self.key, 0)],
                [op_put(self.key, record.encode(), lease)],
                [op_range(self.key)],
            )
        except EtcdError:
            self._revoke_quietly(lease)
            raise
        if not result.succeeded:
            self._revoke_quietly(lease)
            found = result.range(0).kvs
            holder = None
            if found:
                try:
                    holder = NodeRecord.decode(found[0].value)
                except ValueError:
                    holder = None
            raise NodeNameTaken(self.cluster, record.name, holder, self.ttl)
        if granted != self.ttl:
            log.info(
                "node %s: etcd granted a lease of %d s (asked %d s)", record.name, granted, self.ttl
            )
        self.lease, self.granted_ttl = lease, granted
        with self._changed:
            self._written = record
            self._changed.notify_all()

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.client.lease_revoke(lease)
        except EtcdError as exc:
            log.debug("lease %x: not revoked (%s); it expires by itself", lease, exc)

    def _run(self) -> None:
        name = self._record.name
        interval = max(0.2, self.granted_ttl / 3)
        reachable = True
        wait = interval
        while not self._stopping.is_set():
            with self._changed:
                if self._written == self._record:
                    self._changed.wait(wait)
            if self._stopping.is_set():
                break
            try:
                self._renew()
            except EtcdUnreachableError as exc:
                if reachable:
                    log.warning("node %s: cannot renew its lease: %s; retrying", name, exc)
                reachable = False
                wait = min(interval, UNREACHABLE_RETRY)
                continue
            except NodeNameTaken as exc:
                log.error("node %s: its lease expired and the name was taken: %s", name, exc)
                self.lost = True
                with self._changed:
                    self._changed.notify_all()
                return
            except EtcdError as exc:
                log.warning("node %s: lease renewal failed: %s; retrying", name, exc)
                wait = min(interval, UNREACHABLE_RETRY)
                continue
            if not reachable:
                log.info("node %s: etcd reachable again, registration renewed", name)
            reachable = True
            wait = interval

    def _renew(self) -> None:
        """Write the record if it changed and renew the lease; register again if the
        lease expired."""
        record = self._record
        if self._written != record:
            try:
                self.client.put(self.key, record.encode(), lease=self.lease)
            except EtcdRequestError as exc:
                if exc.code != GrpcCode.NOT_FOUND.value:
                    raise
                self._expired()
                return
            with self._changed:
                self._written = record
                self._changed.notify_all()
        if self.client.lease_keepalive(self.lease) == 0:
            self._expired()
            return
        self.renewals += 1

    def _expired(self) -> None:
        log.warning(
            "node %s: its lease expired (etcd was out of reach for %d s or more); "
            "registering again",
            self._record.name,
            self.granted_ttl,
        )
        with self._changed:
            self._written = None
        self._claim()
