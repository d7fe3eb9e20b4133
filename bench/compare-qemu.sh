#!/usr/bin/env bash
# Runs Tern's bench and `qemu-img bench` with the same arguments on the same
# kind of image, alternating, and prints a table with the speed ratio
# (qemu-img time / Tern time: above 1 means Tern is faster).
#
#   bench/compare-qemu.sh [-c COUNT] [-d DEPTH] [-s SIZE] [-r ROUNDS] [-b BUILD_DIR]
#
# Workloads (-t none -i native, i.e. O_DIRECT + Linux AIO):
#   raw-write    writes into a raw image
#   raw-read     reads of a raw image whose blocks are all written
#   write-fresh  writes into a freshly created qcow2 image
#   read-alloc   reads of a qcow2 image whose clusters are all allocated
# Each round recreates the image for each program; the table shows the
# median time over the rounds. TERN_BENCH overrides Tern's bench command.
set -euo pipefail

count=50000 depth=32 size=4096 rounds=3
build=build
while getopts "c:d:s:r:b:" opt; do
  case $opt in
    c) count=$OPTARG ;; d) depth=$OPTARG ;; s) size=$OPTARG ;;
    r) rounds=$OPTARG ;; b) build=$OPTARG ;; *) exit 2 ;;
  esac
done

if [ -n "${TERN_BENCH:-}" ]; then
  read -r -a tern_bench <<<"$TERN_BENCH"
else
  tern_bench=("$build/tern-img" bench)
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
image_size=$(( (count * size / 1048576 + 64) ))M

seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run_workload() {  # name format prepare-command bench-flags...
  local name=$1 fmt=$2 prepare=$3; shift 3
  local q=() t=()
  for _ in $(seq "$rounds"); do
    for prog in qemu tern; do
      rm -f "$work/img.qcow2"
      qemu-img create -q -f "$fmt" "$work/img.qcow2" "$image_size"
      [ -n "$prepare" ] && eval "$prepare"
      sync
      if [ $prog = qemu ]; then
        q+=("$(qemu-img bench -f "$fmt" -t none -i native "$@" "$work/img.qcow2" | seconds)")
      else
        t+=("$("${tern_bench[@]}" -f "$fmt" -t none -i native "$@" "$work/img.qcow2" | seconds)")
      fi
    done
  done
  local qm tm
  qm=$(printf '%s\n' "${q[@]}" | median)
  tm=$(printf '%s\n' "${t[@]}" | median)
  printf '| %-12s | %10s | %10s | %6s |\n' "$name" "$qm" "$tm" \
    "$(awk -v a="$qm" -v b="$tm" 'BEGIN {printf "%.2fx", a / b}')"
}

common=(-d "$depth" -c "$count" -s "$size" -o 0 -S "$size")
echo "$count requests of $size bytes, depth $depth, -t none -i native, median of $rounds rounds"
echo "tern: ${tern_bench[*]}"
printf '| %-12s | %10s | %10s | %6s |\n' workload "qemu-img s" "tern s" ratio
printf '|--------------|------------|------------|--------|\n'
run_workload raw-write raw "" -w "${common[@]}"
run_workload raw-read raw \
  "qemu-io -f raw -c 'write -P 0x5a 0 $((count * size))' \"\$work/img.qcow2\" >/dev/null" \
  "${common[@]}"
run_workload write-fresh qcow2 "" -w "${common[@]}"
run_workload read-alloc qcow2 \
  "qemu-io -f qcow2 -c 'write -P 0x5a 0 $((count * size))' \"\$work/img.qcow2\" >/dev/null" \
  "${common[@]}"
