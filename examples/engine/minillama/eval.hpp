// minillama evaluation: next-token NLL, and KL divergence of a pruned cache to the full cache
// (the loss a depthkv profiler calls). Setting: prefill a prefix, prune at the end of prefill,
// then score the continuation.
#pragma once

#include <cstddef>
#include <vector>

#include "minillama/session.hpp"

namespace minillama {

struct eval_result {
  double kl = 0;           // mean over scored positions of KL(full || pruned), nats
  double nll = 0;          // mean next-token NLL of the pruned run, nats
  std::size_t n_kl = 0;    // positions averaged for kl
  std::size_t n_nll = 0;   // positions averaged for nll
  std::size_t kv_bytes = 0;       // KV bytes in use right after pruning (summed over sequences)
  std::size_t kv_bytes_full = 0;  // the same without pruning
};

// Mean NLL of tokens[1..n) given their prefixes, full cache. Needs >= 2 tokens.
double sequence_nll(const model& m, depthkv::span<const int> tokens);

// Runs every sequence's prefix once (full cache) and remembers the full-cache distribution of
// every continuation position, so each evaluate() costs one prune + one continuation pass.
// Positions scored: KL at each continuation token t in [prefix_len, n) (its next-token
// distribution), NLL at t in [prefix_len, n - 1) against tokens[t + 1].
class kl_evaluator {
 public:
  // window: observation-window queries recorded at the end of prefill (snapkv, tova);
  // column_sums: the prefill's attention mass per cached row (h2o).
  kl_evaluator(const model& m, std::vector<std::vector<int>> sequences, std::size_t prefix_len,
               std::size_t window = 32, bool column_sums = true);

  std::size_t size() const noexcept { return seqs_.size(); }
  std::size_t prefix_len() const noexcept { return prefix_; }
  // The session right after prefilling sequence i (full cache, records of the window).
  const session& prefilled(std::size_t i) const { return prefilled_.at(i); }

  // Copies each prefilled session, calls prune(layer, cache, record) for every layer, scores the
  // continuation. Mean over all scored positions of all sequences.
  eval_result evaluate(const layer_hook& prune) const;
  // The same for sequence i alone (for confidence intervals over sequences).
  eval_result evaluate_one(std::size_t i, const layer_hook& prune) const;
  // Full-cache NLL of the continuations (KL = 0).
  eval_result full() const;

 private:
  const model* m_;
  std::vector<std::vector<int>> seqs_;
  std::size_t prefix_;
  std::vector<session> prefilled_;
  std::vector<std::vector<std::vector<float>>> ref_;  // [seq][position][vocab] full-cache log-probs
};

// One-shot version for a single sequence (no caching).
eval_result kl_to_full(const model& m, depthkv::span<const int> tokens, std::size_t prefix_len, const layer_hook& prune,
                       std::size_t window = 32);

}  // namespace minillama
