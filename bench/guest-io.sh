#!/usr/bin/env bash
# The same guest, the same disk, under tern and under QEMU, in one run: the
# freestanding test guest (tests/guest/, `bench` mode: only its throughput
# run) does 4 KiB requests, 8 and 32 in flight per queue, on 1 and 2
# queues, reads and writes, on a raw and a qcow2 image. tern starts it at its ELF entry;
# QEMU (-M q35 -accel kvm, virtio-blk-pci disable-legacy=on, MSI-X) through
# its PVH note. Both: 1 vCPU, 128 MiB, cache=none/direct=on, aio=native.
#
#   bench/guest-io.sh [-n REQUESTS] [-r ROUNDS] [-b BUILD_DIR]
#
# The time of a run is from the guest's "throughput start" line to its
# "requests" line on the serial port (host clock), so firmware and boot do
# not count. Per request: the guest's kicks (notify writes, one MMIO exit
# each) and MSI-X interrupts, and KVM's own exit count for the VM (debugfs
# /sys/kernel/debug/kvm/PID-FD/exits, read at those two lines; "-" when
# debugfs is not readable). Rows: median requests/s over the rounds, tern's
# over QEMU's (above 1: tern is faster), exits per request on each side.
set -euo pipefail
cd "$(dirname "$0")/.."

reqs=8192 rounds=5 build=build
while getopts "n:r:b:" opt; do
  case $opt in
    n) reqs=$OPTARG ;; r) rounds=$OPTARG ;; b) build=$OPTARG ;; *) exit 2 ;;
  esac
done
guest=$build/tests/guest/tern-test-guest
tern=$build/tern
for f in "$guest" "$tern"; do [ -x "$f" ] || { echo "guest-io.sh: $f is missing (ninja -C $build tern tern-test-guest)" >&2; exit 1; }; done
command -v qemu-system-x86_64 >/dev/null || { echo "guest-io.sh: qemu-system-x86_64 is missing (scripts/setup.sh)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-guest-io.XXXXXX")
trap 'rm -rf "$work"' EXIT

vm_exits() {  # PID: KVM exits of that process's VMs so far, or "-"
  local total=0 f v found=0
  for f in /sys/kernel/debug/kvm/"$1"-*/exits; do
    v=$(cat "$f" 2>/dev/null) || continue  # kernel lockdown refuses it on some hosts
    total=$((total + v)); found=1
  done
  if [ $found = 1 ]; then echo "$total"; else echo -; fi
}

# run_vm VMM FORMAT QUEUES OP DEPTH: one boot; prints "seconds kicks irqs exits"
# for the throughput run, or "fail" with the log on stderr.
run_vm() {
  local vmm=$1 fmt=$2 queues=$3 op=$4 depth=$5 img=$work/disk.$2
  local words="bench reqs=$reqs depth=$depth"
  [ "$op" = write ] && words="$words write"
  local cmd
  if [ "$vmm" = tern ]; then
    cmd=("$tern" --kernel "$guest" --memory size=128M --cmdline "$words"
         --disk "path=$img,image_type=$fmt,num_queues=$queues,direct=on,aio=native")
  else
    cmd=(qemu-system-x86_64 -M q35,accel=kvm -smp 1 -m 128 -display none -monitor none -no-reboot
         -serial stdio -kernel "$guest" -append "$words"
         -drive "file=$img,if=none,id=d0,format=$fmt,cache=none,aio=native"
         -device "virtio-blk-pci,drive=d0,disable-legacy=on,num-queues=$queues")
  fi
  local pidfile=$work/pid log=$work/log
  rm -f "$pidfile"
  # The VMM's pid (for its debugfs directory) from a subshell that becomes it.
  ( echo "$BASHPID" >"$pidfile"; exec "${cmd[@]}" 2>&1 ) |
    while IFS= read -r line; do
      case $line in
        "throughput start"*) echo "T0 $EPOCHREALTIME $(vm_exits "$(cat "$pidfile")")" ;;
        requests*) echo "T1 $EPOCHREALTIME $(vm_exits "$(cat "$pidfile")") $line" ;;
      esac
      echo "L $line"
    done >"$log"
  awk -v reqs="$reqs" '
    $1 == "T0" { t0 = $2; e0 = $3 }
    $1 == "T1" { t1 = $2; e1 = $3
                 for (i = 4; i < NF; ++i) { if ($i == "run_kicks") k = $(i + 1); if ($i == "run_irqs") q = $(i + 1) } }
    END {
      if (t0 == "" || t1 == "") { print "fail"; exit }
      ex = (e0 == "-" || e1 == "-") ? "-" : sprintf("%.2f", (e1 - e0) / reqs)
      printf "%.4f %.2f %.2f %s\n", t1 - t0, k / reqs, q / reqs, ex
    }' "$log" | tee "$work/result"
  if [ "$(cat "$work/result")" = fail ]; then sed 's/^L //' "$log" | tail -20 >&2; fi
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "guest-io: $reqs requests of 4 KiB per run, median of $rounds rounds; depth = in flight per queue"
echo "tern: $tern; qemu: $(qemu-system-x86_64 --version | head -1); $(uptime)"
printf '| %-6s | %-5s | %5s | %6s | %10s | %10s | %6s | %-17s | %-17s |\n' \
  format op depth queues "tern req/s" "qemu req/s" ratio "tern kick/irq/exit" "qemu kick/irq/exit"
printf '|--------|-------|-------|--------|------------|------------|--------|-------------------|-------------------|\n'
for fmt in raw qcow2; do
  rm -f "$work/disk.$fmt"
  qemu-img create -q -f "$fmt" "$work/disk.$fmt" 64M
  # Every block the guest touches (sectors 0-511) allocated.
  qemu-io -f "$fmt" -c "write -P 0x5a 0 1M" "$work/disk.$fmt" >/dev/null
  for op in read write; do
   for depth in 8 32; do
    for queues in 1 2; do
      declare -A rps=() per=()
      for vmm in tern qemu; do
        rates=()
        for _ in $(seq "$rounds"); do
          out=$(run_vm "$vmm" "$fmt" "$queues" "$op" "$depth") || true
          [ "$out" = fail ] || [ -z "$out" ] && { echo "guest-io.sh: $vmm $fmt $op depth $depth q$queues failed" >&2; continue; }
          read -r secs kicks irqs exits <<<"$out"
          rates+=("$(awk -v n="$reqs" -v s="$secs" 'BEGIN {printf "%.0f", n / s}')")
          per[$vmm]="$kicks/$irqs/$exits"
        done
        rps[$vmm]=$(printf '%s\n' "${rates[@]:-0}" | median)
      done
      printf '| %-6s | %-5s | %5s | %6s | %10s | %10s | %6s | %-17s | %-17s |\n' "$fmt" "$op" "$depth" "$queues" \
        "${rps[tern]}" "${rps[qemu]}" \
        "$(awk -v a="${rps[tern]}" -v b="${rps[qemu]}" 'BEGIN {if (b > 0) printf "%.2fx", a / b; else print "-"}')" \
        "${per[tern]:--}" "${per[qemu]:--}"
      unset rps per
    done
   done
  done
done
echo "$(uptime)"
