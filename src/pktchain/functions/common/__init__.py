"""Protocol pieces that several functions share.

* ``arp``: the ARP responder and the neighbour cache (RFC 826, RFC 1122, RFC 5227);
* ``icmp``: the ICMP errors a function may send (RFC 1812 §4.3.2) and their rate;
* ``rate``: the token bucket every rate limit uses (ICMP errors, port limits, new sessions);
* ``embedded``: the datagram quoted inside an ICMP error, read and translated;
* ``tcp``: the TCP session state table (RFC 6146 §3.5.2 as RFC 7857 §2.1 asks);
* ``reject``: the TCP reset or ICMP unreachable sent for a refused packet;
* ``fields``: configuration values (direction, protocol names, MAC addresses).
"""
