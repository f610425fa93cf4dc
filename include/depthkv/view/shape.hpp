// Shapes of K/V memory: named counts that cannot be swapped, layouts, strides.
#pragma once

#include <cstddef>

#include "depthkv/detail/target.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// A count that says what it counts: a distinct type per tag, constructed explicitly. Shapes
/// are built from these, so `kv_shape(tokens{n}, heads{h}, dim{d})` (a swap) does not compile
/// where `(n_heads, n_tokens, head_dim)` as plain integers would pass.
template <class Tag>
struct named_count {
  std::size_t value;
  constexpr explicit named_count(std::size_t v) noexcept : value(v) {}
};
using layers = named_count<struct layers_tag>;
using heads = named_count<struct heads_tag>;
using tokens = named_count<struct tokens_tag>;
using dim = named_count<struct dim_tag>;

/// How an engine lays out one layer's K (or V):
///   nhd: [token][kv_head][head_dim]  (llama.cpp-like; token slots shared across heads)
///   hnd: [kv_head][token][head_dim]  (each head's rows contiguous; vLLM/FlashInfer-like)
enum class layout { nhd, hnd };

constexpr const char* layout_name(layout l) noexcept { return l == layout::nhd ? "nhd" : "hnd"; }

/// Logical shape of one layer's K or V: [n_heads][n_tokens][head_dim], whatever the layout.
/// Built from named counts only: kv_shape(heads{8}, tokens{1024}, dim{128}).
struct kv_shape {
  std::size_t n_heads = 0;
  std::size_t n_tokens = 0;
  std::size_t head_dim = 0;

  constexpr kv_shape() noexcept = default;
  constexpr kv_shape(heads h, tokens t, dim d) noexcept : n_heads(h.value), n_tokens(t.value), head_dim(d.value) {}

  friend constexpr bool operator==(const kv_shape& a, const kv_shape& b) noexcept {
    return a.n_heads == b.n_heads && a.n_tokens == b.n_tokens && a.head_dim == b.head_dim;
  }
  friend constexpr bool operator!=(const kv_shape& a, const kv_shape& b) noexcept { return !(a == b); }
};

/// Element strides of the head and token dimensions; the head_dim dimension is always dense.
struct kv_strides {
  std::ptrdiff_t head = 0;
  std::ptrdiff_t token = 0;
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
