// Overflow-checked size arithmetic for the argument checks at public entries (internal header).
// Every size computed from caller-supplied counts, strides or lengths goes through these, so a
// SIZE_MAX-class value is reported as a depthkv::error instead of wrapping past a check.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

#include "depthkv/detail/target.hpp"
#include "depthkv/detail/raise.hpp"

namespace depthkv::detail {
DEPTHKV_BASELINE_BEGIN

inline constexpr std::size_t size_max = std::numeric_limits<std::size_t>::max();
inline constexpr std::size_t ptrdiff_max = static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max());

// out = a + b; false when the exact sum does not fit in size_t.
inline bool add_fits(std::size_t a, std::size_t b, std::size_t& out) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_add_overflow(a, b, &out);
#else
  out = a + b;
  return out >= a;
#endif
}

// out = a * b; false when the exact product does not fit in size_t.
inline bool mul_fits(std::size_t a, std::size_t b, std::size_t& out) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return !__builtin_mul_overflow(a, b, &out);
#else
  out = a * b;
  return a == 0 || out / a == b;
#endif
}

// Saturating a + b and a * b: SIZE_MAX when the exact result does not fit.
inline std::size_t sat_add(std::size_t a, std::size_t b) noexcept {
  std::size_t r;
  return add_fits(a, b, r) ? r : size_max;
}
inline std::size_t sat_mul(std::size_t a, std::size_t b) noexcept {
  std::size_t r;
  return mul_fits(a, b, r) ? r : size_max;
}

// a + b, or throws depthkv::error "<where>: <what...> (a + b) overflows size_t".
template <class... What>
std::size_t checked_add(const char* where, std::size_t a, std::size_t b, What&&... what) {
  std::size_t r;
  if (!add_fits(a, b, r)) fail(where, std::forward<What>(what)..., " (", a, " + ", b, ") overflows size_t");
  return r;
}

// a * b, or throws depthkv::error "<where>: <what...> (a * b) overflows size_t".
template <class... What>
std::size_t checked_mul(const char* where, std::size_t a, std::size_t b, What&&... what) {
  std::size_t r;
  if (!mul_fits(a, b, r)) fail(where, std::forward<What>(what)..., " (", a, " * ", b, ") overflows size_t");
  return r;
}

// Rows of a head of n rows that the first n_sink and last n_recent positions cover:
// min(n, n_sink + n_recent), computed without overflow for any inputs.
constexpr std::size_t protected_rows(std::size_t n, std::size_t n_sink, std::size_t n_recent) noexcept {
  const std::size_t a = n_sink < n ? n_sink : n;
  const std::size_t rest = n - a;
  return a + (n_recent < rest ? n_recent : rest);
}

// A non-negative real as a count in [0, max]: NaN and negatives give 0, values at or beyond max
// give max (a double -> size_t conversion out of range is undefined behaviour).
inline std::size_t clamp_to_count(double x, std::size_t max) noexcept {
  if (!(x > 0.0)) return 0;
  if (x >= static_cast<double>(max)) return max;
  const auto v = static_cast<std::size_t>(x);
  return v < max ? v : max;
}

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail
