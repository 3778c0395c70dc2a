"""Network functions: sans-IO packet processors that the node, ``pktchain fn`` and tests drive.

The folder shows the parts (docs/design.md):

* ``sdk/``: the contract every function follows, its configuration schema and
  the one driver that maps a function's answers to outputs;
* ``common/``: protocol pieces several functions share (ARP, ICMP, the TCP
  session table, reject);
* ``router/``, ``nat/``, ``firewall/``, ``loadbalancer/``: the larger functions,
  each with its own support modules;
* ``mirror``, ``ratelimit``, ``flowmonitor``, ``l7``: the small ones, one module
  each.

Modules that moved keep their old import path: :data:`MOVED` maps each old
name to the new one, and importing the old name gives the very same module
object (so ``package.module:Class`` paths written for an earlier layout still
load). A package that took the name of a former module (``router``, ``nat``,
``firewall``, ``loadbalancer``) answers for that module's names too
(:func:`forward_names`).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import importlib.abc

MOVED: dict[str, str] = {
    "pktchain.functions.schema": "pktchain.functions.sdk.schema",
    "pktchain.functions.router_config": "pktchain.functions.router.config",
    "pktchain.functions.router_fragments": "pktchain.functions.router.fragments",
    "pktchain.functions.router_arp": "pktchain.functions.router.hosts",
    "pktchain.functions.router_icmp": "pktchain.functions.common.icmp",
    "pktchain.functions.nat_config": "pktchain.functions.nat.config",
    "pktchain.functions.nat_function": "pktchain.functions.nat.function",
    "pktchain.functions.nat_icmp": "pktchain.functions.common.embedded",
    "pktchain.functions.nat_result": "pktchain.functions.nat.result",
    "pktchain.functions.nat_table": "pktchain.functions.nat.table",
    "pktchain.functions.nat_tcp": "pktchain.functions.common.tcp",
    "pktchain.functions.reject": "pktchain.functions.common.reject",
    "pktchain.functions.conntrack": "pktchain.functions.firewall.conntrack",
    "pktchain.functions.loadbalancer_config": "pktchain.functions.loadbalancer.config",
    "pktchain.functions.loadbalancer_conn": "pktchain.functions.loadbalancer.connections",
    "pktchain.functions.loadbalancer_health": "pktchain.functions.loadbalancer.health",
    "pktchain.functions.maglev": "pktchain.functions.loadbalancer.maglev",
}
"""Former module paths and where each module lives now."""


class _MovedModuleLoader:
    """Imports the module's new path and files the same object under the old one.

    A plain class with the loader protocol's two methods, not a subclass of
    ``importlib.abc.Loader``: importing ``importlib.abc`` costs ``pktchain fn``
    about 15 ms of its start-up.
    """

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed under its new name."""


class _MovedModuleFinder:
    """The meta path finder protocol's one method (see `_MovedModuleLoader`)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        if new is None:
            return None
        loader = cast("importlib.abc.Loader", _MovedModuleLoader(new))
        return importlib.machinery.ModuleSpec(fullname, loader)


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def forward_names(package: str, former_module: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for `package` that finds its missing names in `former_module`.

    The package stands where `former_module` used to be a single file, so
    ``from pktchain.functions.nat import Nat`` and ``pktchain.functions.nat:NatFunction``
    keep working. The module is imported on first use, so that importing one of
    the package's support modules does not import the whole function.
    """

    def attribute(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(former_module)
        try:
            return getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return attribute
