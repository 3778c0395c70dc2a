"""TUN/TAP names and errors that need no device (tests/netns/test_linux.py makes devices)."""

from __future__ import annotations

import pytest

from pktchain.linux.tuntap import TapError, TunError, TunTapError, check_ifname, open_tap, open_tun


@pytest.mark.parametrize("name", ["tap0", "eth-1.100", "a" * 15, "tün"])
def test_valid_interface_names(name: str) -> None:
    check_ifname(name)


@pytest.mark.parametrize("name", ["", "a" * 16, "tün" * 5, "a/b", "a:b", "a b", ".", "..", "a\tb"])
def test_invalid_interface_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="is not an interface name"):
        check_ifname(name)


def test_a_bad_name_is_refused_before_any_device_is_opened() -> None:
    with pytest.raises(ValueError):
        open_tap("no/slash")
    with pytest.raises(ValueError):
        open_tun("x" * 16, netns="does-not-matter")


def test_tap_and_tun_errors_are_os_errors_callers_can_tell_apart() -> None:
    assert issubclass(TapError, TunTapError) and issubclass(TunError, TunTapError)
    assert issubclass(TunTapError, OSError)
    assert not issubclass(TapError, TunError)
