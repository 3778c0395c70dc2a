"""Entering namespaces, without making any (tests/netns/test_linux.py makes them)."""

from __future__ import annotations

import errno

import pytest

from pktchain.lab.errors import LabOSError
from pktchain.lab.namespaces import entered as lab_entered
from pktchain.linux.netns import (
    NetnsError,
    NetnsOperation,
    enter,
    entered,
    netns_path,
    thread_netns,
)
from pktchain.pipe.iface import InterfaceError, enter_netns

MISSING = "pktchain-no-such-namespace"


def test_names_and_paths() -> None:
    assert netns_path("h1") == "/run/netns/h1"
    assert netns_path("/proc/1/ns/net") == "/proc/1/ns/net"


def test_no_namespace_means_staying_where_the_thread_is() -> None:
    home = thread_netns()
    with entered(None):
        assert thread_netns() == home
    assert thread_netns() == home


def test_a_missing_namespace_keeps_the_errno_and_is_named() -> None:
    home = thread_netns()
    with pytest.raises(NetnsError) as caught, entered(MISSING):
        pytest.fail("the block ran")
    assert caught.value.errno == errno.ENOENT
    assert caught.value.filename == MISSING
    assert caught.value.operation is NetnsOperation.OPEN
    assert str(caught.value) == f"cannot open network namespace {MISSING}: {caught.value.strerror}"
    with pytest.raises(NetnsError):
        enter(MISSING)
    assert thread_netns() == home


def test_callers_keep_their_own_error_types() -> None:
    with pytest.raises(LabOSError) as lab, lab_entered(MISSING):
        pytest.fail("the block ran")
    assert lab.value.errno == errno.ENOENT
    assert str(lab.value).startswith(f"open namespace {MISSING}:")
    with pytest.raises(InterfaceError) as pipe:
        enter_netns(MISSING)
    assert pipe.value.errno == errno.ENOENT
    assert f"netns {MISSING}: cannot open the namespace" in str(pipe.value)
