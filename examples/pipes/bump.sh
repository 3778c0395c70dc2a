#!/bin/sh
# A transparent bump in the wire: what arrives on one interface leaves by the
# other, both ways. The two pipes do not feed each other: `pipe read` takes only
# the frames an interface receives (--direction in, the default), never those the
# opposite pipe sends out of it.
#
#   pktchain lab exec -f examples/pipes/lab.yaml m -- sh examples/pipes/bump.sh a b
set -eu
left=${1:-a}
right=${2:-b}
pktchain pipe read "$left" | pktchain pipe write "$right" &
pktchain pipe read "$right" | pktchain pipe write "$left" &
wait
