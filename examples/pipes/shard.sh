#!/bin/sh
# Load balancing across N instances of a function (/dev/stdpkt's tee example):
# every instance reads every frame (tee) and keeps one shard of the flows
# (shard.py: a hash of the flow's addresses and ports, the same both ways, so
# that each instance sees whole connections); what the instances pass meets
# again on the interfaces, each instance sending with its own `pipe write`.
#
#   LEFT ── pipe read ─ tee ─┬▶ fn shard 0/N ─▶ fn FUNCTION #0 ─▶ pipe write ─▶ RIGHT
#                            └▶ fn shard 1/N ─▶ fn FUNCTION #1 ─▶ pipe write ─▶ RIGHT
#   RIGHT ─ pipe read ─ tee ─┬▶ fn shard 0/N ─▶ (--reverse-in of #0) ─▶ pipe write ─▶ LEFT
#                            └▶ fn shard 1/N ─▶ (--reverse-in of #1) ─▶ pipe write ─▶ LEFT
#
# Further arguments go to each instance of FUNCTION; its lines on stderr start
# with `pktchain fn FUNCTION#I`.
#
#   pktchain lab exec -f examples/pipes/fn-lab.yaml m -- \
#       sh examples/pipes/shard.sh a b 2 firewall --config examples/pipes/firewall.yaml
set -eu
left=${1:-a}
right=${2:-b}
n=${3:-2}
function=${4:-flow-monitor}
[ $# -ge 4 ] && shift 4 || shift $#
here=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"   # shard.py, as shard:Shard
export PYTHONPATH
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
trap 'trap - INT TERM; wait; exit 0' INT TERM   # every filter prints its counters first
trap '' USR1
forward=""
backward=""
i=0
while [ "$i" -lt "$n" ]; do
    mkfifo "$dir/fwd$i" "$dir/rev$i" "$dir/back$i" "$dir/to-left$i"
    pktchain pipe write "$left" < "$dir/to-left$i" &
    pktchain fn shard:Shard index="$i" of="$n" -q --label "shard#$i<" < "$dir/rev$i" > "$dir/back$i" &
    pktchain fn shard:Shard index="$i" of="$n" -q --label "shard#$i>" < "$dir/fwd$i" \
        | pktchain fn "$function" "$@" --label "$function#$i" \
            --reverse-in "$dir/back$i" --reverse-out "$dir/to-left$i" \
        | pktchain pipe write "$right" &
    forward="$forward $dir/fwd$i"
    backward="$backward $dir/rev$i"
    i=$((i + 1))
done
# shellcheck disable=SC2086 # one word per named pipe
pktchain pipe read "$right" | tee $backward > /dev/null &
# shellcheck disable=SC2086
pktchain pipe read "$left" | tee $forward > /dev/null
wait
