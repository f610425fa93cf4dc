// paged_cache (cache/paged_cache.hpp): many sequences in shared pools against one dense
// kv_cache per sequence, over thousands of random add / append / prune / free steps: the same
// rows and positions everywhere, block accounting exact (no leak), and errors that change nothing.
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include "catch.hpp"
#include "depthkv/prune_paged.hpp"
#include "depthkv/prune.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;

namespace {
constexpr std::size_t L = 2, H = 2, D = 4;

template <class T>
void require_same(const paged_cache<T>& pc, std::size_t s, const kv_cache<T>& ref) {
  for (std::size_t l = 0; l < L; ++l)
    for (std::size_t h = 0; h < H; ++h) {
      INFO("seq " << s << " layer " << l << " head " << h);
      const std::size_t n = ref.length(l, h);
      REQUIRE(pc.length(s, l, h) == n);
      for (std::size_t t = 0; t < n; ++t) {
        REQUIRE(pc.position(s, l, h, t) == ref.positions(l, h)[t]);
        REQUIRE(std::memcmp(pc.key_row(s, l, h, t), ref.keys(l, h).row(t), D * sizeof(T)) == 0);
        REQUIRE(std::memcmp(pc.value_row(s, l, h, t), ref.values(l, h).row(t), D * sizeof(T)) == 0);
      }
    }
}
}  // namespace

TEMPLATE_TEST_CASE("paged_cache matches dense caches and never leaks blocks", "[paged][cache]", float, f16) {
  using T = TestType;
  for (const pool_scope scope : {pool_scope::per_layer, pool_scope::shared})
  for (const std::size_t B : {std::size_t{1}, std::size_t{16}}) {
    INFO("block size " << B << (scope == pool_scope::shared ? ", one pool for both layers" : ""));
    const std::size_t pool_blocks = (B == 1 ? 2000 : 160) * (scope == pool_scope::shared ? L : 1);
    paged_cache<T> pc(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{pool_blocks}, block_tokens{B}, scope));
    std::map<std::size_t, kv_cache<T>> ref;   // live sequence -> dense reference
    std::map<std::size_t, pos_t> next_pos;
    std::mt19937 g(static_cast<std::uint32_t>(B));
    std::normal_distribution<float> nd(0.f, 1.f);
    prune_workspace dws;
    paged_prune_workspace<T> pws;
    for (int step = 0; step < 1500; ++step) {
      const int op = static_cast<int>(g() % 10);
      if (op == 0 || ref.empty()) {
        if (ref.size() < 6) {
          const std::size_t s = pc.add_sequence();
          REQUIRE(ref.count(s) == 0);
          ref.emplace(s, kv_cache<T>(layers{L}, heads{H}, dim{D}, 4096));
          next_pos[s] = 0;
        }
        continue;
      }
      auto it = ref.begin();
      std::advance(it, static_cast<long>(g() % ref.size()));
      const std::size_t s = it->first;
      kv_cache<T>& c = it->second;
      const std::size_t l = g() % L;
      if (op <= 5) {  // append a chunk (prefill) or one token (decode)
        const std::size_t n = op <= 2 ? 1 + g() % 40 : 1;
        std::vector<T> k(H * n * D), v(k.size());
        for (auto& x : k) x = T(nd(g));
        for (auto& x : v) x = T(nd(g));
        std::vector<pos_t> p(n);
        for (std::size_t i = 0; i < n; ++i) p[i] = next_pos[s] + static_cast<pos_t>(2 * i);
        const kv_shape shape(heads{H}, tokens{n}, dim{D});
        const auto kv = kv_view<const T>::hnd(k.data(), shape), vv = kv_view<const T>::hnd(v.data(), shape);
        std::size_t need = 0;
        for (std::size_t h = 0; h < H; ++h) {
          const std::size_t len = pc.length(s, l, h), held = (len + B - 1) / B;
          need += (len + n + B - 1) / B - held;
        }
        REQUIRE(pc.blocks_needed(s, l, n) == need);
        if (need > pc.blocks_free(l) || c.length(l, 0) + n > 4096 || c.length(l, 1) + n > 4096) {
          const std::size_t used = pc.blocks_used(l);
          if (need > pc.blocks_free(l))
            require_error([&] { pc.append(s, l, kv, vv, span<const pos_t>(p)); }, {"free blocks"});
          REQUIRE(pc.blocks_used(l) == used);
          continue;
        }
        pc.append(s, l, kv, vv, span<const pos_t>(p));
        c.append(l, kv, vv, span<const pos_t>(p));
        next_pos[s] += static_cast<pos_t>(2 * n + 1);
      } else if (op <= 8) {  // prune one layer of one sequence
        prune_options opt;
        opt.mode = op == 6 ? granularity::per_head : op == 7 ? granularity::adaptive : granularity::shared;
        if (opt.mode == granularity::shared && c.length(l, 0) != c.length(l, 1)) opt.mode = granularity::per_head;
        const std::size_t keep = 3 + g() % 30;
        const std::size_t used_before = pc.blocks_used(l);
        const std::size_t released = prune_paged(pc, s, l, keep, knorm{1, 2}, pws, {}, opt);
        prune_layer(c, l, keep, knorm{1, 2}, dws, {}, opt);
        REQUIRE(pc.blocks_used(l) == used_before - released);
      } else {  // a sequence finishes
        pc.free_sequence(s);
        ref.erase(it);
        require_error([&] { (void)pc.length(s, 0, 0); }, {"not a live sequence"});
      }
      // Accounting: the pools hold exactly the blocks the live sequences' lengths need.
      std::size_t want_all = 0;
      std::vector<std::size_t> want(L);
      for (std::size_t ll = 0; ll < L; ++ll) {
        for (const auto& [id, rc] : ref) {
          std::size_t held = 0;
          for (std::size_t h = 0; h < H; ++h) held += (rc.length(ll, h) + B - 1) / B;
          REQUIRE(pc.blocks_held(id, ll) == held);
          want[ll] += held;
        }
        want_all += want[ll];
      }
      for (std::size_t ll = 0; ll < L; ++ll) {
        const std::size_t w = scope == pool_scope::shared ? want_all : want[ll];
        REQUIRE(pc.blocks_used(ll) == w);
        REQUIRE(pc.blocks_free(ll) == pool_blocks - w);
      }
      REQUIRE(pc.blocks_used() == want_all);
    }
    for (const auto& [id, rc] : ref) require_same(pc, id, rc);
    for (const auto& [id, rc] : ref) pc.free_sequence(id);
    for (std::size_t l = 0; l < L; ++l) CHECK(pc.blocks_free(l) == pool_blocks);  // everything returned
    CHECK(pc.blocks_free() == pool_blocks * pc.shape().n_pools());
  }
}

TEST_CASE("paged_cache errors change nothing", "[paged][cache][errors]") {
  paged_cache<float> pc(paged_cache_shape(layers{1}, heads{2}, dim{2}, blocks{3}, block_tokens{4}));
  const std::size_t s = pc.add_sequence();
  std::vector<float> k(2 * 6 * 2, 1.f);
  std::vector<pos_t> p{0, 1, 2, 3, 4, 5};
  const kv_shape six(heads{2}, tokens{6}, dim{2});
  const auto kv = kv_view<const float>::hnd(k.data(), six);
  // 6 tokens need 2 blocks per head = 4 > 3: nothing is taken.
  require_error([&] { pc.append(s, 0, kv, kv, span<const pos_t>(p)); }, {"layer 0 needs 4 free blocks", "has 3"});
  CHECK(pc.blocks_free(0) == 3);
  CHECK(pc.length(s, 0, 0) == 0);
  const kv_shape three(heads{2}, tokens{3}, dim{2});
  const auto k3 = kv_view<const float>::hnd(k.data(), three);
  pc.append(s, 0, k3, k3, span<const pos_t>(p.data(), 3));
  CHECK(pc.blocks_used(0) == 2);
  require_error([&] { pc.append(s, 0, k3, k3, span<const pos_t>(p.data(), 3)); }, {"not above the last position 2"});
  require_error([&] { pc.append(s, 1, k3, k3, span<const pos_t>(p.data(), 3)); }, {"layer 1 out of range"});
  require_error([&] { pc.append(s + 1, 0, k3, k3, span<const pos_t>(p.data(), 3)); }, {"sequence 1 is not a live sequence"});
  const auto wrong = kv_view<const float>::hnd(k.data(), kv_shape(heads{1}, tokens{3}, dim{2}));
  require_error([&] { pc.append(s, 0, wrong, wrong, span<const pos_t>(p.data(), 3)); }, {"expected [2][n][2]"});
  paged_prune_workspace<float> ws;
  require_error([&] { prune_paged(pc, s, 0, 2, knorm{2, 2}, ws); }, {"protected rows"});
  CHECK(pc.length(s, 0, 1) == 3);
  CHECK(pc.blocks_used(0) == 2);
  // commit_tables accepts only prefixes of the sequence's own tables.
  std::vector<block_table> t;
  (void)pc.layer_view(s, 0, t);
  std::vector<std::int32_t> other{0};
  std::vector<block_table> foreign{t[0], block_table{span<std::int32_t>(other), 1}};
  require_error([&] { pc.commit_tables(s, 0, span<const block_table>(foreign)); }, {"tables[1] is not a prefix"});
  require_error([&] { pc.commit_tables(s, 0, span<const block_table>(t.data(), 1)); }, {"tables has 1 entries"});
  t[1].last_fill = 5;
  require_error([&] { pc.commit_tables(s, 0, span<const block_table>(t)); }, {"tables[1].last_fill = 5", "[1, 4]"});
  CHECK(pc.blocks_used(0) == 2);
  CHECK(pc.length(s, 0, 1) == 3);
  // blocks_needed / fits / copy_head: the counts of a 3-token head in 4-token blocks.
  CHECK(pc.blocks_needed(s, 0, 1) == 0);
  CHECK(pc.blocks_needed(s, 0, 2) == 2);
  CHECK(pc.blocks_needed(s, 0, SIZE_MAX) == 2 * (SIZE_MAX / 4 + 1));  // exact, no wrap
  {
    paged_cache<float> wide(paged_cache_shape(layers{1}, heads{5}, dim{2}, blocks{3}, block_tokens{1}));
    CHECK(wide.blocks_needed(wide.add_sequence(), 0, SIZE_MAX) == SIZE_MAX);  // 5 * SIZE_MAX saturates
  }
  CHECK(pc.fits(s, 1));
  CHECK_FALSE(pc.fits(s, 2));
  std::vector<float> ko(6), vo(6);
  std::vector<pos_t> po(3);
  pc.copy_head(s, 0, 1, span<float>(ko), span<float>(vo), span<pos_t>(po));
  CHECK(po == std::vector<pos_t>{0, 1, 2});
  require_error([&] { pc.copy_head(s, 0, 1, span<float>(ko.data(), 4), span<float>(vo), span<pos_t>(po)); },
                {"hold 2 / 3 / 3 rows, the head has 3"});
  require_error([&] { (void)pc.blocks_needed(s + 1, 0, 1); }, {"sequence 1 is not a live sequence"});
  require_error([&] { (void)pc.fits(s + 1, 1); }, {"sequence 1 is not a live sequence"});
  require_error([&] { (void)pc.blocks_needed(s, 1, 1); }, {"layer 1 out of range"});
  pc.free_sequence(s);
  require_error([&] { pc.free_sequence(s); }, {"not a live sequence"});
  CHECK(pc.blocks_free(0) == 3);
  CHECK(pc.add_sequence() == s);  // ids are reused
}
