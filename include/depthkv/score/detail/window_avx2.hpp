// AVX2+FMA vector traits for the window-scoring kernel (8 f32 lanes, 16 registers).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include "depthkv/config.hpp"

#if DEPTHKV_HAVE_AVX2
#include <immintrin.h>

#include <cstddef>
#include <cstring>
#include <type_traits>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "depthkv/detail/target.hpp"
#include "depthkv/score/detail/window_common.hpp"
#include "depthkv/types.hpp"

namespace depthkv::detail::DEPTHKV_AVX2_NS {
DEPTHKV_AVX2_BEGIN

struct window_vt {
  using reg = __m256;
  static constexpr std::size_t lanes = 8;
  static constexpr int mk1 = 12;  // 12 accumulators + 1 query vector + 1 broadcast
  static constexpr int mk2 = 6;   // 12 accumulators + 2 query vectors + 1 broadcast
  static constexpr int mkp = 6;   // pair tiles: same register budget
  static constexpr int mk4 = 0;  // no four-vector tiles: 16 registers

  static reg zero() noexcept { return _mm256_setzero_ps(); }
  static reg load(const float* p) noexcept { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) noexcept { _mm256_storeu_ps(p, v); }
  static reg set1(float x) noexcept { return _mm256_set1_ps(x); }
  static reg fmadd(reg a, reg b, reg c) noexcept { return _mm256_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) noexcept { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) noexcept { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) noexcept { return _mm256_mul_ps(a, b); }
  static reg max(reg a, reg b) noexcept { return _mm256_max_ps(a, b); }
  static reg div(reg a, reg b) noexcept { return _mm256_div_ps(a, b); }
  static reg abs(reg a) noexcept { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), a); }
  // |mag| with the sign bit of sgn (mag has its sign bit clear).
  static reg copy_sign(reg mag, reg sgn) noexcept { return _mm256_or_ps(mag, _mm256_and_ps(_mm256_set1_ps(-0.f), sgn)); }
  // Per lane a < b ? x : y (false for NaN).
  static reg select_lt(reg a, reg b, reg x, reg y) noexcept { return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ)); }
  // (p[0], p[1]) repeated in every 64-bit pair of lanes.
  static reg bcast2(const float* p) noexcept {
    double x;
    std::memcpy(&x, p, sizeof x);
    return _mm256_castpd_ps(_mm256_set1_pd(x));
  }
  // Lanes 2i, 2i+1 of a summed into lane i, of b into lane 4 + i.
  static reg pair_sum(reg a, reg b) noexcept {
    // hadd: [a01 a23 b01 b23 | a45 a67 b45 b67] -> 64-bit lanes (0, 2, 1, 3).
    const __m256 h = _mm256_hadd_ps(a, b);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
  }
  static float reduce_add(reg v) noexcept {
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
  }
  // Lane i = sum of the lanes of r[i], for 8 vectors (a transposing add tree).
  static reg transpose_sum(const reg* r) noexcept {
    reg t[4];
    for (int i = 0; i < 4; ++i)  // per 128-bit half: [a0+a2, b0+b2, a1+a3, b1+b3]
      t[i] = _mm256_add_ps(_mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]), _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]));
    const reg u0 = _mm256_add_ps(_mm256_shuffle_ps(t[0], t[1], 0x44), _mm256_shuffle_ps(t[0], t[1], 0xEE));
    const reg u1 = _mm256_add_ps(_mm256_shuffle_ps(t[2], t[3], 0x44), _mm256_shuffle_ps(t[2], t[3], 0xEE));
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
  }
  // 2^x for x <= 0 (-inf and x < -126.5 -> 0, NaN -> NaN); relative error ~2.3e-7 (exp2_poly).
  static reg exp2(reg x) noexcept {
    x = _mm256_max_ps(_mm256_set1_ps(-127.f), x);  // NaN in x survives (max returns 2nd operand)
    const reg n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const reg f = _mm256_sub_ps(x, n);
    reg p = _mm256_set1_ps(exp2_poly[5]);
#pragma GCC unroll 5
    for (int i = 4; i >= 0; --i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(exp2_poly[i]));
    // 2^n from the exponent bits; n = -127 gives the bit pattern of +0.0.
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  }
  // (Unrolled, 4 vectors per iteration: with one, the loop's speed followed its code alignment,
  // which moved the whole f16 / bf16 kernel by up to 7% on Zen 2 as unrelated code changed.)
  template <class T>
  static void convert_row(const T* src, float* dst, std::size_t d) noexcept {
    std::size_t i = 0;
    const std::size_t vend = d - d % 8;
    if constexpr (std::is_same_v<T, f16>) {
#pragma GCC unroll 4
      for (; i < vend; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    } else if constexpr (std::is_same_v<T, bf16>) {
#pragma GCC unroll 4
      for (; i < vend; i += 8) {
        const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
      }
    }
    // Tail (< 8 elements; the whole row for f32).
    for (std::size_t t = i; t < d; ++t) dst[t] = static_cast<float>(src[t]);
  }
};

#include "depthkv/score/detail/window_simd.inl"

DEPTHKV_AVX2_END
}  // namespace depthkv::detail::DEPTHKV_AVX2_NS

#if DEPTHKV_TU_ABOVE_AVX2
namespace depthkv::detail::avx2 {  // the shared copies, defined by TUs not above this path (detail/target.hpp)
DEPTHKV_WEAK void window_f32(const window_job&, const float*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_f16(const window_job&, const f16*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_bf16(const window_job&, const bf16*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_tanh(const float*, float*, std::size_t) noexcept;
}  // namespace depthkv::detail::avx2
#endif
#endif
