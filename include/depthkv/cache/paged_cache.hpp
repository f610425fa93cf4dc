// Owning paged KV cache for many sequences: per layer one pool of fixed-size blocks (pages of one
// kv head, so heads keep different counts), per (sequence, layer, kv head) a block table. Blocks
// come from a free list per layer; pruning and freeing a sequence really return them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "depthkv/cache/block_allocator.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/raise.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/kv_view.hpp"
#include "depthkv/view/paged.hpp"

namespace depthkv {

/// Where a paged_cache's blocks come from. per_layer: every layer has its own pool of
/// pool_blocks (each layer's memory is fixed). shared: one pool of pool_blocks for all layers, so
/// a layer given a larger budget takes more of it: what turns layer-dependent budgets into
/// capacity (with per-layer pools the layer that keeps the most fills its pool first).
enum class pool_scope { per_layer, shared };

/// Sizes of a paged_cache: pools of `pool_blocks` blocks of `block_size` tokens of one kv head,
/// one per layer or one for all (scope). Built from named counts.
struct paged_cache_shape {
  std::size_t n_layers = 0, n_kv_heads = 0, head_dim = 0, pool_blocks = 0, block_size = 0;
  pool_scope scope = pool_scope::per_layer;
  paged_cache_shape(layers l, heads h, dim d, blocks pool, block_tokens b,
                    pool_scope s = pool_scope::per_layer) noexcept
      : n_layers(l.value), n_kv_heads(h.value), head_dim(d.value), pool_blocks(pool.value), block_size(b.value),
        scope(s) {}
  /// Pools the cache holds: n_layers, or 1 when shared.
  std::size_t n_pools() const noexcept { return scope == pool_scope::shared ? 1 : n_layers; }
  /// The pool `layer` takes its blocks from.
  std::size_t pool_of(std::size_t layer) const noexcept { return scope == pool_scope::shared ? 0 : layer; }
};

/// Owning paged cache. Sequences are added and freed; each holds, per layer and kv head, the
/// blocks of its tokens in position order. Every member that throws leaves the cache as it was.
/// Thread safety (one pool and block allocator per layer, or one for all layers with
/// pool_scope::shared, shared by all sequences; "different layers" below means layers of
/// different pools, so with a shared pool only the read-only members and pruning views run
/// concurrently):
///  - add_sequence and free_sequence need the whole cache: nothing else may run meanwhile.
///  - Members that take a layer (append, layer_view, commit_tables, the prune entry points on a
///    paged_cache, and the const queries) may run concurrently on different layers: each touches
///    only that layer's pool and the sequences' tables of that layer.
///  - Within one layer, append, commit_tables and the prune entry points on a paged_cache take
///    or return blocks of the shared allocator: one at a time, even for different sequences,
///    and no other member on that layer meanwhile.
///  - layer_view only reads the cache: take the views of several sequences, prune the views of
///    different sequences concurrently with prune_paged / prune_paged_blocks (one workspace per
///    thread, see prune_paged), then, after those prunes, commit_tables each, one at a time.
template <class T>
class paged_cache {
  static_assert(is_kv_element_v<T> && !std::is_const_v<T>, "depthkv::paged_cache<T>: T must be float, f16 or bf16");

 public:
  using sequence_id = std::size_t;

  /// Allocates the pools up front (2 * pool_blocks * block_size * head_dim elements of T plus
  /// block_size positions per block, per pool). Throws on zero counts or sizes that overflow.
  explicit paged_cache(const paged_cache_shape& s) : shape_(s) {
    constexpr const char* where = "depthkv::paged_cache";
    DEPTHKV_CHECK(s.n_layers > 0 && s.n_kv_heads > 0 && s.head_dim > 0 && s.block_size > 0, where,
                  "n_layers, n_kv_heads, head_dim and block_size must be > 0 (got ", s.n_layers, ", ", s.n_kv_heads,
                  ", ", s.head_dim, ", ", s.block_size, ")");
    const std::size_t slots = detail::checked_mul(where, s.pool_blocks, s.block_size, "pool_blocks ", s.pool_blocks,
                                                  " * block_size ", s.block_size);
    const std::size_t elems = detail::checked_mul(where, slots, s.head_dim, "pool slots * head_dim");
    pools_.resize(s.n_pools());
    for (pool& p : pools_) {
      p.k.assign(elems, T(0.f));
      p.v.assign(elems, T(0.f));
      p.pos.assign(slots, 0);
      p.ids = block_allocator(blocks{s.pool_blocks});
    }
  }

  const paged_cache_shape& shape() const noexcept { return shape_; }
  std::size_t block_size() const noexcept { return shape_.block_size; }

  /// A new sequence with no tokens. O(n_layers * n_kv_heads).
  sequence_id add_sequence() {
    sequence_id id = seqs_.size();
    for (sequence_id i = 0; i < seqs_.size(); ++i)
      if (!seqs_[i].live) {
        id = i;
        break;
      }
    if (id == seqs_.size()) seqs_.emplace_back();
    seq& s = seqs_[id];
    s.live = true;
    s.tables.assign(shape_.n_layers * shape_.n_kv_heads, table_store{});
    return id;
  }
  /// Returns every block of `sequence` to the pools; the id may be reused by add_sequence.
  void free_sequence(sequence_id sequence) {
    seq& s = live_seq("depthkv::paged_cache::free_sequence", sequence);
    for (std::size_t l = 0; l < shape_.n_layers; ++l)
      for (std::size_t h = 0; h < shape_.n_kv_heads; ++h) {
        table_store& t = s.tables[l * shape_.n_kv_heads + h];
        pools_[shape_.pool_of(l)].ids.free(span<const std::int32_t>(t.ids));
        t = table_store{};
      }
    s.live = false;
  }

  /// Tokens (layer, head) of `sequence` holds.
  std::size_t length(sequence_id sequence, std::size_t layer, std::size_t head) const {
    return table_of("depthkv::paged_cache::length", sequence, layer, head).tokens;
  }
  /// Blocks in use / free in the pool `layer` takes from (all sequences; with a shared pool
  /// every layer reports the same pool).
  std::size_t blocks_used(std::size_t layer) const { return pool_at("depthkv::paged_cache::blocks_used", layer).ids.n_used(); }
  std::size_t blocks_free(std::size_t layer) const { return pool_at("depthkv::paged_cache::blocks_free", layer).ids.n_free(); }
  /// Blocks in use / free over every pool.
  std::size_t blocks_used() const noexcept {
    std::size_t b = 0;
    for (const pool& p : pools_) b += p.ids.n_used();
    return b;
  }
  std::size_t blocks_free() const noexcept {
    std::size_t b = 0;
    for (const pool& p : pools_) b += p.ids.n_free();
    return b;
  }
  /// Blocks `sequence` holds in `layer` (all heads).
  std::size_t blocks_held(sequence_id sequence, std::size_t layer) const {
    std::size_t b = 0;
    for (std::size_t h = 0; h < shape_.n_kv_heads; ++h) b += table_of("depthkv::paged_cache::blocks_held", sequence, layer, h).ids.size();
    return b;
  }
  /// Bytes one block costs: K and V pages plus positions.
  std::size_t block_bytes() const noexcept { return shape_.block_size * (2 * shape_.head_dim * sizeof(T) + sizeof(pos_t)); }

  /// Appends n tokens to every head of (sequence, layer): k and v [n_kv_heads][n][head_dim] in
  /// any layout, positions n strictly ascending values above the layer's last. Takes the blocks
  /// it needs from the layer's pool; all or nothing: throws (nothing taken) when the pool has
  /// too few free blocks.
  void append(sequence_id sequence, std::size_t layer, kv_view<const T> k, kv_view<const T> v,
              span<const pos_t> positions) {
    constexpr const char* where = "depthkv::paged_cache::append";
    seq& s = live_seq(where, sequence);
    pool& p = pool_at(where, layer);
    const std::size_t n = k.n_tokens(), H = shape_.n_kv_heads, D = shape_.head_dim, B = shape_.block_size;
    DEPTHKV_CHECK(k.shape() == v.shape() && k.n_heads() == H && k.head_dim() == D, where, "k/v have shape [",
                  k.n_heads(), "][", n, "][", k.head_dim(), "] and [", v.n_heads(), "][", v.n_tokens(), "][",
                  v.head_dim(), "], expected [", H, "][n][", D, "] both");
    DEPTHKV_CHECK(positions.size() == n, where, "positions has ", positions.size(), " entries, expected ", n);
    for (std::size_t i = 1; i < n; ++i)
      DEPTHKV_CHECK(positions[i] > positions[i - 1], where, "positions must be strictly ascending at ", i);
    for (std::size_t h = 0; h < H; ++h) {
      const table_store& t = s.tables[layer * H + h];
      DEPTHKV_CHECK(n == 0 || t.tokens == 0 || positions[0] > t.last_pos, where, "positions[0] = ", positions[0],
                    " is not above the last position ", t.last_pos, " of layer ", layer, " head ", h);
    }
    const std::size_t need = blocks_needed(s, layer, n);
    DEPTHKV_CHECK(need <= p.ids.n_free(), where, "layer ", layer, " needs ", need, " free blocks, the pool has ",
                  p.ids.n_free());
    if (n == 0) return;
    for (std::size_t h = 0; h < H; ++h) {  // reserve table capacity first: bad_alloc changes nothing
      table_store& t = s.tables[layer * H + h];
      t.ids.reserve(t.ids.size() + (n + B - 1) / B + 1);
    }
    for (std::size_t h = 0; h < H; ++h) {
      table_store& t = s.tables[layer * H + h];
      for (std::size_t i = 0; i < n; ++i) {
        if (t.tokens == t.ids.size() * B) t.ids.push_back(*p.ids.try_allocate());
        const std::size_t block = static_cast<std::size_t>(t.ids[t.tokens / B]), slot = t.tokens % B;
        const std::size_t at = block * B + slot;
        std::memcpy(p.k.data() + at * D, k.row(h, i), D * sizeof(T));
        std::memcpy(p.v.data() + at * D, v.row(h, i), D * sizeof(T));
        p.pos[at] = positions[i];
        ++t.tokens;
      }
      t.last_pos = positions[n - 1];
    }
  }

  /// Sliding window of a local layer: returns to the pool every leading block of each kv head
  /// of (sequence, layer) whose rows all lie before position `first_kept` (no query at or past
  /// first_kept + W - 1 sees them). A block that still holds a row at or after first_kept stays
  /// whole, so a head keeps at most block_size - 1 rows before first_kept: attention masks them.
  /// When `dropped_rows` is non-empty (then of size n_kv_heads) it receives the rows each head
  /// dropped (whole blocks). Returns the blocks returned. O(blocks returned) per head.
  /// Thread safety: as append (returns blocks to the layer's shared allocator).
  std::size_t drop_blocks_before(sequence_id sequence, std::size_t layer, pos_t first_kept,
                                 span<std::size_t> dropped_rows = {}) {
    constexpr const char* where = "depthkv::paged_cache::drop_blocks_before";
    seq& s = live_seq(where, sequence);
    pool& p = pool_at(where, layer);
    const std::size_t H = shape_.n_kv_heads, B = shape_.block_size;
    DEPTHKV_CHECK(dropped_rows.empty() || dropped_rows.size() == H, where, "dropped_rows has ", dropped_rows.size(),
                  " entries, expected 0 or n_kv_heads = ", H);
    std::size_t released = 0;
    for (std::size_t h = 0; h < H; ++h) {
      table_store& t = s.tables[layer * H + h];
      std::size_t k = 0;  // leading blocks whose last row is before first_kept
      while (k < t.ids.size()) {
        const std::size_t last = std::min((k + 1) * B, t.tokens) - 1;
        if (p.pos[static_cast<std::size_t>(t.ids[k]) * B + last % B] >= first_kept) break;
        ++k;
      }
      const std::size_t rows = std::min(k * B, t.tokens);
      p.ids.free(span<const std::int32_t>(t.ids.data(), k));
      t.ids.erase(t.ids.begin(), t.ids.begin() + static_cast<std::ptrdiff_t>(k));
      t.tokens -= rows;
      released += k;
      if (!dropped_rows.empty()) dropped_rows[h] = rows;
    }
    return released;
  }

  /// Blocks an append of n tokens to every kv head of (sequence, layer) takes from the pool
  /// (the last blocks' free slots are filled first): what admission control compares with
  /// blocks_free(layer). Saturates at SIZE_MAX.
  std::size_t blocks_needed(sequence_id sequence, std::size_t layer, std::size_t n) const {
    constexpr const char* where = "depthkv::paged_cache::blocks_needed";
    DEPTHKV_CHECK(sequence < seqs_.size() && seqs_[sequence].live, where, "sequence ", sequence, " is not a live sequence");
    (void)pool_at(where, layer);
    return blocks_needed(seqs_[sequence], layer, n);
  }

  /// Whether appending n tokens to every layer of `sequence` fits: each pool has the blocks the
  /// layers drawing from it need (blocks_needed summed per pool).
  bool fits(sequence_id sequence, std::size_t n) const {
    constexpr const char* where = "depthkv::paged_cache::fits";
    DEPTHKV_CHECK(sequence < seqs_.size() && seqs_[sequence].live, where, "sequence ", sequence, " is not a live sequence");
    for (std::size_t i = 0; i < pools_.size(); ++i) {
      std::size_t need = 0;
      for (std::size_t l = 0; l < shape_.n_layers; ++l)
        if (shape_.pool_of(l) == i) need += blocks_needed(seqs_[sequence], l, n);
      if (need > pools_[i].ids.n_free()) return false;
    }
    return true;
  }

  /// Copies kv head `head`'s rows of (sequence, layer) in token order into dense memory:
  /// keys and values [length][head_dim], positions [length]; each span at least that long.
  /// One copy per block (pages of one head hold block_size rows back to back).
  void copy_head(sequence_id sequence, std::size_t layer, std::size_t head, span<T> keys, span<T> values,
                 span<pos_t> positions) const {
    constexpr const char* where = "depthkv::paged_cache::copy_head";
    const table_store& t = table_of(where, sequence, layer, head);
    const std::size_t D = shape_.head_dim, B = shape_.block_size, n = t.tokens;
    DEPTHKV_CHECK(keys.size() / D >= n && values.size() / D >= n && positions.size() >= n, where,
                  "keys / values / positions hold ", keys.size() / D, " / ", values.size() / D, " / ", positions.size(),
                  " rows, the head has ", n);
    const pool& p = pools_[shape_.pool_of(layer)];
    for (std::size_t b = 0; b < t.ids.size(); ++b) {
      const std::size_t rows = std::min(B, n - b * B), at = static_cast<std::size_t>(t.ids[b]) * B;
      std::memcpy(keys.data() + b * B * D, p.k.data() + at * D, rows * D * sizeof(T));
      std::memcpy(values.data() + b * B * D, p.v.data() + at * D, rows * D * sizeof(T));
      std::memcpy(positions.data() + b * B, p.pos.data() + at, rows * sizeof(pos_t));
    }
  }

  /// The paged view of (sequence, layer) for in-place operations (prune_paged): fills `tables`
  /// with one table per kv head (pages of one head) and returns a view over them. Call
  /// commit_tables after the operation shortened them.
  paged_layer<T> layer_view(sequence_id sequence, std::size_t layer, std::vector<block_table>& tables) {
    constexpr const char* where = "depthkv::paged_cache::layer_view";
    seq& s = live_seq(where, sequence);
    pool& p = pool_at(where, layer);
    const std::size_t H = shape_.n_kv_heads, B = shape_.block_size;
    tables.resize(H);
    for (std::size_t h = 0; h < H; ++h) {
      table_store& t = s.tables[layer * H + h];
      tables[h] = block_table{span<std::int32_t>(t.ids), t.tokens == 0 ? 0 : t.tokens - (t.ids.size() - 1) * B};
    }
    const page_shape ps(blocks{shape_.pool_blocks}, block_tokens{B}, heads{1}, dim{shape_.head_dim});
    // Pages of one head: NHD and HND pages are the same memory order.
    return paged_layer<T>{page_pool_view<T>(p.k.data(), ps, layout::nhd), page_pool_view<T>(p.v.data(), ps, layout::nhd),
                          span<pos_t>(p.pos), span<block_table>(tables), H};
  }
  /// After an in-place operation on layer_view's tables: each must be a prefix of the
  /// sequence's table (same ids, maybe fewer, fill within the block size); the blocks past
  /// each prefix return to the pool. Checks everything first; returns the blocks returned.
  std::size_t commit_tables(sequence_id sequence, std::size_t layer, span<const block_table> tables) {
    constexpr const char* where = "depthkv::paged_cache::commit_tables";
    seq& s = live_seq(where, sequence);
    pool& p = pool_at(where, layer);
    const std::size_t H = shape_.n_kv_heads, B = shape_.block_size;
    DEPTHKV_CHECK(tables.size() == H, where, "tables has ", tables.size(), " entries, expected n_kv_heads = ", H);
    for (std::size_t h = 0; h < H; ++h) {
      const table_store& t = s.tables[layer * H + h];
      const block_table& n = tables[h];
      DEPTHKV_CHECK(n.blocks.size() <= t.ids.size() && (n.blocks.empty() || n.blocks.data() == t.ids.data()), where,
                    "tables[", h, "] is not a prefix of the sequence's table");
      DEPTHKV_CHECK(n.blocks.empty() ? n.last_fill == 0 : (n.last_fill >= 1 && n.last_fill <= B), where, "tables[", h,
                    "].last_fill = ", n.last_fill, " outside [1, ", B, "]");
    }
    std::size_t released = 0;
    for (std::size_t h = 0; h < H; ++h) {
      table_store& t = s.tables[layer * H + h];
      const std::size_t kept_blocks = tables[h].blocks.size();
      released += t.ids.size() - kept_blocks;
      p.ids.free(span<const std::int32_t>(t.ids.data() + kept_blocks, t.ids.size() - kept_blocks));
      t.ids.resize(kept_blocks);
      t.tokens = tables[h].n_tokens(B);
      if (t.tokens > 0) t.last_pos = p.pos[static_cast<std::size_t>(t.ids[(t.tokens - 1) / B]) * B + (t.tokens - 1) % B];
    }
    return released;
  }

  /// K row of (sequence, layer, head)'s token t (t < length).
  const T* key_row(sequence_id sequence, std::size_t layer, std::size_t head, std::size_t t) const {
    return row_at(pools_[shape_.pool_of(layer)].k, sequence, layer, head, t);
  }
  const T* value_row(sequence_id sequence, std::size_t layer, std::size_t head, std::size_t t) const {
    return row_at(pools_[shape_.pool_of(layer)].v, sequence, layer, head, t);
  }
  pos_t position(sequence_id sequence, std::size_t layer, std::size_t head, std::size_t t) const {
    const table_store& ts = table_of("depthkv::paged_cache::position", sequence, layer, head);
    DEPTHKV_CHECK(t < ts.tokens, "depthkv::paged_cache::position", "token ", t, " >= length ", ts.tokens);
    const std::size_t B = shape_.block_size;
    return pools_[shape_.pool_of(layer)].pos[static_cast<std::size_t>(ts.ids[t / B]) * B + t % B];
  }

 private:
  struct table_store {
    std::vector<std::int32_t> ids;
    std::size_t tokens = 0;
    pos_t last_pos = 0;
  };
  struct seq {
    bool live = false;
    std::vector<table_store> tables;  // [layer][kv_head]
  };
  struct pool {
    std::vector<T> k, v;  // [pool_blocks][block_size][head_dim] (one kv head per page)
    std::vector<pos_t> pos;
    block_allocator ids;
  };

  std::size_t blocks_needed(const seq& s, std::size_t layer, std::size_t n) const noexcept {
    const std::size_t H = shape_.n_kv_heads, B = shape_.block_size;
    std::size_t need = 0;
    for (std::size_t h = 0; h < H; ++h) {
      const table_store& t = s.tables[layer * H + h];
      const std::size_t room = t.ids.size() * B - t.tokens;
      const std::size_t add = n > room ? (n - room) / B + ((n - room) % B != 0) : 0;  // exact for n near SIZE_MAX
      need = add > SIZE_MAX - need ? SIZE_MAX : need + add;  // saturates: no pool has SIZE_MAX blocks
    }
    return need;
  }
  seq& live_seq(const char* where, sequence_id s) {
    DEPTHKV_CHECK(s < seqs_.size() && seqs_[s].live, where, "sequence ", s, " is not a live sequence");
    return seqs_[s];
  }
  pool& pool_at(const char* where, std::size_t layer) {
    DEPTHKV_CHECK(layer < shape_.n_layers, where, "layer ", layer, " out of range (n_layers ", shape_.n_layers, ")");
    return pools_[shape_.pool_of(layer)];
  }
  const pool& pool_at(const char* where, std::size_t layer) const {
    DEPTHKV_CHECK(layer < shape_.n_layers, where, "layer ", layer, " out of range (n_layers ", shape_.n_layers, ")");
    return pools_[shape_.pool_of(layer)];
  }
  const table_store& table_of(const char* where, sequence_id s, std::size_t layer, std::size_t head) const {
    DEPTHKV_CHECK(s < seqs_.size() && seqs_[s].live, where, "sequence ", s, " is not a live sequence");
    (void)pool_at(where, layer);
    DEPTHKV_CHECK(head < shape_.n_kv_heads, where, "head ", head, " out of range (n_kv_heads ", shape_.n_kv_heads, ")");
    return seqs_[s].tables[layer * shape_.n_kv_heads + head];
  }
  const T* row_at(const std::vector<T>& data, sequence_id s, std::size_t layer, std::size_t head, std::size_t t) const {
    const table_store& ts = table_of("depthkv::paged_cache::row", s, layer, head);
    DEPTHKV_CHECK(t < ts.tokens, "depthkv::paged_cache::row", "token ", t, " >= length ", ts.tokens);
    const std::size_t B = shape_.block_size;
    // Pages of one head: slot rows are head_dim apart in both layouts.
    return data.data() + (static_cast<std::size_t>(ts.ids[t / B]) * B + t % B) * shape_.head_dim;
  }

  paged_cache_shape shape_;
  std::vector<pool> pools_;
  std::vector<seq> seqs_;
};

}  // namespace depthkv
