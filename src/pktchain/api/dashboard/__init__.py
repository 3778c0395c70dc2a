"""The node's live web dashboard: a page at ``/ui/``, its data and live stream.

`Dashboard` is what the node hands `create_app` (its live state, its events);
`dashboard_routes` serves the page and the data; `LiveFeed` the stream of
server-sent events; `chain_graphs` the chains as the page draws them.
docs/dashboard.md describes the page, its data and the stream's protocol.
"""

from pktchain.api.dashboard.feed import Dashboard, LiveFeed
from pktchain.api.dashboard.routes import UI_PATH, dashboard_routes
from pktchain.api.dashboard.topology import chain_graphs

__all__ = ["UI_PATH", "Dashboard", "LiveFeed", "chain_graphs", "dashboard_routes"]
