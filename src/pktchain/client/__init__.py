"""Clients of a running pktchain node's networking-sfc-compatible REST API.

`NeutronClient` (in `pktchain.client.neutron`) speaks the HTTP contract with
the standard library only, so that the command line starts fast; the
``pktchain port-pair`` ... commands (`pktchain.client.cli`) are built on it.
"""
