// Shared helpers for depthkv tests: seeded RNG, element conversion, exception matching.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/types.hpp"

namespace depthkv_test {

inline std::mt19937_64& rng() {
  static std::mt19937_64 g(0xdeb7c0de);
  return g;
}

inline std::size_t uniform_int(std::size_t lo, std::size_t hi) {  // inclusive
  return std::uniform_int_distribution<std::size_t>(lo, hi)(rng());
}

template <class T>
T from_float(float x) {
  return static_cast<T>(x);
}

// Kernel paths this CPU can run, the portable one first: tests force each with
// depthkv::scoped_isa and compare it with the portable path and an independent reference.
inline std::vector<depthkv::isa> supported_paths() {
  std::vector<depthkv::isa> p;
  for (depthkv::isa i : {depthkv::isa::scalar, depthkv::isa::avx2, depthkv::isa::avx512})
    if (depthkv::isa_supported(i)) p.push_back(i);
  return p;
}

// Runs f, requires it to throw depthkv::error whose message contains every needle.
template <class F>
void require_error(F&& f, std::vector<std::string> needles) {
  try {
    f();
  } catch (const depthkv::error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) {
      INFO("message: " << msg);
      CHECK(msg.find(n) != std::string::npos);
    }
    return;
  }
  FAIL("expected depthkv::error");
}

}  // namespace depthkv_test
