"""Network address and port translation (RFC 4787, 5382, 5508, 7857).

``napt`` is the translation engine the router and the NAT function share,
``table`` its mappings and sessions, ``result`` what it answers, ``config``
its settings, ``function`` the NAT as a function of its own. The package
answers for the names of the former ``pktchain.functions.nat`` module
(``Nat``, ...) and for ``NatFunction``.
"""

from typing import Any

from pktchain.functions import forward_names

_napt = forward_names(__name__, "pktchain.functions.nat.napt")


def __getattr__(name: str) -> Any:
    if name == "NatFunction":
        from pktchain.functions.nat.function import NatFunction

        return NatFunction
    return _napt(name)
