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

// Gathers every kv head's keys (and positions) into ws; returns the row stride (longest head).
template <class T>
std::size_t gather_layer(const char* where, const paged_layer<T>& layer, paged_prune_workspace<std::remove_const_t<T>>& ws) {
  const std::size_t H = layer.n_kv_heads, d = layer.keys.shape().head_dim;
  const bool has_pos = !layer.positions.empty();
  ws.lengths.resize(H);
  std::size_t stride = 0;
  for (std::size_t h = 0; h < H; ++h) stride = std::max(stride, ws.lengths[h] = layer.length(h));
  const std::size_t head_elems = checked_mul(where, stride, d, "rows ", stride, " * head_dim ", d);
  ws.keys.resize(checked_mul(where, H, head_elems, "n_kv_heads ", H, " * rows * head_dim"));
  if (has_pos) ws.positions.resize(H * stride);
  for (std::size_t h = 0; h < H; ++h) {
    gather_keys(layer, h, ws.keys.data() + h * head_elems);
    if (has_pos)
      for (std::size_t t = 0; t < ws.lengths[h]; ++t) ws.positions[h * stride + t] = *layer.position(h, t);
  }
  return stride;
}

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
/// Thread safety (also of prune_paged_blocks): a call writes only the rows and position slots of
/// the blocks in `layer.tables`, the tables, `ws` and the policy's state of (layer_index, each
/// head); it reads the queries. So calls on views of different sequences over the same pools may
/// run concurrently when their tables hold disjoint blocks (a block shared between sequences,
/// as prefix caching shares them, must not be pruned in place at all), each thread has its own
/// workspace, and no two calls share a policy state's (layer, head) (h2o: one h2o_state per
/// sequence). Queries and stateless policies may be shared. On a paged_cache: see paged_cache.
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
  const std::size_t stride = detail::gather_layer(where, layer, ws);
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

/// How block-granular pruning turns the tokens' scores into one score per block.
enum class block_score { sum, max };

/// Block-granular pruning of one sequence's paged layer (PagedEviction-style): no row moves.
/// Each table keeps its `keep` best blocks, ranked by the sum (or max) of their tokens' policy
/// scores; the blocks holding the policy's first n_sink and last n_recent tokens (at least the
/// first and the last block) are always kept and count toward `keep`. One table for all heads
/// ranks by the scores averaged over heads. Each table's ids are reordered in place: the kept
/// ones first, in token order (`blocks` becomes that prefix, `last_fill` stays), the dropped
/// ones after it, for the engine to free. Returns how many blocks the tables released. A policy
/// with state (h2o) follows: its rows are compacted to the kept blocks' tokens.
/// Errors (nothing changed): what check_paged_layer rejects, keep below a table's protected
/// blocks, what the policy rejects.
template <class T, class Policy>
std::size_t prune_paged_blocks(const paged_layer<T>& layer, std::size_t layer_index, blocks keep, const Policy& policy,
                               paged_prune_workspace<std::remove_const_t<T>>& ws, const layer_queries& queries = {},
                               block_score aggregate = block_score::sum) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  static_assert(!std::is_const_v<T>, "prune_paged_blocks reorders the tables: the view must be mutable");
  using U = std::remove_const_t<T>;
  constexpr const char* where = "depthkv::prune_paged_blocks";
  detail::check_paged_layer(where, layer, ws.seen);
  const std::size_t H = layer.n_kv_heads, B = layer.keys.shape().block_size, d = layer.keys.shape().head_dim;
  const std::size_t stride = detail::gather_layer(where, layer, ws);
  const detail::paged_heads<U> heads{&ws, stride, d, !layer.positions.empty()};
  // Protected blocks of a table of nb blocks holding n tokens.
  auto protected_blocks = [&](std::size_t n, std::size_t nb, std::size_t& first, std::size_t& last) {
    first = std::max<std::size_t>(1, (std::min(policy.n_sink, n) + B - 1) / B);
    last = std::max<std::size_t>(1, (std::min(policy.n_recent, n) + B - 1) / B);
    return std::min(nb, first + last);
  };
  for (std::size_t i = 0; i < layer.tables.size(); ++i) {
    const std::size_t nb = layer.tables[i].blocks.size(), n = ws.lengths[i];
    std::size_t f = 0, l = 0;
    const std::size_t prot = protected_blocks(n, nb, f, l);
    DEPTHKV_CHECK(nb <= keep.value || prot <= keep.value, where, "keep ", keep.value, " blocks for table ", i,
                  " is below its protected blocks (", prot, ": the first ", f, " and last ", l, " of ", nb, ", for ",
                  policy.name, " n_sink ", policy.n_sink, " + n_recent ", policy.n_recent, ")");
  }
  for (std::size_t h = 0; h < H; ++h)
    if (ws.lengths[h] > 0) policy.check(detail::make_input(layer_index, h, H, heads(h), queries));
  // Validated: score, rank, then reorder the tables.
  prune_workspace& pw = ws.pipeline;
  const std::size_t max_blocks = (stride + B - 1) / B;
  prune_workspace::grow(pw.scores, (H + 1) * stride);
  prune_workspace::grow(pw.cand_score, max_blocks);
  prune_workspace::grow(pw.pick, max_blocks);
  prune_workspace::grow(pw.keep, stride);
  prune_workspace::grow(pw.cand_ref, max_blocks);
  for (std::size_t h = 0; h < H; ++h)
    if (ws.lengths[h] > 0)
      policy.score(detail::make_input(layer_index, h, H, heads(h), queries),
                   span<float>(pw.scores.data() + h * stride, ws.lengths[h]), pw.score);
  if (layer.tables.size() == 1 && H > 1) {  // one ranking for all heads: their mean
    float* mean = pw.scores.data() + H * stride;
    const std::size_t n = ws.lengths[0];
    for (std::size_t j = 0; j < n; ++j) {
      float acc = 0.f;
      for (std::size_t h = 0; h < H; ++h) acc += pw.scores[h * stride + j];
      mean[j] = acc / static_cast<float>(H);
    }
  }
  std::size_t released = 0;
  for (std::size_t i = 0; i < layer.tables.size(); ++i) {
    block_table& t = layer.tables[i];
    const std::size_t nb = t.blocks.size(), n = ws.lengths[i];
    if (nb <= keep.value) continue;
    const float* sc = pw.scores.data() + (layer.tables.size() == 1 && H > 1 ? H : i) * stride;
    for (std::size_t b = 0; b < nb; ++b) {
      const std::size_t lo = b * B, hi = std::min(n, lo + B);
      float acc = aggregate == block_score::sum ? 0.f : sc[lo];
      for (std::size_t j = lo; j < hi; ++j) acc = aggregate == block_score::sum ? acc + sc[j] : std::max(acc, sc[j]);
      pw.cand_score[b] = acc;
    }
    std::size_t f = 0, l = 0;
    (void)protected_blocks(n, nb, f, l);
    const std::size_t kept = topk(span<const float>(pw.cand_score.data(), nb), keep.value,
                                  span<index_t>(pw.pick.data(), nb), topk_options{f, l}, pw.select);
    // Kept ids first (token order), dropped ids after; tokens of the kept blocks for the policy.
    std::size_t nk = 0, p = 0, nd = 0;
    for (std::size_t b = 0; b < nb; ++b) {
      if (p < kept && pw.pick[p] == b) {
        ++p;
        for (std::size_t j = b * B; j < std::min(n, b * B + B); ++j) pw.keep[nk++] = static_cast<index_t>(j);
        t.blocks[p - 1] = t.blocks[b];  // p - 1 <= b: never overwrites an id still to be read
      } else {
        pw.cand_ref[nd++] = static_cast<index_t>(t.blocks[b]);
      }
    }
    for (std::size_t j = 0; j < nd; ++j) t.blocks[kept + j] = static_cast<std::int32_t>(pw.cand_ref[j]);
    t.blocks = t.blocks.first(kept);
    released += nb - kept;
    const span<const index_t> tok(pw.keep.data(), nk);
    if (layer.tables.size() == 1)
      for (std::size_t h = 0; h < H; ++h) detail::notify_retain(policy, layer_index, h, tok);
    else
      detail::notify_retain(policy, layer_index, i, tok);
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

/// prune_paged_blocks on an owning paged_cache: keeps `keep` blocks of each kv head of
/// (sequence, layer) and returns the dropped ones to the layer's pool. Returns how many were
/// returned. Errors as prune_paged_blocks; nothing changes.
template <class T, class Policy>
std::size_t prune_paged_blocks(paged_cache<T>& cache, typename paged_cache<T>::sequence_id sequence, std::size_t layer,
                               blocks keep, const Policy& policy, paged_prune_workspace<T>& ws,
                               const layer_queries& queries = {}, block_score aggregate = block_score::sum) {
  const paged_layer<T> view = cache.layer_view(sequence, layer, ws.tables);
  (void)prune_paged_blocks(view, layer, keep, policy, ws, queries, aggregate);
  return cache.commit_tables(sequence, layer, span<const block_table>(ws.tables));
}

}  // namespace depthkv
