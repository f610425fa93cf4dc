// Decode-time budgets (issue #18): amortised (batch) eviction, per-layer budgets re-split from
// the current lengths as the sequence grows, and re-scoring every beta generated tokens, behind
// one call an engine makes per layer and generated token.
//
// The engine loop, per generated token and layer l:
//   cache.append_token(l, k, v, pos);                    // the token's K/V rows
//   [h2o: state.accumulate(l, h, attention row) for every query head; the row covers the new token]
//   evictor.step(cache, l, budgets[l], ws, queries_l);   // may prune layer l back to budgets[l]
// and, every so often (every beta tokens, say; a few microseconds for 32 layers: bench_decode),
//   budgets = decode_budget::ratio(0.2).split(allocator, seen_lengths, profile, minimums);
//
// Slack (amortised eviction). A layer may hold up to `slack` rows per kv head beyond its
// budget; when a step finds it above budget + slack it prunes it back to the budget in one pass
// (score -> top-k -> compact, prune_layer). With a constant budget B and slack S that happens
// once per S + 1 tokens, and each time moves and scores at most B + S + 1 rows per head, so the
// cost per token is at most (B + S + 1) / (S + 1) rows per head: with the default slack
// ceil(B / 16) about 17 rows, O(1) amortised (enforce_budget without slack: O(B) per token).
// Slack 0 is the one-at-a-time evictor (H2O's one-in-one-out loop, TOVA's per-step eviction).
// The steps in between cost O(n_kv_heads) (a length check).
//
// Budgets hold at every step. After step(cache, l, B, ...) returns, every head of layer l holds
// at most B + S rows (per_head and shared granularity; adaptive: the layer at most (B + S) *
// n_kv_heads rows in all), whatever it held before and however B changed since the last step;
// right after an eviction every head that held more than B rows holds exactly B (adaptive: the
// layer exactly B * n_kv_heads rows). Capacity: reserve B + S + (tokens appended per step) rows
// per head (the largest B the budgets reach).
//
// Re-scoring (beta = rescore_every). Window-query policies (snapkv) re-score every beta
// generated tokens, as the decode-time methods in the field do: on every beta-th step of a
// layer (steps(layer) + 1 a multiple of beta, counted from construction or reset) the evictor
// prunes the layer to its budget with fresh scores whenever it holds more than the budget, even
// within the slack: the result is exactly prune_layer at that step. Set slack >= beta - 1 to
// evict only on that schedule (with a constant budget); a smaller slack adds evictions in
// between. With beta unset a layer is scored only when it goes over budget + slack.
//
// What each policy needs, one interface for all (`queries` is read only on steps that evict:
// due() says beforehand whether the coming step will, so the engine builds them only then):
//   knorm, streaming, random  nothing: scores come from the cache (keys, positions);
//   h2o     the engine feeds its h2o_state every step (accumulate the token's attention rows
//           over the layer's rows, or extend), so that the state tracks every cached row when
//           the layer is pruned (checked then); the evictor compacts the state with the cache;
//   tova    on evicting steps the step's query (queries.w >= 1; the last one scores);
//   snapkv  on evicting steps the last w queries (policy.window, or all given): with n_recent
//           >= w the window's keys are the last w rows; otherwise pass query_positions.
//
// Where batching changes the choice. Let R be the one-at-a-time evictor (slack 0; the same as
// enforce_budget without slack).
//  (1) Static scores: knorm (key norm), random (per position), streaming (newer is better),
//      any score fixed per token. Rows are ranked by (score desc, position asc), a fixed order
//      on tokens, and protected rows (the first n_sink and last n_recent) do not depend on the
//      eviction history, so both evictors keep the sinks, the last n_recent rows and the best
//      budget - n_sink - n_recent of the tokens that left the recent window (top-k of a top-m
//      is the top-k for k <= m). Hence, with a constant or non-increasing budget, any slack and
//      any re-scoring schedule, the batch evictor holds exactly R's rows right after each of
//      its evictions, and R's rows plus up to `slack` rows R has already dropped in between (a
//      superset). A budget that grows breaks this: rows R dropped are gone, the batch evictor
//      may still hold some.
//  (2) Scores that change while a token is cached: h2o (attention accumulates), tova and
//      snapkv (scores from the latest queries). An eviction keeps the top-budget rows by the
//      scores of that step, exactly a fresh prune_layer of the rows held. A row R dropped earlier
//      may still be cached, gain attention and be kept, so the kept sets differ in general; with
//      slack 0 they agree (the evictor is R; for tova that is the original TOVA).
// tests/test_decode.cpp checks (1) against a naive one-at-a-time reference, and (2) against a
// fresh prune at every eviction step, a naive reference with the same slack fed the same
// attention, and an h2o example whose kept tokens differ from R's.
//
// Deterministic: the same inputs give the same kept rows (ties keep the older row). Allocation:
// none per step once the workspace, the cache capacity and (h2o) the state have seen the
// largest layer (tests/test_decode.cpp counts operator new); decode_budget::split allocates.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/prune.hpp"
#include "depthkv/score/policies.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/shape.hpp"

namespace depthkv {

/// Rows per kv head a layer may hold beyond its budget before the evictor prunes it back:
/// a fixed count (tokens) or a fraction of the budget (ceil(f * budget), in double precision,
/// saturating). Built by the named constructors.
class decode_slack {
 public:
  /// The default slack: 1/16 of the budget (6.25% more memory, about 17 rows per token per head).
  static constexpr double default_fraction = 1.0 / 16;

  /// Exactly n rows, whatever the budget (0: the one-at-a-time evictor).
  static constexpr decode_slack tokens(std::size_t n) noexcept { return decode_slack(n, 0.0, false); }
  /// ceil(f * budget) rows. Throws unless f is finite and >= 0.
  static decode_slack fraction(double f) {
    DEPTHKV_CHECK(std::isfinite(f) && f >= 0.0, "depthkv::decode_slack::fraction", "fraction ", f,
                  " must be finite and >= 0");
    return decode_slack(0, f, true);
  }

  bool is_fraction() const noexcept { return is_fraction_; }
  /// The slack for `budget`.
  std::size_t rows(std::size_t budget) const noexcept {
    if (!is_fraction_) return n_;
    return detail::clamp_to_count(std::ceil(f_ * static_cast<double>(budget)), detail::size_max);
  }

 private:
  constexpr decode_slack(std::size_t n, double f, bool is_fraction) noexcept : n_(n), f_(f), is_fraction_(is_fraction) {}
  std::size_t n_ = 0;
  double f_ = 0.0;
  bool is_fraction_ = false;
};

/// Options of decode_evictor.
struct decode_options {
  decode_slack slack = decode_slack::fraction(decode_slack::default_fraction);
  /// beta >= 1: also prune to the budget with fresh scores on every beta-th step of a layer
  /// (see the file comment); unset: only when over budget + slack.
  std::optional<std::size_t> rescore_every{};
  prune_options prune{};  ///< granularity (and adaptive alpha) of each eviction
};

/// What a step did (or, from due(), will do).
enum class decode_action {
  none,        ///< nothing: within budget + slack and no re-scoring due
  over_limit,  ///< pruned to the budget: the layer was over budget + slack
  rescore      ///< pruned to the budget on a re-scoring step (beta), over the budget
};

/// Decode-time eviction for one sequence: per layer and generated token, step() keeps the layer
/// within budget + slack and re-scores every beta tokens (see the file comment for the
/// semantics, the per-policy inputs and where batching changes the kept tokens). Holds the
/// policy (by value: h2o's state stays the caller's), the options and a step count per layer.
/// Policy: any scoring policy (checked at compile time).
/// Thread safety: step, due and reset(layer) on different layers may run concurrently, each
/// step with its own workspace, as prune_layer.
template <class Policy>
class decode_evictor {
  DEPTHKV_REQUIRE_POLICY(Policy);

 public:
  /// An evictor for caches of n_layers layers. Throws when n_layers is 0 or rescore_every is 0.
  decode_evictor(layers n_layers, Policy policy, const decode_options& opt = {})
      : policy_(std::move(policy)), opt_(opt) {
    constexpr const char* where = "depthkv::decode_evictor";
    DEPTHKV_CHECK(n_layers.value > 0, where, "n_layers must be > 0");
    DEPTHKV_CHECK(!opt.rescore_every || *opt.rescore_every > 0, where, "rescore_every must be >= 1, got ",
                  opt.rescore_every.value_or(0));
    DEPTHKV_CHECK(opt.prune.alpha >= 0.f && opt.prune.alpha <= 1.f, where, "prune.alpha must be in [0, 1], got ",
                  opt.prune.alpha);
    steps_.assign(n_layers.value, 0);
  }

  std::size_t n_layers() const noexcept { return steps_.size(); }
  const Policy& policy() const noexcept { return policy_; }
  const decode_options& options() const noexcept { return opt_; }

  /// The slack for `budget`, and budget + slack (saturating): the rows per head a layer may hold.
  std::size_t slack(std::size_t budget) const noexcept { return opt_.slack.rows(budget); }
  std::size_t limit(std::size_t budget) const noexcept { return detail::sat_add(budget, slack(budget)); }

  /// Steps taken on `layer` since construction or reset.
  std::uint64_t steps(std::size_t layer) const {
    check_layer("depthkv::decode_evictor::steps", layer);
    return steps_[layer];
  }
  /// Starts the step counts again (a new sequence).
  void reset() noexcept { std::fill(steps_.begin(), steps_.end(), std::uint64_t{0}); }
  void reset(std::size_t layer) {
    check_layer("depthkv::decode_evictor::reset", layer);
    steps_[layer] = 0;
  }

  /// What step(cache, layer, budget, ...) would do now, without doing it (no queries needed).
  /// Errors as step, minus the policy's (queries, h2o state).
  template <class T>
  decode_action due(const kv_cache<T>& cache, std::size_t layer, std::size_t budget) const {
    check_step("depthkv::decode_evictor::due", cache, layer, budget);
    const granularity mode = opt_.prune.mode;
    if (opt_.rescore_every && (steps_[layer] + 1) % *opt_.rescore_every == 0 && over_budget(cache, layer, budget, mode))
      return decode_action::rescore;
    if (over_budget(cache, layer, limit(budget), mode)) return decode_action::over_limit;
    return decode_action::none;
  }

  /// One decode step of `layer`, after this step's tokens were appended (and, for h2o, their
  /// attention fed): prunes the layer to `budget` tokens per kv head when due() says so
  /// (prune_layer with `ws`, `queries` and options().prune), then counts the step.
  /// Errors (depthkv::error; the cache, the policy's state and the step count unchanged): a bad
  /// layer, a cache with another layer count, a budget below a head's protected rows (n_sink +
  /// n_recent, per_head and shared granularity) while the head holds more than `budget` rows,
  /// and on evicting steps whatever prune_layer rejects (missing queries, a stale h2o state).
  /// Complexity: O(n_kv_heads) without eviction; an eviction is prune_layer's cost.
  template <class T>
  decode_action step(kv_cache<T>& cache, std::size_t layer, std::size_t budget, prune_workspace& ws,
                     const layer_queries& queries = {}) {
    const decode_action a = due(cache, layer, budget);
    if (a != decode_action::none) prune_layer(cache, layer, budget, policy_, ws, queries, opt_.prune);
    ++steps_[layer];
    return a;
  }

 private:
  void check_layer(const char* where, std::size_t layer) const {
    DEPTHKV_CHECK(layer < steps_.size(), where, "layer ", layer, " out of range (n_layers ", steps_.size(), ")");
  }
  template <class T>
  void check_step(const char* where, const kv_cache<T>& cache, std::size_t layer, std::size_t budget) const {
    DEPTHKV_CHECK(cache.n_layers() == steps_.size(), where, "cache has ", cache.n_layers(),
                  " layers, the evictor n_layers = ", steps_.size());
    check_layer(where, layer);
    if (opt_.prune.mode == granularity::adaptive) return;  // floors are checked by prune_layer
    for (std::size_t h = 0; h < cache.n_kv_heads(); ++h) {
      const std::size_t n = cache.length(layer, h);
      const std::size_t prot = detail::protected_rows(n, policy_.n_sink, policy_.n_recent);
      DEPTHKV_CHECK(n <= budget || prot <= budget, where, "budget ", budget, " for layer ", layer,
                    " is below the protected rows (", Policy::name, " n_sink ", policy_.n_sink, " + n_recent ",
                    policy_.n_recent, ") of head ", h, " (", n, " rows)");
    }
  }

  Policy policy_;
  decode_options opt_;
  std::vector<std::uint64_t> steps_;  ///< [layer] steps taken
};

/// The layers a decode budget is split over: the tokens each has seen, their minimums and, for
/// hybrid models, how each attends and what the budget covers (see allocation_request).
struct decode_layers {
  span<const std::size_t> lengths;          ///< [n_layers] tokens each layer has seen so far
  span<const std::size_t> minimums{};       ///< 0 entries (none), 1 (every layer) or n_layers
  span<const layer_attention> attention{};  ///< empty: every layer global; else [n_layers]
  budget_scope scope = budget_scope::all_layers;
};

/// A decode-time budget over all layers, re-split by an allocator as the sequence grows: a
/// fixed total in tokens or bytes, or a keep ratio of the current length. Built by the named
/// constructors. Tokens are per kv head, summed over layers (the sum of per-layer keep counts).
///
/// Sliding-window layers (decode_layers::attention): such a layer keeps min(seen, W) whatever
/// the budget, as allocate() does. With budget_scope::all_layers the budget covers every layer
/// (a ratio is of the tokens the layers would hold in full: min(seen, W) for a sliding layer,
/// seen for a global one), the windows charged first; with budget_scope::global_layers it
/// covers the global layers only (a ratio of their tokens) and the windows come on top.
class decode_budget {
 public:
  enum class kind { tokens, bytes, ratio };
  /// At most n tokens in all layers.
  static constexpr decode_budget tokens(std::size_t n) noexcept { return decode_budget(kind::tokens, n, 1, 0.0); }
  /// At most n bytes in all layers, one kept token of a layer (all its kv heads) costing
  /// bytes_per_token (token_bytes(cache) for a kv_cache); tokens = floor(n / bytes_per_token).
  /// Throws when bytes_per_token is 0.
  static decode_budget bytes(std::size_t n, std::size_t bytes_per_token) {
    DEPTHKV_CHECK(bytes_per_token > 0, "depthkv::decode_budget::bytes", "bytes_per_token must be > 0");
    return decode_budget(kind::bytes, n, bytes_per_token, 0.0);
  }
  /// A keep ratio r of the current total length (rounded half up). Throws unless r is in [0, 1].
  static decode_budget ratio(double r) {
    DEPTHKV_CHECK(std::isfinite(r) && r >= 0.0 && r <= 1.0, "depthkv::decode_budget::ratio", "keep ratio ", r,
                  " outside [0, 1]");
    return decode_budget(kind::ratio, 0, 1, r);
  }
  /// Bytes one token of one layer of `cache` costs: K and V rows and a position, every kv head.
  template <class T>
  static std::size_t token_bytes(const kv_cache<T>& cache) {
    return detail::checked_mul("depthkv::decode_budget::token_bytes", cache.row_bytes(), cache.n_kv_heads(),
                               "row_bytes ", cache.row_bytes(), " * n_kv_heads ", cache.n_kv_heads());
  }
  kind which() const noexcept { return kind_; }
  std::size_t count() const noexcept { return n_; }  ///< tokens or bytes
  std::size_t bytes_per_token() const noexcept { return bytes_per_token_; }
  double keep_ratio() const noexcept { return ratio_; }

  /// The allocation request of this budget for the layers `d`: its lengths (a sliding layer's
  /// min(seen, W) is what allocate() keeps of it), minimums, attention and scope, and a budget
  /// in tokens of what the scope covers, within [F, T] where T is the tokens the scope covers
  /// (all_layers: sum of min(seen, W) over sliding layers plus seen over global ones;
  /// global_layers: the global layers' seen) and F the floors (the sliding layers' tokens, under
  /// all_layers, plus min(minimum, seen) of every global layer): tokens: min(n, T); bytes:
  /// min(floor(n / bytes_per_token), T); ratio: floor(r * T + 0.5), raised to F (early in a
  /// generation a ratio can fall below the protected rows). Throws on bad shapes (as
  /// allocate()), a total above max_allocation_tokens, or a fixed budget below F.
  allocation_request request(const decode_layers& d) const {
    constexpr const char* where = "depthkv::decode_budget";
    allocation_request req;
    req.lengths.assign(d.lengths.begin(), d.lengths.end());
    req.minimums.assign(d.minimums.begin(), d.minimums.end());
    req.attention.assign(d.attention.begin(), d.attention.end());
    req.scope = d.scope;
    req.budget = global_budget::ratio(1.0);  // always feasible: resolves the shapes and the bounds
    const detail::alloc::layer_split s = detail::alloc::split(req, where);
    const bool all = !s.hybrid() || d.scope == budget_scope::all_layers;
    std::size_t covered = all ? s.full.sliding : 0, floors = covered;
    for (const std::size_t l : s.global) {
      covered += s.full.hi[l];  // sums <= total of lengths <= 2^53 (checked by split)
      floors += s.full.lo[l];
    }
    std::size_t b = 0;
    if (kind_ == kind::ratio) {
      b = std::max(detail::alloc::round_ratio(ratio_, covered), floors);
    } else {
      b = std::min(kind_ == kind::tokens ? n_ : n_ / bytes_per_token_, covered);
      DEPTHKV_CHECK(b >= floors, where, "budget of ", b, " tokens", kind_ == kind::bytes ? " (from bytes)" : "",
                    " is below what the layers must keep (", floors, " tokens",
                    s.hybrid() && all ? ", the sliding-window layers' included" : "", ") by ", floors - b, " tokens");
    }
    req.budget = global_budget::tokens(b);
    return req;
  }
  /// Tokens to keep in all layers when every layer is global: request()'s budget for lengths
  /// [n_layers] seen so far and minimums (0, 1 or n_layers entries). Hybrid models:
  /// request(d).budget.n_tokens.
  std::size_t total(span<const std::size_t> lengths, span<const std::size_t> minimums = {}) const {
    return request(decode_layers{lengths, minimums}).budget.n_tokens;
  }
  /// Per-layer budgets (tokens per kv head) for the layers `d`: allocator `a` (any allocator
  /// type, or one by name below) splits request(d) with profile `p` (for the allocators that
  /// read one; a hybrid model's may lack the sliding layers, as for allocate()). Each budget is
  /// <= the layer's seen length (a sliding layer's: exactly min(seen, W)), so a layer that holds
  /// fewer rows than it has seen (it was pruned) may get a budget above its rows: it then keeps
  /// everything and grows into it. Cheap enough for every re-scoring step (bench_decode:
  /// budget/*), but allocates the result.
  template <class A, class = std::enable_if_t<is_allocator_v<A>>>
  std::vector<std::size_t> split(const A& a, const decode_layers& d, const sensitivity_profile& p = {}) const {
    return allocate(a, request(d), p);
  }
  /// The same with the allocator called `allocator` (allocator_names), configured by `params`.
  std::vector<std::size_t> split(std::string_view allocator, const decode_layers& d, const sensitivity_profile& p = {},
                                 const allocator_params& params = {}) const {
    return visit_allocator(
        allocator, [&](const auto& a) { return split(a, d, p); }, params);
  }
  /// Layers that are all global: split(a, decode_layers{lengths, minimums}, p).
  template <class A, class = std::enable_if_t<is_allocator_v<A>>>
  std::vector<std::size_t> split(const A& a, span<const std::size_t> lengths, const sensitivity_profile& p = {},
                                 span<const std::size_t> minimums = {}) const {
    return split(a, decode_layers{lengths, minimums}, p);
  }
  std::vector<std::size_t> split(std::string_view allocator, span<const std::size_t> lengths,
                                 const sensitivity_profile& p = {}, span<const std::size_t> minimums = {},
                                 const allocator_params& params = {}) const {
    return split(allocator, decode_layers{lengths, minimums}, p, params);
  }

 private:
  constexpr decode_budget(kind k, std::size_t n, std::size_t bpt, double r) noexcept
      : kind_(k), n_(n), bytes_per_token_(bpt), ratio_(r) {}
  kind kind_ = kind::tokens;
  std::size_t n_ = 0;
  std::size_t bytes_per_token_ = 1;
  double ratio_ = 0.0;
};

}  // namespace depthkv
