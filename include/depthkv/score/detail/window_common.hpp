// Shared pieces of the window-scoring kernels: the validated job description, tiling of the
// query rows, scratch sizing, and the portable scalar kernel (the reference the SIMD paths
// are tested against).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/types.hpp"

namespace depthkv::detail {
DEPTHKV_BASELINE_BEGIN

// One kv head's window-scoring job, validated by the public entry.
//   queries of the GQA group: row (h, i) = q + h * q_hs + i * q_rs, h < g, i < w, head_dim d
//   keys: n rows of d elements, row j at keys + j * k_stride (passed separately, typed)
//   limit[i]: how many leading keys window query i may attend to (causal mask), <= n
//   first[i]: the first key window query i may attend to (sliding window), <= limit[i];
//             query i sees keys [first[i], limit[i])
//   qscale: softmax scale (1/sqrt(d) by default) applied to q.k
//   capped, cap: logit soft-cap, logit -> cap * tanh(logit / cap) before the softmax
struct window_job {
  const float* q = nullptr;
  std::ptrdiff_t q_hs = 0, q_rs = 0;
  std::size_t g = 0, w = 0, d = 0, n = 0;
  float qscale = 1.f;
  const std::size_t* limit = nullptr;
  const std::size_t* first = nullptr;
  bool capped = false;
  float cap = 1.f;
  bool reduce_max = false;
};

inline constexpr float log2e_f = 1.4426950408889634f;

// What the kernels multiply the queries by when packing them, so that the logits they compute
// are q.k * qscale * log2(e) (2^ of them is e^ of the scaled logit), or with a soft-cap
// q.k * qscale / cap (the argument of tanh; see window_cap_log2e).
inline float window_query_factor(const window_job& job) noexcept {
  return job.capped ? job.qscale / job.cap : job.qscale * log2e_f;
}
// Soft-capped kernels turn each logit x = q.k * qscale / cap into cap * log2(e) * tanh(x).
inline float window_cap_log2e(const window_job& job) noexcept { return job.cap * log2e_f; }

// A NaN row sum (NaN in the keys or queries) makes the row's weights NaN: errors stay visible.
inline float z_nan(double) noexcept { return std::numeric_limits<float>::quiet_NaN(); }

// 2^f ~= sum_i exp2_poly[i] f^i on [-0.5, 0.5] (near-minimax relative error, 2.3e-7 measured in
// float Horner evaluation): degree 5 is the smallest with float-level accuracy, and every term
// saved is an FMA taken from the GEMM of the SIMD kernels.
inline constexpr float exp2_poly[6] = {1.0000000716554316f, 0.6931469670620406f, 0.24022119720073748f,
                                       0.05550713276095537f, 0.009675541540130103f, 0.0013276471736728655f};

// tanh(x) ~= x + x u sum_i tanh_poly[i] u^i, u = x^2, for |x| < tanh_poly_max (the SIMD kernels'
// tanh; above it they use (1 - e) / (1 + e), e = e^(-2|x|) <= 0.29, which does not cancel).
// Chebyshev interpolation of (tanh(x)/x - 1)/x^2 in u on [0, 0.625^2] (relative error 1.7e-8 in
// double; float evaluation adds rounding, see the kernels' tanh for the measured bound).
inline constexpr float tanh_poly_max = 0.625f;
inline constexpr float tanh_poly[5] = {-0.3333332894413423f, 0.13332769736974576f, -0.053850909578257715f,
                                       0.02099717899799943f, -0.0060967141645507815f};

// exp2 on [-inf, 0] for the scalar path (std::exp2 is accurate; this path is the reference).
inline float exp2_scalar(float x) noexcept { return std::exp2(x); }

// Converts one row of d elements to float.
template <class T>
inline void convert_row_scalar(const T* src, float* dst, std::size_t d) noexcept {
  for (std::size_t i = 0; i < d; ++i) dst[i] = static_cast<float>(src[i]);
}

// Floats of scratch the scalar kernel needs (scalar::window_scalar_plan::floats, SR = 64 rows,
// KB = 48 keys, MK = 4): packed queries [SR][d] + key block [KB][d] + tail pad [MK][d],
// exponentiated logits [SR][n] + one head's sums [n], per block and lane M_b, S_b
// [2][SR][n / KB + 2], alignment slack.
inline std::size_t window_scratch_scalar(std::size_t n, std::size_t d) noexcept {
  return sat_add(sat_add(sat_mul(116, d), sat_mul(65, n)), sat_add(sat_mul(128, n / 48 + 2), 128));
}

// Scratch layout of the SIMD kernel (floats).
struct window_simd_plan {
  static constexpr std::size_t super_rows = 64;  // query rows whose logits are held at once
  static constexpr std::size_t key_block = 96;   // keys converted / streamed per block
  static constexpr std::size_t group = 48;       // keys per softmax group (multiple of MK and V)
  static std::size_t groups(std::size_t n) noexcept { return n / group + 2; }
  // Saturates at SIZE_MAX instead of wrapping (window_scores rejects shapes that reach it).
  static std::size_t floats(std::size_t n, std::size_t d, std::size_t g) noexcept {
    std::size_t f = sat_mul(super_rows, d);                // packed queries of one super-tile
    f = sat_add(f, sat_mul(super_rows, n));                // exponentiated logits of one super-tile
    f = sat_add(f, sat_mul(key_block + 32, d));            // converted key block (or micro-tile) + zero-padded tail
    f = sat_add(f, 4 * super_rows);                        // per-lane max / limits
    f = sat_add(f, sat_mul(g, n));                         // per-head sums (max reduction)
    f = sat_add(f, sat_mul(2 * super_rows, groups(n)));    // per group and lane: reference max, sum
    return sat_add(f, 96);                                 // alignment slack
  }
};

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail
