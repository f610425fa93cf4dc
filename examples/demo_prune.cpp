// demo_prune: the smallest use of depthkv's cache and eviction kernels, without a model.
//
// Fills a depthkv::kv_cache<f16> (8 layers x 4 kv heads, head_dim 64) from engine-layout (NHD)
// buffers through kv_view::nhd, scores every cached row with a simple score (negative key L2
// norm, "knorm"), keeps each layer's own share of the tokens with depthkv::topk (protecting 4
// sink and 32 recent rows), compacts with kv_cache::retain and shrink_to_fit, and reports the
// kept positions and the KV memory before and after.
//
//   demo_prune [TOKENS]     tokens per head, 355..65536 (default 4096)
//
// Run from the repository root, after building (scripts/test.sh or cmake; see README.md):
//   build/examples/demo_prune
//   build/examples/demo_prune 1024
// The command line: examples/cli/demo_prune_args.cpp (`demo_prune --help`); a bad TOKENS exits
// with status 2.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <depthkv/depthkv.hpp>

#include "cli/args.hpp"

namespace {

double mib(std::size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

}  // namespace

int main(int argc, char** argv) {
  using namespace depthkv;
  // demo_prune [TOKENS]: tokens per head (examples/cli/demo_prune_args.cpp; bad values exit 2).
  const dcli::demo_prune_options opt = dcli::parse_or_exit("demo_prune", dcli::parse_demo_prune_args, argc, argv);
  const std::size_t n_layers = 8, n_kv_heads = 4, head_dim = 64;
  const std::size_t n_tokens = opt.tokens;
  // Per-layer keep ratios averaging 0.25, as a sensitivity-aware allocator might give them.
  const std::vector<double> keep_ratio(std::begin(dcli::demo_prune_keep_ratios), std::end(dcli::demo_prune_keep_ratios));
  const topk_options protect{dcli::demo_prune_sink, dcli::demo_prune_recent};  // attention sinks + recent window

  kv_cache<f16> cache(layers{n_layers}, heads{n_kv_heads}, dim{head_dim}, n_tokens);
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<f16> k(n_kv_heads * n_tokens * head_dim), v(k.size());
  for (std::size_t l = 0; l < n_layers; ++l) {
    // The engine's prefill output for this layer, [token][kv_head][head_dim] (NHD).
    for (std::size_t i = 0; i < k.size(); ++i) {
      k[i] = f16(normal(rng) * (1.0f + 0.5f * static_cast<float>((i / head_dim) % 7)));
      v[i] = f16(normal(rng));
    }
    cache.append(l, kv_view<const f16>::nhd(k.data(), kv_shape(heads{n_kv_heads}, tokens{n_tokens}, dim{head_dim})),
                 kv_view<const f16>::nhd(v.data(), kv_shape(heads{n_kv_heads}, tokens{n_tokens}, dim{head_dim})), 0);
  }
  const std::size_t before = cache.bytes_reserved();
  std::printf("depthkv %s demo: %zu layers x %zu kv heads x %zu tokens x head_dim %zu (f16)\n",
              DEPTHKV_VERSION_STRING, n_layers, n_kv_heads, n_tokens, head_dim);
  std::printf("protected per head: first %zu (sinks) + last %zu (recent) tokens\n\n", protect.n_sink,
              protect.n_recent);
  std::printf("%-6s %-6s %-7s %-9s %-30s %s\n", "layer", "keep", "kept", "MiB", "first kept positions (head 0)",
              "last kept");

  std::vector<float> scores(n_tokens);
  std::vector<index_t> keep(n_tokens);
  std::size_t kept_total = 0;
  for (std::size_t l = 0; l < n_layers; ++l) {
    const auto k_keep = static_cast<std::size_t>(std::llround(keep_ratio[l] * static_cast<double>(n_tokens)));
    for (std::size_t h = 0; h < n_kv_heads; ++h) {
      const auto keys = cache.keys(l, h);
      for (std::size_t t = 0; t < keys.n; ++t) {
        double ss = 0;
        for (std::size_t d = 0; d < head_dim; ++d) ss += double(float(keys.row(t)[d])) * float(keys.row(t)[d]);
        scores[t] = -static_cast<float>(std::sqrt(ss));
      }
      const std::size_t m = topk(span<const float>(scores.data(), keys.n), k_keep, keep, protect);
      cache.retain(l, h, span<const index_t>(keep.data(), m));
    }
    cache.shrink_to_fit(l);
    auto pos = cache.positions(l, 0);
    std::string first;
    for (std::size_t i = 0; i < pos.size() && i < 6; ++i) first += std::to_string(pos[i]) + " ";
    std::printf("%-6zu %-6.2f %-7zu %-9.3f %-30s %d\n", l, keep_ratio[l], cache.length(l, 0),
                mib(cache.bytes_reserved(l)), first.c_str(), pos.empty() ? -1 : pos[pos.size() - 1]);
    kept_total += cache.length(l, 0);
  }
  const std::size_t after = cache.bytes_reserved();
  std::printf("\nkept %zu of %zu tokens per head over all layers (%.1f%%)\n", kept_total, n_layers * n_tokens,
              100.0 * static_cast<double>(kept_total) / static_cast<double>(n_layers * n_tokens));
  std::printf("KV memory: %.2f MiB before, %.2f MiB after pruning + shrink_to_fit (%.1f%% of full)\n", mib(before),
              mib(after), 100.0 * static_cast<double>(after) / static_cast<double>(before));
  return 0;
}
