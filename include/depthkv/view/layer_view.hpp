// One layer of engine-owned KV memory as the prune pipeline sees it: K, V, positions, lengths.
#pragma once

#include <cstddef>

#include "depthkv/types.hpp"
#include "depthkv/view/kv_view.hpp"
#include "depthkv/view/positions.hpp"

namespace depthkv {

// A plain aggregate, no functions: nothing here needs the baseline target region of
// detail/target.hpp (clang warns on an empty one).
/// Non-owning. keys and values: [n_heads][n_tokens][head_dim] views of the same shape (any
/// layout); positions: where the rows' positions are (or none); lengths: [n_heads], in: rows of
/// head h that hold tokens (<= n_tokens; heads may differ), out: rows kept after a prune.
template <class T>
struct layer_view {
  kv_view<T> keys{};
  kv_view<T> values{};
  layer_positions positions{};
  span<std::size_t> lengths{};
};

}  // namespace depthkv
