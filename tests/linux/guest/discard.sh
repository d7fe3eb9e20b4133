#!/bin/sh
# blkdiscard on a byte range of /dev/vda: discard.sh OFFSET LENGTH (bytes).
. /tests/lib.sh
dev=/dev/vda
read -r max < /sys/block/vda/queue/discard_max_bytes
read -r gran < /sys/block/vda/queue/discard_granularity
say "discard: max $max bytes, granularity $gran"
[ "$max" -gt 0 ] || fail "the disk does not offer discard"
blkdiscard -o "$1" -l "$2" $dev || fail "blkdiscard -o $1 -l $2 failed"
sync
say "discarded $2 bytes at $1"
