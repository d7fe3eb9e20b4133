#!/usr/bin/env bash
# Reliability on a real KVM: N consecutive boots of Debian's stock kernel
# under tern in the lab (scripts/lab.sh), each with 2 vCPUs, 512 MiB, a raw
# disk and a 64-bit user space that writes and reads patterns with O_DIRECT
# (tests/linux/guest/rw.sh) and powers off. A boot passes when tern exits 0
# and the guest kernel printed no warning. Prints one line per boot and the
# count, median and maximum wall time (seconds, tern start to exit).
#
#   bench/lab-boots.sh [-n N] [-l] [-T] [-q] [-m MEMORY]
#     -n N  boots (default 50)
#     -l    load: one busy loop per host CPU for the whole run
#     -T    trace: L1's KVM trace events (exits, injected exceptions and
#           interrupts) are recorded during each boot and the last of them
#           printed for a failing boot; the guest runs with nokaslr so that
#           the addresses read against its System.map
#     -q    QEMU instead of tern, with the same kernel, initramfs, command
#           line, vCPUs, memory and disk (-M q35 -accel kvm -cpu host,
#           virtio-blk-pci with cache=none): whether a failure belongs to the
#           VMM or to the lab's KVM
#     -m MEMORY  tern's --memory value (default size=512M), e.g.
#           size=512M,thp=off
#
# Needs scripts/build.sh and scripts/make-guest.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --inside ]; then
  n=$2
  trace=${3:-0}
  vmm=${4:-tern}
  memory=${5:-size=512M}
  b=build
  extra=
  if [ "$trace" = 1 ]; then
    tr=/sys/kernel/tracing
    [ -e "$tr/trace" ] || mount -t tracefs tracefs "$tr"
    echo 65536 > "$tr/buffer_size_kb"
    for e in kvm/kvm_exit kvm/kvm_inj_exception kvm/kvm_inj_virq kvm/kvm_apic_ipi kvm/kvm_nested_vmexit \
      kvm/kvm_nested_vmenter kvm/kvm_pio kvm/kvm_msr kvm/kvm_pv_tlb_flush kvm/kvm_unmap_hva_range \
      kvm/kvm_age_hva kvmmmu/kvm_mmu_zap_all_fast kvmmmu/kvm_tdp_mmu_spte_changed; do
      [ -e "$tr/events/$e/enable" ] && echo 1 > "$tr/events/$e/enable"
    done
    extra=" nokaslr"
  fi
  disk=/tmp/lab-boots.raw
  truncate -s 64M "$disk"
  pass=0
  times=()
  for i in $(seq 1 "$n"); do
    if [ "$trace" = 1 ]; then echo > "$tr/trace"; echo 1 > "$tr/tracing_on"; fi
    read -r t0 _ < /proc/uptime
    set +e
    cmdline="console=ttyS0 panic=-1 tern.run=/tests/rw.sh$extra"
    if [ "$vmm" = qemu ]; then
      # -no-reboot: a triple fault ends QEMU as it ends tern (status 0, so
      # the verdict rests on the guest's own "rw done").
      timeout -k 10 300 qemu-system-x86_64 -M q35 -accel kvm -cpu host -smp 2 -m 512M -nodefaults \
        -no-user-config -display none -no-reboot -serial file:/tmp/boot.log -kernel "$b/guest/bzImage" \
        -initrd "$b/guest/initramfs64.cpio.gz" -append "$cmdline" \
        -drive "file=$disk,format=raw,if=virtio,cache=none,aio=native" 2> /tmp/boot.err < /dev/null
    else
      "$b/tern" --kernel "$b/guest/bzImage" --initramfs "$b/guest/initramfs64.cpio.gz" \
        --cmdline "$cmdline" --cpus boot=2 --memory "$memory" \
        --disk "path=$disk" --serial file=/tmp/boot.log --timeout 300 2> /tmp/boot.err
    fi
    rc=$?
    set -e
    read -r t1 _ < /proc/uptime
    t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
    verdict=pass
    if [ "$rc" -ne 0 ]; then verdict="FAIL (exit $rc)"; fi
    if grep -q "WARNING:\|cut here" /tmp/boot.log; then verdict="FAIL (kernel warning)"; fi
    grep -q "tern-test: rw done" /tmp/boot.log || verdict="FAIL (no rw done)"
    if [ "$verdict" = pass ]; then
      pass=$((pass + 1))
    else
      echo "--- boot $i console tail ---"; tail -n 30 /tmp/boot.log; echo "--- tern ---"; cat /tmp/boot.err
      if [ "$trace" = 1 ]; then
        echo 0 > "$tr/tracing_on"
        echo "--- boot $i: L1's last KVM trace events ---"; tail -n 80 "$tr/trace"
        echo "--- boot $i: L1's last KVM trace events other than port I/O ---"
        grep -v -e kvm_pio -e EXIT_IOIO "$tr/trace" | tail -n 300
      fi
    fi
    times+=("$t")
    faults=
    if [ "$trace" = 1 ]; then
      # Nested page faults (KVM filling its page tables) and shadow entries
      # changed in this boot, when the trace buffer held them all.
      faults=", $(grep -c 'reason npf' "$tr/trace" || true) nested page faults, $(grep -c kvm_tdp_mmu_spte_changed "$tr/trace" || true) spte changes"
    fi
    printf 'lab-boots: boot %d: %s, %.1f s%s\n' "$i" "$verdict" "$t" "$faults"
  done
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  median=$(echo "$sorted" | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
  max=$(echo "$sorted" | tail -n1)
  printf 'lab-boots: %d/%d passed; median %.1f s, max %.1f s\n' "$pass" "$n" "$median" "$max"
  [ "$pass" -eq "$n" ]
  exit
fi

n=50
load=0
trace=0
vmm=tern
memory=size=512M
while getopts "n:lTqm:" o; do
  case "$o" in
    n) n=$OPTARG ;;
    l) load=1 ;;
    T) trace=1 ;;
    q) vmm=qemu ;;
    m) memory=$OPTARG ;;
    *) echo "usage: $0 [-n N] [-l] [-T] [-q] [-m MEMORY]" >&2; exit 2 ;;
  esac
done
hogs=()
stop_hogs() { for p in "${hogs[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_hogs EXIT
if [ "$load" = 1 ]; then
  for _ in $(seq 1 "$(nproc)"); do
    (while :; do :; done) &
    hogs+=($!)
  done
  echo "lab-boots: ${#hogs[@]} busy loops on the host" >&2
fi
bash scripts/lab.sh -t $((n * 400 + 600)) -s 400 -- bash bench/lab-boots.sh --inside "$n" "$trace" "$vmm" "$memory"
