"""The stateful firewall: ordered rules, connection tracking, reject.

``function`` is the firewall, ``conntrack`` its connection table. The package
answers for the names of the former ``pktchain.functions.firewall`` module
(``Firewall``, ...).
"""

from pktchain.functions import forward_names

__getattr__ = forward_names(__name__, "pktchain.functions.firewall.function")
