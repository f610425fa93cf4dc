// AVX-512 vector traits for the window-scoring kernel (16 f32 lanes, 32 registers).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include "depthkv/config.hpp"

#if DEPTHKV_HAVE_AVX512
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics use a self-initialised "undefined" source operand that trips
// -Wmaybe-uninitialized once inlined; the warning is spurious (the lanes are all overwritten).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <cstddef>
#include <cstring>
#include <type_traits>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "depthkv/detail/target.hpp"
#include "depthkv/score/detail/window_common.hpp"
#include "depthkv/types.hpp"

namespace depthkv::detail::DEPTHKV_AVX512_NS {
DEPTHKV_AVX512_BEGIN

struct window_vt {
  using reg = __m512;
  static constexpr std::size_t lanes = 16;
  static constexpr int mk1 = 24;  // 24 accumulators + 1 query vector
  static constexpr int mk2 = 12;  // 24 accumulators + 2 query vectors
  static constexpr int mkp = 12;  // pair tiles: 24 accumulators + 2 query vectors + broadcast
  static constexpr int mk4 = 6;  // 24 accumulators + 4 query vectors

  static reg zero() noexcept { return _mm512_setzero_ps(); }
  static reg load(const float* p) noexcept { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) noexcept { _mm512_storeu_ps(p, v); }
  static reg set1(float x) noexcept { return _mm512_set1_ps(x); }
  static reg fmadd(reg a, reg b, reg c) noexcept { return _mm512_fmadd_ps(a, b, c); }
  static reg add(reg a, reg b) noexcept { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) noexcept { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) noexcept { return _mm512_mul_ps(a, b); }
  static reg max(reg a, reg b) noexcept { return _mm512_max_ps(a, b); }
  static reg div(reg a, reg b) noexcept { return _mm512_div_ps(a, b); }
  static reg abs(reg a) noexcept { return _mm512_andnot_ps(_mm512_set1_ps(-0.f), a); }
  // |mag| with the sign bit of sgn (mag has its sign bit clear).
  static reg copy_sign(reg mag, reg sgn) noexcept { return _mm512_or_ps(mag, _mm512_and_ps(_mm512_set1_ps(-0.f), sgn)); }
  // Per lane a < b ? x : y (false for NaN).
  static reg select_lt(reg a, reg b, reg x, reg y) noexcept {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
  }
  // (p[0], p[1]) repeated in every 64-bit pair of lanes.
  static reg bcast2(const float* p) noexcept {
    double x;
    std::memcpy(&x, p, sizeof x);
    return _mm512_castpd_ps(_mm512_set1_pd(x));
  }
  // Lanes 2i, 2i+1 of a summed into lane i, of b into lane 8 + i.
  static reg pair_sum(reg a, reg b) noexcept {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_add_ps(_mm512_permutex2var_ps(a, ev, b), _mm512_permutex2var_ps(a, od, b));
  }
  static float reduce_add(reg v) noexcept {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
  }
  // Lane i = sum of the lanes of r[i], for 16 vectors (a transposing add tree, 45 shuffles/adds).
  static reg transpose_sum(const reg* r) noexcept {
    reg t[8], u[4];
    for (int i = 0; i < 8; ++i)  // per 128-bit chunk: [a0+a2, b0+b2, a1+a3, b1+b3]
      t[i] = _mm512_add_ps(_mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]));
    for (int i = 0; i < 4; ++i)  // per chunk c: rows 4i..4i+3 summed over chunk c
      u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44), _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
    const reg x = _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
    const reg y = _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
  }
  // 2^x for x <= 0 (and -inf -> 0, NaN -> NaN); relative error ~2.3e-7 (exp2_poly).
  static reg exp2(reg x) noexcept {
    x = _mm512_max_ps(_mm512_set1_ps(-200.f), x);  // NaN in x survives (max returns 2nd operand)
    const reg n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const reg f = _mm512_sub_ps(x, n);  // [-0.5, 0.5]
    reg p = _mm512_set1_ps(exp2_poly[5]);
#pragma GCC unroll 5
    for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(exp2_poly[i]));
    return _mm512_scalef_ps(p, n);
  }
  template <class T>
  static void convert_row(const T* src, float* dst, std::size_t d) noexcept {
    std::size_t i = 0;
    const std::size_t vend = d - d % 16;
    if constexpr (std::is_same_v<T, f16>) {
      for (; i < vend; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    } else if constexpr (std::is_same_v<T, bf16>) {
      for (; i < vend; i += 16) {
        const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
      }
    }
    // Tail (< 16 elements; the whole row for f32).
    for (std::size_t t = i; t < d; ++t) dst[t] = static_cast<float>(src[t]);
  }
};

#include "depthkv/score/detail/window_simd.inl"

DEPTHKV_AVX512_END
}  // namespace depthkv::detail::DEPTHKV_AVX512_NS

#if DEPTHKV_TU_ABOVE_AVX512
namespace depthkv::detail::avx512 {  // the shared copies, defined by TUs not above this path (detail/target.hpp)
DEPTHKV_WEAK void window_f32(const window_job&, const float*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_f16(const window_job&, const f16*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_bf16(const window_job&, const bf16*, std::ptrdiff_t, float*, float*) noexcept;
DEPTHKV_WEAK void window_tanh(const float*, float*, std::size_t) noexcept;
}  // namespace depthkv::detail::avx512
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif
