#!/bin/sh
# A read-only /dev/vda: the kernel shows it read-only, reads return what the
# host wrote (BYTE in the first 8 and the last sector), writes fail.
. /tests/lib.sh
dev=/dev/vda
byte=${1:?byte}
read -r size < /sys/block/vda/size
read -r ro < /sys/block/vda/ro
say "read-only check on $dev, $size sectors, ro=$ro"
[ "$ro" = 1 ] || fail "/sys/block/vda/ro is not 1"
check_at $dev 0 8 "$byte" || fail "sectors 0-7 do not hold $byte"
check_at $dev $((size - 1)) 1 "$byte" || fail "the last sector does not hold $byte"
say "read $byte at sector 0 and at the last sector"
if write_at $dev 0 1 0x00; then fail "a write to the read-only disk succeeded"; fi
read -r err < /tmp/dd.err
say "write refused: $err"
say "read-only done"
