// Owning multi-layer KV cache: per (layer, kv head) rows of K and V plus original positions.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <vector>

#include "depthkv/view/kv_view.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/aligned_buffer.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

/// Owning cache of n_layers x n_kv_heads heads. Each head holds `length` rows of K and of V
/// ([token][head_dim], dense, 64-byte aligned) in ascending original position, plus each
/// row's position. Heads are separate allocations, so a layer (or head) pruned to 10% holds
/// only 10% of the memory after shrink_to_fit, and heads of a layer may differ in length.
/// Capacity is explicit: append never reallocates; reserve/shrink_to_fit do.
/// Sliding windows: drop_oldest / drop_before drop leading rows in O(1) by moving the head's
/// start forward (rows then start a whole number of rows past the 64-byte aligned base); append
/// moves the live rows back to the base when they would run past the capacity, so a ring of W
/// rows in capacity 2W copies W rows once per W appends (amortised O(1) per token, no allocation).
/// Every member that throws leaves the cache exactly as it was.
/// Thread safety: const members may run concurrently with each other; members that take a
/// layer (append, retain, clear, drop_oldest, drop_before, reserve, shrink_to_fit(layer), and the
/// prune entry points) may run concurrently on different layers (each touches only that layer's
/// heads); anything else needs external synchronisation.
template <class T>
class kv_cache {
  static_assert(is_kv_element_v<T> && !std::is_const_v<T>,
                "depthkv::kv_cache<T>: T must be float, Eigen::half or Eigen::bfloat16");

 public:
  using element_type = T;

  kv_cache() = default;

  /// n_layers x n_kv_heads heads of head_dim, each with room for `capacity` tokens:
  /// kv_cache<f16> c(layers{32}, heads{8}, dim{128}, 4096). Throws on zero counts or sizes
  /// whose byte counts overflow.
  kv_cache(layers n_layers, heads n_kv_heads, dim head_dim, std::size_t capacity)
      : kv_cache(n_layers, n_kv_heads, head_dim,
                 std::vector<std::size_t>(check_head_count("depthkv::kv_cache", n_layers.value, n_kv_heads.value),
                                          capacity)) {}

  /// Layer l starts with room for capacity_per_layer[l] tokens per head.
  kv_cache(layers n_layers_arg, heads n_kv_heads_arg, dim head_dim_arg, span<const std::size_t> capacity_per_layer)
      : n_layers_(n_layers_arg.value), n_heads_(n_kv_heads_arg.value), head_dim_(head_dim_arg.value) {
    constexpr const char* where = "depthkv::kv_cache";
    const std::size_t n_layers = n_layers_, n_kv_heads = n_heads_, head_dim = head_dim_;
    DEPTHKV_CHECK(n_layers > 0, where, "n_layers must be > 0, got ", n_layers);
    DEPTHKV_CHECK(n_kv_heads > 0, where, "n_kv_heads must be > 0, got ", n_kv_heads);
    DEPTHKV_CHECK(head_dim > 0, where, "head_dim must be > 0, got ", head_dim);
    DEPTHKV_CHECK(capacity_per_layer.size() == n_layers, where, "capacity_per_layer has ",
                  capacity_per_layer.size(), " entries, expected n_layers = ", n_layers);
    const std::size_t n_heads_total = check_head_count(where, n_layers, n_kv_heads) * n_kv_heads;
    // 2 * head_dim * sizeof(T) + sizeof(pos_t) bytes per row (row_bytes) must fit, and so must
    // every head's capacity in bytes.
    const std::size_t row = detail::checked_add(
        where, detail::checked_mul(where, head_dim, 2 * sizeof(T), "head_dim ", head_dim, ": bytes per row"),
        sizeof(pos_t), "head_dim ", head_dim, ": bytes per row");
    for (std::size_t l = 0; l < n_layers; ++l) {
      DEPTHKV_CHECK(capacity_per_layer[l] <= max_tokens, where, "capacity_per_layer[", l, "] = ",
                    capacity_per_layer[l], " exceeds the limit of ", max_tokens, " tokens per head");
      (void)detail::checked_mul(where, capacity_per_layer[l], row, "capacity_per_layer[", l, "] = ",
                                capacity_per_layer[l], " rows of ", row, " bytes");
    }
    heads_.resize(n_heads_total);
    for (std::size_t l = 0; l < n_layers; ++l)
      for (std::size_t h = 0; h < n_kv_heads; ++h) at(l, h) = head_store(capacity_per_layer[l], head_dim);
  }

  /// Largest number of tokens one head can hold (indices are 32-bit).
  static constexpr std::size_t max_tokens = std::numeric_limits<index_t>::max();

  std::size_t n_layers() const noexcept { return n_layers_; }
  std::size_t n_kv_heads() const noexcept { return n_heads_; }
  std::size_t head_dim() const noexcept { return head_dim_; }

  /// Rows held by (layer, head).
  std::size_t length(std::size_t layer, std::size_t head) const {
    check_head("depthkv::kv_cache::length", layer, head);
    return at(layer, head).len;
  }
  /// Rows held by every head of `layer`; throws if the heads differ (use length(layer, head)).
  std::size_t length(std::size_t layer) const {
    constexpr const char* where = "depthkv::kv_cache::length";
    check_layer(where, layer);
    const std::size_t n = at(layer, 0).len;
    for (std::size_t h = 1; h < n_heads_; ++h)
      DEPTHKV_CHECK(at(layer, h).len == n, where, "heads of layer ", layer, " differ in length (head 0: ", n,
                    ", head ", h, ": ", at(layer, h).len, "); ask per head");
    return n;
  }
  /// Longest head of `layer`.
  std::size_t max_length(std::size_t layer) const {
    check_layer("depthkv::kv_cache::max_length", layer);
    std::size_t m = 0;
    for (std::size_t h = 0; h < n_heads_; ++h) m = std::max(m, at(layer, h).len);
    return m;
  }
  /// Rows of (layer, head) that fit without reallocating.
  std::size_t capacity(std::size_t layer, std::size_t head) const {
    check_head("depthkv::kv_cache::capacity", layer, head);
    return at(layer, head).cap;
  }

  /// K rows of (layer, head): [length][head_dim], row stride head_dim.
  rows_view<T> keys(std::size_t layer, std::size_t head) {
    check_head("depthkv::kv_cache::keys", layer, head);
    return at(layer, head).key_rows(head_dim_);
  }
  rows_view<const T> keys(std::size_t layer, std::size_t head) const {
    check_head("depthkv::kv_cache::keys", layer, head);
    return const_cast<head_store&>(at(layer, head)).key_rows(head_dim_);
  }
  /// V rows of (layer, head): [length][head_dim].
  rows_view<T> values(std::size_t layer, std::size_t head) {
    check_head("depthkv::kv_cache::values", layer, head);
    return at(layer, head).value_rows(head_dim_);
  }
  rows_view<const T> values(std::size_t layer, std::size_t head) const {
    check_head("depthkv::kv_cache::values", layer, head);
    return const_cast<head_store&>(at(layer, head)).value_rows(head_dim_);
  }
  /// Original positions of the rows of (layer, head), ascending.
  span<const pos_t> positions(std::size_t layer, std::size_t head) const {
    check_head("depthkv::kv_cache::positions", layer, head);
    const head_store& s = at(layer, head);
    return {s.pos_rows(), s.len};
  }

  /// Appends n tokens to every head of `layer`. k and v: [n_kv_heads][n][head_dim] in any layout;
  /// positions: n strictly ascending values, each above every position the layer holds.
  /// Errors: shape mismatch, capacity exceeded, positions not ascending; the cache is unchanged.
  /// Complexity: O(n_kv_heads * n * head_dim) copies, no allocation.
  void append(std::size_t layer, kv_view<const T> k, kv_view<const T> v, span<const pos_t> positions) {
    constexpr const char* where = "depthkv::kv_cache::append";
    check_append(where, layer, k, v);
    const std::size_t n = k.n_tokens();
    DEPTHKV_CHECK(positions.size() == n, where, "positions has ", positions.size(), " entries, expected ", n);
    for (std::size_t i = 1; i < n; ++i)
      DEPTHKV_CHECK(positions[i] > positions[i - 1], where, "positions must be strictly ascending, but positions[",
                    i - 1, "] = ", positions[i - 1], " and positions[", i, "] = ", positions[i]);
    if (n > 0) check_above_last(where, layer, positions[0]);
    append_unchecked(layer, k, v, [&](std::size_t i) { return positions[i]; });
  }
  /// Appends n tokens at positions first_position, first_position + 1, ... (all int32).
  void append(std::size_t layer, kv_view<const T> k, kv_view<const T> v, pos_t first_position) {
    constexpr const char* where = "depthkv::kv_cache::append";
    const std::size_t n = k.n_tokens();
    // Positions first_position .. first_position + n - 1 must all be int32 (checked without a sum
    // that could wrap for huge n).
    constexpr std::size_t positions_available = static_cast<std::size_t>(std::numeric_limits<pos_t>::max()) + 1;
    DEPTHKV_CHECK(first_position >= 0 && n <= positions_available - static_cast<std::size_t>(first_position), where,
                  "first_position ", first_position, " with ", n, " tokens leaves the int32 range");
    check_append(where, layer, k, v);
    if (n > 0) check_above_last(where, layer, first_position);
    append_unchecked(layer, k, v, [&](std::size_t i) { return first_position + static_cast<pos_t>(i); });
  }
  /// Decode step: appends one token whose K and V rows are k_rows/v_rows ([n_kv_heads][head_dim]).
  void append_token(std::size_t layer, const T* k_rows, const T* v_rows, pos_t position) {
    const kv_shape one(heads{n_heads_}, tokens{1}, dim{head_dim_});
    append(layer, kv_view<const T>::hnd(k_rows, one), kv_view<const T>::hnd(v_rows, one), span<const pos_t>(&position, 1));
  }

  /// Keeps exactly the rows `keep` (strictly ascending) of every head of `layer`, in order.
  /// Throws when the heads differ in length (a row index would name different tokens in
  /// different heads: use retain(layer, head, keep)) or keep is bad; nothing changes then.
  void retain(std::size_t layer, span<const index_t> keep) {
    constexpr const char* where = "depthkv::kv_cache::retain";
    check_layer(where, layer);
    for (std::size_t h = 1; h < n_heads_; ++h)
      DEPTHKV_CHECK(at(layer, h).len == at(layer, 0).len, where, "one keep list for heads of different lengths (layer ",
                    layer, " head 0: ", at(layer, 0).len, ", head ", h, ": ", at(layer, h).len,
                    " rows) would keep different tokens per head; use retain(layer, head, keep)");
    detail::check_keep_list(where, keep, at(layer, 0).len);
    for (std::size_t h = 0; h < n_heads_; ++h) retain_unchecked(at(layer, h), keep);
  }
  /// Keeps exactly the rows `keep` (strictly ascending) of one head.
  void retain(std::size_t layer, std::size_t head, span<const index_t> keep) {
    constexpr const char* where = "depthkv::kv_cache::retain";
    check_head(where, layer, head);
    detail::check_keep_list(where, keep, at(layer, head).len);
    retain_unchecked(at(layer, head), keep);
  }
  /// Drops every row of `layer` (capacity is kept).
  void clear(std::size_t layer) {
    check_layer("depthkv::kv_cache::clear", layer);
    for (std::size_t h = 0; h < n_heads_; ++h) at(layer, h).drop_front(at(layer, h).len);
  }

  /// Drops the n oldest (leading) rows of every head of `layer`: O(1) per head, no copy (the
  /// sliding window of a local layer). Throws, changing nothing, when a head holds fewer.
  void drop_oldest(std::size_t layer, std::size_t n) {
    constexpr const char* where = "depthkv::kv_cache::drop_oldest";
    check_layer(where, layer);
    for (std::size_t h = 0; h < n_heads_; ++h)
      DEPTHKV_CHECK(n <= at(layer, h).len, where, "n = ", n, " exceeds the length ", at(layer, h).len, " of layer ",
                    layer, " head ", h);
    for (std::size_t h = 0; h < n_heads_; ++h) at(layer, h).drop_front(n);
  }
  /// Drops the n oldest rows of one head; O(1).
  void drop_oldest(std::size_t layer, std::size_t head, std::size_t n) {
    constexpr const char* where = "depthkv::kv_cache::drop_oldest";
    check_head(where, layer, head);
    DEPTHKV_CHECK(n <= at(layer, head).len, where, "n = ", n, " exceeds the length ", at(layer, head).len,
                  " of layer ", layer, " head ", head);
    at(layer, head).drop_front(n);
  }
  /// Drops, in every head of `layer`, the leading rows whose position is below `first_kept`
  /// (heads may drop different counts). O(log length) per head, no copy. When `dropped` is
  /// non-empty (then of size n_kv_heads) it receives the rows each head dropped.
  void drop_before(std::size_t layer, pos_t first_kept, span<std::size_t> dropped = {}) {
    constexpr const char* where = "depthkv::kv_cache::drop_before";
    check_layer(where, layer);
    DEPTHKV_CHECK(dropped.empty() || dropped.size() == n_heads_, where, "dropped has ", dropped.size(),
                  " entries, expected 0 or n_kv_heads = ", n_heads_);
    for (std::size_t h = 0; h < n_heads_; ++h) {
      head_store& s = at(layer, h);
      const pos_t* p = s.pos_rows();
      const auto d = static_cast<std::size_t>(std::lower_bound(p, p + s.len, first_kept) - p);
      s.drop_front(d);
      if (!dropped.empty()) dropped[h] = d;
    }
  }

  /// Ensures every head of `layer` can hold `capacity` rows; never shrinks.
  void reserve(std::size_t layer, std::size_t capacity) {
    constexpr const char* where = "depthkv::kv_cache::reserve";
    check_layer(where, layer);
    DEPTHKV_CHECK(capacity <= max_tokens, where, "capacity ", capacity, " exceeds the limit of ", max_tokens);
    (void)detail::checked_mul(where, capacity, row_bytes(), "capacity ", capacity, " rows of ", row_bytes(), " bytes");
    std::vector<head_store> grown;  // allocate everything first: bad_alloc leaves the cache intact
    grown.reserve(n_heads_);
    for (std::size_t h = 0; h < n_heads_; ++h)
      grown.push_back(at(layer, h).cap >= capacity ? head_store{} : at(layer, h).resized(capacity, head_dim_));
    for (std::size_t h = 0; h < n_heads_; ++h)
      if (at(layer, h).cap < capacity) at(layer, h) = std::move(grown[h]);
  }
  /// Releases the capacity beyond each head's length, in every layer (really frees memory).
  void shrink_to_fit() {
    for (std::size_t l = 0; l < n_layers_; ++l) shrink_to_fit(l);
  }
  void shrink_to_fit(std::size_t layer) {
    check_layer("depthkv::kv_cache::shrink_to_fit", layer);
    std::vector<head_store> shrunk;
    shrunk.reserve(n_heads_);
    for (std::size_t h = 0; h < n_heads_; ++h) {
      const head_store& s = at(layer, h);
      shrunk.push_back(s.cap == s.len ? head_store{} : s.resized(s.len, head_dim_));
    }
    for (std::size_t h = 0; h < n_heads_; ++h)
      if (at(layer, h).cap != at(layer, h).len) at(layer, h) = std::move(shrunk[h]);
  }

  /// Bytes of K, V and positions held by live rows (all layers, or one).
  std::size_t bytes_in_use() const noexcept { return sum_rows(false) * row_bytes(); }
  std::size_t bytes_in_use(std::size_t layer) const { return layer_rows(layer, false) * row_bytes(); }
  /// Bytes allocated for K, V and positions (capacity).
  std::size_t bytes_reserved() const noexcept { return sum_rows(true) * row_bytes(); }
  std::size_t bytes_reserved(std::size_t layer) const { return layer_rows(layer, true) * row_bytes(); }
  /// Bytes one cached token costs in one head: K row + V row + position.
  std::size_t row_bytes() const noexcept { return 2 * head_dim_ * sizeof(T) + sizeof(pos_t); }

 private:
  struct head_store {
    detail::aligned_buffer<T> k, v;
    detail::aligned_buffer<pos_t> pos;
    std::size_t len = 0, cap = 0;
    std::size_t off = 0;  ///< live rows are [off, off + len) of the buffers (drop_front)

    head_store() = default;
    head_store(std::size_t capacity, std::size_t dim) : k(capacity * dim), v(capacity * dim), pos(capacity), cap(capacity) {}
    /// A copy with room for `capacity` (>= len) rows.
    head_store resized(std::size_t capacity, std::size_t dim) const {
      head_store s(capacity, dim);
      if (len) {
        std::memcpy(s.k.data(), k.data() + off * dim, len * dim * sizeof(T));
        std::memcpy(s.v.data(), v.data() + off * dim, len * dim * sizeof(T));
        std::memcpy(s.pos.data(), pos.data() + off, len * sizeof(pos_t));
      }
      s.len = len;
      return s;
    }
    rows_view<T> key_rows(std::size_t dim) noexcept {
      return {k.data() + off * dim, len, dim, static_cast<std::ptrdiff_t>(dim)};
    }
    rows_view<T> value_rows(std::size_t dim) noexcept {
      return {v.data() + off * dim, len, dim, static_cast<std::ptrdiff_t>(dim)};
    }
    pos_t* pos_rows() noexcept { return pos.data() + off; }
    const pos_t* pos_rows() const noexcept { return pos.data() + off; }
    /// Forgets the first d (<= len) rows; an emptied head starts again at the base.
    void drop_front(std::size_t d) noexcept {
      len -= d;
      off = len == 0 ? 0 : off + d;
    }
    /// Room for n more rows after the live ones: moves them to the base when off + len + n
    /// would pass cap (pre: len + n <= cap). memmove: the ranges may overlap.
    void make_room(std::size_t n, std::size_t dim) noexcept {
      if (off == 0 || off + len + n <= cap) return;
      if (len) {
        std::memmove(k.data(), k.data() + off * dim, len * dim * sizeof(T));
        std::memmove(v.data(), v.data() + off * dim, len * dim * sizeof(T));
        std::memmove(pos.data(), pos.data() + off, len * sizeof(pos_t));
      }
      off = 0;
    }
  };

  /// Returns n_layers after checking that n_layers * n_kv_heads heads can be held.
  static std::size_t check_head_count(const char* where, std::size_t n_layers, std::size_t n_kv_heads) {
    const std::size_t total =
        detail::checked_mul(where, n_layers, n_kv_heads, "n_layers ", n_layers, " * n_kv_heads ", n_kv_heads);
    DEPTHKV_CHECK(total <= std::vector<head_store>().max_size(), where, "n_layers ", n_layers, " * n_kv_heads ",
                  n_kv_heads, " = ", total, " heads exceed what a vector can hold");
    return n_layers;
  }

  head_store& at(std::size_t l, std::size_t h) noexcept { return heads_[l * n_heads_ + h]; }
  const head_store& at(std::size_t l, std::size_t h) const noexcept { return heads_[l * n_heads_ + h]; }

  void check_layer(const char* where, std::size_t layer) const {
    DEPTHKV_CHECK(layer < n_layers_, where, "layer ", layer, " out of range (n_layers ", n_layers_, ")");
  }
  void check_head(const char* where, std::size_t layer, std::size_t head) const {
    check_layer(where, layer);
    DEPTHKV_CHECK(head < n_heads_, where, "head ", head, " out of range (n_kv_heads ", n_heads_, ")");
  }
  void check_append_shape(const char* where, const char* name, const kv_shape& s) const {
    DEPTHKV_CHECK(s.n_heads == n_heads_ && s.head_dim == head_dim_, where, name, " has shape [", s.n_heads, "][",
                  s.n_tokens, "][", s.head_dim, "], expected [", n_heads_, "][n][", head_dim_, "]");
  }
  /// Layer, shapes and capacity of an append of k/v's tokens.
  void check_append(const char* where, std::size_t layer, const kv_view<const T>& k, const kv_view<const T>& v) const {
    check_layer(where, layer);
    check_append_shape(where, "k", k.shape());
    check_append_shape(where, "v", v.shape());
    const std::size_t n = k.n_tokens();
    DEPTHKV_CHECK(n == v.n_tokens(), where, "k has ", n, " tokens but v has ", v.n_tokens());
    for (std::size_t h = 0; h < n_heads_; ++h) {
      const head_store& s = at(layer, h);
      DEPTHKV_CHECK(n <= s.cap - s.len, where, "appending ", n, " tokens to layer ", layer, " head ", h,
                    " (length ", s.len, ") exceeds its capacity ", s.cap);
    }
  }
  /// The first appended position must be above every position the layer holds.
  void check_above_last(const char* where, std::size_t layer, pos_t first) const {
    for (std::size_t h = 0; h < n_heads_; ++h) {
      const head_store& s = at(layer, h);
      DEPTHKV_CHECK(s.len == 0 || first > s.pos_rows()[s.len - 1], where, "positions[0] = ", first,
                    " is not above the last position ", s.pos_rows()[s.len - 1], " of layer ", layer, " head ", h);
    }
  }
  /// Copies the rows and writes position_at(i) for token i; pre: check_append passed. Writes only
  /// this layer's heads (no shared scratch), so appends to different layers may run concurrently.
  template <class PositionAt>
  void append_unchecked(std::size_t layer, const kv_view<const T>& k, const kv_view<const T>& v,
                        PositionAt&& position_at) noexcept {
    const std::size_t n = k.n_tokens();
    if (n == 0) return;
    const std::size_t row_bytes = head_dim_ * sizeof(T);
    for (std::size_t h = 0; h < n_heads_; ++h) {
      head_store& s = at(layer, h);
      s.make_room(n, head_dim_);
      const std::size_t end = s.off + s.len;
      for (std::size_t t = 0; t < n; ++t) {
        std::memcpy(s.k.data() + (end + t) * head_dim_, k.row(h, t), row_bytes);
        std::memcpy(s.v.data() + (end + t) * head_dim_, v.row(h, t), row_bytes);
        s.pos.data()[end + t] = position_at(t);
      }
      s.len += n;
    }
  }
  void retain_unchecked(head_store& s, span<const index_t> keep) noexcept {
    detail::compact_rows_unchecked(s.key_rows(head_dim_), keep.data(), keep.size());
    detail::compact_rows_unchecked(s.value_rows(head_dim_), keep.data(), keep.size());
    detail::compact_values_unchecked(s.pos_rows(), keep.data(), keep.size());
    s.len = keep.size();
    if (s.len == 0) s.off = 0;
  }
  std::size_t layer_rows(std::size_t layer, bool cap) const {
    check_layer("depthkv::kv_cache::bytes", layer);
    std::size_t r = 0;
    for (std::size_t h = 0; h < n_heads_; ++h) r += cap ? at(layer, h).cap : at(layer, h).len;
    return r;
  }
  std::size_t sum_rows(bool cap) const noexcept {
    std::size_t r = 0;
    for (const head_store& s : heads_) r += cap ? s.cap : s.len;
    return r;
  }

  std::size_t n_layers_ = 0, n_heads_ = 0, head_dim_ = 0;
  std::vector<head_store> heads_;  ///< [layer][kv_head]
};

}  // namespace depthkv
