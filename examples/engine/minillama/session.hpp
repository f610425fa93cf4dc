// minillama::session: one sequence's forward pass (prefill and decode) over a depthkv cache.
//
// The KV cache is a depthkv::kv_cache<float>: per (layer, kv head) rows in ascending original
// position. Keys are rotated (RoPE) with their original position BEFORE they are cached, so
// pruning never re-rotates anything, and heads may hold different rows and lengths. A query
// at position p attends to every cached row of its kv head whose position is <= p, and in a
// local layer (config::window(l) = W > 0) only to those with p - position < W: there the cache
// is a ring of capacity 2W that keeps the last W tokens between calls (kv_cache::drop_before).
#pragma once

#include <cstddef>
#include <functional>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/types.hpp"
#include "minillama/model.hpp"

namespace minillama {

// What one forward call measured in one layer (filled as forward_options asks).
struct layer_record {
  // Observation window: the last `window` queries of the call (fewer if the call was shorter).
  std::size_t window = 0;
  // probs[h]: [window][rows of kv head h / group at the time] softmax attention of query head h
  // (zeros beyond each query's causal horizon). queries[h]: [window][head_dim], after RoPE.
  std::vector<matrix> probs;
  std::vector<matrix> queries;
  std::vector<depthkv::pos_t> window_positions;  // [window] positions of those queries
  // column_sums[g][t]: attention mass that row t of kv head g received in this call, summed over
  // the call's queries and the query heads of group g (what H2O accumulates).
  std::vector<std::vector<float>> column_sums;
  // Mean over the call's tokens of cos(h_in, h_in + attn(h_in)) and cos(h_in, layer output),
  // where h_in is the residual stream entering the layer.
  double cos_attention = 0;
  double cos_layer = 0;
};

// Called after layer `layer` finished attention for a forward call; may shrink the cache of
// that layer (retain rows, per head). The record holds what forward_options asked for.
using layer_hook = std::function<void(std::size_t layer, depthkv::kv_cache<float>& cache, const layer_record& rec)>;

struct forward_options {
  bool all_logits = false;    // logits of every token of the call (else only the last)
  std::size_t window = 0;     // record probs/queries of the last `window` queries per layer
  bool column_sums = false;   // record per-row attention mass
  bool cosine = false;        // record the cosine statistics
  layer_hook hook;            // optional, see layer_hook
};

class session {
 public:
  // The model must outlive the session. initial_capacity: tokens reserved per head of the global
  // layers (local layers reserve 2 * window).
  explicit session(const model& m, std::size_t initial_capacity = 0);

  // Runs `tokens` at positions position(), position()+1, ... Returns logits [n][vocab] if
  // opt.all_logits else [1][vocab] (the last token's). Token ids must be < vocab_size.
  matrix forward(depthkv::span<const int> tokens, const forward_options& opt = {});
  // Prefill convenience: forward, logits of the last token.
  vector prefill(depthkv::span<const int> tokens, const forward_options& opt = {});
  // Decode one token; logits [vocab].
  vector decode(int token, const forward_options& opt = {});

  // Tokens processed so far (the next token's position).
  std::size_t position() const noexcept { return pos_; }
  // The record of `layer` from the last forward call.
  const layer_record& record(std::size_t layer) const { return records_.at(layer); }
  const std::vector<layer_record>& records() const noexcept { return records_; }

  depthkv::kv_cache<float>& cache() noexcept { return cache_; }
  const depthkv::kv_cache<float>& cache() const noexcept { return cache_; }
  const model& weights() const noexcept { return *m_; }
  const config& cfg() const noexcept { return m_->cfg; }

  // Calls fn(layer, cache, record of the last forward) for every layer: prune after prefill.
  void prune(const layer_hook& fn);
  // Drops every cached token and restarts at position 0 (capacity kept).
  void reset();
  // Sets the next token's position, for callers that fill cache() directly (benchmarks, engines
  // restoring a cache); must be above every cached position. Throws depthkv::error otherwise.
  void set_position(std::size_t p);
  // Wall time spent in attention (scores, softmax, weighted sum) since construction, seconds.
  double attention_seconds() const noexcept { return attn_seconds_; }

 private:
  const model* m_;
  depthkv::kv_cache<float> cache_;
  std::size_t pos_ = 0;
  std::vector<layer_record> records_;
  double attn_seconds_ = 0;
};

// Per query head: mean over the record's window queries of the entropy (nats) of its attention
// distribution; empty when no window was recorded. A proxy-profiler statistic.
std::vector<double> attention_entropy(const layer_record& rec);

// Index of the largest logit (first on ties).
int argmax(const vector& logits);
// Samples from softmax(logits / temperature) with the generator state `rng_state` (splitmix64);
// temperature <= 0 means argmax.
int sample(const vector& logits, float temperature, std::uint64_t& rng_state);
// log softmax of a logit row, in double.
std::vector<double> log_softmax(const float* logits, std::size_t n);

}  // namespace minillama
