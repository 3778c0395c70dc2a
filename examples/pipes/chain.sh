#!/bin/sh
# Two functions in a chain, both directions, through named pipes (/dev/stdpkt's NAT
# example took its return path through a FIFO too):
#
#   LEFT ─ pipe read ─▶ fn firewall ──▶ fn flow-monitor ─▶ pipe write ─▶ RIGHT
#   LEFT ◀ pipe write ◀ fn firewall ◀── fn flow-monitor ◀─ pipe read ◀── RIGHT
#
# Each function is one process: stdin to stdout one way, --reverse-in to
# --reverse-out the other, so it keeps one state for both directions. The
# firewall (firewall.yaml) lets LEFT ping RIGHT and fetch its web pages and
# lets nothing else in from RIGHT; the monitor appends a record of each flow to
# FLOWS (JSON lines). `kill -USR1 -- -PGID` asks both functions for their
# counters (this shell and the pipes ignore SIGUSR1); SIGINT or SIGTERM to the
# group stops everything, each function printing its counters.
#
#   pktchain lab exec -f examples/pipes/fn-lab.yaml m -- sh examples/pipes/chain.sh a b /tmp/flows.jsonl
set -eu
left=${1:-a}
right=${2:-b}
flows=${3:-flows.jsonl}
here=$(dirname "$0")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
trap 'trap - INT TERM; wait; exit 0' INT TERM   # every filter prints its counters first
trap '' USR1
mkfifo "$dir/from-right" "$dir/back" "$dir/to-left"
pktchain pipe read "$right" > "$dir/from-right" &
pktchain pipe write "$left" < "$dir/to-left" &
pktchain pipe read "$left" \
    | pktchain fn firewall --config "$here/firewall.yaml" \
        --reverse-in "$dir/back" --reverse-out "$dir/to-left" \
    | pktchain fn flow-monitor --export "$flows" \
        --reverse-in "$dir/from-right" --reverse-out "$dir/back" \
    | pktchain pipe write "$right"
wait
