#!/usr/bin/env bash
# Quick-start command 2: installs missing packages, builds everything (tests, benchmarks,
# examples) out of tree in build/, and runs the whole test suite with ctest.
# Env: BUILD_DIR (default build), DEPTHKV_WERROR (default ON under CI, else OFF), JOBS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
WERROR=${DEPTHKV_WERROR:-$([ "${CI:-}" = true ] && echo ON || echo OFF)}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDEPTHKV_WERROR="$WERROR" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS"
