"""The text forms of `pktchain.packet.text`: each pattern admits exactly what the parser
behind it takes (ipaddress, int, the messenger's own checks), so that the API's
document and the checks cannot disagree."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pktchain.packet import text

FEW = settings(max_examples=300, deadline=None, derandomize=True)


@FEW
@given(st.from_regex(re.compile(text.IPV4_PREFIX), fullmatch=True))
def test_every_ipv4_prefix_the_pattern_admits_parses(value: str) -> None:
    ipaddress.IPv4Network(value, strict=False)


@FEW
@given(st.from_regex(re.compile(text.IPV6_PREFIX), fullmatch=True))
def test_every_ipv6_prefix_the_pattern_admits_parses(value: str) -> None:
    ipaddress.IPv6Network(value, strict=False)


@FEW
@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_every_ipv4_prefix_is_admitted(address: ipaddress.IPv4Address, length: int) -> None:
    assert text.full(text.IPV4_PREFIX, f"{address}/{length}")


@FEW
@given(st.ip_addresses(v=6), st.integers(0, 128), st.booleans())
def test_every_ipv6_prefix_in_hex_groups_is_admitted(
    address: ipaddress.IPv6Address, length: int, exploded: bool
) -> None:
    written = address.exploded if exploded else address.compressed
    if "." not in written:  # an IPv4 tail (::ffff:1.2.3.4) is not admitted
        assert text.full(text.IPV6_PREFIX, f"{written}/{length}")


@pytest.mark.parametrize(
    "refused",
    ["10.0.0.0/255.0.0.0", "10.0.0.0/08", "010.0.0.0/8", "10.0.0.0/33", "10.0.0.0",
     " 10.0.0.0/8", "10.0.0.0/8\n", "fe80::%eth0/64", "::ffff:1.2.3.4/128", "1:::2/64",
     "10.0.0.0/\u0668"],
)  # fmt: skip
def test_other_spellings_are_refused(refused: str) -> None:
    assert not text.full(text.IPV4_PREFIX, refused)
    assert not text.full(text.IPV6_PREFIX, refused)


def test_port_numbers() -> None:
    for port in range(65536):
        assert text.full(text.PORT_NUMBER, str(port))
    assert text.full(text.PORT_NUMBER, "000080")
    for refused in ("65536", "99999", "", "-1", "+80", " 80", "8\u0660", "80.0"):
        assert not text.full(text.PORT_NUMBER, refused)


def _messenger_accepts_name(value: str) -> bool:
    return re.fullmatch(r"[^\s/:]{1,15}", value) is not None and value not in (".", "..")


@FEW
@given(st.text(alphabet=st.sampled_from(list("ab./: \t\x1c\x85\u3000\u2000\x00\xe9")), max_size=17))
def test_interface_names_are_what_linux_takes(value: str) -> None:
    assert text.full(text.IFNAME, value) == _messenger_accepts_name(value)


def _unicast(value: str) -> bool:
    if not re.fullmatch(r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}", value):
        return False
    first, rest = int(value[:2], 16), value[2:]
    return not first & 1 and (first != 0 or any(c not in "0:-" for c in rest))


@FEW
@given(
    st.lists(st.sampled_from(["00", "01", "02", "0a", "10", "ff", "FE", "0B"]), min_size=6,
             max_size=6),
    st.lists(st.sampled_from([":", "-"]), min_size=5, max_size=5),
)  # fmt: skip
def test_unicast_macs(pairs: list[str], separators: list[str]) -> None:
    value = pairs[0] + "".join(sep + pair for sep, pair in zip(separators, pairs[1:], strict=True))
    assert text.full(text.UNICAST_MAC, value) == _unicast(value)


def test_host_names() -> None:
    assert text.full(text.HOST_NAME, "www.Example-1.org")
    assert text.full(text.HOST_NAME, "_sip._tcp.example")
    for refused in ("", "-a.org", "a-.org", "a..org", "a.org.", "a" * 64, "caf\u00e9.fr"):
        assert not text.full(text.HOST_NAME, refused)


def test_anchored_matches_the_whole_string() -> None:
    assert text.anchored(text.DIGITS) == "^(?:[0-9]+)$"
    assert not text.full(text.DIGITS, 80)  # not a string
