#!/usr/bin/env bash
# Configures and builds Tern into build/ (or $TERN_BUILD_DIR) with Ninja.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${TERN_BUILD_DIR:-build}"
cmake -S . -B "$build_dir" -G Ninja -DTERN_WERROR=ON "$@"
cmake --build "$build_dir"
