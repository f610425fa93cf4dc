// minillama pruning glue: turns keep counts into depthkv retain calls, with the scoring the
// engine can do by itself (streaming by position; observation-window attention, SnapKV-like
// without pooling), and decode-time evictors (streaming, H2O) that keep per-head lengths.
// These are the engine side of the hooks; depthkv's own policies plug in the same way.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/types.hpp"
#include "minillama/session.hpp"

namespace minillama {

// Per-layer keep counts from per-layer keep ratios of the cache's current lengths:
// round(ratio * length(layer)), at least min_keep (capped at the length). ratios in [0, 1].
std::vector<std::size_t> keep_counts(const depthkv::kv_cache<float>& cache, depthkv::span<const double> ratios,
                                     std::size_t min_keep = 1);

// Rows to keep of one head of n rows: the first n_sink and the last keep - n_sink (ascending).
std::vector<depthkv::index_t> keep_streaming(std::size_t n, std::size_t keep, std::size_t n_sink);

// Score of each row of kv head g of the record's layer: attention mass from the observation
// window (summed over window queries and the query heads of the group). rows: the head's length.
std::vector<float> window_scores(const layer_record& rec, std::size_t g, std::size_t group, std::size_t rows);

enum class selection { streaming, window_attention };
selection parse_selection(const std::string& name);  // "streaming" | "window" (throws depthkv::error)

// A layer_hook that keeps keep[layer] rows of every head of every layer, chosen by `sel`
// (always keeping the first n_sink and last n_recent rows). A count >= the length keeps all
// rows (a no-op: bit-identical results). window_attention needs forward_options.window > 0.
layer_hook make_count_pruner(std::vector<std::size_t> keep, selection sel, std::size_t n_sink = 4,
                             std::size_t n_recent = 8);

// Decode-time eviction, used as forward_options.hook on every call (prefill and decode).
// Streaming: each head keeps at most budget[layer] rows: the first n_sink and the most recent.
class streaming_evictor {
 public:
  streaming_evictor(std::vector<std::size_t> budget, std::size_t n_sink);
  void operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec);
  layer_hook hook() { return [this](std::size_t l, depthkv::kv_cache<float>& c, const layer_record& r) { (*this)(l, c, r); }; }

 private:
  std::vector<std::size_t> budget_;
  std::size_t n_sink_;
};

// H2O: accumulates the attention mass each cached row receives (needs forward_options.column_sums)
// and keeps, per head, the budget[layer] rows with the most mass plus the n_recent newest.
// Heads evict independently, so their lengths differ.
class h2o_evictor {
 public:
  h2o_evictor(std::vector<std::size_t> budget, std::size_t n_recent);
  void operator()(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec);
  layer_hook hook() { return [this](std::size_t l, depthkv::kv_cache<float>& c, const layer_record& r) { (*this)(l, c, r); }; }

 private:
  std::vector<std::size_t> budget_;
  std::size_t n_recent_;
  std::vector<std::vector<std::vector<float>>> acc_;  // [layer][head][row]
};

}  // namespace minillama
