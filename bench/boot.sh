#!/usr/bin/env bash
# Boot times, side by side in one run: the same kernel, initramfs and command
# line under tern and under QEMU (KVM), and how far each gets in one budget.
#
#   bench/boot.sh [-k small|stock] [-t BUDGET_S] [-r ROUNDS] [-b BUILD_DIR]
#
# Kernels (scripts/make-guest.sh, scripts/make-small-kernel.sh):
#   small  build/guest/small/{bzImage,vmlinux}: the small kernel from Debian's
#          linux-source (default; about a minute to its disk probe on an
#          emulated KVM)
#   stock  build/guest/{bzImage,vmlinux}: Debian's cloud kernel (about 16
#          minutes to init on an emulated KVM: give -t 1500 or more)
# Runs, each with the budget:
#   tern-vmlinux  tern --kernel vmlinux (ELF64, no decompressor)
#   tern-bzImage  tern --kernel bzImage (64-bit boot protocol)
#   qemu-microvm  qemu-system-x86_64 -M microvm -accel kvm -kernel bzImage (QEMU's default CPU
#                 model: -cpu host aborts on kvm_pvm, which refuses MSR 0x10a)
#   qemu-q35      qemu-system-x86_64 -M q35 -accel kvm -kernel bzImage
# Milestones (wall seconds from start): the kernel's first console line,
# "Run /init as init process", and the end (exit status; "budget" when the
# run was stopped). Every run gets 2 vCPUs, 512 MiB, `console=ttyS0 panic=-1`
# and the guest initramfs; tern adds what its CPU profile adds (docs/vmm.md).
# With the stock kernel on a real KVM (hardware, or the lab: scripts/lab.sh
# -- bash bench/boot.sh -k stock -r 5) the initramfs is the 64-bit one with
# `tern.run=true`: its init loads the virtio modules and powers off, so
# "end" is the time to power-off. -r N runs the four N times, round-robin
# (so that a change in the host's load falls on all of them), and ends
# with the median of each milestone.
set -euo pipefail
cd "$(dirname "$0")/.."

kernel=small budget=300 build=build rounds=1
while getopts "k:t:r:b:" opt; do
  case $opt in
    k) kernel=$OPTARG ;; t) budget=$OPTARG ;; r) rounds=$OPTARG ;; b) build=$OPTARG ;; *) exit 2 ;;
  esac
done
cmdline="console=ttyS0 panic=-1"
case $kernel in
  small) kdir=$build/guest/small initrd=$build/guest/small/initramfs.cpio ;;
  stock)
    kdir=$build/guest initrd=$build/guest/initramfs.cpio.gz
    if [ ! -e /sys/module/kvm_pvm ]; then
      initrd=$build/guest/initramfs64.cpio.gz
      cmdline+=" tern.run=true"
    fi ;;
  *) echo "boot.sh: -k small|stock" >&2; exit 2 ;;
esac
for f in "$kdir/vmlinux" "$kdir/bzImage" "$initrd" "$build/tern"; do
  [ -e "$f" ] || { echo "boot.sh: missing $f (scripts/make-guest.sh, scripts/make-small-kernel.sh, scripts/build.sh)" >&2; exit 1; }
done
qemu=$(command -v qemu-system-x86_64 || true)

work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-boot.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Runs "$@" for at most $budget seconds; writes "<elapsed> <line>" per output
# line to $work/$name.log and prints the milestones.
measure() {
  local name=$1; shift
  local log=$work/$name.log start status
  # Bash's own clock ($EPOCHREALTIME): a date and bc per console line cost
  # enough (tens of ms each in the lab's outer VM) to back the guest's
  # console up and slow the boot being measured.
  start=$EPOCHREALTIME
  set +e
  # QEMU does not exit on a KVM internal error: it stops the VM and waits.
  # That line ends its run (the process is killed two seconds later).
  local watcher=
  if [[ $name == qemu-* ]]; then
    (until grep -q 'KVM internal error' "$log" 2>/dev/null; do sleep 1; done
     sleep 2; pkill -KILL -f -- "$qemu -M ${name#qemu-} ") &
    watcher=$!
  fi
  # A crashing peer is a result, not the end of the benchmark: its status is
  # recorded below.
  timeout --signal=KILL "$budget" "$@" </dev/null 2>&1 |
    while IFS= read -r line; do
      printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done >"$log"
  status=${PIPESTATUS[0]}
  [ -n "$watcher" ] && kill "$watcher" 2>/dev/null
  set -e
  local end first init
  end=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')
  # Absolute times to seconds from the start.
  awk -v a="$start" '{ t = $1; $1 = ""; printf "%.2f%s\n", t - a, $0 }' "$log" > "$log.rel" && mv "$log.rel" "$log"
  # The first line the kernel printed (tern's own lines start with "tern:").
  first=$( (grep -v -m1 -E '^[0-9.]+ (tern:|qemu-system)' "$log" || true) | awk '{print $1}')
  init=$( (grep -m1 'Run /init as init process' "$log" || true) | awk '{print $1}')
  local how="exit $status"
  [ "$status" -eq 137 ] && how="budget"
  grep -q 'KVM internal error' "$log" && how="KVM internal error (stopped)"
  printf '%-14s %10s %10s %10.2f  %s\n' "$name" "${first:--}" "${init:--}" "$end" "$how"
  echo "$name ${first:--} ${init:--} $end" >> "$work/results"
  if [ "$status" -ne 137 ] || [[ $how == KVM* ]]; then
    (grep -E 'tern: |internal error|KVM: entry failed|emulation failure|qemu-system|^[0-9.]+ Code=' "$log" || true) | tail -2 | cut -c1-160 |
      sed 's/^/                 /'
  fi
}

echo "kernel: $kernel ($kdir), budget ${budget}s per run, $(nproc) host CPUs, /dev/kvm: $( [ -e /sys/module/kvm_pvm ] && echo 'kvm_pvm (emulated)' || echo hardware)"
printf '%-14s %10s %10s %10s  %s\n' run first-line init end how
for round in $(seq 1 "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "-- round $round of $rounds"
  measure tern-vmlinux "$build/tern" --kernel "$kdir/vmlinux" --initramfs "$initrd" --cmdline "$cmdline" \
    --cpus boot=2 --memory size=512M --serial tty
  measure tern-bzImage "$build/tern" --kernel "$kdir/bzImage" --initramfs "$initrd" --cmdline "$cmdline" \
    --cpus boot=2 --memory size=512M --serial tty
  if [ -n "$qemu" ]; then
    measure qemu-microvm "$qemu" -M microvm -accel kvm -smp 2 -m 512M -nographic -nodefaults \
      -serial stdio -no-reboot -kernel "$kdir/bzImage" -initrd "$initrd" -append "$cmdline"
    measure qemu-q35 "$qemu" -M q35 -accel kvm -smp 2 -m 512M -nographic -nodefaults \
      -serial stdio -no-reboot -kernel "$kdir/bzImage" -initrd "$initrd" -append "$cmdline"
  else
    echo "qemu-system-x86_64 not installed (scripts/setup.sh installs it): QEMU rows skipped"
  fi
done

# median COLUMN NAME: the median of a milestone over the rounds ("-" when a
# round did not reach it).
median() {
  awk -v n="$2" -v c="$1" '$1 == n && $c != "-" { print $c }' "$work/results" | sort -n |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit }
      if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
if [ "$rounds" -gt 1 ]; then
  echo "-- median of $rounds rounds"
  for name in $(awk '{ print $1 }' "$work/results" | awk '!seen[$0]++'); do
    printf '%-14s %10s %10s %10s\n' "$name" "$(median 2 "$name")" "$(median 3 "$name")" "$(median 4 "$name")"
  done
fi
