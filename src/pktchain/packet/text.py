"""The text forms of addresses and numbers that requests carry, as regular expressions.

Each pattern is written once here and used twice: the checks of the API's
bodies and of the messenger's arguments match a value against it (with
`full`) before they parse it, and the API's OpenAPI document states it as the
value's ``pattern`` (with `anchored`). What a client reads in the document is
then exactly what the server takes, character for character: no leading
zeros in an IPv4 octet or a prefix length, no netmask after the slash, no
zone in an IPv6 address, ASCII digits only.

The patterns use only what ECMA-262 and Python's `re` read the same way:
character classes spelt out (no ``\\d``, ``\\s`` or ``\\w``, whose meanings
differ), no lookaround, no flags.
"""

from __future__ import annotations

import re

__all__ = [
    "DIGITS",
    "HOST_NAME",
    "IFNAME",
    "IPV4",
    "IPV4_PREFIX",
    "IPV6",
    "IPV6_PREFIX",
    "MAC",
    "PORT_NUMBER",
    "UNICAST_MAC",
    "anchored",
    "full",
]

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_HEX = r"[0-9A-Fa-f]{1,4}"

IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
"""A dotted-quad IPv4 address, each octet 0-255 in decimal without leading zeros."""

IPV6 = (
    "(?:"
    rf"(?:{_HEX}:){{7}}{_HEX}"
    rf"|(?:{_HEX}:){{1,7}}:"
    rf"|(?:{_HEX}:){{1,6}}:{_HEX}"
    rf"|(?:{_HEX}:){{1,5}}(?::{_HEX}){{1,2}}"
    rf"|(?:{_HEX}:){{1,4}}(?::{_HEX}){{1,3}}"
    rf"|(?:{_HEX}:){{1,3}}(?::{_HEX}){{1,4}}"
    rf"|(?:{_HEX}:){{1,2}}(?::{_HEX}){{1,5}}"
    rf"|{_HEX}:(?::{_HEX}){{1,6}}"
    rf"|:(?::{_HEX}){{1,7}}"
    "|::"
    ")"
)
"""An IPv6 address in hexadecimal groups (RFC 4291 §2.2 forms 1 and 2; "::" once at most)."""

IPV4_PREFIX = rf"{IPV4}/(?:3[0-2]|[12]?[0-9])"
"""An IPv4 CIDR: an address, ``/``, a prefix length 0-32."""

IPV6_PREFIX = rf"{IPV6}/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])"
"""An IPv6 CIDR: an address, ``/``, a prefix length 0-128."""

MAC = r"[0-9A-Fa-f]{2}(?:[:-][0-9A-Fa-f]{2}){5}"
"""An Ethernet address: six pairs of hex digits joined by ``:`` or ``-``."""


def _unicast_mac() -> str:
    # Twelve hex digits in pairs; the second is even (the I/G bit clear, IEEE 802
    # §8.2.2) and some digit is not zero. One branch per place of the first digit
    # that is not zero: the ones before it are 0, the ones after it anything.
    hexdigit, even, nonzero = "[0-9A-Fa-f]", "[02468AaCcEe]", "[1-9A-Fa-f]"
    branches = []
    for first in range(12):
        digits = []
        for place in range(12):
            if place < first:
                digits.append("0")
            elif place == first:
                digits.append("[2468AaCcEe]" if place == 1 else nonzero)
            else:
                digits.append(even if place == 1 else hexdigit)
        pairs = ["".join(digits[i : i + 2]) for i in range(0, 12, 2)]
        branches.append("[:-]".join(pairs))
    return "(?:" + "|".join(branches) + ")"


UNICAST_MAC = _unicast_mac()
"""A `MAC` that a NIC may have: unicast (the I/G bit clear) and not all zero."""

_IFCHAR = r"[^/:\x09-\x0d\x20\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_IFCHAR_NO_DOT = _IFCHAR[:-1] + ".]"
IFNAME = (
    rf"(?:{_IFCHAR_NO_DOT}{_IFCHAR}{{0,14}}"
    rf"|\.{_IFCHAR_NO_DOT}{_IFCHAR}{{0,13}}"
    rf"|\.\.{_IFCHAR}{{1,13}})"
)
"""An interface name as Linux takes one (``dev_valid_name``): 1-15 characters, no
``/``, ``:`` or white space (Python's and Unicode's), and not ``.`` or ``..``."""

DIGITS = r"[0-9]+"
"""A decimal integer of ASCII digits, as a string."""

PORT_NUMBER = (
    r"0*(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
)
"""0-65535 as a string of ASCII digits (leading zeros allowed, as int() allows them)."""

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
HOST_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
"""A DNS host name (RFC 1123 §2.1, underscores allowed): labels of 1-63 letters,
digits, ``-`` and ``_``, joined by dots. A trailing dot (the root) and the total
length (at most 253) are checked apart."""


def anchored(pattern: str) -> str:
    """The pattern as a JSON Schema ``pattern``: matching the whole string."""
    return f"^(?:{pattern})$"


def full(pattern: str, value: object) -> bool:
    """Whether `value` is a string the whole of which matches `pattern`."""
    return isinstance(value, str) and _compiled(pattern).fullmatch(value) is not None


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _CACHE.get(pattern)
    if compiled is None:
        compiled = _CACHE[pattern] = re.compile(pattern)
    return compiled
