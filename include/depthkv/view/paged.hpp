// Paged KV memory as serving engines hold it: per layer a pool of fixed-size blocks (pages),
// per sequence a table of the blocks that hold its tokens in order. Non-owning views.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/raise.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/shape.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Named counts of a page pool (with heads and dim from view/shape.hpp).
using blocks = named_count<struct blocks_tag>;
using block_tokens = named_count<struct block_tokens_tag>;

/// Shape of one layer's K (or V) page pool: n_blocks pages of block_size token slots, each slot
/// holding n_heads rows of head_dim. Built from named counts:
/// page_shape(blocks{4096}, block_tokens{16}, heads{8}, dim{128}).
struct page_shape {
  std::size_t n_blocks = 0;
  std::size_t block_size = 0;
  std::size_t n_heads = 0;
  std::size_t head_dim = 0;

  constexpr page_shape() noexcept = default;
  constexpr page_shape(blocks b, block_tokens s, heads h, dim d) noexcept
      : n_blocks(b.value), block_size(s.value), n_heads(h.value), head_dim(d.value) {}

  friend constexpr bool operator==(const page_shape& a, const page_shape& b) noexcept {
    return a.n_blocks == b.n_blocks && a.block_size == b.block_size && a.n_heads == b.n_heads &&
           a.head_dim == b.head_dim;
  }
  friend constexpr bool operator!=(const page_shape& a, const page_shape& b) noexcept { return !(a == b); }
};

/// Non-owning view of one layer's K (or V) page pool in engine memory, dense:
///   layout::nhd pages: [n_blocks][block_size][n_heads][head_dim]  (vLLM / FlashInfer NHD)
///   layout::hnd pages: [n_blocks][n_heads][block_size][head_dim]  (FlashInfer HND)
/// T is float, Eigen::half or Eigen::bfloat16, optionally const.
template <class T>
class page_pool_view {
  static_assert(is_kv_element_v<T>,
                "depthkv::page_pool_view<T>: T must be float, Eigen::half or Eigen::bfloat16 (maybe const)");

 public:
  using element_type = T;

  page_pool_view() = default;

  /// Throws depthkv::error when block_size, n_heads or head_dim is 0, data is null for a
  /// non-empty pool, or the pool's extent overflows (byte offsets must fit in ptrdiff_t).
  page_pool_view(T* data, page_shape shape, layout page_layout) : data_(data), shape_(shape), layout_(page_layout) {
    constexpr const char* where = "depthkv::page_pool_view";
    DEPTHKV_CHECK(shape.block_size > 0, where, "block_size must be > 0");
    DEPTHKV_CHECK(shape.n_heads > 0, where, "n_heads must be > 0");
    DEPTHKV_CHECK(shape.head_dim > 0, where, "head_dim must be > 0");
    DEPTHKV_CHECK(shape.n_blocks == 0 || data != nullptr, where, "data is null for ", shape.n_blocks, " blocks");
    std::size_t e = 0;
    DEPTHKV_CHECK(detail::mul_fits(shape.n_blocks, shape.block_size, e) && detail::mul_fits(e, shape.n_heads, e) &&
                      detail::mul_fits(e, shape.head_dim, e) && e <= detail::ptrdiff_max / sizeof(T),
                  where, "pool of ", shape.n_blocks, " blocks x ", shape.block_size, " slots x ", shape.n_heads,
                  " heads x ", shape.head_dim, " overflows the addressable extent");
    const auto d = static_cast<std::ptrdiff_t>(shape.head_dim);
    const auto slots = static_cast<std::ptrdiff_t>(shape.block_size), h = static_cast<std::ptrdiff_t>(shape.n_heads);
    block_stride_ = slots * h * d;
    if (page_layout == layout::nhd) {
      slot_stride_ = h * d;
      head_stride_ = d;
    } else {
      slot_stride_ = d;
      head_stride_ = slots * d;
    }
  }

  T* data() const noexcept { return data_; }
  const page_shape& shape() const noexcept { return shape_; }
  layout page_layout() const noexcept { return layout_; }
  std::ptrdiff_t block_stride() const noexcept { return block_stride_; }
  std::ptrdiff_t slot_stride() const noexcept { return slot_stride_; }
  std::ptrdiff_t head_stride() const noexcept { return head_stride_; }

  /// Row of (block, slot, head); each index within the shape.
  T* row(std::size_t block, std::size_t slot, std::size_t head) const noexcept {
    DEPTHKV_ASSERT(block < shape_.n_blocks && slot < shape_.block_size && head < shape_.n_heads);
    return data_ + static_cast<std::ptrdiff_t>(block) * block_stride_ + static_cast<std::ptrdiff_t>(slot) * slot_stride_ +
           static_cast<std::ptrdiff_t>(head) * head_stride_;
  }

  operator page_pool_view<const T>() const noexcept {
    page_pool_view<const T> v;
    v.assign_unchecked(data_, shape_, layout_, block_stride_, slot_stride_, head_stride_);
    return v;
  }

 private:
  template <class>
  friend class page_pool_view;

  void assign_unchecked(T* d, page_shape s, layout l, std::ptrdiff_t b, std::ptrdiff_t t, std::ptrdiff_t h) noexcept {
    data_ = d;
    shape_ = s;
    layout_ = l;
    block_stride_ = b;
    slot_stride_ = t;
    head_stride_ = h;
  }

  T* data_ = nullptr;
  page_shape shape_{};
  layout layout_ = layout::nhd;
  std::ptrdiff_t block_stride_ = 0, slot_stride_ = 0, head_stride_ = 0;
};

/// The blocks that hold one sequence's tokens of one layer (or of one kv head), in token order:
/// token t lives in block blocks[t / block_size] at slot t % block_size. Engine-owned ids; the
/// last block holds last_fill tokens (1..block_size; 0 when the table is empty).
struct block_table {
  span<std::int32_t> blocks{};
  std::size_t last_fill = 0;

  /// Tokens the table holds: (blocks - 1) * block_size + last_fill.
  std::size_t n_tokens(std::size_t block_size) const noexcept {
    return blocks.empty() ? 0 : (blocks.size() - 1) * block_size + last_fill;
  }
};

/// One sequence's view of one layer of paged memory: K and V pools of the same shape and page
/// layout, the positions pool ([n_blocks][block_size] int32, one per slot; or empty), and the
/// tables: one table for all heads (pages hold every kv head: pool n_heads = n_kv_heads), or one
/// table per kv head (heads keep different counts: pages of one head, pool n_heads = 1, head h's
/// rows in the blocks of tables[h]).
template <class T>
struct paged_layer {
  page_pool_view<T> keys{};
  page_pool_view<T> values{};
  span<pos_t> positions{};
  span<block_table> tables{};
  std::size_t n_kv_heads = 0;

  /// The table of kv head h, and the pool head its rows use.
  const block_table& table(std::size_t h) const noexcept { return tables[tables.size() == 1 ? 0 : h]; }
  std::size_t pool_head(std::size_t h) const noexcept { return tables.size() == 1 ? h : 0; }
  /// Tokens of kv head h.
  std::size_t length(std::size_t h) const noexcept { return table(h).n_tokens(keys.shape().block_size); }
  /// K / V row of kv head h's token t (t < length(h)).
  T* key_row(std::size_t h, std::size_t t) const noexcept { return at(keys, h, t); }
  T* value_row(std::size_t h, std::size_t t) const noexcept { return at(values, h, t); }
  /// Position slot of kv head h's token t; positions must be non-empty.
  pos_t* position(std::size_t h, std::size_t t) const noexcept {
    const std::size_t b = keys.shape().block_size;
    return positions.data() + static_cast<std::size_t>(table(h).blocks[t / b]) * b + t % b;
  }

 private:
  T* at(const page_pool_view<T>& pool, std::size_t h, std::size_t t) const noexcept {
    const std::size_t b = pool.shape().block_size;
    return pool.row(static_cast<std::size_t>(table(h).blocks[t / b]), t % b, pool_head(h));
  }
};

namespace detail {

/// Throws unless `layer` is consistent: pools of one shape and layout, the table count against
/// the pool's heads, block ids in range, fills within the block size, no block used twice in
/// the sequence's tables of this layer, a positions pool of n_blocks * block_size or none.
/// `seen` is caller scratch (grown to n_blocks, left all zero).
template <class T>
void check_paged_layer(const char* where, const paged_layer<T>& layer, std::vector<std::uint8_t>& seen) {
  const page_shape& s = layer.keys.shape();
  DEPTHKV_CHECK(layer.values.shape() == s, where, "values pool [", layer.values.shape().n_blocks, "][",
                layer.values.shape().block_size, "][", layer.values.shape().n_heads, "][", layer.values.shape().head_dim,
                "] != keys pool [", s.n_blocks, "][", s.block_size, "][", s.n_heads, "][", s.head_dim, "]");
  DEPTHKV_CHECK(layer.values.page_layout() == layer.keys.page_layout(), where, "keys pages are ",
                layout_name(layer.keys.page_layout()), " but values pages are ", layout_name(layer.values.page_layout()));
  DEPTHKV_CHECK(layer.n_kv_heads > 0, where, "n_kv_heads must be > 0");
  const bool one_table = layer.tables.size() == 1 && s.n_heads == layer.n_kv_heads;
  const bool per_head = layer.tables.size() == layer.n_kv_heads && s.n_heads == 1;
  DEPTHKV_CHECK(one_table || per_head, where, "tables has ", layer.tables.size(), " entries for ", layer.n_kv_heads,
                " kv heads and pages of ", s.n_heads, " heads: expected 1 table (pages of every head) or ",
                layer.n_kv_heads, " (pages of one head)");
  std::size_t pool_slots = 0;
  DEPTHKV_CHECK(detail::mul_fits(s.n_blocks, s.block_size, pool_slots), where, "pool slots overflow");
  DEPTHKV_CHECK(layer.positions.empty() || layer.positions.size() == pool_slots, where, "positions has ",
                layer.positions.size(), " entries, expected n_blocks * block_size = ", pool_slots, " (or none)");
  if (seen.size() < s.n_blocks) seen.resize(s.n_blocks, 0);
  // Marks each id as it is checked; the marks are cleared before returning or throwing.
  struct clear_marks {
    const paged_layer<T>& l;
    std::vector<std::uint8_t>& seen;
    std::size_t n_blocks;
    ~clear_marks() {
      for (const block_table& t : l.tables)
        for (const std::int32_t id : t.blocks)
          if (id >= 0 && static_cast<std::size_t>(id) < n_blocks) seen[static_cast<std::size_t>(id)] = 0;
    }
  } guard{layer, seen, s.n_blocks};
  for (std::size_t i = 0; i < layer.tables.size(); ++i) {
    const block_table& t = layer.tables[i];
    DEPTHKV_CHECK(t.blocks.empty() ? t.last_fill == 0 : (t.last_fill >= 1 && t.last_fill <= s.block_size), where,
                  "tables[", i, "].last_fill = ", t.last_fill, " must be in [1, block_size ", s.block_size,
                  "] (0 for an empty table), with ", t.blocks.size(), " blocks");
    DEPTHKV_CHECK(t.blocks.size() <= s.n_blocks, where, "tables[", i, "] lists ", t.blocks.size(),
                  " blocks, more than the pool's ", s.n_blocks);
    for (std::size_t j = 0; j < t.blocks.size(); ++j) {
      const std::int32_t id = t.blocks[j];
      DEPTHKV_CHECK(id >= 0 && static_cast<std::size_t>(id) < s.n_blocks, where, "tables[", i, "].blocks[", j, "] = ",
                    id, " is out of range (n_blocks ", s.n_blocks, ")");
      DEPTHKV_CHECK(seen[static_cast<std::size_t>(id)] == 0, where, "tables[", i, "].blocks[", j, "] = ", id,
                    ": block used twice in this sequence's tables");
      seen[static_cast<std::size_t>(id)] = 1;
    }
  }
}

}  // namespace detail

/// Validates one sequence's paged layer (see detail::check_paged_layer); throws depthkv::error
/// naming the table, index and value. Allocates a mark array of n_blocks bytes.
template <class T>
void check_paged_layer(const paged_layer<T>& layer) {
  std::vector<std::uint8_t> seen;
  detail::check_paged_layer("depthkv::check_paged_layer", layer, seen);
}

/// Copies kv head h's keys (all length(h) rows, token order) into out ([length(h)][head_dim],
/// dense): the contiguous rows the scoring kernels read. Pre: the layer passed validation.
template <class T>
void gather_keys(const paged_layer<T>& layer, std::size_t h, std::remove_const_t<T>* out) noexcept {
  const std::size_t n = layer.length(h), d = layer.keys.shape().head_dim;
  for (std::size_t t = 0; t < n; ++t) std::memcpy(out + t * d, layer.key_row(h, t), d * sizeof(T));
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
