#!/usr/bin/env bash
# Block-layer benchmarks side by side, one run, three tables (each figure
# the median time over the rounds; a ratio above 1 means Tern is faster, or
# for queues, that two queues are faster than one):
#
#   bench/compare-qemu.sh [-c COUNT] [-d DEPTH] [-s SIZE] [-r ROUNDS] [-b BUILD_DIR]
#
# 1. tern-img bench against qemu-img bench, same arguments (-t none
#    -i native: O_DIRECT + Linux AIO), one queue:
#      raw-write    writes into a raw image
#      raw-read     reads of a raw image whose blocks are all written
#      write-fresh  writes into a freshly created qcow2 image
#      read-alloc   reads of a qcow2 image whose clusters are all allocated
#      write-alloc  writes into a qcow2 image whose clusters are all allocated
# 2. tern-img bench -q 1 against -q 2 (two IoContexts on two threads on the
#    one open image, DEPTH in flight on each, COUNT requests in all):
#    read-alloc and write-alloc.
# 3. raw against fio (libaio, O_DIRECT, same depth, size and count, one
#    job): the host's limit.
# Programs alternate within a round; images that a run changes are made
# afresh for each run. TERN_BENCH overrides Tern's bench command. Prints
# `uptime` first: the ratios, measured side by side, are what count on a
# loaded machine.
set -euo pipefail

count=50000 depth=32 size=4096 rounds=5
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
# Without fio (a machine that only borrows the programs) the third table is
# left out, and said so; scripts/setup.sh installs it.
have_fio=1
command -v fio >/dev/null || have_fio=0

work=$(mktemp -d "${TMPDIR:-/var/tmp}/tern-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
img=$work/img
image_size=$(( (count * size / 1048576 + 64) ))M
bytes=$((count * size))

seconds() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }

# make_image FORMAT FILL: a new image; FILL=1 writes every block first.
make_image() {
  rm -f "$img"
  qemu-img create -q -f "$1" "$img" "$image_size"
  if [ "$2" = 1 ]; then
    qemu-io -f "$1" -c "write -P 0x5a 0 $bytes" "$img" >/dev/null
  fi
  sync
}

qemu_run() { qemu-img bench -f "$fmt" -t none -i native "$@" "$img" | seconds; }
tern_run() { "${tern_bench[@]}" -f "$fmt" -t none -i native "$@" "$img" | seconds; }
fio_run() {  # read|write: the runtime in seconds from fio's terse output
  local rw=$1 field=9
  [ "$rw" = write ] && field=50
  fio --name=bench --filename="$img" --ioengine=libaio --direct=1 --iodepth="$depth" --bs="$size" \
    --rw="$rw" --size="$bytes" --fallocate=none --minimal |
    awk -F';' -v f="$field" '{printf "%.3f\n", $f / 1000}'
}

# compare NAME FORMAT FILL FRESH CMD_A CMD_B: runs the shell commands A and
# B alternately for the rounds (a new image before each when FRESH=1, else
# one per round), prints a row: median A, median B, A/B.
compare() {
  local name=$1 fmt=$2 fill=$3 fresh=$4 cmd_a=$5 cmd_b=$6
  local a=() b=()
  for _ in $(seq "$rounds"); do
    make_image "$fmt" "$fill"
    a+=("$(eval "$cmd_a")")
    [ "$fresh" = 1 ] && make_image "$fmt" "$fill"
    b+=("$(eval "$cmd_b")")
  done
  local am bm
  am=$(printf '%s\n' "${a[@]}" | median)
  bm=$(printf '%s\n' "${b[@]}" | median)
  printf '| %-12s | %10s | %10s | %6s |\n' "$name" "$am" "$bm" "$(ratio "$am" "$bm")"
}

header() {
  printf '| %-12s | %10s | %10s | %6s |\n' workload "$1" "$2" ratio
  printf '|--------------|------------|------------|--------|\n'
}

common="-d $depth -c $count -s $size -o 0 -S $size"
echo "$count requests of $size bytes, depth $depth, -t none -i native, median of $rounds rounds"
echo "tern: ${tern_bench[*]}; $(uptime)"
echo
echo "Tern against qemu-img (1 queue)"
header "qemu-img s" "tern s"
fmt=raw;   compare raw-write raw 0 1 "qemu_run -w $common" "tern_run -w $common"
fmt=raw;   compare raw-read raw 1 0 "qemu_run $common" "tern_run $common"
fmt=qcow2; compare write-fresh qcow2 0 1 "qemu_run -w $common" "tern_run -w $common"
fmt=qcow2; compare read-alloc qcow2 1 0 "qemu_run $common" "tern_run $common"
fmt=qcow2; compare write-alloc qcow2 1 0 "qemu_run -w $common" "tern_run -w $common"
echo
echo "Tern, 1 queue against 2 queues (qcow2, allocated clusters, depth $depth on each queue)"
header "1 queue s" "2 queues s"
fmt=qcow2; compare read-alloc qcow2 1 0 "tern_run -q 1 $common" "tern_run -q 2 $common"
fmt=qcow2; compare write-alloc qcow2 1 0 "tern_run -w -q 1 $common" "tern_run -w -q 2 $common"
echo
echo "Tern against fio (raw, libaio, O_DIRECT, 1 job)"
if [ "$have_fio" = 1 ]; then
  header "fio s" "tern s"
  fmt=raw; compare raw-read raw 1 0 "fio_run read" "tern_run $common"
  fmt=raw; compare raw-write raw 0 1 "fio_run write" "tern_run -w $common"
else
  echo "(left out: fio is not installed here)"
fi
echo "$(uptime)"
