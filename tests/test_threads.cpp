// The thread-safety contract: calls that take a layer may run concurrently on different layers
// (kv_cache::append / retain, h2o_state::accumulate, prune_layer / enforce_budget with one
// workspace per thread). Two threads each drive half of the layers of one cache and one
// h2o_state; the result must equal a single-threaded run bit for bit. CI runs this test under
// ThreadSanitizer (.ci/run), which reports any data race between the threads.
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "depthkv/depthkv.hpp"
#include "test_util.hpp"

using namespace depthkv;

namespace {

constexpr std::size_t L = 6, H = 2, D = 16, Hq = 4, chunk = 24, steps = 12, budget = 64, w = 8;

struct model_state {
  kv_cache<float> cache{layers{L}, heads{H}, dim{D}, chunk * steps};
  h2o_state attn{L, H};
};

// Everything one layer goes through: chunks appended (positions from a count, then from a
// list), attention fed to H2O, decode-time eviction with H2O, SnapKV prunes (per head and
// adaptive) from window queries. Inputs depend only on (layer, step), so any schedule of layers
// over threads must give the same result.
void drive_layer(model_state& m, std::size_t layer, prune_workspace& ws) {
  std::mt19937 g(static_cast<std::uint32_t>(1000 + layer));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> k(H * chunk * D), v(k.size()), q(Hq * w * D), attn(chunk * steps);
  std::vector<pos_t> pos(chunk);
  const kv_shape shape(heads{H}, tokens{chunk}, dim{D});
  pos_t next = 0;
  for (std::size_t s = 0; s < steps; ++s) {
    for (auto& x : k) x = nd(g);
    for (auto& x : v) x = nd(g);
    if (s % 2 == 0) {
      m.cache.append(layer, kv_view<const float>::hnd(k.data(), shape), kv_view<const float>::hnd(v.data(), shape),
                     next);
    } else {
      for (std::size_t i = 0; i < chunk; ++i) pos[i] = next + static_cast<pos_t>(2 * i);
      m.cache.append(layer, kv_view<const float>::nhd(k.data(), shape), kv_view<const float>::nhd(v.data(), shape),
                     span<const pos_t>(pos));
    }
    next += static_cast<pos_t>(2 * chunk);
    for (std::size_t h = 0; h < H; ++h) {
      const std::size_t n = m.cache.length(layer, h);
      for (std::size_t j = 0; j < n; ++j) attn[j] = std::abs(nd(g));
      m.attn.accumulate(layer, h, span<const float>(attn.data(), n));
    }
    enforce_budget(m.cache, layer, budget, h2o{2, 4, &m.attn}, ws);
    if (s % 3 == 2) {
      for (auto& x : q) x = nd(g);
      layer_queries lq;
      lq.queries = window_queries::dense(q.data(), kv_shape(heads{Hq}, tokens{w}, dim{D}));
      snapkv p;
      p.n_sink = 1;
      p.n_recent = w;
      prune_options adaptive;
      adaptive.mode = granularity::adaptive;
      prune_layer(m.cache, layer, budget - 8, p, ws, lq, s % 2 ? adaptive : prune_options{});
      // A re-selection restarts H2O's accumulation for the rows that stayed.
      m.attn.clear(layer);
      for (std::size_t h = 0; h < H; ++h) m.attn.extend(layer, h, m.cache.length(layer, h));
    }
  }
}

void require_same(const model_state& a, const model_state& b) {
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t h = 0; h < H; ++h) {
      INFO("layer " << l << " head " << h);
      REQUIRE(a.cache.length(l, h) == b.cache.length(l, h));
      const std::size_t n = a.cache.length(l, h);
      for (std::size_t j = 0; j < n; ++j) {
        REQUIRE(a.cache.positions(l, h)[j] == b.cache.positions(l, h)[j]);
        for (std::size_t t = 0; t < D; ++t) {
          REQUIRE(a.cache.keys(l, h).row(j)[t] == b.cache.keys(l, h).row(j)[t]);
          REQUIRE(a.cache.values(l, h).row(j)[t] == b.cache.values(l, h).row(j)[t]);
        }
      }
      const auto sa = a.attn.scores(l, h), sb = b.attn.scores(l, h);
      REQUIRE(std::vector<float>(sa.begin(), sa.end()) == std::vector<float>(sb.begin(), sb.end()));
    }
}

}  // namespace

TEST_CASE("per-layer appends and prunes from two threads equal a single-threaded run", "[threads]") {
  model_state serial;
  {
    prune_workspace ws;
    for (std::size_t l = 0; l < L; ++l) drive_layer(serial, l, ws);
  }
  for (int round = 0; round < 3; ++round) {
    model_state shared;
    auto worker = [&shared](std::size_t first) {
      prune_workspace ws;  // one per thread
      for (std::size_t l = first; l < L; l += 2) drive_layer(shared, l, ws);
    };
    std::thread t0(worker, 0), t1(worker, 1);
    t0.join();
    t1.join();
    require_same(shared, serial);
  }
  // The run pruned for real: every layer ends at or under its budgets.
  for (std::size_t l = 0; l < L; ++l) REQUIRE(serial.cache.max_length(l) <= budget);
}
