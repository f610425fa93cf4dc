#include "grid.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common.hpp"
#include "depthkv/budget/allocate.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

namespace eval {
namespace {

// Metrics of one continuation pass against the full-cache reference.
struct seq_metrics {
  double kl = 0, nll = 0, acc = NAN;
  std::size_t correct = 0, queries = 0;
};

struct reference {
  std::vector<std::vector<float>> logp;  // [position][vocab] full-cache log-probs
  int first_argmax = -1;                 // full-cache prediction of the first continuation token
};

// Mean KL(full || pruned) and NLL over the continuation; a retrieval query is correct when every
// answer digit is the argmax given the true prefix.
seq_metrics score(const sample& s, const minillama::matrix& lg, const reference& ref) {
  seq_metrics m;
  const std::size_t V = static_cast<std::size_t>(lg.cols()), R = static_cast<std::size_t>(lg.rows());
  std::vector<int> am(R);
  double kl = 0, nll = 0;
  for (std::size_t t = 0; t < R; ++t) {
    const auto lp = minillama::log_softmax(lg.row(static_cast<Eigen::Index>(t)).data(), V);
    double k = 0;
    // Compared at the reference's f32 precision, as minillama::kl_evaluator does, so identical
    // logits give exactly 0.
    for (std::size_t v = 0; v < V; ++v) {
      const double r = ref.logp[t][v];
      k += std::exp(r) * (r - static_cast<double>(static_cast<float>(lp[v])));
    }
    kl += std::max(k, 0.0);
    if (s.prefix + t + 1 < s.tokens.size()) nll -= lp[static_cast<std::size_t>(s.tokens[s.prefix + t + 1])];
    am[t] = minillama::argmax(lg.row(static_cast<Eigen::Index>(t)).transpose());
  }
  m.kl = kl / static_cast<double>(R);
  m.nll = nll / static_cast<double>(R - 1);
  for (const auto& q : s.answers) {
    bool ok = true;
    for (std::size_t j : q) {
      const int pred = j == 0 ? ref.first_argmax : am[j - 1];
      ok = ok && pred == s.tokens[s.prefix + j];
    }
    m.correct += ok;
    ++m.queries;
  }
  if (m.queries) m.acc = static_cast<double>(m.correct) / static_cast<double>(m.queries);
  return m;
}

void add(cell& x, const seq_metrics& m, std::size_t bytes, std::size_t bytes_full) {
  x.kl.push_back(m.kl);
  x.nll.push_back(m.nll);
  x.acc.push_back(m.acc);
  x.correct += m.correct;
  x.queries += m.queries;
  x.kv_bytes += static_cast<double>(bytes);
  x.kv_bytes_full += static_cast<double>(bytes_full);
}

// One test sequence, prefilled with the full cache; every cell prunes a copy of `pre`.
struct sequence_run {
  const sample& s;
  std::size_t index;
  depthkv::span<const int> cont;
  minillama::session pre;
  std::vector<std::size_t> lengths;  // per layer, after the prefill
  reference ref;
};

// The continuation pass: the logits of every token.
minillama::forward_options continuation_options() {
  minillama::forward_options o;
  o.all_logits = true;
  return o;
}

// Prefills sequence i; scores the full cache into `full` and keeps its log-probs as reference.
sequence_run prefill(const run_context& c, const std::vector<sample>& test, std::size_t i, cell& full) {
  const sample& s = test[i];
  sequence_run r{s, i, depthkv::span<const int>(s.tokens.data() + s.prefix, s.tokens.size() - s.prefix),
                 minillama::session(c.model, s.tokens.size()), std::vector<std::size_t>(c.n_layers), reference{}};
  minillama::forward_options fo;
  fo.window = std::max<std::size_t>(c.o.window, 1);
  fo.column_sums = c.need_h2o;
  r.ref.first_argmax = minillama::argmax(r.pre.prefill(depthkv::span<const int>(s.tokens.data(), s.prefix), fo));
  for (std::size_t l = 0; l < c.n_layers; ++l) r.lengths[l] = r.pre.cache().length(l);
  minillama::session f = r.pre;
  const minillama::matrix lg = f.forward(r.cont, continuation_options());
  for (Eigen::Index t = 0; t < lg.rows(); ++t) {
    const auto lp = minillama::log_softmax(lg.row(t).data(), static_cast<std::size_t>(lg.cols()));
    r.ref.logp.emplace_back(lp.begin(), lp.end());
  }
  const std::size_t bytes = r.pre.cache().bytes_in_use();
  add(full, score(s, lg, r.ref), bytes, bytes);
  return r;
}

// What one cell did to one sequence, for the --check invariants.
struct cell_outcome {
  seq_metrics m;
  std::size_t before = 0, after = 0;  // KV bytes
  std::size_t after_local = 0;        // of after: the sliding-window layers'
  std::size_t want = 0;               // tokens the allocation request keeps (depthkv::resolve)
  std::size_t kept = 0, total = 0;    // tokens
};

void fail_check(grid_result& g, const std::string& msg) {
  std::fprintf(stderr, "eval: CHECK FAILED: %s\n", msg.c_str());
  g.broken = true;
}

// --check: the allocation keeps the budget, the KV bytes follow the kept tokens, the metrics are
// finite, and keeping everything reproduces the full cache exactly.
void check_cell(const cell& x, const cell_outcome& r, const cell& full, grid_result& g) {
  const std::string name = x.policy + "/" + x.allocator;
  // Without sliding layers the budget is the keep ratio of all tokens, rounded half up.
  const std::size_t want =
      r.want ? r.want : static_cast<std::size_t>(std::floor(x.budget * static_cast<double>(r.total) + 0.5));
  if (r.kept != want)
    fail_check(g, name + " at " + fmt(x.budget) + ": allocation keeps " + std::to_string(r.kept) +
                      " tokens, budget is " + std::to_string(want));
  if (r.after * r.total != r.before * r.kept)
    fail_check(g, name + ": KV bytes " + std::to_string(r.after) + "/" + std::to_string(r.before) +
                      " differ from kept tokens " + std::to_string(r.kept) + "/" + std::to_string(r.total));
  const seq_metrics& m = r.m;
  if (!(std::isfinite(m.kl) && m.kl >= 0 && std::isfinite(m.nll)))
    fail_check(g, name + ": non-finite or negative KL/NLL");
  const bool same_acc = m.acc == full.acc.back() || (std::isnan(m.acc) && std::isnan(full.acc.back()));
  if (x.budget == 1.0 && (m.kl != 0.0 || !same_acc || m.nll != full.nll.back()))
    fail_check(g, name + " at keep 1: KL " + fmt(m.kl) + " (want exactly 0), NLL " + fmt(m.nll) + " vs " +
                      fmt(full.nll.back()));
}

// Prunes a copy of the prefilled cache to `keep` with the cell's policy and scores it.
cell_outcome run_cell(const run_context& c, const sequence_run& r, const cell& x, const std::vector<std::size_t>& keep) {
  cell_outcome out;
  minillama::session ps = r.pre;
  out.before = ps.cache().bytes_in_use();
  ps.prune(minillama::make_policy_pruner(keep, x.policy, c.pcfg));
  out.after = ps.cache().bytes_in_use();
  for (std::size_t l = 0; l < c.n_layers; ++l)
    if (c.is_local(l)) out.after_local += ps.cache().bytes_in_use(l);
  out.m = score(r.s, ps.forward(r.cont, continuation_options()), r.ref);
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    out.kept += std::min(keep[l], r.lengths[l]);
    out.total += r.lengths[l];
  }
  return out;
}

// Cell x on sequence r: skipped (noted once) when its allocation fails, else run and recorded.
// Returns the progress label.
std::string run_and_record(const run_context& c, const sequence_run& r, const profile_set& profiles,
                           allocation_cache& alloc, cell& x, grid_result& g) {
  std::vector<std::size_t> keep;
  try {
    keep = alloc.get(x, r.lengths);
  } catch (const depthkv::error& e) {
    if (x.note.empty()) {
      x.note = e.what();
      std::fprintf(stderr, "\neval: skipping %s/%s at %.2f: %s\n", x.policy.c_str(), x.allocator.c_str(), x.budget,
                   e.what());
    }
    return "";
  }
  cell_outcome out = run_cell(c, r, x, keep);
  if (c.hybrid()) out.want = depthkv::resolve(alloc.request(x, r.lengths)).budget;
  add(x, out.m, out.after, out.before);
  x.kv_bytes_local += static_cast<double>(out.after_local);
  if (r.index == 0) {
    x.kept = out.kept;
    x.total = out.total;
    if (profiles.ablation.count(x.policy)) {  // over the profiled layers (a hybrid model's global ones)
      std::vector<std::size_t> layers, len, kept;
      for (std::size_t l = 0; l < c.n_layers; ++l)
        if (!profiles.ablation.at(x.policy).points(l).empty()) {
          layers.push_back(l);
          len.push_back(r.lengths[l]);
          kept.push_back(keep[l]);
        }
      x.predicted = depthkv::predicted_loss(
          depthkv::select_layers(profiles.ablation.at(x.policy), depthkv::span<const std::size_t>(layers)),
          depthkv::span<const std::size_t>(len), depthkv::span<const std::size_t>(kept));
    }
  }
  if (c.o.check) check_cell(x, out, g.full, g);
  return "seq " + std::to_string(r.index) + " " + x.policy + "/" + x.allocator + " " + fmt(x.budget, "%.2f");
}

}  // namespace

depthkv::allocation_request allocation_cache::request(const cell& x, const std::vector<std::size_t>& lengths) const {
  depthkv::allocation_request req;
  req.lengths = lengths;
  req.minimums.assign(1, c_.min_keep);
  req.budget = depthkv::global_budget::ratio(x.budget);
  req.attention = c_.attention;
  req.scope = c_.scope;
  return req;
}

const std::vector<std::size_t>& allocation_cache::get(const cell& x, const std::vector<std::size_t>& lengths) {
  std::string key = x.policy + "|" + x.allocator + "|" + fmt(x.budget, "%.17g");
  for (auto L : lengths) {  // appended piecewise: GCC 12 -Wrestrict misfires on "|" + to_string() in C++20
    key += '|';
    key += std::to_string(L);
  }
  auto it = cache_.find(key);
  if (it != cache_.end()) return it->second;
  const depthkv::allocation_request req = request(x, lengths);
  depthkv::allocator_params ap;
  ap.pyramid_beta = c_.o.beta;
  ap.proportional.exponent = c_.o.exponent;
  const allocator_entry& a = find_allocator(x.allocator);
  std::vector<std::size_t> keep = allocate(a, req, profiles_.for_cell(a, x.policy), ap);
  return cache_.emplace(key, std::move(keep)).first->second;
}

grid_result run_grid(const run_context& c, const std::vector<sample>& test, const profile_set& profiles,
                     allocation_cache& alloc) {
  grid_result g;
  g.cells = cells_of<cell>(c.o);
  g.full.policy = "none";
  g.full.allocator = "full";
  const auto t_grid = clock_type::now();
  progress_bar bar(!c.o.quiet, test.size() * (g.cells.size() + 1), "grid");
  std::size_t done = 0;
  for (std::size_t i = 0; i < test.size(); ++i) {
    const sequence_run r = prefill(c, test, i, g.full);
    bar.update(++done, "seq " + std::to_string(i) + " full cache");
    for (cell& x : g.cells) bar.update(++done, run_and_record(c, r, profiles, alloc, x, g));
  }
  std::fprintf(stderr, "eval: grid of %zu cells x %zu sequences took %.1f s\n", g.cells.size(), test.size(),
               seconds_since(t_grid));
  // The full cache keeps every context token of every layer (first sequence; a sliding layer its window).
  g.full.total = 0;
  for (std::size_t l = 0; l < c.n_layers; ++l) g.full.total += c.length_after(l, test[0].prefix);
  g.full.kept = g.full.total;
  return g;
}

}  // namespace eval
