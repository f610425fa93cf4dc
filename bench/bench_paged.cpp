// Capacity of a fixed paged pool (issue #16, benchmark 7(b)): how many concurrent 4K-token
// sequences one paged_cache<f16> holds when every sequence is pruned to keep 100 / 50 / 20% of
// its prompt. Target: >= 0.9 / keep times the keep-100% count (>= 1.8x at 50%, >= 4.5x at 20%).
//
// Shape: 2 layers, 8 kv heads (32 query heads, GQA 4), head_dim 64, 16-token blocks of one kv
// head (4160 bytes: K + V pages + positions), a 256 MiB pool (128 MiB = 32263 blocks per
// layer). A 4096-token sequence needs 256 blocks per head, 2048 per layer: 15 fit unpruned.
// The capacity ratio depends on tokens per block and keep, not on the layer count or head_dim.
//
// capacity/keep_pct/blocks/chunk: the vLLM-style admission loop. A new sequence is admitted
// only while its prefill fits: before each append the free blocks of every layer are checked
// (no preemption), and the first sequence that does not fit ends the run (it is freed, so a
// half-prefilled one never counts). Prefill appends 4096 tokens per layer (random f16 keys and
// values, positions 0..4095), then for keep < 100% prunes every layer with SnapKV (32-query
// window of random queries, n_sink 4, n_recent 32, per-head top-k) to keep * 4096 tokens per
// kv head, which returns the emptied blocks to the pool. blocks = 0: token-granular
// prune_paged (rows move, tables shrink to ceil(kept / 16) blocks); blocks = 1: block-granular
// prune_paged_blocks to the same block count (whole blocks kept by summed score, no row moves).
// chunk = 0: one 4096-token append per layer, then one prune. chunk = 512: chunked prefill, 8
// appends of 512 tokens per layer, each followed by a prune once the head is over budget (the
// window is the chunk's last 32 queries).
//
// Why the transient peak matters: the last admitted sequence needs its whole prefill in blocks
// before it is pruned (2048 per layer here), while each admitted one holds only keep's share
// afterwards. So the count is 1 + (pool - peak) / steady, not pool / steady: the run stops
// with up to peak / steady pruned sequences' worth of blocks free. Chunked prefill with a prune
// after every chunk caps the peak at about keep + one chunk, which raises the count.
//
// Counters: sequences (held when the next prefill does not fit), ratio (sequences / the
// keep-100% count, measured in this binary), target (0.9 / keep), meets_target (1 or 0),
// blocks_per_seq (blocks one held sequence uses per layer, all heads), peak_blocks (the most
// one sequence held in a layer during its prefill), pool_blocks (per layer), no_peak_bound
// (pool / blocks_per_seq: the count if prefill cost no extra blocks). One iteration per run.
#include <benchmark/benchmark.h>

#include "bench_main.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "depthkv/cache/paged_cache.hpp"
#include "depthkv/prune_paged.hpp"

using namespace depthkv;

namespace {

constexpr std::size_t L = 2, H = 8, Hq = 32, D = 64, B = 16, n_prompt = 4096, w = 32, chunk_tokens = 512;
constexpr std::size_t pool_mib = 256;  // the whole pool, all layers
constexpr std::size_t spread = 509;    // source offsets: sequences and layers see different data

std::size_t pool_blocks_per_layer() {
  const std::size_t block_bytes = B * (2 * D * sizeof(f16) + sizeof(pos_t));
  return pool_mib * 1024 * 1024 / L / block_bytes;
}

// Random keys / values (NHD [n_prompt + spread][H][D]) and queries (token-major
// [n_prompt + spread][Hq][D]); a sequence reads a window of them at its own offset.
struct sources {
  std::vector<f16> k, v;
  std::vector<float> q;
  std::vector<pos_t> positions;
  sources() : k((n_prompt + spread) * H * D), v(k.size()), q((n_prompt + spread) * Hq * D), positions(n_prompt) {
    std::mt19937 g(17);
    std::normal_distribution<float> nd;
    for (auto& x : k) x = f16(nd(g));
    for (auto& x : v) x = f16(nd(g));
    for (auto& x : q) x = nd(g);
    std::iota(positions.begin(), positions.end(), pos_t(0));
  }
  static const sources& get() {
    static const sources s;
    return s;
  }
};

struct capacity_config {
  std::size_t keep_pct = 100;
  bool block_granular = false;
  bool chunked = false;
};

struct capacity_result {
  std::size_t sequences = 0, blocks_per_seq = 0, peak_blocks = 0, pool_blocks = 0;
};

// Blocks one head needs to grow from n to n + c tokens.
std::size_t blocks_for(std::size_t n, std::size_t c) { return (n + c + B - 1) / B - (n + B - 1) / B; }

// Fills the pool with sequences until the next prefill does not fit.
capacity_result run_capacity(const capacity_config& cfg) {
  const sources& src = sources::get();
  capacity_result r;
  r.pool_blocks = pool_blocks_per_layer();
  paged_cache<f16> cache(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{r.pool_blocks}, block_tokens{B}));
  paged_prune_workspace<f16> ws;
  std::vector<block_table> tables;
  snapkv policy;
  policy.n_sink = 4;
  policy.n_recent = w;
  const std::size_t keep_tokens = n_prompt * cfg.keep_pct / 100, keep_blocks = (keep_tokens + B - 1) / B;
  const std::size_t step = cfg.chunked ? chunk_tokens : n_prompt;
  for (;;) {
    const auto id = cache.add_sequence();
    const std::size_t offset = (r.sequences * 131) % spread;
    std::size_t peak = 0;
    bool fits = true;
    for (std::size_t c0 = 0; c0 < n_prompt && fits; c0 += step) {
      const std::size_t c = std::min(step, n_prompt - c0);
      for (std::size_t l = 0; l < L && fits; ++l) {  // admission: this chunk fits in every layer
        std::size_t need = 0;
        for (std::size_t h = 0; h < H; ++h) need += blocks_for(cache.length(id, l, h), c);
        fits = need <= cache.blocks_free(l);
      }
      if (!fits) break;
      for (std::size_t l = 0; l < L; ++l) {
        const std::size_t at = (offset + 37 * l) % spread + c0;  // token index into the sources
        const kv_shape shape(heads{H}, tokens{c}, dim{D});
        cache.append(id, l, kv_view<const f16>::nhd(src.k.data() + at * H * D, shape),
                     kv_view<const f16>::nhd(src.v.data() + at * H * D, shape),
                     span<const pos_t>(src.positions.data() + c0, c));
        peak = std::max(peak, cache.blocks_held(id, l));
        const bool over = cfg.block_granular ? cache.blocks_held(id, l) > keep_blocks * H
                                             : cache.length(id, l, 0) > keep_tokens;
        if (cfg.keep_pct >= 100 || !over) continue;
        layer_queries lq;  // the chunk's last w queries
        lq.queries = window_queries::token_major(src.q.data() + (at + c - w) * Hq * D,
                                                 kv_shape(heads{Hq}, tokens{w}, dim{D}));
        if (!cfg.block_granular) {
          (void)prune_paged(cache, id, l, keep_tokens, policy, ws, lq);
        } else {
          const paged_layer<f16> view = cache.layer_view(id, l, tables);
          (void)prune_paged_blocks(view, l, blocks{keep_blocks}, policy, ws, lq);
          (void)cache.commit_tables(id, l, span<const block_table>(tables));
        }
      }
    }
    if (!fits) {  // not admitted: whatever it took goes back
      cache.free_sequence(id);
      break;
    }
    r.peak_blocks = std::max(r.peak_blocks, peak);
    ++r.sequences;
  }
  if (r.sequences > 0) r.blocks_per_seq = cache.blocks_used(0) / r.sequences;
  return r;
}

// The keep-100% count: from its own benchmark when that ran first, else measured on first use.
std::optional<std::size_t> g_full_count;
std::size_t full_count() {
  if (!g_full_count) g_full_count = run_capacity(capacity_config{}).sequences;
  return *g_full_count;
}

void BM_capacity(benchmark::State& st) {
  capacity_config cfg;
  cfg.keep_pct = static_cast<std::size_t>(st.range(0));
  cfg.block_granular = st.range(1) != 0;
  cfg.chunked = st.range(2) != 0;
  const bool is_baseline = cfg.keep_pct >= 100;
  if (!is_baseline) (void)full_count();  // outside the timed run
  capacity_result r;
  for (auto _ : st) r = run_capacity(cfg);
  if (is_baseline) g_full_count = r.sequences;
  const double base = static_cast<double>(*g_full_count);
  const double ratio = base > 0 ? static_cast<double>(r.sequences) / base : 0.0;
  const double target = 0.9 * 100.0 / static_cast<double>(cfg.keep_pct);
  st.counters["sequences"] = static_cast<double>(r.sequences);
  st.counters["ratio"] = ratio;
  st.counters["target"] = target;
  st.counters["meets_target"] = ratio >= target ? 1.0 : 0.0;
  st.counters["blocks_per_seq"] = static_cast<double>(r.blocks_per_seq);
  st.counters["peak_blocks"] = static_cast<double>(r.peak_blocks);
  st.counters["pool_blocks"] = static_cast<double>(r.pool_blocks);
  st.counters["no_peak_bound"] =
      r.blocks_per_seq > 0 ? static_cast<double>(r.pool_blocks / r.blocks_per_seq) : 0.0;
  st.SetLabel(std::string(cfg.block_granular ? "block-granular" : "token-granular") +
              (cfg.chunked ? " chunked-512" : " one-shot") + " keep " + std::to_string(cfg.keep_pct) + "%");
}

void capacity_args(benchmark::internal::Benchmark* b) {
  b->Args({100, 0, 0});  // the baseline: first, so the others reuse its count
  for (int pct : {50, 20})
    for (int blk : {0, 1})
      for (int chunked : {0, 1}) b->Args({pct, blk, chunked});
  b->ArgNames({"keep_pct", "blocks", "chunk"});
  b->Iterations(1);
  b->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_capacity)->Apply(capacity_args);

}  // namespace

DEPTHKV_BENCHMARK_MAIN()
