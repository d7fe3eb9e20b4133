# Shared by the guest test scripts (/tests/ in the initramfs). Lines the host
# tests wait for start with "tern-test:". Every process costs seconds under
# an emulated KVM, so these use shell builtins where they can and one dd per
# transfer.
say() { echo "tern-test: $*"; }
fail() { echo "tern-test: FAIL: $*"; exit 1; }

# pat SECTORS BYTE: /tmp/pat-SECTORS-BYTE holds SECTORS*512 bytes of BYTE
# (e.g. 0x5a); prints its path.
pat() {
  f=/tmp/pat-$1-$2
  [ -f "$f" ] || dd if=/dev/zero bs=512 count="$1" 2>/dev/null | tr '\000' "\\$(printf %o "$2")" > "$f"
  echo "$f"
}

# write_at DEV SECTOR SECTORS BYTE: one O_DIRECT write of the pattern.
write_at() {
  p=$(pat "$3" "$4")
  dd if="$p" of="$1" bs=$(($3 * 512)) count=1 seek=$(($2 * 512)) oflag=direct,seek_bytes conv=notrunc 2>/tmp/dd.err
}

# check_at DEV SECTOR SECTORS BYTE: one O_DIRECT read; the sectors hold the pattern.
check_at() {
  p=$(pat "$3" "$4")
  dd if="$1" of=/tmp/read bs=$(($3 * 512)) count=1 skip=$(($2 * 512)) iflag=direct,skip_bytes 2>/tmp/dd.err &&
    cmp -s /tmp/read "$p"
}

# write_verify DEV SECTOR SECTORS BYTE: write the pattern, read it back.
write_verify() {
  write_at "$@" || fail "write of $4 at sector $2 ($3 sectors): $(cat /tmp/dd.err)"
  check_at "$@" || fail "read-back of $4 at sector $2 ($3 sectors) differs"
  say "wrote and read back $4 at sector $2, $3 sectors"
}

# sectors DEV: the size /sys/block shows.
sectors() {
  read -r n < "/sys/block/${1##*/}/size"
  echo "$n"
}

# pause SECONDS: waits without busybox sleep, whose fractional-seconds
# arithmetic uses the FPU (SIGILL under an emulated KVM): the shell's own
# `read -t` (integer milliseconds, poll) on a FIFO that nobody writes.
pause() {
  [ -p /tmp/tick ] || mkfifo /tmp/tick
  read -r -t "$1" _ 3<>/tmp/tick <&3 || true
}
