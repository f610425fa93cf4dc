// minillama pruning glue.
#include "minillama/evict.hpp"

#include <algorithm>
#include <cmath>

#include "depthkv/error.hpp"
#include "depthkv/select/topk.hpp"
#include "text.hpp"

namespace minillama {

std::vector<std::size_t> keep_counts(const depthkv::kv_cache<float>& cache, depthkv::span<const double> ratios,
                                     std::size_t min_keep) {
  constexpr const char* where = "minillama::keep_counts";
  DEPTHKV_CHECK(ratios.size() == cache.n_layers(), where, "ratios has ", ratios.size(), " entries, expected n_layers = ",
                cache.n_layers());
  std::vector<std::size_t> out(ratios.size());
  for (std::size_t l = 0; l < ratios.size(); ++l) {
    DEPTHKV_CHECK(ratios[l] >= 0 && ratios[l] <= 1, where, "ratios[", l, "] = ", ratios[l], " is outside [0, 1]");
    const std::size_t n = cache.max_length(l);
    const auto k = static_cast<std::size_t>(std::llround(ratios[l] * static_cast<double>(n)));
    out[l] = std::min(n, std::max(k, min_keep));
  }
  return out;
}

std::vector<depthkv::index_t> keep_streaming(std::size_t n, std::size_t keep, std::size_t n_sink) {
  std::vector<depthkv::index_t> out;
  if (keep >= n) {
    for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<depthkv::index_t>(i));
    return out;
  }
  const std::size_t s = std::min(n_sink, keep);
  for (std::size_t i = 0; i < s; ++i) out.push_back(static_cast<depthkv::index_t>(i));
  for (std::size_t i = n - (keep - s); i < n; ++i) out.push_back(static_cast<depthkv::index_t>(i));
  return out;
}

std::vector<float> window_scores(const layer_record& rec, std::size_t g, std::size_t group, std::size_t rows) {
  DEPTHKV_CHECK(rec.window > 0 && rec.probs.size() >= (g + 1) * group, "minillama::window_scores",
                "the record has no observation window (run the prefill with forward_options.window > 0)");
  std::vector<float> s(rows, 0.0f);
  for (std::size_t j = 0; j < group; ++j) {
    const matrix& p = rec.probs[g * group + j];
    const std::size_t m = std::min(rows, static_cast<std::size_t>(p.cols()));
    for (Eigen::Index q = 0; q < p.rows(); ++q)
      for (std::size_t t = 0; t < m; ++t) s[t] += p(q, static_cast<Eigen::Index>(t));
  }
  return s;
}

selection parse_selection(const std::string& name) {
  if (name == "streaming") return selection::streaming;
  if (name == "window" || name == "window_attention") return selection::window_attention;
  throw depthkv::error(concat("minillama::parse_selection: unknown selection '", name, "' (streaming, window)"));
}

layer_hook make_count_pruner(std::vector<std::size_t> keep, selection sel, std::size_t n_sink, std::size_t n_recent) {
  return [keep = std::move(keep), sel, n_sink, n_recent](std::size_t layer, depthkv::kv_cache<float>& cache,
                                                         const layer_record& rec) {
    constexpr const char* where = "minillama::count_pruner";
    DEPTHKV_CHECK(keep.size() == cache.n_layers(), where, "keep has ", keep.size(), " entries, expected n_layers = ",
                  cache.n_layers());
    const std::size_t H = cache.n_kv_heads();
    const std::size_t group = rec.probs.size() / std::max<std::size_t>(H, 1);
    for (std::size_t g = 0; g < H; ++g) {
      const std::size_t n = cache.length(layer, g);
      const std::size_t k = keep[layer];
      if (k >= n) continue;  // keep everything: leave the head untouched
      std::vector<depthkv::index_t> idx;
      if (sel == selection::streaming) {
        idx = keep_streaming(n, k, n_sink);
      } else {
        const std::vector<float> s = window_scores(rec, g, group, n);
        depthkv::topk_options o;
        o.n_sink = std::min(n_sink, k);
        o.n_recent = std::min(n_recent, k - o.n_sink);
        idx.resize(k);
        idx.resize(depthkv::topk(depthkv::span<const float>(s), k, depthkv::span<depthkv::index_t>(idx), o));
      }
      cache.retain(layer, g, depthkv::span<const depthkv::index_t>(idx));
    }
  };
}

streaming_evictor::streaming_evictor(std::vector<std::size_t> budget, std::size_t n_sink)
    : budget_(std::move(budget)), n_sink_(n_sink) {}

void streaming_evictor::operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record&) {
  DEPTHKV_CHECK(layer < budget_.size(), "minillama::streaming_evictor", "no budget for layer ", layer);
  for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
    const std::size_t n = cache.length(layer, g);
    if (n <= budget_[layer]) continue;
    const auto idx = keep_streaming(n, budget_[layer], n_sink_);
    cache.retain(layer, g, depthkv::span<const depthkv::index_t>(idx));
  }
}

h2o_evictor::h2o_evictor(std::vector<std::size_t> budget, std::size_t n_recent)
    : budget_(std::move(budget)), n_recent_(n_recent) {}

void h2o_evictor::operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec) {
  constexpr const char* where = "minillama::h2o_evictor";
  DEPTHKV_CHECK(layer < budget_.size(), where, "no budget for layer ", layer);
  DEPTHKV_CHECK(rec.column_sums.size() == cache.n_kv_heads(), where,
                "the forward call did not record column sums (set forward_options.column_sums)");
  if (acc_.size() != cache.n_layers()) acc_.assign(cache.n_layers(), std::vector<std::vector<float>>(cache.n_kv_heads()));
  for (std::size_t g = 0; g < cache.n_kv_heads(); ++g) {
    auto& a = acc_[layer][g];
    const auto& cs = rec.column_sums[g];
    const std::size_t n = cache.length(layer, g);
    DEPTHKV_CHECK(cs.size() == n && a.size() <= n, where, "layer ", layer, " head ", g,
                  " changed outside this evictor (", a.size(), " tracked rows, ", n, " cached)");
    a.resize(n, 0.0f);  // rows appended by this call start at 0
    for (std::size_t t = 0; t < n; ++t) a[t] += cs[t];
    const std::size_t k = budget_[layer];
    if (n <= k) continue;
    depthkv::topk_options o;
    o.n_recent = std::min(n_recent_, k);
    std::vector<depthkv::index_t> idx(k);
    idx.resize(depthkv::topk(depthkv::span<const float>(a), k, depthkv::span<depthkv::index_t>(idx), o));
    cache.retain(layer, g, depthkv::span<const depthkv::index_t>(idx));
    for (std::size_t j = 0; j < idx.size(); ++j) a[j] = a[idx[j]];
    a.resize(idx.size());
  }
}

}  // namespace minillama
