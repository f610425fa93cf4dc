// The main() of depthkv's benchmark binaries: Google Benchmark's, plus the kernel path the
// library dispatches to (active_isa) in the context printed before the results.
#pragma once

#include <benchmark/benchmark.h>

#include "depthkv/isa.hpp"

#define DEPTHKV_BENCHMARK_MAIN()                                                       \
  int main(int argc, char** argv) {                                                  \
    benchmark::AddCustomContext("depthkv_isa", depthkv::isa_name(depthkv::active_isa())); \
    benchmark::Initialize(&argc, argv);                                              \
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;                \
    benchmark::RunSpecifiedBenchmarks();                                             \
    benchmark::Shutdown();                                                           \
    return 0;                                                                        \
  }
