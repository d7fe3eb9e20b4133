#!/usr/bin/env bash
# Sets up the machine, builds Tern, and runs every test (unit, block, KVM
# integration, Linux boot). This is the command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 1200
