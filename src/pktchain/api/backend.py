"""What the REST API needs from the system it serves: the `Backend` protocol.

The API reads the chaining model directly (its `state` is an immutable
snapshot, safe to read from any thread), but every change goes through
`Backend.submit`, which runs it where the dataplane lives: the node marshals
it into its packet loop's thread, applies it to the steering and hands back
the result or the exception. `status` and `flows` are the node's status
document and flow table, in the JSON of ``pktchain node status --json`` and of
the control socket's ``flows`` operation.

`LocalBackend` serves a bare model (tests, model-only use): changes run in the
calling thread, and the status holds the model's ports and no traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pktchain.sfc.model import SfcModel
from pktchain.sfc.resources import Port

if TYPE_CHECKING:
    from pktchain.messenger.ops import RouterControl
    from pktchain.node.function_file import FunctionSpec

T = TypeVar("T")

__all__ = ["Backend", "LocalBackend", "WithoutDataplane"]


class Backend(Protocol):
    """The system behind the API: a chaining model and the dataplane following it."""

    @property
    def model(self) -> SfcModel:
        """The model; the API reads its snapshots and never changes it directly."""
        ...

    def submit(self, fn: Callable[[], T]) -> T:
        """Run `fn` where the dataplane lives and return its result, or raise
        the exception it raised."""
        ...

    def change(self, fn: Callable[[], T]) -> T:
        """Run `fn`, a change of the model, and return its result, or raise the
        exception it raised. It must not return before the change has reached
        the dataplane."""
        ...

    def status(self) -> dict[str, Any]:
        """The node's status document (``pktchain node status --json``)."""
        ...

    def flows(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` rows of the node's flow table (the control socket's ``flows``)."""
        ...

    def router_control(self) -> RouterControl | None:
        """The router's control methods (the messenger's operations), None without a router.
        Calls to it are made through `submit`."""
        ...

    def router_tables(self) -> dict[str, Any] | None:
        """The router's tables (``pktchain node router --json``), None without a router."""
        ...

    def functions(self) -> list[dict[str, Any]] | None:
        """The native functions' status (``pktchain node functions --json``); None when
        the backend runs no dataplane."""
        ...

    def add_function(self, spec: FunctionSpec) -> dict[str, Any]:
        """Build and plug in a function; ValueError if the name is taken."""
        ...

    def reconfigure_function(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """New configuration for a running function; LookupError, ConfigError."""
        ...

    def remove_function(self, name: str) -> None:
        """Unplug a function; LookupError, ValueError while port pairs use it."""
        ...

    def trace(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A dry run's reply (`pktchain.node.trace`: ``{"ok": true, "trace": ...}`` or
        ``{"ok": false, "error", "field"}``); None when the backend runs no dataplane."""
        ...


class WithoutDataplane:
    """What a backend with no dataplane answers: no router, no functions."""

    def router_control(self) -> RouterControl | None:
        return None

    def router_tables(self) -> dict[str, Any] | None:
        return None

    def functions(self) -> list[dict[str, Any]] | None:
        return None

    def add_function(self, spec: FunctionSpec) -> dict[str, Any]:
        raise LookupError("this API server runs no functions")

    def reconfigure_function(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        raise LookupError("this API server runs no functions")

    def remove_function(self, name: str) -> None:
        raise LookupError("this API server runs no functions")

    def trace(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return None


class LocalBackend(WithoutDataplane):
    """A model with no dataplane behind it: changes run in the caller's thread,
    one at a time."""

    def __init__(self, model: SfcModel | None = None, *, name: str = "local") -> None:
        self._model = model if model is not None else SfcModel()
        self._name = name
        self._lock = threading.Lock()

    @property
    def model(self) -> SfcModel:
        return self._model

    def submit(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    def change(self, fn: Callable[[], T]) -> T:
        return self.submit(fn)

    def status(self) -> dict[str, Any]:
        ports = self._model.list(Port)
        return {
            "node": self._name,
            "ports": [
                {"name": port.node_port or port.name, "mac": port.mac_address}
                for port in ports
                if port.node_port
            ],
            "steering": {"chains": [], "port_pairs": {}, "flows": 0, "stats": {}},
        }

    def flows(self, limit: int) -> list[dict[str, Any]]:
        return []
