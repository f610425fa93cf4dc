// minillama pruning glue.
#include "minillama/evict.hpp"

#include <algorithm>
#include <cmath>

#include "depthkv/error.hpp"

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

streaming_evictor::streaming_evictor(std::vector<std::size_t> budget, std::size_t n_sink, depthkv::decode_options opt)
    : budget_(std::move(budget)),
      ev_(depthkv::layers{budget_.size()}, depthkv::streaming{n_sink, 0}, opt) {}

void streaming_evictor::operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record&) {
  DEPTHKV_CHECK(layer < budget_.size(), "minillama::streaming_evictor", "no budget for layer ", layer);
  (void)ev_.step(cache, layer, budget_[layer], ws_);
}

h2o_evictor::h2o_evictor(std::vector<std::size_t> budget, std::size_t n_recent, depthkv::decode_options opt)
    : budget_(std::move(budget)), n_recent_(n_recent), opt_(opt) {}

void h2o_evictor::operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec) {
  constexpr const char* where = "minillama::h2o_evictor";
  DEPTHKV_CHECK(layer < budget_.size(), where, "no budget for layer ", layer);
  DEPTHKV_CHECK(rec.column_sums.size() == cache.n_kv_heads(), where,
                "the forward call did not record column sums (set forward_options.column_sums)");
  if (!ev_) {
    state_ = depthkv::h2o_state(cache.n_layers(), cache.n_kv_heads());
    ev_.emplace(depthkv::layers{budget_.size()}, depthkv::h2o{0, n_recent_, &state_}, opt_);
  }
  // The record's column sums cover every row the head holds now (new rows included).
  for (std::size_t g = 0; g < cache.n_kv_heads(); ++g)
    state_.accumulate(layer, g, depthkv::span<const float>(rec.column_sums[g]));
  (void)ev_->step(cache, layer, budget_[layer], ws_);
}

}  // namespace minillama
