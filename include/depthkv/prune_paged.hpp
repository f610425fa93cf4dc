// The prune pipeline over paged memory, token-granular: score each kv head's tokens, select with
// the same policies and modes as the dense pipeline, move the kept rows to the front of the
// sequence's blocks in position order, and shorten the block tables so the emptied trailing
// blocks can go back to the pool.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <vector>

#include "depthkv/cache/paged_cache.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/raise.hpp"
#include "depthkv/prune.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/paged.hpp"

namespace depthkv {

/// Caller-owned scratch of prune_paged, reused across calls (one per thread): the pipeline's
/// workspace plus each head's keys and positions gathered into dense rows for the scorers.
template <class T>
class paged_prune_workspace {
  static_assert(is_kv_element_v<T> && !std::is_const_v<T>, "depthkv::paged_prune_workspace<T>: T is the element type");

 public:
  /// Bytes held by every buffer.
  std::size_t bytes_reserved() const noexcept {
    return pipeline.bytes_reserved() + keys.capacity() * sizeof(T) + positions.capacity() * sizeof(pos_t) +
           seen.capacity() + lengths.capacity() * sizeof(std::size_t) + tables.capacity() * sizeof(block_table);
  }

  prune_workspace pipeline;
  std::vector<T> keys;               ///< [n_kv_heads][stride][head_dim] gathered keys
  std::vector<pos_t> positions;      ///< [n_kv_heads][stride] gathered positions
  std::vector<std::uint8_t> seen;    ///< block marks of the validation (all zero between calls)
  std::vector<std::size_t> lengths;  ///< [n_kv_heads] tokens before the prune
  std::vector<block_table> tables;   ///< paged_cache's tables of the layer being pruned
};

namespace detail {

// Gathered heads of a paged layer, as the dense pipeline reads them.
template <class T>
struct paged_heads {
  const paged_prune_workspace<T>* ws;
  std::size_t stride, head_dim;
  bool has_positions;
  head_ref<T> operator()(std::size_t h) const {
    const std::size_t n = ws->lengths[h];
    const T* k = ws->keys.data() + h * stride * head_dim;
    return {rows_view<const T>{k, n, head_dim, static_cast<std::ptrdiff_t>(head_dim)},
            has_positions ? span<const pos_t>(ws->positions.data() + h * stride, n) : span<const pos_t>{}};
  }
};

// Moves kv head h's token keep[i] to token i (i < keep.size()), K and V (and the positions when
// `positions` is set). keep is strictly ascending, so keep[i] >= i and a forward pass never
// overwrites a row it still needs.
template <class T>
void move_paged_rows(const paged_layer<T>& layer, std::size_t h, span<const index_t> keep, bool positions) noexcept {
  const std::size_t bytes = layer.keys.shape().head_dim * sizeof(T);
  for (std::size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] == i) continue;
    std::memcpy(layer.key_row(h, i), layer.key_row(h, keep[i]), bytes);
    std::memcpy(layer.value_row(h, i), layer.value_row(h, keep[i]), bytes);
    if (positions) *layer.position(h, i) = *layer.position(h, keep[i]);
  }
}

// The table that holds n tokens: the first ceil(n / block_size) blocks, the last filled to the rest.
inline void shorten_table(block_table& t, std::size_t n, std::size_t block_size) noexcept {
  const std::size_t nb = (n + block_size - 1) / block_size;
  t.blocks = t.blocks.first(nb);
  t.last_fill = nb == 0 ? 0 : n - (nb - 1) * block_size;
}

}  // namespace detail

/// Prunes one sequence's layer of paged memory to `keep` tokens per kv head with `policy`
/// (scoring, protected rows, modes as prune_layer). Kept rows move to the front of each table's
/// blocks in position order; each table is shortened in place (`layer.tables[i].blocks` becomes
/// a prefix of itself, `last_fill` follows), so the ids past the new end are free for the
/// engine to return to its pool. Returns how many blocks the tables released.
/// One table for all heads (pages of every head) keeps one token set: it needs
/// granularity::shared. Per-head tables allow every mode.
/// Errors (depthkv::error, nothing changed): what check_paged_layer rejects, a mode the tables
/// cannot hold, and what prune_layer rejects (keep below the protected rows, policy inputs).
/// Complexity: a gather of each head's keys (n * head_dim), scoring, selection, the row moves.
template <class T, class Policy>
std::size_t prune_paged(const paged_layer<T>& layer, std::size_t layer_index, std::size_t keep, const Policy& policy,
                        paged_prune_workspace<std::remove_const_t<T>>& ws, const layer_queries& queries = {},
                        const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  static_assert(!std::is_const_v<T>, "prune_paged moves rows: the pools must be mutable");
  constexpr const char* where = "depthkv::prune_paged";
  detail::check_paged_layer(where, layer, ws.seen);
  const std::size_t H = layer.n_kv_heads, d = layer.keys.shape().head_dim, B = layer.keys.shape().block_size;
  const bool one_table = layer.tables.size() == 1 && H > 1;
  DEPTHKV_CHECK(!one_table || opt.mode == granularity::shared, where,
                "one block table for all ", H, " kv heads keeps one token set: it needs granularity::shared "
                "(per-head tables allow per_head and adaptive)");
  const bool has_pos = !layer.positions.empty();
  // Gather (sizes: stride * head_dim per head, overflow-checked).
  ws.lengths.resize(H);
  std::size_t stride = 0;
  for (std::size_t h = 0; h < H; ++h) stride = std::max(stride, ws.lengths[h] = layer.length(h));
  const std::size_t head_elems = detail::checked_mul(where, stride, d, "rows ", stride, " * head_dim ", d);
  ws.keys.resize(detail::checked_mul(where, H, head_elems, "n_kv_heads ", H, " * rows * head_dim"));
  if (has_pos) ws.positions.resize(H * stride);
  for (std::size_t h = 0; h < H; ++h) {
    gather_keys(layer, h, ws.keys.data() + h * head_elems);
    if (has_pos)
      for (std::size_t t = 0; t < ws.lengths[h]; ++t) ws.positions[h * stride + t] = *layer.position(h, t);
  }
  const detail::paged_heads<std::remove_const_t<T>> heads{&ws, stride, d, has_pos};
  detail::check_layer_prune<std::remove_const_t<T>>(where, layer_index, H, heads, keep, policy, queries, opt);
  // Validated: now mutate. With one table the heads share position slots: move those once.
  detail::select_and_retain<std::remove_const_t<T>>(
      layer_index, H, heads, keep, policy, queries, opt, ws.pipeline,
      [&](std::size_t h, span<const index_t> k) { detail::move_paged_rows(layer, h, k, has_pos && (!one_table || h == 0)); });
  // Tables last: the moves above address tokens through them.
  std::size_t released = 0;
  for (std::size_t i = 0; i < layer.tables.size(); ++i) {
    const std::size_t before = layer.tables[i].blocks.size();
    detail::shorten_table(layer.tables[i], std::min(ws.lengths[i], ws.pipeline.counts[i]), B);
    released += before - layer.tables[i].blocks.size();
  }
  return released;
}

/// prune_paged on an owning paged_cache: prunes (sequence, layer) and returns the emptied blocks
/// to the layer's pool. Returns how many were returned. Errors as prune_paged; nothing changes.
template <class T, class Policy>
std::size_t prune_paged(paged_cache<T>& cache, typename paged_cache<T>::sequence_id sequence, std::size_t layer,
                        std::size_t keep, const Policy& policy, paged_prune_workspace<T>& ws,
                        const layer_queries& queries = {}, const prune_options& opt = {}) {
  const paged_layer<T> view = cache.layer_view(sequence, layer, ws.tables);
  (void)prune_paged(view, layer, keep, policy, ws, queries, opt);
  return cache.commit_tables(sequence, layer, span<const block_table>(ws.tables));
}

}  // namespace depthkv
