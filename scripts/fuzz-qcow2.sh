#!/usr/bin/env bash
# Builds the QCOW2 libFuzzer target with clang (ASan + UBSan) and runs it for
# a given time on a seed corpus of qemu-img-made images (plain, dirty, and
# backing chains: images separated by "TERNBACK", see
# tests/fuzz/qcow2_fuzz_body.h):
#   scripts/fuzz-qcow2.sh [SECONDS]   (default 600)
# Findings (crash-*, leak-*, timeout-*) land in build-fuzz/findings/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
build=build-fuzz
# clang-16 (scripts/setup.sh installs it): clang 14 cannot compile
# libstdc++ 12's std::expected. libstdc++ still hides it from clang 16,
# whose __cpp_concepts says 201907 although what std::expected needs
# (conditionally trivial special members) works, so raise the macro.
if [ ! -f "$build/build.ninja" ]; then
  CC=clang-16 CXX=clang++-16 cmake -S . -B "$build" -G Ninja -DTERN_SANITIZE=fuzzer \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-Wno-builtin-macro-redefined -Wno-macro-redefined -D__cpp_concepts=202002L" >/dev/null
fi
cmake --build "$build" -j2 --target qcow2_fuzz
corpus=$PWD/$build/corpus
mkdir -p "$corpus" "$build/findings"
if [ -z "$(ls -A "$corpus")" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  i=0
  for opts in "cluster_size=512" "cluster_size=4096,refcount_bits=1" "compat=0.10" \
              "cluster_size=65536,refcount_bits=64" "cluster_size=2048,compression_type=zstd"; do
    qemu-img create -q -f qcow2 -o "$opts" "$tmp/s$i.qcow2" 1M
    qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -z 128k 4k' -c 'discard 256k 64k' \
      "$tmp/s$i.qcow2" >/dev/null
    cp "$tmp/s$i.qcow2" "$corpus/"
    i=$((i + 1))
  done
  head -c 262144 /dev/urandom >"$tmp/r.raw"
  qemu-img convert -c -O qcow2 -o cluster_size=4096 "$tmp/r.raw" "$corpus/compressed.qcow2"
  qemu-img convert -c -O qcow2 -o cluster_size=4096,compression_type=zstd "$tmp/s0.qcow2" \
    "$corpus/compressed-zstd.qcow2"
  # A dirty image, as a writer that never closed it leaves it: opening it
  # writable rebuilds the refcounts (every input also gets a dirty pass).
  cp "$tmp/s1.qcow2" "$corpus/dirty.qcow2"
  printf '\x01' | dd of="$corpus/dirty.qcow2" bs=1 seek=79 conv=notrunc status=none
  # Backing chains: file "0" names "1" (qcow2 over raw, qcow2 over qcow2),
  # and an image naming itself (a loop the engine must refuse).
  sep=TERNBACK
  (cd "$tmp" && qemu-img create -q -f raw 1 1M && qemu-io -f raw -c 'write -P 7 0 256k' 1 >/dev/null &&
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b 1 -F raw 0 &&
    qemu-io -f qcow2 -c 'write -P 9 4k 8k' 0 >/dev/null &&
    { cat 0; printf %s $sep; cat 1; } >"$corpus/chain-raw" &&
    mv 1 1.raw && cp s2.qcow2 1 && qemu-img rebase -u -f qcow2 -b 1 -F qcow2 0 &&
    { cat 0; printf %s $sep; cat 1; } >"$corpus/chain-qcow2" &&
    qemu-img rebase -u -f qcow2 -b 0 -F qcow2 0 && cp 0 "$corpus/chain-self")
fi
# UBSan reports are findings too (by default they are printed and fuzzing
# goes on, so no input would be kept).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
"$build/qcow2_fuzz" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$build/findings/" "$corpus" 2>&1 | grep -vE '^"|dictionary' | tail -25
