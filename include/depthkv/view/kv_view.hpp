// Non-owning view of one layer's K (or V) in engine memory: [n_heads][n_tokens][head_dim], any strides.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <type_traits>

#include "depthkv/view/rows_view.hpp"
#include "depthkv/view/shape.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Non-owning view of one layer's K (or V): [n_heads][n_tokens][head_dim] addressed through
/// explicit element strides, so both NHD and HND engine buffers (and padded ones) work.
/// T is float, Eigen::half or Eigen::bfloat16, optionally const.
template <class T>
class kv_view {
  static_assert(is_kv_element_v<T>,
                "depthkv::kv_view<T>: T must be float, Eigen::half or Eigen::bfloat16 (maybe const)");

 public:
  using element_type = T;

  kv_view() = default;

  /// Throws depthkv::error when data is null for a non-empty shape, head_dim is 0, or the
  /// strides make two distinct (head, token) rows overlap.
  kv_view(T* data, kv_shape shape, kv_strides strides) : data_(data), shape_(shape), strides_(strides) {
    validate();
  }

  /// Dense NHD buffer [n_tokens][n_heads][head_dim]. Throws as the constructor does.
  static kv_view nhd(T* data, kv_shape shape) {
    const auto token = detail::checked_stride("depthkv::kv_view::nhd", shape.n_heads, "n_heads", shape.head_dim,
                                              "head_dim");
    return kv_view(data, shape, kv_strides{static_cast<std::ptrdiff_t>(shape.head_dim), token});
  }
  /// Dense HND buffer [n_heads][n_tokens][head_dim].
  static kv_view hnd(T* data, kv_shape shape) { return hnd(data, shape, shape.n_tokens); }
  /// HND buffer [n_heads][token_capacity][head_dim] whose first shape.n_tokens slots per head are
  /// used. Throws when token_capacity < shape.n_tokens.
  static kv_view hnd(T* data, kv_shape shape, std::size_t token_capacity) {
    DEPTHKV_CHECK(token_capacity >= shape.n_tokens, "depthkv::kv_view::hnd", "token_capacity (", token_capacity,
                  ") < n_tokens (", shape.n_tokens, ")");
    const auto head = detail::checked_stride("depthkv::kv_view::hnd", token_capacity, "token_capacity",
                                             shape.head_dim, "head_dim");
    return kv_view(data, shape, kv_strides{head, static_cast<std::ptrdiff_t>(shape.head_dim)});
  }

  T* data() const noexcept { return data_; }
  const kv_shape& shape() const noexcept { return shape_; }
  const kv_strides& strides() const noexcept { return strides_; }
  std::size_t n_heads() const noexcept { return shape_.n_heads; }
  std::size_t n_tokens() const noexcept { return shape_.n_tokens; }
  std::size_t head_dim() const noexcept { return shape_.head_dim; }

  /// Pointer to row (head h, token t); h < n_heads, t < n_tokens.
  T* row(std::size_t h, std::size_t t) const noexcept {
    DEPTHKV_ASSERT(h < shape_.n_heads && t < shape_.n_tokens);
    return data_ + static_cast<std::ptrdiff_t>(h) * strides_.head +
           static_cast<std::ptrdiff_t>(t) * strides_.token;
  }
  /// The rows of head h (the first `n` of them; default all n_tokens).
  rows_view<T> head(std::size_t h) const noexcept { return head(h, shape_.n_tokens); }
  rows_view<T> head(std::size_t h, std::size_t n) const noexcept {
    DEPTHKV_ASSERT(h < shape_.n_heads && n <= shape_.n_tokens);
    return {data_ + static_cast<std::ptrdiff_t>(h) * strides_.head, n, shape_.head_dim, strides_.token};
  }
  operator kv_view<const T>() const noexcept {
    kv_view<const T> v;
    v.assign_unchecked(data_, shape_, strides_);
    return v;
  }

 private:
  template <class>
  friend class kv_view;

  void assign_unchecked(T* d, kv_shape s, kv_strides st) noexcept {
    data_ = d;
    shape_ = s;
    strides_ = st;
  }

  void validate() const {
    constexpr const char* where = "depthkv::kv_view";
    DEPTHKV_CHECK(shape_.head_dim > 0, where, "head_dim must be > 0, got ", shape_.head_dim);
    if (shape_.n_heads == 0 || shape_.n_tokens == 0) return;
    DEPTHKV_CHECK(data_ != nullptr, where, "data is null for shape [", shape_.n_heads, "][",
                  shape_.n_tokens, "][", shape_.head_dim, "]");
    const std::size_t sh = detail::abs_stride(strides_.head), st = detail::abs_stride(strides_.token);
    // The farthest element, (n_heads - 1) * |head| + (n_tokens - 1) * |token| + head_dim - 1,
    // must have a byte offset that fits in ptrdiff_t; this also bounds the overlap checks below.
    std::size_t a = 0, b = 0, extent = 0;
    DEPTHKV_CHECK(detail::mul_fits(shape_.n_heads - 1, sh, a) && detail::mul_fits(shape_.n_tokens - 1, st, b) &&
                      detail::add_fits(a, b, extent) && detail::add_fits(extent, shape_.head_dim, extent) &&
                      extent <= detail::max_view_elements<T>(),
                  where, "strides (head ", strides_.head, ", token ", strides_.token, ") for shape [",
                  shape_.n_heads, "][", shape_.n_tokens, "][", shape_.head_dim, "] address more than ",
                  detail::max_view_elements<T>(), " elements");
    const bool one_head = shape_.n_heads == 1, one_token = shape_.n_tokens == 1;
    if (one_head && one_token) return;
    if (one_head) {
      DEPTHKV_CHECK(st >= shape_.head_dim, where, "token stride ", strides_.token,
                    " overlaps rows of head_dim ", shape_.head_dim);
      return;
    }
    if (one_token) {
      DEPTHKV_CHECK(sh >= shape_.head_dim, where, "head stride ", strides_.head,
                    " overlaps rows of head_dim ", shape_.head_dim);
      return;
    }
    // Rows must not overlap: order the two strides; the smaller one must cover a row and
    // the larger one must cover every row of the smaller dimension.
    const bool token_inner = st <= sh;
    const std::size_t inner = token_inner ? st : sh, outer = token_inner ? sh : st;
    const std::size_t inner_count = token_inner ? shape_.n_tokens : shape_.n_heads;
    DEPTHKV_CHECK(inner >= shape_.head_dim, where, "strides (head ", strides_.head, ", token ",
                  strides_.token, ") overlap rows of head_dim ", shape_.head_dim);
    DEPTHKV_CHECK(outer >= inner * (inner_count - 1) + shape_.head_dim, where, "strides (head ",
                  strides_.head, ", token ", strides_.token, ") make rows of different ",
                  token_inner ? "heads" : "tokens", " overlap for shape [", shape_.n_heads, "][",
                  shape_.n_tokens, "][", shape_.head_dim, "]");
  }

  T* data_ = nullptr;
  kv_shape shape_{};
  kv_strides strides_{};
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
