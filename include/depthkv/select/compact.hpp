// In-place compaction: keep the listed rows of a head (or of every head of a layer), in order.
// Rows move with SIMD row copies (fixed-size all-register paths for 64/128/256/512-byte rows,
// i.e. head_dim 64 and 128 in f16/bf16/f32; 64-byte chunks otherwise), with software prefetch
// of the rows ahead for large spans or dense keep lists (detail/compact_kernels.hpp); a dense
// NHD layer moves whole token slots (all heads of a token in one copy).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "depthkv/view/kv_view.hpp"
#include "depthkv/view/positions.hpp"
#include "depthkv/config.hpp"
#include "depthkv/error.hpp"
#include "depthkv/select/detail/compact_kernels.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

namespace detail {

/// Throws unless keep is strictly ascending and every index is < n.
inline void check_keep_list(const char* where, span<const index_t> keep, std::size_t n) {
  for (std::size_t i = 0; i < keep.size(); ++i) {
    DEPTHKV_CHECK(keep[i] < n, where, "keep[", i, "] = ", keep[i], " is out of range (rows: ", n, ")");
    DEPTHKV_CHECK(i == 0 || keep[i] > keep[i - 1], where, "keep must be strictly ascending, but keep[", i - 1,
                  "] = ", keep[i - 1], " and keep[", i, "] = ", keep[i]);
  }
}

/// Moves row keep[i] to row i for every i on the active kernel path. Pre: keep strictly
/// ascending, < rows.n. Since keep[i] >= i, a forward pass never overwrites a row it still
/// needs, and row i != row keep[i] never overlap.
template <class T>
void compact_rows_unchecked(rows_view<T> rows, const index_t* keep, std::size_t k) noexcept {
  static_assert(!std::is_const_v<T>, "compaction writes the rows");
  std::size_t i = 0;
  while (i < k && keep[i] == i) ++i;  // leading rows already in place
  if (i == k) return;
  const auto stride_bytes = rows.stride * static_cast<std::ptrdiff_t>(sizeof(T));
  const std::size_t span = rows.n * static_cast<std::size_t>(stride_bytes < 0 ? -stride_bytes : stride_bytes);
  const std::size_t row_bytes = rows.dim * sizeof(T);
  // Streaming stores need whole, 64-byte aligned destination lines (kv_cache rows are 64-byte
  // aligned; engine views usually are).
  const bool aligned = reinterpret_cast<std::uintptr_t>(rows.data) % 64 == 0 && stride_bytes % 64 == 0 &&
                       row_bytes % 64 == 0;
  const row_move m{reinterpret_cast<unsigned char*>(rows.data), stride_bytes, row_bytes,
                   span > compact_prefetch_span || 4 * k > rows.n, aligned && span > compact_stream_span};
  move_rows_on(active_isa(), m, keep, i, k);
}

/// Same as compact_rows_unchecked for a plain array (positions).
template <class T>
void compact_values_unchecked(T* values, const index_t* keep, std::size_t k) noexcept {
  for (std::size_t i = 0; i < k; ++i) values[i] = values[keep[i]];
}

/// A dense NHD view ([token][head][dim], no padding) as one row per token slot, so a layer-wide
/// retain moves all heads of a token in one row copy. Returns false for any other layout.
template <class T>
bool as_token_slots(const kv_view<T>& v, rows_view<T>& slots) noexcept {
  const auto d = static_cast<std::ptrdiff_t>(v.head_dim());
  const auto h = static_cast<std::ptrdiff_t>(v.n_heads());
  if (v.n_heads() == 0 || v.strides().head != d || v.strides().token != h * d) return false;
  slots = {v.data(), v.n_tokens(), v.n_heads() * v.head_dim(), v.strides().token};
  return true;
}

}  // namespace detail

/// Keeps rows keep[0..k) of `rows` as rows 0..k, in place, on the active kernel path.
/// keep: strictly ascending, < rows.n.
/// Throws depthkv::error on a bad list or a rows view whose extent overflows, before anything is moved.
template <class T>
void compact_rows(rows_view<T> rows, span<const index_t> keep) {
  detail::check_rows_view("depthkv::compact_rows", "rows", rows);
  detail::check_keep_list("depthkv::compact_rows", keep, rows.n);
  detail::compact_rows_unchecked(rows, keep.data(), keep.size());
}

namespace detail {
/// Throws unless k and v have the same shape.
template <class T>
void check_same_shape(const char* where, const kv_view<T>& k, const kv_view<T>& v) {
  DEPTHKV_CHECK(k.shape() == v.shape(), where, "K shape [", k.n_heads(), "][", k.n_tokens(), "][", k.head_dim(),
                "] != V shape [", v.n_heads(), "][", v.n_tokens(), "][", v.head_dim(), "]");
}

/// Throws unless per-head position rows of n entries are distinct for n_heads heads.
inline void check_positions(const char* where, const layer_positions& p, std::size_t n_heads, std::size_t n) {
  if (p.which() != layer_positions::kind::per_head || n_heads < 2) return;
  DEPTHKV_CHECK(abs_stride(p.head_stride()) >= n, where, "positions head_stride ", p.head_stride(),
                " overlaps rows of ", n, " positions");
}
}  // namespace detail

/// Keeps tokens `keep` (strictly ascending, < n_tokens) of every head of one layer's K and V
/// views, in place; positions move with their rows (a shared row once). k, v: the same shape,
/// any layout. Throws depthkv::error before mutating on a bad list or shape mismatch.
/// Complexity: O(n_heads * keep.size() * head_dim) row copies.
template <class T>
void retain(kv_view<T> k, kv_view<T> v, span<const index_t> keep,
            const layer_positions& positions = layer_positions::none()) {
  constexpr const char* where = "depthkv::retain";
  detail::check_same_shape(where, k, v);
  detail::check_keep_list(where, keep, k.n_tokens());
  detail::check_positions(where, positions, k.n_heads(), k.n_tokens());
  rows_view<T> k_slots, v_slots;
  if (detail::as_token_slots(k, k_slots) && detail::as_token_slots(v, v_slots)) {
    detail::compact_rows_unchecked(k_slots, keep.data(), keep.size());
    detail::compact_rows_unchecked(v_slots, keep.data(), keep.size());
  } else {
    for (std::size_t h = 0; h < k.n_heads(); ++h) {
      detail::compact_rows_unchecked(k.head(h), keep.data(), keep.size());
      detail::compact_rows_unchecked(v.head(h), keep.data(), keep.size());
    }
  }
  if (positions.empty()) return;
  const std::size_t rows = positions.which() == layer_positions::kind::shared ? 1 : k.n_heads();
  for (std::size_t h = 0; h < rows; ++h) detail::compact_values_unchecked(positions.head(h), keep.data(), keep.size());
}

/// Keeps tokens `keep` of head `head` only, whose first `live.value` (<= n_tokens) rows hold
/// tokens; `head_positions` ([live], or null for none) moves with them. Throws before mutating.
template <class T>
void retain_head(kv_view<T> k, kv_view<T> v, std::size_t head, tokens live, span<const index_t> keep,
                 pos_t* head_positions) {
  constexpr const char* where = "depthkv::retain_head";
  detail::check_same_shape(where, k, v);
  DEPTHKV_CHECK(head < k.n_heads(), where, "head ", head, " out of range (n_heads ", k.n_heads(), ")");
  DEPTHKV_CHECK(live.value <= k.n_tokens(), where, "live rows ", live.value, " > view's n_tokens ", k.n_tokens());
  detail::check_keep_list(where, keep, live.value);
  detail::compact_rows_unchecked(k.head(head, live.value), keep.data(), keep.size());
  detail::compact_rows_unchecked(v.head(head, live.value), keep.data(), keep.size());
  if (head_positions) detail::compact_values_unchecked(head_positions, keep.data(), keep.size());
}

/// Same, for a head whose n_tokens rows all hold tokens.
template <class T>
void retain_head(kv_view<T> k, kv_view<T> v, std::size_t head, span<const index_t> keep,
                 pos_t* head_positions = nullptr) {
  retain_head(k, v, head, tokens{k.n_tokens()}, keep, head_positions);
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
