// Token-scoring policies: snapkv, h2o, streaming, tova, knorm, random. Plain types checked at
// compile time by is_scoring_policy; the prune pipeline (prune.hpp) turns their scores into
// kept rows. Higher score = more worth keeping.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <iterator>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "depthkv/view/kv_view.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/score/pooling.hpp"
#include "depthkv/score/window.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

/// What a policy sees of one kv head of one layer when scoring it.
template <class T>
struct head_input {
  std::size_t layer = 0;
  std::size_t kv_head = 0;
  std::size_t n_kv_heads = 1;
  rows_view<const T> keys{};                 ///< [n][head_dim], the head's cached keys
  span<const pos_t> positions{};             ///< [n] their original positions, ascending
  const window_queries* queries = nullptr;   ///< the layer's last w queries (snapkv, tova), or null
  span<const pos_t> query_positions{};       ///< [w] or empty: see window_options
};

/// Reusable scratch of the policies (window kernel + pooling); grows, never shrinks.
struct score_scratch {
  window_scratch window;
  std::vector<float> pool;
  std::size_t bytes_reserved() const noexcept { return window.bytes_reserved() + pool.capacity() * sizeof(float); }
};

namespace detail {

/// The attention knobs snapkv and tova pass to window_scores (see window_options).
struct attention_knobs {
  std::optional<float> scale{};
  std::optional<std::size_t> sliding_window{};
  std::optional<float> soft_cap{};
};

/// Checks that window_scores will accept the last `w` (unset: all) of the layer's queries for this head.
template <class T>
void check_queries(const char* where, const head_input<T>& in, std::optional<std::size_t> w,
                   const attention_knobs& knobs) {
  DEPTHKV_CHECK(in.queries != nullptr && !in.queries->empty(), where, "needs the layer's window queries (layer ",
                in.layer, ")");
  DEPTHKV_CHECK(!w || (*w > 0 && *w <= in.queries->w), where, "window ", w.value_or(0), " must be in [1, ",
                in.queries->w, "] (the queries given)");
  DEPTHKV_CHECK(in.query_positions.empty() || in.query_positions.size() == in.queries->w, where,
                "query_positions has ", in.query_positions.size(), " entries, expected ", in.queries->w);
  const std::size_t used = w.value_or(in.queries->w);
  window_options o;
  o.scale = knobs.scale;
  o.sliding_window = knobs.sliding_window;
  o.soft_cap = knobs.soft_cap;
  if (!in.query_positions.empty())
    o.query_positions = in.query_positions.subspan(in.query_positions.size() - used, used);
  check_window_args(where, in.queries->last(used), in.n_kv_heads, in.kv_head, in.keys, in.positions,
                    span<float>(nullptr, in.keys.n), o);
}

template <class T>
window_options window_opts(const head_input<T>& in, gqa_reduce reduce, const attention_knobs& knobs) {
  window_options o;
  o.reduce = reduce;
  o.scale = knobs.scale;
  o.sliding_window = knobs.sliding_window;
  o.soft_cap = knobs.soft_cap;
  o.query_positions = in.query_positions;
  return o;
}

}  // namespace detail

/// SnapKV: attention of the last `window` queries (unset: all given ones) to each cached token,
/// summed over the window, reduced over the GQA group, then pooled (kernel 5, avg by default).
/// Protect the window itself with n_recent >= window (the SnapKV recipe). For a layer with a
/// sliding window (Mistral, Gemma 2/3 local layers) or logit soft-cap (Gemma 2) set
/// sliding_window / soft_cap as the model does, so the scores are that layer's real attention
/// (window_options: the window is by position, p - k < sliding_window).
struct snapkv {
  static constexpr const char* name = "snapkv";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  std::optional<std::size_t> window{};  ///< queries used, in [1, w]; unset: all given
  std::size_t kernel = 5;
  pool_kind pool = pool_kind::avg;
  gqa_reduce reduce = gqa_reduce::mean;
  std::optional<float> scale{};  ///< unset: 1/sqrt(head_dim)
  std::optional<std::size_t> sliding_window{};  ///< W >= 1 positions; unset: causal only
  std::optional<float> soft_cap{};              ///< logit cap (finite, > 0); unset: none

  template <class T>
  void check(const head_input<T>& in) const {
    constexpr const char* where = "depthkv::snapkv";
    DEPTHKV_CHECK(kernel % 2 == 1, where, "pooling kernel must be odd, got ", kernel);
    detail::check_queries(where, in, window, knobs());
  }
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch& s) const {
    const std::size_t w = window.value_or(in.queries->w);
    const window_queries q = in.queries->last(w);
    window_options o = detail::window_opts(in, reduce, knobs());
    if (!o.query_positions.empty()) o.query_positions = o.query_positions.subspan(o.query_positions.size() - w, w);
    window_scores(q, in.n_kv_heads, in.kv_head, in.keys, in.positions, out, s.window, o);
    if (pool != pool_kind::none && kernel > 1) {
      const std::size_t n = in.keys.n;
      if (s.pool.size() < 2 * n) s.pool.resize(2 * n);
      pool1d(span<const float>(out.data(), n), out.first(n), kernel, pool, span<float>(s.pool));
    }
  }
  detail::attention_knobs knobs() const { return {scale, sliding_window, soft_cap}; }
};

/// TOVA: attention of the last query only, averaged over the query heads of the group
/// (sliding_window / soft_cap: as in snapkv; with a window, tokens outside it score 0).
struct tova {
  static constexpr const char* name = "tova";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  std::optional<float> scale{};  ///< unset: 1/sqrt(head_dim)
  std::optional<std::size_t> sliding_window{};  ///< W >= 1 positions; unset: causal only
  std::optional<float> soft_cap{};              ///< logit cap (finite, > 0); unset: none

  template <class T>
  void check(const head_input<T>& in) const {
    detail::check_queries("depthkv::tova", in, std::size_t{1}, knobs());
  }
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch& s) const {
    window_options o = detail::window_opts(in, gqa_reduce::mean, knobs());
    if (!o.query_positions.empty()) o.query_positions = o.query_positions.subspan(o.query_positions.size() - 1, 1);
    window_scores(in.queries->last(1), in.n_kv_heads, in.kv_head, in.keys, in.positions, out, s.window, o);
  }
  detail::attention_knobs knobs() const { return {scale, sliding_window, soft_cap}; }
};

/// StreamingLLM: keeps the first n_sink and the most recent tokens: with keep k, n_sink sinks +
/// the last k - n_sink. Scores rise strictly with the row index (see recency_score), so rows do
/// not tie.
struct streaming {
  static constexpr const char* name = "streaming";
  std::size_t n_sink = 4;
  std::size_t n_recent = 0;

  template <class T>
  void check(const head_input<T>&) const {}
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch&) const noexcept {
    const std::size_t n = in.keys.n;
    for (std::size_t j = 0; j < n; ++j) out[j] = recency_score(n - 1 - j);
  }
  /// A float that falls strictly as `age` (rows from the newest) grows, for age up to
  /// 2 * 0x7F7FFFFF (4.278e9 of the 2^32 - 1 rows a head may hold; older rows tie at -FLT_MAX):
  /// the newest row is FLT_MAX, then the finite floats in descending order, through +0 and
  /// -denorm_min down to -FLT_MAX. Plain float(j) ties beyond 2^24 rows, and ties keep the oldest.
  static float recency_score(std::size_t age) noexcept {
    constexpr std::uint32_t top = 0x7F7FFFFFu;  // bits of FLT_MAX
    std::uint32_t bits;
    if (age <= top) bits = top - static_cast<std::uint32_t>(age);                          // +FLT_MAX .. +0
    else bits = 0x80000000u | static_cast<std::uint32_t>(std::min<std::size_t>(age - top, top));  // -denorm .. -FLT_MAX
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }
};

/// K-norm: tokens with SMALL key L2 norm get high attention (Devoto et al. 2024), so the score
/// is the negative norm.
struct knorm {
  static constexpr const char* name = "knorm";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;

  template <class T>
  void check(const head_input<T>&) const {}
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch&) const noexcept {
    for (std::size_t j = 0; j < in.keys.n; ++j) {
      const T* r = in.keys.row(j);
      float acc = 0.f;
      for (std::size_t t = 0; t < in.keys.dim; ++t) {
        const float x = static_cast<float>(r[t]);
        acc = std::fma(x, x, acc);
      }
      out[j] = -std::sqrt(acc);
    }
  }
};

/// Seeded random baseline: each (seed, layer, head, position) gets a fixed uniform [0,1) score,
/// so repeated prunes of the same tokens agree.
struct random_policy {
  static constexpr const char* name = "random";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  std::uint64_t seed = 0;

  static std::uint64_t mix(std::uint64_t x) noexcept {  // splitmix64 finaliser
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  }
  template <class T>
  void check(const head_input<T>&) const {}
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch&) const noexcept {
    const std::uint64_t base = mix(seed ^ mix((static_cast<std::uint64_t>(in.layer) << 32) ^ in.kv_head));
    for (std::size_t j = 0; j < in.keys.n; ++j) {
      const std::uint64_t p = in.positions.empty() ? j : static_cast<std::uint64_t>(static_cast<std::uint32_t>(in.positions[j]));
      out[j] = static_cast<float>(mix(base ^ p) >> 40) * (1.f / 16777216.f);
    }
  }
};

/// Accumulated attention per (layer, kv head, cached row) for H2O. The engine feeds attention
/// rows (softmax weights over a head's cached rows, oldest first) as it computes them, during
/// prefill and decode; a row longer than the state extends it (new tokens start at 0). Rows of
/// every query head of a kv head's group add up (GQA: the group's sum). The prune pipeline
/// compacts the state together with the cache (h2o::on_retain). Thread safety: members that
/// take a layer may run concurrently on different layers (each touches only that layer's rows).
class h2o_state {
 public:
  h2o_state() = default;
  h2o_state(std::size_t n_layers, std::size_t n_kv_heads) : n_layers_(n_layers), n_heads_(n_kv_heads) {
    DEPTHKV_CHECK(n_layers > 0 && n_kv_heads > 0, "depthkv::h2o_state", "n_layers (", n_layers,
                  ") and n_kv_heads (", n_kv_heads, ") must be > 0");
    acc_.resize(detail::checked_mul("depthkv::h2o_state", n_layers, n_kv_heads, "n_layers ", n_layers,
                                    " * n_kv_heads ", n_kv_heads));
  }
  std::size_t n_layers() const noexcept { return n_layers_; }
  std::size_t n_kv_heads() const noexcept { return n_heads_; }

  /// Adds one attention row over (layer, kv_head)'s rows; attn.size() >= the current length.
  void accumulate(std::size_t layer, std::size_t kv_head, span<const float> attn) {
    constexpr const char* where = "depthkv::h2o_state::accumulate";
    check(where, layer, kv_head);
    std::vector<float>& a = at(layer, kv_head);
    DEPTHKV_CHECK(attn.size() >= a.size(), where, "attention row has ", attn.size(), " entries but layer ", layer,
                  " head ", kv_head, " already tracks ", a.size(), " tokens");
    a.resize(attn.size(), 0.f);
    for (std::size_t j = 0; j < attn.size(); ++j) a[j] += attn[j];
  }
  /// Adds `rows` attention rows [rows][row_stride] of n entries each (e.g. a prefill block;
  /// masked entries must be 0).
  void accumulate_rows(std::size_t layer, std::size_t kv_head, const float* attn, std::size_t rows, std::size_t n,
                       std::ptrdiff_t row_stride) {
    for (std::size_t i = 0; i < rows; ++i)
      accumulate(layer, kv_head, span<const float>(attn + static_cast<std::ptrdiff_t>(i) * row_stride, n));
  }
  /// Makes (layer, kv_head) track n tokens (new ones at 0), e.g. after appending without feeding.
  void extend(std::size_t layer, std::size_t kv_head, std::size_t n) {
    check("depthkv::h2o_state::extend", layer, kv_head);
    std::vector<float>& a = at(layer, kv_head);
    if (a.size() < n) a.resize(n, 0.f);
  }
  span<const float> scores(std::size_t layer, std::size_t kv_head) const {
    check("depthkv::h2o_state::scores", layer, kv_head);
    const std::vector<float>& a = at(layer, kv_head);
    return {a.data(), a.size()};
  }
  std::size_t length(std::size_t layer, std::size_t kv_head) const { return scores(layer, kv_head).size(); }
  /// Keeps the rows `keep` (strictly ascending) in order, as the cache does.
  void retain(std::size_t layer, std::size_t kv_head, span<const index_t> keep) {
    constexpr const char* where = "depthkv::h2o_state::retain";
    check(where, layer, kv_head);
    std::vector<float>& a = at(layer, kv_head);
    detail::check_keep_list(where, keep, a.size());
    detail::compact_values_unchecked(a.data(), keep.data(), keep.size());
    a.resize(keep.size());
  }
  void clear(std::size_t layer) {
    DEPTHKV_CHECK(layer < n_layers_, "depthkv::h2o_state::clear", "layer ", layer, " out of range (n_layers ",
                  n_layers_, ")");
    for (std::size_t h = 0; h < n_heads_; ++h) at(layer, h).clear();
  }

 private:
  void check(const char* where, std::size_t layer, std::size_t h) const {
    DEPTHKV_CHECK(layer < n_layers_, where, "layer ", layer, " out of range (n_layers ", n_layers_, ")");
    DEPTHKV_CHECK(h < n_heads_, where, "kv_head ", h, " out of range (n_kv_heads ", n_heads_, ")");
  }
  std::vector<float>& at(std::size_t l, std::size_t h) noexcept { return acc_[l * n_heads_ + h]; }
  const std::vector<float>& at(std::size_t l, std::size_t h) const noexcept { return acc_[l * n_heads_ + h]; }

  std::size_t n_layers_ = 0, n_heads_ = 0;
  std::vector<std::vector<float>> acc_;
};

/// H2O (heavy hitters): accumulated attention from an h2o_state the engine feeds. Decode-time
/// eviction (enforce_budget in prune.hpp) keeps a layer at its budget as tokens arrive.
struct h2o {
  static constexpr const char* name = "h2o";
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  h2o_state* state = nullptr;

  template <class T>
  void check(const head_input<T>& in) const {
    constexpr const char* where = "depthkv::h2o";
    DEPTHKV_CHECK(state != nullptr, where, "no h2o_state attached");
    DEPTHKV_CHECK(in.layer < state->n_layers() && in.kv_head < state->n_kv_heads(), where, "layer ", in.layer,
                  " head ", in.kv_head, " outside the state's [", state->n_layers(), "][", state->n_kv_heads(), "]");
    DEPTHKV_CHECK(state->length(in.layer, in.kv_head) == in.keys.n, where, "state tracks ",
                  state->length(in.layer, in.kv_head), " tokens of layer ", in.layer, " head ", in.kv_head,
                  " but the cache holds ", in.keys.n, " (feed or extend the state after appending)");
  }
  template <class T>
  void score(const head_input<T>& in, span<float> out, score_scratch&) const {
    const span<const float> a = state->scores(in.layer, in.kv_head);
    for (std::size_t j = 0; j < in.keys.n; ++j) out[j] = a[j];
  }
  /// Called by the pipeline after rows of (layer, kv_head) were compacted to `keep`.
  void on_retain(std::size_t layer, std::size_t kv_head, span<const index_t> keep) const {
    state->retain(layer, kv_head, keep);
  }
};

// ---------------------------------------------------------------------------------------------
// The contract.

namespace detail {
template <class P, class = void>
struct has_name : std::false_type {};
template <class P>
struct has_name<P, std::void_t<decltype(std::string_view(P::name))>> : std::true_type {};

template <class P, class = void>
struct has_protection : std::false_type {};
template <class P>
struct has_protection<P, std::void_t<decltype(std::size_t{std::declval<const P&>().n_sink}),
                                     decltype(std::size_t{std::declval<const P&>().n_recent})>> : std::true_type {};

template <class P, class = void>
struct has_score : std::false_type {};
template <class P>
struct has_score<P, std::void_t<decltype(std::declval<const P&>().template score<float>(
                                    std::declval<const head_input<float>&>(), std::declval<span<float>>(),
                                    std::declval<score_scratch&>())),
                                decltype(std::declval<const P&>().template check<float>(
                                    std::declval<const head_input<float>&>()))>> : std::true_type {};

template <class P, class = void>
struct has_on_retain : std::false_type {};
template <class P>
struct has_on_retain<P, std::void_t<decltype(std::declval<const P&>().on_retain(
                            std::size_t{}, std::size_t{}, std::declval<span<const index_t>>()))>> : std::true_type {};
}  // namespace detail

/// A scoring policy P has:
///   static constexpr const char* name;
///   std::size_t n_sink, n_recent;                       rows always kept (first / last of a head)
///   template <class T> void check(const head_input<T>&) const;    throws depthkv::error on bad input
///   template <class T> void score(const head_input<T>&, span<float> out, score_scratch&) const;
///                                                       out[j] for each of the head's n rows
/// and optionally void on_retain(layer, kv_head, span<const index_t> keep) const for state that
/// must follow the cache's compaction.
template <class P>
struct is_scoring_policy
    : std::bool_constant<detail::has_name<P>::value && detail::has_protection<P>::value && detail::has_score<P>::value> {};
template <class P>
inline constexpr bool is_scoring_policy_v = is_scoring_policy<P>::value;

#define DEPTHKV_REQUIRE_POLICY(P)                                                                            \
  static_assert(::depthkv::is_scoring_policy_v<P>,                                                           \
                "depthkv: P is not a scoring policy: it needs `static constexpr const char* name`, members " \
                "`std::size_t n_sink, n_recent`, and const member templates `check<T>(const head_input<T>&)` " \
                "and `score<T>(const head_input<T>&, span<float>, score_scratch&)`")

static_assert(is_scoring_policy_v<snapkv> && is_scoring_policy_v<tova> && is_scoring_policy_v<streaming> &&
                  is_scoring_policy_v<knorm> && is_scoring_policy_v<random_policy> && is_scoring_policy_v<h2o>,
              "built-in policies satisfy the contract");

// ---------------------------------------------------------------------------------------------
// Run-time choice -> policy type, in one place.

enum class policy_id { snapkv, h2o, tova, knorm, streaming, random };

inline constexpr const char* policy_names[] = {"snapkv", "h2o", "tova", "knorm", "streaming", "random"};

/// Knobs a program sets at run time; each policy reads the ones it has.
struct policy_config {
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
  std::optional<std::size_t> window{};  ///< snapkv: unset = all given queries
  std::size_t kernel = 5;           ///< snapkv
  pool_kind pool = pool_kind::avg;  ///< snapkv
  gqa_reduce reduce = gqa_reduce::mean;
  std::uint64_t seed = 0;           ///< random
  h2o_state* state = nullptr;       ///< h2o
  std::optional<float> scale{};     ///< snapkv, tova: softmax scale; unset: 1/sqrt(head_dim)
  std::optional<std::size_t> sliding_window{};  ///< snapkv, tova: see window_options; unset: none
  std::optional<float> soft_cap{};  ///< snapkv, tova: see window_options; unset: none
};

/// Parses a policy name; throws depthkv::error listing the valid names.
inline policy_id policy_from_name(std::string_view name) {
  for (std::size_t i = 0; i < std::size(policy_names); ++i)
    if (name == policy_names[i]) return static_cast<policy_id>(i);
  std::string valid;
  for (const char* n : policy_names) valid += std::string(valid.empty() ? "" : ", ") + n;
  detail::fail("depthkv::policy_from_name", "unknown policy \"", std::string(name), "\" (valid: ", valid, ")");
}

/// Builds the policy named by `id` from `cfg` and calls f(policy) with its concrete type.
template <class F>
decltype(auto) visit_policy(policy_id id, const policy_config& cfg, F&& f) {
  switch (id) {
    case policy_id::snapkv: {
      snapkv p;
      p.n_sink = cfg.n_sink;
      p.n_recent = cfg.n_recent;
      p.window = cfg.window;
      p.kernel = cfg.kernel;
      p.pool = cfg.pool;
      p.reduce = cfg.reduce;
      p.scale = cfg.scale;
      p.sliding_window = cfg.sliding_window;
      p.soft_cap = cfg.soft_cap;
      return std::forward<F>(f)(p);
    }
    case policy_id::h2o: return std::forward<F>(f)(h2o{cfg.n_sink, cfg.n_recent, cfg.state});
    case policy_id::tova: {
      tova p;
      p.n_sink = cfg.n_sink;
      p.n_recent = cfg.n_recent;
      p.scale = cfg.scale;
      p.sliding_window = cfg.sliding_window;
      p.soft_cap = cfg.soft_cap;
      return std::forward<F>(f)(p);
    }
    case policy_id::knorm: return std::forward<F>(f)(knorm{cfg.n_sink, cfg.n_recent});
    case policy_id::streaming: return std::forward<F>(f)(streaming{cfg.n_sink, cfg.n_recent});
    case policy_id::random: return std::forward<F>(f)(random_policy{cfg.n_sink, cfg.n_recent, cfg.seed});
  }
  detail::fail("depthkv::visit_policy", "bad policy id ", static_cast<int>(id));
}

template <class F>
decltype(auto) visit_policy(std::string_view name, const policy_config& cfg, F&& f) {
  return visit_policy(policy_from_name(name), cfg, std::forward<F>(f));
}

}  // namespace depthkv
