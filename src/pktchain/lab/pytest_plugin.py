"""pytest plugin: throwaway labs for tests, and a session that fails if any is left.

Loaded in every pytest run through the ``pytest11`` entry point, so it imports
nothing heavy until a fixture is used. It provides:

- ``lab_factory``: ``lab = lab_factory(topology)`` brings up a lab from a
  mapping, YAML text, a file path or a `Topology`, under a unique name
  (the test's name, then the session token and a counter), and takes it down
  after the test whatever the outcome.
- ``lab_host``: a lone host (only ``lo``) in a throwaway lab.
- ``unique_name``: ``unique_name("tap")`` gives a name of at most 15
  characters holding the session token, for interfaces or namespaces a test
  makes by itself, so that the end-of-session check finds them if left.
- ``lab_token``: the per-session random token that is in every name above.

Tests using these fixtures get the ``netns`` marker; ``netns`` tests are
skipped, with the reason, where namespaces cannot be made (not root, no
``nsenter``).

At the end of the session the plugin looks for namespaces, lab journals and
root-namespace interfaces whose name holds the session token, and for live
processes started by the labs or running in their namespaces. If it finds
any, it lists them in the terminal summary, removes them, and sets the exit
status to "tests failed".
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pktchain.lab.lab import Lab, LabHost, TopologySource

NETNS_FIXTURES = frozenset({"lab_factory", "lab_host"})


@dataclass
class _Suite:
    """What this session made, to check at its end that none of it is left."""

    token: str
    counter: int = 0
    used: bool = False
    netns_ids: set[tuple[int, int]] = field(default_factory=set)
    processes: list[tuple[int, int | None, str]] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)

    def next_number(self) -> int:
        self.counter += 1
        self.used = True
        return self.counter


_SUITE_KEY = pytest.StashKey[_Suite]()


def _suite(config: pytest.Config) -> _Suite:
    return config.stash[_SUITE_KEY]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "netns: needs root and network namespaces (skipped, with the reason, if not)"
    )
    config.stash[_SUITE_KEY] = _Suite(token=secrets.token_hex(3))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if NETNS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netns)


def netns_unavailable() -> str | None:
    """Why this process cannot make network namespaces, or None if it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("nsenter") is None:
        return "needs nsenter (util-linux) to run commands in namespaces"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        reason = netns_unavailable()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_token(request: pytest.FixtureRequest) -> str:
    """The random token of this session, part of every name its fixtures give."""
    return _suite(request.config).token


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name(prefix)``: a name ≤ 15 characters with the session token."""
    suite = _suite(request.config)

    def make(prefix: str = "t") -> str:
        number = suite.next_number()
        name = f"{prefix[:6]}{suite.token}{number}"
        if len(name) > 15:
            raise ValueError(f"{name!r}: too many names in one session")
        return name

    return make


def _test_label(item: pytest.Item) -> str:
    label = re.sub(r"[^a-z0-9]+", "-", item.name.lower()).strip("-")
    label = label.removeprefix("test-") or "lab"
    return label[:24].strip("-") or "lab"


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """``lab_factory(topology, start_commands=True)``: a running lab, removed after the test."""
    from pktchain.lab import namespaces
    from pktchain.lab.errors import LabError
    from pktchain.lab.lab import Lab

    suite = _suite(request.config)
    labs: list[Lab] = []

    def make(topology: TopologySource, *, start_commands: bool = True) -> Lab:
        name = f"{_test_label(request.node)}-{suite.token}{suite.next_number()}"
        lab = Lab.up(topology, name=name, start_commands=start_commands)
        labs.append(lab)
        for ns in lab.topology.netns_names:
            ns_id = namespaces.netns_id(ns)
            if ns_id is not None:
                suite.netns_ids.add(ns_id)
        return lab

    yield make

    failures: list[str] = []
    for lab in reversed(labs):
        for process in lab.processes:
            start = namespaces.process_start_time(process.pid)
            suite.processes.append((process.pid, start, lab.name))
        try:
            lab.down()
        except LabError as exc:
            failures.append(f"{lab.name}: {exc}")
    if failures:
        pytest.fail("could not take labs down: " + "; ".join(failures), pytrace=False)


@pytest.fixture
def lab_host(lab_factory: Callable[..., Lab]) -> LabHost:
    """A host with only ``lo`` in a lab of its own."""
    lab = lab_factory({"hosts": {"host": {}}})
    return lab.host("host")


# --------------------------------------------------------------------------
# End of session: nothing the suite made may be left.


def _find_leftovers(suite: _Suite) -> list[str]:
    from pktchain.lab import namespaces
    from pktchain.lab.journal import journaled_labs

    found: list[str] = []
    for ns in namespaces.list_netns():
        if suite.token in ns:
            found.append(f"namespace {ns}")
    for lab in journaled_labs():
        if suite.token in lab:
            found.append(f"lab journal of {lab}")
    for pid, start, lab in suite.processes:
        alive = namespaces.process_alive(pid)
        if alive and start is not None and namespaces.process_start_time(pid) == start:
            found.append(f"process {pid} ({_comm(pid)}) started by lab {lab}")
    for pids in namespaces.pids_in_netns(_our_netns_ids(suite)).values():
        found.extend(f"process {pid} ({_comm(pid)}) in a lab namespace" for pid in pids)
    found.extend(f"interface {name} in the root namespace" for name in _root_links(suite.token))
    return list(dict.fromkeys(found))


def _our_netns_ids(suite: _Suite) -> set[tuple[int, int]]:
    """The namespace ids this session made, less those the kernel has since given
    to a namespace mounted under another name (another test run's): a process of
    ours would keep our namespace alive, so its id could not have been reused."""
    from pktchain.lab import namespaces

    foreign = {
        ns_id
        for name in namespaces.list_netns()
        if suite.token not in name
        for ns_id in (namespaces.netns_id(name),)
        if ns_id is not None
    }
    return set(suite.netns_ids) - foreign


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as file:
            return file.read().strip()
    except OSError:
        return "?"


def _root_links(token: str) -> list[str]:
    from pyroute2 import IPRoute

    ipr: Any
    with IPRoute() as ipr:
        names = [str(link.get("ifname")) for link in ipr.get_links()]
    return [name for name in names if token in name]


def _remove_leftovers(suite: _Suite) -> None:
    from pyroute2 import IPRoute, NetlinkError

    from pktchain.lab import namespaces
    from pktchain.lab.errors import LabError
    from pktchain.lab.lab import down, running_labs

    pids = [p for p, start, _ in suite.processes if namespaces.process_start_time(p) == start]
    inside = namespaces.pids_in_netns(_our_netns_ids(suite)).values()
    try:
        namespaces.terminate(pids + [pid for group in inside for pid in group])
        for lab in running_labs():
            if suite.token in lab:
                down(lab)
        for ns in namespaces.list_netns():
            if suite.token in ns:
                namespaces.delete_netns(ns)
    except LabError as exc:
        suite.leftovers.append(f"(could not remove everything: {exc})")
    ipr: Any
    with IPRoute() as ipr:
        for name in _root_links(suite.token):
            found = ipr.link_lookup(ifname=name)  # gone already if it was a veth's peer
            try:
                if found:
                    ipr.link("del", index=found[0])
            except NetlinkError as exc:
                suite.leftovers.append(f"(could not delete interface {name}: {exc})")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    suite = session.config.stash.get(_SUITE_KEY, None)
    if suite is None or not suite.used or netns_unavailable() is not None:
        return
    suite.leftovers = _find_leftovers(suite)
    if not suite.leftovers:
        return
    _remove_leftovers(suite)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    suite = config.stash.get(_SUITE_KEY, None)
    if suite is None or not suite.leftovers:
        return
    terminalreporter.section("pktchain lab: left behind by this session", sep="=", red=True)
    for line in suite.leftovers:
        terminalreporter.line(f"  {line}", red=True)
    terminalreporter.line(
        "The session fails: the tests that made these did not remove them. "
        "They have been removed now.",
        red=True,
    )
