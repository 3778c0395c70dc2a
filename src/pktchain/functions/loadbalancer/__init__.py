"""The L4 load balancer: Maglev hashing, health checks through the dataplane, draining.

``function`` is the load balancer, ``config`` its settings, ``connections``
its connection table and SNAT ports, ``health`` the checks, ``maglev`` the
lookup table. The package answers for the names of the former
``pktchain.functions.loadbalancer`` module (``LoadBalancer``, ...).
"""

from pktchain.functions import forward_names

__getattr__ = forward_names(__name__, "pktchain.functions.loadbalancer.function")
