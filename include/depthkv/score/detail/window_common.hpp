// Shared pieces of the window-scoring kernels: the validated job description, tiling of the
// query rows, scratch sizing, and the portable scalar kernel (the reference the SIMD paths
// are tested against).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/types.hpp"

// Code whose machine code depends on the TU's ISA flags (the dispatching entry points) lives in
// an inline namespace named after those flags, so TUs built with different -m flags link
// distinct symbols instead of violating the one-definition rule. Callers never name it.
#if DEPTHKV_HAVE_AVX512
#define DEPTHKV_SCORE_TARGET_NS score_target_avx512
#elif DEPTHKV_HAVE_AVX2
#define DEPTHKV_SCORE_TARGET_NS score_target_avx2
#else
#define DEPTHKV_SCORE_TARGET_NS score_target_generic
#endif

namespace depthkv::detail {

// One kv head's window-scoring job, validated by the public entry.
//   queries of the GQA group: row (h, i) = q + h * q_hs + i * q_rs, h < g, i < w, head_dim d
//   keys: n rows of d elements, row j at keys + j * k_stride (passed separately, typed)
//   limit[i]: how many leading keys window query i may attend to (causal mask), <= n
//   qscale: softmax scale (1/sqrt(d) by default) applied to q.k
struct window_job {
  const float* q = nullptr;
  std::ptrdiff_t q_hs = 0, q_rs = 0;
  std::size_t g = 0, w = 0, d = 0, n = 0;
  float qscale = 1.f;
  const std::size_t* limit = nullptr;
  bool reduce_max = false;
};

inline constexpr float log2e_f = 1.4426950408889634f;

// A NaN row sum (NaN in the keys or queries) makes the row's weights NaN: errors stay visible.
inline float z_nan(double) noexcept { return std::numeric_limits<float>::quiet_NaN(); }

// 2^f ~= sum_i exp2_poly[i] f^i on [-0.5, 0.5] (near-minimax relative error, 2.3e-7 measured in
// float Horner evaluation): degree 5 is the smallest with float-level accuracy, and every term
// saved is an FMA taken from the GEMM of the SIMD kernels.
inline constexpr float exp2_poly[6] = {1.0000000716554316f, 0.6931469670620406f, 0.24022119720073748f,
                                       0.05550713276095537f, 0.009675541540130103f, 0.0013276471736728655f};

// exp2 on [-inf, 0] for the scalar path (std::exp2 is accurate; this path is the reference).
inline float exp2_scalar(float x) noexcept { return std::exp2(x); }

// Converts one row of d elements to float.
template <class T>
inline void convert_row_scalar(const T* src, float* dst, std::size_t d) noexcept {
  for (std::size_t i = 0; i < d; ++i) dst[i] = static_cast<float>(src[i]);
}

// Floats of scratch the scalar kernel needs: logits of one query row [n] + one head's sums [n]
// + one converted key row [d].
inline std::size_t window_scratch_scalar(std::size_t n, std::size_t d) noexcept { return sat_add(sat_mul(2, n), d); }

// Scalar kernel: out[j] = reduce over the g heads of sum_i softmax_i(q_i . k_j * scale)[j], where
// reduce is mean or max and the softmax of query i runs over keys j < limit[i] only.
// Logits in float (single rounding per FMA step, like the SIMD kernels), normalisers in double.
template <class T>
void window_kernel_scalar(const window_job& job, const T* keys, std::ptrdiff_t k_stride, float* out,
                          float* scratch) noexcept {
  const std::size_t n = job.n, d = job.d;
  float* logit = scratch;
  float* hsum = scratch + n;
  float* krow = scratch + 2 * n;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (std::size_t j = 0; j < n; ++j) out[j] = job.reduce_max ? ninf : 0.f;
  const float s = job.qscale * log2e_f;
  for (std::size_t h = 0; h < job.g; ++h) {
    std::fill(hsum, hsum + n, 0.f);
    for (std::size_t i = 0; i < job.w; ++i) {
      const float* q = job.q + static_cast<std::ptrdiff_t>(h) * job.q_hs + static_cast<std::ptrdiff_t>(i) * job.q_rs;
      const std::size_t lim = job.limit[i];
      if (lim == 0) continue;
      float m = ninf;
      for (std::size_t j = 0; j < lim; ++j) {
        const T* kr = keys + static_cast<std::ptrdiff_t>(j) * k_stride;
        convert_row_scalar(kr, krow, d);
        float acc = 0.f;
        for (std::size_t t = 0; t < d; ++t) acc = std::fma(q[t] * s, krow[t], acc);
        logit[j] = acc;
        m = std::max(m, acc);
      }
      if (!(m > ninf)) m = 0.f;  // all -inf (or NaN): contributes zeros / NaN as the data says
      double z = 0.0;
      for (std::size_t j = 0; j < lim; ++j) {
        logit[j] = exp2_scalar(logit[j] - m);
        z += logit[j];
      }
      const float inv = z > 0.0 ? static_cast<float>(1.0 / z) : z != z ? z_nan(z) : 0.f;
      for (std::size_t j = 0; j < lim; ++j) hsum[j] += logit[j] * inv;
    }
    if (job.reduce_max) {
      for (std::size_t j = 0; j < n; ++j) out[j] = std::max(out[j], hsum[j]);
    } else {
      for (std::size_t j = 0; j < n; ++j) out[j] += hsum[j];
    }
  }
  if (!job.reduce_max) {
    const float inv_g = 1.f / static_cast<float>(job.g);
    for (std::size_t j = 0; j < n; ++j) out[j] *= inv_g;
  }
}

}  // namespace depthkv::detail
