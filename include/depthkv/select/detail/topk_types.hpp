// topk_options and topk_scratch, defined under detail/ so that the kernels include no header of
// the folder above them; users include depthkv/select/topk_options.hpp.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "depthkv/detail/grow_buffer.hpp"
#include "depthkv/detail/target.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Positions that are always kept and count toward k: the first n_sink and the last n_recent.
struct topk_options {
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
};

/// Reusable working memory for topk: after it has grown to the largest row seen (or after
/// reserve(n)), topk allocates nothing. One scratch per thread; never shared concurrently.
class topk_scratch {
 public:
  topk_scratch() = default;
  explicit topk_scratch(std::size_t n) { reserve(n); }

  /// Grows the buffers so that rows of up to n scores need no allocation (14 bytes per score).
  void reserve(std::size_t n) {
    cand_.reserve(n + 32 + n / 2 + 32);
    keys_.reserve(n + 16);
    keys2_.reserve(n + 16);
  }

  /// Internal (used by the kernels): a candidate buffer of >= n floats, two key buffers of >= n.
  /// Contents are unspecified (never zero-filled: growing costs an allocation, not a pass).
  float* candidates(std::size_t n) { return cand_.reserve(n); }
  std::int32_t* keys(std::size_t n) { return keys_.reserve(n); }
  std::int32_t* keys2(std::size_t n) { return keys2_.reserve(n); }
  /// Bytes held.
  std::size_t bytes_reserved() const noexcept {
    return cand_.size() * sizeof(float) + (keys_.size() + keys2_.size()) * sizeof(std::int32_t);
  }

 private:
  detail::grow_buffer<float> cand_;
  detail::grow_buffer<std::int32_t> keys_, keys2_;
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
