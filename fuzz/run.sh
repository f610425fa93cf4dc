#!/usr/bin/env bash
# Builds and runs one libFuzzer target for SECONDS, then prints its executions and coverage.
#   fuzz/run.sh TARGET SECONDS [libFuzzer flags...]     TARGET: profile llama2c gguf eval_data cli
#   e.g. fuzz/run.sh cli 1500 -max_len=512
#
# The seed corpus fuzz/corpus/TARGET is copied to build-fuzz/work-TARGET (kept between runs, so
# a long campaign can run in parts); new inputs go there. With KEEP_CORPUS=1 the inputs of the
# work corpus that add coverage are merged (-merge=1) into fuzz/corpus/TARGET (kept small enough
# to commit; existing seeds stay).
# Every run appends one line to fuzz/executions.tsv: date, target, seconds, executions, coverage
# (edges "cov" and features "ft"), corpus size, result, CPU; sum it for a campaign's total.
# Exit status: 0 when no crash, leak or sanitizer report was found, else libFuzzer's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT_DIR:-$root/build-fuzz}
if [ $# -lt 2 ]; then
  echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
target=$1 seconds=$2
shift 2
case "$seconds" in ''|*[!0-9]*) echo "fuzz/run.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
bash "$here/build.sh" "$target" >/dev/null
# Allocation stacks are the costliest part of ASan's bookkeeping (a quarter of the time in the
# command-line target); reports still name the faulting access and its stack.
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0}
seeds="$here/corpus/$target" work="$out/work-$target"
mkdir -p "$seeds" "$work" "$out/artifacts-$target"
cp -n "$seeds"/* "$work"/ 2>/dev/null || true
log="$out/run-$target.log"
set +e
"$out/fuzz_$target" "$work" -max_total_time="$seconds" -print_final_stats=1 -timeout=25 -rss_limit_mb=4096 \
  -artifact_prefix="$out/artifacts-$target/" "$@" >"$log" 2>&1
rc=$?
set -e
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
last=$(grep -E '^#[0-9]+' "$log" | tail -1)
cov=$(echo "$last" | grep -o 'cov: [0-9]*' | grep -o '[0-9]*' || echo 0)
ft=$(echo "$last" | grep -o 'ft: [0-9]*' | grep -o '[0-9]*' || echo 0)
result=ok
[ $rc -ne 0 ] && result="FAILED(rc=$rc)"
if [ "${KEEP_CORPUS:-0}" = 1 ] && [ $rc -eq 0 ]; then
  # Adds to the seeds only the work-corpus inputs that reach coverage the seeds do not.
  "$out/fuzz_$target" -merge=1 "$seeds" "$work" >"$out/merge-$target.log" 2>&1
fi
files=$(ls "$seeds" | wc -l)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)" "$target" "$seconds" "$execs" "$cov" "$ft" \
  "$files" "$result" "$cpu" >>"$here/executions.tsv"
total=$(awk -F'\t' -v t="$target" '$2 == t && $8 == "ok" { s += $4 } END { print s + 0 }' "$here/executions.tsv")
echo "fuzz_$target: $execs executions in $seconds s, cov $cov, ft $ft; seed corpus $files files;" \
     "all recorded runs: $total executions ($result; log $log)"
exit $rc
