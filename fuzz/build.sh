#!/usr/bin/env bash
# Builds libFuzzer targets (clang, ASan+UBSan; not part of the CMake build) into build-fuzz/.
#   fuzz/build.sh                 every target: fuzz_profile fuzz_llama2c fuzz_gguf fuzz_eval_data fuzz_cli
#   fuzz/build.sh profile cli     only those (names without the fuzz_ prefix)
#   fuzz/build.sh make_engine_corpus   the seed writer: build-fuzz/make_engine_corpus fuzz/corpus
# A target is rebuilt only when a source it may depend on is newer than its binary.
# Installs clang (Debian's package) when no clang++ is found. Env: OUT_DIR, CXX_FUZZ.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT_DIR:-$root/build-fuzz}
if [ -z "${CXX_FUZZ:-}" ] && ! command -v clang++ >/dev/null; then bash "$root/scripts/deps.sh" clang; fi
cxx=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}
all=(profile llama2c gguf eval_data cli)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
flags=(-g -O2 -std=c++17 -fsanitize=address,undefined -fno-sanitize-recover=undefined
       -I "$root/include" -I "$root/examples/engine" -I "$root/examples" -I /usr/include/eigen3)
mkdir -p "$out/engine-obj"

# Newest modification time (seconds) of the files a fuzz target can depend on.
newest=$(find "$root/include" "$root/examples/engine" "$root/examples/cli" "$here" -name '*.[ch]pp' \
           -printf '%T@\n' 2>/dev/null | sort -n | tail -1 | cut -d. -f1)
stale() { [ ! -f "$1" ] || [ "$(stat -c %Y "$1")" -lt "$newest" ]; }

engine_objs=()
build_engine() {
  [ ${#engine_objs[@]} -gt 0 ] && return 0
  local s o
  for s in "$root"/examples/engine/src/*.cpp "$root"/examples/cli/*.cpp; do
    [ -f "$s" ] || continue
    o="$out/engine-obj/$(basename "$s" .cpp).o"
    if stale "$o"; then "$cxx" "${flags[@]}" -fsanitize=fuzzer-no-link -c "$s" -o "$o"; fi
    engine_objs+=("$o")
  done
}

for t in "${targets[@]}"; do
  if [ "$t" = make_engine_corpus ]; then
    build_engine
    "$cxx" "${flags[@]}" "$here/make_engine_corpus.cpp" "${engine_objs[@]}" -o "$out/make_engine_corpus"
    echo "built $out/make_engine_corpus"
    continue
  fi
  src="$here/fuzz_$t.cpp"
  [ -f "$src" ] || { echo "fuzz/build.sh: no target '$t' (known: ${all[*]})" >&2; exit 2; }
  bin="$out/fuzz_$t"
  if [ "$t" = profile ]; then
    stale "$bin" && "$cxx" "${flags[@]}" -fsanitize=fuzzer "$src" -o "$bin"
  else
    build_engine
    stale "$bin" && "$cxx" "${flags[@]}" -fsanitize=fuzzer "$src" "${engine_objs[@]}" -o "$bin"
  fi
  echo "built $bin"
done
