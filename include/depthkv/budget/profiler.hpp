// Profilers that produce a sensitivity_profile, engine-agnostic:
//  - profile_ablation: the layer-ablation method, driving the engine through a loss callback;
//  - cake_profiler:    CAKE's layer preference from observation-window attention (one pass);
//  - squeeze_profiler: SqueezeAttention's 1 - cos(attention input, attention output) (one pass).
// Proxy profilers return single-point curves (one point at `point_ratio`, delta = score), so any
// allocator can consume them; the proportional allocator is the natural one (a single-point
// curve is the line through (point_ratio, score) and (1, 0), so delta_at(l, r) stays
// proportional to the score at every r).
// Hybrid models: sliding-window (local) layers keep their whole window whatever the budget
// (allocate.hpp), so by default every profiler leaves them without points (local_layers::skip);
// the allocators read only the global layers' entries.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

// ---------------------------------------------------------------------------------------------
// Ablation profiler.

/// Whether the profilers measure the sliding-window layers of a hybrid model: skip leaves them
/// without points (no allocator reads them), profile measures them like the others.
enum class local_layers { skip, profile };

/// Keep ratios profiled per layer. Curves are steep near the floor, so sample densely there.
struct ablation_options {
  std::vector<double> keep_ratios = {0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8};
  /// [layer] how each layer attends (empty: every layer global); see `local`.
  std::vector<layer_attention> attention;
  local_layers local = local_layers::skip;
};

namespace detail {
/// Whether a profiler leaves `layer` without points (a sliding layer skipped).
inline bool skips_layer(span<const layer_attention> attention, local_layers local, std::size_t layer) noexcept {
  return local == local_layers::skip && layer < attention.size() && attention[layer].is_sliding();
}
}  // namespace detail

/// Progress of profile_ablation, reported after each (layer, ratio) point.
struct ablation_progress {
  std::size_t layer = 0, n_layers = 0;      ///< layer i of L
  std::size_t ratio_index = 0, n_ratios = 0;  ///< ratio j of R
  double keep_ratio = 1.0;
  double delta = 0.0;
  bool skipped = false;                     ///< the point was already in the resumed profile
  const sensitivity_profile* partial = nullptr;  ///< everything measured so far (save it to resume)
};

struct no_progress {
  void operator()(const ablation_progress&) const noexcept {}
};

/// Measures delta(layer, r) = loss(all 1.0 except layer at r) - loss(all 1.0) for every layer and
/// every r in opt.keep_ratios. `loss` is called as double(span<const double> per_layer_keep_ratios)
/// and must return a finite number. Points already in `resume` (a partly filled profile of
/// n_layers layers, or an empty one) are skipped; its metadata is kept. The baseline is measured
/// once, and only if a point is missing. Throws depthkv::error on invalid options, a profile of
/// the wrong size, or a non-finite loss (naming the layer and ratio); exceptions from `loss` or
/// `progress` propagate (the last `partial` seen holds the work done).
template <class LossFn, class ProgressFn = no_progress>
sensitivity_profile profile_ablation(std::size_t n_layers, LossFn&& loss, const ablation_options& opt = {},
                                     sensitivity_profile resume = {}, ProgressFn&& progress = {}) {
  constexpr const char* where = "depthkv::profile_ablation";
  DEPTHKV_CHECK(n_layers > 0 && n_layers <= max_profile_layers, where, "n_layers ", n_layers, " outside [1, ",
                max_profile_layers, "]");
  DEPTHKV_CHECK(!opt.keep_ratios.empty(), where, "keep_ratios is empty");
  for (std::size_t j = 0; j < opt.keep_ratios.size(); ++j) {
    const double r = opt.keep_ratios[j];
    DEPTHKV_CHECK(r > 0.0 && r <= 1.0, where, "keep_ratios[", j, "] = ", r, " outside (0, 1]");
    for (std::size_t i = 0; i < j; ++i)
      DEPTHKV_CHECK(opt.keep_ratios[i] != r, where, "keep_ratios[", j, "] = ", r, " repeats keep_ratios[", i, "]");
  }
  DEPTHKV_CHECK(opt.attention.empty() || opt.attention.size() == n_layers, where, "attention has ",
                opt.attention.size(), " entries, expected 0 or n_layers = ", n_layers);
  sensitivity_profile p = resume.n_layers() == 0 ? sensitivity_profile(n_layers) : std::move(resume);
  DEPTHKV_CHECK(p.n_layers() == n_layers, where, "resumed profile has ", p.n_layers(), " layers, expected ", n_layers);

  std::vector<double> ratios(n_layers, 1.0);
  auto measure = [&](std::size_t layer, double r) {
    const double v = loss(span<const double>(ratios.data(), ratios.size()));
    DEPTHKV_CHECK(std::isfinite(v), where, "loss returned ", v,
                  layer == n_layers ? std::string(" for the baseline (all layers full)")
                                    : " for layer " + std::to_string(layer) + " at keep ratio " + std::to_string(r));
    return v;
  };
  bool have_baseline = false;
  double baseline = 0.0;
  const std::size_t R = opt.keep_ratios.size();
  for (std::size_t l = 0; l < n_layers; ++l) {
    if (detail::skips_layer(span<const layer_attention>(opt.attention), opt.local, l)) continue;
    for (std::size_t j = 0; j < R; ++j) {
      const double r = opt.keep_ratios[j];
      ablation_progress pr{l, n_layers, j, R, r, 0.0, false, &p};
      if (p.has_point(l, r)) {
        pr.skipped = true;
        for (const auto& q : p.points(l))
          if (q.keep_ratio == r) pr.delta = q.delta;
        progress(static_cast<const ablation_progress&>(pr));
        continue;
      }
      if (!have_baseline) {
        baseline = measure(n_layers, 1.0);
        have_baseline = true;
      }
      ratios[l] = r;
      double v;
      try {
        v = measure(l, r);
      } catch (...) {
        ratios[l] = 1.0;
        throw;
      }
      ratios[l] = 1.0;
      pr.delta = v - baseline;
      DEPTHKV_CHECK(std::isfinite(pr.delta), where, "delta for layer ", l, " at keep ratio ", r, " is not finite");
      p.add_point(l, r, pr.delta);
      progress(static_cast<const ablation_progress&>(pr));
    }
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// Proxy profilers (one forward pass, engine feeds per-layer data).

namespace detail::proxy {

/// Per-layer running mean of a score over calibration samples.
class accumulator {
 public:
  explicit accumulator(std::size_t n_layers, const char* where) : sum_(n_layers, 0.0), count_(n_layers, 0) {
    DEPTHKV_CHECK(n_layers > 0 && n_layers <= max_profile_layers, where, "n_layers ", n_layers,
                  " outside [1, ", max_profile_layers, "]");
  }
  std::size_t n_layers() const noexcept { return sum_.size(); }
  void add(std::size_t layer, double v) {
    sum_[layer] += v;
    ++count_[layer];
  }
  std::size_t samples(std::size_t layer) const noexcept { return count_[layer]; }
  double mean(std::size_t layer, const char* where) const {
    DEPTHKV_CHECK(layer < sum_.size(), where, "layer ", layer, " out of range (n_layers ", sum_.size(), ")");
    DEPTHKV_CHECK(count_[layer] > 0, where, "layer ", layer, " has no data yet");
    return sum_[layer] / double(count_[layer]);
  }
  sensitivity_profile result(const char* where, double point_ratio, const char* metric,
                             span<const layer_attention> attention = {},
                             local_layers local = local_layers::skip) const {
    DEPTHKV_CHECK(attention.empty() || attention.size() == sum_.size(), where, "attention has ", attention.size(),
                  " entries, expected 0 or n_layers = ", sum_.size());
    sensitivity_profile p(sum_.size());
    p.metric = metric;
    for (std::size_t l = 0; l < sum_.size(); ++l)
      if (!skips_layer(attention, local, l)) p.add_point(l, point_ratio, mean(l, where));
    return p;
  }

 private:
  std::vector<double> sum_;
  std::vector<std::size_t> count_;
};

inline void check_point_ratio(double r, const char* where) {
  DEPTHKV_CHECK(r > 0.0 && r < 1.0, where, "point_ratio ", r, " outside (0, 1)");
}

}  // namespace detail::proxy

/// Observation-window attention of one layer: probs[head][q][key], row-major, q over the last
/// `window` query positions, each row softmax-normalised over `keys` keys (causal: zeros past the
/// query). The last `window` keys are the window itself; CAKE scores the keys before it.
struct window_attention {
  span<const float> probs;
  std::size_t heads = 0, window = 0, keys = 0;
};

namespace detail::proxy {
inline void check_window(const window_attention& a, const char* where) {
  DEPTHKV_CHECK(a.heads > 0, where, "heads must be > 0");
  DEPTHKV_CHECK(a.window >= 2, where, "window ", a.window, " must be >= 2 (variance over window queries)");
  DEPTHKV_CHECK(a.keys > a.window, where, "keys ", a.keys, " must exceed window ", a.window);
  DEPTHKV_CHECK(a.probs.size() == a.heads * a.window * a.keys, where, "probs has ", a.probs.size(),
                " values, expected heads * window * keys = ", a.heads * a.window * a.keys);
  for (std::size_t i = 0; i < a.probs.size(); ++i)
    DEPTHKV_CHECK(std::isfinite(a.probs[i]) && a.probs[i] >= 0.0f, where, "probs[", i, "] = ", a.probs[i],
                  " is not a finite probability");
}
}  // namespace detail::proxy

/// CAKE's spatial dispersion: -sum a * ln(a) over heads, window queries and the keys before the
/// window (0 ln 0 = 0). Precondition: a checked window_attention.
inline double attention_entropy(const window_attention& a) noexcept {
  const std::size_t prefix = a.keys - a.window;
  double h = 0.0;
  for (std::size_t hd = 0; hd < a.heads; ++hd)
    for (std::size_t q = 0; q < a.window; ++q) {
      const float* row = a.probs.data() + (hd * a.window + q) * a.keys;
      for (std::size_t j = 0; j < prefix; ++j)
        if (row[j] > 0.0f) h -= double(row[j]) * std::log(double(row[j]));
    }
  return h;
}

/// CAKE's temporal shift: per head and key before the window, the (unbiased, n - 1) variance of
/// its attention across the window queries, summed over heads and keys.
inline double attention_variance(const window_attention& a) noexcept {
  const std::size_t prefix = a.keys - a.window;
  double v = 0.0;
  for (std::size_t hd = 0; hd < a.heads; ++hd)
    for (std::size_t j = 0; j < prefix; ++j) {
      double mean = 0.0;
      for (std::size_t q = 0; q < a.window; ++q) mean += a.probs[(hd * a.window + q) * a.keys + j];
      mean /= double(a.window);
      double ss = 0.0;
      for (std::size_t q = 0; q < a.window; ++q) {
        const double d = a.probs[(hd * a.window + q) * a.keys + j] - mean;
        ss += d * d;
      }
      v += ss / double(a.window - 1);
    }
  return v;
}

/// CAKE's layer preference P = H^(1/tau1) * V^(1/tau2) (Qin et al., ICLR 2025: budget of layer l
/// = P_l / sum_k P_k * total). tau1, tau2 > 0; larger tau flattens that factor.
struct cake_options {
  double tau1 = 1.0;
  double tau2 = 1.0;
  double point_ratio = 0.5;  ///< keep ratio of the single point each layer gets in the profile
};

/// Collects CAKE preferences layer by layer (averaged when a layer is fed several samples).
class cake_profiler {
 public:
  explicit cake_profiler(std::size_t n_layers, const cake_options& opt = {})
      : acc_(n_layers, "depthkv::cake_profiler"), opt_(opt) {
    constexpr const char* where = "depthkv::cake_profiler";
    DEPTHKV_CHECK(std::isfinite(opt.tau1) && opt.tau1 > 0.0, where, "tau1 ", opt.tau1, " must be > 0");
    DEPTHKV_CHECK(std::isfinite(opt.tau2) && opt.tau2 > 0.0, where, "tau2 ", opt.tau2, " must be > 0");
    detail::proxy::check_point_ratio(opt.point_ratio, where);
  }

  std::size_t n_layers() const noexcept { return acc_.n_layers(); }

  /// Preference of one window; also what add_layer accumulates. Throws on bad shapes/values.
  double preference(const window_attention& a) const {
    detail::proxy::check_window(a, "depthkv::cake_profiler::preference");
    return std::pow(attention_entropy(a), 1.0 / opt_.tau1) * std::pow(attention_variance(a), 1.0 / opt_.tau2);
  }

  void add_layer(std::size_t layer, const window_attention& a) {
    constexpr const char* where = "depthkv::cake_profiler::add_layer";
    DEPTHKV_CHECK(layer < n_layers(), where, "layer ", layer, " out of range (n_layers ", n_layers(), ")");
    acc_.add(layer, preference(a));
  }

  /// Mean preference of `layer` so far (throws if it has none).
  double layer_preference(std::size_t layer) const { return acc_.mean(layer, "depthkv::cake_profiler"); }

  /// Single-point profile, metric "cake_preference". Throws if a layer was never fed.
  sensitivity_profile result() const {
    return acc_.result("depthkv::cake_profiler::result", opt_.point_ratio, "cake_preference");
  }
  /// The same for a hybrid model: its sliding layers need no data and get no points (skip).
  sensitivity_profile result(span<const layer_attention> attention, local_layers local = local_layers::skip) const {
    return acc_.result("depthkv::cake_profiler::result", opt_.point_ratio, "cake_preference", attention, local);
  }

 private:
  detail::proxy::accumulator acc_;
  cake_options opt_;
};

/// Collects SqueezeAttention's layer importance 1 - mean_t cos(in[t], out[t]), where in is the
/// hidden state entering the attention block and out the one leaving it (after the residual
/// add): a layer whose attention barely changes the hidden state matters less. Tokens with a
/// zero vector on either side are skipped. Shapes: in, out [tokens][dim] row-major.
class squeeze_profiler {
 public:
  explicit squeeze_profiler(std::size_t n_layers, double point_ratio = 0.5)
      : acc_(n_layers, "depthkv::squeeze_profiler"), point_ratio_(point_ratio) {
    detail::proxy::check_point_ratio(point_ratio, "depthkv::squeeze_profiler");
  }

  std::size_t n_layers() const noexcept { return acc_.n_layers(); }

  /// Mean cosine similarity between rows of in and out (1 when every row is skipped).
  static double mean_cosine(span<const float> in, span<const float> out, std::size_t tokens, std::size_t dim) {
    constexpr const char* where = "depthkv::squeeze_profiler";
    DEPTHKV_CHECK(tokens > 0 && dim > 0, where, "tokens (", tokens, ") and dim (", dim, ") must be > 0");
    DEPTHKV_CHECK(in.size() == tokens * dim && out.size() == tokens * dim, where, "hidden_in has ", in.size(),
                  " and hidden_out ", out.size(), " values, expected tokens * dim = ", tokens * dim);
    for (std::size_t i = 0; i < in.size(); ++i)
      DEPTHKV_CHECK(std::isfinite(in[i]) && std::isfinite(out[i]), where, "non-finite hidden state at index ", i);
    double sum = 0.0;
    std::size_t used = 0;
    for (std::size_t t = 0; t < tokens; ++t) {
      double dot = 0.0, na = 0.0, nb = 0.0;
      for (std::size_t d = 0; d < dim; ++d) {
        const double a = in[t * dim + d], b = out[t * dim + d];
        dot += a * b;
        na += a * a;
        nb += b * b;
      }
      if (na == 0.0 || nb == 0.0) continue;
      sum += std::clamp(dot / (std::sqrt(na) * std::sqrt(nb)), -1.0, 1.0);
      ++used;
    }
    return used == 0 ? 1.0 : sum / double(used);
  }

  void add_layer(std::size_t layer, span<const float> hidden_in, span<const float> hidden_out, std::size_t tokens,
                 std::size_t dim) {
    constexpr const char* where = "depthkv::squeeze_profiler::add_layer";
    DEPTHKV_CHECK(layer < n_layers(), where, "layer ", layer, " out of range (n_layers ", n_layers(), ")");
    acc_.add(layer, 1.0 - mean_cosine(hidden_in, hidden_out, tokens, dim));
  }
  /// The same sample from a cosine the engine measured itself (a fused attention block that
  /// never exposes both hidden states): mean_cosine in [-1, 1].
  void add_mean_cosine(std::size_t layer, double mean_cosine) {
    constexpr const char* where = "depthkv::squeeze_profiler::add_mean_cosine";
    DEPTHKV_CHECK(layer < n_layers(), where, "layer ", layer, " out of range (n_layers ", n_layers(), ")");
    DEPTHKV_CHECK(std::isfinite(mean_cosine) && mean_cosine >= -1.0 && mean_cosine <= 1.0, where,
                  "mean_cosine must be in [-1, 1], got ", mean_cosine);
    acc_.add(layer, 1.0 - mean_cosine);
  }

  double layer_importance(std::size_t layer) const { return acc_.mean(layer, "depthkv::squeeze_profiler"); }

  /// Single-point profile, metric "squeeze_1_minus_cos". Throws if a layer was never fed.
  sensitivity_profile result() const {
    return acc_.result("depthkv::squeeze_profiler::result", point_ratio_, "squeeze_1_minus_cos");
  }
  /// The same for a hybrid model: its sliding layers need no data and get no points (skip).
  sensitivity_profile result(span<const layer_attention> attention, local_layers local = local_layers::skip) const {
    return acc_.result("depthkv::squeeze_profiler::result", point_ratio_, "squeeze_1_minus_cos", attention, local);
  }

 private:
  detail::proxy::accumulator acc_;
  double point_ratio_;
};

}  // namespace depthkv
