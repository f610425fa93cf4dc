// Declarations of the isa_link test (see body.hpp, main.cpp).
#pragma once

#include <cstdint>

namespace isa_link {

// What one TU computed: a checksum of every output, and the path the kernels ran on.
struct result {
  std::uint64_t checksum;
  int active;
  const char* cache_type;  // mangled name of kv_cache<float> in this TU (ISA-neutral: the same)
};

std::uint64_t mix(std::uint64_t h, std::uint64_t v);  // defined in main.cpp (no -m flags)
result run_avx2_tu();                                 // tu_avx2.cpp: -mavx2 -mfma -mf16c
result run_v4_tu();                                   // tu_v4.cpp: -march=x86-64-v4

}  // namespace isa_link
