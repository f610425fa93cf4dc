// minillama engine: decode speed and attention time per token at long context with the full
// cache and with 50% / 20% kept; prune overhead (score + select + compact) against prefill.
// Random weights (the numbers do not depend on what the weights are).
#include <benchmark/benchmark.h>

#include "bench_main.hpp"

#include <chrono>
#include <memory>
#include <vector>

#include "depthkv/prune_paged.hpp"
#include "depthkv/decode.hpp"
#include "minillama/evict.hpp"
#include "minillama/paged_session.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

namespace {

using namespace minillama;

// dim 512, 8 heads of 64 (4 kv heads), 4 layers, hidden 1024: attention and matmuls of the
// same order at 4K context, so the effect of pruning on both is visible.
const model& bench_model() {
  static const model m = [] {
    config c;
    c.dim = 512;
    c.hidden_dim = 1024;
    c.n_layers = 4;
    c.n_heads = 8;
    c.n_kv_heads = 4;
    c.vocab_size = 256;
    c.seq_len = 8192;
    return make_random_model(c, 99);
  }();
  return m;
}

// A session whose cache holds `context` random rows per head (positions 0..context-1), then
// streaming-pruned to keep_pct % of them (sink 4 + most recent).
std::unique_ptr<session> filled_session(std::size_t context, int keep_pct) {
  const model& m = bench_model();
  auto s = std::make_unique<session>(m, context + 64);
  const std::size_t H = static_cast<std::size_t>(m.cfg.n_kv_heads), hd = static_cast<std::size_t>(m.cfg.head_dim());
  std::vector<float> k(context * H * hd), v(k.size());
  std::uint64_t st = 5;
  for (auto& x : k) x = uniform_pm1(st);
  for (auto& x : v) x = uniform_pm1(st);
  const depthkv::kv_shape shape(depthkv::heads{H}, depthkv::tokens{context}, depthkv::dim{hd});
  for (std::size_t l = 0; l < s->cache().n_layers(); ++l)
    s->cache().append(l, depthkv::kv_view<const float>::nhd(k.data(), shape),
                      depthkv::kv_view<const float>::nhd(v.data(), shape), depthkv::pos_t{0});
  s->set_position(context);
  const std::size_t keep = context * static_cast<std::size_t>(keep_pct) / 100;
  if (keep < context) {
    depthkv::policy_config sink4;
    sink4.n_sink = 4;
    prune_with_policy(*s, std::vector<std::size_t>(s->cache().n_layers(), keep), "streaming", sink4);
  }
  return s;
}

// Decode one token per iteration at `context` (arg 0) tokens with keep_pct (arg 1) % kept.
void BM_decode(benchmark::State& state) {
  const auto context = static_cast<std::size_t>(state.range(0));
  const int keep_pct = static_cast<int>(state.range(1));
  auto s = filled_session(context, keep_pct);
  const std::size_t pos = s->position();
  const double attn0 = s->attention_seconds();
  std::vector<depthkv::index_t> all;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s->decode(7));
    state.PauseTiming();  // drop the appended row so every iteration sees the same cache
    for (std::size_t l = 0; l < s->cache().n_layers(); ++l)
      for (std::size_t g = 0; g < s->cache().n_kv_heads(); ++g) {
        const std::size_t n = s->cache().length(l, g) - 1;
        all.resize(n);
        for (std::size_t i = 0; i < n; ++i) all[i] = static_cast<depthkv::index_t>(i);
        s->cache().retain(l, g, depthkv::span<const depthkv::index_t>(all));
      }
    s->set_position(pos);
    state.ResumeTiming();
  }
  const double n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());  // tokens
  state.counters["attn_us_per_token"] = (s->attention_seconds() - attn0) / n * 1e6;
  state.counters["kept_rows_per_head"] = static_cast<double>(s->cache().length(0, 0));
  state.counters["kv_MiB"] = static_cast<double>(s->cache().bytes_in_use()) / (1 << 20);
}
BENCHMARK(BM_decode)
    ->ArgNames({"context", "keep_pct"})
    ->Args({4096, 100})
    ->Args({4096, 50})
    ->Args({4096, 20})
    ->Args({8192, 100})
    ->Args({8192, 20})
    ->Unit(benchmark::kMillisecond);

// Prefill `context` tokens, then prune every layer to 50% with snapkv (window 32) through
// depthkv's pipeline. Reports both times and prune / prefill.
void BM_prefill_then_prune(benchmark::State& state) {
  const auto context = static_cast<std::size_t>(state.range(0));
  const model& m = bench_model();
  std::vector<int> toks(context);
  std::uint64_t st = 11;
  for (auto& t : toks) t = static_cast<int>(splitmix64(st) % 256);
  double prefill_s = 0, prune_s = 0;
  for (auto _ : state) {
    session s(m, context);
    forward_options o;
    o.window = 32;
    auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(s.prefill(toks, o));
    auto t1 = std::chrono::steady_clock::now();
    depthkv::policy_config pc;
    pc.n_sink = 4;
    pc.n_recent = 32;
    pc.window = 32;
    prune_with_policy(s, std::vector<std::size_t>(s.cache().n_layers(), context / 2), "snapkv", pc);
    auto t2 = std::chrono::steady_clock::now();
    prefill_s += std::chrono::duration<double>(t1 - t0).count();
    prune_s += std::chrono::duration<double>(t2 - t1).count();
  }
  const double n = static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(context));
  state.counters["prefill_ms"] = prefill_s / n * 1e3;
  state.counters["prune_ms"] = prune_s / n * 1e3;
  state.counters["prune_over_prefill"] = prune_s / prefill_s;
}
BENCHMARK(BM_prefill_then_prune)->ArgNames({"context"})->Arg(512)->Arg(1024)->Iterations(1)->Unit(benchmark::kMillisecond);

// Decode-time eviction cost (#18): decode one token per iteration at `context` (arg 0) kept rows
// per head; arg 1 = 1: the engine's streaming_evictor (depthkv::decode_evictor) holds every layer
// at `context` with a slack of 32 rows (one batch eviction per 33 tokens, 8 in the 264
// iterations), arg 1 = 0: no eviction, the appended row dropped outside the timing (BM_decode's
// method: the same kept length). tokens/s ratio evict / no-evict is the eviction's cost.
void BM_decode_evict(benchmark::State& state) {
  const auto context = static_cast<std::size_t>(state.range(0));
  const bool evict = state.range(1) != 0;
  auto s = filled_session(context, 100);
  const std::size_t pos = s->position();
  depthkv::decode_options opt;
  opt.slack = depthkv::decode_slack::tokens(32);
  streaming_evictor ev(std::vector<std::size_t>(s->cache().n_layers(), context), 4, opt);
  forward_options fo;
  if (evict) fo.hook = ev.hook();
  std::vector<depthkv::index_t> all;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s->decode(7, fo));
    if (evict) continue;
    state.PauseTiming();
    for (std::size_t l = 0; l < s->cache().n_layers(); ++l)
      for (std::size_t g = 0; g < s->cache().n_kv_heads(); ++g) {
        const std::size_t n = s->cache().length(l, g) - 1;
        all.resize(n);
        for (std::size_t i = 0; i < n; ++i) all[i] = static_cast<depthkv::index_t>(i);
        s->cache().retain(l, g, depthkv::span<const depthkv::index_t>(all));
      }
    s->set_position(pos);
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["rows_per_head_end"] = static_cast<double>(s->cache().length(0, 0));
}
BENCHMARK(BM_decode_evict)
    ->ArgNames({"context", "evict"})
    ->ArgsProduct({{4096, 16384}, {0, 1}})
    ->Iterations(264)
    ->Unit(benchmark::kMillisecond);

// The serving loop's decode step (examples/serve): `seqs` sequences (arg 0) of 1024 random rows
// per head, streaming-pruned to keep_pct % (arg 1), each decoding one token per iteration,
// round-robin; arg 2: 0 = dense sessions (one kv_cache each, the baseline), 1 = paged sessions
// sharing one pool of 16-token blocks. Items = tokens decoded. The caches grow by 16 rows over
// the 16 iterations (1.6% of 1024).
void BM_serve_decode(benchmark::State& state) {
  const auto seqs = static_cast<std::size_t>(state.range(0));
  const int keep_pct = static_cast<int>(state.range(1));
  const bool use_paged = state.range(2) != 0;
  constexpr std::size_t context = 1024, block = 16;
  const model& m = bench_model();
  const std::size_t L = static_cast<std::size_t>(m.cfg.n_layers), H = static_cast<std::size_t>(m.cfg.n_kv_heads);
  const std::size_t hd = static_cast<std::size_t>(m.cfg.head_dim());
  std::vector<float> k(context * H * hd), v(k.size());
  std::uint64_t st = 5;
  for (auto& x : k) x = uniform_pm1(st);
  for (auto& x : v) x = uniform_pm1(st);
  std::vector<depthkv::pos_t> pos(context);
  for (std::size_t i = 0; i < context; ++i) pos[i] = static_cast<depthkv::pos_t>(i);
  const depthkv::kv_shape shape(depthkv::heads{H}, depthkv::tokens{context}, depthkv::dim{hd});
  const auto kv = depthkv::kv_view<const float>::nhd(k.data(), shape), vv = depthkv::kv_view<const float>::nhd(v.data(), shape);
  const std::size_t keep = context * static_cast<std::size_t>(keep_pct) / 100;
  const depthkv::streaming policy{4, keep > 4 ? keep - 4 : 0};
  const std::size_t per_seq = H * ((context + 64) / block + 1);
  depthkv::paged_cache<float> pool(depthkv::paged_cache_shape(depthkv::layers{L}, depthkv::heads{H}, depthkv::dim{hd},
                                                              depthkv::blocks{seqs * per_seq},
                                                              depthkv::block_tokens{block}));
  std::vector<std::unique_ptr<session>> dense;
  std::vector<std::unique_ptr<paged_session>> paged;
  depthkv::paged_prune_workspace<float> pws;
  for (std::size_t i = 0; i < seqs; ++i) {
    if (use_paged) {
      paged.push_back(std::make_unique<paged_session>(m, pool));
      for (std::size_t l = 0; l < L; ++l) {
        pool.append(paged.back()->sequence(), l, kv, vv, depthkv::span<const depthkv::pos_t>(pos));
        if (keep < context) depthkv::prune_paged(pool, paged.back()->sequence(), l, keep, policy, pws);
      }
      paged.back()->set_position(context);
    } else {
      dense.push_back(filled_session(context, keep_pct));
    }
  }
  for (auto _ : state)
    for (std::size_t i = 0; i < seqs; ++i)
      benchmark::DoNotOptimize(use_paged ? paged[i]->decode(7) : dense[i]->decode(7));
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(seqs));
  std::size_t blocks = 0;
  for (std::size_t l = 0; l < L; ++l) blocks += pool.blocks_used(l);
  if (use_paged) state.counters["kv_MiB"] = static_cast<double>(blocks * pool.block_bytes()) / (1 << 20);
}
BENCHMARK(BM_serve_decode)
    ->ArgNames({"seqs", "keep_pct", "paged"})
    ->ArgsProduct({{1, 8, 32}, {100, 20}, {0, 1}})
    ->Iterations(16)
    ->Unit(benchmark::kMillisecond);

}  // namespace

DEPTHKV_BENCHMARK_MAIN()
