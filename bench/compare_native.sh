#!/usr/bin/env bash
# Compares a build with no -m flags (kernels dispatched at run time) with a -march=native build
# on this machine: the same benchmarks of bench_select and bench_score, the two binaries run
# alternately (ROUNDS rounds, 3 repetitions each), median CPU time per benchmark, and the ratio
# generic / native (1.00 = as fast). Builds build-generic/ and build-native/ (bench targets only)
# unless they exist. Usage: bench/compare_native.sh [ROUNDS]   (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
for cfg in generic native; do
  native=$([ "$cfg" = native ] && echo ON || echo OFF)
  cmake -S . -B "build-$cfg" -DCMAKE_BUILD_TYPE=Release -DDEPTHKV_NATIVE="$native" -DDEPTHKV_BUILD_TESTS=OFF \
    -DDEPTHKV_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "build-$cfg" -j "$(nproc)" --target bench_select bench_score >/dev/null
done
select_filter='BM_topk_depthkv/n:32768/k_permille:100/|BM_compact_depthkv/row_bytes:256/MiB:4/kept_pct:(10|50)/'
score_filter='BM_window<(float|f16)>/isa:9/w:32/d:128/n:8192/g:4'
out=$(mktemp -d)
for r in $(seq "$rounds"); do
  for cfg in generic native; do
    for b in select score; do
      filter=$([ $b = select ] && echo "$select_filter" || echo "$score_filter")
      "build-$cfg/bench/bench_$b" --benchmark_filter="$filter" --benchmark_repetitions=3 \
        --benchmark_report_aggregates_only=true --benchmark_format=csv 2>/dev/null |
        grep '_median"' >>"$out/$cfg.csv"
    done
  done
done
isa=$(build-generic/bench/bench_select --benchmark_filter='BM_topk_depthkv/n:4096/k_permille:50/' \
  --benchmark_min_time=0.01 2>&1 | grep -o 'depthkv_isa: [a-z0-9]*' | head -1)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') (family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), model $(grep -m1 '^model[[:space:]]*:' /proc/cpuinfo | cut -d: -f2 | tr -d ' ')); generic build: $isa"
printf '%-64s %12s %12s %8s\n' benchmark "generic(us)" "native(us)" ratio
# Per benchmark: the median over rounds of the per-round medians (csv column 4 = cpu_time).
awk -F, 'FNR == 1 { f++ } { n = $1; gsub(/"/, "", n); sub(/_median$/, "", n); t[f, n, ++c[f, n]] = $4; names[n] = 1 }
  function med(f, n,   k, i, j, v, tmp) { k = c[f, n]; for (i = 1; i <= k; i++) v[i] = t[f, n, i];
    for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { tmp = v[i]; v[i] = v[j]; v[j] = tmp }
    return k % 2 ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2 }
  END { for (n in names) { g = med(1, n); m = med(2, n); printf "%-64s %12.1f %12.1f %8.2f\n", n, g, m, g / m } }' \
  "$out/generic.csv" "$out/native.csv" | sort
rm -rf "$out"
