"""The virtual router: NAPT, ARP and host tracking, TTL and ICMP, port forwarding.

``function`` is the router itself, ``config`` its settings, ``hosts`` its host
table, ``fragments`` its fragment tracking, ``leases`` the flow leases it gives
the node's fast path. The package answers for the names of the former
``pktchain.functions.router`` module (``Router``, ...).
"""

from pktchain.functions import forward_names

__getattr__ = forward_names(__name__, "pktchain.functions.router.function")
