// Non-owning rows of a row-major matrix of plain values (score rows, index rows).
#pragma once

#include <cstddef>

#include "depthkv/detail/target.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// n_rows rows of `length` values; row r is data[r * stride, r * stride + length). The callee
/// checks that every row lies within data and that stride >= length (rows do not overlap).
template <class T>
struct strided_rows {
  span<T> data{};
  std::size_t n_rows = 0;
  std::size_t length = 0;  ///< values per row
  std::size_t stride = 0;  ///< values from one row's start to the next

  /// Rows packed back to back: stride = length.
  static constexpr strided_rows dense(span<T> data, std::size_t n_rows, std::size_t length) noexcept {
    return {data, n_rows, length, length};
  }
  /// Same memory, rows `stride` apart.
  static constexpr strided_rows with_stride(span<T> data, std::size_t n_rows, std::size_t length,
                                            std::size_t stride) noexcept {
    return {data, n_rows, length, stride};
  }
  T* row(std::size_t r) const noexcept { return data.data() + r * stride; }
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
