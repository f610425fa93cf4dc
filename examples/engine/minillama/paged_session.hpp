// minillama::paged_session: one sequence's forward pass over a shared depthkv::paged_cache, the
// memory layout of serving engines (fixed-size blocks from one pool per layer, a block table per
// sequence, layer and kv head). Many sessions share one cache; each adds its sequence on
// construction and returns every block on destruction.
//
// Attention copies each kv head's blocks into a dense scratch (paged_cache::copy_head) and runs
// the same code as minillama::session: the same cache rows give bit-identical logits. A serving
// engine's paged-attention kernel reads the pages in place instead; the copy is the reference
// engine's price for sharing one attention path (bench_engine measures it).
//
// Local layers (config::window(l) = W > 0) return every block whose rows are all outside the
// window (paged_cache::drop_blocks_before): between calls a head keeps the last W tokens plus
// at most block_size - 1 older rows of its first block, which attention masks.
#pragma once

#include <cstddef>
#include <vector>

#include "depthkv/cache/paged_cache.hpp"
#include "depthkv/types.hpp"
#include "minillama/model.hpp"
#include "minillama/session.hpp"

namespace minillama {

class paged_session {
 public:
  using cache_type = depthkv::paged_cache<float>;

  // The model and the cache must outlive the session; the cache's shape must match the model
  // (layers, kv heads, head_dim), else depthkv::error.
  paged_session(const model& m, cache_type& cache);
  ~paged_session();
  paged_session(const paged_session&) = delete;
  paged_session& operator=(const paged_session&) = delete;

  // As session::forward. opt.hook must be empty (prune between calls instead: prune_paged_*).
  // Throws depthkv::error, changing nothing, when a layer's pool has too few free blocks for the
  // tokens (fits() says so beforehand).
  matrix forward(depthkv::span<const int> tokens, const forward_options& opt = {});
  vector prefill(depthkv::span<const int> tokens, const forward_options& opt = {});
  vector decode(int token, const forward_options& opt = {});

  // Blocks of every layer a forward call of n tokens takes, and whether every pool has them.
  std::size_t blocks_needed(std::size_t n_tokens) const;
  bool fits(std::size_t n_tokens) const;
  // Blocks the sequence holds over all layers.
  std::size_t blocks_held() const;

  std::size_t position() const noexcept { return pos_; }
  // Sets the next token's position, for callers that fill the cache directly (benchmarks); must
  // be above every cached position of the sequence. Throws depthkv::error otherwise.
  void set_position(std::size_t p);
  const layer_record& record(std::size_t layer) const { return records_.at(layer); }
  const std::vector<layer_record>& records() const noexcept { return records_; }
  cache_type& cache() noexcept { return *cache_; }
  const cache_type& cache() const noexcept { return *cache_; }
  cache_type::sequence_id sequence() const noexcept { return seq_; }
  const model& weights() const noexcept { return *m_; }
  const config& cfg() const noexcept { return m_->cfg; }
  double attention_seconds() const noexcept { return attn_seconds_; }

 private:
  friend struct paged_store;
  const model* m_;
  cache_type* cache_;
  cache_type::sequence_id seq_;
  std::size_t pos_ = 0;
  std::vector<layer_record> records_;
  double attn_seconds_ = 0;
  std::vector<float> keys_, values_;  // one head's rows gathered for attention
  std::vector<depthkv::pos_t> positions_;
};

}  // namespace minillama
