#!/bin/sh
# /dev/stdpkt's NAT example (`ping.sh | nat.sh | dest.sh`, the return path through
# a FIFO) between two interfaces: the hosts of NETWORK behind INSIDE reach the
# hosts behind OUTSIDE from ADDRESS, the NAT's one external address, and the
# answers are translated back (docs/functions/nat.md):
#
#   INSIDE ─ pipe read ─▶ fn nat ─▶ pipe write ─▶ OUTSIDE
#   INSIDE ◀ pipe write ◀ fn nat ◀─ pipe read ◀── OUTSIDE
#
# The NAT translates addresses and ports, not MACs: the hosts address their
# frames to each other (fn-lab.yaml gives each the other's MAC for its gateway).
#
#   pktchain lab exec -f examples/pipes/fn-lab.yaml m -- sh examples/pipes/nat.sh a b 203.0.113.1
#   pktchain lab exec -f examples/pipes/fn-lab.yaml a -- curl -s http://203.0.113.2/
set -eu
inside=${1:-a}
outside=${2:-b}
address=${3:-203.0.113.1}
network=${4:-192.168.0.0/24}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
trap 'trap - INT TERM; wait; exit 0' INT TERM   # every filter prints its counters first
trap '' USR1
mkfifo "$dir/from-outside" "$dir/to-inside"
pktchain pipe read "$outside" > "$dir/from-outside" &
pktchain pipe write "$inside" < "$dir/to-inside" &
pktchain pipe read "$inside" \
    | pktchain fn nat external_address="$address" internal_networks="[\"$network\"]" \
        --reverse-in "$dir/from-outside" --reverse-out "$dir/to-inside" \
    | pktchain pipe write "$outside"
wait
