// Portable top-k kernels (filter and emit passes) and their driver: the reference every SIMD
// path must match. Compiled for the x86-64 baseline in every TU (the same code whatever the
// TU's -m flags); plain C++ that compilers vectorise at the baseline ISA.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "depthkv/select/detail/topk_common.hpp"
#include "depthkv/select/detail/topk_types.hpp"

namespace depthkv::detail::scalar {
DEPTHKV_BASELINE_BEGIN

struct topk_kernels {
  static filter_counts filter(const float* x, std::size_t n, float lo, float hi, bool lo_is_nan,
                              float* cand) noexcept {
    std::size_t above = 0, c = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float v = x[i];
      above += v > hi;
      const bool in = lo_is_nan ? !(v > hi) : (v >= lo && v <= hi);
      cand[c] = v;  // branch-free append; cand[c] is either kept or overwritten next
      c += in;
    }
    return {above, c};
  }

  static topk_threshold select(std::int32_t* keys, std::size_t len, std::size_t rank, std::int32_t*) noexcept {
    return select_nth(keys, len, rank, 0);
  }

  static std::size_t emit(const float* x, std::size_t n, index_t base, float t, bool t_is_nan, std::size_t ties,
                          std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    return t_is_nan ? emit_impl<true>(x, n, base, t, ties, tie_total, out, count)
                    : emit_impl<false>(x, n, base, t, ties, tie_total, out, count);
  }

 private:
  template <bool TNaN>
  static std::size_t emit_impl(const float* x, std::size_t n, index_t base, float t, std::size_t ties,
                               std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    auto gt = [t](float v) { return TNaN ? v == v : v > t; };
    auto eq = [t](float v) { return TNaN ? v != v : v == t; };
    std::size_t c = 0, i = 0;
    if (ties == tie_total) {  // every tie kept: one predicate, key >= threshold
      for (; i < n && c < count; ++i) {
        out[c] = base + static_cast<index_t>(i);
        c += gt(x[i]) || eq(x[i]);
      }
      return c;
    }
    std::size_t left = ties;  // earlier ties win: take them until the budget runs out
    for (; i < n && left > 0; ++i) {
      const bool e = eq(x[i]);
      out[c] = base + static_cast<index_t>(i);
      c += gt(x[i]) || e;
      left -= e;
    }
    for (; i < n && c < count; ++i) {
      out[c] = base + static_cast<index_t>(i);
      c += gt(x[i]);
    }
    return c;
  }
};

#include "depthkv/select/detail/topk_driver.inl"

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail::scalar
