"""Modules that moved keep their former import paths, and user functions keep loading.

A function file or a user's module may name a built-in by the path it had
before the functions folder was split into packages; each such path must give
the very module it names now, and the packages that took a former module's
name must still answer for that module's names.
"""

from __future__ import annotations

import importlib

import pytest

from pktchain.functions import MOVED
from pktchain.functions.sdk import BUILTIN_FUNCTIONS, Function, function_class


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_a_former_module_path_gives_the_module_it_names_now(old: str, new: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(new)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("pktchain.functions.router", "Router"),
        ("pktchain.functions.nat", "Nat"),
        ("pktchain.functions.nat", "NatFunction"),
        ("pktchain.functions.firewall", "Firewall"),
        ("pktchain.functions.loadbalancer", "LoadBalancer"),
        ("pktchain.functions.nat_function", "NatFunction"),
        ("pktchain.functions.conntrack", "Tracker"),
    ],
)
def test_a_package_that_took_a_modules_name_answers_for_its_names(path: str, name: str) -> None:
    assert isinstance(getattr(importlib.import_module(path), name), type)


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nonesuch'"):
        _ = importlib.import_module("pktchain.functions.router").Nonesuch


@pytest.mark.parametrize("kind", sorted(BUILTIN_FUNCTIONS))
def test_every_builtin_loads_by_its_kind_and_by_its_former_path(kind: str) -> None:
    cls = function_class(kind)
    assert issubclass(cls, Function)
    assert function_class(BUILTIN_FUNCTIONS[kind]) is cls
