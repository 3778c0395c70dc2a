"""The API's routes, one module per family, each an `APIRouter` over a `Backend`.

`neutron` serves what clients look for on any Neutron server (versions,
extensions, networks, ports), `sfc` networking-sfc's collections under
``/v2.0/sfc/``, and `node` pktchain's own resources under
``/v2.0/pktchain/`` (status, flows, counters, functions, the router).
"""

API_VERSION = "v2.0"
"""The Neutron API version the routes serve, the first segment of their paths."""
