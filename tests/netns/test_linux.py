"""The kernel interfaces in real namespaces: a thread's way in and out, TUN and TAP devices.

Every namespace is a throwaway lab's; every device is made inside one and goes
with its descriptor.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable

import pytest

from pktchain.lab import Lab, wait_until
from pktchain.lab.namespaces import netns_id
from pktchain.linux.netns import enter, entered, thread_netns
from pktchain.linux.tuntap import TapError, TunError, open_tap, open_tun, tap_mac

LabFactory = Callable[..., Lab]
NameFactory = Callable[[str], str]


def _two_namespaces(lab_factory: LabFactory) -> tuple[str, str]:
    lab = lab_factory({"hosts": {"a": {}, "b": {}}})
    return lab.host("a").netns, lab.host("b").netns


def _in_thread(work: Callable[[], None]) -> None:
    """Run `work` in a new thread; re-raise what it raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test's thread below
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    if failures:
        raise failures[0]


def _has_link(netns: str | None, ifname: str) -> bool:
    with entered(netns):
        try:
            socket.if_nametoindex(ifname)
        except OSError:
            return False
    return True


def test_entered_moves_the_calling_thread_only_and_brings_it_back(
    lab_factory: LabFactory,
) -> None:
    a, _ = _two_namespaces(lab_factory)
    home = thread_netns()
    inside = threading.Event()
    checked = threading.Event()
    seen: dict[str, tuple[int, int]] = {}

    def worker() -> None:
        with entered(a):
            seen["inside"] = thread_netns()
            inside.set()
            assert checked.wait(5)
        seen["after"] = thread_netns()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(5)
        # While the worker is in the namespace, this thread is where it was.
        assert thread_netns() == home
    finally:
        checked.set()
        thread.join(5)
    assert seen == {"inside": netns_id(a), "after": home}


def test_a_thread_returns_to_its_own_namespace_not_the_main_threads(
    lab_factory: LabFactory,
) -> None:
    a, b = _two_namespaces(lab_factory)
    home = thread_netns()

    def worker() -> None:
        enter(a)  # this thread lives in `a` from now on
        assert thread_netns() == netns_id(a)
        with entered(b):
            assert thread_netns() == netns_id(b)
        assert thread_netns() == netns_id(a)

    _in_thread(worker)
    assert thread_netns() == home


def test_tap_is_made_in_its_namespace_and_goes_with_its_descriptor(
    lab_factory: LabFactory, unique_name: NameFactory
) -> None:
    a, _ = _two_namespaces(lab_factory)
    name = unique_name("tap")
    fd = open_tap(name, netns=a)
    try:
        assert thread_netns() != netns_id(a)  # this thread came back
        assert _has_link(a, name)
        assert not _has_link(None, name)
        mac = tap_mac(fd)
        assert len(bytes.fromhex(mac.replace(":", ""))) == 6
        with pytest.raises(TapError) as taken:
            open_tap(name, netns=a)
        assert taken.value.errno == errno.EBUSY
        assert name in str(taken.value) and a in str(taken.value)
    finally:
        os.close(fd)
    wait_until(lambda: not _has_link(a, name), timeout=5, what=f"{name} removed")


def test_tun_is_made_in_its_namespace_and_carries_bare_ip(
    lab_factory: LabFactory, unique_name: NameFactory
) -> None:
    a, _ = _two_namespaces(lab_factory)
    name = unique_name("tun")
    fd = open_tun(name, netns=a)
    try:
        assert _has_link(a, name) and not _has_link(None, name)
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
            assert f"iff:\t{name}" in info.read()
    finally:
        os.close(fd)
    wait_until(lambda: not _has_link(a, name), timeout=5, what=f"{name} removed")


def test_a_device_in_a_missing_namespace_names_both(unique_name: NameFactory) -> None:
    missing, name = unique_name("nons"), unique_name("tun")
    with pytest.raises(TunError) as caught:
        open_tun(name, netns=missing)
    assert caught.value.errno == errno.ENOENT
    assert name in str(caught.value) and missing in str(caught.value)
    with pytest.raises(TapError) as tap:
        open_tap(name, netns=missing)
    assert tap.value.errno == errno.ENOENT
    assert not _has_link(None, name)
