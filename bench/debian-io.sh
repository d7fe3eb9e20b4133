#!/usr/bin/env bash
# fio inside Debian, under tern and under QEMU, in one run, on a real KVM
# (the lab, or hardware): Debian 12 boots from its root disk
# (scripts/make-debian-root.sh; a QCOW2 overlay per boot, so the image
# stays clean) with a second disk to measure, and its tern-test unit
# (tern.test=fio, tests/linux/debian/tern-test) runs 4 KiB random reads and
# writes on it at depth 1 and 32, one fio job per vCPU, O_DIRECT with
# libaio, each 5 times for 3 s, and prints the median IOPS. Both VMMs: 2
# vCPUs, 1 GiB, the same kernel, initrd and command line, the disk opened
# O_DIRECT with Linux AIO (tern: direct=on,aio=native; QEMU -M q35 -cpu host:
# virtio-blk-pci with cache=none,aio=native), num_queues 1 and 2, on a raw
# and a QCOW2 image (fully written first, so reads find data).
#
#   scripts/make-debian-root.sh
#   scripts/lab.sh -t 3600 -- bash bench/debian-io.sh [-f "raw qcow2"] [-q "1 2"] [-v "tern qemu"]
set -euo pipefail
cd "$(dirname "$0")/.."

formats="raw qcow2" queues="1 2" vmms="tern qemu"
while getopts "f:q:v:" o; do
  case "$o" in
    f) formats=$OPTARG ;; q) queues=$OPTARG ;; v) vmms=$OPTARG ;;
    *) echo "usage: $0 [-f FORMATS] [-q QUEUE_COUNTS] [-v VMMS]" >&2; exit 2 ;;
  esac
done
b=${TERN_BUILD_DIR:-build}
deb=$b/guest/debian
for f in "$deb/vmlinuz" "$deb/initrd.img" "$deb/root.qcow2" "$b/tern"; do
  [ -e "$f" ] || { echo "debian-io.sh: $f is missing (scripts/build.sh, scripts/make-debian-root.sh)" >&2; exit 1; }
done
command -v qemu-system-x86_64 >/dev/null || { echo "debian-io.sh: qemu-system-x86_64 is missing" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "debian-io.sh: /dev/kvm is not usable here" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-debian-io.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmdline="console=ttyS0 root=/dev/vda rw panic=-1 tern.test=fio"

# boot VMM FORMAT QUEUES: one boot; the guest's fio lines go to $work/log.
boot() {
  local vmm=$1 fmt=$2 q=$3 disk=$work/bench.$2
  rm -f "$work/overlay.qcow2"
  qemu-img create -q -f qcow2 -b "$(realpath "$deb/root.qcow2")" -F qcow2 "$work/overlay.qcow2"
  if [ "$vmm" = tern ]; then
    timeout -k 10 900 "$b/tern" --kernel "$deb/vmlinuz" --initramfs "$deb/initrd.img" --cmdline "$cmdline" \
      --cpus boot=2 --memory size=1G --serial "file=$work/log" \
      --disk "path=$work/overlay.qcow2,image_type=qcow2,backing_files=on" \
      --disk "path=$disk,image_type=$fmt,num_queues=$q,direct=on,aio=native" 2> "$work/err" || true
  else
    timeout -k 10 900 qemu-system-x86_64 -M q35 -accel kvm -cpu host -smp 2 -m 1G -nodefaults -no-user-config \
      -display none -no-reboot -serial "file:$work/log" -kernel "$deb/vmlinuz" -initrd "$deb/initrd.img" \
      -append "$cmdline" -drive "file=$work/overlay.qcow2,format=qcow2,if=none,id=root" \
      -drive "file=$disk,format=$fmt,if=none,id=bench,cache=none,aio=native" \
      -device "virtio-blk-pci,drive=root,addr=0x3" \
      -device "virtio-blk-pci,drive=bench,num-queues=$q,addr=0x4" < /dev/null 2> "$work/err" || true
  fi
}

echo "debian-io: fio in Debian 12, 4 KiB random, O_DIRECT, libaio, one job per vCPU (2), median of 5 runs of 3 s"
echo "tern: $b/tern; qemu: $(qemu-system-x86_64 --version | head -1); $(uptime)"
printf '| %-6s | %6s | %-9s | %5s | %9s | %9s | %6s |\n' format queues op depth "tern IOPS" "qemu IOPS" ratio
printf '|--------|--------|-----------|-------|-----------|-----------|--------|\n'
for fmt in $formats; do
  rm -f "$work/bench.$fmt"
  qemu-img create -q -f "$fmt" "$work/bench.$fmt" 256M
  qemu-io -f "$fmt" -c "write -P 0x5a 0 256M" "$work/bench.$fmt" > /dev/null
  for q in $queues; do
    declare -A iops=()
    for vmm in $vmms; do
      boot "$vmm" "$fmt" "$q"
      if ! grep -q "tern-test: fio randwrite depth 32" "$work/log"; then
        echo "debian-io.sh: $vmm $fmt q$q: no fio results; console tail and stderr:" >&2
        { grep -iE 'virtio|vd[a-z]|blk|0000:00' "$work/log" | tail -n 20; tail -n 40 "$work/log"; cat "$work/err"; } >&2
      fi
      grep "tern-test: fio on vdb" "$work/log" | sed "s/^/$vmm: /" | tr -d '\r' >&2 || true
      # (A file, not process substitution: the lab's L1 has no /dev/fd.)
      tr -d '\r' < "$work/log" |
        sed -n 's/.*tern-test: fio \([a-z]*\) depth \([0-9]*\) iops \([0-9.]*\).*/\1 \2 \3/p' > "$work/iops"
      while read -r rw depth n; do iops[$vmm,$rw,$depth]=$n; done < "$work/iops"
      # Each VMM's figures as soon as they are in: a lab that dies in the
      # next boot must not take them along.
      echo "debian-io: $vmm $fmt q$q: $(tr '\n' ' ' < "$work/iops")" >&2
    done
    for rw in randread randwrite; do
      for depth in 1 32; do
        t=${iops[tern,$rw,$depth]:-} e=${iops[qemu,$rw,$depth]:-}
        printf '| %-6s | %6s | %-9s | %5s | %9s | %9s | %6s |\n' "$fmt" "$q" "$rw" "$depth" "${t:--}" "${e:--}" \
          "$(awk -v a="${t:-0}" -v b="${e:-0}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", a / b; else print "-" }')"
      done
    done
    unset iops
  done
done
echo "$(uptime)"
