// Shapes and strides of one layer's K or V memory: NHD and HND layouts.
#pragma once

#include <cstddef>

#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

// How an engine lays out one layer's K (or V):
//   nhd: [token][kv_head][head_dim]  (llama.cpp-like; token slots shared across heads)
//   hnd: [kv_head][token][head_dim]  (each head's rows contiguous; vLLM/FlashInfer-like)
enum class layout { nhd, hnd };

constexpr const char* layout_name(layout l) noexcept { return l == layout::nhd ? "nhd" : "hnd"; }

// Logical shape of one layer's K or V: [n_heads][n_tokens][head_dim].
struct kv_shape {
  std::size_t n_heads = 0;
  std::size_t n_tokens = 0;
  std::size_t head_dim = 0;

  constexpr std::size_t elements() const noexcept { return n_heads * n_tokens * head_dim; }
  friend constexpr bool operator==(const kv_shape& a, const kv_shape& b) noexcept {
    return a.n_heads == b.n_heads && a.n_tokens == b.n_tokens && a.head_dim == b.head_dim;
  }
  friend constexpr bool operator!=(const kv_shape& a, const kv_shape& b) noexcept { return !(a == b); }
};

// Element strides of the head and token dimensions; the head_dim dimension is always dense.
struct kv_strides {
  std::ptrdiff_t head = 0;
  std::ptrdiff_t token = 0;
};

// Dense strides of `l` for a buffer that holds `token_capacity` (>= shape.n_tokens) token slots.
constexpr kv_strides dense_strides(layout l, const kv_shape& s, std::size_t token_capacity) noexcept {
  const auto d = static_cast<std::ptrdiff_t>(s.head_dim);
  if (l == layout::nhd) return {d, static_cast<std::ptrdiff_t>(s.n_heads) * d};
  return {static_cast<std::ptrdiff_t>(token_capacity) * d, d};
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
