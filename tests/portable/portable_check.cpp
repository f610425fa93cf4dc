// A small program over the kernel entries (top-k, compaction, window scoring) checked against
// naive references; tests/CMakeLists.txt builds it with DEPTHKV_PORTABLE_ONLY (no SIMD path
// compiled) and with -mno-avx (the SIMD paths still compiled by target attribute), and .ci/run
// cross-compiles it for aarch64. Prints "portable_check: OK <path>" or exits 1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "depthkv/depthkv.hpp"

int main() {
  using namespace depthkv;
  const std::size_t n = 3000, k = 300, d = 64, w = 4;
  std::vector<float> s(n), keys(n * d), q(w * d);
  std::uint32_t x = 7;
  auto next = [&x] {
    x = x * 1664525u + 1013904223u;
    return static_cast<float>(x >> 8) / 16777216.f - 0.5f;
  };
  for (float& v : s) v = next();
  for (float& v : keys) v = next();
  for (float& v : q) v = next();
  // top-k against sort of (score desc, position asc)
  std::vector<index_t> got(k), order(n);
  topk(s, k, got);
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return s[a] > s[b]; });
  order.resize(k);
  std::sort(order.begin(), order.end());
  if (got != order) return std::puts("portable_check: FAILED topk"), 1;
  // window scores of the kept rows against a double evaluation
  std::vector<float> kept(k * d);
  for (std::size_t i = 0; i < k; ++i) std::copy_n(keys.begin() + static_cast<std::ptrdiff_t>(got[i] * d), d, kept.begin() + static_cast<std::ptrdiff_t>(i * d));
  compact_rows(rows_view<float>{keys.data(), n, d, static_cast<std::ptrdiff_t>(d)}, span<const index_t>(got));
  if (!std::equal(kept.begin(), kept.end(), keys.begin())) return std::puts("portable_check: FAILED compact_rows"), 1;
  std::vector<float> out(k);
  window_scratch ws;
  window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{w}, dim{d})), 1, 0, rows_view<const float>{keys.data(), k, d, static_cast<std::ptrdiff_t>(d)}, {}, span<float>(out), ws);
  std::vector<double> ref(k, 0.0);
  for (std::size_t i = 0; i < w; ++i) {
    const std::size_t lim = k - w + i + 1;
    std::vector<double> lg(lim);
    double m = -1e300, z = 0;
    for (std::size_t j = 0; j < lim; ++j) {
      double a = 0;
      for (std::size_t t = 0; t < d; ++t) a += double(q[i * d + t]) * double(keys[j * d + t]);
      lg[j] = a / std::sqrt(double(d));
      m = std::max(m, lg[j]);
    }
    for (double& v : lg) z += (v = std::exp(v - m));
    for (std::size_t j = 0; j < lim; ++j) ref[j] += lg[j] / z;
  }
  for (std::size_t j = 0; j < k; ++j)
    if (std::abs(out[j] - ref[j]) > 1e-5 * std::abs(ref[j]) + 1e-30) return std::puts("portable_check: FAILED window_scores"), 1;
  std::printf("portable_check: OK %s\n", isa_name(active_isa()));
  return 0;
}
