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
