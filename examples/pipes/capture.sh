#!/bin/sh
# An interface's frames, both directions, read by tcpdump from the pcap stream
# (what `tcpdump -i IFACE` would print). Extra arguments go to `pipe read`,
# e.g. --count 10.
#
#   pktchain lab exec -f examples/pipes/lab.yaml a -- sh examples/pipes/capture.sh eth0 --count 4
set -eu
iface=${1:-eth0}
[ $# -gt 0 ] && shift
pktchain pipe read --direction inout "$@" "$iface" | tcpdump -nn -r -
