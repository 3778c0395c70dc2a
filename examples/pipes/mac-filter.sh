#!/bin/sh
# /dev/stdpkt's MAC address filter: only frames for one destination MAC cross from
# IN to OUT (ARP requests are broadcasts: give the sender a static neighbour, or
# run the bump's return pipe for replies). /dev/stdpkt's one-liner is
#     awk '$1=="001122334455"{print $0}'
# For live traffic awk must pass each line on as it comes: fflush() after print,
# and mawk (Debian's awk) also needs -W interactive, or it reads its input in blocks.
#
#   pktchain lab exec -f examples/pipes/lab.yaml a -- \
#       ip neigh replace 10.0.0.2 lladdr 02:00:00:0b:00:02 dev eth0
#   pktchain lab exec -f examples/pipes/lab.yaml m -- sh examples/pipes/mac-filter.sh a b 0200000B0002
set -eu
in=${1:-a}
out=${2:-b}
mac=${3:-0200000B0002}
case $(awk -W version 2>&1) in
    *mawk*) interactive="-W interactive" ;;
    *) interactive="" ;;
esac
# shellcheck disable=SC2086 # $interactive is zero or two words
pktchain pipe read --format ascii "$in" \
    | awk $interactive -v mac="$mac" 'BEGIN { mac = toupper(mac) } $1 == mac { print $0; fflush() }' \
    | pktchain pipe write "$out"
