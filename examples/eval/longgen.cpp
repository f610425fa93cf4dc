#include "longgen.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

#include "allocators.hpp"
#include "common.hpp"
#include "grid.hpp"
#include "depthkv/decode.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"
#include "stats.hpp"

namespace eval {
namespace {

// The full cache's run of one sequence: the tokens every cell replays and the distributions it
// is compared with.
struct long_reference {
  std::vector<int> tokens;               // [M + C] after the prompt: M generated, then the continuation
  std::vector<std::vector<float>> logp;  // [M] log-probs of the distribution that predicts tokens[i]
};

// What one run of one sequence measured.
struct run_metrics {
  std::vector<double> kl;        // [M] KL(full || run) of each generated position
  std::vector<int> cont_argmax;  // [C] argmax of the distribution that predicts continuation token t
  std::size_t bytes = 0;         // KV bytes at the end
  std::size_t evictions = 0;     // decode-time layer prunes
  std::size_t over_limit = 0;    // (layer, head) pairs found above budget + slack after a step
};

// KL(ref || softmax(logits)), compared at the reference's f32 precision so identical logits give
// exactly 0 (as the prefill grid does).
double kl_to(const std::vector<float>& ref, const minillama::vector& logits) {
  const std::size_t V = static_cast<std::size_t>(logits.size());
  const auto lp = minillama::log_softmax(logits.data(), V);
  double k = 0;
  for (std::size_t v = 0; v < V; ++v) {
    const double r = ref[v];
    k += std::exp(r) * (r - static_cast<double>(static_cast<float>(lp[v])));
  }
  return std::max(k, 0.0);
}

// The prefill's recording: the observation window (snapkv, tova) and the column sums (h2o).
minillama::forward_options prefill_options(const run_context& c, bool column_sums) {
  minillama::forward_options o;
  o.window = std::max<std::size_t>(c.o.window, 1);
  o.column_sums = column_sums;
  return o;
}

// Full cache: prefill, M greedy tokens, then the sample's continuation.
long_reference reference_run(const run_context& c, const sample& s, std::size_t M, run_metrics& m) {
  const std::size_t P = s.prefix, C = s.tokens.size() - P;
  minillama::session f(c.model, P + M + C);
  minillama::vector d = f.prefill(depthkv::span<const int>(s.tokens.data(), P), prefill_options(c, c.need_h2o));
  long_reference r;
  r.tokens.reserve(M + C);
  for (std::size_t i = 0; i < M + C; ++i) {
    if (i < M) {
      const auto lp = minillama::log_softmax(d.data(), static_cast<std::size_t>(d.size()));
      r.logp.emplace_back(lp.begin(), lp.end());
      r.tokens.push_back(minillama::argmax(d));
      m.kl.push_back(0.0);
    } else {
      m.cont_argmax.push_back(minillama::argmax(d));
      r.tokens.push_back(s.tokens[P + i - M]);
    }
    if (i + 1 < M + C) d = f.decode(r.tokens[i]);
  }
  m.bytes = f.cache().bytes_in_use();
  return r;
}

// The last w queries of a layer, [n_heads][w][head_dim] oldest first, with their positions: what
// snapkv re-scores with during decode. Starts from the prefill's window; each decode step
// shifts in the step's query.
class query_window {
 public:
  explicit query_window(const minillama::layer_record& prefill) {
    H_ = prefill.queries.size();
    w_ = prefill.window;
    hd_ = H_ ? static_cast<std::size_t>(prefill.queries[0].cols()) : 0;
    data_.resize(H_ * w_ * hd_);
    for (std::size_t h = 0; h < H_; ++h)
      for (std::size_t i = 0; i < w_; ++i)
        for (std::size_t d = 0; d < hd_; ++d)
          data_[(h * w_ + i) * hd_ + d] = prefill.queries[h](static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(d));
    pos_ = prefill.window_positions;
  }
  // Appends the decode step's query (a record of window 1), dropping the oldest.
  void push(const minillama::layer_record& step) {
    DEPTHKV_CHECK(step.window == 1 && step.queries.size() == H_, "eval::query_window", "expected one query per head");
    for (std::size_t h = 0; h < H_; ++h) {
      float* row = data_.data() + h * w_ * hd_;
      std::memmove(row, row + hd_, (w_ - 1) * hd_ * sizeof(float));
      for (std::size_t d = 0; d < hd_; ++d) row[(w_ - 1) * hd_ + d] = step.queries[h](0, static_cast<Eigen::Index>(d));
    }
    std::rotate(pos_.begin(), pos_.begin() + 1, pos_.end());
    pos_.back() = step.window_positions[0];
  }
  depthkv::layer_queries view() const {
    depthkv::layer_queries q;
    q.queries = depthkv::window_queries::dense(
        data_.data(), depthkv::kv_shape(depthkv::heads{H_}, depthkv::tokens{w_}, depthkv::dim{hd_}));
    q.query_positions = depthkv::span<const depthkv::pos_t>(pos_);
    return q;
  }

 private:
  std::size_t H_ = 0, w_ = 0, hd_ = 0;
  std::vector<float> data_;
  std::vector<depthkv::pos_t> pos_;
};

// Per-layer decode budgets (tokens per kv head) when every layer has seen `seen` tokens.
using budget_fn = std::function<std::vector<std::size_t>(std::size_t seen)>;

// One cell's budgets: decode_budget::ratio(keep).split(allocator, seen lengths, profile), with a
// hybrid model's sliding layers and budget scope.
budget_fn cell_budgets(const run_context& c, const profile_set& profiles, const long_cell& x) {
  const allocator_entry& a = find_allocator(x.allocator);
  const depthkv::sensitivity_profile* prof = &profiles.for_cell(a, x.policy);
  depthkv::allocator_params ap;
  ap.pyramid_beta = c.o.beta;
  ap.proportional.exponent = c.o.exponent;
  const depthkv::decode_budget budget = depthkv::decode_budget::ratio(x.budget);
  return [&c, prof, ap, budget, library = std::string(a.library)](std::size_t seen) {
    const std::vector<std::size_t> lengths(c.n_layers, seen);
    const std::size_t minimum[1] = {c.min_keep};
    depthkv::decode_layers d;
    d.lengths = depthkv::span<const std::size_t>(lengths);
    d.minimums = depthkv::span<const std::size_t>(minimum, 1);
    d.attention = depthkv::span<const depthkv::layer_attention>(c.attention);
    d.scope = c.scope;
    return budget.split(library, d, *prof, ap);
  };
}

// Policy `policy` on one sequence: prefill, prune every layer to budgets(P), replay the
// reference's tokens with the cache held at budgets(seen) after every token (re-split at every
// token). Sliding-window layers are left to the engine (their ring keeps the window). Throws
// depthkv::error when an allocation fails (before any work, for the first).
run_metrics replay(const run_context& c, const std::string& policy, const budget_fn& budgets_at, const sample& s,
                   const long_reference& ref, std::size_t M) {
  const std::size_t P = s.prefix, C = s.tokens.size() - P, L = c.n_layers;
  const depthkv::policy_id id = depthkv::policy_from_name(policy);
  const bool h2o = id == depthkv::policy_id::h2o, snapkv = id == depthkv::policy_id::snapkv;
  const bool step_query = snapkv || id == depthkv::policy_id::tova;
  std::vector<std::size_t> budgets = budgets_at(P);

  minillama::session ss(c.model, P + M + C);
  minillama::vector d = ss.prefill(depthkv::span<const int>(s.tokens.data(), P), prefill_options(c, h2o));
  const std::size_t G = ss.cache().n_kv_heads();
  depthkv::h2o_state state;
  depthkv::policy_config pc = c.pcfg;
  if (h2o) {
    state = depthkv::h2o_state(L, G);
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t g = 0; g < G; ++g)
        state.accumulate(l, g, depthkv::span<const float>(ss.record(l).column_sums[g]));
    pc.state = &state;
  }
  depthkv::decode_options dopt;
  if (c.o.decode_slack) dopt.slack = depthkv::decode_slack::tokens(*c.o.decode_slack);
  dopt.rescore_every = c.o.rescore_every;

  run_metrics m;
  depthkv::visit_policy(id, pc, [&](const auto& pol) {
    using policy_type = std::decay_t<decltype(pol)>;
    depthkv::decode_evictor<policy_type> ev(depthkv::layers{L}, pol, dopt);
    depthkv::prune_workspace ws;
    // The end of the prefill: every global layer to its budget, scored from the prefill's records.
    std::vector<query_window> windows;
    for (std::size_t l = 0; l < L; ++l) {
      if (snapkv) windows.emplace_back(ss.record(l));
      if (c.is_local(l)) continue;
      const minillama::window_query_buffer q = minillama::window_queries_of(ss.record(l));
      depthkv::prune_layer(ss.cache(), l, budgets[l], ev.policy(), ws, q.view);
    }
    minillama::forward_options df;
    df.window = step_query ? 1 : 0;
    df.column_sums = h2o;
    df.hook = [&](std::size_t l, depthkv::kv_cache<float>& cache, const minillama::layer_record& rec) {
      if (c.is_local(l)) return;  // the engine's ring holds the window
      if (h2o)  // the step's attention over every row the heads hold now
        for (std::size_t g = 0; g < G; ++g) state.accumulate(l, g, depthkv::span<const float>(rec.column_sums[g]));
      if (snapkv) windows[l].push(rec);
      const depthkv::decode_action due = ev.due(cache, l, budgets[l]);
      if (due == depthkv::decode_action::none) {
        ev.step(cache, l, budgets[l], ws);
      } else if (snapkv) {
        ev.step(cache, l, budgets[l], ws, windows[l].view());
      } else {
        const minillama::window_query_buffer q = minillama::window_queries_of(rec);  // tova: the step's query
        ev.step(cache, l, budgets[l], ws, q.view);
      }
      if (due != depthkv::decode_action::none) ++m.evictions;
      const std::size_t limit = ev.limit(budgets[l]);
      for (std::size_t h = 0; h < cache.n_kv_heads(); ++h) m.over_limit += cache.length(l, h) > limit;
    };
    for (std::size_t i = 0; i < M + C; ++i) {
      if (i < M)
        m.kl.push_back(kl_to(ref.logp[i], d));
      else
        m.cont_argmax.push_back(minillama::argmax(d));
      if (i + 1 == M + C) break;
      budgets = budgets_at(P + i + 1);  // the layers will have seen P + i + 1 tokens after this step
      d = ss.decode(ref.tokens[i], df);
    }
  });
  m.bytes = ss.cache().bytes_in_use();
  return m;
}

// Runs fn(i) for i in [0, n) on `threads` workers; the first exception is rethrown.
template <class F>
void parallel_for(std::size_t n, std::size_t threads, F&& fn) {
  std::atomic<std::size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto worker = [&] {
    try {
      for (std::size_t i; (i = next.fetch_add(1)) < n;) fn(i);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(failure_mutex);
      if (!failure) failure = std::current_exception();
      next = n;
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 1; t < std::min(threads, n); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
}

// Records one sequence's run into cell x; returns the run's retrieval accuracy (NaN: no query).
void add(long_cell& x, const sample& s, const run_metrics& m, std::size_t block, std::size_t full_bytes) {
  const std::size_t M = m.kl.size(), nb = (M + block - 1) / block;
  x.block_kl.resize(nb);
  double all = 0;
  for (std::size_t b = 0; b < nb; ++b) {
    const std::size_t lo = b * block, hi = std::min(M, lo + block);
    double sum = 0;
    for (std::size_t i = lo; i < hi; ++i) sum += m.kl[i];
    all += sum;
    x.block_kl[b].push_back(sum / static_cast<double>(hi - lo));
  }
  x.kl.push_back(all / static_cast<double>(M));
  std::size_t correct = 0;
  for (const auto& q : s.answers) {
    bool ok = true;
    for (std::size_t j : q) ok = ok && m.cont_argmax[j] == s.tokens[s.prefix + j];
    correct += ok;
  }
  x.correct += correct;
  x.queries += s.answers.size();
  x.acc.push_back(s.answers.empty() ? NAN : static_cast<double>(correct) / static_cast<double>(s.answers.size()));
  x.kv_bytes += static_cast<double>(m.bytes);
  x.kv_bytes_full += static_cast<double>(full_bytes);
  x.evictions += m.evictions;
}

void fail_check(long_result& g, const std::string& msg) {
  std::fprintf(stderr, "eval: CHECK FAILED: %s\n", msg.c_str());
  g.broken = true;
}

// --check: budgets held after every step, finite KL, and keeping everything reproduces the full
// cache exactly (KL 0 at every generated position, the same continuation predictions).
void check_run(const long_cell& x, const run_metrics& m, const run_metrics& full, long_result& g) {
  const std::string name = x.policy + "/" + x.allocator + " at " + fmt(x.budget);
  if (m.over_limit)
    fail_check(g, name + ": " + std::to_string(m.over_limit) + " (layer, head) steps above budget + slack");
  for (double k : m.kl)
    if (!(std::isfinite(k) && k >= 0)) {
      fail_check(g, name + ": non-finite or negative KL");
      break;
    }
  if (x.budget == 1.0) {
    const double worst = m.kl.empty() ? 0.0 : *std::max_element(m.kl.begin(), m.kl.end());
    if (worst != 0.0 || m.cont_argmax != full.cont_argmax || m.evictions)
      fail_check(g, name + ": keep 1 differs from the full cache (max KL " + fmt(worst) + ", " +
                        std::to_string(m.evictions) + " evictions)");
  }
}

// "KL [lo,hi] / accuracy" of a cell, or "skipped".
std::string table_entry(const long_cell* x) {
  if (!x || !x->note.empty() || x->kl.empty()) return "skipped";
  const interval kl = clamp_to(ci95(x->kl), 0, INFINITY), acc = ci95(x->acc);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g [%.2g,%.2g] / %s", kl.mean, kl.lo, kl.hi,
                x->queries ? fmt(100 * acc.mean, "%.0f%%").c_str() : "n/a");
  return buf;
}

const long_cell* find(const std::vector<long_cell>& cells, const std::string& p, const std::string& a, double b) {
  for (const long_cell& x : cells)
    if (x.policy == p && x.allocator == a && x.budget == b) return &x;
  return nullptr;
}

// Paired over sequences: KL of x minus KL of uniform (same policy and budget).
interval minus_uniform(const long_cell& x, const std::vector<long_cell>& cells) {
  const long_cell* u = find(cells, x.policy, "uniform", x.budget);
  if (!u || u->kl.size() != x.kl.size() || x.kl.empty()) return {};
  std::vector<double> diff(x.kl.size());
  for (std::size_t i = 0; i < diff.size(); ++i) diff[i] = x.kl[i] - u->kl[i];
  return ci95(diff);
}

void write_rows(const std::string& path, const std::string& header_comment, const long_result& g) {
  std::ofstream f(path);
  if (!f) die("cannot write '" + path + "'");
  f << header_comment;
  f << "policy,allocator,keep_ratio,generated,n_seqs,kl,kl_lo,kl_hi,kl_minus_uniform,kl_minus_uniform_lo,"
       "kl_minus_uniform_hi,acc,acc_lo,acc_hi,correct,queries,kv_bytes,kv_bytes_full,kv_fraction,evictions,note\n";
  auto row = [&](const long_cell& x) {
    const interval kl = clamp_to(ci95(x.kl), 0, INFINITY), acc = clamp_to(ci95(x.acc), 0, 1);
    const interval d = minus_uniform(x, g.cells);
    const double n = static_cast<double>(std::max<std::size_t>(x.kl.size(), 1));
    std::string note = x.note;
    for (char& ch : note)
      if (ch == ',' || ch == '\n' || ch == '"') ch = ';';
    f << x.policy << ',' << x.allocator << ',' << fmt(x.budget) << ',' << g.generated << ',' << x.kl.size() << ','
      << fmt(kl.mean) << ',' << fmt(kl.lo) << ',' << fmt(kl.hi) << ',' << fmt(d.mean) << ',' << fmt(d.lo) << ','
      << fmt(d.hi) << ',' << fmt(acc.mean) << ',' << fmt(acc.lo) << ',' << fmt(acc.hi) << ',' << x.correct << ','
      << x.queries << ',' << fmt(x.kv_bytes / n, "%.0f") << ',' << fmt(x.kv_bytes_full / n, "%.0f") << ','
      << fmt(x.kv_bytes_full > 0 ? x.kv_bytes / x.kv_bytes_full : NAN) << ',' << x.evictions << ',' << note << '\n';
  };
  row(g.full);
  for (const long_cell& x : g.cells) row(x);
  if (!f) die("write to '" + path + "' failed");
}

void write_blocks(const std::string& path, const long_result& g) {
  std::ofstream f(path);
  if (!f) die("cannot write '" + path + "'");
  f << "policy,allocator,keep_ratio,block,first_position,last_position,kl,kl_lo,kl_hi\n";
  for (const long_cell& x : g.cells)
    for (std::size_t b = 0; b < x.block_kl.size(); ++b) {
      const interval kl = clamp_to(ci95(x.block_kl[b]), 0, INFINITY);
      const std::size_t lo = b * g.block, hi = std::min(g.generated, lo + g.block) - 1;
      f << x.policy << ',' << x.allocator << ',' << fmt(x.budget) << ',' << b << ',' << lo << ',' << hi << ','
        << fmt(kl.mean) << ',' << fmt(kl.lo) << ',' << fmt(kl.hi) << '\n';
    }
  if (!f) die("write to '" + path + "' failed");
}

}  // namespace

struct long_calibration {
  std::vector<sample> seqs;
  std::vector<long_reference> refs;
};

std::shared_ptr<const long_calibration> prepare_long_calibration(const run_context& c, std::vector<sample> calib) {
  auto cal = std::make_shared<long_calibration>();
  cal->seqs = std::move(calib);
  cal->refs.resize(cal->seqs.size());
  parallel_for(cal->seqs.size(), c.o.threads, [&](std::size_t i) {
    run_metrics unused;
    cal->refs[i] = reference_run(c, cal->seqs[i], c.o.generate, unused);
  });
  return cal;
}

std::function<double(depthkv::span<const double>)> make_long_generation_loss(
    const run_context& c, std::shared_ptr<const long_calibration> cal, const std::string& policy) {
  return [&c, cal = std::move(cal), policy](depthkv::span<const double> ratios) {
    DEPTHKV_CHECK(ratios.size() == c.n_layers, "eval::long_generation_loss", "ratios has ", ratios.size(),
                  " entries, expected n_layers = ", c.n_layers);
    const std::vector<double> r(ratios.begin(), ratios.end());
    const budget_fn budgets = [&c, r](std::size_t seen) {
      std::vector<std::size_t> b(c.n_layers);
      for (std::size_t l = 0; l < c.n_layers; ++l) {
        const auto k = static_cast<std::size_t>(std::llround(r[l] * static_cast<double>(seen)));
        b[l] = c.is_local(l) ? c.length_after(l, seen) : std::min(seen, std::max(k, c.min_keep));
      }
      return b;
    };
    std::vector<double> kl(cal->seqs.size());
    parallel_for(cal->seqs.size(), c.o.threads, [&](std::size_t i) {
      const run_metrics m = replay(c, policy, budgets, cal->seqs[i], cal->refs[i], c.o.generate);
      double sum = 0;
      for (double k : m.kl) sum += k;
      kl[i] = sum / static_cast<double>(m.kl.size());
    });
    double sum = 0;
    for (double k : kl) sum += k;
    return sum / static_cast<double>(kl.size());
  };
}

long_result run_long_grid(const run_context& c, const std::vector<sample>& test, const profile_set& profiles) {
  const dcli::eval_options& o = c.o;
  long_result g;
  g.generated = o.generate;
  g.block = o.kl_block;
  g.cells = cells_of<long_cell>(o);
  g.full.policy = "none";
  g.full.allocator = "full";

  // Sequences run on --threads workers (each a whole sequence: the reference, then every cell);
  // the results are recorded in sequence order afterwards, so any thread count gives the same
  // output.
  struct sequence_result {
    run_metrics full;
    std::vector<run_metrics> cells;
    std::vector<std::string> errors;  // [cell] the allocation error, "" when it ran
  };
  std::vector<sequence_result> results(test.size());
  const auto t0 = clock_type::now();
  progress_bar bar(!o.quiet, test.size() * (g.cells.size() + 1), "long generation");
  std::mutex bar_mutex;
  std::size_t done = 0;
  auto progress = [&](const std::string& label) {
    const std::lock_guard<std::mutex> lock(bar_mutex);
    bar.update(++done, label);
  };
  std::vector<budget_fn> budgets;
  for (const long_cell& x : g.cells) budgets.push_back(cell_budgets(c, profiles, x));
  parallel_for(test.size(), o.threads, [&](std::size_t i) {
    sequence_result& r = results[i];
    const long_reference ref = reference_run(c, test[i], o.generate, r.full);
    progress("seq " + std::to_string(i) + " full cache");
    r.cells.resize(g.cells.size());
    r.errors.resize(g.cells.size());
    for (std::size_t k = 0; k < g.cells.size(); ++k) {
      const long_cell& x = g.cells[k];
      try {
        r.cells[k] = replay(c, x.policy, budgets[k], test[i], ref, o.generate);
      } catch (const depthkv::error& e) {
        r.errors[k] = e.what();
      }
      progress("seq " + std::to_string(i) + " " + x.policy + "/" + x.allocator + " " + fmt(x.budget, "%.2f"));
    }
  });

  for (std::size_t i = 0; i < test.size(); ++i) {
    const sequence_result& r = results[i];
    add(g.full, test[i], r.full, g.block, r.full.bytes);
    for (std::size_t k = 0; k < g.cells.size(); ++k) {
      long_cell& x = g.cells[k];
      if (!x.note.empty()) continue;
      if (!r.errors[k].empty()) {  // a cell that fails on one sequence is skipped as a whole
        x = long_cell{x.policy, x.allocator, x.budget, {}, {}, {}, 0, 0, 0, 0, 0, r.errors[k]};
        std::fprintf(stderr, "eval: skipping %s/%s at %.2f: %s\n", x.policy.c_str(), x.allocator.c_str(), x.budget,
                     x.note.c_str());
        continue;
      }
      add(x, test[i], r.cells[k], g.block, r.full.bytes);
      if (o.check) check_run(x, r.cells[k], r.full, g);
    }
  }
  std::fprintf(stderr, "eval: long generation (%zu tokens) of %zu cells x %zu sequences took %.1f s (%zu threads)\n",
               o.generate, g.cells.size(), test.size(), seconds_since(t0), std::min(o.threads, test.size()));
  return g;
}

void report_long(const run_context& c, const std::vector<sample>& test, const long_result& g,
                 const profile_set& profiles) {
  const dcli::eval_options& o = c.o;
  const std::string results = o.out + "/long_results.csv", blocks = o.out + "/long_kl_by_position.csv";
  const std::string slack = o.decode_slack ? std::to_string(*o.decode_slack) + " rows" : "ceil(budget / 16) rows";
  const std::string comment = "# eval --generate: model " + c.model_name + ", test " + o.test + " (" +
                              std::to_string(test.size()) + " sequences, context " + std::to_string(test[0].prefix) +
                              "), " + std::to_string(g.generated) + " generated tokens, sink " +
                              std::to_string(o.sink) + ", recent " + std::to_string(o.recent) + ", window " +
                              std::to_string(o.window) + ", rescore every " + std::to_string(o.rescore_every) +
                              ", slack " + slack + "; CIs: mean +- 1.96 sd/sqrt(n) over sequences\n";
  write_rows(results, comment, g);
  write_blocks(blocks, g);

  const interval facc = ci95(g.full.acc);
  std::printf("full cache, %zu generated tokens: retrieval accuracy after the generation %s (%zu/%zu queries), %zu "
              "test sequences\n",
              g.generated, g.full.queries ? fmt(100 * facc.mean, "%.1f%%").c_str() : "n/a", g.full.correct,
              g.full.queries, test.size());
  for (const auto& p : o.policies) {
    std::printf("\npolicy %s: mean KL over the %zu generated positions [95%% CI] / retrieval after them, by keep "
                "ratio of the current length\n%-13s",
                p.c_str(), g.generated, "allocator");
    for (double b : o.budgets) std::printf(" | %-32s", (fmt(100 * b, "%.0f") + "% kept").c_str());
    std::printf("\n");
    for (const auto& a : o.allocators) {
      std::printf("%-13s", a.c_str());
      for (double b : o.budgets) std::printf(" | %-32s", table_entry(find(g.cells, p, a, b)).c_str());
      std::printf("\n");
    }
  }
  // KL by generated position: the first and the last block, and every block at the smallest budget.
  std::printf("\nmean KL per block of %zu generated positions (smallest keep ratio)\n%-24s", g.block, "policy/allocator");
  const double bmin = *std::min_element(o.budgets.begin(), o.budgets.end());
  const std::size_t nb = (g.generated + g.block - 1) / g.block;
  for (std::size_t b = 0; b < nb; ++b) std::printf(" %8zu", b * g.block);
  std::printf("\n");
  for (const auto& p : o.policies)
    for (const auto& a : o.allocators) {
      const long_cell* x = find(g.cells, p, a, bmin);
      if (!x || !x->note.empty() || x->block_kl.size() != nb) continue;
      std::printf("%-24s", (p + "/" + a).c_str());
      for (std::size_t b = 0; b < nb; ++b) std::printf(" %8.4f", ci95(x->block_kl[b]).mean);
      std::printf("\n");
    }
  std::string prof_list;
  for (const auto& u : profiles.files_used(o)) prof_list += (prof_list.empty() ? "" : ", ") + u;
  std::printf("\nresults: %s (every cell), KL by position: %s%s%s\n", results.c_str(), blocks.c_str(),
              prof_list.empty() ? "" : ", profiles: ", prof_list.c_str());
}

}  // namespace eval
