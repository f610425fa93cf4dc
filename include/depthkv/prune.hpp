// The prune pipeline: score each kv head's cached tokens with a policy, select the tokens to
// keep (top-k with protected sinks / recent rows), compact the cache in place.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/view/kv_view.hpp"
#include "depthkv/view/layer_view.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/score/policies.hpp"
#include "depthkv/score/window.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/select/topk.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

/// Which tokens a layer keeps:
///   per_head: each kv head keeps its own top `keep` tokens (heads may keep different tokens);
///   shared:   one token set for all heads of the layer (scores averaged over heads), for engines
///             whose token slots are shared across heads (llama.cpp-like); heads must be equal length;
///   adaptive: Ada-KV style head-wise allocation: the layer keeps keep * n_kv_heads tokens in
///             total, chosen as the top (head, token) pairs over all heads, with a per-head floor
///             of alpha * keep tokens (and its protected rows); heads end with different lengths.
enum class granularity { per_head, shared, adaptive };

struct prune_options {
  granularity mode = granularity::per_head;
  float alpha = 0.2f;  ///< adaptive only: per-head floor fraction, in [0, 1]
};

/// What the policies may need about a layer besides its cache: the last w queries (snapkv, tova).
struct layer_queries {
  window_queries queries{};
  span<const pos_t> query_positions{};  ///< [w] or empty (the window = the last w cached tokens)
};

/// Caller-owned scratch of the pipeline, reused across calls: after the first call at a given
/// size, pruning allocates nothing (bytes_reserved() stays put). One per thread.
class prune_workspace {
 public:
  /// Bytes held by every buffer, the top-k scratch included.
  std::size_t bytes_reserved() const noexcept {
    return score.bytes_reserved() + select.bytes_reserved() + scores.capacity() * sizeof(float) + keep.capacity() * sizeof(index_t) +
           counts.capacity() * sizeof(std::size_t) + cand_score.capacity() * sizeof(float) +
           cand_ref.capacity() * sizeof(index_t) + pick.capacity() * sizeof(index_t) +
           merged.capacity() * sizeof(index_t);
  }

  score_scratch score;
  topk_scratch select;              ///< top-k working memory
  std::vector<float> scores;        ///< [n_kv_heads][stride] per-head scores (+ one shared row)
  std::vector<index_t> keep;        ///< [n_kv_heads][stride] keep lists
  std::vector<std::size_t> counts;  ///< per head: rows kept
  std::vector<float> cand_score;    ///< adaptive: candidates beyond the floors
  std::vector<index_t> cand_ref;
  std::vector<index_t> pick;
  std::vector<index_t> merged;

  template <class V>
  static void grow(V& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }
};

namespace detail {

/// Keys and positions of one head, whatever owns them.
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

/// Adaptive mode: the rows head h (of n) keeps before the layer-wide competition: its protected
/// rows, or ceil(alpha * keep) if more, at most n.
inline std::size_t adaptive_floor(std::size_t n, std::size_t keep, float alpha, std::size_t prot) noexcept {
  const std::size_t fl = clamp_to_count(std::ceil(static_cast<double>(alpha) * static_cast<double>(keep)), keep);
  return std::min(n, std::max(fl, prot));
}

/// Row stride of one layer's selection scratch (its longest head) and its rows summed over
/// heads. The one place these sizes are computed: the check below proves they do not overflow,
/// select_layer reuses them.
struct layer_extent {
  std::size_t stride = 0;
  std::size_t total_len = 0;
};

template <class T, class Heads>
layer_extent measure_layer(const char* where, std::size_t layer, std::size_t n_heads, Heads&& head) {
  layer_extent e;
  for (std::size_t h = 0; h < n_heads; ++h) {
    const std::size_t n = head(h).keys.n;
    e.total_len = checked_add(where, e.total_len, n, "layer ", layer, ": rows summed over heads");
    e.stride = std::max(e.stride, n);
  }
  // select_layer's scratch: (n_heads + 1) score rows and n_heads keep rows of `stride` entries.
  (void)checked_mul(where, checked_mul(where, checked_add(where, n_heads, 1, "n_kv_heads + 1"), e.stride,
                                       "layer ", layer, ": score scratch rows"),
                    sizeof(float), "layer ", layer, ": score scratch bytes");
  return e;
}

/// Validates one layer's prune; throws before anything is touched. Every size the selection
/// computes from these inputs (row totals, the score scratch) is checked for overflow here.
template <class T, class Policy, class Heads>
void check_layer_prune(const char* where, std::size_t layer, std::size_t n_heads, Heads&& head, std::size_t keep,
                       const Policy& policy, const layer_queries& q, const prune_options& opt) {
  DEPTHKV_CHECK(opt.alpha >= 0.f && opt.alpha <= 1.f, where, "alpha must be in [0, 1], got ", opt.alpha);
  const layer_extent e = measure_layer<T>(where, layer, n_heads, head);
  std::size_t total_floor = 0;
  for (std::size_t h = 0; h < n_heads; ++h) {
    const head_ref<T> r = head(h);
    const std::size_t n = r.keys.n;
    const std::size_t prot = protected_rows(n, policy.n_sink, policy.n_recent);
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
  if (opt.mode == granularity::adaptive) {
    const std::size_t total = std::min(sat_mul(keep, n_heads), e.total_len);
    DEPTHKV_CHECK(total_floor <= total, where, "layer ", layer, ": per-head floors and protected rows (",
                  total_floor, " rows: alpha ", opt.alpha, ", n_sink ", policy.n_sink, " + n_recent ",
                  policy.n_recent, ") exceed the layer's budget of ", total, " rows");
  }
}

/// Merges two ascending index lists into out (returns the count).
inline std::size_t merge_sorted(const index_t* a, std::size_t na, const index_t* b, std::size_t nb, index_t* out) noexcept {
  return static_cast<std::size_t>(std::merge(a, a + na, b, b + nb, out) - out);
}

/// Scores and selects one layer (no mutation). Fills ws.keep rows [h * stride ...] and ws.counts.
/// Returns the row stride of ws.keep. Pre: check_layer_prune passed (no size below overflows).
template <class T, class Policy, class Heads>
std::size_t select_layer(std::size_t layer, std::size_t n_heads, Heads&& head, std::size_t keep, const Policy& policy,
                         const layer_queries& q, const prune_options& opt, prune_workspace& ws) {
  const layer_extent e = measure_layer<T>("depthkv::prune", layer, n_heads, head);  // validated: no throw
  const std::size_t stride = e.stride, total_len = e.total_len;
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

/// Selects one validated layer, then mutates: for each head whose keep list drops rows,
/// retain_fn(h, keep) compacts it and the policy's state follows. The one mutate loop of every
/// prune entry point.
template <class T, class Policy, class Heads, class Retain>
void select_and_retain(std::size_t layer, std::size_t n_heads, Heads&& head, std::size_t keep, const Policy& policy,
                       const layer_queries& q, const prune_options& opt, prune_workspace& ws, Retain&& retain_fn) {
  const std::size_t stride = select_layer<T>(layer, n_heads, head, keep, policy, q, opt, ws);
  for (std::size_t h = 0; h < n_heads; ++h) {
    const span<const index_t> k(ws.keep.data() + h * stride, ws.counts[h]);
    if (k.size() == head(h).keys.n) continue;  // nothing dropped
    retain_fn(h, k);
    notify_retain(policy, layer, h, k);
  }
}

template <class T>
struct cache_heads {
  const kv_cache<T>* cache;
  std::size_t layer;
  head_ref<T> operator()(std::size_t h) const { return {cache->keys(layer, h), cache->positions(layer, h)}; }
};

template <class T>
struct view_heads {
  const layer_view<T>* view;
  head_ref<T> operator()(std::size_t h) const {
    const std::size_t n = view->lengths[h];
    const pos_t* p = view->positions.head(h);
    return {rows_view<const T>(view->keys.head(h, n)), p ? span<const pos_t>(p, n) : span<const pos_t>{}};
  }
};

/// Validates a layer_view for prune_view: shapes, lengths, positions against the mode.
template <class T>
void check_layer_view(const char* where, const layer_view<T>& lv, const prune_options& opt) {
  check_same_shape(where, lv.keys, lv.values);
  const std::size_t H = lv.keys.n_heads(), n = lv.keys.n_tokens();
  DEPTHKV_CHECK(lv.lengths.size() == H, where, "lengths has ", lv.lengths.size(), " entries, expected n_heads = ", H);
  for (std::size_t h = 0; h < H; ++h)
    DEPTHKV_CHECK(lv.lengths[h] <= n, where, "lengths[", h, "] = ", lv.lengths[h], " exceeds the view's n_tokens ", n);
  check_positions(where, lv.positions, H, n);
  DEPTHKV_CHECK(lv.positions.which() != layer_positions::kind::shared || opt.mode == granularity::shared, where,
                "a shared positions row (layer_positions::shared) needs granularity::shared");
}

}  // namespace detail

/// Prunes layer `layer` of `cache` to `keep` tokens per kv head (heads holding <= keep rows are
/// untouched) with `policy`: score -> top-k (protecting the policy's n_sink first and n_recent
/// last rows of each head) -> compact in place. Memory stays reserved (capacity unchanged); call
/// cache.shrink_to_fit(layer) to release it. queries: the layer's window queries for policies that
/// need them (snapkv, tova).
/// Errors: depthkv::error for a bad layer, keep below the protected rows, or what the policy
/// rejects; validated first, so on error the cache and the policy's state are unchanged.
/// Complexity: scoring + O(n) selection per head + moves of the kept rows; allocation-free once
/// ws has seen this size. Thread safety: calls on different layers may run concurrently, each
/// with its own workspace (and a policy whose state is per layer, as h2o_state is).
template <class T, class Policy>
void prune_layer(kv_cache<T>& cache, std::size_t layer, std::size_t keep, const Policy& policy, prune_workspace& ws,
                 const layer_queries& queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  constexpr const char* where = "depthkv::prune_layer";
  DEPTHKV_CHECK(layer < cache.n_layers(), where, "layer ", layer, " out of range (n_layers ", cache.n_layers(), ")");
  const std::size_t H = cache.n_kv_heads();
  const detail::cache_heads<T> heads{&cache, layer};
  detail::check_layer_prune<T>(where, layer, H, heads, keep, policy, queries, opt);
  detail::select_and_retain<T>(layer, H, heads, keep, policy, queries, opt, ws,
                               [&](std::size_t h, span<const index_t> k) { cache.retain(layer, h, k); });
}

/// Prunes every layer l to keep_per_layer[l] tokens per kv head (see prune_layer). queries: one
/// entry per layer, or empty for policies that need none. Every layer is validated before any
/// is touched.
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
  for (std::size_t l = 0; l < L; ++l)
    detail::select_and_retain<T>(l, H, detail::cache_heads<T>{&cache, l}, keep_per_layer[l], policy,
                                 queries.empty() ? none : queries[l], opt, ws,
                                 [&](std::size_t h, span<const index_t> k) { cache.retain(l, h, k); });
}

/// Decode-time eviction: if any head of `layer` holds more than `budget` rows, prunes the layer
/// back to `budget` (H2O's one-in-one-out loop when called after every appended token).
/// Returns whether it pruned. Errors and thread safety as prune_layer. Each call past the budget
/// scores and compacts the whole layer: O(length) per token; the overload with enforce_options
/// (and decode_evictor, decode.hpp) batches evictions for an amortised O(1) rows per token.
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

/// Whether `layer` of `cache` holds more rows than `limit` tokens per kv head allow: some head
/// above `limit` (per_head and shared granularity), or more than limit * n_kv_heads rows in all
/// (adaptive, whose heads differ in length by design; limit * n_kv_heads saturates). The trigger
/// of batch eviction (enforce_budget with enforce_options, decode_evictor in decode.hpp).
/// Errors: depthkv::error for a bad layer. Complexity: O(n_kv_heads), no allocation.
template <class T>
bool over_budget(const kv_cache<T>& cache, std::size_t layer, std::size_t limit,
                 granularity mode = granularity::per_head) {
  DEPTHKV_CHECK(layer < cache.n_layers(), "depthkv::over_budget", "layer ", layer, " out of range (n_layers ",
                cache.n_layers(), ")");
  if (mode != granularity::adaptive) return cache.max_length(layer) > limit;
  std::size_t total = 0;  // <= n_kv_heads * max_tokens; saturating all the same
  for (std::size_t h = 0; h < cache.n_kv_heads(); ++h) total = detail::sat_add(total, cache.length(layer, h));
  return total > detail::sat_mul(limit, cache.n_kv_heads());
}

/// Batch eviction for enforce_budget: a layer may hold up to `slack` rows per kv head beyond
/// its budget before it is pruned back to the budget in one pass. slack = 0 is the
/// one-in-one-out loop. See decode.hpp for the amortised cost and where batching changes
/// which tokens are kept.
struct enforce_options {
  std::size_t slack = 0;  ///< rows per kv head allowed beyond the budget (budget + slack saturates)
};

/// Batch decode-time eviction: if `layer` is over_budget(cache, layer, budget + eo.slack,
/// opt.mode), prunes it back to `budget` (prune_layer) and returns true; else returns false
/// and touches nothing. With eo.slack = 0 and per_head or shared granularity this is the
/// enforce_budget above; in adaptive mode the trigger is the layer's total (see over_budget)
/// where the overload above looks at the longest head. Errors and thread safety as prune_layer.
template <class T, class Policy>
bool enforce_budget(kv_cache<T>& cache, std::size_t layer, std::size_t budget, const enforce_options& eo,
                    const Policy& policy, prune_workspace& ws, const layer_queries& queries = {},
                    const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  if (!over_budget(cache, layer, detail::sat_add(budget, eo.slack), opt.mode)) return false;
  prune_layer(cache, layer, budget, policy, ws, queries, opt);
  return true;
}

/// The same pipeline over engine-owned memory: `view` is one layer's K, V, positions and head
/// lengths (see layer_view); head h's first view.lengths[h] rows are pruned to `keep` and
/// view.lengths[h] becomes the rows kept (rows beyond it are garbage). per_head and adaptive
/// modes leave heads with different lengths; shared mode keeps the token slots aligned across
/// heads (what NHD engines need; a shared positions row requires it).
/// Errors as prune_layer, plus K/V shape mismatch, lengths of the wrong size or beyond n_tokens,
/// overlapping position rows; nothing (memory, lengths, policy state) changes on error.
template <class T, class Policy>
void prune_view(const layer_view<T>& view, std::size_t layer, std::size_t keep, const Policy& policy,
                prune_workspace& ws, const layer_queries& queries = {}, const prune_options& opt = {}) {
  DEPTHKV_REQUIRE_POLICY(Policy);
  static_assert(!std::is_const_v<T>, "prune_view compacts the views: they must be mutable");
  constexpr const char* where = "depthkv::prune_view";
  detail::check_layer_view(where, view, opt);
  const std::size_t H = view.keys.n_heads();
  const detail::view_heads<T> heads{&view};
  detail::check_layer_prune<T>(where, layer, H, heads, keep, policy, queries, opt);
  if (opt.mode == granularity::shared) {
    bool moved = false;  // one layer-wide move for all heads (their keep lists are the same)
    detail::select_and_retain<T>(layer, H, heads, keep, policy, queries, opt, ws, [&](std::size_t, span<const index_t> k) {
      if (!moved) retain(view.keys, view.values, k, view.positions);
      moved = true;
    });
  } else {
    detail::select_and_retain<T>(layer, H, heads, keep, policy, queries, opt, ws, [&](std::size_t h, span<const index_t> k) {
      retain_head(view.keys, view.values, h, tokens{view.lengths[h]}, k, view.positions.head(h));
    });
  }
  // Lengths last: the selection above reads them.
  for (std::size_t h = 0; h < H; ++h) view.lengths[h] = ws.counts[h];
}

}  // namespace depthkv
