#!/usr/bin/env bash
# Disassembles a linked binary and checks which instructions depthkv's functions hold:
#   - the AVX2 path (depthkv::detail::avx2::*): no AVX-512 (zmm, ymm/xmm16-31, opmask k0-k7,
#     embedded broadcasts {1toN}), whatever the flags of the TUs linked into the binary;
#   - the portable path and the dispatch code (depthkv::detail::scalar::*, *_on, topk(...),
#     compact_rows, window_scores, isa detection): no AVX at all (x86-64 baseline: SSE2).
# Usage: check_objdump.sh BINARY. Prints what it checked; exit 1 on a violation, 0 (with a
# note) when objdump is missing.
set -u
bin=$1
if ! command -v objdump >/dev/null; then echo "check_objdump: objdump not found; skipped"; exit 0; fi
objdump -d --no-show-raw-insn -C "$bin" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0; next }
  fn == "" { next }
  {
    avx512 = ($0 ~ /%zmm|%[xy]mm(1[6-9]|2[0-9]|3[01])|%k[0-7]|\{1to[0-9]+\}/)
    avx = ($0 ~ /%ymm|%zmm|\tv[a-z]/)
    if (fn ~ /depthkv::detail::avx2::/) { n2[fn]++; if (avx512) bad2[fn]++ }
    if (fn ~ /depthkv::detail::scalar::|depthkv::detail::[a-z_]+_on\(|<depthkv::(topk|topk_rows|compact_rows|window_scores|detected_isa|active_isa|set_isa)[<(]|depthkv::detail::(detect_isa|initial_isa)/) {
      nb[fn]++; if (avx) badb[fn]++
    }
  }
  END {
    f2 = 0; fb = 0; v = 0
    for (f in n2) f2++
    for (f in nb) fb++
    for (f in bad2) { printf "AVX-512 in the AVX2 path: %d instructions in %s\n", bad2[f], f; v++ }
    for (f in badb) { printf "AVX in baseline code: %d instructions in %s\n", badb[f], f; v++ }
    printf "check_objdump: %d functions of the AVX2 path, %d of the portable path / dispatch checked; %d violations\n", f2, fb, v
    if (f2 == 0 || fb == 0) { print "check_objdump: FAILED: expected functions not found"; exit 1 }
    exit v > 0
  }'
