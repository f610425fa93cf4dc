// Where one layer's token positions (int32, one per cached row) live in engine memory.
#pragma once

#include <cstddef>

#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Non-owning. Three cases, each named: no positions, one row per kv head, one row shared by all
/// heads (engines whose token slots are shared across heads, NHD-style).
class layer_positions {
 public:
  enum class kind { none, per_head, shared };

  constexpr layer_positions() noexcept = default;

  /// No positions: rows move without them.
  static constexpr layer_positions none() noexcept { return {}; }
  /// Head h's positions start at data + h * head_stride ([n_heads][>= n_tokens]). Throws when data
  /// is null or head_stride is 0 (use shared() for one row).
  static layer_positions per_head(pos_t* data, std::ptrdiff_t head_stride) {
    DEPTHKV_CHECK(data != nullptr, "depthkv::layer_positions::per_head", "data is null");
    DEPTHKV_CHECK(head_stride != 0, "depthkv::layer_positions::per_head",
                  "head_stride is 0 (one row for every head is layer_positions::shared)");
    return layer_positions(data, head_stride, kind::per_head);
  }
  /// One row of positions for every head. Throws when data is null.
  static layer_positions shared(pos_t* data) {
    DEPTHKV_CHECK(data != nullptr, "depthkv::layer_positions::shared", "data is null");
    return layer_positions(data, 0, kind::shared);
  }

  kind which() const noexcept { return kind_; }
  bool empty() const noexcept { return kind_ == kind::none; }
  std::ptrdiff_t head_stride() const noexcept { return stride_; }
  /// Head h's row (the shared row for every h), or null when empty().
  pos_t* head(std::size_t h) const noexcept {
    return kind_ == kind::per_head ? data_ + static_cast<std::ptrdiff_t>(h) * stride_ : data_;
  }

 private:
  constexpr layer_positions(pos_t* d, std::ptrdiff_t s, kind k) noexcept : data_(d), stride_(s), kind_(k) {}

  pos_t* data_ = nullptr;
  std::ptrdiff_t stride_ = 0;
  kind kind_ = kind::none;
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
