#!/bin/sh
# Builds the engine loader fuzzers (not part of the CMake build). Needs clang with libFuzzer.
#   fuzz/build_engine.sh          -> build-fuzz/fuzz_llama2c, build-fuzz/fuzz_gguf, build-fuzz/make_engine_corpus
#   mkdir -p /tmp/c1 /tmp/c2   # scratch corpora: libFuzzer writes new inputs into the FIRST directory
#   build-fuzz/fuzz_llama2c /tmp/c1 fuzz/corpus/llama2c -max_total_time=120
#   build-fuzz/fuzz_gguf /tmp/c2 fuzz/corpus/gguf -max_total_time=120
# Regenerate the seed corpora: build-fuzz/make_engine_corpus fuzz/corpus
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT_DIR:-$root/build-fuzz}
cxx=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}
mkdir -p "$out/engine-obj"
flags="-g -O1 -std=c++17 -fsanitize=address,undefined -fno-sanitize-recover=undefined
  -I $root/include -I $root/examples/engine -I /usr/include/eigen3"
objs=""
for src in "$root"/examples/engine/src/*.cpp; do
  obj="$out/engine-obj/$(basename "$src" .cpp).o"
  "$cxx" $flags -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  objs="$objs $obj"
done
for t in fuzz_llama2c fuzz_gguf; do
  "$cxx" $flags -fsanitize=fuzzer "$here/$t.cpp" $objs -o "$out/$t"
  echo "built $out/$t"
done
"$cxx" $flags "$here/make_engine_corpus.cpp" $objs -o "$out/make_engine_corpus"
echo "built $out/make_engine_corpus"
