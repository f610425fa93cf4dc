// AVX2 top-k kernels: 8 scores per step; compare -> movemask -> permutation from a 256-entry
// table packs the selected lanes to the front -> plain store.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"

#if DEPTHKV_HAVE_AVX2
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include <array>
#include <cstddef>
#include <cstdint>

#include "depthkv/select/detail/topk_common.hpp"
#include "depthkv/select/detail/topk_types.hpp"

namespace depthkv::detail::DEPTHKV_AVX2_NS {
DEPTHKV_AVX2_BEGIN

#include "depthkv/select/detail/topk_select.inl"

// pack_table[m]: byte j holds the lane of the j-th set bit of m (lanes beyond popcount: 0).
constexpr std::array<std::uint64_t, 256> make_pack_table() noexcept {
  std::array<std::uint64_t, 256> t{};
  for (unsigned m = 0; m < 256; ++m) {
    std::uint64_t v = 0;
    unsigned j = 0;
    for (unsigned lane = 0; lane < 8; ++lane)
      if (m & (1u << lane)) v |= static_cast<std::uint64_t>(lane) << (8 * j++);
    t[m] = v;
  }
  return t;
}
inline constexpr std::array<std::uint64_t, 256> pack_table = make_pack_table();

inline __m256i pack_perm(unsigned m) noexcept {
  return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(pack_table[m])));
}

inline unsigned popcount8(unsigned m) noexcept { return static_cast<unsigned>(__builtin_popcount(m)); }

// Keeps the lowest `r` set bits of m (r < popcount(m)).
inline unsigned lowest_bits(unsigned m, std::size_t r) noexcept {
  unsigned kept = 0;
  for (std::size_t j = 0; j < r; ++j) {
    kept |= m & (0u - m);
    m &= m - 1u;
  }
  return kept;
}

struct topk_kernels {
  static filter_counts filter(const float* x, std::size_t n, float lo, float hi, bool lo_is_nan,
                              float* cand) noexcept {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    std::size_t above = 0, c = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_loadu_ps(x + i);
      above += popcount8(static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, vhi, _CMP_GT_OQ))));
      const __m256 in =
          lo_is_nan ? _mm256_cmp_ps(v, vhi, _CMP_NGT_UQ)
                    : _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GE_OQ), _mm256_cmp_ps(v, vhi, _CMP_LE_OQ));
      const unsigned m = static_cast<unsigned>(_mm256_movemask_ps(in));
      _mm256_storeu_ps(cand + c, _mm256_permutevar8x32_ps(v, pack_perm(m)));
      c += popcount8(m);
    }
    for (; i < n; ++i) {
      const float v = x[i];
      above += v > hi;
      const bool in = lo_is_nan ? !(v > hi) : (v >= lo && v <= hi);
      cand[c] = v;
      c += in;
    }
    return {above, c};
  }

  // Quickselect with a three-way vector partition (see avx512::topk_kernels::select).
  static topk_threshold select(std::int32_t* keys, std::size_t len, std::size_t rank,
                               std::int32_t* tmp) noexcept {
    return quickselect3(
        keys, len, rank, tmp,
        [](std::int32_t* src, std::size_t len, std::int32_t p, std::int32_t* dst, std::size_t& ngt,
           std::size_t& nlt) noexcept {
          const __m256i vp = _mm256_set1_epi32(p);
          std::size_t i = 0;
          for (; i + 8 <= len; i += 8) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
            const auto mg =
                static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(v, vp))));
            const auto ml =
                static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(vp, v))));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + ngt),
                                _mm256_permutevar8x32_epi32(v, pack_perm(mg)));
            ngt += popcount8(mg);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(src + nlt),
                                _mm256_permutevar8x32_epi32(v, pack_perm(ml)));
            nlt += popcount8(ml);  // nlt <= i: the in-place store only covers lanes already read
          }
          for (; i < len; ++i) {
            const std::int32_t v = src[i];
            dst[ngt] = v;
            ngt += v > p;
            src[nlt] = v;
            nlt += v < p;
          }
        });
  }

  static std::size_t emit(const float* x, std::size_t n, index_t base, float t, bool t_is_nan,
                          std::size_t ties, std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    return t_is_nan ? emit_impl<true>(x, n, base, t, ties, tie_total, out, count)
                    : emit_impl<false>(x, n, base, t, ties, tie_total, out, count);
  }

 private:
  // Appends the lanes of mask m (indices idx) at out + c; never writes past out[count).
  static void put(index_t* out, std::size_t& c, std::size_t count, unsigned m, __m256i idx) noexcept {
    const __m256i p = _mm256_permutevar8x32_epi32(idx, pack_perm(m));
    const unsigned k = popcount8(m);
    if (DEPTHKV_LIKELY(c + 8 <= count)) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), p);
    } else {
      alignas(32) index_t tmp[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), p);
      for (unsigned j = 0; j < k; ++j) out[c + j] = tmp[j];
    }
    c += k;
  }

  template <bool TNaN>
  static std::size_t emit_impl(const float* x, std::size_t n, index_t base, float t, std::size_t ties,
                               std::size_t tie_total, index_t* out, std::size_t count) noexcept {
    const __m256 vt = _mm256_set1_ps(t);
    const __m256i step = _mm256_set1_epi32(8);
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(base)),
                                   _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    auto bits = [](__m256 m) { return static_cast<unsigned>(_mm256_movemask_ps(m)); };
    auto gt = [&](__m256 v) {
      return TNaN ? bits(_mm256_cmp_ps(v, v, _CMP_ORD_Q)) : bits(_mm256_cmp_ps(v, vt, _CMP_GT_OQ));
    };
    auto eq = [&](__m256 v) {
      return TNaN ? bits(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) : bits(_mm256_cmp_ps(v, vt, _CMP_EQ_OQ));
    };
    auto ge = [&](__m256 v) { return TNaN ? 0xffu : bits(_mm256_cmp_ps(v, vt, _CMP_GE_OQ)); };
    // Tail: copy the last < 8 scores into a zero-padded vector; `valid` masks the padding off.
    auto load_tail = [&](std::size_t i, unsigned& valid) {
      alignas(32) float tmp[8];
      for (std::size_t j = 0; j < 8; ++j) tmp[j] = i + j < n ? x[i + j] : 0.0f;
      valid = (1u << (n - i)) - 1u;
      return _mm256_load_ps(tmp);
    };
    std::size_t c = 0, i = 0;
    if (ties == tie_total) {  // every tie kept: one predicate, key >= threshold
      for (; i + 8 <= n && c < count; i += 8) {
        put(out, c, count, ge(_mm256_loadu_ps(x + i)), idx);
        idx = _mm256_add_epi32(idx, step);
      }
      if (i < n && c < count) {
        unsigned valid;
        const __m256 v = load_tail(i, valid);
        put(out, c, count, ge(v) & valid, idx);
      }
      return c;
    }
    std::size_t left = ties;  // earlier ties win: take them until the budget runs out
    for (; i < n && left > 0; i += 8) {
      unsigned valid = 0xffu;
      const __m256 v = i + 8 <= n ? _mm256_loadu_ps(x + i) : load_tail(i, valid);
      unsigned e = eq(v) & valid;
      const std::size_t ne = popcount8(e);
      if (ne > left) e = lowest_bits(e, left);
      left -= ne > left ? left : ne;
      put(out, c, count, (gt(v) & valid) | e, idx);
      idx = _mm256_add_epi32(idx, step);
    }
    for (; i + 8 <= n && c < count; i += 8) {
      put(out, c, count, gt(_mm256_loadu_ps(x + i)), idx);
      idx = _mm256_add_epi32(idx, step);
    }
    if (i < n && c < count) {
      unsigned valid;
      const __m256 v = load_tail(i, valid);
      put(out, c, count, gt(v) & valid, idx);
    }
    return c;
  }
};

#include "depthkv/select/detail/topk_driver.inl"

DEPTHKV_AVX2_END
}  // namespace depthkv::detail::DEPTHKV_AVX2_NS

#if DEPTHKV_TU_ABOVE_AVX2
namespace depthkv::detail::avx2 {
// The shared copy, defined by TUs built without flags above this path (see detail/target.hpp).
DEPTHKV_WEAK std::size_t topk_row(const float* s, std::size_t n, std::size_t k, index_t* out, const topk_options& opt,
                                  topk_scratch& sc);
}  // namespace depthkv::detail::avx2
#endif

#endif  // DEPTHKV_HAVE_AVX2
