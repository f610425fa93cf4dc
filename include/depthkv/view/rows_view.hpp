// Non-owning view of one head's rows (K or V): the unit the score and compaction kernels take.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <type_traits>

#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Rows of one head: row t is `dim` dense elements at data + t * stride. Non-owning.
/// T may be const. Kernels (score, compact) work on this; it is valid for any layout.
template <class T>
struct rows_view {
  T* data = nullptr;
  std::size_t n = 0;          ///< rows
  std::size_t dim = 0;        ///< elements per row
  std::ptrdiff_t stride = 0;  ///< elements between consecutive rows (>= dim)

  T* row(std::size_t t) const noexcept {
    DEPTHKV_ASSERT(t < n);
    return data + static_cast<std::ptrdiff_t>(t) * stride;
  }
  operator rows_view<const T>() const noexcept { return {data, n, dim, stride}; }
};

namespace detail {
inline std::size_t abs_stride(std::ptrdiff_t s) noexcept {
  // -(s + 1) + 1 instead of -s: PTRDIFF_MIN has no positive counterpart.
  return s < 0 ? static_cast<std::size_t>(-(s + 1)) + 1 : static_cast<std::size_t>(s);
}

/// Largest element offset a view may address: byte offsets must fit in ptrdiff_t.
template <class T>
constexpr std::size_t max_view_elements() noexcept {
  return ptrdiff_max / sizeof(T);
}

/// Throws unless `rows` addresses a valid range: data set when rows exist, dim > 0, rows that do
/// not overlap (|stride| >= dim when n > 1), and (n - 1) * |stride| + dim elements whose byte
/// offsets fit in ptrdiff_t.
template <class T>
void check_rows_view(const char* where, const char* name, const rows_view<T>& rows) {
  if (rows.n == 0) return;
  DEPTHKV_CHECK(rows.dim > 0, where, name, ".dim must be > 0 for ", rows.n, " rows");
  DEPTHKV_CHECK(rows.data != nullptr, where, name, ".data is null for ", rows.n, " rows");
  const std::size_t st = abs_stride(rows.stride);
  DEPTHKV_CHECK(rows.n == 1 || st >= rows.dim, where, name, ".stride ", rows.stride, " overlaps rows of dim ",
                rows.dim);
  std::size_t span_elems = 0;
  DEPTHKV_CHECK(mul_fits(rows.n - 1, st, span_elems) && add_fits(span_elems, rows.dim, span_elems) &&
                    span_elems <= max_view_elements<T>(),
                where, name, ": ", rows.n, " rows of stride ", rows.stride, " and dim ", rows.dim,
                " address more than ", max_view_elements<T>(), " elements");
}

/// a * b as an element stride, or throws naming the two counts.
inline std::ptrdiff_t checked_stride(const char* where, std::size_t a, const char* a_name, std::size_t b,
                                     const char* b_name) {
  std::size_t r = 0;
  DEPTHKV_CHECK(mul_fits(a, b, r) && r <= ptrdiff_max, where, a_name, " ", a, " * ", b_name, " ", b,
                " overflows the element stride");
  return static_cast<std::ptrdiff_t>(r);
}
}  // namespace detail

DEPTHKV_BASELINE_END
}  // namespace depthkv
