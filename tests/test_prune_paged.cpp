// prune_paged (prune_paged.hpp) against the dense pipeline: the same data in a kv_cache and in
// paged memory (shuffled block ids, NHD and HND pages, block sizes 1/16/64, f32/f16/bf16, one
// table for all heads or one per head), pruned with the same policy, mode and keep, must keep
// exactly the same rows and positions; the tables must shrink to exactly the blocks the kept
// tokens need. Errors leave pages, tables and policy state unchanged.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "catch.hpp"
#include "depthkv/prune_paged.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::uniform_int;

namespace {

// One sequence's layer in paged memory, filled from layer 0 of a dense cache.
template <class T>
struct paged_copy {
  std::size_t H, D, B, n_blocks;
  std::vector<T> k, v;
  std::vector<pos_t> pos;
  std::vector<std::vector<std::int32_t>> ids;  // per table
  std::vector<block_table> tables;
  paged_layer<T> layer;

  paged_copy(const kv_cache<T>& c, std::size_t block_size, layout l, bool per_head_tables, std::mt19937& g)
      : H(c.n_kv_heads()), D(c.head_dim()), B(block_size) {
    const std::size_t n = c.length(0, 0), per_table = (n + B - 1) / B, n_tables = per_head_tables ? H : 1;
    n_blocks = per_table * n_tables + 3;  // a few spare blocks
    const std::size_t pool_heads = per_head_tables ? 1 : H;
    k.assign(n_blocks * B * pool_heads * D, T(-7.f));
    v = k;
    pos.assign(n_blocks * B, -1);
    std::vector<std::int32_t> all(n_blocks);
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), g);
    ids.resize(n_tables);
    tables.resize(n_tables);
    for (std::size_t i = 0; i < n_tables; ++i) {
      ids[i].assign(all.begin() + static_cast<std::ptrdiff_t>(i * per_table),
                    all.begin() + static_cast<std::ptrdiff_t>((i + 1) * per_table));
      tables[i] = block_table{span<std::int32_t>(ids[i]), n == 0 ? 0 : n - (per_table - 1) * B};
    }
    const page_shape shape(blocks{n_blocks}, block_tokens{B}, heads{pool_heads}, dim{D});
    layer = paged_layer<T>{page_pool_view<T>(k.data(), shape, l), page_pool_view<T>(v.data(), shape, l),
                           span<pos_t>(pos), span<block_table>(tables), H};
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t t = 0; t < n; ++t) {
        std::memcpy(layer.key_row(h, t), c.keys(0, h).row(t), D * sizeof(T));
        std::memcpy(layer.value_row(h, t), c.values(0, h).row(t), D * sizeof(T));
        *layer.position(h, t) = c.positions(0, h)[t];
      }
  }
};

template <class T>
kv_cache<T> random_cache(std::size_t H, std::size_t D, std::size_t n, std::mt19937& g) {
  std::normal_distribution<float> nd(0.f, 1.f);
  kv_cache<T> c(layers{1}, heads{H}, dim{D}, n);
  std::vector<T> k(H * n * D), v(k.size());
  for (auto& x : k) x = T(nd(g));
  for (auto& x : v) x = T(nd(g));
  std::vector<pos_t> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<pos_t>(3 * i + 1);
  const kv_shape s(heads{H}, tokens{n}, dim{D});
  c.append(0, kv_view<const T>::hnd(k.data(), s), kv_view<const T>::hnd(v.data(), s), span<const pos_t>(p));
  return c;
}

template <class T>
void require_same(const kv_cache<T>& c, const paged_copy<T>& p) {
  for (std::size_t h = 0; h < c.n_kv_heads(); ++h) {
    INFO("head " << h);
    const std::size_t n = c.length(0, h);
    REQUIRE(p.layer.length(h) == n);
    REQUIRE(p.layer.table(h).blocks.size() == (n + p.B - 1) / p.B);  // exactly the blocks needed
    for (std::size_t t = 0; t < n; ++t) {
      REQUIRE(*p.layer.position(h, t) == c.positions(0, h)[t]);
      REQUIRE(std::memcmp(p.layer.key_row(h, t), c.keys(0, h).row(t), p.D * sizeof(T)) == 0);
      REQUIRE(std::memcmp(p.layer.value_row(h, t), c.values(0, h).row(t), p.D * sizeof(T)) == 0);
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("prune_paged keeps exactly what the dense pipeline keeps", "[paged][prune]", float, f16, bf16) {
  using T = TestType;
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  prune_workspace dense_ws;
  paged_prune_workspace<T> paged_ws;
  int cases = 0;
  for (const std::size_t B : {std::size_t{1}, std::size_t{16}, std::size_t{64}})
    for (const layout l : {layout::nhd, layout::hnd})
      for (const bool per_head_tables : {true, false})
        for (const granularity mode : {granularity::per_head, granularity::shared, granularity::adaptive})
          for (int policy = 0; policy < 3; ++policy) {
            if (!per_head_tables && mode != granularity::shared) continue;
            const std::size_t H = uniform_int(1, 4), D = uniform_int(0, 1) ? 4 : 16, n = uniform_int(1, 200);
            auto cache = random_cache<T>(H, D, n, g);
            paged_copy<T> paged(cache, B, l, per_head_tables, g);
            prune_options opt;
            opt.mode = mode;
            const std::size_t w = std::min<std::size_t>(n, 4);
            std::vector<float> q(2 * H * w * D);
            for (auto& x : q) x = nd(g);
            layer_queries lq;
            lq.queries = window_queries::dense(q.data(), kv_shape(heads{2 * H}, tokens{w}, dim{D}));
            h2o_state s_dense(1, H), s_paged(1, H);
            for (std::size_t h = 0; h < H; ++h) {
              std::vector<float> a(n);
              for (auto& x : a) x = std::abs(nd(g));
              s_dense.accumulate(0, h, span<const float>(a));
              s_paged.accumulate(0, h, span<const float>(a));
            }
            const std::size_t keep = uniform_int(w + 1, n + 8);
            INFO("B " << B << " " << layout_name(l) << " per-head tables " << per_head_tables << " mode "
                      << int(mode) << " policy " << policy << " H " << H << " D " << D << " n " << n << " keep "
                      << keep);
            std::size_t released = 0;
            const std::size_t blocks_before = per_head_tables ? H * ((n + B - 1) / B) : (n + B - 1) / B;
            if (policy == 0) {
              prune_layer(cache, 0, keep, knorm{1, 2}, dense_ws, {}, opt);
              released = prune_paged(paged.layer, 0, keep, knorm{1, 2}, paged_ws, {}, opt);
            } else if (policy == 1) {
              snapkv p;
              p.n_sink = 1;
              p.n_recent = w;
              prune_layer(cache, 0, keep, p, dense_ws, lq, opt);
              released = prune_paged(paged.layer, 0, keep, p, paged_ws, lq, opt);
            } else {
              prune_layer(cache, 0, keep, h2o{2, 1, &s_dense}, dense_ws, {}, opt);
              released = prune_paged(paged.layer, 0, keep, h2o{2, 1, &s_paged}, paged_ws, {}, opt);
              for (std::size_t h = 0; h < H; ++h) {
                const auto a = s_dense.scores(0, h), b = s_paged.scores(0, h);
                REQUIRE(std::vector<float>(a.begin(), a.end()) == std::vector<float>(b.begin(), b.end()));
              }
            }
            require_same(cache, paged);
            std::size_t blocks_after = 0;
            for (const block_table& t : paged.tables) blocks_after += t.blocks.size();
            REQUIRE(released == blocks_before - blocks_after);
            ++cases;
          }
  CHECK(cases == 3 * 2 * (3 + 1) * 3);
}

TEST_CASE("prune_paged errors leave pages, tables and state unchanged", "[paged][prune][errors]") {
  std::mt19937 g(3);
  auto cache = random_cache<float>(2, 4, 40, g);
  paged_copy<float> one(cache, 16, layout::nhd, false, g);
  paged_prune_workspace<float> ws;
  const auto k0 = one.k;
  const auto p0 = one.pos;
  const auto ids0 = one.ids;
  auto unchanged = [&] {
    CHECK(one.k == k0);
    CHECK(one.pos == p0);
    CHECK(one.ids == ids0);
    CHECK(one.tables[0].blocks.size() == 3);
    CHECK(one.tables[0].last_fill == 8);
  };
  require_error([&] { prune_paged(one.layer, 0, 10, knorm{}, ws); }, {"depthkv::prune_paged", "one block table",
                                                                        "granularity::shared"});
  unchanged();
  prune_options shared;
  shared.mode = granularity::shared;
  require_error([&] { prune_paged(one.layer, 0, 3, knorm{2, 2}, ws, {}, shared); }, {"keep 3", "protected rows"});
  unchanged();
  require_error([&] { prune_paged(one.layer, 0, 10, snapkv{}, ws, {}, shared); }, {"window queries"});
  unchanged();
  one.ids[0][1] = one.ids[0][0];  // a block twice
  require_error([&] { prune_paged(one.layer, 0, 10, knorm{}, ws, {}, shared); }, {"used twice"});
  one.ids[0][1] = ids0[0][1];
  unchanged();
  h2o_state st(1, 2);  // tracks 0 tokens: the policy rejects the layer
  require_error([&] { prune_paged(one.layer, 0, 10, h2o{0, 0, &st}, ws, {}, shared); }, {"h2o", "state tracks 0"});
  unchanged();
  // And the same call with valid inputs works: 40 tokens -> 10 in one block, 2 released.
  CHECK(prune_paged(one.layer, 0, 10, knorm{}, ws, {}, shared) == 2);
  CHECK(one.tables[0].blocks.size() == 1);
  CHECK(one.tables[0].last_fill == 10);
  CHECK(ws.bytes_reserved() > 0);
}

namespace {
// Reference block selection: protected first f / last l blocks, then the best others by
// (aggregated score desc, block asc), up to keep; returned ascending.
std::vector<std::size_t> naive_blocks(const std::vector<float>& block_scores, std::size_t keep, std::size_t f,
                                      std::size_t l) {
  const std::size_t nb = block_scores.size();
  if (nb <= keep) {
    std::vector<std::size_t> all(nb);
    std::iota(all.begin(), all.end(), std::size_t{0});
    return all;
  }
  std::vector<std::size_t> order(nb), out;
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::vector<bool> taken(nb, false);
  for (std::size_t b = 0; b < nb; ++b)
    if (b < f || b + l >= nb) taken[b] = true;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return block_scores[a] > block_scores[b]; });
  std::size_t count = static_cast<std::size_t>(std::count(taken.begin(), taken.end(), true));
  for (std::size_t b : order)
    if (count < keep && !taken[b]) taken[b] = true, ++count;
  for (std::size_t b = 0; b < nb; ++b)
    if (taken[b]) out.push_back(b);
  return out;
}
}  // namespace

TEMPLATE_TEST_CASE("prune_paged_blocks keeps the best whole blocks, moves no row", "[paged][prune]", float, f16) {
  using T = TestType;
  std::mt19937 g(11);
  std::normal_distribution<float> nd(0.f, 1.f);
  paged_prune_workspace<T> ws;
  for (const std::size_t B : {std::size_t{1}, std::size_t{4}, std::size_t{16}})
    for (const bool per_head_tables : {true, false})
      for (const block_score agg : {block_score::sum, block_score::max})
        for (int rep = 0; rep < 4; ++rep) {
          const std::size_t H = uniform_int(1, 3), D = 4, n = uniform_int(1, 120);
          auto cache = random_cache<T>(H, D, n, g);
          paged_copy<T> paged(cache, B, layout::hnd, per_head_tables, g);
          const auto k_before = paged.k;
          const std::size_t nb = (n + B - 1) / B, keep = uniform_int(2, nb + 1);
          const std::size_t sink = uniform_int(0, 2 * B), recent = uniform_int(0, 2 * B);
          const knorm pol{sink, recent};
          // Reference scores from the dense cache (the same data), aggregated per block.
          std::vector<std::vector<float>> tok(H, std::vector<float>(n));
          score_scratch sc;
          for (std::size_t h = 0; h < H; ++h) {
            head_input<T> in;
            in.kv_head = h;
            in.n_kv_heads = H;
            in.keys = cache.keys(0, h);
            in.positions = cache.positions(0, h);
            pol.score(in, span<float>(tok[h]), sc);
          }
          const std::size_t f = std::max<std::size_t>(1, (std::min(sink, n) + B - 1) / B);
          const std::size_t l = std::max<std::size_t>(1, (std::min(recent, n) + B - 1) / B);
          if (std::min(nb, f + l) > keep && nb > keep) {
            require_error([&] { prune_paged_blocks(paged.layer, 0, blocks{keep}, pol, ws, {}, agg); },
                          {"depthkv::prune_paged_blocks", "below its protected blocks"});
            REQUIRE(paged.tables[0].blocks.size() == nb);
            continue;
          }
          const auto ids_before = paged.ids;
          const std::size_t released = prune_paged_blocks(paged.layer, 0, blocks{keep}, pol, ws, {}, agg);
          CHECK(paged.k == k_before);  // no row moved
          std::size_t want_released = 0;
          for (std::size_t i = 0; i < paged.tables.size(); ++i) {
            std::vector<float> s(n);
            for (std::size_t j = 0; j < n; ++j) {
              if (per_head_tables || H == 1) {
                s[j] = tok[i][j];
              } else {
                float acc = 0.f;
                for (std::size_t h = 0; h < H; ++h) acc += tok[h][j];
                s[j] = acc / static_cast<float>(H);
              }
            }
            std::vector<float> bs(nb);
            for (std::size_t b = 0; b < nb; ++b) {
              float acc = agg == block_score::sum ? 0.f : s[b * B];
              for (std::size_t j = b * B; j < std::min(n, b * B + B); ++j)
                acc = agg == block_score::sum ? acc + s[j] : std::max(acc, s[j]);
              bs[b] = acc;
            }
            const auto want = naive_blocks(bs, keep, f, l);
            INFO("B " << B << " table " << i << " n " << n << " keep " << keep << " f " << f << " l " << l);
            REQUIRE(paged.tables[i].blocks.size() == want.size());
            REQUIRE(paged.tables[i].last_fill == n - (nb - 1) * B);  // the last block stays
            std::vector<std::int32_t> dropped;
            for (std::size_t b = 0, w = 0; b < nb; ++b) {
              if (w < want.size() && want[w] == b) {
                REQUIRE(paged.ids[i][w] == ids_before[i][b]);
                ++w;
              } else {
                dropped.push_back(ids_before[i][b]);
              }
            }
            // The dropped ids follow the prefix, in their old order, for the engine to free.
            REQUIRE(std::equal(dropped.begin(), dropped.end(), paged.ids[i].begin() + static_cast<std::ptrdiff_t>(want.size())));
            want_released += nb - want.size();
          }
          REQUIRE(released == want_released);
        }
}

TEST_CASE("prune_paged_blocks compacts H2O state to the kept blocks' tokens", "[paged][prune]") {
  std::mt19937 g(5);
  auto cache = random_cache<float>(2, 4, 40, g);
  paged_copy<float> paged(cache, 8, layout::nhd, true, g);
  h2o_state st(1, 2);
  std::vector<float> a(40);
  for (std::size_t j = 0; j < 40; ++j) a[j] = static_cast<float>(j % 8 == 3 ? 100 + j : j % 5);
  st.accumulate(0, 0, span<const float>(a));
  st.accumulate(0, 1, span<const float>(a));
  paged_prune_workspace<float> ws;
  // 5 blocks of 8: first and last protected; the rest ranked by summed attention.
  CHECK(prune_paged_blocks(paged.layer, 0, blocks{3}, h2o{0, 0, &st}, ws) == 4);
  for (std::size_t h = 0; h < 2; ++h) {
    REQUIRE(st.length(0, h) == 24);  // 3 blocks x 8 tokens
    REQUIRE(paged.layer.length(h) == 24);
    // Block 3 (tokens 24..31) has the largest sum: kept blocks 0, 3, 4.
    const auto s = st.scores(0, h);
    CHECK(s[8] == a[24]);
    CHECK(s[16] == a[32]);
    CHECK(*paged.layer.position(h, 8) == cache.positions(0, h)[24]);
  }
}
