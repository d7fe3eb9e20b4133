#!/usr/bin/env bash
# Builds the virtio-blk request-path libFuzzer target with clang (ASan +
# UBSan) and runs it for a given time:
#   scripts/fuzz-virtio-blk.sh [SECONDS]   (default 600)
# The input plays a hostile guest driver (tests/fuzz/virtio_blk_fuzz_body.h).
# Seeds: tests/fuzz/virtio_blk_regressions/ plus a few generated inputs,
# one per backend. Findings (crash-*, leak-*, timeout-*) land in
# build-fuzz/findings-virtio-blk/; copy each into
# tests/fuzz/virtio_blk_regressions/ once it is fixed.
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
cmake --build "$build" -j2 --target virtio_blk_fuzz
corpus=$build/corpus-virtio-blk
findings=$build/findings-virtio-blk
mkdir -p "$corpus" "$findings"
if [ -z "$(ls -A "$corpus")" ]; then
  cp tests/fuzz/virtio_blk_regressions/* "$corpus/"
  # The first input byte picks the backend: one seed each, reproducible.
  python3 - "$corpus" <<'PY'
import random, sys
r = random.Random(12)
for backend in range(8):
    for k, size in enumerate((64, 512, 4096)):
        data = bytes([backend]) + bytes(r.randrange(256) for _ in range(size))
        open(f"{sys.argv[1]}/seed-{backend}-{k}", "wb").write(data)
PY
fi
# -timeout: one input runs at most 8 batches of 48 MiB in all; a request
# never answered is reported by the harness itself after 20 s.
# UBSan reports are findings too (by default they are printed and fuzzing
# goes on, so no input would be kept).
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer || true)}
"$build/virtio_blk_fuzz" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=60 \
  -max_len=16384 -print_final_stats=1 -artifact_prefix="$findings/" "$corpus" 2>&1 |
  grep -vE '^tern: virtio-blk:|^"|dictionary' | tail -40
