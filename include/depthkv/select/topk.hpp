// Top-k selection: indices of the k largest scores, emitted in ascending position order.
// (Interim scalar implementation; the SIMD kernels replace the internals, not the API.)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <vector>

#include "depthkv/config.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

// Positions that are always kept and count toward k: the first n_sink and the last n_recent.
struct topk_options {
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
};

// Writes the indices of the min(k, n) largest scores into out[0..), ascending, and returns
// how many. Ties at the threshold keep the earlier position; NaN ranks below every number.
// Throws depthkv::error if out is too small or the protected positions alone exceed k.
inline std::size_t topk(span<const float> scores, std::size_t k, span<index_t> out, const topk_options& opt = {}) {
  constexpr const char* where = "depthkv::topk";
  const std::size_t n = scores.size();
  const std::size_t m = std::min(k, n);
  DEPTHKV_CHECK(out.size() >= m, where, "out has room for ", out.size(), " indices, need ", m);
  const std::size_t prot = std::min(n, opt.n_sink + opt.n_recent);
  DEPTHKV_CHECK(prot <= m || n == 0, where, "protected positions (n_sink ", opt.n_sink, " + n_recent ",
                opt.n_recent, ") exceed k = ", k);
  std::vector<index_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  auto is_protected = [&](index_t i) { return i < opt.n_sink || i + opt.n_recent >= n; };
  auto better = [&](index_t a, index_t b) {
    const bool pa = is_protected(a), pb = is_protected(b);
    if (pa != pb) return pa;
    const float x = scores[a], y = scores[b];
    const bool na = std::isnan(x), nb = std::isnan(y);
    if (na != nb) return nb;
    if (!na && x != y) return x > y;
    return a < b;
  };
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m), order.end(), better);
  std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m));
  std::copy(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(m), out.begin());
  return m;
}

}  // namespace depthkv
