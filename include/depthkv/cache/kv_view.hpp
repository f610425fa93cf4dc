// Non-owning views over K/V memory an engine owns: one head's rows, and one layer's heads.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <type_traits>

#include "depthkv/cache/layout.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

// Rows of one head: row t is `dim` dense elements at data + t * stride. Non-owning.
// T may be const. Kernels (score, compact) work on this; it is valid for any layout.
template <class T>
struct rows_view {
  T* data = nullptr;
  std::size_t n = 0;          // rows
  std::size_t dim = 0;        // elements per row
  std::ptrdiff_t stride = 0;  // elements between consecutive rows (>= dim)

  T* row(std::size_t t) const noexcept {
    DEPTHKV_ASSERT(t < n);
    return data + static_cast<std::ptrdiff_t>(t) * stride;
  }
  operator rows_view<const T>() const noexcept { return {data, n, dim, stride}; }
};

namespace detail {
inline std::size_t abs_stride(std::ptrdiff_t s) noexcept {
  // -(s + 1) + 1 instead of -s: PTRDIFF_MIN has no positive counterpart.
  return s < 0 ? static_cast<std::size_t>(-(s + 1)) + 1 : static_cast<std::size_t>(s);
}

// Largest element offset a view may address: byte offsets must fit in ptrdiff_t.
template <class T>
constexpr std::size_t max_view_elements() noexcept {
  return ptrdiff_max / sizeof(T);
}

// Throws unless `rows` addresses a valid range: data set when rows exist, dim > 0, rows that do
// not overlap (|stride| >= dim when n > 1), and (n - 1) * |stride| + dim elements whose byte
// offsets fit in ptrdiff_t.
template <class T>
void check_rows_view(const char* where, const char* name, const rows_view<T>& rows) {
  if (rows.n == 0) return;
  DEPTHKV_CHECK(rows.dim > 0, where, name, ".dim must be > 0 for ", rows.n, " rows");
  DEPTHKV_CHECK(rows.data != nullptr, where, name, ".data is null for ", rows.n, " rows");
  const std::size_t st = abs_stride(rows.stride);
  DEPTHKV_CHECK(rows.n == 1 || st >= rows.dim, where, name, ".stride ", rows.stride, " overlaps rows of dim ",
                rows.dim);
  std::size_t span_elems = 0;
  DEPTHKV_CHECK(mul_fits(rows.n - 1, st, span_elems) && add_fits(span_elems, rows.dim, span_elems) &&
                    span_elems <= max_view_elements<T>(),
                where, name, ": ", rows.n, " rows of stride ", rows.stride, " and dim ", rows.dim,
                " address more than ", max_view_elements<T>(), " elements");
}

// a * b as an element stride, or throws naming the two counts.
inline std::ptrdiff_t checked_stride(const char* where, std::size_t a, const char* a_name, std::size_t b,
                                     const char* b_name) {
  std::size_t r = 0;
  DEPTHKV_CHECK(mul_fits(a, b, r) && r <= ptrdiff_max, where, a_name, " ", a, " * ", b_name, " ", b,
                " overflows the element stride");
  return static_cast<std::ptrdiff_t>(r);
}
}  // namespace detail

// Non-owning view of one layer's K (or V): [n_heads][n_tokens][head_dim] addressed through
// explicit element strides, so both NHD and HND engine buffers (and padded ones) work.
// T is float, Eigen::half or Eigen::bfloat16, optionally const.
template <class T>
class kv_view {
  static_assert(is_kv_element_v<T>,
                "depthkv::kv_view<T>: T must be float, Eigen::half or Eigen::bfloat16 (maybe const)");

 public:
  using element_type = T;

  kv_view() = default;

  // Throws depthkv::error when data is null for a non-empty shape, head_dim is 0, or the
  // strides make two distinct (head, token) rows overlap.
  kv_view(T* data, kv_shape shape, kv_strides strides) : data_(data), shape_(shape), strides_(strides) {
    validate();
  }

  // Dense NHD buffer [n_tokens][n_heads][head_dim].
  static kv_view nhd(T* data, std::size_t n_tokens, std::size_t n_heads, std::size_t head_dim) {
    const kv_shape s{n_heads, n_tokens, head_dim};
    const auto token = detail::checked_stride("depthkv::kv_view::nhd", n_heads, "n_heads", head_dim, "head_dim");
    return kv_view(data, s, kv_strides{static_cast<std::ptrdiff_t>(head_dim), token});
  }
  // HND buffer [n_heads][token_capacity][head_dim] whose first n_tokens slots per head are used.
  static kv_view hnd(T* data, std::size_t n_heads, std::size_t n_tokens, std::size_t head_dim,
                     std::size_t token_capacity = 0) {
    if (token_capacity == 0) token_capacity = n_tokens;
    DEPTHKV_CHECK(token_capacity >= n_tokens, "depthkv::kv_view::hnd",
                  "token_capacity (", token_capacity, ") < n_tokens (", n_tokens, ")");
    const kv_shape s{n_heads, n_tokens, head_dim};
    const auto head =
        detail::checked_stride("depthkv::kv_view::hnd", token_capacity, "token_capacity", head_dim, "head_dim");
    return kv_view(data, s, kv_strides{head, static_cast<std::ptrdiff_t>(head_dim)});
  }

  T* data() const noexcept { return data_; }
  const kv_shape& shape() const noexcept { return shape_; }
  const kv_strides& strides() const noexcept { return strides_; }
  std::size_t n_heads() const noexcept { return shape_.n_heads; }
  std::size_t n_tokens() const noexcept { return shape_.n_tokens; }
  std::size_t head_dim() const noexcept { return shape_.head_dim; }

  // Pointer to row (head h, token t); h < n_heads, t < n_tokens.
  T* row(std::size_t h, std::size_t t) const noexcept {
    DEPTHKV_ASSERT(h < shape_.n_heads && t < shape_.n_tokens);
    return data_ + static_cast<std::ptrdiff_t>(h) * strides_.head +
           static_cast<std::ptrdiff_t>(t) * strides_.token;
  }
  // The rows of head h (the first `n` of them; default all n_tokens).
  rows_view<T> head(std::size_t h) const noexcept { return head(h, shape_.n_tokens); }
  rows_view<T> head(std::size_t h, std::size_t n) const noexcept {
    DEPTHKV_ASSERT(h < shape_.n_heads && n <= shape_.n_tokens);
    return {data_ + static_cast<std::ptrdiff_t>(h) * strides_.head, n, shape_.head_dim, strides_.token};
  }
  // Same memory with only the first n_tokens tokens visible (n_tokens <= this->n_tokens()).
  kv_view first_tokens(std::size_t n_tokens) const {
    DEPTHKV_CHECK(n_tokens <= shape_.n_tokens, "depthkv::kv_view::first_tokens", "n_tokens (", n_tokens,
                  ") > view's n_tokens (", shape_.n_tokens, ")");
    kv_view v = *this;
    v.shape_.n_tokens = n_tokens;
    return v;
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
