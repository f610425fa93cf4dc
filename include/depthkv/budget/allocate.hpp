// Per-layer keep counts from one global budget: uniform, pyramid (PyramidKV), proportional
// (DepthKV) and curve-optimal allocators, a per-head split, and a run-time dispatch by name.
//
// Every allocator returns counts[layer] with
//   sum(counts) == budget exactly,  lo[l] <= counts[l] <= lengths[l],  lo[l] = min(minimums[l], lengths[l])
// (a layer shorter than its minimum keeps everything). Output is deterministic: ties go to the
// lower layer index. An infeasible budget throws depthkv::error saying by how many tokens.
//
// Uniform, pyramid and proportional share one model: real shares x[l] = clamp(lambda * w[l],
// lo[l], hi[l]) with lambda chosen so that sum(x) == budget (water-filling: a layer that
// saturates at either bound passes its excess to the others in proportion to their weights),
// then largest-remainder rounding to integers. The weights are
//   uniform:       w = length                       (same keep ratio everywhere)
//   pyramid:       w = length * p[l], p linear in depth from 2 - 1/beta (layer 0) down to 1/beta
//   proportional:  w = length * s[l]^exponent       (s = sensitivity; exponent 0 = uniform)
// Monotonicity in the budget: the real shares never decrease as the budget grows, but
// largest-remainder rounding can take one token back from a layer (the Alabama paradox), so
// uniform/pyramid/proportional counts are monotone only up to one token in general; uniform is
// exactly monotone when all lengths and minimums are equal. curve-optimal is exactly monotone.
//
// Hybrid-attention models (Gemma 2/3, gpt-oss, Mistral-style): a request may mark layers as
// sliding-window with their window W (attention[l] = layer_attention::sliding(window_tokens{W})).
// Such a layer keeps exactly min(length, W) tokens, its last ones: a fixed cost, not pruned, its
// minimum ignored. Every allocator honours it the same way: the allocator runs on the sub-request
// of the global layers alone (in their order, as if the model had only those), with the profile
// restricted to them, and the counts are placed back among all layers. What the budget covers
// is the request's budget_scope: all layers (the sliding layers' fixed tokens are charged first,
// the rest is split over the global layers) or the global layers only (the fixed tokens come on
// top). The guarantees above then hold with lo[l] = hi[l] = min(length, W) for a sliding layer
// and budget = the tokens all layers keep (resolve()).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <numeric>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "depthkv/budget/profile.hpp"
#include "depthkv/config.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/shape.hpp"

namespace depthkv {

/// The global budget: a token count, or a keep ratio of the total current tokens (rounded half
/// up to tokens: floor(ratio * total + 0.5)).
struct global_budget {
  bool is_ratio = false;
  std::size_t n_tokens = 0;
  double keep_ratio = 0.0;

  static global_budget tokens(std::size_t n) noexcept { return {false, n, 0.0}; }
  static global_budget ratio(double r) noexcept { return {true, 0, r}; }
};

/// A sliding-window layer's window W, in tokens: the layer attends to (and keeps) its last W.
using window_tokens = named_count<struct window_tokens_tag>;

/// How a layer attends: to every token (global) or to its last W tokens (sliding window, a
/// "local" layer of a hybrid model). Built by global() and sliding().
struct layer_attention {
  std::optional<window_tokens> window;  ///< the sliding window; empty: global attention

  static layer_attention global() noexcept { return {std::nullopt}; }
  /// A sliding-window layer of window W (W > 0: checked where the request is resolved).
  static layer_attention sliding(window_tokens w) noexcept { return {w}; }
  bool is_sliding() const noexcept { return window.has_value(); }

  friend bool operator==(const layer_attention& a, const layer_attention& b) noexcept {
    return a.window.has_value() == b.window.has_value() && (!a.window || a.window->value == b.window->value);
  }
  friend bool operator!=(const layer_attention& a, const layer_attention& b) noexcept { return !(a == b); }
};

/// What the budget covers when some layers are sliding-window (the same either way without).
enum class budget_scope {
  /// Every layer: the sliding layers' fixed min(length, W) tokens are charged first, the rest is
  /// split over the global layers. A keep ratio is of the tokens all layers hold (sliding: the window).
  all_layers,
  /// The global layers only: the sliding layers' fixed tokens come on top. A keep ratio is of
  /// the global layers' tokens.
  global_layers
};

/// What to allocate. Shapes: lengths[n_layers]; minimums[n_layers], or one value for every
/// layer, or empty (no floor); attention[n_layers], or empty (every layer global). A minimum
/// should be at least the protected sink + window tokens; a sliding-window layer's is ignored
/// (it keeps min(length, W), its whole window). `scope` says what `budget` covers.
struct allocation_request {
  std::vector<std::size_t> lengths;
  std::vector<std::size_t> minimums;
  global_budget budget;
  std::vector<layer_attention> attention;
  budget_scope scope = budget_scope::all_layers;
};

/// A request checked and resolved to per-layer bounds and a token budget.
struct resolved_request {
  std::vector<std::size_t> lo, hi;  ///< [layer] bounds of the keep count (sliding: both min(length, W))
  std::size_t budget = 0;           ///< tokens to keep in all layers (sliding layers' included)
  std::size_t total = 0;            ///< tokens the layers hold: sum of hi (of lengths, if none slides)
  std::size_t sliding = 0;          ///< tokens the sliding-window layers keep: sum of min(length, W)
  std::size_t n_layers() const noexcept { return hi.size(); }
  /// Global keep ratio budget / total (1 when there are no tokens).
  double keep_ratio() const noexcept { return total == 0 ? 1.0 : double(budget) / double(total); }
};

/// Largest total of lengths an allocation request may have: 2^53 tokens, so that every count
/// and share the allocators compute in double precision is exact.
inline constexpr std::size_t max_allocation_tokens = std::size_t{1} << 53;

namespace detail::alloc {

/// A checked request split into its global and sliding-window layers.
struct layer_split {
  resolved_request full;            ///< every layer
  std::vector<std::size_t> global;  ///< [global layer] its index among all layers, ascending
  std::size_t n_sliding = 0;
  std::size_t global_tokens = 0;  ///< the global layers' share of the budget
  bool hybrid() const noexcept { return n_sliding > 0; }
};

/// floor(kr * total + 0.5), at most total. Pre: kr in [0, 1], total <= 2^53.
inline std::size_t round_ratio(double kr, std::size_t total) noexcept {
  const long double b = std::floor(static_cast<long double>(kr) * static_cast<long double>(total) + 0.5L);
  return b >= static_cast<long double>(total) ? total : static_cast<std::size_t>(b);  // total <= 2^53: exact
}

inline bool has_sliding(const allocation_request& req) noexcept {
  return std::any_of(req.attention.begin(), req.attention.end(),
                     [](const layer_attention& a) { return a.is_sliding(); });
}

/// Checks `req` and resolves it (see resolve); throws depthkv::error naming the argument.
inline layer_split split(const allocation_request& req, const char* where) {
  const std::size_t n = req.lengths.size();
  DEPTHKV_CHECK(n > 0, where, "lengths is empty (need one length per layer)");
  DEPTHKV_CHECK(req.minimums.empty() || req.minimums.size() == 1 || req.minimums.size() == n, where,
                "minimums has ", req.minimums.size(), " entries, expected 0, 1 or n_layers = ", n);
  DEPTHKV_CHECK(req.attention.empty() || req.attention.size() == n, where, "attention has ",
                req.attention.size(), " entries, expected 0 (every layer global) or n_layers = ", n);
  DEPTHKV_CHECK(req.scope == budget_scope::all_layers || req.scope == budget_scope::global_layers, where,
                "scope ", static_cast<int>(req.scope), " is not a budget_scope");
  for (std::size_t l = 0; l < req.attention.size(); ++l)
    DEPTHKV_CHECK(!req.attention[l].window || req.attention[l].window->value > 0, where, "attention[", l,
                  "] is a sliding window of 0 tokens (a window must be > 0)");
  const bool ratio = req.budget.is_ratio;
  const double kr = req.budget.keep_ratio;
  DEPTHKV_CHECK(!ratio || (std::isfinite(kr) && kr >= 0.0 && kr <= 1.0), where, "keep ratio ", kr,
                " outside [0, 1]");
  layer_split s;
  resolved_request& r = s.full;
  r.lo.resize(n);
  r.hi.resize(n);
  std::size_t sum_lengths = 0, global_lo = 0, global_total = 0;
  for (std::size_t l = 0; l < n; ++l) {
    const std::size_t len = req.lengths[l];
    DEPTHKV_CHECK(len <= max_allocation_tokens - sum_lengths, where, "lengths[", l, "] = ", len,
                  " brings the total of lengths above the supported ", max_allocation_tokens,
                  " tokens (2^53)");
    sum_lengths += len;
    if (!req.attention.empty() && req.attention[l].window) {
      r.lo[l] = r.hi[l] = std::min(len, req.attention[l].window->value);
      r.sliding += r.lo[l];  // <= sum_lengths <= 2^53
      ++s.n_sliding;
    } else {
      const std::size_t m = req.minimums.empty()       ? 0
                            : req.minimums.size() == 1 ? req.minimums[0]
                                                       : req.minimums[l];
      r.lo[l] = std::min(m, len);
      r.hi[l] = len;
      global_lo += r.lo[l];
      global_total += len;
      s.global.push_back(l);
    }
  }
  r.total = r.sliding + global_total;  // <= sum_lengths
  if (!s.hybrid()) {
    r.budget = ratio ? round_ratio(kr, r.total) : req.budget.n_tokens;
    DEPTHKV_CHECK(r.budget >= global_lo, where, "budget of ", r.budget,
                  " tokens is below the sum of per-layer ", "minimums (", global_lo, ") by ",
                  global_lo - r.budget, " tokens");
    DEPTHKV_CHECK(r.budget <= r.total, where, "budget of ", r.budget, " tokens exceeds the total of ",
                  r.total, " current tokens by ", r.budget - r.total, " tokens");
    s.global_tokens = r.budget;
    return s;
  }
  const std::string sliding_words =
      concat("the ", s.n_sliding, " sliding-window layers' ", r.sliding, " tokens (min(length, window))");
  if (req.scope == budget_scope::all_layers) {
    const std::size_t b = ratio ? round_ratio(kr, r.total) : req.budget.n_tokens;
    const std::string how =
        ratio ? concat(" (keep ratio ", kr, " of the ", r.total, " tokens the layers hold)") : std::string();
    const std::size_t need = r.sliding + global_lo;  // <= total
    DEPTHKV_CHECK(b >= need, where, "budget of ", b, " tokens", how, " is below what the layers must keep (",
                  need, " tokens: ", sliding_words, " plus the global layers' minimums ", global_lo, ") by ",
                  need - b, " tokens");
    DEPTHKV_CHECK(b <= r.total, where, "budget of ", b, " tokens exceeds the ", r.total,
                  " tokens the layers hold (", sliding_words, " plus the global layers' ", global_total,
                  ") by ", b - r.total, " tokens");
    r.budget = b;
    s.global_tokens = b - r.sliding;
  } else {
    const std::size_t b = ratio ? round_ratio(kr, global_total) : req.budget.n_tokens;
    const std::string how =
        ratio ? concat(" (keep ratio ", kr, " of the global layers' ", global_total, " tokens)")
              : std::string();
    DEPTHKV_CHECK(b >= global_lo, where, "budget of ", b, " tokens for the global layers", how,
                  " is below the sum of their minimums (", global_lo, ") by ", global_lo - b,
                  " tokens (budget_scope::global_layers: ", sliding_words, " come on top)");
    DEPTHKV_CHECK(b <= global_total, where, "budget of ", b,
                  " tokens for the global layers exceeds their total of ", global_total, " tokens by ",
                  b - global_total, " tokens (budget_scope::global_layers: ", sliding_words, " come on top)");
    s.global_tokens = b;
    r.budget = r.sliding + b;  // <= total
  }
  return s;
}

/// The sub-request of the global layers: their lengths and minimums, their share of the budget
/// in tokens, no attention entries.
inline allocation_request global_request(const allocation_request& req, const layer_split& s) {
  allocation_request sub;
  sub.lengths.reserve(s.global.size());
  for (const std::size_t l : s.global) sub.lengths.push_back(req.lengths[l]);
  if (req.minimums.size() > 1) {
    sub.minimums.reserve(s.global.size());
    for (const std::size_t l : s.global) sub.minimums.push_back(req.minimums[l]);
  } else {
    sub.minimums = req.minimums;  // none, or one for every layer
  }
  sub.budget = global_budget::tokens(s.global_tokens);
  return sub;
}

/// The profile an allocator sees for the global layers of a hybrid request: p's global layers
/// when p has every layer (the sliding layers' entries are not read, they may have no points),
/// p itself when it has exactly the global layers or no layers (for allocators without one).
/// `storage` holds the selection. Throws for any other layer count.
inline const sensitivity_profile& global_profile(const sensitivity_profile& p, std::size_t n,
                                                 const std::vector<std::size_t>& global,
                                                 sensitivity_profile& storage, const char* where) {
  const std::size_t g = global.size();
  if (p.n_layers() == n) {
    storage = select_layers(p, span<const std::size_t>(global.data(), g));
    return storage;
  }
  DEPTHKV_CHECK(p.n_layers() == g || p.n_layers() == 0, where, "profile has ", p.n_layers(),
                " layers, expected n_layers = ", n,
                " (every layer; the sliding-window layers' entries are not read), ", g,
                " (the global layers only) or 0 (allocators without a profile)");
  return p;
}

/// Runs `run(sub)` on the global layers' sub-request and places its counts among all layers'
/// (sliding layers: min(length, W)). `who` names the allocator in errors. Pre: s.hybrid().
template <class Run>
std::vector<std::size_t> on_global_layers(const allocation_request& req, const layer_split& s, Run&& run,
                                          std::string_view who, const char* where) {
  std::vector<std::size_t> c = s.full.lo;  // sliding layers' fixed counts; global ones overwritten
  if (s.global.empty()) return c;
  const allocation_request sub = global_request(req, s);
  std::vector<std::size_t> g;
  try {
    g = std::forward<Run>(run)(sub);
  } catch (const error& e) {
    fail(where, "allocator '", std::string(who), "' on the ", s.global.size(), " global layers (the ",
         s.n_sliding, " sliding-window layers keep min(length, window)): ", e.what());
  }
  DEPTHKV_CHECK(g.size() == s.global.size(), where, "allocator '", std::string(who), "' returned ", g.size(),
                " counts for the ", s.global.size(), " global layers");
  for (std::size_t i = 0; i < g.size(); ++i) c[s.global[i]] = g[i];
  return c;
}

}  // namespace detail::alloc

/// Validates `req` and resolves it; throws depthkv::error naming the argument, or for an
/// infeasible budget, saying by how many tokens it misses the feasible range (and, with
/// sliding-window layers, how many of the tokens their fixed windows take).
inline resolved_request resolve(const allocation_request& req, const char* where = "depthkv::allocate") {
  return detail::alloc::split(req, where).full;
}

namespace detail::alloc {

/// Real shares x[l] = clamp(lambda * w[l], lo[l], hi[l]) summing to B (w >= 0). Layers of weight 0
/// stay at lo unless the weighted layers cannot absorb B; then those fill to hi and the rest is
/// spread over the zero-weight layers in proportion to `fallback` (> 0 wherever w == 0).
/// Precondition: sum(lo) <= B <= sum(hi).
inline std::vector<double> water_fill(const std::vector<std::size_t>& lo, const std::vector<std::size_t>& hi,
                                      const std::vector<double>& w, std::size_t B,
                                      const std::vector<double>* fallback = nullptr) {
  const std::size_t n = lo.size();
  std::vector<double> x(n);
  for (std::size_t l = 0; l < n; ++l) x[l] = double(lo[l]);
  if (B == std::accumulate(lo.begin(), lo.end(), std::size_t{0})) return x;
  // Capacity of the weighted layers.
  std::size_t cap = 0, sum_lo = 0;
  for (std::size_t l = 0; l < n; ++l) {
    sum_lo += lo[l];
    cap += w[l] > 0.0 ? hi[l] : lo[l];
  }
  DEPTHKV_ASSERT(sum_lo <= B);
  if (B > cap) {
    DEPTHKV_ASSERT(fallback != nullptr);
    std::vector<std::size_t> lo2(n), hi2(n);
    std::vector<double> w2(n, 0.0);
    for (std::size_t l = 0; l < n; ++l) {
      if (w[l] > 0.0) {
        lo2[l] = hi2[l] = hi[l];
      } else {
        lo2[l] = lo[l];
        hi2[l] = hi[l];
        w2[l] = (*fallback)[l];
      }
    }
    return water_fill(lo2, hi2, w2, B, nullptr);
  }
  // Sweep lambda over the breakpoints lo/w and hi/w; S(lambda) = base + slope * lambda between them.
  struct event {
    double at;
    std::size_t layer;
    bool start;  // true: layer leaves its floor; false: layer reaches its ceiling
  };
  std::vector<event> ev;
  ev.reserve(2 * n);
  double base = 0.0;
  for (std::size_t l = 0; l < n; ++l) {
    base += double(lo[l]);
    if (w[l] > 0.0 && hi[l] > lo[l]) {
      ev.push_back({double(lo[l]) / w[l], l, true});
      ev.push_back({double(hi[l]) / w[l], l, false});
    }
  }
  std::sort(ev.begin(), ev.end(), [](const event& a, const event& b) {
    if (a.at != b.at) return a.at < b.at;
    if (a.start != b.start) return a.start;  // open before closing at the same lambda
    return a.layer < b.layer;
  });
  const double target = double(B);
  double slope = 0.0, lambda = 0.0;
  bool found = false;
  for (const event& e : ev) {
    const double s_at = base + slope * e.at;
    if (s_at >= target && slope > 0.0) {
      lambda = (target - base) / slope;
      found = true;
      break;
    }
    if (e.start) {
      base -= double(lo[e.layer]);
      slope += w[e.layer];
    } else {
      base += double(hi[e.layer]);
      slope -= w[e.layer];
    }
  }
  if (!found) lambda = std::numeric_limits<double>::infinity();  // everything weighted at hi
  for (std::size_t l = 0; l < n; ++l) {
    if (w[l] <= 0.0) continue;
    const double v = lambda * w[l];  // inf * w = inf -> clamps to hi
    x[l] = std::min(double(hi[l]), std::max(double(lo[l]), v));
  }
  return x;
}

/// Largest-remainder rounding of shares x (lo <= x <= hi, sum ~= B) to integers summing to B
/// exactly. Ties: the lower layer index first.
inline std::vector<std::size_t> round_shares(const std::vector<double>& x, const std::vector<std::size_t>& lo,
                                             const std::vector<std::size_t>& hi, std::size_t B) {
  const std::size_t n = x.size();
  std::vector<std::size_t> c(n);
  std::vector<double> frac(n);
  std::size_t sum = 0;
  for (std::size_t l = 0; l < n; ++l) {
    const double f = std::floor(x[l]);
    std::size_t v = f <= double(lo[l]) ? lo[l] : f >= double(hi[l]) ? hi[l] : static_cast<std::size_t>(f);
    c[l] = v;
    frac[l] = x[l] - double(v);
    sum += v;
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (sum < B) {
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return frac[a] > frac[b]; });
    while (sum < B) {  // one pass normally; more only if x was far off (guards rounding error)
      bool progressed = false;
      for (const std::size_t l : order) {
        if (sum == B) break;
        if (c[l] < hi[l]) {
          ++c[l];
          ++sum;
          progressed = true;
        }
      }
      DEPTHKV_ASSERT(progressed);
      if (!progressed) break;
    }
  } else if (sum > B) {
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return frac[a] < frac[b]; });
    while (sum > B) {
      bool progressed = false;
      for (const std::size_t l : order) {
        if (sum == B) break;
        if (c[l] > lo[l]) {
          --c[l];
          --sum;
          progressed = true;
        }
      }
      DEPTHKV_ASSERT(progressed);
      if (!progressed) break;
    }
  }
  return c;
}

inline std::vector<std::size_t> weighted(const resolved_request& r, const std::vector<double>& w) {
  std::vector<double> fallback(r.n_layers());
  for (std::size_t l = 0; l < r.n_layers(); ++l) fallback[l] = std::max<double>(1.0, double(r.hi[l]));
  const auto x = water_fill(r.lo, r.hi, w, r.budget, &fallback);
  return round_shares(x, r.lo, r.hi, r.budget);
}

/// Lower convex hull of points sorted by x (strictly increasing x). Andrew's monotone chain.
struct pt {
  double x, y;
};
inline std::vector<pt> lower_hull(const std::vector<pt>& p) {
  std::vector<pt> h;
  for (const pt& q : p) {
    while (h.size() >= 2) {
      const pt& a = h[h.size() - 2];
      const pt& b = h.back();
      // Drop b when it lies on or above the segment a -> q.
      const double cross = (b.x - a.x) * (q.y - a.y) - (b.y - a.y) * (q.x - a.x);
      if (cross <= 0.0) h.pop_back();
      else break;
    }
    h.push_back(q);
  }
  return h;
}

/// Loss of `layer` as a function of its keep count k in [lo, len], clipped to that domain:
/// the points (k, delta) through which the piecewise-linear curve runs, ascending in k.
inline std::vector<pt> curve_in_tokens(const sensitivity_profile& p, std::size_t layer, std::size_t lo,
                                       std::size_t len) {
  std::vector<pt> out;
  if (len == 0) return out;
  const double L = double(len);
  out.push_back({double(lo), p.delta_at(layer, double(lo) / L)});
  for (const auto& q : p.points(layer)) {
    const double k = q.keep_ratio * L;
    if (!(k > double(lo) && k < L)) continue;
    if (k <= out.back().x) {  // ratios so close that they map to the same k: keep the lower loss
      out.back().y = std::min(out.back().y, q.delta);
      continue;
    }
    out.push_back({k, q.delta});
  }
  if (len > lo) out.push_back({L, p.delta_at(layer, 1.0)});
  return out;
}

inline double eval_pl(const std::vector<pt>& h, double k) {
  if (k <= h.front().x) return h.front().y;
  for (std::size_t i = 1; i < h.size(); ++i)
    if (k <= h[i].x) {
      const double t = (k - h[i - 1].x) / (h[i].x - h[i - 1].x);
      return h[i - 1].y + t * (h[i].y - h[i - 1].y);
    }
  return h.back().y;
}

/// A run of `count` consecutive one-token increments of one layer, each reducing the (hull)
/// loss by `gain`.
struct run {
  double gain;
  std::size_t layer, start, count;
};

/// Increments of one layer from lo up to len on the lower hull: gains non-increasing in k.
inline void hull_runs(const std::vector<pt>& h, std::size_t layer, std::size_t lo, std::size_t len,
                      std::vector<run>& out) {
  std::size_t k = lo;
  std::size_t seg = 1;
  double prev_gain = std::numeric_limits<double>::infinity();
  while (k < len) {
    while (seg + 1 < h.size() && double(k) >= h[seg].x) ++seg;
    const pt a = h[seg - 1], b = h[seg];
    double gain;
    std::size_t count;
    if (double(k) >= a.x && double(k + 1) <= b.x) {
      gain = (a.y - b.y) / (b.x - a.x);
      const std::size_t end = detail::clamp_to_count(std::floor(b.x), len);
      count = std::max<std::size_t>(1, end - k);
    } else {  // the unit [k, k+1] straddles the vertex b
      gain = eval_pl(h, double(k)) - eval_pl(h, double(k + 1));
      count = 1;
    }
    gain = std::min(gain, prev_gain);  // convexity makes gains non-increasing; keep it exact
    prev_gain = gain;
    out.push_back({gain, layer, k, count});
    k += count;
  }
}

}  // namespace detail::alloc

// ---------------------------------------------------------------------------------------------
// Free-function allocators.

/// Same keep ratio in every layer (equal counts when lengths are equal).
inline std::vector<std::size_t> allocate_uniform(const allocation_request& req) {
  constexpr const char* where = "depthkv::allocate_uniform";
  const auto s = detail::alloc::split(req, where);
  if (s.hybrid())
    return detail::alloc::on_global_layers(
        req, s, [](const allocation_request& sub) { return allocate_uniform(sub); }, "uniform", where);
  const resolved_request& r = s.full;
  std::vector<double> w(r.n_layers());
  for (std::size_t l = 0; l < w.size(); ++l) w[l] = double(r.hi[l]);
  return detail::alloc::weighted(r, w);
}

/// PyramidKV's schedule: budget decreasing linearly with depth; the last layer gets 1/beta of
/// the mean, the first 2 - 1/beta of it (beta >= 1; beta = 1 is uniform).
inline std::vector<std::size_t> allocate_pyramid(const allocation_request& req, double beta = 20.0) {
  constexpr const char* where = "depthkv::allocate_pyramid";
  DEPTHKV_CHECK(std::isfinite(beta) && beta >= 1.0, where, "beta ", beta, " must be finite and >= 1");
  const auto s = detail::alloc::split(req, where);
  if (s.hybrid())
    return detail::alloc::on_global_layers(
        req, s, [beta](const allocation_request& sub) { return allocate_pyramid(sub, beta); }, "pyramid",
        where);
  const resolved_request& r = s.full;
  const std::size_t n = r.n_layers();
  const double lo_w = 1.0 / beta, hi_w = 2.0 - 1.0 / beta;
  std::vector<double> w(n);
  for (std::size_t l = 0; l < n; ++l) {
    const double t = n == 1 ? 0.5 : double(l) / double(n - 1);
    w[l] = double(r.hi[l]) * (hi_w + t * (lo_w - hi_w));
  }
  return detail::alloc::weighted(r, w);
}

/// Knobs of the proportional allocator.
struct proportional_options {
  /// Weight = sensitivity^exponent (exponent = 1/temperature). 1 is the naive "keep proportional
  /// to sensitivity" rule, which on heavy-tailed profiles drives most layers to their floor and
  /// can lose to uniform at small budgets; values in (0, 1) flatten it; 0 is uniform.
  double exponent = 1.0;
  /// Per-layer clamps on the keep ratio, tightening [minimum, length] (0 and 1: none).
  double min_keep_ratio = 0.0;
  double max_keep_ratio = 1.0;
  /// Where a curve profile is read to get one sensitivity per layer: delta_at(layer, ratio).
  /// 0 means the request's global keep ratio.
  double reference_ratio = 0.0;
};

/// DepthKV's rule: keep counts proportional to sensitivity (sensitivities[layer] >= 0, finite)
/// raised to `exponent`, with clamps and water-filling. All-zero weights give uniform.
inline std::vector<std::size_t> allocate_proportional(const allocation_request& req,
                                                      span<const double> sensitivities,
                                                      const proportional_options& opt = {}) {
  constexpr const char* where = "depthkv::allocate_proportional";
  auto s = detail::alloc::split(req, where);
  if (s.hybrid()) {
    const std::size_t n = s.full.n_layers(), g = s.global.size();
    DEPTHKV_CHECK(sensitivities.size() == n || sensitivities.size() == g, where, "sensitivities has ",
                  sensitivities.size(), " entries, expected n_layers = ", n,
                  " (the sliding-window layers' entries are not read) or the ", g, " global layers");
    std::vector<double> sg;
    if (sensitivities.size() == n) {
      for (const std::size_t l : s.global) sg.push_back(sensitivities[l]);
    } else {
      sg.assign(sensitivities.begin(), sensitivities.end());
    }
    return detail::alloc::on_global_layers(
        req, s, [&](const allocation_request& sub) { return allocate_proportional(sub, sg, opt); },
        "proportional", where);
  }
  resolved_request& r = s.full;
  const std::size_t n = r.n_layers();
  DEPTHKV_CHECK(sensitivities.size() == n, where, "sensitivities has ", sensitivities.size(),
                " entries, expected n_layers = ", n);
  DEPTHKV_CHECK(std::isfinite(opt.exponent) && opt.exponent >= 0.0, where, "exponent ", opt.exponent,
                " must be finite and >= 0");
  DEPTHKV_CHECK(opt.min_keep_ratio >= 0.0 && opt.min_keep_ratio <= opt.max_keep_ratio && opt.max_keep_ratio <= 1.0,
                where, "clamps need 0 <= min_keep_ratio <= max_keep_ratio <= 1, got min_keep_ratio ",
                opt.min_keep_ratio, ", max_keep_ratio ", opt.max_keep_ratio);
  for (std::size_t l = 0; l < n; ++l)
    DEPTHKV_CHECK(std::isfinite(sensitivities[l]) && sensitivities[l] >= 0.0, where, "sensitivities[", l,
                  "] = ", sensitivities[l], " must be finite and >= 0");
  std::size_t sum_lo = 0, sum_hi = 0;
  for (std::size_t l = 0; l < n; ++l) {
    const double len = double(r.hi[l]);
    const std::size_t cmin = detail::clamp_to_count(std::ceil(opt.min_keep_ratio * len - 1e-9), r.hi[l]);
    const std::size_t cmax = detail::clamp_to_count(std::floor(opt.max_keep_ratio * len + 1e-9), r.hi[l]);
    const std::size_t lo = std::min(r.hi[l], std::max(r.lo[l], cmin));
    const std::size_t hi = std::max(lo, std::min(r.hi[l], cmax));
    r.lo[l] = lo;
    r.hi[l] = hi;
    sum_lo += lo;
    sum_hi += hi;
  }
  DEPTHKV_CHECK(r.budget >= sum_lo, where, "budget of ", r.budget, " tokens is below the clamped minimums (",
                sum_lo, ", min_keep_ratio ", opt.min_keep_ratio, ") by ", sum_lo - r.budget, " tokens");
  DEPTHKV_CHECK(r.budget <= sum_hi, where, "budget of ", r.budget, " tokens exceeds the clamped maximums (",
                sum_hi, ", max_keep_ratio ", opt.max_keep_ratio, ") by ", r.budget - sum_hi, " tokens");
  // Normalised by the largest sensitivity: scale-free, and equal sensitivities give weights
  // bit-identical to uniform's.
  const double smax = *std::max_element(sensitivities.begin(), sensitivities.end());
  std::vector<double> w(n);
  bool any = false;
  for (std::size_t l = 0; l < n; ++l) {
    const double s = smax > 0.0 ? sensitivities[l] / smax : 0.0;
    w[l] = double(req.lengths[l]) * (opt.exponent == 0.0 ? 1.0 : std::pow(s, opt.exponent));
    any = any || w[l] > 0.0;
  }
  if (!any)
    for (std::size_t l = 0; l < n; ++l) w[l] = double(req.lengths[l]);
  return detail::alloc::weighted(r, w);
}

/// One sensitivity per layer from a profile: max(0, delta_at(layer, ratio)).
inline std::vector<double> layer_sensitivities(const sensitivity_profile& p, double ratio) {
  constexpr const char* where = "depthkv::layer_sensitivities";
  DEPTHKV_CHECK(p.complete(), where, "the profile has layers without points");
  DEPTHKV_CHECK(ratio >= 0.0 && ratio <= 1.0, where, "ratio ", ratio, " outside [0, 1]");
  std::vector<double> s(p.n_layers());
  for (std::size_t l = 0; l < s.size(); ++l) s[l] = std::max(0.0, p.delta_at(l, ratio));
  return s;
}

/// Curve-optimal: minimises the summed (lower-convex-hull) curve loss sum_l H_l(k_l / len_l)
/// by greedy marginal gain, one token at a time (done in runs of equal gain, so the cost is
/// per curve segment, not per token). Exact for convex curves; for non-convex curves it is
/// exact on their lower convex hulls. Ties: lower layer first. Exactly monotone in the budget.
inline std::vector<std::size_t> allocate_curve(const allocation_request& req, const sensitivity_profile& p) {
  constexpr const char* where = "depthkv::allocate_curve";
  const auto s = detail::alloc::split(req, where);
  if (s.hybrid()) {
    sensitivity_profile storage;
    const sensitivity_profile& gp =
        detail::alloc::global_profile(p, s.full.n_layers(), s.global, storage, where);
    return detail::alloc::on_global_layers(
        req, s, [&](const allocation_request& sub) { return allocate_curve(sub, gp); }, "curve", where);
  }
  const resolved_request& r = s.full;
  const std::size_t n = r.n_layers();
  DEPTHKV_CHECK(p.n_layers() == n, where, "profile has ", p.n_layers(), " layers, request has ", n);
  DEPTHKV_CHECK(p.complete(), where, "the profile has layers without points");
  std::vector<detail::alloc::run> runs;
  for (std::size_t l = 0; l < n; ++l) {
    if (r.hi[l] <= r.lo[l]) continue;
    const auto pts = detail::alloc::curve_in_tokens(p, l, r.lo[l], r.hi[l]);
    for (const auto& q : pts)
      DEPTHKV_CHECK(std::isfinite(q.y), where, "layer ", l, ": the curve is not finite at keep ratio ",
                    q.x / double(r.hi[l]), " (extrapolation of an extremely steep first segment)");
    const std::size_t first = runs.size();
    detail::alloc::hull_runs(detail::alloc::lower_hull(pts), l, r.lo[l], r.hi[l], runs);
    for (std::size_t i = first; i < runs.size(); ++i)
      DEPTHKV_CHECK(std::isfinite(runs[i].gain), where, "layer ", l,
                    ": curve deltas too large to compare (non-finite marginal gain)");
  }
  std::sort(runs.begin(), runs.end(), [](const detail::alloc::run& a, const detail::alloc::run& b) {
    if (a.gain != b.gain) return a.gain > b.gain;
    if (a.layer != b.layer) return a.layer < b.layer;
    return a.start < b.start;
  });
  std::vector<std::size_t> c = r.lo;
  std::size_t left = r.budget;
  for (const std::size_t v : r.lo) left -= v;
  for (const auto& ru : runs) {
    if (left == 0) break;
    DEPTHKV_ASSERT(c[ru.layer] == ru.start);  // runs of a layer are taken as a prefix
    const std::size_t take = std::min(left, ru.count);
    c[ru.layer] += take;
    left -= take;
  }
  DEPTHKV_ASSERT(left == 0);
  return c;
}

/// Summed curve loss of an allocation: sum_l delta_at(l, counts[l] / lengths[l]) (layers of
/// length 0 count as full). The additive loss model the curve allocator minimises (on hulls).
inline double predicted_loss(const sensitivity_profile& p, span<const std::size_t> lengths,
                             span<const std::size_t> counts) {
  constexpr const char* where = "depthkv::predicted_loss";
  DEPTHKV_CHECK(lengths.size() == p.n_layers() && counts.size() == p.n_layers(), where, "lengths (",
                lengths.size(), ") and counts (", counts.size(), ") must have n_layers = ", p.n_layers(), " entries");
  double s = 0.0;
  for (std::size_t l = 0; l < p.n_layers(); ++l) {
    DEPTHKV_CHECK(counts[l] <= lengths[l], where, "counts[", l, "] = ", counts[l], " exceeds lengths[", l,
                  "] = ", lengths[l]);
    s += p.delta_at(l, lengths[l] == 0 ? 1.0 : double(counts[l]) / double(lengths[l]));
  }
  return s;
}

/// Splits one layer's keep count over its kv heads: per-head counts summing to `count`, each in
/// [min(head_minimum, head_lengths[h]), head_lengths[h]], proportional to head_lengths[h] *
/// head_weights[h] (empty weights: same keep ratio per head), water-filled and rounded like the
/// layer allocators. Throws if count is infeasible or a weight is negative or not finite.
inline std::vector<std::size_t> split_heads(std::size_t count, span<const std::size_t> head_lengths,
                                            std::size_t head_minimum = 0, span<const double> head_weights = {}) {
  constexpr const char* where = "depthkv::split_heads";
  allocation_request req;
  req.lengths.assign(head_lengths.begin(), head_lengths.end());
  req.minimums = {head_minimum};
  req.budget = global_budget::tokens(count);
  DEPTHKV_CHECK(!head_lengths.empty(), where, "head_lengths is empty");
  DEPTHKV_CHECK(head_weights.empty() || head_weights.size() == head_lengths.size(), where, "head_weights has ",
                head_weights.size(), " entries, expected 0 or n_heads = ", head_lengths.size());
  for (std::size_t h = 0; h < head_weights.size(); ++h)
    DEPTHKV_CHECK(std::isfinite(head_weights[h]) && head_weights[h] >= 0.0, where, "head_weights[", h, "] = ",
                  head_weights[h], " must be finite and >= 0");
  const auto r = resolve(req, where);
  std::vector<double> w(r.n_layers());
  for (std::size_t h = 0; h < w.size(); ++h)
    w[h] = double(head_lengths[h]) * (head_weights.empty() ? 1.0 : head_weights[h]);
  return detail::alloc::weighted(r, w);
}

// ---------------------------------------------------------------------------------------------
// Allocators as plain types. Contract (checked by is_allocator / check_allocator):
//   static constexpr std::string_view name;
//   std::vector<std::size_t> allocate(const allocation_request&, const sensitivity_profile&) const;
// Allocators that do not use a profile ignore it (an empty sensitivity_profile{} is fine).
// Through allocate() an allocator never sees sliding-window layers: it gets the global layers'
// sub-request (attention empty, budget in tokens) and the profile of those layers.

struct uniform_allocator {
  static constexpr std::string_view name = "uniform";
  std::vector<std::size_t> allocate(const allocation_request& req, const sensitivity_profile&) const {
    return allocate_uniform(req);
  }
};

struct pyramid_allocator {
  static constexpr std::string_view name = "pyramid";
  double beta = 20.0;  ///< PyramidKV's default
  std::vector<std::size_t> allocate(const allocation_request& req, const sensitivity_profile&) const {
    return allocate_pyramid(req, beta);
  }
};

struct proportional_allocator {
  static constexpr std::string_view name = "proportional";
  proportional_options options;
  std::vector<std::size_t> allocate(const allocation_request& req, const sensitivity_profile& p) const {
    constexpr const char* where = "depthkv::proportional_allocator";
    if (detail::alloc::has_sliding(req)) {  // the profile and reference ratio of the global layers
      const auto s = detail::alloc::split(req, where);
      sensitivity_profile storage;
      const sensitivity_profile& gp =
          detail::alloc::global_profile(p, s.full.n_layers(), s.global, storage, where);
      return detail::alloc::on_global_layers(
          req, s, [&](const allocation_request& sub) { return allocate(sub, gp); }, name, where);
    }
    DEPTHKV_CHECK(p.n_layers() == req.lengths.size(), where, "profile has ", p.n_layers(), " layers, request has ",
                  req.lengths.size());
    const double ref = options.reference_ratio > 0.0 ? options.reference_ratio : resolve(req, where).keep_ratio();
    const auto s = layer_sensitivities(p, ref);
    return allocate_proportional(req, s, options);
  }
};

struct curve_allocator {
  static constexpr std::string_view name = "curve";
  std::vector<std::size_t> allocate(const allocation_request& req, const sensitivity_profile& p) const {
    return allocate_curve(req, p);
  }
};

template <class A, class = void>
struct is_allocator : std::false_type {};
template <class A>
struct is_allocator<A, std::void_t<decltype(std::string_view(A::name)),
                                   decltype(std::declval<const A&>().allocate(
                                       std::declval<const allocation_request&>(),
                                       std::declval<const sensitivity_profile&>()))>>
    : std::is_same<decltype(std::declval<const A&>().allocate(std::declval<const allocation_request&>(),
                                                              std::declval<const sensitivity_profile&>())),
                   std::vector<std::size_t>> {};
template <class A>
inline constexpr bool is_allocator_v = is_allocator<A>::value;

template <class A>
constexpr void check_allocator() {
  static_assert(is_allocator_v<A>,
                "depthkv allocator contract: needs `static constexpr std::string_view name` and "
                "`std::vector<std::size_t> allocate(const allocation_request&, const sensitivity_profile&) const`");
}

/// Runs allocator `a`; checks the contract at compile time and the result's invariants
/// (exact sum, bounds) at run time in debug builds. With sliding-window layers, `a` runs on the
/// global layers alone (see the file comment); p then has every layer (the sliding layers'
/// entries unread), only the global layers, or none (for allocators without a profile).
template <class A, class = std::enable_if_t<!std::is_convertible_v<const A&, std::string_view>>>
std::vector<std::size_t> allocate(const A& a, const allocation_request& req, const sensitivity_profile& p) {
  check_allocator<A>();
  constexpr const char* where = "depthkv::allocate";
  std::vector<std::size_t> c;
  if (detail::alloc::has_sliding(req)) {
    const auto s = detail::alloc::split(req, where);
    sensitivity_profile storage;
    const sensitivity_profile& gp =
        detail::alloc::global_profile(p, s.full.n_layers(), s.global, storage, where);
    c = detail::alloc::on_global_layers(
        req, s, [&](const allocation_request& sub) { return a.allocate(sub, gp); }, A::name, where);
  } else {
    c = a.allocate(req, p);
  }
#if !defined(NDEBUG)
  const auto r = resolve(req);
  DEPTHKV_ASSERT(c.size() == r.n_layers());
  std::size_t s = 0;
  for (std::size_t l = 0; l < c.size(); ++l) {
    DEPTHKV_ASSERT(c[l] >= r.lo[l] && c[l] <= r.hi[l]);
    s += c[l];
  }
  DEPTHKV_ASSERT(s == r.budget);
#endif
  return c;
}

// ---------------------------------------------------------------------------------------------
// Run-time choice by name: the one place a string becomes an allocator type.

inline constexpr std::array<std::string_view, 4> allocator_names = {"uniform", "pyramid", "proportional", "curve"};

/// Parameters for the allocators built by name.
struct allocator_params {
  double pyramid_beta = 20.0;
  proportional_options proportional;
};

/// Calls f(allocator) with the allocator called `name`, configured from `params`; returns what
/// f returns. Throws depthkv::error listing the known names for an unknown one.
template <class F>
decltype(auto) visit_allocator(std::string_view name, F&& f, const allocator_params& params = {}) {
  if (name == uniform_allocator::name) return std::forward<F>(f)(uniform_allocator{});
  if (name == pyramid_allocator::name) return std::forward<F>(f)(pyramid_allocator{params.pyramid_beta});
  if (name == proportional_allocator::name)
    return std::forward<F>(f)(proportional_allocator{params.proportional});
  if (name == curve_allocator::name) return std::forward<F>(f)(curve_allocator{});
  detail::fail("depthkv::visit_allocator", "unknown allocator '", std::string(name),
               "' (known: uniform, pyramid, proportional, curve)");
}

/// allocate() with the allocator called `name`.
inline std::vector<std::size_t> allocate(std::string_view name, const allocation_request& req,
                                         const sensitivity_profile& p, const allocator_params& params = {}) {
  return visit_allocator(
      name, [&](const auto& a) { return allocate(a, req, p); }, params);
}

}  // namespace depthkv
