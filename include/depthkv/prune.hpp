// The prune pipeline: score each kv head's cached tokens with a policy, select the tokens to
// keep (top-k with protected sinks / recent rows), compact the cache in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/cache/kv_view.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/score/policies.hpp"
#include "depthkv/score/window.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/select/topk.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

// Which tokens a layer keeps:
//   per_head: each kv head keeps its own top `keep` tokens (heads may keep different tokens);
//   shared:   one token set for all heads of the layer (scores averaged over heads), for engines
//             whose token slots are shared across heads (llama.cpp-like); heads must be equal length;
//   adaptive: Ada-KV style head-wise allocation: the layer keeps keep * n_kv_heads tokens in
//             total, chosen as the top (head, token) pairs over all heads, with a per-head floor
//             of alpha * keep tokens (and its protected rows); heads end with different lengths.
enum class granularity { per_head, shared, adaptive };

struct prune_options {
  granularity mode = granularity::per_head;
  float alpha = 0.2f;  // adaptive only: per-head floor fraction, in [0, 1]
};

// What the policies may need about a layer besides its cache: the last w queries (snapkv, tova).
struct layer_queries {
  window_queries queries{};
  span<const pos_t> query_positions{};  // [w] or empty (the window = the last w cached tokens)
};

// Caller-owned scratch of the pipeline, reused across calls: after the first call at a given
// size, pruning allocates nothing (bytes_reserved() stays put).
class prune_workspace {
 public:
  std::size_t bytes_reserved() const noexcept {
    return score.bytes_reserved() + scores.capacity() * sizeof(float) + keep.capacity() * sizeof(index_t) +
           counts.capacity() * sizeof(std::size_t) + cand_score.capacity() * sizeof(float) +
           cand_ref.capacity() * sizeof(index_t) + pick.capacity() * sizeof(index_t) +
           merged.capacity() * sizeof(index_t);
  }

  score_scratch score;
  topk_scratch select;              // top-k working memory (not counted in bytes_reserved)
  std::vector<float> scores;        // [n_kv_heads][stride] per-head scores (+ one shared row)
  std::vector<index_t> keep;        // [n_kv_heads][stride] keep lists
  std::vector<std::size_t> counts;  // per head: rows kept
  std::vector<float> cand_score;    // adaptive: candidates beyond the floors
  std::vector<index_t> cand_ref;
  std::vector<index_t> pick;
  std::vector<index_t> merged;

  template <class V>
  static void grow(V& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }
};

namespace detail {

// Keys and positions of one head, whatever owns them.
template <class T>
struct head_ref {
  rows_view<const T> keys;
  span<const pos_t> positions;
};

template <class T>
head_input<T> make_input(std::size_t layer, std::size_t h, std::size_t n_heads, const head_ref<T>& r,
                         const layer_queries& q) {
  head_input<T> in;
  in.layer = layer;
  in.kv_head = h;
  in.n_kv_heads = n_heads;
  in.keys = r.keys;
  in.positions = r.positions;
  in.queries = q.queries.empty() ? nullptr : &q.queries;
  in.query_positions = q.query_positions;
  return in;
}

// Adaptive mode: the rows head h (of n) keeps before the layer-wide competition: its protected
// rows, or ceil(alpha * keep) if more, at most n.
inline std::size_t adaptive_floor(std::size_t n, std::size_t keep, float alpha, std::size_t prot) noexcept {
  const std::size_t fl = clamp_to_count(std::ceil(static_cast<double>(alpha) * static_cast<double>(keep)), keep);
  return std::min(n, std::max(fl, prot));
}

// Validates one layer's prune; throws before anything is touched. Every size the selection
// computes from these inputs (row totals, the score scratch) is checked for overflow here.
template <class T, class Policy, class Heads>
void check_layer_prune(const char* where, std::size_t layer, std::size_t n_heads, Heads&& head, std::size_t keep,
                       const Policy& policy, const layer_queries& q, const prune_options& opt) {
  DEPTHKV_CHECK(opt.alpha >= 0.f && opt.alpha <= 1.f, where, "alpha must be in [0, 1], got ", opt.alpha);
  std::size_t total_len = 0, total_floor = 0, stride = 0;
  for (std::size_t h = 0; h < n_heads; ++h) {
    const head_ref<T> r = head(h);
    const std::size_t n = r.keys.n;
    const std::size_t prot = protected_rows(n, policy.n_sink, policy.n_recent);
    total_len = checked_add(where, total_len, n, "layer ", layer, ": rows summed over heads");
    stride = std::max(stride, n);
    DEPTHKV_CHECK(r.positions.empty() || r.positions.size() == n, where, "layer ", layer, " head ", h, " has ",
                  n, " rows but ", r.positions.size(), " positions");
    if (opt.mode == granularity::shared && h > 0)
      DEPTHKV_CHECK(n == head(0).keys.n, where, "shared granularity needs equal head lengths, but layer ", layer,
                    " head 0 has ", head(0).keys.n, " rows and head ", h, " has ", n);
    if (opt.mode != granularity::adaptive) {
      DEPTHKV_CHECK(n <= keep || prot <= keep, where, "keep ", keep, " for layer ", layer,
                    " is below the protected rows (", policy.name, " n_sink ", policy.n_sink, " + n_recent ",
                    policy.n_recent, ": ", prot, " of ", n, " rows)");
    } else {
      total_floor += adaptive_floor(n, keep, opt.alpha, prot);  // <= n: cannot overflow past total_len
    }
    if (n > 0) policy.check(make_input(layer, h, n_heads, r, q));
  }
  // select_layer's scratch: (n_heads + 1) score rows and n_heads keep rows of `stride` entries.
  (void)checked_mul(where, checked_mul(where, checked_add(where, n_heads, 1, "n_kv_heads + 1"), stride,
                                       "layer ", layer, ": score scratch rows"),
                    sizeof(float), "layer ", layer, ": score scratch bytes");
  if (opt.mode == granularity::adaptive) {
    const std::size_t total = std::min(sat_mul(keep, n_heads), total_len);
    DEPTHKV_CHECK(total_floor <= total, where, "layer ", layer, ": per-head floors and protected rows (",
                  total_floor, " rows: alpha ", opt.alpha, ", n_sink ", policy.n_sink, " + n_recent ",
                  policy.n_recent, ") exceed the layer's budget of ", total, " rows");
  }
}

// Merges two ascending index lists into out (returns the count).
inline std::size_t merge_sorted(const index_t* a, std::size_t na, const index_t* b, std::size_t nb, index_t* out) noexcept {
  return static_cast<std::size_t>(std::merge(a, a + na, b, b + nb, out) - out);
}

// Scores and selects one layer (no mutation). Fills ws.keep rows [h * stride ...] and ws.counts.
// Returns the row stride of ws.keep. Pre: check_layer_prune passed (no size below overflows).
template <class T, class Policy, class Heads>
std::size_t select_layer(std::size_t layer, std::size_t n_heads, Heads&& head, std::size_t keep, const Policy& policy,
                         const layer_queries& q, const prune_options& opt, prune_workspace& ws) {
  std::size_t stride = 0, total_len = 0;
  for (std::size_t h = 0; h < n_heads; ++h) {
    stride = std::max(stride, head(h).keys.n);
    total_len += head(h).keys.n;
  }
  prune_workspace::grow(ws.scores, (n_heads + 1) * stride);
  prune_workspace::grow(ws.keep, n_heads * stride);
  prune_workspace::grow(ws.counts, n_heads);
  const topk_options topt{policy.n_sink, policy.n_recent};
  for (std::size_t h = 0; h < n_heads; ++h) {
    const head_ref<T> r = head(h);
    if (r.keys.n > 0)
      policy.score(make_input(layer, h, n_heads, r, q), span<float>(ws.scores.data() + h * stride, r.keys.n), ws.score);
  }
  if (opt.mode == granularity::per_head) {
    for (std::size_t h = 0; h < n_heads; ++h) {
      const std::size_t n = head(h).keys.n;
      ws.counts[h] = topk(span<const float>(ws.scores.data() + h * stride, n), keep,
                          span<index_t>(ws.keep.data() + h * stride, n), topt, ws.select);
    }
  } else if (opt.mode == granularity::shared) {
    const std::size_t n = head(0).keys.n;
    float* mean = ws.scores.data() + n_heads * stride;
    const float inv = 1.f / static_cast<float>(n_heads);
    for (std::size_t j = 0; j < n; ++j) mean[j] = ws.scores[j];
    for (std::size_t h = 1; h < n_heads; ++h)
      for (std::size_t j = 0; j < n; ++j) mean[j] += ws.scores[h * stride + j];
    for (std::size_t j = 0; j < n; ++j) mean[j] *= inv;
    const std::size_t c = topk(span<const float>(mean, n), keep, span<index_t>(ws.keep.data(), n), topt, ws.select);
    for (std::size_t h = 0; h < n_heads; ++h) {
      ws.counts[h] = c;
      if (h > 0) std::copy(ws.keep.data(), ws.keep.data() + c, ws.keep.data() + h * stride);
    }
  } else {
    // Ada-KV: floors first (top floor_h of each head, protected rows included), then the best
    // remaining (head, token) pairs over all heads.
    const std::size_t total = std::min(sat_mul(keep, n_heads), total_len);
    std::size_t used = 0;
    for (std::size_t h = 0; h < n_heads; ++h) {
      const std::size_t n = head(h).keys.n;
      const std::size_t floor_h = adaptive_floor(n, keep, opt.alpha, protected_rows(n, policy.n_sink, policy.n_recent));
      ws.counts[h] = topk(span<const float>(ws.scores.data() + h * stride, n), floor_h,
                          span<index_t>(ws.keep.data() + h * stride, n), topt, ws.select);
      used += ws.counts[h];
    }
    const std::size_t rest = total - used;
    prune_workspace::grow(ws.cand_score, total_len);
    prune_workspace::grow(ws.cand_ref, total_len);
    prune_workspace::grow(ws.pick, total_len);
    prune_workspace::grow(ws.merged, stride);
    // Candidates: every row not already kept, head-major, ascending within a head.
    std::size_t nc = 0;
    for (std::size_t h = 0; h < n_heads; ++h) {
      const std::size_t n = head(h).keys.n;
      const index_t* sel = ws.keep.data() + h * stride;
      std::size_t s = 0;
      for (std::size_t j = 0; j < n; ++j) {
        if (s < ws.counts[h] && sel[s] == j) {
          ++s;
          continue;
        }
        ws.cand_score[nc] = ws.scores[h * stride + j];
        ws.cand_ref[nc] = static_cast<index_t>(h * stride + j);
        ++nc;
      }
    }
    const std::size_t np = topk(span<const float>(ws.cand_score.data(), nc), rest, span<index_t>(ws.pick.data(), nc), topk_options{},
                                ws.select);
    // Picks are ascending in candidate order: head-major, then row: merge them head by head.
    std::size_t p = 0;
    for (std::size_t h = 0; h < n_heads; ++h) {
      const std::size_t p0 = p;
      while (p < np && ws.cand_ref[ws.pick[p]] / stride == h) {
        ws.pick[p] = static_cast<index_t>(ws.cand_ref[ws.pick[p]] - h * stride);
        ++p;
      }
      if (p == p0) continue;
      index_t* sel = ws.keep.data() + h * stride;
      const std::size_t m = merge_sorted(sel, ws.counts[h], ws.pick.data() + p0, p - p0, ws.merged.data());
      std::copy(ws.merged.data(), ws.merged.data() + m, sel);
      ws.counts[h] = m;
    }
  }
  return stride;
}

template <class Policy>
void notify_retain(const Policy& policy, std::size_t layer, std::size_t h, span<const index_t> keep) {
  if constexpr (has_on_retain<Policy>::value) policy.on_retain(layer, h, keep);
  else (void)policy, (void)layer, (void)h, (void)keep;
}

template <class T>
struct cache_heads {
  const kv_cache<T>* cache;
  std::size_t layer;
  head_ref<T> operator()(std::size_t h) const {
    return {cache->keys(layer, h), cache->positions(layer, h)};
  }
};

}  // namespace detail

// Prunes layer `layer` of `cache` to `keep` tokens per kv head (heads holding <= keep rows are
// untouched) with `policy`: score -> top-k (protecting the policy's n_sink first and n_recent
// last rows of each head) -> compact in place. Memory stays reserved (capacity unchanged); call
// cache.shrink_to_fit(layer) to release it. queries: the layer's window queries for policies that
// need them (snapkv, tova). Validates everything first: on error (depthkv::error) the cache and
// the policy's state are unchanged. Allocation-free once ws has seen this size.
template <class T, class Policy>
void prune_layer(kv_cache<T>& cache, std::size_t layer, std::size_t keep, const Policy& policy, prune_workspace& ws,
                 const layer_queries& queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  constexpr const char* where = "depthkv::prune_layer";
  DEPTHKV_CHECK(layer < cache.n_layers(), where, "layer ", layer, " out of range (n_layers ", cache.n_layers(), ")");
  const std::size_t H = cache.n_kv_heads();
  const detail::cache_heads<T> heads{&cache, layer};
  detail::check_layer_prune<T>(where, layer, H, heads, keep, policy, queries, opt);
  const std::size_t stride = detail::select_layer<T>(layer, H, heads, keep, policy, queries, opt, ws);
  // Validated and selected: now mutate.
  for (std::size_t h = 0; h < H; ++h) {
    const span<const index_t> k(ws.keep.data() + h * stride, ws.counts[h]);
    if (k.size() == cache.length(layer, h)) continue;  // nothing dropped
    cache.retain(layer, h, k);
    detail::notify_retain(policy, layer, h, k);
  }
}

// Prunes every layer l to keep_per_layer[l] tokens per kv head (see prune_layer). queries: one
// entry per layer, or empty for policies that need none. Every layer is validated before any
// is touched.
template <class T, class Policy>
void prune(kv_cache<T>& cache, span<const std::size_t> keep_per_layer, const Policy& policy, prune_workspace& ws,
           span<const layer_queries> queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  constexpr const char* where = "depthkv::prune";
  const std::size_t L = cache.n_layers(), H = cache.n_kv_heads();
  DEPTHKV_CHECK(keep_per_layer.size() == L, where, "keep_per_layer has ", keep_per_layer.size(),
                " entries, expected n_layers = ", L);
  DEPTHKV_CHECK(queries.empty() || queries.size() == L, where, "queries has ", queries.size(),
                " entries, expected 0 or n_layers = ", L);
  const layer_queries none{};
  for (std::size_t l = 0; l < L; ++l)
    detail::check_layer_prune<T>(where, l, H, detail::cache_heads<T>{&cache, l}, keep_per_layer[l], policy,
                                 queries.empty() ? none : queries[l], opt);
  for (std::size_t l = 0; l < L; ++l) {
    const detail::cache_heads<T> heads{&cache, l};
    const std::size_t stride = detail::select_layer<T>(l, H, heads, keep_per_layer[l], policy,
                                                       queries.empty() ? none : queries[l], opt, ws);
    for (std::size_t h = 0; h < H; ++h) {
      const span<const index_t> k(ws.keep.data() + h * stride, ws.counts[h]);
      if (k.size() == cache.length(l, h)) continue;
      cache.retain(l, h, k);
      detail::notify_retain(policy, l, h, k);
    }
  }
}

// Decode-time eviction: if any head of `layer` holds more than `budget` rows, prunes the layer
// back to `budget` (H2O's one-in-one-out loop when called after every appended token).
// Returns whether it pruned.
template <class T, class Policy>
bool enforce_budget(kv_cache<T>& cache, std::size_t layer, std::size_t budget, const Policy& policy,
                    prune_workspace& ws, const layer_queries& queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  DEPTHKV_CHECK(layer < cache.n_layers(), "depthkv::enforce_budget", "layer ", layer, " out of range (n_layers ",
                cache.n_layers(), ")");
  if (cache.max_length(layer) <= budget) return false;
  prune_layer(cache, layer, budget, policy, ws, queries, opt);
  return true;
}

// Same pipeline over engine-owned memory: one layer's K and V views (any layout) and positions
// ([n_heads][positions_head_stride], or positions_head_stride 0 for one shared row). Heads all
// hold k.n_tokens() rows; per_head or adaptive modes leave heads with different counts, which
// are written to new_lengths[h] (rows of head h beyond it are garbage). Shared mode keeps the
// layout's token slots aligned across heads (what NHD engines need).
template <class T, class Policy>
void prune_view(kv_view<T> k, kv_view<T> v, pos_t* positions, std::ptrdiff_t positions_head_stride,
                std::size_t layer, std::size_t keep, const Policy& policy, prune_workspace& ws,
                span<std::size_t> new_lengths, const layer_queries& queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  static_assert(!std::is_const_v<T>, "prune_view compacts the views: they must be mutable");
  constexpr const char* where = "depthkv::prune_view";
  DEPTHKV_CHECK(k.shape() == v.shape(), where, "K shape [", k.n_heads(), "][", k.n_tokens(), "][", k.head_dim(),
                "] != V shape [", v.n_heads(), "][", v.n_tokens(), "][", v.head_dim(), "]");
  const std::size_t H = k.n_heads(), n = k.n_tokens();
  DEPTHKV_CHECK(new_lengths.size() == H, where, "new_lengths has ", new_lengths.size(), " entries, expected ", H);
  DEPTHKV_CHECK(positions_head_stride != 0 || opt.mode == granularity::shared || positions == nullptr, where,
                "a shared positions row (positions_head_stride 0) needs granularity::shared");
  auto heads = [&](std::size_t h) {
    const pos_t* p = positions ? positions + static_cast<std::ptrdiff_t>(h) * positions_head_stride : nullptr;
    return detail::head_ref<T>{rows_view<const T>(k.head(h)), p ? span<const pos_t>(p, n) : span<const pos_t>{}};
  };
  detail::check_layer_prune<T>(where, layer, H, heads, keep, policy, queries, opt);
  const std::size_t stride = detail::select_layer<T>(layer, H, heads, keep, policy, queries, opt, ws);
  if (opt.mode == granularity::shared) {
    const span<const index_t> kk(ws.keep.data(), ws.counts[0]);
    retain(k, v, kk, positions, positions_head_stride);
    for (std::size_t h = 0; h < H; ++h) {
      new_lengths[h] = kk.size();
      detail::notify_retain(policy, layer, h, kk);
    }
    return;
  }
  for (std::size_t h = 0; h < H; ++h) {
    const span<const index_t> kk(ws.keep.data() + h * stride, ws.counts[h]);
    pos_t* p = positions ? positions + static_cast<std::ptrdiff_t>(h) * positions_head_stride : nullptr;
    retain_head(k, v, h, kk, p, n);
    new_lengths[h] = kk.size();
    detail::notify_retain(policy, layer, h, kk);
  }
}

}  // namespace depthkv
