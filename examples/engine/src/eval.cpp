// minillama evaluation helpers.
#include "minillama/eval.hpp"

#include <cmath>

#include "depthkv/error.hpp"

namespace minillama {

double sequence_nll(const model& m, depthkv::span<const int> tokens) {
  DEPTHKV_CHECK(tokens.size() >= 2, "minillama::sequence_nll", "need >= 2 tokens, got ", tokens.size());
  session s(m, tokens.size());
  forward_options o;
  o.all_logits = true;
  const matrix lg = s.forward(tokens, o);
  double acc = 0;
  for (std::size_t t = 0; t + 1 < tokens.size(); ++t) {
    const auto lp = log_softmax(lg.row(static_cast<Eigen::Index>(t)).data(), static_cast<std::size_t>(lg.cols()));
    acc -= lp[static_cast<std::size_t>(tokens[t + 1])];
  }
  return acc / static_cast<double>(tokens.size() - 1);
}

kl_evaluator::kl_evaluator(const model& m, std::vector<std::vector<int>> sequences, std::size_t prefix_len,
                           std::size_t window, bool column_sums)
    : m_(&m), seqs_(std::move(sequences)), prefix_(prefix_len) {
  constexpr const char* where = "minillama::kl_evaluator";
  DEPTHKV_CHECK(!seqs_.empty(), where, "no sequences");
  DEPTHKV_CHECK(prefix_len >= 1, where, "prefix_len must be >= 1");
  for (std::size_t i = 0; i < seqs_.size(); ++i)
    DEPTHKV_CHECK(seqs_[i].size() >= prefix_len + 2, where, "sequence ", i, " has ", seqs_[i].size(),
                  " tokens; need prefix_len + 2 = ", prefix_len + 2);
  for (const auto& seq : seqs_) {
    session s(m, seq.size());
    forward_options o;
    o.window = window;
    o.cosine = true;
    o.column_sums = column_sums;
    s.forward(depthkv::span<const int>(seq.data(), prefix_), o);
    // Reference: the continuation with the full cache, from a copy of the prefilled session.
    session full = s;
    forward_options c;
    c.all_logits = true;
    const matrix lg = full.forward(depthkv::span<const int>(seq.data() + prefix_, seq.size() - prefix_), c);
    std::vector<std::vector<float>> ref;  // f32 storage: vocab x positions x sequences adds up
    for (Eigen::Index t = 0; t < lg.rows(); ++t) {
      const auto lp = log_softmax(lg.row(t).data(), static_cast<std::size_t>(lg.cols()));
      ref.emplace_back(lp.begin(), lp.end());
    }
    ref_.push_back(std::move(ref));
    prefilled_.push_back(std::move(s));
  }
}

eval_result kl_evaluator::evaluate_one(std::size_t i, const layer_hook& prune) const {
  DEPTHKV_CHECK(i < seqs_.size(), "minillama::kl_evaluator::evaluate_one", "sequence ", i, " out of range (",
                seqs_.size(), ")");
  const auto& seq = seqs_[i];
  session s = prefilled_[i];
  eval_result r;
  r.kv_bytes_full = s.cache().bytes_in_use();
  if (prune) s.prune(prune);
  r.kv_bytes = s.cache().bytes_in_use();
  forward_options c;
  c.all_logits = true;
  const matrix lg = s.forward(depthkv::span<const int>(seq.data() + prefix_, seq.size() - prefix_), c);
  const std::size_t V = static_cast<std::size_t>(lg.cols());
  double kl = 0, nll = 0;
  for (std::size_t t = 0; t < static_cast<std::size_t>(lg.rows()); ++t) {
    const auto lp = log_softmax(lg.row(static_cast<Eigen::Index>(t)).data(), V);
    const auto& ref = ref_[i][t];
    double k = 0;
    for (std::size_t v = 0; v < V; ++v) {
      const double r = ref[v];  // compare at the reference's f32 precision: identical logits give 0
      k += std::exp(r) * (r - static_cast<double>(static_cast<float>(lp[v])));
    }
    kl += std::max(k, 0.0);
    if (prefix_ + t + 1 < seq.size()) nll -= lp[static_cast<std::size_t>(seq[prefix_ + t + 1])];
  }
  r.n_kl = static_cast<std::size_t>(lg.rows());
  r.n_nll = seq.size() - prefix_ - 1;
  r.kl = kl / static_cast<double>(r.n_kl);
  r.nll = nll / static_cast<double>(r.n_nll);
  return r;
}

eval_result kl_evaluator::evaluate(const layer_hook& prune) const {
  eval_result tot;
  double kl = 0, nll = 0;
  for (std::size_t i = 0; i < seqs_.size(); ++i) {
    const eval_result r = evaluate_one(i, prune);
    kl += r.kl * static_cast<double>(r.n_kl);
    nll += r.nll * static_cast<double>(r.n_nll);
    tot.n_kl += r.n_kl;
    tot.n_nll += r.n_nll;
    tot.kv_bytes += r.kv_bytes;
    tot.kv_bytes_full += r.kv_bytes_full;
  }
  tot.kl = kl / static_cast<double>(tot.n_kl);
  tot.nll = nll / static_cast<double>(tot.n_nll);
  return tot;
}

eval_result kl_evaluator::full() const { return evaluate(layer_hook{}); }

eval_result kl_to_full(const model& m, depthkv::span<const int> tokens, std::size_t prefix_len, const layer_hook& prune,
                       std::size_t window) {
  kl_evaluator ev(m, {std::vector<int>(tokens.begin(), tokens.end())}, prefix_len, window);
  return ev.evaluate(prune);
}

}  // namespace minillama
