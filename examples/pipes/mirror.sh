#!/bin/sh
# /dev/stdpkt's port mirroring: frames from IN leave by OUT, and a copy by MIRROR;
# with a fourth argument, a copy is also kept in that file. tee copies any
# stream, pcap as here or ASCII: each copy starts with the pcap file header.
# (/dev/stdpkt wrote `tee /dev/ethpipe/1 > /dev/ethpipe/2`; an interface is not a
# file here, so the copy goes through a named pipe.)
#
#   pktchain lab exec -f examples/pipes/lab.yaml m -- sh examples/pipes/mirror.sh a b c /tmp/a.pcap
set -eu
in=${1:-a}
out=${2:-b}
mirror=${3:-c}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkfifo "$dir/mirror"
pktchain pipe write "$mirror" < "$dir/mirror" &
pktchain pipe read "$in" | tee "$dir/mirror" ${4:+"$4"} | pktchain pipe write "$out"
wait
