#!/bin/sh
# Waits for the host to grow /dev/vda through tern's API (polling
# /sys/block/vda/size once a second, up to 15 minutes), then writes past the
# old end: the first 8 new sectors (0x6b) and the new last sector (0x9d).
. /tests/lib.sh
dev=/dev/vda
read -r old < /sys/block/vda/size
say "size $old sectors; waiting for a resize"
n=0
new=$old
while [ "$new" = "$old" ]; do
  n=$((n + 1))
  [ $n -lt 900 ] || fail "no resize in 900 s"
  pause 1
  read -r new < /sys/block/vda/size
done
say "size now $new sectors (was $old)"
write_verify $dev "$old" 8 0x6b
write_verify $dev $((new - 1)) 1 0x9d
say "resize done"
