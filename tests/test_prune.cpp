// The prune pipeline: per-head / shared / adaptive (Ada-KV) selection against naive references,
// protected rows, rows really moved, memory freed, h2o decode loop invariants, engine views,
// steady-state allocation, and errors leaving the cache unchanged.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "catch.hpp"
#include "depthkv/prune.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::dump_rows;
using depthkv_test::require_error;
using depthkv_test::rng;

#include "count_allocations.hpp"  // g_news: operator new calls so far

namespace {

// K rows random (head h scaled by 1 + h so heads differ), V row = (layer, head, position, ...).
template <class T>
kv_cache<T> make_cache(std::size_t L, std::size_t H, std::size_t d, std::size_t n, std::size_t cap = 0) {
  kv_cache<T> c(layers{L}, heads{H}, dim{d}, cap ? cap : n);
  std::normal_distribution<float> nd;
  for (std::size_t l = 0; l < L; ++l) {
    std::vector<T> k(H * n * d), v(H * n * d);
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t j = 0; j < n; ++j)
        for (std::size_t t = 0; t < d; ++t) {
          k[(h * n + j) * d + t] = T(nd(rng()) * float(1 + h));
          v[(h * n + j) * d + t] = T(float(t == 0 ? l : t == 1 ? h : t == 2 ? j : 0));
        }
    c.append(l, kv_view<const T>::hnd(k.data(), kv_shape(heads{H}, tokens{n}, dim{d})), kv_view<const T>::hnd(v.data(), kv_shape(heads{H}, tokens{n}, dim{d})), pos_t(0));
  }
  return c;
}

// Naive selection: protected rows, then the best by (score desc, index asc), ascending output.
std::vector<index_t> naive_select(const std::vector<float>& s, std::size_t k, std::size_t sink, std::size_t recent) {
  const std::size_t n = s.size();
  if (k >= n) {
    std::vector<index_t> all(n);
    std::iota(all.begin(), all.end(), 0u);
    return all;
  }
  std::vector<index_t> sel, rest;
  for (std::size_t j = 0; j < n; ++j) (j < sink || j + recent >= n ? sel : rest).push_back(index_t(j));
  std::stable_sort(rest.begin(), rest.end(), [&](index_t a, index_t b) { return s[a] > s[b]; });
  for (std::size_t i = 0; sel.size() < k; ++i) sel.push_back(rest[i]);
  std::sort(sel.begin(), sel.end());
  return sel;
}

template <class T, class P>
std::vector<float> head_scores(const kv_cache<T>& c, std::size_t l, std::size_t h, const P& p,
                               const layer_queries& q = {}) {
  head_input<T> in;
  in.layer = l;
  in.kv_head = h;
  in.n_kv_heads = c.n_kv_heads();
  in.keys = c.keys(l, h);
  in.positions = c.positions(l, h);
  in.queries = q.queries.empty() ? nullptr : &q.queries;
  in.query_positions = q.query_positions;
  score_scratch s;
  std::vector<float> out(in.keys.n);
  p.score(in, out, s);
  return out;
}

// The kept rows of (l, h) are exactly the original rows `expect` (by position), K and V intact.
template <class T>
void require_kept(const kv_cache<T>& before, const kv_cache<T>& after, std::size_t l, std::size_t h,
                  const std::vector<index_t>& expect) {
  REQUIRE(after.length(l, h) == expect.size());
  const auto kb = before.keys(l, h), ka = after.keys(l, h), va = after.values(l, h);
  for (std::size_t i = 0; i < expect.size(); ++i) {
    REQUIRE(after.positions(l, h)[i] == before.positions(l, h)[expect[i]]);
    for (std::size_t t = 0; t < ka.dim; ++t) REQUIRE(float(ka.row(i)[t]) == float(kb.row(expect[i])[t]));
    REQUIRE(float(va.row(i)[2]) == float(expect[i]));
    REQUIRE(float(va.row(i)[1]) == float(h));
  }
}

}  // namespace

TEMPLATE_TEST_CASE("prune_layer per head matches the naive selection", "[prune]", float, f16, bf16) {
  auto cache = make_cache<TestType>(2, 3, 16, 50);
  const auto before = cache;
  knorm p{2, 3};
  prune_workspace ws;
  prune_layer(cache, 1, 12, p, ws);
  for (std::size_t h = 0; h < 3; ++h) {
    const auto expect = naive_select(head_scores(before, 1, h, p), 12, 2, 3);
    require_kept(before, cache, 1, h, expect);
    CHECK(cache.capacity(1, h) == 50);  // compacted in place, nothing reallocated
  }
  CHECK(dump_rows(cache).size() < dump_rows(before).size());
  for (std::size_t h = 0; h < 3; ++h) CHECK(cache.length(0, h) == 50);  // other layer untouched
}

TEST_CASE("prune_layer shared: one token set from head-averaged scores", "[prune]") {
  auto cache = make_cache<float>(1, 4, 8, 40);
  const auto before = cache;
  random_policy p{1, 2, 7};
  prune_workspace ws;
  prune_options o;
  o.mode = granularity::shared;
  prune_layer(cache, 0, 10, p, ws, {}, o);
  std::vector<float> mean(40, 0.f);
  for (std::size_t h = 0; h < 4; ++h) {
    const auto s = head_scores(before, 0, h, p);
    for (std::size_t j = 0; j < 40; ++j) mean[j] += s[j] / 4.f;
  }
  const auto expect = naive_select(mean, 10, 1, 2);
  for (std::size_t h = 0; h < 4; ++h) require_kept(before, cache, 0, h, expect);
  CHECK(cache.length(0) == 10);
}

TEST_CASE("prune_layer adaptive (Ada-KV): global top with per-head floors, memory freed", "[prune]") {
  const std::size_t H = 4, n = 64, keep = 16;
  auto cache = make_cache<float>(1, H, 8, n);
  const auto before = cache;
  knorm p{1, 1};  // heads scaled by 1 + h: head 0 has the smallest norms -> highest scores
  prune_workspace ws;
  prune_options o;
  o.mode = granularity::adaptive;
  o.alpha = 0.5f;
  prune_layer(cache, 0, keep, p, ws, {}, o);
  // Naive: floors of ceil(0.5 * 16) = 8 per head, then the best 64 - 32 = 32 remaining pairs.
  std::vector<std::vector<index_t>> sel(H);
  std::vector<std::vector<float>> sc(H);
  struct cand {
    float s;
    std::size_t h;
    index_t j;
  };
  std::vector<cand> rest;
  for (std::size_t h = 0; h < H; ++h) {
    sc[h] = head_scores(before, 0, h, p);
    sel[h] = naive_select(sc[h], 8, 1, 1);
    for (index_t j = 0; j < n; ++j)
      if (!std::binary_search(sel[h].begin(), sel[h].end(), j)) rest.push_back({sc[h][j], h, j});
  }
  std::stable_sort(rest.begin(), rest.end(), [](const cand& a, const cand& b) { return a.s > b.s; });
  for (std::size_t i = 0; i < H * keep - 4 * 8; ++i) sel[rest[i].h].push_back(rest[i].j);
  std::size_t total = 0;
  std::set<std::size_t> lengths;
  for (std::size_t h = 0; h < H; ++h) {
    std::sort(sel[h].begin(), sel[h].end());
    require_kept(before, cache, 0, h, sel[h]);
    CHECK(cache.length(0, h) >= 8);
    total += cache.length(0, h);
    lengths.insert(cache.length(0, h));
  }
  CHECK(total == H * keep);
  CHECK(lengths.size() > 1);                    // heads really differ
  CHECK(cache.length(0, 0) > cache.length(0, 3));  // the low-norm head got more
  const std::size_t reserved = cache.bytes_reserved(0);
  cache.shrink_to_fit(0);
  CHECK(cache.bytes_reserved(0) == total * cache.row_bytes());
  CHECK(cache.bytes_reserved(0) < reserved);
}

TEST_CASE("snapkv prune with window queries and protected window", "[prune]") {
  const std::size_t H = 2, Hq = 8, d = 32, n = 120, w = 8;
  auto cache = make_cache<f16>(1, H, d, n);
  const auto before = cache;
  std::vector<float> q(Hq * w * d);
  std::normal_distribution<float> nd;
  for (auto& x : q) x = nd(rng());
  layer_queries lq{window_queries::dense(q.data(), kv_shape(heads{Hq}, tokens{w}, dim{d})), {}};
  snapkv p;
  p.n_sink = 4;
  p.n_recent = w;
  prune_workspace ws;
  prune_layer(cache, 0, 30, p, ws, lq);
  for (std::size_t h = 0; h < H; ++h) {
    const auto expect = naive_select(head_scores(before, 0, h, p, lq), 30, 4, w);
    require_kept(before, cache, 0, h, expect);
    for (std::size_t j = 0; j < 4; ++j) CHECK(cache.positions(0, h)[j] == pos_t(j));
    CHECK(cache.positions(0, h)[29] == pos_t(n - 1));
  }
}

TEST_CASE("prune over all layers with per-layer keep counts", "[prune]") {
  auto cache = make_cache<float>(3, 2, 8, 30);
  const auto before = cache;
  const std::vector<std::size_t> keep{30, 5, 100};
  streaming p{2, 0};
  prune_workspace ws;
  prune(cache, keep, p, ws);
  for (std::size_t h = 0; h < 2; ++h) {
    CHECK(cache.length(0, h) == 30);
    CHECK(cache.length(2, h) == 30);
    require_kept(before, cache, 1, h, {0, 1, 27, 28, 29});  // 2 sinks + the 3 most recent
  }
}

TEST_CASE("prune is allocation-free in steady state", "[prune]") {
  const std::vector<float> q(16 * 4 * 32, 0.5f);
  layer_queries lq{window_queries::dense(q.data(), kv_shape(heads{16}, tokens{4}, dim{32})), {}};
  prune_workspace ws;
  for (granularity g : {granularity::per_head, granularity::shared, granularity::adaptive}) {
    prune_options o;
    o.mode = g;
    auto c1 = make_cache<float>(1, 4, 32, 200);
    auto c2 = c1;
    prune_layer(c1, 0, 50, snapkv{4, 4}, ws, lq, o);
    const std::size_t bytes = ws.bytes_reserved();
    const std::size_t cache_bytes = c2.bytes_reserved();
    const long news = g_news.load();
    prune_layer(c2, 0, 50, snapkv{4, 4}, ws, lq, o);
    CHECK(g_news.load() == news);  // no allocation at all
    CHECK(ws.bytes_reserved() == bytes);
    CHECK(c2.bytes_reserved() == cache_bytes);
    CHECK(dump_rows(c1) == dump_rows(c2));
  }
}

TEST_CASE("prune_workspace::bytes_reserved counts every buffer, the top-k scratch included", "[prune]") {
  prune_workspace ws;
  auto c = make_cache<float>(1, 2, 8, 5000);  // rows >= 2048: top-k uses its scratch
  prune_layer(c, 0, 100, knorm{}, ws);
  REQUIRE(ws.select.bytes_reserved() > 0);
  const std::size_t parts = ws.score.bytes_reserved() + ws.select.bytes_reserved() +
                            ws.scores.capacity() * sizeof(float) + ws.keep.capacity() * sizeof(index_t) +
                            ws.counts.capacity() * sizeof(std::size_t) + ws.cand_score.capacity() * sizeof(float) +
                            (ws.cand_ref.capacity() + ws.pick.capacity() + ws.merged.capacity()) * sizeof(index_t);
  CHECK(ws.bytes_reserved() == parts);
}

TEST_CASE("h2o decode loop keeps its invariants", "[prune]") {
  const std::size_t H = 2, d = 4, budget = 12, sink = 2, recent = 3, steps = 60;
  kv_cache<float> cache(layers{1}, heads{H}, dim{d}, budget + 1);
  h2o_state st(1, H);
  h2o p{sink, recent, &st};
  prune_workspace ws;
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::vector<float> k(H * d), v(H * d);
  for (std::size_t t = 0; t < steps; ++t) {
    for (auto& x : k) x = u(rng());
    cache.append_token(0, k.data(), v.data(), pos_t(t));
    for (std::size_t h = 0; h < H; ++h) {
      // Two query heads per kv head feed attention rows over the current rows.
      for (int qh = 0; qh < 2; ++qh) {
        std::vector<float> a(cache.length(0, h));
        float s = 0;
        for (auto& x : a) s += (x = u(rng()));
        for (auto& x : a) x /= s;
        st.accumulate(0, h, a);
      }
    }
    const bool pruned = enforce_budget(cache, 0, budget, p, ws);
    CHECK(pruned == (t >= budget));
    for (std::size_t h = 0; h < H; ++h) {
      const auto pos = cache.positions(0, h);
      REQUIRE(pos.size() <= budget);
      REQUIRE(st.length(0, h) == pos.size());
      for (std::size_t j = 0; j < std::min<std::size_t>(sink, t + 1); ++j) REQUIRE(pos[j] == pos_t(j));  // sinks
      for (std::size_t r = 0; r < std::min<std::size_t>(recent, t + 1); ++r)
        REQUIRE(pos[pos.size() - 1 - r] == pos_t(t - r));  // the most recent tokens
    }
  }
}

TEST_CASE("prune_view over engine memory matches the owning cache", "[prune]") {
  const std::size_t H = 3, d = 8, n = 40;
  auto cache = make_cache<float>(1, H, d, n);
  // The same layer as an NHD engine buffer [n][H][d] with one shared positions row.
  std::vector<float> K(n * H * d), V(n * H * d);
  std::vector<pos_t> P(n);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t t = 0; t < d; ++t) {
        K[(j * H + h) * d + t] = cache.keys(0, h).row(j)[t];
        V[(j * H + h) * d + t] = cache.values(0, h).row(j)[t];
      }
  for (std::size_t j = 0; j < n; ++j) P[j] = pos_t(j);
  auto Kh = K, Vh = V;
  std::vector<pos_t> Ph(H * n);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t j = 0; j < n; ++j) Ph[h * n + j] = pos_t(j);

  knorm p{1, 1};
  prune_workspace ws;
  prune_options shared;
  shared.mode = granularity::shared;
  auto c_shared = cache;
  prune_layer(c_shared, 0, 9, p, ws, {}, shared);
  const kv_shape shape(heads{H}, tokens{n}, dim{d});
  std::vector<std::size_t> lens(H, n);
  layer_view<float> nhd_shared{kv_view<float>::nhd(K.data(), shape), kv_view<float>::nhd(V.data(), shape),
                               layer_positions::shared(P.data()), span<std::size_t>(lens)};
  prune_view(nhd_shared, 0, 9, p, ws, {}, shared);
  for (std::size_t h = 0; h < H; ++h) {
    REQUIRE(lens[h] == 9);
    for (std::size_t j = 0; j < 9; ++j) {
      REQUIRE(P[j] == c_shared.positions(0, h)[j]);
      for (std::size_t t = 0; t < d; ++t) REQUIRE(K[(j * H + h) * d + t] == c_shared.keys(0, h).row(j)[t]);
    }
  }
  // Per head over the same NHD memory, with per-head positions rows; then again from the
  // ragged lengths the first prune left (heads 7, 7, 4 rows), against the cache path.
  auto c_head = cache;
  prune_layer(c_head, 0, 7, p, ws);
  std::fill(lens.begin(), lens.end(), n);
  layer_view<float> nhd_heads{kv_view<float>::nhd(Kh.data(), shape), kv_view<float>::nhd(Vh.data(), shape),
                              layer_positions::per_head(Ph.data(), std::ptrdiff_t(n)), span<std::size_t>(lens)};
  prune_view(nhd_heads, 0, 7, p, ws);
  auto same_as_cache = [&](std::size_t keep) {
    for (std::size_t h = 0; h < H; ++h) {
      REQUIRE(lens[h] == c_head.length(0, h));
      REQUIRE(lens[h] == std::min<std::size_t>(keep, n));
      for (std::size_t j = 0; j < lens[h]; ++j) {
        REQUIRE(Ph[h * n + j] == c_head.positions(0, h)[j]);
        for (std::size_t t = 0; t < d; ++t) REQUIRE(Vh[(j * H + h) * d + t] == c_head.values(0, h).row(j)[t]);
      }
    }
  };
  same_as_cache(7);
  lens[2] = 4;  // head 2 now holds only its first 4 rows
  const std::vector<index_t> first4{0, 1, 2, 3};
  c_head.retain(0, 2, first4);
  prune_layer(c_head, 0, 5, p, ws);
  prune_view(nhd_heads, 0, 5, p, ws);
  REQUIRE(lens[2] == 4);  // at or under the budget: untouched
  REQUIRE(c_head.length(0, 2) == 4);
  for (std::size_t h = 0; h < 2; ++h) REQUIRE(lens[h] == 5);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t j = 0; j < lens[h]; ++j) REQUIRE(Ph[h * n + j] == c_head.positions(0, h)[j]);

  // Errors: nothing (memory, lengths) changes.
  const auto K0 = K;
  const auto P0 = P;
  const auto lens0 = lens;
  auto unchanged = [&] { return K == K0 && P == P0 && lens == lens0; };
  require_error([&] { prune_view(nhd_shared, 0, 5, p, ws); }, {"shared positions row", "granularity::shared"});
  CHECK(unchanged());
  std::vector<std::size_t> short_lens(H - 1, 3);
  layer_view<float> bad = nhd_shared;
  bad.lengths = span<std::size_t>(short_lens);
  require_error([&] { prune_view(bad, 0, 5, p, ws, {}, shared); }, {"lengths has 2 entries", "n_heads = 3"});
  std::vector<std::size_t> long_lens(H, n + 1);
  bad.lengths = span<std::size_t>(long_lens);
  require_error([&] { prune_view(bad, 0, 5, p, ws, {}, shared); }, {"lengths[0] = 41", "n_tokens 40"});
  bad = nhd_heads;
  bad.positions = layer_positions::per_head(Ph.data(), std::ptrdiff_t(n - 1));
  require_error([&] { prune_view(bad, 0, 5, p, ws); }, {"head_stride 39", "overlaps rows of 40"});
  CHECK(unchanged());
  CHECK(long_lens == std::vector<std::size_t>(H, n + 1));
}

TEST_CASE("prune errors leave the cache (and h2o state) unchanged", "[prune]") {
  auto cache = make_cache<float>(3, 2, 8, 20);
  const auto snapshot = dump_rows(cache);
  prune_workspace ws;
  require_error([&] { prune_layer(cache, 0, 4, knorm{3, 2}, ws); }, {"keep 4", "below the protected rows", "knorm"});
  require_error([&] { prune_layer(cache, 3, 4, knorm{}, ws); }, {"layer 3", "n_layers 3"});
  require_error([&] { prune_layer(cache, 0, 4, snapkv{}, ws); }, {"snapkv", "window queries"});
  prune_options bad;
  bad.alpha = 1.5f;
  require_error([&] { prune_layer(cache, 0, 4, knorm{}, ws, {}, bad); }, {"alpha", "1.5"});
  bad.alpha = 1.f;
  bad.mode = granularity::adaptive;
  require_error([&] { prune_layer(cache, 0, 4, knorm{3, 3}, ws, {}, bad); }, {"exceed the layer's budget"});
  const std::vector<std::size_t> two{5, 5};
  require_error([&] { prune(cache, two, knorm{}, ws); }, {"keep_per_layer has 2", "n_layers = 3"});
  // The last layer is invalid (keep below its protected rows): no layer may be touched.
  const std::vector<std::size_t> keeps{5, 5, 1};
  require_error([&] { prune(cache, keeps, knorm{1, 1}, ws); }, {"keep 1 for layer 2"});
  // Queries that do not fit layer 1 (wrong head_dim).
  const std::vector<float> q(2 * 2 * 4, 1.f);
  std::vector<layer_queries> lqs(3, layer_queries{window_queries::dense(q.data(), kv_shape(heads{2}, tokens{2}, dim{8})), {}});
  lqs[1].queries = window_queries::dense(q.data(), kv_shape(heads{2}, tokens{2}, dim{4}));
  require_error([&] { prune(cache, span<const std::size_t>(keeps.data(), 3), snapkv{}, ws, lqs); }, {"head_dim"});
  // h2o whose state does not match the cache.
  h2o_state st(3, 2);
  st.extend(0, 0, 20);
  require_error([&] { prune_layer(cache, 0, 5, h2o{0, 0, &st}, ws); }, {"state tracks 0", "head 1"});
  CHECK(st.length(0, 0) == 20);
  CHECK(dump_rows(cache) == snapshot);

  // Shared granularity needs equal head lengths.
  bad.alpha = 0.f;
  prune_layer(cache, 2, 6, knorm{}, ws, {}, bad);  // adaptive: the low-norm head 0 gets more rows
  REQUIRE(cache.length(2, 0) != cache.length(2, 1));
  const auto snap2 = dump_rows(cache);
  prune_options sh;
  sh.mode = granularity::shared;
  require_error([&] { prune_layer(cache, 2, 3, knorm{}, ws, {}, sh); }, {"equal head lengths"});
  CHECK(dump_rows(cache) == snap2);
}
