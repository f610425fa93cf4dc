#!/bin/sh
# Builds the libFuzzer targets (not part of the CMake build). Needs clang with libFuzzer.
#   fuzz/build.sh                       -> build-fuzz/fuzz_profile
#   build-fuzz/fuzz_profile fuzz/corpus/profile -max_total_time=180
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${OUT_DIR:-$root/build-fuzz}
cxx=${CXX_FUZZ:-$(command -v clang++ || command -v clang++-14)}
mkdir -p "$out"
"$cxx" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c++17 \
  -I "$root/include" -I /usr/include/eigen3 "$here/fuzz_profile.cpp" -o "$out/fuzz_profile"
echo "built $out/fuzz_profile"
