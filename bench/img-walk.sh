#!/usr/bin/env bash
# The verbs that walk an image's allocation (map, compare, measure, rebase)
# side by side with qemu-img, one run: each figure the median wall time over
# the rounds, the ratio qemu-img time / tern time (above 1: tern faster).
#
#   bench/img-walk.sh [-s SIZE] [-R REBASE_SIZE] [-r ROUNDS] [-b BUILD_DIR]
#
# Images (SIZE virtual, 1T by default, 64 KiB clusters): empty.qcow2 (nothing
# allocated), some.qcow2 (4 MiB of data at its start, middle and end) and
# top.qcow2 (an empty overlay of some.qcow2). Their cost should follow the
# allocated data, not the virtual size. Rebase runs on the same images made
# REBASE_SIZE large (16G by default): qemu-img rebase reads every range the
# overlay leaves to its backing files, so it takes minutes on 1 TiB. Prints
# `uptime` first: on a loaded machine only the ratios, measured side by
# side, mean anything.
set -euo pipefail

size=1T rebase_size=16G rounds=5 build=build
while getopts "s:R:r:b:" opt; do
  case $opt in
    s) size=$OPTARG ;; R) rebase_size=$OPTARG ;; r) rounds=$OPTARG ;; b) build=$OPTARG ;; *) exit 2 ;;
  esac
done
tern_img=$(realpath "$build/tern-img")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# empty.qcow2, some.qcow2 and top.qcow2 of $2 bytes in directory $1.
make_images() {
  mkdir -p "$1"
  (
    cd "$1"
    qemu-img create -q -f qcow2 empty.qcow2 "$2"
    qemu-img create -q -f qcow2 some.qcow2 "$2"
    local bytes
    bytes=$(qemu-img info --output json some.qcow2 | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    qemu-io -c "write -P 1 0 4M" -c "write -P 2 $((bytes / 2)) 4M" -c "write -P 3 $((bytes - 4194304)) 4M" \
      some.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b some.qcow2 -F qcow2 top.qcow2
  )
}
make_images big "$size"
make_images small "$rebase_size"

# Seconds one command takes (its output discarded; its status ignored:
# compare exits 1 on a difference).
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || true
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

uptime
printf '%-34s %10s %10s %8s\n' "workload ($size)" "qemu-img s" "tern s" "ratio"
run() {
  local name=$1 setup=$2
  shift 2
  local q=() t=()
  for ((i = 0; i < rounds; i++)); do
    eval "$setup"
    q+=("$(seconds qemu-img "$@")")
    eval "$setup"
    t+=("$(seconds "$tern_img" "$@")")
  done
  local qm tm
  qm=$(printf '%s\n' "${q[@]}" | median)
  tm=$(printf '%s\n' "${t[@]}" | median)
  printf '%-34s %10.3f %10.3f %7.2fx\n' "$name" "$qm" "$tm" "$(echo "$qm / $tm" | bc -l)"
}
cd big
run "map, empty" ":" map --output json empty.qcow2
run "map, data at 3 places" ":" map --output json some.qcow2
run "map, overlay over it" ":" map top.qcow2
run "compare, empty vs empty" ":" compare empty.qcow2 empty.qcow2
run "compare, overlay vs its base" ":" compare top.qcow2 some.qcow2
run "measure, data at 3 places" ":" measure -O qcow2 some.qcow2
cd ../small
printf '%-34s\n' "($rebase_size)"
run "rebase -b '' (copies 12 MiB up)" "cp top.qcow2 r.qcow2" rebase -b '' r.qcow2
run "rebase -b empty (copies 12 MiB up)" "cp top.qcow2 r.qcow2" rebase -b empty.qcow2 -F qcow2 r.qcow2
