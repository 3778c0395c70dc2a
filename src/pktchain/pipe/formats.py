"""Former home of the packet stream formats, now :mod:`pktchain.packet.streams`.

The pcap and ASCII codecs are codecs like the others of ``pktchain.packet``, and
the node writes pcap with them too. Importing this module gives that one (the
same module object), so the old import path keeps working.
"""

import sys

from pktchain.packet import streams

sys.modules[__name__] = streams
