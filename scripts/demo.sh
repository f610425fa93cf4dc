#!/usr/bin/env bash
# Quick-start command 1: installs missing packages, builds the demo out of tree in build/,
# and runs it. Extra arguments go to the demo (the evaluation harness, examples/eval.cpp).
#
# The demo: on the shipped model (models/recall-6l), prefill each long test sequence, prune the
# KV cache at the end of the prefill to 10/20/40/60% with SnapKV scoring, the per-layer budgets
# coming from four allocators (uniform, pyramid, sensitivity-proportional = DepthKV,
# curve-optimal), then score the continuation: KL to the full cache and retrieval accuracy.
# The ablation profile the two last allocators need is the shipped one
# (models/recall-6l/profile_snapkv.csv), or measured on the calibration set if it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh python3-matplotlib
BUILD_DIR=${BUILD_DIR:-build}
MODEL_DIR=${MODEL_DIR:-models/recall-6l}
OUT=${OUT:-out/demo}
start=$(date +%s)
echo "depthkv demo: building the evaluation harness in $BUILD_DIR/ ..." >&2
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" --target eval >/dev/null
if [ ! -f "$MODEL_DIR/model.bin" ]; then
  echo "depthkv demo: no model at $MODEL_DIR/model.bin (train one: /usr/bin/python3 tools/train.py --out $MODEL_DIR)" >&2
  exit 1
fi
profile_args=(--profile-dir "$OUT")
if [ -f "$MODEL_DIR/profile_snapkv.csv" ]; then profile_args=(--profile "$MODEL_DIR/profile_snapkv.csv"); fi
echo "depthkv demo: built in $(( $(date +%s) - start )) s; evaluating (model $MODEL_DIR) ..." >&2
"$BUILD_DIR/examples/eval" --model "$MODEL_DIR/model.bin" --calib "$MODEL_DIR/calib.txt" --test "$MODEL_DIR/test.txt" \
  --policies snapkv --allocators uniform,pyramid,proportional,curve --budgets 0.1,0.2,0.4,0.6 \
  "${profile_args[@]}" --out "$OUT" "$@"
# Plots are optional: Debian's matplotlib (python3-matplotlib) for the system python.
PY=python3
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; fi
if "$PY" -c "import matplotlib" 2>/dev/null; then
  "$PY" tools/plot_eval.py "$OUT" --at 0.2 && echo "plots: $OUT/quality.png, $OUT/allocations.png"
else
  echo "note: matplotlib is not available; no plots (apt-get install python3-matplotlib, then: python3 tools/plot_eval.py $OUT)"
fi
echo "depthkv demo: done in $(( $(date +%s) - start )) s; CSV of every cell: $OUT/results.csv"
