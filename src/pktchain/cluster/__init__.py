"""The nodes of a cluster: who is there, where to reach each, what is down.

Each node of a cluster keeps one key in etcd while it runs,
``/pktchain/<cluster>/nodes/<name>``, holding its `NodeRecord` as JSON::

    {"name": "node1", "underlay": "192.0.2.1:4790", "api": "http://127.0.0.1:9696",
     "ports_down": [], "started": 1767225600.0}

- :mod:`pktchain.cluster.record`: `NodeRecord`, the key layout, the underlay
  address's form, and the errors (`NodeNameTaken`).
- :mod:`pktchain.cluster.registry`: `NodeRegistration` puts a node's key
  under a lease that a thread keeps alive, so that the key goes when the node
  dies; a second node of the same name is refused while the first one's
  lease lives.
- :mod:`pktchain.cluster.view`: `ClusterView` lists and watches every node's
  key and tells its listeners who joined, changed and left.

The package imports nothing here, so that reading a record does not load the
etcd client.
"""
