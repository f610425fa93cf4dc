// Shared helpers for depthkv tests: seeded RNG, element conversion, exception matching.
#pragma once

#include <cmath>
#include <cstddef>
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

// Every row of every head of a kv_cache (or anything with its accessors), flattened: a
// separator, then K, V and the position of each row; equal dumps mean equal caches.
template <class Cache>
std::vector<float> dump_rows(const Cache& c) {
  std::vector<float> out;
  for (std::size_t l = 0; l < c.n_layers(); ++l)
    for (std::size_t h = 0; h < c.n_kv_heads(); ++h) {
      const auto k = c.keys(l, h), v = c.values(l, h);
      out.push_back(-1e30f);
      for (std::size_t j = 0; j < k.n; ++j) {
        for (std::size_t t = 0; t < k.dim; ++t) out.push_back(float(k.row(j)[t]));
        for (std::size_t t = 0; t < k.dim; ++t) out.push_back(float(v.row(j)[t]));
        out.push_back(float(c.positions(l, h)[j]));
      }
    }
  return out;
}

// got[j] within relative `rel` of ref[j] for every j < ref.size(), with an absolute floor far
// below any score that matters (f32 exp underflow).
inline void check_close(const std::vector<float>& got, const std::vector<double>& ref, double rel = 1e-5) {
  REQUIRE(got.size() >= ref.size());
  for (std::size_t j = 0; j < ref.size(); ++j) {
    INFO("j = " << j << " got " << got[j] << " ref " << ref[j]);
    REQUIRE(std::abs(double(got[j]) - ref[j]) <= rel * std::abs(ref[j]) + 1e-30);
  }
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
