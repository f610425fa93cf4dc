// 1-D average / max pooling of token scores (SnapKV smooths its window scores with kernel 5,
// so neighbours of an important token are kept with it).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

enum class pool_kind { none, avg, max };

constexpr const char* pool_kind_name(pool_kind k) noexcept {
  return k == pool_kind::none ? "none" : k == pool_kind::avg ? "avg" : "max";
}

namespace detail {

/// max that propagates NaN (a NaN anywhere in the window makes the pooled value NaN).
inline float max_nan(float a, float b) noexcept { return (a > b || a != a) ? a : b; }

/// Van Herk / Gil-Werman: with blocks of `kernel` elements, every window of at most `kernel`
/// elements spans <= 2 blocks, so its reduction is suffix(block A) op prefix(block B): O(n) for
/// any kernel, no subtraction (inf-safe), same code for avg (sum) and max. in may equal out.
template <class Op>
void pool_vhgw(const float* in, float* out, std::size_t n, std::size_t kernel, float* pre, float* suf, Op op,
               bool average) noexcept {
  const std::size_t r = kernel / 2;
  for (std::size_t b = 0; b < n; b += kernel) {
    const std::size_t e = std::min(n, b + kernel);
    pre[b] = in[b];
    for (std::size_t i = b + 1; i < e; ++i) pre[i] = op(pre[i - 1], in[i]);
    suf[e - 1] = in[e - 1];
    for (std::size_t i = e - 1; i > b; --i) suf[i - 1] = op(in[i - 1], suf[i]);
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t lo = i >= r ? i - r : 0;
    const std::size_t hi = std::min(n - 1, i + r);
    const std::size_t blo = lo / kernel, bhi = hi / kernel;
    float v;
    if (blo == bhi) {
      // Inside one block: a full window is exactly the block, and a clipped one touches the
      // array's start (a block start) or its end (the last block's end).
      v = lo % kernel == 0 ? pre[hi] : suf[lo];
    } else {
      v = op(suf[lo], pre[hi]);
    }
    out[i] = average ? v / static_cast<float>(hi - lo + 1) : v;
  }
}

}  // namespace detail

/// out[i] = reduce of in[max(0, i - r) .. min(n - 1, i + r)], r = kernel / 2.
/// Edges: the window is clipped to the valid range; avg divides by the number of valid
/// elements (so a constant input stays constant). A kernel >= 2n - 1 makes every output the
/// reduction of the whole input. kernel must be odd; kernel 1 or kind none copies.
/// in and out may alias (in place). scratch: >= 2n floats (the other overload allocates).
/// Throws depthkv::error for an even or zero kernel, or size mismatches.
inline void pool1d(span<const float> in, span<float> out, std::size_t kernel, pool_kind kind, span<float> scratch) {
  constexpr const char* where = "depthkv::pool1d";
  DEPTHKV_CHECK(kernel % 2 == 1, where, "kernel must be odd, got ", kernel);
  DEPTHKV_CHECK(out.size() == in.size(), where, "out has ", out.size(), " entries, in has ", in.size());
  const std::size_t n = in.size();
  const std::size_t need = detail::checked_mul(where, 2, n, "scratch for ", n, " scores");
  DEPTHKV_CHECK(scratch.size() >= need, where, "scratch has ", scratch.size(), " floats, need ", need);
  if (n == 0) return;
  if (kind == pool_kind::none || kernel == 1) {
    if (out.data() != in.data()) std::copy(in.begin(), in.end(), out.begin());
    return;
  }
  // Windows never exceed n elements, so a kernel above 2n - 1 behaves like 2n - 1.
  const std::size_t k = std::min(kernel, 2 * n - 1);
  float* pre = scratch.data();
  float* suf = scratch.data() + n;
  // The output pass reads only pre/suf, so in == out is safe.
  const float* src = in.data();
  if (kind == pool_kind::avg)
    detail::pool_vhgw(src, out.data(), n, k, pre, suf, [](float a, float b) { return a + b; }, true);
  else
    detail::pool_vhgw(src, out.data(), n, k, pre, suf, detail::max_nan, false);
}

inline void pool1d(span<const float> in, span<float> out, std::size_t kernel, pool_kind kind) {
  std::vector<float> scratch(detail::checked_mul("depthkv::pool1d", 2, in.size(), "scratch for ", in.size(), " scores"));
  pool1d(in, out, kernel, kind, scratch);
}

}  // namespace depthkv
