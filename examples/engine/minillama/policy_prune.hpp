// minillama <-> depthkv pipeline: prune the engine's cache with any depthkv scoring policy
// (include/depthkv/prune.hpp) to per-layer keep counts, using the observation-window queries
// and attention column sums the session recorded during prefill.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/prune.hpp"
#include "depthkv/prune_paged.hpp"
#include "depthkv/score/policies.hpp"
#include "minillama/eval.hpp"
#include "minillama/evict.hpp"
#include "minillama/paged_session.hpp"
#include "minillama/session.hpp"

namespace minillama {

// How each layer of the model attends, as depthkv's allocators take it: empty when every layer
// is global, else [layer] global() or sliding(window) (a hybrid model's local layers).
inline std::vector<depthkv::layer_attention> attention_of(const config& c) {
  std::vector<depthkv::layer_attention> a;
  if (!c.has_local_layers()) return a;
  for (std::size_t l = 0; l < static_cast<std::size_t>(c.n_layers); ++l) {
    const int W = c.window(l);
    a.push_back(W > 0 ? depthkv::layer_attention::sliding(depthkv::window_tokens{static_cast<std::size_t>(W)})
                      : depthkv::layer_attention::global());
  }
  return a;
}

// Dense [n_heads][w][head_dim] copy of a record's window queries, in the form depthkv wants.
struct window_query_buffer {
  std::vector<float> data;
  depthkv::layer_queries view;
};
inline window_query_buffer window_queries_of(const layer_record& rec) {
  window_query_buffer b;
  if (rec.window == 0 || rec.queries.empty()) return b;
  const std::size_t H = rec.queries.size(), w = rec.window, hd = static_cast<std::size_t>(rec.queries[0].cols());
  b.data.resize(H * w * hd);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t i = 0; i < w; ++i)
      for (std::size_t d = 0; d < hd; ++d)
        b.data[(h * w + i) * hd + d] = rec.queries[h](static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(d));
  const depthkv::kv_shape shape(depthkv::heads{H}, depthkv::tokens{w}, depthkv::dim{hd});
  b.view.queries = depthkv::window_queries::dense(b.data.data(), shape);
  b.view.query_positions = depthkv::span<const depthkv::pos_t>(rec.window_positions);
  return b;
}

// Calls fn(policy, queries) with the depthkv policy `id` configured by cfg for `layer`, fed
// from the prefill's record: the window queries (snapkv, tova) and, for h2o, an h2o_state of
// the record's column sums (cfg.state is ignored).
template <class F>
void with_recorded_policy(depthkv::policy_id id, const depthkv::policy_config& cfg, const layer_record& rec,
                          std::size_t layer, std::size_t n_layers, std::size_t n_kv_heads, F&& fn) {
  const window_query_buffer q = window_queries_of(rec);
  depthkv::policy_config c = cfg;
  depthkv::h2o_state state;
  if (id == depthkv::policy_id::h2o) {
    DEPTHKV_CHECK(rec.column_sums.size() == n_kv_heads, "minillama::policy_pruner",
                  "h2o needs attention column sums: run the prefill with forward_options.column_sums = true");
    state = depthkv::h2o_state(n_layers, n_kv_heads);
    for (std::size_t g = 0; g < n_kv_heads; ++g) state.accumulate(layer, g, depthkv::span<const float>(rec.column_sums[g]));
    c.state = &state;
  }
  depthkv::visit_policy(id, c, [&](const auto& policy) { fn(policy, q.view); });
}

// A layer_hook that prunes layer l to keep[l] tokens per kv head with the depthkv policy `name`
// (snapkv, h2o, tova, knorm, streaming, random), configured by cfg. snapkv/tova need the prefill
// recorded with forward_options.window > 0; h2o needs forward_options.column_sums (the hook
// builds the h2o_state from the record; cfg.state is ignored).
inline layer_hook make_policy_pruner(std::vector<std::size_t> keep, const std::string& name,
                                     depthkv::policy_config cfg = {}, depthkv::prune_options opt = {}) {
  const depthkv::policy_id id = depthkv::policy_from_name(name);
  auto ws = std::make_shared<depthkv::prune_workspace>();
  return [keep = std::move(keep), id, cfg, opt, ws](std::size_t layer, depthkv::kv_cache<float>& cache,
                                                    const layer_record& rec) {
    DEPTHKV_CHECK(keep.size() == cache.n_layers(), "minillama::policy_pruner", "keep has ", keep.size(),
                  " entries, expected n_layers = ", cache.n_layers());
    with_recorded_policy(id, cfg, rec, layer, cache.n_layers(), cache.n_kv_heads(),
                         [&](const auto& policy, const depthkv::layer_queries& q) {
                           depthkv::prune_layer(cache, layer, keep[layer], policy, *ws, q, opt);
                         });
  };
}

// Calls prune_one(layer, count, policy, queries) for every layer of a paged session with the
// policy `name` fed from the prefill's records; returns the sum of what the calls return.
template <class F>
std::size_t prune_paged_layers(paged_session& s, const std::vector<std::size_t>& counts, const std::string& name,
                               const depthkv::policy_config& cfg, const char* where, F&& prune_one) {
  const auto& sh = s.cache().shape();
  DEPTHKV_CHECK(counts.size() == sh.n_layers, where, "the counts have ", counts.size(), " entries, expected n_layers = ",
                sh.n_layers);
  const depthkv::policy_id id = depthkv::policy_from_name(name);
  std::size_t released = 0;
  for (std::size_t l = 0; l < sh.n_layers; ++l)
    with_recorded_policy(id, cfg, s.record(l), l, sh.n_layers, sh.n_kv_heads,
                         [&](const auto& policy, const depthkv::layer_queries& q) {
                           released += prune_one(l, counts[l], policy, q);
                         });
  return released;
}

// Prunes every layer of a paged session's sequence after its prefill, token-granular
// (depthkv::prune_paged): keep[l] tokens per kv head, the emptied blocks back to the pool.
// Same policies and record needs as make_policy_pruner. Returns the blocks returned.
inline std::size_t prune_paged_with_policy(paged_session& s, const std::vector<std::size_t>& keep,
                                           const std::string& name, depthkv::policy_config cfg = {},
                                           depthkv::prune_options opt = {}) {
  depthkv::paged_prune_workspace<float> ws;
  return prune_paged_layers(s, keep, name, cfg, "minillama::prune_paged_with_policy",
                            [&](std::size_t l, std::size_t k, const auto& policy, const depthkv::layer_queries& q) {
                              return depthkv::prune_paged(s.cache(), s.sequence(), l, k, policy, ws, q, opt);
                            });
}

// The same, block-granular (depthkv::prune_paged_blocks): keep_blocks[l] whole blocks per kv head
// ranked by the aggregated scores of their tokens; no row moves. Returns the blocks returned.
inline std::size_t prune_paged_blocks_with_policy(paged_session& s, const std::vector<std::size_t>& keep_blocks,
                                                  const std::string& name, depthkv::policy_config cfg = {},
                                                  depthkv::block_score aggregate = depthkv::block_score::sum) {
  depthkv::paged_prune_workspace<float> ws;
  return prune_paged_layers(s, keep_blocks, name, cfg, "minillama::prune_paged_blocks_with_policy",
                            [&](std::size_t l, std::size_t b, const auto& policy, const depthkv::layer_queries& q) {
                              return depthkv::prune_paged_blocks(s.cache(), s.sequence(), l, depthkv::blocks{b}, policy,
                                                                 ws, q, aggregate);
                            });
}

// Prunes every layer of the session's cache (after prefill) with the policy; see make_policy_pruner.
inline void prune_with_policy(session& s, std::vector<std::size_t> keep, const std::string& name,
                              depthkv::policy_config cfg = {}, depthkv::prune_options opt = {}) {
  s.prune(make_policy_pruner(std::move(keep), name, cfg, opt));
}

// The loss callback of depthkv's profilers (profile_ablation): per-layer keep ratios -> mean
// KL divergence to the full cache over the evaluator's sequences, pruning at the end of the
// prefill with the depthkv policy `name`. Keep counts: round(ratio * prefix length), at least
// min_keep (policies throw if a count is below their protected sink + recent rows).
inline std::function<double(depthkv::span<const double>)> make_kl_loss(const kl_evaluator& ev, std::string name,
                                                                       depthkv::policy_config cfg = {},
                                                                       std::size_t min_keep = 1,
                                                                       depthkv::prune_options opt = {}) {
  return [&ev, name = std::move(name), cfg, min_keep, opt](depthkv::span<const double> ratios) {
    const std::vector<std::size_t> keep = keep_counts(ev.prefilled(0).cache(), ratios, min_keep);
    return ev.evaluate(make_policy_pruner(keep, name, cfg, opt)).kl;
  };
}

}  // namespace minillama
