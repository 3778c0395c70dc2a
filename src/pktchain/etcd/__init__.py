"""etcd, where a cluster of pktchain nodes keeps its shared state.

- :mod:`pktchain.etcd.client`: `EtcdClient`, etcd's v3 API through its JSON
  gateway (the PyPI client ``etcd3gw``), over one or more endpoints with
  fail-over: ranges, transactions, leases and watch streams, and the errors
  that tell an unreachable etcd from a refusal.
- :mod:`pktchain.etcd.watch`: `PrefixWatch`, which keeps a copy of a key
  prefix current (list at a revision, watch from the next one, list again
  after a compaction, reconnect after a failure) and hands what it sees to a
  callback's thread of choice.
- :mod:`pktchain.etcd.keys`: the key layout every part of pktchain shares,
  ``/pktchain/<cluster>/...``; :mod:`pktchain.etcd.endpoints`: client URLs.
  Neither loads the client.

They know nothing of what the keys hold: the chaining model's store
(`pktchain.sfc.etcd_store`) and the node registry (`pktchain.cluster`) do.
"""
