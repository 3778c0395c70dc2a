"""The networking-sfc-compatible REST API of pktchain.

`pktchain.api.app.create_app` builds the ASGI application (Neutron v2.0 as
networking-sfc serves it, plus pktchain's own status, flow and counter
endpoints) over a `pktchain.api.backend.Backend`; `pktchain.api.server.ApiServer`
serves it with uvicorn in a background thread. This package module imports
nothing, so that commands which do not serve the API start fast.
"""
