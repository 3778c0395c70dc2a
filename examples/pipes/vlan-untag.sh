#!/bin/sh
# /dev/stdpkt's VLAN untagging: frames tagged with VLAN VID (priority 0) leave OUT
# without the tag. /dev/stdpkt's one-liner, for VLAN 1, is
#     sed -e 's/8100 00 01 //'
# which works because pktchain writes a tag as its TPID, the two TCI bytes and
# the inner EtherType: removing "8100 00 01 " leaves the line of the untagged
# frame. sed -u passes each line on at once.
#
#   pktchain lab exec -f examples/pipes/lab.yaml m -- sh examples/pipes/vlan-untag.sh a b 1
set -eu
in=${1:-a}
out=${2:-b}
vid=${3:-1}
tci=$(printf '%02X %02X' $((vid >> 8)) $((vid & 255)))
pktchain pipe read --format ascii "$in" \
    | sed -u -e "s/8100 $tci //" \
    | pktchain pipe write "$out"
