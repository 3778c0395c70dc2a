"""The function contract's own parts: deadlines, lease tables, leases, loading, schemas."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pktchain.functions.sdk import (
    Deadlines,
    FlowLease,
    FlowLeases,
    Function,
    FunctionLoadError,
    NoConfig,
    function_class,
)
from pktchain.functions.sdk.schema import ConfigError, check, load_config


def test_deadlines_yield_due_keys_in_order_and_forget_them() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("b", 2.0)
    deadlines.set("a", 1.0)
    deadlines.set("c", 9.0)
    assert deadlines.next() == 1.0
    assert list(deadlines.pop_due(5.0)) == ["a", "b"]
    assert len(deadlines) == 1 and deadlines.next() == 9.0


def test_a_moved_deadline_counts_once_and_a_discarded_one_never() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("a", 1.0)
    deadlines.set("a", 3.0)  # moved later: the entry at 1.0 is stale
    deadlines.set("b", 2.0)
    deadlines.discard("b")
    assert deadlines.next() == 3.0
    assert list(deadlines.pop_due(2.5)) == []
    assert list(deadlines.pop_due(3.0)) == ["a"]
    assert deadlines.next() is None


def test_a_key_filed_again_while_due_keys_are_taken_comes_back_later() -> None:
    deadlines: Deadlines[str] = Deadlines()
    deadlines.set("a", 1.0)
    taken = []
    for key in deadlines.pop_due(1.0):
        taken.append(key)
        deadlines.set(key, 4.0)  # not done yet: look again later
    assert taken == ["a"] and deadlines.next() == 4.0
    assert deadlines.get("a") == 4.0 and deadlines.get("gone") is None


def test_a_lease_table_gives_one_lease_per_key_and_stays_bounded() -> None:
    leases = FlowLeases(limit=2)
    first = leases.lease("x")
    assert leases.lease("x") is first
    leases.lease("y")
    leases.lease("z")  # full: the oldest goes
    assert not first.valid and len(leases) == 2
    assert leases.lease("x") is not first
    leases.revoke_all()
    assert len(leases) == 0


def test_a_lease_the_fast_path_stopped_using_expires_after_the_idle_timeout() -> None:
    leases = FlowLeases(idle=10.0)
    busy, quiet = leases.lease("busy", now=100.0), leases.lease("quiet", now=100.0)
    assert leases.next_deadline() == 110.0
    busy.seen = 105.0  # the node counted a packet on the fast path
    assert leases.expire(109.0) == 0
    assert leases.expire(110.0) == 1
    assert not quiet.valid and busy.valid and "quiet" not in leases
    assert leases.next_deadline() == 115.0  # idle seconds after its last use
    assert leases.expire(115.0) == 1 and not busy.valid
    assert len(leases) == 0 and leases.next_deadline() is None


def test_a_lease_revoked_elsewhere_is_forgotten_without_counting() -> None:
    leases = FlowLeases(idle=10.0)
    leases.lease("x", now=0.0).revoke()
    assert leases.expire(10.0) == 0 and len(leases) == 0


def test_replacing_a_revoked_lease_does_not_evict_another() -> None:
    leases = FlowLeases(limit=2)
    first, second = leases.lease("x"), leases.lease("y")
    first.revoke()
    assert leases.full and leases.get("x") is first
    assert leases.lease("x") is not first and second.valid


def test_without_an_idle_timeout_leases_stay() -> None:
    leases = FlowLeases()
    leases.lease("x", now=0.0)
    assert leases.next_deadline() is None and leases.expire(1e9) == 0 and len(leases) == 1


def test_revoking_a_lease_runs_its_hooks_once() -> None:
    lease = FlowLease()
    calls: list[str] = []
    lease.on_revoke(lambda: calls.append("a"))
    lease.revoke()
    lease.revoke()
    lease.on_revoke(lambda: calls.append("late"))  # already revoked: at once
    assert calls == ["a", "late"]


def test_function_kinds_load_by_name_or_path_and_refuse_anything_else() -> None:
    assert function_class("rate-limiter").KIND == "rate-limiter"
    assert issubclass(function_class("pktchain.functions.mirror:Mirror"), Function)
    for wrong in ("nosuchkind", "no.such.module:Thing", "pktchain.functions.sdk:Packet"):
        with pytest.raises(FunctionLoadError):
            function_class(wrong)


@dataclass(frozen=True)
class Inner:
    port: int = field(default=1, metadata=check(minimum=1, maximum=65535))


@dataclass(frozen=True)
class Outer:
    name: str
    inner: tuple[Inner, ...] = ()
    rate: float | None = None


def test_a_schema_reports_every_wrong_field_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Outer, {"inner": [{"port": 0}, {"port": "x"}], "rate": "fast", "extra": 1})
    fields = {error.field for error in caught.value.errors}
    assert fields == {"name", "inner[0].port", "inner[1].port", "rate", "extra"}
    made = load_config(Outer, {"name": "n", "inner": [{"port": 80}], "rate": 2})
    assert made == Outer("n", (Inner(80),), 2.0)


def test_a_function_is_generic_in_its_configuration_and_need_not_say_so() -> None:
    class Typed(Function[Inner]):
        Config = Inner

    class Plain(Function):
        pass

    typed = Typed.from_config({"port": 80})
    assert isinstance(typed, Typed) and typed.config == Inner(80)
    assert Plain.from_config(None).config == NoConfig()
