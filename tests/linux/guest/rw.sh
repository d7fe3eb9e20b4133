#!/bin/sh
# Patterns written with O_DIRECT at several offsets of /dev/vda (the first
# sectors, an odd sector past 1 MiB, the middle, the last sector) and read
# back. The host then reads the same bytes from the image (tests/linux).
. /tests/lib.sh
dev=/dev/vda
read -r size < /sys/block/vda/size
queues=0
for q in /sys/block/vda/mq/*; do [ -e "$q" ] && queues=$((queues + 1)); done
say "rw on $dev, $size sectors, $queues queues"
write_verify $dev 0 8 0x5a
write_verify $dev 2049 1 0xa5
write_verify $dev $((size / 2)) 128 0x3c
write_verify $dev $((size - 1)) 1 0xc3
say "rw done"
