// Shared pieces of the top-k kernels: the order-preserving float -> int32 key map, the exact
// small-range select, and the kernel-set contract. Plain code, compiled for the x86-64 baseline
// (every path inlines it).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/select/detail/topk_types.hpp"
#include "depthkv/types.hpp"

namespace depthkv::detail {
DEPTHKV_BASELINE_BEGIN

// Floats of candidate scratch a row of n scores needs (two regions, see topk_find_threshold).
constexpr std::size_t topk_scratch_floats(std::size_t n) noexcept { return n + 32 + n / 2 + 32; }

// Below this many scores the threshold comes from the kernel's exact select on all keys.
inline constexpr std::size_t topk_exact_below = 2048;

// Ranking key: a signed int32 whose order is the ranking order of scores. Numbers map
// monotonically (-0.0 and +0.0 to the same key 0, so they compare as values do: equal);
// every NaN maps to key_nan, below -inf. -inf and +inf are ordinary keys.
inline constexpr std::int32_t key_nan = std::numeric_limits<std::int32_t>::min();

inline std::int32_t float_key(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return key_nan;
  // Negative floats: flip the magnitude bits (larger magnitude -> smaller key), then add one
  // so that -0.0 (0x80000000 -> -1) lands on +0.0's key 0.
  const std::uint32_t sgn = static_cast<std::uint32_t>(static_cast<std::int32_t>(u) >> 31);
  const std::uint32_t k = (u ^ (sgn & 0x7fffffffu)) - sgn;
  return static_cast<std::int32_t>(k);
}

// A float whose key is `k` (+0.0 for key 0, a quiet NaN for key_nan). Float comparisons with it
// agree with key comparisons for every non-NaN score.
inline float key_float(std::int32_t k) noexcept {
  if (k == key_nan) return std::numeric_limits<float>::quiet_NaN();
  std::uint32_t u = static_cast<std::uint32_t>(k);
  if (k < 0) u = (u - 1u) ^ 0x7fffffffu;
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}

inline const std::int32_t key_neg_inf = float_key(-std::numeric_limits<float>::infinity());
inline const std::int32_t key_pos_inf = float_key(std::numeric_limits<float>::infinity());

// Threshold key T = the rank-th largest key, with the number of keys above T and equal to T.
struct topk_threshold {
  std::int32_t key = 0;
  std::size_t above = 0;
  std::size_t ties = 0;
};

// Threshold of keys[0..len) by std::nth_element (reorders keys); `above` is added to the count.
inline topk_threshold select_nth(std::int32_t* keys, std::size_t len, std::size_t rank,
                                 std::size_t above) noexcept {
  std::nth_element(keys, keys + (rank - 1), keys + len, std::greater<std::int32_t>());
  const std::int32_t t = keys[rank - 1];
  std::size_t gt = 0, eq = 0;
  for (std::size_t i = 0; i < len; ++i) {
    gt += keys[i] > t;
    eq += keys[i] == t;
  }
  return {t, above + gt, eq};
}

// Quickselect pivot: the median of five keys at hash-spread positions of keys[0..len), len >= 5.
inline std::int32_t select_pivot(const std::int32_t* keys, std::size_t len, std::uint32_t& h) noexcept {
  std::int32_t v[5];
  for (int j = 0; j < 5; ++j) {
    h = h * 1664525u + 1013904223u;
    v[j] = keys[(static_cast<std::size_t>(j) * len + (h >> 8) % len) / 5];
  }
  std::sort(v, v + 5);
  return v[2];
}

// Result of a filter pass: how many scores lie above the bracket, how many inside it.
struct filter_counts {
  std::size_t above = 0;
  std::size_t inside = 0;
};

// Kernel set contract (one struct per ISA: scalar::topk_kernels, avx2::..., avx512::...):
//
//   static filter_counts filter(const float* x, size_t n, float lo, float hi, bool lo_is_nan,
//                               float* cand) noexcept;
//     hi is a number (never NaN). Counts x > hi; appends, in order, every x whose key lies in
//     [key(lo), key(hi)] to cand (all NaNs when lo_is_nan). cand has room for n + 16 floats
//     and may equal x (in-place: writes never pass the read position).
//
//   static topk_threshold select(int32_t* keys, size_t len, size_t rank, int32_t* tmp) noexcept;
//     Exact threshold of keys[0..len) at rank (1 <= rank <= len); destroys keys; tmp has room
//     for len + 16 keys.
//
//   static size_t emit(const float* x, size_t n, index_t base, float t, bool t_is_nan,
//                      size_t ties, size_t tie_total, index_t* out, size_t count) noexcept;
//     Writes base + i, ascending, for every x[i] with key > key(t) and for the first `ties`
//     of the `tie_total` ones with key == key(t); exactly `count` indices, into out[0..count).

// Sample of `s` keys (a multiple of 8) from x[0..len): runs of 8 consecutive scores (one cache
// line holds two) at evenly spread, hash-jittered offsets. Pre: len >= 2 * s.
inline void topk_sample(const float* x, std::size_t len, std::size_t s, std::int32_t* keys) noexcept {
  const std::size_t groups = s / 8, span_len = len / groups;
  std::uint32_t h = 0x9e3779b9u;
  for (std::size_t g = 0; g < groups; ++g) {
    h = h * 1664525u + 1013904223u;
    const std::size_t start = g * span_len + (h >> 8) % (span_len - 7);
    for (std::size_t j = 0; j < 8; ++j) keys[g * 8 + j] = float_key(x[start + j]);
  }
}

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail
