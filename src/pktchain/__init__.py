"""pktchain: chain network functions over real traffic on Linux.

The package is imported by every command, including the ones that must start in
well under a tenth of a second, so this module imports nothing heavy: each
subsystem (`packet`, `lab`, `node`, ...) is imported where it is used.
"""

__version__ = "0.1.0"
