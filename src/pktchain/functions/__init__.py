"""Network functions: sans-IO packet processors that the node runs (see DESIGN.md).

Each function lives in its own module and is imported by name, e.g.
``from pktchain.functions.nat import Nat``.
"""
