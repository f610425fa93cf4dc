// The thread-safety contract of paged pruning (prune_paged.hpp, cache/paged_cache.hpp): views of
// different sequences over one shared pool may be pruned concurrently (token- and
// block-granular, one workspace per thread, one h2o_state per sequence); on a paged_cache the
// views are taken and pruned from threads and committed serially, and layer members run
// concurrently on different layers. Each threaded run must equal a serial run bit for bit. CI
// runs this test under ThreadSanitizer (.ci/run), which reports any data race.
#include <cstdint>
#include <cstring>
#include <exception>
#include <numeric>
#include <random>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "depthkv/depthkv.hpp"
#include "depthkv/prune_paged.hpp"

using namespace depthkv;

namespace {

constexpr std::size_t S = 4, L = 2, H = 2, Hq = 4, D = 16, B = 4, w = 8, rounds = 3;
using T = f16;

std::uint32_t seed_of(std::size_t seq, std::size_t layer, std::size_t round, std::size_t salt) {
  return static_cast<std::uint32_t>(1 + seq * 1000 + layer * 100 + round * 10 + salt);
}

// Prunes one sequence's layer with a policy and granularity picked by (seq, layer, round): feeds
// H2O one attention row per head, then token- or block-granular with snapkv, h2o, knorm, tova or
// streaming. With `cache` set, token-granular prunes go through prune_paged(cache, ...) and
// block-granular ones commit their tables (the view must come from cache->layer_view(tables)).
void prune_one(const paged_layer<T>& view, std::vector<block_table>* tables, paged_cache<T>* cache, std::size_t seq,
               std::size_t layer, std::size_t round, h2o_state& state, paged_prune_workspace<T>& ws) {
  std::mt19937 g(seed_of(seq, layer, round, 1));
  std::normal_distribution<float> nd(0.f, 1.f);
  std::size_t n = 0, nb = 0;
  for (std::size_t h = 0; h < H; ++h) {
    std::vector<float> attn(view.length(h));
    for (auto& x : attn) x = std::abs(nd(g));
    state.accumulate(layer, h, span<const float>(attn));
    n = std::max(n, view.length(h));
    nb = std::max(nb, view.table(h).blocks.size());
  }
  std::vector<float> q(Hq * w * D);
  for (auto& x : q) x = nd(g);
  layer_queries lq;
  lq.queries = window_queries::dense(q.data(), kv_shape(heads{Hq}, tokens{w}, dim{D}));
  const bool one_table = view.tables.size() == 1;
  const std::size_t keep = std::max(w + 4, n * 3 / 4);
  const blocks keep_blocks{std::max<std::size_t>(4, nb * 3 / 4)};
  prune_options opt;
  auto token = [&](const auto& policy, granularity mode) {
    opt.mode = one_table ? granularity::shared : mode;
    if (cache != nullptr) (void)prune_paged(*cache, seq, layer, keep, policy, ws, lq, opt);
    else (void)prune_paged(view, layer, keep, policy, ws, lq, opt);
  };
  auto block = [&](const auto& policy, block_score agg) {
    (void)prune_paged_blocks(view, layer, keep_blocks, policy, ws, lq, agg);
    if (cache != nullptr) (void)cache->commit_tables(seq, layer, span<const block_table>(*tables));
  };
  snapkv sk;
  sk.n_sink = 1;
  sk.n_recent = w;
  const std::size_t pick = (seq + layer + round) % 7;
  switch (pick) {
    case 0: token(sk, granularity::per_head); break;
    case 1: token(h2o{2, 4, &state}, granularity::adaptive); break;
    case 2: token(knorm{1, 2}, granularity::per_head); break;
    case 3: block(h2o{2, 4, &state}, block_score::sum); break;
    case 4: block(sk, block_score::max); break;
    case 5: token(tova{1, 4, {}}, granularity::adaptive); break;
    default: block(streaming{4, 4}, block_score::sum); break;
  }
  if (pick == 1 || pick == 3) return;  // h2o compacted its state with the cache
  // Other policies: the state restarts for the rows that stayed (as after a re-selection).
  state.clear(layer);
  for (std::size_t h = 0; h < H; ++h)
    state.extend(layer, h, cache != nullptr ? cache->length(seq, layer, h) : view.length(h));
}

// Runs f(0) and f(1) on two threads (or both on this one) and rethrows the first error here:
// Catch2's assertions are not thread-safe, so workers only throw.
template <class F>
void run_two(bool threaded, F&& f) {
  std::exception_ptr err[2];
  auto body = [&](std::size_t t) {
    try {
      f(t);
    } catch (...) {
      err[t] = std::current_exception();
    }
  };
  if (threaded) {
    std::thread t0(body, 0), t1(body, 1);
    t0.join();
    t1.join();
  } else {
    body(0);
    body(1);
  }
  for (const auto& e : err)
    if (e) std::rethrow_exception(e);
}

// ------------------------------------------------------------------ views over shared pools
// S sequences' layers in one pool per layer (layer 0: pages of one head, a table per head;
// layer 1: pages of every head, one table), block ids shuffled so neighbouring blocks belong
// to different sequences. Built only from a seed: two instances start identical.
struct shared_pools {
  std::size_t n_blocks[L] = {};
  std::vector<T> k[L], v[L];
  std::vector<pos_t> pos[L];
  std::vector<std::vector<std::int32_t>> ids[S][L];  // per table
  std::vector<block_table> tables[S][L];
  std::vector<h2o_state> states;

  shared_pools() : states(S, h2o_state(L, H)) {
    std::mt19937 g(99);
    std::normal_distribution<float> nd(0.f, 1.f);
    for (std::size_t l = 0; l < L; ++l) {
      const std::size_t n_tables = l == 0 ? H : 1, pool_heads = l == 0 ? 1 : H;
      std::size_t total = 0;
      for (std::size_t s = 0; s < S; ++s) total += n_tables * ((length(s) + B - 1) / B);
      n_blocks[l] = total + 5;
      std::vector<std::int32_t> all(n_blocks[l]);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), g);
      k[l].resize(n_blocks[l] * B * pool_heads * D);
      v[l].resize(k[l].size());
      for (auto& x : k[l]) x = T(nd(g));
      for (auto& x : v[l]) x = T(nd(g));
      pos[l].assign(n_blocks[l] * B, -1);
      std::size_t next = 0;
      for (std::size_t s = 0; s < S; ++s) {
        const std::size_t n = length(s), per_table = (n + B - 1) / B;
        ids[s][l].resize(n_tables);
        tables[s][l].resize(n_tables);
        for (std::size_t i = 0; i < n_tables; ++i) {
          ids[s][l][i].assign(all.begin() + static_cast<std::ptrdiff_t>(next),
                              all.begin() + static_cast<std::ptrdiff_t>(next + per_table));
          next += per_table;
          tables[s][l][i] = block_table{span<std::int32_t>(ids[s][l][i]), n - (per_table - 1) * B};
        }
        const paged_layer<T> lv = view(s, l);
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t t = 0; t < n; ++t) *lv.position(h, t) = static_cast<pos_t>(2 * t + s);
      }
    }
  }
  static std::size_t length(std::size_t s) { return 70 + 13 * s; }  // partial last blocks
  paged_layer<T> view(std::size_t s, std::size_t l) {
    const page_shape shape(blocks{n_blocks[l]}, block_tokens{B}, heads{l == 0 ? 1 : H}, dim{D});
    return paged_layer<T>{page_pool_view<T>(k[l].data(), shape, layout::nhd),
                          page_pool_view<T>(v[l].data(), shape, layout::nhd), span<pos_t>(pos[l]),
                          span<block_table>(tables[s][l]), H};
  }
};

// Every round prunes every layer of every sequence; thread t takes sequences t, t + 2, ...
void drive_views(shared_pools& p, bool threaded) {
  for (std::size_t r = 0; r < rounds; ++r)
    run_two(threaded, [&](std::size_t t) {
      paged_prune_workspace<T> ws;  // one per thread
      for (std::size_t s = t; s < S; s += 2)
        for (std::size_t l = 0; l < L; ++l) prune_one(p.view(s, l), nullptr, nullptr, s, l, r, p.states[s], ws);
    });
}

void require_same(const shared_pools& a, const shared_pools& b) {
  for (std::size_t l = 0; l < L; ++l) {
    INFO("layer " << l);
    REQUIRE(std::memcmp(a.k[l].data(), b.k[l].data(), a.k[l].size() * sizeof(T)) == 0);
    REQUIRE(std::memcmp(a.v[l].data(), b.v[l].data(), a.v[l].size() * sizeof(T)) == 0);
    REQUIRE(a.pos[l] == b.pos[l]);
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t i = 0; i < a.tables[s][l].size(); ++i) {
        const block_table &x = a.tables[s][l][i], &y = b.tables[s][l][i];
        REQUIRE(x.last_fill == y.last_fill);
        REQUIRE(std::vector<std::int32_t>(x.blocks.begin(), x.blocks.end()) ==
                std::vector<std::int32_t>(y.blocks.begin(), y.blocks.end()));
      }
  }
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t h = 0; h < H; ++h) {
        const auto x = a.states[s].scores(l, h), y = b.states[s].scores(l, h);
        REQUIRE(std::vector<float>(x.begin(), x.end()) == std::vector<float>(y.begin(), y.end()));
      }
}

// ------------------------------------------------------------------ an owning paged_cache
struct cache_model {
  paged_cache<T> cache{paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{600}, block_tokens{B})};
  std::vector<h2o_state> states = std::vector<h2o_state>(S, h2o_state(L, H));
  pos_t next_pos[S] = {};
  cache_model() {
    for (std::size_t s = 0; s < S; ++s) (void)cache.add_sequence();
  }
  // Appends round r's chunk (40 + 7s tokens) to (s, l); positions continue per layer.
  void append(std::size_t s, std::size_t l, std::size_t r) {
    std::mt19937 g(seed_of(s, l, r, 2));
    std::normal_distribution<float> nd(0.f, 1.f);
    const std::size_t n = 40 + 7 * s;
    std::vector<T> kk(H * n * D), vv(kk.size());
    for (auto& x : kk) x = T(nd(g));
    for (auto& x : vv) x = T(nd(g));
    std::vector<pos_t> p(n);
    const pos_t first = static_cast<pos_t>(r * 1000);
    for (std::size_t i = 0; i < n; ++i) p[i] = first + static_cast<pos_t>(3 * i);
    const kv_shape shape(heads{H}, tokens{n}, dim{D});
    cache.append(s, l, kv_view<const T>::hnd(kk.data(), shape), kv_view<const T>::hnd(vv.data(), shape),
                 span<const pos_t>(p));
  }
};

// Per round: serial appends, views taken and pruned from two threads (sequences split), serial
// commits.
void drive_cache_views(cache_model& m, bool threaded) {
  std::vector<block_table> tables[S][L];
  for (std::size_t r = 0; r < rounds; ++r) {
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t l = 0; l < L; ++l) m.append(s, l, r);
    run_two(threaded, [&](std::size_t t) {
      paged_prune_workspace<T> ws;
      for (std::size_t s = t; s < S; s += 2)
        for (std::size_t l = 0; l < L; ++l)
          prune_one(m.cache.layer_view(s, l, tables[s][l]), nullptr, nullptr, s, l, r, m.states[s], ws);
    });
    for (std::size_t s = 0; s < S; ++s)
      for (std::size_t l = 0; l < L; ++l) (void)m.cache.commit_tables(s, l, span<const block_table>(tables[s][l]));
  }
}

// Thread t owns layer t: appends, prunes through the cache and commits, every sequence, every round.
void drive_cache_layers(cache_model& m, bool threaded) {
  run_two(threaded, [&](std::size_t l) {
    paged_prune_workspace<T> ws;
    std::vector<block_table> tables;
    for (std::size_t r = 0; r < rounds; ++r)
      for (std::size_t s = 0; s < S; ++s) {
        m.append(s, l, r);
        prune_one(m.cache.layer_view(s, l, tables), &tables, &m.cache, s, l, r, m.states[s], ws);
      }
  });
}

void require_same(const cache_model& a, const cache_model& b) {
  for (std::size_t l = 0; l < L; ++l) {
    INFO("layer " << l);
    REQUIRE(a.cache.blocks_used(l) == b.cache.blocks_used(l));
    for (std::size_t s = 0; s < S; ++s) {
      REQUIRE(a.cache.blocks_held(s, l) == b.cache.blocks_held(s, l));
      for (std::size_t h = 0; h < H; ++h) {
        INFO("sequence " << s << " head " << h);
        const std::size_t n = a.cache.length(s, l, h);
        REQUIRE(n == b.cache.length(s, l, h));
        for (std::size_t t = 0; t < n; ++t) {
          REQUIRE(a.cache.position(s, l, h, t) == b.cache.position(s, l, h, t));
          REQUIRE(std::memcmp(a.cache.key_row(s, l, h, t), b.cache.key_row(s, l, h, t), D * sizeof(T)) == 0);
          REQUIRE(std::memcmp(a.cache.value_row(s, l, h, t), b.cache.value_row(s, l, h, t), D * sizeof(T)) == 0);
        }
        const auto x = a.states[s].scores(l, h), y = b.states[s].scores(l, h);
        REQUIRE(std::vector<float>(x.begin(), x.end()) == std::vector<float>(y.begin(), y.end()));
        REQUIRE(x.size() == n);  // the state followed every prune
      }
    }
  }
}

}  // namespace

TEST_CASE("prune_paged on different sequences' views of one pool from two threads equals a serial run",
          "[threads][paged]") {
  shared_pools serial;
  drive_views(serial, false);
  std::size_t kept = 0, before = 0;
  for (std::size_t s = 0; s < S; ++s)
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t h = 0; h < H; ++h) {
        kept += serial.view(s, l).length(h);
        before += shared_pools::length(s);
      }
  REQUIRE(kept < before / 2);  // every round pruned for real
  for (int rep = 0; rep < 3; ++rep) {
    shared_pools shared;
    drive_views(shared, true);
    require_same(shared, serial);
  }
}

TEST_CASE("paged_cache: views pruned from two threads, committed serially, equal a serial run", "[threads][paged]") {
  cache_model serial;
  drive_cache_views(serial, false);
  for (int rep = 0; rep < 3; ++rep) {
    cache_model shared;
    drive_cache_views(shared, true);
    require_same(shared, serial);
  }
  for (std::size_t s = 0; s < S; ++s) serial.cache.free_sequence(s);
  for (std::size_t l = 0; l < L; ++l) REQUIRE(serial.cache.blocks_used(l) == 0);
}

TEST_CASE("paged_cache: appends and prunes on different layers from two threads equal a serial run",
          "[threads][paged]") {
  cache_model serial;
  drive_cache_layers(serial, false);
  for (int rep = 0; rep < 3; ++rep) {
    cache_model shared;
    drive_cache_layers(shared, true);
    require_same(shared, serial);
  }
}
