#!/usr/bin/env bash
# Consumer test: a program built with nothing but `pkg-config --cflags depthkv`, against the
# depthkv installed into a scratch prefix (the consumer_install fixture).
# Usage: run.sh PKG_CONFIG_DIR CXX EXPECTED_VERSION WORK_DIR
# Exit 77 (ctest SKIP_RETURN_CODE) when pkg-config, or Eigen's eigen3.pc, is not available.
set -euo pipefail
pc_dir=$1 cxx=$2 version=$3 work=$4
src=$(cd "${BASH_SOURCE[0]%/*}/../find_package" && pwd)/main.cpp  # the find_package consumer's

if ! command -v pkg-config >/dev/null; then
  echo "SKIP: pkg-config not found (scripts/deps.sh installs it)"; exit 77
fi
if ! pkg-config --exists eigen3; then
  echo "SKIP: pkg-config does not know eigen3 (libeigen3-dev ships eigen3.pc)"; exit 77
fi
export PKG_CONFIG_PATH=$pc_dir
if [ ! -f "$pc_dir/depthkv.pc" ]; then echo "FAILED: no $pc_dir/depthkv.pc"; exit 1; fi

got=$(pkg-config --modversion depthkv)
if [ "$got" != "$version" ]; then
  echo "FAILED: depthkv.pc says version $got, the project is $version"; exit 1
fi
pkg-config --exists "depthkv >= $version" || { echo "FAILED: depthkv >= $version not satisfied"; exit 1; }
incdir=$(pkg-config --variable=includedir depthkv)
if [ ! -f "$incdir/depthkv/depthkv.hpp" ]; then
  echo "FAILED: includedir $incdir from depthkv.pc has no depthkv/depthkv.hpp"; exit 1
fi

cflags=$(pkg-config --cflags depthkv)
echo "pkg-config --cflags depthkv: $cflags"
mkdir -p "$work"
# shellcheck disable=SC2086  # cflags is a list of words
"$cxx" -std=c++17 $cflags "$src" -o "$work/consumer"
out=$("$work/consumer")
echo "$out"
[ "$out" = "depthkv $version consumer: ok" ] || { echo "FAILED: unexpected output"; exit 1; }
