// The portable window-scoring kernel: the reference the SIMD paths are tested against.
// Compiled for the x86-64 baseline in every TU (the same code whatever the TU's -m flags).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>

#include "depthkv/detail/target.hpp"
#include "depthkv/score/detail/window_common.hpp"
#include "depthkv/types.hpp"

namespace depthkv::detail::scalar {
DEPTHKV_BASELINE_BEGIN

// Scalar kernel: out[j] = reduce over the g heads of sum_i softmax_i(q_i . k_j * scale)[j], where
// reduce is mean or max and the softmax of query i runs over keys j < limit[i] only.
// Logits in float (single rounding per FMA step, like the SIMD kernels), normalisers in double.
template <class T>
void window_kernel(const window_job& job, const T* keys, std::ptrdiff_t k_stride, float* out,
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

// Entry points of the path, one per key element type.
inline void window_f32(const window_job& job, const float* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}
inline void window_f16(const window_job& job, const f16* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}
inline void window_bf16(const window_job& job, const bf16* keys, std::ptrdiff_t k_stride, float* out,
                        float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail::scalar
