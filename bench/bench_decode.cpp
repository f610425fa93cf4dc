// Decode-time eviction per generated token against its baselines, and the cost of re-splitting
// the per-layer budgets, in one binary.
//
// decode/<policy>/<mode>/<kept>: per generated token, one K/V row per kv head appended to each of
// 4 layers (8 kv heads, head_dim 128, f16; 4 layers keep every cache beyond L3, the cost per
// layer is the same in a 32-layer model) plus the mode's eviction step, at `kept` tokens per
// head (4K and 16K). Modes:
//   append      the baseline: no eviction at the same kept length. The cache goes through the
//               same lengths as under `batch` (kept .. kept + slack + 1); the drop back to
//               `kept` between iterations is not timed.
//   batch       decode_evictor, default slack (kept / 16): one eviction per slack + 1 tokens,
//               each prunes back to `kept` in one pass (score, top-k, compaction).
//   one_by_one  enforce_budget after every token: evict one whenever over budget (the
//               behaviour before decode.hpp: each token scores and compacts the whole layer).
// One iteration is slack + 1 tokens (one eviction period) for append and batch, one token for
// one_by_one; the per_token counter is the time per generated token. Policies: knorm (scores
// read every key: the eviction's scoring dominates) and streaming (trivial scores: top-k and
// compaction only). The tokens/s ratio of a mode is per_token(append) / per_token(mode).
//
// This is the eviction overhead alone, an upper bound of its share: an engine's decode step
// also runs attention over the kept rows and the weight matmuls. decode_attn/knorm/<mode>/<kept>
// adds to every mode a lower bound of the attention: one query's scores (window_scores, 32
// query heads, GQA 4: the K half of attention, no V, no matmuls) over each layer's kept keys,
// so its append/batch ratio bounds the engine-level tokens/s ratio from below.
//
// decode_slack/...: batch eviction with slack 1/64, 1/16 and 1/4 of the budget (4K kept).
//
// budget/<allocator>/<layers>: decode_budget::ratio(0.2).split with floors of 8 tokens over 32
// or 80 layers that have seen 8K tokens (proportional and curve read a 3-point profile): the
// cost of re-splitting the budgets at a re-scoring step.
#include <benchmark/benchmark.h>

#include "bench_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "depthkv/decode.hpp"
#include "depthkv/score/window.hpp"

using namespace depthkv;

namespace {

constexpr std::size_t n_layers = 4, n_kv = 8, head_dim = 128, n_q = 32;
constexpr std::size_t pool_tokens = 64;  // distinct K/V token rows appended in turn

enum class mode { append, batch, one_by_one };

/// A kv_cache at `kept` tokens per head plus the rows of the tokens to append, and the
/// optional attention pass.
struct decode_setup {
  kv_cache<f16> cache;
  std::vector<f16> k, v;  // [pool_tokens][n_kv][head_dim]
  std::vector<float> q;   // [n_q][1][head_dim]
  std::vector<float> out;
  window_scratch scratch;
  pos_t next = 0;

  decode_setup(std::size_t kept, std::size_t capacity)
      : cache(layers{n_layers}, heads{n_kv}, dim{head_dim}, capacity),
        k(pool_tokens * n_kv * head_dim),
        v(k.size()),
        q(n_q * head_dim),
        out(capacity) {
    std::mt19937_64 g(kept * 31 + 7);
    std::normal_distribution<float> nd;
    for (auto& x : k) x = f16(nd(g));
    for (auto& x : v) x = f16(nd(g));
    for (auto& x : q) x = nd(g);
    for (std::size_t t = 0; t < kept; ++t) append_token();
  }
  void append_token() {
    const std::size_t i = static_cast<std::size_t>(next) % pool_tokens;
    for (std::size_t l = 0; l < n_layers; ++l)
      cache.append_token(l, k.data() + i * n_kv * head_dim, v.data() + i * n_kv * head_dim, next);
    ++next;
  }
  /// One query's attention scores over every kept key of `layer` (the K half of attention).
  void attend(std::size_t layer) {
    const window_queries wq = window_queries::dense(q.data(), kv_shape(heads{n_q}, tokens{1}, dim{head_dim}));
    const kv_cache<f16>& c = cache;
    for (std::size_t h = 0; h < n_kv; ++h)
      window_scores(wq, n_kv, h, c.keys(layer, h), c.positions(layer, h), span<float>(out), scratch);
    benchmark::DoNotOptimize(out.data());
  }
  /// Drops the oldest rows beyond `kept` of every head (untimed reset of the append baseline).
  void drop_to(std::size_t kept) {
    std::vector<index_t> keep(kept);
    for (std::size_t l = 0; l < n_layers; ++l)
      for (std::size_t h = 0; h < n_kv; ++h) {
        const std::size_t n = cache.length(l, h);
        std::iota(keep.begin(), keep.end(), static_cast<index_t>(n - kept));
        cache.retain(l, h, keep);
      }
  }
};

template <class Policy>
void run_decode(benchmark::State& state, mode m, bool attention, std::optional<double> slack_fraction = {}) {
  const std::size_t kept = static_cast<std::size_t>(state.range(0));
  Policy policy;
  policy.n_sink = 4;
  policy.n_recent = 16;
  decode_options opt;  // default: slack kept / 16
  if (slack_fraction) opt.slack = decode_slack::fraction(*slack_fraction);
  decode_evictor<Policy> ev(layers{n_layers}, policy, opt);
  const std::size_t slack = ev.slack(kept), period = slack + 1;
  decode_setup s(kept, kept + period);
  prune_workspace ws;
  // Warm the workspace and reach the steady state before timing: one eviction period (batch),
  // two evictions (one_by_one).
  if (m != mode::append) {
    for (std::size_t i = 0; i < (m == mode::batch ? period : 2); ++i) {
      s.append_token();
      for (std::size_t l = 0; l < n_layers; ++l) {
        if (m == mode::batch) ev.step(s.cache, l, kept, ws);
        else enforce_budget(s.cache, l, kept, policy, ws);
      }
    }
  }
  const std::size_t per_iter = m == mode::one_by_one ? 1 : period;
  for (auto _ : state) {
    for (std::size_t i = 0; i < per_iter; ++i) {
      s.append_token();
      for (std::size_t l = 0; l < n_layers; ++l) {
        if (attention) s.attend(l);
        if (m == mode::batch) ev.step(s.cache, l, kept, ws);
        else if (m == mode::one_by_one) enforce_budget(s.cache, l, kept, policy, ws);
      }
    }
    if (m == mode::append) {
      state.PauseTiming();
      s.drop_to(kept);
      state.ResumeTiming();
    }
  }
  const auto n_tokens = static_cast<double>(state.iterations() * per_iter);
  state.counters["per_token"] = benchmark::Counter(n_tokens, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["slack"] = static_cast<double>(m == mode::one_by_one ? 0 : slack);
  state.SetItemsProcessed(static_cast<std::int64_t>(n_tokens));
}

void decode_args(benchmark::internal::Benchmark* b) {
  b->Arg(4096)->Arg(16384)->Unit(benchmark::kMicrosecond);
}

void BM_decode_knorm_append(benchmark::State& s) { run_decode<knorm>(s, mode::append, false); }
void BM_decode_knorm_batch(benchmark::State& s) { run_decode<knorm>(s, mode::batch, false); }
void BM_decode_knorm_one_by_one(benchmark::State& s) { run_decode<knorm>(s, mode::one_by_one, false); }
void BM_decode_streaming_append(benchmark::State& s) { run_decode<streaming>(s, mode::append, false); }
void BM_decode_streaming_batch(benchmark::State& s) { run_decode<streaming>(s, mode::batch, false); }
void BM_decode_streaming_one_by_one(benchmark::State& s) { run_decode<streaming>(s, mode::one_by_one, false); }
void BM_decode_attn_knorm_append(benchmark::State& s) { run_decode<knorm>(s, mode::append, true); }
void BM_decode_attn_knorm_batch(benchmark::State& s) { run_decode<knorm>(s, mode::batch, true); }
void BM_decode_attn_knorm_one_by_one(benchmark::State& s) { run_decode<knorm>(s, mode::one_by_one, true); }

BENCHMARK(BM_decode_knorm_append)->Name("decode/knorm/append")->Apply(decode_args);
BENCHMARK(BM_decode_knorm_batch)->Name("decode/knorm/batch")->Apply(decode_args);
BENCHMARK(BM_decode_knorm_one_by_one)->Name("decode/knorm/one_by_one")->Apply(decode_args);
BENCHMARK(BM_decode_streaming_append)->Name("decode/streaming/append")->Apply(decode_args);
BENCHMARK(BM_decode_streaming_batch)->Name("decode/streaming/batch")->Apply(decode_args);
BENCHMARK(BM_decode_streaming_one_by_one)->Name("decode/streaming/one_by_one")->Apply(decode_args);
BENCHMARK(BM_decode_attn_knorm_append)->Name("decode_attn/knorm/append")->Apply(decode_args);
BENCHMARK(BM_decode_attn_knorm_batch)->Name("decode_attn/knorm/batch")->Apply(decode_args);
BENCHMARK(BM_decode_attn_knorm_one_by_one)->Name("decode_attn/knorm/one_by_one")->Apply(decode_args);

// decode_slack/<policy>/batch/4096/<x>: slack 1/x of the budget, the memory / time trade-off
// (1/64, 1/16 = the default, 1/4).
double inverse_arg(const benchmark::State& s) { return 1.0 / static_cast<double>(s.range(1)); }
void BM_slack_knorm(benchmark::State& s) { run_decode<knorm>(s, mode::batch, false, inverse_arg(s)); }
void BM_slack_streaming(benchmark::State& s) { run_decode<streaming>(s, mode::batch, false, inverse_arg(s)); }
void slack_args(benchmark::internal::Benchmark* b) {
  b->Args({4096, 64})->Args({4096, 16})->Args({4096, 4})->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_slack_knorm)->Name("decode_slack/knorm/batch")->Apply(slack_args);
BENCHMARK(BM_slack_streaming)->Name("decode_slack/streaming/batch")->Apply(slack_args);

// ------------------------------------------------------------------------ budget re-split
sensitivity_profile synthetic_profile(std::size_t L) {
  sensitivity_profile p(L);
  for (std::size_t l = 0; l < L; ++l) {
    const double s = 1.0 + 0.5 * std::sin(static_cast<double>(l));  // layers differ
    p.add_point(l, 0.1, 0.05 * s);
    p.add_point(l, 0.3, 0.02 * s);
    p.add_point(l, 0.6, 0.005 * s);
  }
  return p;
}

template <class A>
void run_budget(benchmark::State& state, const A& a) {
  const std::size_t L = static_cast<std::size_t>(state.range(0));
  const sensitivity_profile p = synthetic_profile(L);
  std::vector<std::size_t> lengths(L, 8192);
  const std::vector<std::size_t> minimums = {8};
  const decode_budget b = decode_budget::ratio(0.2);
  std::size_t t = 0;
  for (auto _ : state) {
    lengths[t % L] += 1;  // the sequence grows: never the same request twice in a row
    ++t;
    auto budgets = b.split(a, lengths, p, minimums);
    benchmark::DoNotOptimize(budgets.data());
  }
}

void budget_args(benchmark::internal::Benchmark* b) { b->Arg(32)->Arg(80)->Unit(benchmark::kMicrosecond); }

void BM_budget_uniform(benchmark::State& s) { run_budget(s, uniform_allocator{}); }
void BM_budget_pyramid(benchmark::State& s) { run_budget(s, pyramid_allocator{}); }
void BM_budget_proportional(benchmark::State& s) { run_budget(s, proportional_allocator{}); }
void BM_budget_curve(benchmark::State& s) { run_budget(s, curve_allocator{}); }

BENCHMARK(BM_budget_uniform)->Name("budget/uniform")->Apply(budget_args);
BENCHMARK(BM_budget_pyramid)->Name("budget/pyramid")->Apply(budget_args);
BENCHMARK(BM_budget_proportional)->Name("budget/proportional")->Apply(budget_args);
BENCHMARK(BM_budget_curve)->Name("budget/curve")->Apply(budget_args);

}  // namespace

DEPTHKV_BENCHMARK_MAIN()
