#!/usr/bin/env bash
# The main job: set up the machine, build Tern and the guests, make a QCOW2
# disk with tern-img, boot Linux on it under tern, grow the disk through the
# API while Linux runs, and show Linux seeing it.
#
# The guest (docs/linux-guest.md): on a real KVM, Debian's stock cloud
# kernel with a 64-bit busybox initramfs; on a nested, software-emulated
# KVM (kvm_pvm, as on our CI machines), where that kernel needs a quarter of
# an hour and 64-bit user space cannot run, the small kernel built from
# Debian's linux-source with a 32-bit busybox. Its /init writes and reads
# patterns on /dev/vda, waits for the disk to grow, writes past the old end,
# and powers off. tern exits 0; tern-img check shows the image clean. A few
# minutes on the emulated KVM; seconds on hardware.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/build.sh
bash scripts/make-guest.sh

work=$(mktemp -d /tmp/tern-demo.XXXXXX)
tern_pid=
tail_pid=
cleanup() {
  [ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null || true
  [ -n "$tern_pid" ] && kill "$tern_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
disk="$work/disk.qcow2"
sock="$work/api.sock"
console="$work/console.log"

echo "== tern-img: create a 64 MiB QCOW2 disk and write a pattern"
build/tern-img create -f qcow2 "$disk" 64M
build/tern-img io "$disk" -c "write -P 0x5a 0 64k" -c "read -P 0x5a 0 64k"
build/tern-img info "$disk"

cmdline="console=ttyS0 panic=-1"
kernel=build/guest/bzImage
initramfs=build/guest/initramfs64.cpio.gz
what="Debian's stock kernel with a 64-bit user space"
if [ -d /sys/module/kvm_pvm ]; then
  kernel=build/guest/small/vmlinux
  initramfs=build/guest/small/initramfs.cpio
  what="the small Linux kernel"
  # The guest's 32-bit user space on this host (docs/linux-guest.md): system
  # calls by int $0x80 (SYSCALL32/SYSENTER32 cleared) and glibc kept off SIMD,
  # the same words the small-kernel tests use.
  cmdline+=" $(cat scripts/lib/small-guest.cmdline)"
  echo "== this host's KVM is software-emulated (kvm_pvm): the boot takes a few minutes"
fi
cmdline+=" tern.run=/tests/rw.sh&&/tests/resize.sh"

echo "== tern: booting $what on the disk (2 vCPUs, API on $sock)"
build/tern --kernel "$kernel" --initramfs "$initramfs" \
  --cmdline "$cmdline" --cpus boot=2 --memory size=256M \
  --disk "path=$disk,id=disk0" --serial "file=$console" --api-socket "$sock" &
tern_pid=$!
touch "$console"
tail -n +1 -f "$console" &
tail_pid=$!

# Waits (up to $2 seconds) for a line on the guest's console.
wait_console() {
  local deadline=$((SECONDS + $2))
  until grep -q -- "$1" "$console"; do
    kill -0 "$tern_pid" 2>/dev/null || { echo "demo: tern exited before \"$1\"" >&2; return 1; }
    [ $SECONDS -lt $deadline ] || { echo "demo: no \"$1\" within $2 s" >&2; return 1; }
    sleep 1
  done
}

wait_console "waiting for a resize" 1200
echo "== tern-remote: grow disk0 to 128 MiB while Linux runs"
build/tern-remote --api-socket "$sock" resize-disk --disk disk0 --size 128M
wait_console "resize done" 600

status=0
wait "$tern_pid" || status=$?
tern_pid=
sleep 1  # let tail print the last lines
echo "== tern exited with status $status (0: the guest powered off)"
echo "== the guest's own lines about the disk:"
grep -E "\[vda\]|capacity change|tern-guest: disk|tern-test:" "$console" || true
echo "== tern-img check and info after the run"
build/tern-img check "$disk"
build/tern-img info "$disk"
exit "$status"
