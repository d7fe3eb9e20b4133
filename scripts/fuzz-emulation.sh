#!/usr/bin/env bash
# Builds the emulation-fallback libFuzzer target with clang (ASan + UBSan)
# and runs it for a given time:
#   scripts/fuzz-emulation.sh [SECONDS]   (default 600)
# The input is random instruction bytes over random vCPU state and fake
# guest page tables (tests/fuzz/emulation_fuzz_body.h). Seeds:
# tests/fuzz/emulation_regressions/. Findings (crash-*, leak-*, timeout-*)
# land in build-fuzz/findings-emulation/; copy each into
# tests/fuzz/emulation_regressions/ once it is fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
build=build-fuzz
# See scripts/fuzz-qcow2.sh for why clang-16 and the macro.
if [ ! -f "$build/build.ninja" ]; then
  CC=clang-16 CXX=clang++-16 cmake -S . -B "$build" -G Ninja -DTERN_SANITIZE=fuzzer \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="-Wno-builtin-macro-redefined -Wno-macro-redefined -D__cpp_concepts=202002L" >/dev/null
fi
cmake --build "$build" -j2 --target emulation_fuzz
corpus=$build/corpus-emulation
findings=$build/findings-emulation
mkdir -p "$corpus" "$findings"
if [ -z "$(ls -A "$corpus")" ]; then
  cp tests/fuzz/emulation_regressions/* "$corpus/"
fi
# UBSan reports are findings too (by default they are printed and fuzzing
# goes on, so no input would be kept).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
"$build/emulation_fuzz" -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
  -artifact_prefix="$findings/" "$corpus" 2>&1 | grep -vE '^"|dictionary' | tail -25
