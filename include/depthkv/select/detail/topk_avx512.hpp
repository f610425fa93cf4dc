// AVX-512 top-k kernels: 16 scores per step; compare -> mask -> compress into a register ->
// plain store (the memory form of vpcompressd is microcoded on Zen 4, ~10x slower).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"

#if DEPTHKV_HAVE_AVX512
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <cstddef>

#include "depthkv/select/detail/topk_common.hpp"
#include "depthkv/select/detail/topk_types.hpp"

namespace depthkv::detail::DEPTHKV_AVX512_NS {
DEPTHKV_AVX512_BEGIN

#include "depthkv/select/detail/topk_select.inl"

inline unsigned popcount16(__mmask16 m) noexcept { return static_cast<unsigned>(__builtin_popcount(m)); }

inline __mmask16 first_lanes(std::size_t r) noexcept { return static_cast<__mmask16>((1u << r) - 1u); }

// Keeps the lowest `r` set bits of m (r < popcount(m)).
inline __mmask16 lowest_bits(__mmask16 m, std::size_t r) noexcept {
  unsigned v = m, kept = 0;
  for (std::size_t j = 0; j < r; ++j) {
    kept |= v & (0u - v);
    v &= v - 1u;
  }
  return static_cast<__mmask16>(kept);
}

struct topk_kernels {
  static filter_counts filter(const float* x, std::size_t n, float lo, float hi, bool lo_is_nan,
                              float* cand) noexcept {
    return lo_is_nan ? filter_impl<true>(x, n, lo, hi, cand) : filter_impl<false>(x, n, lo, hi, cand);
  }

  // Quickselect with a three-way vector partition: keys > pivot are compressed into the other
  // buffer, keys < pivot compacted in place, keys == pivot only counted.
  static topk_threshold select(std::int32_t* keys, std::size_t len, std::size_t rank,
                               std::int32_t* tmp) noexcept {
    return quickselect3(
        keys, len, rank, tmp,
        [](std::int32_t* src, std::size_t len, std::int32_t p, std::int32_t* dst, std::size_t& ngt,
           std::size_t& nlt) noexcept {
          const __m512i vp = _mm512_set1_epi32(p);
          std::size_t i = 0;
          for (; i + 16 <= len; i += 16) {
            const __m512i v = _mm512_loadu_si512(static_cast<const void*>(src + i));
            const __mmask16 mg = _mm512_cmpgt_epi32_mask(v, vp), ml = _mm512_cmplt_epi32_mask(v, vp);
            _mm512_storeu_si512(static_cast<void*>(dst + ngt), _mm512_maskz_compress_epi32(mg, v));
            ngt += popcount16(mg);
            _mm512_storeu_si512(static_cast<void*>(src + nlt),
                                _mm512_maskz_compress_epi32(ml, v));  // nlt <= i
            nlt += popcount16(ml);
          }
          if (i < len) {
            const __mmask16 valid = first_lanes(len - i);
            const __m512i v = _mm512_maskz_loadu_epi32(valid, src + i);
            const __mmask16 mg = _mm512_mask_cmpgt_epi32_mask(valid, v, vp),
                            ml = _mm512_mask_cmplt_epi32_mask(valid, v, vp);
            _mm512_mask_storeu_epi32(dst + ngt, first_lanes(popcount16(mg)),
                                     _mm512_maskz_compress_epi32(mg, v));
            ngt += popcount16(mg);
            _mm512_mask_storeu_epi32(src + nlt, first_lanes(popcount16(ml)),
                                     _mm512_maskz_compress_epi32(ml, v));
            nlt += popcount16(ml);
          }
        });
  }

  static std::size_t emit(const float* x, std::size_t n, index_t base, float t, bool t_is_nan,
                          std::size_t ties, std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    return t_is_nan ? emit_impl<true>(x, n, base, t, ties, tie_total, out, count)
                    : emit_impl<false>(x, n, base, t, ties, tie_total, out, count);
  }

 private:
  // Inside the bracket = not above hi and (LoNaN: anything, NaN included; else >= lo, which a
  // NaN never is): two compares per vector, the "above" mask serves both counts.
  template <bool LoNaN>
  static filter_counts filter_impl(const float* x, std::size_t n, float lo, float hi, float* cand) noexcept {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    auto inside = [&](__m512 v, __mmask16 above, __mmask16 valid) {
      if constexpr (LoNaN)
        return static_cast<__mmask16>(~above & valid);
      else
        return static_cast<__mmask16>(_mm512_mask_cmp_ps_mask(valid, v, vlo, _CMP_GE_OQ) & ~above);
    };
    std::size_t above0 = 0, above1 = 0, c = 0, i = 0;
    const auto all = static_cast<__mmask16>(0xffff);
    for (; i + 32 <= n; i += 32) {  // two vectors per step: independent mask work overlaps
      const __m512 v0 = _mm512_loadu_ps(x + i), v1 = _mm512_loadu_ps(x + i + 16);
      const __mmask16 a0 = _mm512_cmp_ps_mask(v0, vhi, _CMP_GT_OQ),
                      a1 = _mm512_cmp_ps_mask(v1, vhi, _CMP_GT_OQ);
      above0 += popcount16(a0);
      above1 += popcount16(a1);
      const __mmask16 m0 = inside(v0, a0, all), m1 = inside(v1, a1, all);
      const __m512 p0 = _mm512_maskz_compress_ps(m0, v0), p1 = _mm512_maskz_compress_ps(m1, v1);
      _mm512_storeu_ps(cand + c, p0);
      c += popcount16(m0);
      _mm512_storeu_ps(cand + c, p1);
      c += popcount16(m1);
    }
    for (; i < n; i += 16) {
      const __mmask16 valid = n - i >= 16 ? all : first_lanes(n - i);
      const __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
      const __mmask16 a = _mm512_mask_cmp_ps_mask(valid, v, vhi, _CMP_GT_OQ);
      above0 += popcount16(a);
      const __mmask16 m = inside(v, a, valid);
      _mm512_mask_storeu_ps(cand + c, first_lanes(popcount16(m)), _mm512_maskz_compress_ps(m, v));
      c += popcount16(m);
    }
    return {above0 + above1, c};
  }

  // Appends the lanes of `m` (indices idx) at out + c; never writes past out[count).
  static void put(index_t* out, std::size_t& c, std::size_t count, __mmask16 m, __m512i idx) noexcept {
    const __m512i p = _mm512_maskz_compress_epi32(m, idx);
    const unsigned k = popcount16(m);
    if (DEPTHKV_LIKELY(c + 16 <= count))
      _mm512_storeu_si512(static_cast<void*>(out + c), p);
    else
      _mm512_mask_storeu_epi32(out + c, first_lanes(k), p);
    c += k;
  }

  template <bool TNaN>
  static std::size_t emit_impl(const float* x, std::size_t n, index_t base, float t, std::size_t ties,
                               std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    const __m512 vt = _mm512_set1_ps(t);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(base)),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    auto gt = [&](__m512 v) {
      return TNaN ? _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q) : _mm512_cmp_ps_mask(v, vt, _CMP_GT_OQ);
    };
    auto eq = [&](__m512 v) {
      return TNaN ? _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) : _mm512_cmp_ps_mask(v, vt, _CMP_EQ_OQ);
    };
    auto ge = [&](__m512 v) {
      return TNaN ? static_cast<__mmask16>(0xffff) : _mm512_cmp_ps_mask(v, vt, _CMP_GE_OQ);
    };
    auto valid_at = [n](std::size_t i) {
      return n - i >= 16 ? static_cast<__mmask16>(0xffff) : first_lanes(n - i);
    };
    std::size_t c = 0, i = 0;
    if (ties == tie_total) {  // every tie kept: one predicate, key >= threshold
      for (; i + 16 <= n && c < count; i += 16) {
        put(out, c, count, ge(_mm512_loadu_ps(x + i)), idx);
        idx = _mm512_add_epi32(idx, step);
      }
      if (i < n && c < count) {
        const __mmask16 valid = valid_at(i);
        put(out, c, count, ge(_mm512_maskz_loadu_ps(valid, x + i)) & valid, idx);
      }
      return c;
    }
    std::size_t left = ties;  // earlier ties win: take them until the budget runs out
    for (; i < n && left > 0; i += 16) {
      const __mmask16 valid = valid_at(i);
      const __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
      __mmask16 e = eq(v) & valid;
      const std::size_t ne = popcount16(e);
      if (ne > left) e = lowest_bits(e, left);
      left -= ne > left ? left : ne;
      put(out, c, count, (gt(v) & valid) | e, idx);
      idx = _mm512_add_epi32(idx, step);
    }
    for (; i + 16 <= n && c < count; i += 16) {
      put(out, c, count, gt(_mm512_loadu_ps(x + i)), idx);
      idx = _mm512_add_epi32(idx, step);
    }
    if (i < n && c < count) {
      const __mmask16 valid = valid_at(i);
      put(out, c, count, gt(_mm512_maskz_loadu_ps(valid, x + i)) & valid, idx);
    }
    return c;
  }
};

#include "depthkv/select/detail/topk_driver.inl"

DEPTHKV_AVX512_END
}  // namespace depthkv::detail::DEPTHKV_AVX512_NS

#if DEPTHKV_TU_ABOVE_AVX512
namespace depthkv::detail::avx512 {
// The shared copy, defined by TUs built without flags above this path (see detail/target.hpp).
DEPTHKV_WEAK std::size_t topk_row(const float* s, std::size_t n, std::size_t k, index_t* out, const topk_options& opt,
                                  topk_scratch& sc);
}  // namespace depthkv::detail::avx512
#endif

#endif  // DEPTHKV_HAVE_AVX512
