// serve: a batched serving loop over one fixed paged KV pool, with layer-dependent pruning.
//
// Shows depthkv inside a vLLM-style engine loop: one depthkv::paged_cache (a pool of fixed-size
// blocks per layer, a block table per sequence, layer and kv head) shared by every running
// sequence (minillama::paged_session). Each step:
//   1. admit requests, in order, while the pool can hold the next one's prompt and continuation
//      on top of the remaining continuations of the running ones (no preemption is ever needed);
//      one pool shared by all layers (--pool shared, the default: a layer with a larger budget
//      takes more of it) or one per layer;
//   2. prefill each admitted request, split the budget over its layers (depthkv::allocate), prune
//      each layer (token-granular prune_paged or block-granular prune_paged_blocks): the emptied
//      blocks return to the pool at once, so the next admission sees them;
//   3. decode one token of every running sequence (round-robin; teacher-forced along the
//      request's continuation, so every configuration sees the same tokens);
//   4. free the finished sequences (every block back to the pool).
// At the end: KL to an unpruned run of the same requests and retrieval accuracy (as eval).
// --compare LIST instead prints a quality table of dense, paged token-granular and paged
// block-granular pruning at the same memory (blocks), request by request, without the loop.
//
//   build/examples/serve --pool-mib 8 --policy snapkv --allocator uniform --budget 0.2
//   build/examples/serve --compare 0.1,0.2,0.4 --max-seqs 16
//
// Bad arguments, and files or budgets that do not fit, exit with status 2; a failure while
// running exits with status 1.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/paged_budget.hpp"
#include "depthkv/budget/profile.hpp"
#include "minillama/eval_data.hpp"
#include "minillama/loaders.hpp"
#include "minillama/paged_session.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

namespace {

using minillama::eval_data::sample;
using steady = std::chrono::steady_clock;

[[noreturn]] void input_error(const std::string& msg) { dcli::exit_input_error("serve", msg); }

double seconds_since(steady::time_point t0) { return std::chrono::duration<double>(steady::now() - t0).count(); }

std::size_t ceil_div(std::size_t a, std::size_t b) { return a / b + (a % b != 0); }

std::string real_text(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

// The full-cache run of one request: log-probs at every continuation position, and the
// prefill's prediction of the first continuation token (pruning happens after it).
struct reference {
  std::vector<std::vector<double>> logp;  // [continuation][vocab]
  int first_argmax = 0;
};

reference full_reference(const minillama::model& m, const sample& s) {
  minillama::session d(m, s.tokens.size());
  reference r;
  r.first_argmax = minillama::argmax(d.prefill(depthkv::span<const int>(s.tokens.data(), s.prefix)));
  minillama::forward_options o;
  o.all_logits = true;
  const minillama::matrix lg =
      d.forward(depthkv::span<const int>(s.tokens.data() + s.prefix, s.tokens.size() - s.prefix), o);
  for (Eigen::Index t = 0; t < lg.rows(); ++t)
    r.logp.push_back(minillama::log_softmax(lg.row(t).data(), static_cast<std::size_t>(lg.cols())));
  return r;
}

// KL(full || pruned) summed over continuation positions, and retrieval queries answered (every
// answer token the argmax given the true prefix), as examples/eval scores them.
struct quality {
  double kl = 0;
  std::size_t positions = 0, correct = 0, queries = 0;

  void add(const sample& s, const minillama::matrix& lg, const reference& ref) {
    const auto V = static_cast<std::size_t>(lg.cols());
    for (Eigen::Index t = 0; t < lg.rows(); ++t) {
      const auto lp = minillama::log_softmax(lg.row(t).data(), V);
      double k = 0;
      for (std::size_t v = 0; v < V; ++v) {
        const double r = ref.logp[static_cast<std::size_t>(t)][v];
        k += std::exp(r) * (r - lp[v]);
      }
      kl += std::max(k, 0.0);
      ++positions;
    }
    for (const auto& q : s.answers) {
      bool ok = true;
      for (const std::size_t j : q) {
        const int pred = j == 0 ? ref.first_argmax : minillama::argmax(lg.row(static_cast<Eigen::Index>(j - 1)).transpose());
        ok = ok && pred == s.tokens[s.prefix + j];
      }
      correct += ok;
      ++queries;
    }
  }
  double mean_kl() const { return positions ? kl / static_cast<double>(positions) : 0.0; }
  double accuracy() const { return queries ? static_cast<double>(correct) / static_cast<double>(queries) : 0.0; }
};

// What a request is pruned to, in whole blocks (depthkv::allocate_paged: the global budget is a
// keep ratio of the prompt's blocks, every layer's floor the protected rows rounded up to
// blocks): tokens per kv head for token-granular pruning (exactly blocks[l] blocks each), and
// blocks per kv head for block-granular pruning (the same, at least the protected first and last
// blocks). Dense pruning in --compare keeps the token counts: the same memory.
struct plan {
  bool prune = false;
  std::vector<std::size_t> keep_tokens, keep_blocks;
};

struct context {
  const dcli::serve_options& o;
  const minillama::model& m;
  const depthkv::sensitivity_profile& prof;
  depthkv::policy_config policy;

  std::size_t L() const { return static_cast<std::size_t>(m.cfg.n_layers); }
  std::size_t H() const { return static_cast<std::size_t>(m.cfg.n_kv_heads); }

  plan plan_for(const sample& s) const {
    plan p;
    const std::size_t n = s.prefix, protect = o.sink + o.recent, B = o.block_size;
    if (!o.pruning() || n <= protect) return p;
    p.prune = true;
    depthkv::paged_allocation_request req;
    req.lengths.assign(L(), n);
    req.minimums.assign(1, protect);
    req.attention = minillama::attention_of(m.cfg);  // a hybrid model's sliding layers keep their window
    for (std::size_t l = 0; l < req.attention.size(); ++l)
      if (req.attention[l].is_sliding()) req.lengths[l] = std::min(n, req.attention[l].window->value);
    req.block_size = depthkv::block_tokens{B};
    req.budget = depthkv::paged_budget::ratio(o.budget);
    const depthkv::paged_allocation a = depthkv::allocate_paged(o.allocator, req, prof);
    p.keep_tokens = a.keep;
    const std::size_t nb = ceil_div(n, B);
    const std::size_t prot = std::min(nb, std::max<std::size_t>(1, ceil_div(std::min(o.sink, n), B)) +
                                              std::max<std::size_t>(1, ceil_div(std::min(o.recent, n), B)));
    for (const std::size_t b : a.blocks) p.keep_blocks.push_back(std::max(b, prot));
    return p;
  }

  minillama::forward_options prefill_options(const sample& s) const {
    minillama::forward_options f;
    f.window = std::min(o.window, s.prefix);
    f.column_sums = o.policy == "h2o";
    return f;
  }

  depthkv::policy_config policy_for(const sample& s) const {
    depthkv::policy_config c = policy;
    c.window = std::min(o.window, s.prefix);
    return c;
  }

  // Prunes a prefilled paged session to the plan; returns the blocks returned to the pool.
  std::size_t prune(minillama::paged_session& ps, const sample& s, const plan& p, bool block_granular) const {
    if (!p.prune) return 0;
    return block_granular ? minillama::prune_paged_blocks_with_policy(ps, p.keep_blocks, o.policy, policy_for(s))
                          : minillama::prune_paged_with_policy(ps, p.keep_tokens, o.policy, policy_for(s));
  }
};

depthkv::paged_cache<float> make_pool(const context& cx, std::size_t n_blocks,
                                      depthkv::pool_scope scope = depthkv::pool_scope::per_layer) {
  return depthkv::paged_cache<float>(depthkv::paged_cache_shape(
      depthkv::layers{cx.L()}, depthkv::heads{cx.H()}, depthkv::dim{static_cast<std::size_t>(cx.m.cfg.head_dim())},
      depthkv::blocks{n_blocks}, depthkv::block_tokens{cx.o.block_size}, scope));
}

// --compare: per keep ratio, dense token-granular pruning against paged token- and block-granular
// pruning of every request; memory as the blocks the kept rows occupy (dense: what they would).
int compare(const context& cx, const std::vector<sample>& reqs, const std::vector<reference>& refs) {
  const std::size_t B = cx.o.block_size;
  std::printf("policy %s, allocator %s, block size %zu, %zu requests: KL to the full cache / retrieval accuracy / "
              "KV blocks kept per request\n",
              cx.o.policy.c_str(), cx.o.allocator.c_str(), B, reqs.size());
  std::printf("| keep | dense token-granular | paged token-granular | paged block-granular |\n|---|---|---|---|\n");
  for (const double b : cx.o.compare) {
    dcli::serve_options ob = cx.o;
    ob.budget = b;
    const context c{ob, cx.m, cx.prof, cx.policy};
    quality qd, qt, qb;
    std::size_t blocks_d = 0, blocks_t = 0, blocks_b = 0;
    bool identical = true;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const sample& s = reqs[i];
      const plan p = c.plan_for(s);
      const depthkv::span<const int> prompt(s.tokens.data(), s.prefix), cont(s.tokens.data() + s.prefix,
                                                                              s.tokens.size() - s.prefix);
      minillama::forward_options all;
      all.all_logits = true;
      minillama::session d(cx.m, s.tokens.size());
      (void)d.prefill(prompt, c.prefill_options(s));
      if (p.prune) minillama::prune_with_policy(d, p.keep_tokens, ob.policy, c.policy_for(s));
      for (std::size_t l = 0; l < c.L(); ++l)
        for (std::size_t h = 0; h < c.H(); ++h) blocks_d += ceil_div(d.cache().length(l, h), B);
      const minillama::matrix ld = d.forward(cont, all);
      qd.add(s, ld, refs[i]);
      for (const bool block : {false, true}) {
        auto pool = make_pool(c, c.H() * (ceil_div(s.tokens.size(), B) + 1));
        minillama::paged_session ps(cx.m, pool);
        (void)ps.prefill(prompt, c.prefill_options(s));
        (void)c.prune(ps, s, p, block);
        (block ? blocks_b : blocks_t) += ps.blocks_held();
        const minillama::matrix lp = ps.forward(cont, all);
        (block ? qb : qt).add(s, lp, refs[i]);
        if (!block) identical = identical && lp == ld;
      }
    }
    const double n = static_cast<double>(reqs.size());
    std::printf("| %.2f | %.4f / %.3f / %.0f | %.4f / %.3f / %.0f%s | %.4f / %.3f / %.0f |\n", b, qd.mean_kl(),
                qd.accuracy(), blocks_d / n, qt.mean_kl(), qt.accuracy(), blocks_t / n,
                identical ? " (logits identical to dense)" : " (LOGITS DIFFER FROM DENSE)", qb.mean_kl(), qb.accuracy(),
                blocks_b / n);
    if (!identical) return 1;
  }
  return 0;
}

// One running sequence of the serving loop.
struct running {
  std::size_t request = 0;
  std::unique_ptr<minillama::paged_session> s;
  std::size_t fed = 0;     // continuation tokens decoded so far
  minillama::matrix logits;  // [continuation][vocab], filled as it decodes
};

int serve(const context& cx, const std::vector<sample>& reqs, const std::vector<reference>& refs) {
  const dcli::serve_options& o = cx.o;
  const std::size_t L = cx.L(), H = cx.H(), B = o.block_size;
  const std::size_t block_bytes = B * (2 * static_cast<std::size_t>(cx.m.cfg.head_dim()) * sizeof(float) + sizeof(depthkv::pos_t));
  const auto pool_bytes = static_cast<std::size_t>(o.pool_mib * 1048576.0);
  const bool shared = o.pool == "shared";
  const std::size_t n_blocks = pool_bytes / block_bytes / (shared ? 1 : L);  // per pool
  // The admission rule needs the prompt and continuation of one request unpruned.
  std::size_t need_max = 0;
  for (const sample& s : reqs) need_max = std::max(need_max, H * ceil_div(s.tokens.size(), B) * (shared ? L : 1));
  if (n_blocks < need_max)
    input_error("--pool-mib: " + real_text(o.pool_mib) + " MiB holds " + std::to_string(n_blocks) + " blocks of " +
                std::to_string(B) + " tokens " + (shared ? "in the shared pool" : "per layer") +
                "; the longest request needs " + std::to_string(need_max));
  auto pool = make_pool(cx, n_blocks, shared ? depthkv::pool_scope::shared : depthkv::pool_scope::per_layer);
  std::fprintf(stderr,
               "serve: %zu requests; pool %.2f MiB = %zu blocks %s, %zu tokens of one kv head each (%zu bytes); "
               "%s, %s, budget %.2f, %s-granular\n",
               reqs.size(), o.pool_mib, n_blocks, shared ? "shared by all layers" : "per layer", B, block_bytes,
               o.policy.c_str(), o.allocator.c_str(), o.budget, o.granularity.c_str());

  std::deque<std::size_t> pending;
  for (std::size_t i = 0; i < reqs.size(); ++i) pending.push_back(i);
  std::vector<running> run;
  quality q;
  std::size_t step = 0, peak = 0, prefill_tokens = 0, decode_tokens = 0, released = 0;
  double t_prefill = 0, t_prune = 0, t_decode = 0, running_sum = 0;
  const auto t_all = steady::now();
  while (!pending.empty() || !run.empty()) {
    // 1-2. Admission: the new request's prompt + continuation on top of what the running ones
    // still need, in every layer; then prefill and prune it.
    std::size_t admitted = 0;
    while (!pending.empty()) {
      const sample& s = reqs[pending.front()];
      std::vector<std::size_t> need(pool.shape().n_pools());
      for (std::size_t l = 0; l < L; ++l) {
        std::size_t& n = need[pool.shape().pool_of(l)];
        n += H * ceil_div(s.tokens.size(), B);
        for (const running& r : run)
          n += pool.blocks_needed(r.s->sequence(), l, reqs[r.request].tokens.size() - reqs[r.request].prefix - r.fed);
      }
      bool fits = true;
      for (std::size_t l = 0; l < L; ++l) fits = fits && need[pool.shape().pool_of(l)] <= pool.blocks_free(l);
      if (!fits) break;
      running r;
      r.request = pending.front();
      pending.pop_front();
      r.s = std::make_unique<minillama::paged_session>(cx.m, pool);
      auto t0 = steady::now();
      (void)r.s->prefill(depthkv::span<const int>(s.tokens.data(), s.prefix), cx.prefill_options(s));
      t_prefill += seconds_since(t0);
      prefill_tokens += s.prefix;
      t0 = steady::now();
      released += cx.prune(*r.s, s, cx.plan_for(s), o.granularity == "block");
      t_prune += seconds_since(t0);
      r.logits.resize(static_cast<Eigen::Index>(s.tokens.size() - s.prefix), cx.m.cfg.vocab_size);
      run.push_back(std::move(r));
      ++admitted;
    }
    // 3. One decode step of every running sequence.
    const auto t0 = steady::now();
    for (running& r : run) {
      const sample& s = reqs[r.request];
      r.logits.row(static_cast<Eigen::Index>(r.fed)) = r.s->decode(s.tokens[s.prefix + r.fed]).transpose();
      ++r.fed;
    }
    const double dt = seconds_since(t0);
    t_decode += dt;
    decode_tokens += run.size();
    peak = std::max(peak, run.size());
    running_sum += static_cast<double>(run.size());
    const std::size_t used = pool.blocks_used(), free = pool.blocks_free();
    // 4. Finished sequences leave (their blocks go back to the pool).
    std::size_t finished = 0;
    for (std::size_t i = 0; i < run.size();) {
      const sample& s = reqs[run[i].request];
      if (run[i].fed < s.tokens.size() - s.prefix) {
        ++i;
        continue;
      }
      q.add(s, run[i].logits, refs[run[i].request]);
      run.erase(run.begin() + static_cast<std::ptrdiff_t>(i));
      ++finished;
    }
    if (!o.quiet)
      std::printf("step %4zu: running %3zu (+%zu admitted, -%zu finished), blocks used %6zu / free %6zu, "
                  "decode %.0f tok/s\n",
                  step, run.size() + finished, admitted, finished, used, free,
                  dt > 0 ? static_cast<double>(run.size() + finished) / dt : 0.0);
    ++step;
  }
  const std::size_t used_end = pool.blocks_used();
  const double wall = seconds_since(t_all);
  std::size_t full_correct = 0, n_queries = 0;  // the unpruned run's own accuracy
  for (std::size_t i = 0; i < reqs.size(); ++i)
    for (const auto& query : reqs[i].answers) {
      bool ok = true;
      for (const std::size_t j : query) {
        const auto& row = refs[i].logp[j == 0 ? 0 : j - 1];
        const int pred = j == 0 ? refs[i].first_argmax
                                : static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
        ok = ok && pred == reqs[i].tokens[reqs[i].prefix + j];
      }
      full_correct += ok;
      ++n_queries;
    }
  std::printf("requests %zu in %zu steps, %.2f s: at most %zu running at once (mean %.1f per decode step)\n",
              reqs.size(), step, wall, peak, step ? running_sum / static_cast<double>(step) : 0.0);
  std::printf("prefill %zu tokens, %.0f tok/s; prune %.3f s, %zu blocks returned; decode %zu tokens, %.0f tok/s\n",
              prefill_tokens, t_prefill > 0 ? static_cast<double>(prefill_tokens) / t_prefill : 0.0, t_prune, released,
              decode_tokens, t_decode > 0 ? static_cast<double>(decode_tokens) / t_decode : 0.0);
  std::printf("quality against the unpruned run: mean KL %.5f nats over %zu positions; retrieval accuracy %.3f "
              "(%zu/%zu; unpruned %.3f)\n",
              q.mean_kl(), q.positions, q.accuracy(), q.correct, q.queries,
              n_queries ? static_cast<double>(full_correct) / static_cast<double>(n_queries) : 0.0);
  if (used_end != 0) {
    std::fprintf(stderr, "serve: %zu blocks still in use after every request finished\n", used_end);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const dcli::serve_options o = dcli::parse_or_exit("serve", dcli::parse_serve_args, argc, argv);
  try {
    dcli::check_input_file("--model", o.model);
    if (!o.tokenizer.empty()) dcli::check_input_file("--tokenizer", o.tokenizer);
    dcli::check_input_file("--data", o.data);
    if (!o.profile.empty()) dcli::check_input_file("--profile", o.profile);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  }
  try {
    minillama::loaded M;
    try {
      M = minillama::load_any(o.model);
    } catch (const minillama::load_error& e) {
      input_error(std::string("--model: ") + e.what());
    }
    std::string tok_path = o.tokenizer;
    if (tok_path.empty() && M.format == "llama2c") {
      const auto slash = o.model.find_last_of('/');
      const std::string next = (slash == std::string::npos ? std::string(".") : o.model.substr(0, slash)) + "/tokenizer.bin";
      try {
        dcli::check_input_file("--tokenizer", next);
        tok_path = next;
      } catch (const dcli::cli_error&) {
      }
    }
    if (!tok_path.empty()) {
      minillama::tokenizer_options to;
      to.add_dummy_prefix = false;
      try {
        M.vocab = minillama::load_llama2c_tokenizer_file(tok_path, M.weights.cfg.vocab_size, to);
      } catch (const minillama::load_error& e) {
        input_error(std::string("--tokenizer: ") + e.what());
      }
      M.has_vocab = true;
    }
    minillama::eval_data::read_options ro;
    ro.tok = M.has_vocab ? &M.vocab : nullptr;
    ro.vocab = M.weights.cfg.vocab_size;
    ro.max_seqs = o.max_seqs;
    ro.max_context = o.max_context;
    std::vector<sample> reqs;
    try {
      reqs = minillama::eval_data::read_set_file(o.data, ro);
    } catch (const minillama::eval_data::data_error& e) {
      input_error(std::string("--data: ") + e.what());
    }
    for (std::size_t i = 0; i < reqs.size(); ++i)
      if (reqs[i].prefix == 0 || reqs[i].prefix >= reqs[i].tokens.size())
        input_error("--data: request " + std::to_string(i + 1) + " needs a prompt and a continuation");
    const std::size_t L = static_cast<std::size_t>(M.weights.cfg.n_layers), protect = o.sink + o.recent;
    depthkv::sensitivity_profile prof;
    if (!o.profile.empty()) {
      try {
        prof = depthkv::load_profile(o.profile);
      } catch (const depthkv::error& e) {
        input_error(std::string("--profile: ") + e.what());
      }
      if (prof.n_layers() != L)
        input_error("--profile: '" + o.profile + "' has " + std::to_string(prof.n_layers()) +
                    " layers but the model has " + std::to_string(L));
      const std::string identity = dcli::model_identity(o.model);
      if (!dcli::profile_matches_model(prof.model, identity))
        input_error("--profile: '" + o.profile + "' was measured on model '" + prof.model + "', not '" + identity + "'");
    }
    depthkv::policy_config pc;
    pc.n_sink = o.sink;
    pc.n_recent = o.recent;
    pc.seed = 1;
    const context cx{o, M.weights, prof, pc};
    // Every budget must give every layer of every request at least its protected rows (in blocks).
    std::vector<double> budgets = o.compare;
    if (budgets.empty()) budgets.push_back(o.budget);
    for (const double b : budgets) {
      dcli::serve_options ob = o;
      ob.budget = b;
      const context c{ob, M.weights, prof, pc};
      for (std::size_t i = 0; i < reqs.size(); ++i) try {
          (void)c.plan_for(reqs[i]);
        } catch (const depthkv::error& e) {
          input_error(std::string(o.compare.empty() ? "--budget " : "--compare ") + real_text(b) +
                      " does not fit request " + std::to_string(i + 1) + " (" + std::to_string(reqs[i].prefix) +
                      "-token prompt, " + std::to_string(o.block_size) + "-token blocks, --sink + --recent = " +
                      std::to_string(protect) + "): " + e.what());
        }
    }
    std::vector<reference> refs;
    for (const sample& s : reqs) refs.push_back(full_reference(M.weights, s));
    return o.compare.empty() ? serve(cx, reqs, refs) : compare(cx, reqs, refs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "serve: %s\n", e.what());
    return 1;
  }
}
