#!/usr/bin/env bash
# Quick-start command 1: installs missing packages, builds the demo out of tree in build/,
# and runs it. Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target demo_prune >/dev/null
"$BUILD_DIR/examples/demo_prune" "$@"
