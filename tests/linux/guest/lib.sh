# Shared by the guest test scripts (/tests/ in the initramfs). Lines the host
# tests wait for start with "tern-test:".
say() { echo "tern-test: $*"; }
fail() { echo "tern-test: FAIL: $*"; exit 1; }

# pat SECTORS BYTE: SECTORS*512 bytes of BYTE (e.g. 0x5a) on stdout.
pat() { dd if=/dev/zero bs=512 count="$1" 2>/dev/null | tr '\000' "\\$(printf %o "$2")"; }

# write_at DEV SECTOR SECTORS BYTE: one O_DIRECT write of the pattern.
write_at() {
  pat "$3" "$4" | dd of="$1" bs=$(($3 * 512)) count=1 seek=$(($2 * 512)) iflag=fullblock oflag=direct,seek_bytes conv=notrunc 2>/tmp/dd.err
}

# sum_at DEV SECTOR SECTORS: md5 of those sectors, read with O_DIRECT.
sum_at() {
  dd if="$1" bs=$(($3 * 512)) count=1 skip=$(($2 * 512)) iflag=direct,skip_bytes 2>/tmp/dd.err | md5sum | cut -d' ' -f1
}

# check_at DEV SECTOR SECTORS BYTE: the sectors hold the pattern.
check_at() {
  [ "$(sum_at "$1" "$2" "$3")" = "$(pat "$3" "$4" | md5sum | cut -d' ' -f1)" ]
}

# write_verify DEV SECTOR SECTORS BYTE: write the pattern, read it back.
write_verify() {
  write_at "$@" || fail "write of $4 at sector $2 ($3 sectors): $(cat /tmp/dd.err)"
  check_at "$@" || fail "read-back of $4 at sector $2 ($3 sectors) differs"
  say "wrote and read back $4 at sector $2, $3 sectors"
}

sectors() { cat "/sys/block/${1##*/}/size"; }
