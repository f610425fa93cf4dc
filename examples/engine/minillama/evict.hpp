// minillama decode-time eviction: layer hooks over depthkv's decode API (include/depthkv/decode.hpp),
// run after every layer's attention in every forward call (prefill and decode), holding each
// layer at its budget with amortised (batch) eviction. The engine adds only what it knows: the
// attention mass its forward pass recorded (layer_record::column_sums) for H2O.
#pragma once

#include <cstddef>
#include <optional>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/decode.hpp"
#include "depthkv/prune.hpp"
#include "depthkv/score/policies.hpp"
#include "depthkv/types.hpp"
#include "minillama/session.hpp"

namespace minillama {

// Per-layer keep counts from per-layer keep ratios of the cache's current lengths:
// round(ratio * length(layer)), at least min_keep (capped at the length). ratios in [0, 1].
std::vector<std::size_t> keep_counts(const depthkv::kv_cache<float>& cache, depthkv::span<const double> ratios,
                                     std::size_t min_keep = 1);

// Streaming (StreamingLLM): each head keeps the first n_sink rows and the most recent, at most
// budget[layer] + slack rows, pruned back to budget[layer] when over (depthkv::streaming).
class streaming_evictor {
 public:
  streaming_evictor(std::vector<std::size_t> budget, std::size_t n_sink, depthkv::decode_options opt = {});
  void operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec);
  layer_hook hook() { return [this](std::size_t l, depthkv::kv_cache<float>& c, const layer_record& r) { (*this)(l, c, r); }; }

 private:
  std::vector<std::size_t> budget_;
  depthkv::decode_evictor<depthkv::streaming> ev_;
  depthkv::prune_workspace ws_;
};

// H2O: accumulates the attention mass each cached row receives (needs forward_options.column_sums)
// into a depthkv::h2o_state and keeps, per head, the rows with the most mass plus the n_recent
// newest (depthkv::h2o), at most budget[layer] + slack rows. Heads evict independently.
class h2o_evictor {
 public:
  h2o_evictor(std::vector<std::size_t> budget, std::size_t n_recent, depthkv::decode_options opt = {});
  h2o_evictor(const h2o_evictor&) = delete;  // the evictor's policy points into state_
  h2o_evictor& operator=(const h2o_evictor&) = delete;
  void operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec);
  layer_hook hook() { return [this](std::size_t l, depthkv::kv_cache<float>& c, const layer_record& r) { (*this)(l, c, r); }; }

 private:
  std::vector<std::size_t> budget_;
  std::size_t n_recent_;
  depthkv::decode_options opt_;
  depthkv::h2o_state state_;  // sized on the first call (the cache's shape)
  std::optional<depthkv::decode_evictor<depthkv::h2o>> ev_;  // built with state_ on the first call
  depthkv::prune_workspace ws_;
};

}  // namespace minillama
