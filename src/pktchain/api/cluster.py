"""The REST API of a cluster, served by a process that is not a node.

Where the API should not run on a node (a controller host, say), `pktchain
api serve --etcd URLS` runs `ClusterApi`: a chaining model kept in step with
etcd by an `EtcdStore`, served by the same application as a node's API. Its
changes are written to etcd like any node's (one transaction per request,
checked against the whole cluster's state) and every node follows them.

It has no dataplane: `ClusterBackend` answers the node's own routes (status,
flows, counters, functions, router) with a 404 that says so. Changes run on
an `EventLoop`'s thread, the one the store applies etcd's changes on, so a
request sees the cluster's state as one thread changes it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pktchain.api.app import create_app
from pktchain.api.backend import WithoutDataplane
from pktchain.api.errors import ApiError
from pktchain.api.server import DEFAULT_PORT, ApiServer, HttpLimits
from pktchain.etcd.client import EtcdClient
from pktchain.etcd.keys import DEFAULT_CLUSTER
from pktchain.eventloop import EventLoop
from pktchain.sfc.etcd_store import EtcdStore
from pktchain.sfc.model import SfcModel

if TYPE_CHECKING:
    pass

__all__ = ["ClusterApi", "ClusterBackend"]

T = TypeVar("T")


class ClusterBackend(WithoutDataplane):
    """A cluster's model with no dataplane behind it: changes run in `loop`'s thread."""

    def __init__(self, model: SfcModel, loop: EventLoop, *, cluster: str = DEFAULT_CLUSTER):
        self._model = model
        self._loop = loop
        self._cluster = cluster

    @property
    def model(self) -> SfcModel:
        return self._model

    def submit(self, fn: Callable[[], T]) -> T:
        return self._loop.submit(fn)

    def change(self, fn: Callable[[], T]) -> T:
        return self._loop.submit(fn)

    def _no_node(self, what: str) -> ApiError:
        return ApiError(
            404,
            "HTTPNotFound",
            f"This API server serves cluster {self._cluster} from etcd and runs no node, so "
            f"it has no {what}: ask the API of a node.",
        )

    def status(self) -> dict[str, Any]:
        raise self._no_node("status")

    def flows(self, limit: int) -> list[dict[str, Any]]:
        raise self._no_node("flow table")


class ClusterApi:
    """The REST API over a model kept in step with etcd, on `host`:`port`.

    `start()` loads the cluster's resources (`EtcdStoreError` when etcd cannot
    be read) and serves; `loop` must run (in this thread or another) for
    changes to be made and etcd's changes to be applied. `close()` stops both.
    """

    def __init__(
        self,
        client: EtcdClient,
        loop: EventLoop,
        *,
        cluster: str = DEFAULT_CLUSTER,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.client = client
        self.loop = loop
        self.cluster = cluster
        self.model = SfcModel()
        self.store = EtcdStore(
            client,
            cluster=cluster,
            post=loop.call_soon_threadsafe,
            writer=f"api@{socket.gethostname()}",
        )
        self.backend = ClusterBackend(self.model, loop, cluster=cluster)
        limits = limits or HttpLimits()
        app = create_app(self.backend, token=token, max_body=limits.max_body)
        self.server = ApiServer(app, host, port, limits=limits)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.store.attach(self.model)
        try:
            self.server.start()
        except BaseException:
            self.store.close()
            raise

    def close(self) -> None:
        self.server.stop()
        self.store.close()

    def __enter__(self) -> ClusterApi:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
