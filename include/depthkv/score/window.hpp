// Observation-window scores: how much attention the last w queries of a layer pay to each
// cached token (QK^T, causal softmax, column sums), aggregated over each kv head's GQA group.
// Recomputes only the window's attention, so it works with engines that use fused/flash
// attention and never materialise attention weights.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "depthkv/view/kv_view.hpp"
#include "depthkv/config.hpp"
#include "depthkv/error.hpp"
#include "depthkv/detail/grow_buffer.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/score/detail/window_avx2.hpp"
#include "depthkv/score/detail/window_avx512.hpp"
#include "depthkv/score/detail/window_common.hpp"
#include "depthkv/score/detail/window_scalar.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// How the query heads of one kv head's GQA group are combined into one score per token.
enum class gqa_reduce { mean, max };


/// The last w queries of one layer, f32 [n_heads][w][head_dim]: row (h, i) is head_dim dense
/// floats at data + h * head_stride + i * query_stride. Non-owning. Query head h belongs to kv
/// head h / (n_heads / n_kv_heads) (the usual GQA grouping).
struct window_queries {
  const float* data = nullptr;
  std::size_t n_heads = 0, w = 0, head_dim = 0;
  std::ptrdiff_t head_stride = 0, query_stride = 0;

  /// Dense [n_heads][w][head_dim] queries, shape from named counts (tokens = w):
  /// window_queries::dense(q, kv_shape(heads{n_q_heads}, tokens{w}, dim{head_dim})).
  /// Throws when the whole buffer's extent overflows.
  static window_queries dense(const float* data, kv_shape shape) {
    const std::size_t n_heads = shape.n_heads, w = shape.n_tokens, head_dim = shape.head_dim;
    check_extent("depthkv::window_queries::dense", n_heads, w, head_dim);
    return {data, n_heads, w, head_dim, static_cast<std::ptrdiff_t>(w * head_dim),
            static_cast<std::ptrdiff_t>(head_dim)};
  }
  /// Dense [w][n_heads][head_dim] (token-major, as engines often hold Q).
  static window_queries token_major(const float* data, kv_shape shape) {
    const std::size_t n_heads = shape.n_heads, w = shape.n_tokens, head_dim = shape.head_dim;
    check_extent("depthkv::window_queries::token_major", n_heads, w, head_dim);
    return {data, n_heads, w, head_dim, static_cast<std::ptrdiff_t>(head_dim),
            static_cast<std::ptrdiff_t>(n_heads * head_dim)};
  }
  bool empty() const noexcept { return data == nullptr || n_heads == 0 || w == 0; }
  /// Throws unless n_heads * w * head_dim floats have byte offsets that fit in ptrdiff_t.
  static void check_extent(const char* where, std::size_t n_heads, std::size_t w, std::size_t head_dim) {
    std::size_t e = 0;
    DEPTHKV_CHECK(detail::mul_fits(n_heads, w, e) && detail::mul_fits(e, head_dim, e) &&
                      e <= detail::max_view_elements<float>(),
                  where, "n_heads ", n_heads, " * w ", w, " * head_dim ", head_dim, " queries overflow the buffer extent");
  }
  const float* row(std::size_t h, std::size_t i) const noexcept {
    DEPTHKV_ASSERT(h < n_heads && i < w);
    return data + static_cast<std::ptrdiff_t>(h) * head_stride + static_cast<std::ptrdiff_t>(i) * query_stride;
  }
  /// The last m (<= w) queries of the window.
  window_queries last(std::size_t m) const noexcept {
    DEPTHKV_ASSERT(m <= w);
    window_queries r = *this;
    if (w > 0) r.data = data + static_cast<std::ptrdiff_t>(w - m) * query_stride;
    r.w = m;
    return r;
  }
};

/// Knobs of window_scores.
///
/// Causality. The window queries are the last w tokens of the sequence, so query i may attend
/// only to keys at positions <= its own:
///  - query_positions empty (default): the last w cached keys ARE the window tokens, in order:
///    query i sees key rows [0, n - w + i]. Needs n >= w. This is the state right after a
///    prefill (or after the window's tokens were appended), which is when SnapKV prunes.
///  - query_positions given ([w], strictly ascending): query i sees the keys whose position
///    (key_positions, [n] strictly ascending) is <= query_positions[i]. Use it when the window's
///    own keys are not in the cache yet, or the positions are not contiguous.
/// A query that sees no key contributes nothing.
///
/// Sliding window (sliding_window = W, as in Mistral, Gemma 2/3 local layers, gpt-oss): a query
/// at position p also sees only the keys at positions k with p - k < W, i.e. p - W < k <= p, the
/// last W positions including its own (HF transformers' `q_idx - kv_idx < sliding_window`;
/// W = 1: a query sees only itself). Combined with the causal rule above:
///  - query_positions given: query i at position query_positions[i]; key j at key_positions[j].
///  - query_positions empty: query i is key row r = n - w + i; with key_positions given ([n],
///    strictly ascending) the positions are key_positions[r] and key_positions[j], so a cache
///    already pruned (gaps) is windowed by real distance; key_positions empty: by row, p - k = r - j.
/// Keys that no window query sees get score 0 and are never read (with a window W much
/// shorter than the cache only about the last W + w keys cost anything).
///
/// Soft-cap (soft_cap = c, Gemma 2 `attn_logit_softcapping`, 50): each scaled logit
/// x = q.k * scale becomes c * tanh(x / c) before the softmax (and before the masks). The scalar
/// path uses std::tanh; the SIMD paths a vector tanh within 3e-7 relative (detail::window_tanh_on).
struct window_options {
  gqa_reduce reduce = gqa_reduce::mean;
  std::optional<float> scale{};          ///< softmax scale of q.k (> 0); unset: 1/sqrt(head_dim)
  span<const pos_t> query_positions{};   ///< see above
  std::optional<std::size_t> sliding_window{};  ///< W >= 1 positions; unset: no window (causal only)
  std::optional<float> soft_cap{};       ///< logit cap c (finite, > 0); unset: no cap
};

/// Reusable scratch of window_scores: sized on first use, then reused (no allocation in steady
/// state as long as n, head_dim and the group size do not grow).
class window_scratch {
 public:
  /// Grows the scratch to fit a head of n tokens, head_dim d, g query heads per kv head, w queries.
  void reserve(std::size_t n, std::size_t d, std::size_t g, std::size_t w) {
    buf_.reserve(std::max(detail::window_simd_plan::floats(n, d, g), detail::window_scratch_scalar(n, d)));
    limit_.reserve(2 * w);  // causal limits, then the sliding windows' first keys
  }
  std::size_t bytes_reserved() const noexcept {
    return buf_.size() * sizeof(float) + limit_.size() * sizeof(std::size_t);
  }
  /// Raw storage for the kernels (valid after reserve).
  float* floats() noexcept { return buf_.data(); }
  std::size_t* limits() noexcept { return limit_.data(); }

 private:
  detail::grow_buffer<float> buf_;
  detail::grow_buffer<std::size_t> limit_;
};

namespace detail {

// Runs a validated job on path `path` (compiled in and supported by the CPU).
#define DEPTHKV_WINDOW_ON(fn)                                                                   \
  switch (path) {                                                                                \
    DEPTHKV_WINDOW_CASES(fn)                                                                     \
    default: return scalar::fn(job, keys, k_stride, out, scratch);                              \
  }
#if DEPTHKV_X86_SIMD
#define DEPTHKV_WINDOW_CASES(fn)                                                                 \
  case isa::avx512: return (*DEPTHKV_AVX512_FN(fn))(job, keys, k_stride, out, scratch);        \
  case isa::avx2: return (*DEPTHKV_AVX2_FN(fn))(job, keys, k_stride, out, scratch);
#else
#define DEPTHKV_WINDOW_CASES(fn)
#endif
inline void window_on(isa path, const window_job& job, const float* keys, std::ptrdiff_t k_stride, float* out,
                      float* scratch) noexcept {
  DEPTHKV_WINDOW_ON(window_f32)
}
inline void window_on(isa path, const window_job& job, const f16* keys, std::ptrdiff_t k_stride, float* out,
                      float* scratch) noexcept {
  DEPTHKV_WINDOW_ON(window_f16)
}
inline void window_on(isa path, const window_job& job, const bf16* keys, std::ptrdiff_t k_stride, float* out,
                      float* scratch) noexcept {
  DEPTHKV_WINDOW_ON(window_bf16)
}
#undef DEPTHKV_WINDOW_CASES
#undef DEPTHKV_WINDOW_ON

/// y[i] = tanh(x[i]), i < n, as the soft-capped kernel of `path` computes it (path compiled in
/// and supported by the CPU): std::tanh on the scalar path; on the SIMD paths a vector tanh
/// within 3e-7 relative of the exact value (and exact for |x| below ~2^-12, +-1 at +-inf, NaN
/// kept). For tests and benchmarks.
inline void window_tanh_on(isa path, const float* x, float* y, std::size_t n) noexcept {
  switch (path) {
#if DEPTHKV_X86_SIMD
    case isa::avx512: return (*DEPTHKV_AVX512_FN(window_tanh))(x, y, n);
    case isa::avx2: return (*DEPTHKV_AVX2_FN(window_tanh))(x, y, n);
#endif
    default: return scalar::window_tanh(x, y, n);
  }
}

/// Throws unless key_positions is strictly ascending.
inline void check_ascending(const char* where, span<const pos_t> key_positions) {
  for (std::size_t j = 1; j < key_positions.size(); ++j)
    DEPTHKV_CHECK(key_positions[j] > key_positions[j - 1], where,
                  "key_positions must be strictly ascending, but key_positions[", j - 1, "] = ",
                  key_positions[j - 1], " and key_positions[", j, "] = ", key_positions[j]);
}

/// Validates the inputs of window_scores; throws depthkv::error naming the bad argument.
template <class T>
void check_window_args(const char* where, const window_queries& q, std::size_t n_kv_heads, std::size_t kv_head,
                       rows_view<const T> keys, span<const pos_t> key_positions, span<float> out,
                       const window_options& opt) {
  DEPTHKV_CHECK(!q.empty(), where, "queries are empty (data ", static_cast<const void*>(q.data), ", n_heads ",
                q.n_heads, ", w ", q.w, ")");
  DEPTHKV_CHECK(n_kv_heads > 0 && q.n_heads % n_kv_heads == 0, where, "n_q_heads (", q.n_heads,
                ") must be a positive multiple of n_kv_heads (", n_kv_heads, ")");
  DEPTHKV_CHECK(kv_head < n_kv_heads, where, "kv_head ", kv_head, " out of range (n_kv_heads ", n_kv_heads, ")");
  DEPTHKV_CHECK(q.head_dim == keys.dim, where, "queries have head_dim ", q.head_dim, " but keys have ", keys.dim);
  DEPTHKV_CHECK(keys.dim > 0, where, "head_dim must be > 0");
  check_rows_view(where, "keys", keys);
  DEPTHKV_CHECK(out.size() >= keys.n, where, "out has ", out.size(), " entries, need ", keys.n);
  const std::size_t g = q.n_heads / n_kv_heads;
  const std::size_t need = std::max(window_simd_plan::floats(keys.n, keys.dim, g), window_scratch_scalar(keys.n, keys.dim));
  DEPTHKV_CHECK(need < size_max / sizeof(float), where, "keys n ", keys.n, ", head_dim ", keys.dim, " and ", g,
                " query heads per kv head need more scratch than size_t can count");
  DEPTHKV_CHECK(!opt.scale || (*opt.scale > 0.f && std::isfinite(*opt.scale)), where,
                "scale must be finite and > 0 when given, got ", opt.scale.value_or(0.f));
  DEPTHKV_CHECK(!opt.sliding_window || *opt.sliding_window > 0, where,
                "sliding_window must be >= 1 position when given, got ", opt.sliding_window.value_or(0));
  DEPTHKV_CHECK(!opt.soft_cap || (*opt.soft_cap > 0.f && std::isfinite(*opt.soft_cap)), where,
                "soft_cap must be finite and > 0 when given, got ", opt.soft_cap.value_or(0.f));
  if (opt.query_positions.empty()) {
    DEPTHKV_CHECK(keys.n >= q.w, where, "the window's ", q.w, " queries must be the last cached keys, but only ",
                  keys.n, " keys are cached (pass query_positions otherwise)");
    if (opt.sliding_window && !key_positions.empty()) {  // the window is measured in these positions
      DEPTHKV_CHECK(key_positions.size() == keys.n, where, "key_positions has ", key_positions.size(),
                    " entries, expected one per key (", keys.n, ") or none for a sliding window over rows");
      check_ascending(where, key_positions);
    }
  } else {
    DEPTHKV_CHECK(opt.query_positions.size() == q.w, where, "query_positions has ", opt.query_positions.size(),
                  " entries, expected w = ", q.w);
    for (std::size_t i = 1; i < q.w; ++i)
      DEPTHKV_CHECK(opt.query_positions[i] > opt.query_positions[i - 1], where,
                    "query_positions must be strictly ascending, but query_positions[", i - 1, "] = ",
                    opt.query_positions[i - 1], " and query_positions[", i, "] = ", opt.query_positions[i]);
    DEPTHKV_CHECK(key_positions.size() == keys.n, where, "key_positions has ", key_positions.size(),
                  " entries, expected one per key (", keys.n, ") when query_positions are given");
    check_ascending(where, key_positions);
  }
}

/// The keys [first[i], limit[i]) that window query i sees (validated options; n keys, w queries),
/// into first[w] and limit[w].
inline void window_ranges(std::size_t n, std::size_t w, span<const pos_t> key_positions, const window_options& opt,
                          std::size_t* first, std::size_t* limit) noexcept {
  const pos_t* kp = key_positions.data();
  // The first key at position > p - W, p - W in 64 bits (W clamped to 2^40, beyond any
  // distance of two pos_t: no overflow).
  auto first_by_position = [&](pos_t p) {
    constexpr std::size_t w_beyond = std::size_t{1} << 40;
    const std::int64_t lo = std::int64_t{p} - static_cast<std::int64_t>(std::min(*opt.sliding_window, w_beyond));
    return static_cast<std::size_t>(
        std::partition_point(kp, kp + n, [lo](pos_t k) { return std::int64_t{k} <= lo; }) - kp);
  };
  for (std::size_t i = 0; i < w; ++i) {
    if (opt.query_positions.empty()) {
      const std::size_t r = n - w + i;  // the query's own key row
      limit[i] = r + 1;
      if (!opt.sliding_window) first[i] = 0;
      else if (key_positions.empty()) first[i] = r + 1 > *opt.sliding_window ? r + 1 - *opt.sliding_window : 0;
      else first[i] = first_by_position(kp[r]);
    } else {
      const pos_t p = opt.query_positions[i];
      limit[i] = static_cast<std::size_t>(std::upper_bound(kp, kp + n, p) - kp);
      first[i] = opt.sliding_window ? std::min(first_by_position(p), limit[i]) : 0;
    }
  }
}

}  // namespace detail


/// Scores the cached tokens of kv head `kv_head` (of n_kv_heads) of one layer:
///   out[j] = reduce_{h in group(kv_head)} sum_{i < w} softmax_i(cap(q[h][i] . k[j] * scale))[j]
/// over the keys query i sees (causal, and the sliding window if set; cap(x) = x, or
/// c * tanh(x / c) with soft_cap c). keys: [n][head_dim] rows (f32, f16 or bf16); key_positions:
/// [n] (read when opt.query_positions is given, or with a sliding window when non-empty); out:
/// >= n floats (the first n are written). Each score lies in [0, w]; the scores of one head sum
/// to the number of window queries that see >= 1 key (mean). Within ~1e-6 relative of a
/// double-precision evaluation. Throws depthkv::error on bad input.
template <class T>
void window_scores(const window_queries& q, std::size_t n_kv_heads, std::size_t kv_head, rows_view<const T> keys,
                   span<const pos_t> key_positions, span<float> out, window_scratch& scratch,
                   const window_options& opt = {}) {
  static_assert(is_kv_element_v<T>, "depthkv::window_scores: keys must be float, Eigen::half or Eigen::bfloat16");
  using U = std::remove_const_t<T>;
  detail::check_window_args("depthkv::window_scores", q, n_kv_heads, kv_head, keys, key_positions, out, opt);
  const std::size_t n = keys.n, d = keys.dim, g = q.n_heads / n_kv_heads;
  if (n == 0) return;
  scratch.reserve(n, d, g, q.w);
  std::size_t* limit = scratch.limits();
  std::size_t* first = limit + q.w;
  detail::window_ranges(n, q.w, key_positions, opt, first, limit);
  // Only keys [lo, hi) are seen by some query (lo > 0: sliding window; hi < n: positions): the
  // kernel runs on those alone, the rest score 0.
  std::size_t lo = n, hi = 0;
  for (std::size_t i = 0; i < q.w; ++i)
    if (first[i] < limit[i]) {
      lo = std::min(lo, first[i]);
      hi = std::max(hi, limit[i]);
    }
  if (lo >= hi) {  // no query sees a key
    std::fill(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n), 0.f);
    return;
  }
  for (std::size_t i = 0; i < q.w; ++i) {  // clamped: a query that sees nothing keeps first == limit
    first[i] = std::min(std::max(first[i], lo), hi) - lo;
    limit[i] = std::min(std::max(limit[i], lo), hi) - lo;
  }
  std::fill(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(lo), 0.f);
  std::fill(out.begin() + static_cast<std::ptrdiff_t>(hi), out.begin() + static_cast<std::ptrdiff_t>(n), 0.f);
  detail::window_job job;
  job.q = q.row(kv_head * g, 0);
  job.q_hs = q.head_stride;
  job.q_rs = q.query_stride;
  job.g = g;
  job.w = q.w;
  job.d = d;
  job.n = hi - lo;
  job.qscale = opt.scale ? *opt.scale : 1.f / std::sqrt(static_cast<float>(d));
  job.limit = limit;
  job.first = opt.sliding_window ? first : nullptr;
  if (opt.soft_cap) {
    job.capped = true;
    job.cap = *opt.soft_cap;
  }
  job.reduce_max = opt.reduce == gqa_reduce::max;
  const U* k0 = static_cast<const U*>(keys.data) + static_cast<std::ptrdiff_t>(lo) * keys.stride;
  detail::window_on(active_isa(), job, k0, keys.stride, out.data() + lo, scratch.floats());
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
