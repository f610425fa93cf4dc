// Paged views (view/paged.hpp): addressing of NHD and HND pages against hand-computed offsets,
// per-layer and per-head tables, gathering a head's keys, and every validation error.
#include <cstdint>
#include <numeric>
#include <vector>

#include "catch.hpp"
#include "depthkv/view/paged.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;

TEST_CASE("page_pool_view addresses NHD and HND pages", "[paged]") {
  const std::size_t B = 5, S = 4, H = 3, D = 2;
  std::vector<float> pool(B * S * H * D);
  std::iota(pool.begin(), pool.end(), 0.f);
  const page_shape shape(blocks{B}, block_tokens{S}, heads{H}, dim{D});
  const page_pool_view<float> nhd(pool.data(), shape, layout::nhd), hnd(pool.data(), shape, layout::hnd);
  // NHD: (block, slot, head, d) at ((block * S + slot) * H + head) * D + d.
  CHECK(nhd.row(3, 2, 1)[1] == float(((3 * S + 2) * H + 1) * D + 1));
  // HND: (block, head, slot, d) at ((block * H + head) * S + slot) * D + d.
  CHECK(hnd.row(3, 2, 1)[1] == float(((3 * H + 1) * S + 2) * D + 1));
  CHECK(nhd.block_stride() == std::ptrdiff_t(S * H * D));
  const page_pool_view<const float> c = nhd;  // const view of the same pages
  CHECK(c.row(4, 3, 2) == nhd.row(4, 3, 2));
}

TEST_CASE("paged_layer: one table for all heads, or one per head; gather_keys", "[paged]") {
  const std::size_t B = 6, S = 4, H = 2, D = 3;
  for (layout l : {layout::nhd, layout::hnd}) {
    std::vector<float> k(B * S * H * D), v(k.size());
    std::iota(k.begin(), k.end(), 0.f);
    std::iota(v.begin(), v.end(), 1000.f);
    std::vector<pos_t> pos(B * S, -1);
    const page_shape shape(blocks{B}, block_tokens{S}, heads{H}, dim{D});
    std::vector<std::int32_t> ids{4, 1, 5};  // 3 blocks, the last holding 2 tokens: 10 tokens
    std::vector<block_table> tables{{span<std::int32_t>(ids), 2}};
    paged_layer<float> layer{page_pool_view<float>(k.data(), shape, l), page_pool_view<float>(v.data(), shape, l),
                             span<pos_t>(pos), span<block_table>(tables), H};
    check_paged_layer(layer);
    REQUIRE(layer.length(0) == 10);
    REQUIRE(layer.length(1) == 10);
    // Token 6 of head 1: block ids[6 / 4] = 1, slot 2.
    CHECK(layer.key_row(1, 6) == layer.keys.row(1, 2, 1));
    CHECK(layer.value_row(0, 9) == layer.values.row(5, 1, 0));
    CHECK(layer.position(1, 6) == pos.data() + 1 * S + 2);
    std::vector<float> g(10 * D);
    gather_keys(layer, 1, g.data());
    for (std::size_t t = 0; t < 10; ++t)
      for (std::size_t d = 0; d < D; ++d) REQUIRE(g[t * D + d] == layer.key_row(1, t)[d]);

    // Per-head tables over pages of one head: heads keep different counts.
    const page_shape one(blocks{B}, block_tokens{S}, heads{1}, dim{D});
    std::vector<std::int32_t> h0{0, 3}, h1{2};
    std::vector<block_table> per{{span<std::int32_t>(h0), 1}, {span<std::int32_t>(h1), 4}};
    paged_layer<float> ph{page_pool_view<float>(k.data(), one, l), page_pool_view<float>(v.data(), one, l),
                          span<pos_t>(pos), span<block_table>(per), H};
    check_paged_layer(ph);
    CHECK(ph.length(0) == 5);
    CHECK(ph.length(1) == 4);
    CHECK(ph.key_row(0, 4) == ph.keys.row(3, 0, 0));
    CHECK(ph.key_row(1, 3) == ph.keys.row(2, 3, 0));
  }
}

TEST_CASE("paged views: every validation error names the argument", "[paged][errors]") {
  const std::size_t B = 4, S = 2, H = 2, D = 2;
  std::vector<float> k(B * S * H * D), v(k.size());
  std::vector<pos_t> pos(B * S);
  const page_shape shape(blocks{B}, block_tokens{S}, heads{H}, dim{D});
  require_error([&] { page_pool_view<float>(k.data(), page_shape(blocks{B}, block_tokens{0}, heads{H}, dim{D}), layout::nhd); },
                {"depthkv::page_pool_view", "block_size must be > 0"});
  require_error([&] { page_pool_view<float>(k.data(), page_shape(blocks{B}, block_tokens{S}, heads{0}, dim{D}), layout::nhd); },
                {"n_heads must be > 0"});
  require_error([&] { page_pool_view<float>(k.data(), page_shape(blocks{B}, block_tokens{S}, heads{H}, dim{0}), layout::nhd); },
                {"head_dim must be > 0"});
  require_error([&] { page_pool_view<float>(nullptr, shape, layout::nhd); }, {"data is null for 4 blocks"});
  require_error([&] {
    page_pool_view<float>(k.data(), page_shape(blocks{std::size_t{1} << 50}, block_tokens{1u << 16}, heads{H}, dim{D}),
                          layout::nhd);
  }, {"overflows the addressable extent"});

  std::vector<std::int32_t> ids{0, 2};
  std::vector<block_table> tables{{span<std::int32_t>(ids), 1}};
  auto make = [&] {
    return paged_layer<float>{page_pool_view<float>(k.data(), shape, layout::nhd),
                              page_pool_view<float>(v.data(), shape, layout::nhd), span<pos_t>(pos),
                              span<block_table>(tables), H};
  };
  check_paged_layer(make());
  auto bad = make();
  bad.values = page_pool_view<float>(v.data(), shape, layout::hnd);
  require_error([&] { check_paged_layer(bad); }, {"keys pages are nhd but values pages are hnd"});
  bad = make();
  bad.values = page_pool_view<float>(v.data(), page_shape(blocks{B - 1}, block_tokens{S}, heads{H}, dim{D}), layout::nhd);
  require_error([&] { check_paged_layer(bad); }, {"values pool [3][2][2][2] != keys pool [4][2][2][2]"});
  bad = make();
  bad.n_kv_heads = 3;
  require_error([&] { check_paged_layer(bad); }, {"tables has 1 entries for 3 kv heads", "pages of 2 heads"});
  bad = make();
  bad.positions = span<pos_t>(pos.data(), 7);
  require_error([&] { check_paged_layer(bad); }, {"positions has 7 entries", "n_blocks * block_size = 8"});
  tables[0].last_fill = 3;
  require_error([&] { check_paged_layer(make()); }, {"tables[0].last_fill = 3", "[1, block_size 2]"});
  tables[0].last_fill = 0;
  require_error([&] { check_paged_layer(make()); }, {"tables[0].last_fill = 0"});
  tables[0].last_fill = 1;
  ids[1] = 4;
  require_error([&] { check_paged_layer(make()); }, {"tables[0].blocks[1] = 4", "out of range (n_blocks 4)"});
  ids[1] = -1;
  require_error([&] { check_paged_layer(make()); }, {"tables[0].blocks[1] = -1", "out of range"});
  ids[1] = 0;
  require_error([&] { check_paged_layer(make()); }, {"tables[0].blocks[1] = 0", "used twice"});
  ids[1] = 2;
  check_paged_layer(make());  // the marks of failed checks were cleared
  // A block shared by two heads' tables of one sequence is used twice too.
  const page_shape one(blocks{B}, block_tokens{S}, heads{1}, dim{D});
  std::vector<std::int32_t> a{1, 3}, b{2, 3};
  std::vector<block_table> per{{span<std::int32_t>(a), 2}, {span<std::int32_t>(b), 1}};
  paged_layer<float> ph{page_pool_view<float>(k.data(), one, layout::hnd), page_pool_view<float>(v.data(), one, layout::hnd),
                        span<pos_t>{}, span<block_table>(per), H};
  require_error([&] { check_paged_layer(ph); }, {"tables[1].blocks[1] = 3", "used twice"});
  // An empty table is fine; an empty table with a fill is not.
  std::vector<block_table> empty{{span<std::int32_t>{}, 0}};
  paged_layer<float> e = make();
  e.tables = span<block_table>(empty);
  check_paged_layer(e);
  CHECK(e.length(0) == 0);
  empty[0].last_fill = 1;
  require_error([&] { check_paged_layer(e); }, {"tables[0].last_fill = 1", "0 for an empty table"});
}
