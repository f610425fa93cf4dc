// Paged budgets (budget/paged_budget.hpp): block costs against paged_cache, hand-computed splits,
// exact block sums with equal costs, bytes never exceeded and the leftover bound with unequal
// costs, floors in blocks, agreement with the token allocators (block size 1; block lengths),
// per-head splits, an end-to-end prune of a paged_cache to the allocation, and every error.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "depthkv/budget/paged_budget.hpp"
#include "depthkv/prune_paged.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;
using counts_t = std::vector<std::size_t>;

namespace {

constexpr std::size_t smax = std::numeric_limits<std::size_t>::max();

double urand(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng()); }
std::size_t sum(const counts_t& c) { return std::accumulate(c.begin(), c.end(), std::size_t{0}); }
std::size_t cdiv(std::size_t a, std::size_t b) { return (a + b - 1) / b; }  // test sizes: no overflow

paged_allocation_request make_req(counts_t lengths, counts_t minimums, std::size_t block_size,
                                  counts_t block_bytes, paged_budget budget) {
  paged_allocation_request r;
  r.lengths = std::move(lengths);
  r.minimums = std::move(minimums);
  r.block_size = block_tokens{block_size};
  r.block_bytes = std::move(block_bytes);
  r.budget = budget;
  return r;
}

allocation_request token_req(counts_t lengths, counts_t minimums, global_budget b) {
  allocation_request r;
  r.lengths = std::move(lengths);
  r.minimums = std::move(minimums);
  r.budget = b;
  return r;
}

// Convex decreasing curves, sampled at a few ratios (as in test_allocate).
sensitivity_profile random_profile(std::size_t L) {
  sensitivity_profile p(L);
  for (std::size_t l = 0; l < L; ++l) {
    const double a = std::exp(urand(-4.0, 1.0)), c = urand(0.02, 0.5), pw = urand(1.0, 2.5);
    for (const double r : {0.05, 0.1, 0.2, 0.4, 0.7, 1.0})
      p.add_point(l, r, a * std::pow(1.0 - r, pw) / (r + c));
  }
  return p;
}

// Per-layer figures of a request, computed here from the definitions.
struct expect {
  counts_t len_blocks, floor_blocks, cost;  // cost empty without block_bytes
  std::size_t n() const { return len_blocks.size(); }
};

expect expected(const paged_allocation_request& r) {
  expect e;
  const std::size_t B = r.block_size.value;
  for (std::size_t l = 0; l < r.lengths.size(); ++l) {
    const std::size_t m = r.minimums.empty() ? 0 : r.minimums.size() == 1 ? r.minimums[0] : r.minimums[l];
    e.len_blocks.push_back(cdiv(r.lengths[l], B));
    e.floor_blocks.push_back(cdiv(std::min(m, r.lengths[l]), B));
    if (!r.block_bytes.empty())
      e.cost.push_back(r.block_bytes.size() == 1 ? r.block_bytes[0] : r.block_bytes[l]);
  }
  return e;
}

std::size_t dot(const counts_t& a, const counts_t& b) {
  std::size_t s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// What every allocation must satisfy: floors, bounds, keep = min(length, blocks * B) in exactly
// blocks[l] blocks, the totals.
void check_shape(const paged_allocation& a, const paged_allocation_request& r, const expect& e) {
  REQUIRE(a.blocks.size() == e.n());
  REQUIRE(a.keep.size() == e.n());
  const std::size_t B = r.block_size.value;
  for (std::size_t l = 0; l < e.n(); ++l) {
    INFO("layer " << l);
    CHECK(a.blocks[l] >= e.floor_blocks[l]);
    CHECK(a.blocks[l] <= e.len_blocks[l]);
    CHECK(a.keep[l] == std::min(r.lengths[l], a.blocks[l] * B));
    CHECK(cdiv(a.keep[l], B) == a.blocks[l]);
    const std::size_t m = r.minimums.empty() ? 0 : r.minimums.size() == 1 ? r.minimums[0] : r.minimums[l];
    CHECK(a.keep[l] >= std::min(m, r.lengths[l]));  // the protected tokens fit
  }
  CHECK(a.total_blocks == sum(a.blocks));
  CHECK(a.total_bytes == (e.cost.empty() ? 0 : dot(a.blocks, e.cost)));
}

// Bytes guarantee with unequal costs: within `budget`, and fewer unused bytes than one block of
// every layer that could still grow.
void check_bytes(const paged_allocation& a, const expect& e, std::size_t budget) {
  REQUIRE(a.total_bytes <= budget);
  for (std::size_t l = 0; l < e.n(); ++l)
    if (a.blocks[l] < e.len_blocks[l]) {
      INFO("layer " << l << " could grow: cost " << e.cost[l] << ", unused " << budget - a.total_bytes);
      CHECK(budget - a.total_bytes < e.cost[l]);
    }
}

struct random_layers {
  counts_t lengths, minimums;
  std::size_t B;
};

random_layers random_shape(std::size_t L) {
  random_layers s;
  const std::size_t pick = uniform_int(0, 3);
  s.B = pick == 0 ? 1 : pick == 1 ? uniform_int(2, 5) : pick == 2 ? 16 : 64;
  const std::size_t max_len = uniform_int(0, 2) == 0 ? 40 : 3000;
  for (std::size_t l = 0; l < L; ++l) {
    s.lengths.push_back(uniform_int(0, 6) == 0 ? uniform_int(0, 3) : uniform_int(1, max_len));
    s.minimums.push_back(uniform_int(0, max_len / 4 + 1));
  }
  return s;
}

// Block costs: one-head-page rows of 1..8 heads and head_dim 64/128 (gcd large), or arbitrary.
counts_t random_costs(std::size_t L, std::size_t B) {
  counts_t c(L);
  const bool structured = uniform_int(0, 1) == 0;
  for (auto& x : c)
    x = structured ? layer_block_bytes(heads{std::size_t{1} << uniform_int(0, 3)},
                                       dim{uniform_int(0, 1) ? 64u : 128u}, 2, block_tokens{B})
                   : uniform_int(1, 5000);
  return c;
}

// Allocators that break the contract.
struct short_allocator {
  static constexpr std::string_view name = "short";
  counts_t allocate(const allocation_request& r, const sensitivity_profile&) const {
    return counts_t(r.lengths.size() - 1, 0);
  }
};
struct greedy_allocator {  // ignores the budget: keeps everything
  static constexpr std::string_view name = "greedy";
  counts_t allocate(const allocation_request& r, const sensitivity_profile&) const { return r.lengths; }
};

}  // namespace

TEST_CASE("paged_budget: layer_block_bytes agrees with paged_cache and counts heads, pages and positions") {
  // 16 slots x (K + V: 2 x 128 x 2 bytes + a 4-byte position).
  CHECK(layer_block_bytes(heads{1}, dim{128}, 2, block_tokens{16}) == 16 * (2 * 128 * 2 + 4));
  CHECK(layer_block_bytes(heads{8}, dim{128}, 2, block_tokens{16}) == 8 * 16 * (2 * 128 * 2 + 4));
  // One page holds every head: the positions once per slot.
  CHECK(layer_block_bytes(heads{8}, dim{128}, 2, block_tokens{16}, page_heads::all) ==
        16 * (8 * 2 * 128 * 2 + 4));
  CHECK(layer_block_bytes(heads{8}, dim{128}, 2, block_tokens{16}, page_heads::one, page_positions::none) ==
        8 * 16 * 2 * 128 * 2);
  CHECK(layer_block_bytes(heads{8}, dim{128}, 2, block_tokens{16}, page_heads::all, page_positions::none) ==
        8 * 16 * 2 * 128 * 2);
  // paged_cache pages hold one kv head: heads{1} is block_bytes(), a layer of H heads H times it.
  {
    paged_cache<float> pc(paged_cache_shape(layers{2}, heads{3}, dim{64}, blocks{4}, block_tokens{16}));
    CHECK(layer_block_bytes(heads{1}, dim{64}, sizeof(float), block_tokens{16}) == pc.block_bytes());
    CHECK(layer_block_bytes(heads{3}, dim{64}, sizeof(float), block_tokens{16}) == 3 * pc.block_bytes());
  }
  {
    paged_cache<Eigen::half> pc(paged_cache_shape(layers{1}, heads{2}, dim{96}, blocks{1}, block_tokens{7}));
    CHECK(layer_block_bytes(heads{1}, dim{96}, sizeof(Eigen::half), block_tokens{7}) == pc.block_bytes());
  }
  const auto bb = [](std::size_t h, std::size_t d, std::size_t e, std::size_t b) {
    return layer_block_bytes(heads{h}, dim{d}, e, block_tokens{b});
  };
  require_error([&] { (void)bb(0, 64, 2, 16); }, {"layer_block_bytes", "n_kv_heads must be > 0"});
  require_error([&] { (void)bb(1, 0, 2, 16); }, {"head_dim must be > 0"});
  require_error([&] { (void)bb(1, 64, 0, 16); }, {"element_bytes must be > 0"});
  require_error([&] { (void)bb(1, 64, 2, 0); }, {"block_size must be > 0"});
  require_error([&] { (void)bb(1, smax / 2, 2, 16); }, {"overflows size_t", "head_dim 9223372036854775807"});
  require_error([&] { (void)bb(smax, 1, 1, 1); }, {"overflows size_t", "18446744073709551615 kv heads"});
  require_error([&] { (void)layer_block_bytes(heads{smax}, dim{1}, 1, block_tokens{1}, page_heads::all); },
                {"overflows size_t"});
}

TEST_CASE("paged_budget: hand-computed splits in blocks") {
  const sensitivity_profile none;
  // 100, 200, 300 tokens in blocks of 16: 7, 13, 19 blocks. 20 blocks at one ratio:
  // 3.59, 6.67, 9.74 -> 3, 6, 9 and the two largest remainders -> 3, 7, 10.
  auto a = allocate_paged(uniform_allocator{},
                          make_req({100, 200, 300}, {}, 16, {}, paged_budget::in_blocks(20)), none);
  CHECK(a.blocks == counts_t{3, 7, 10});
  CHECK(a.keep == counts_t{48, 112, 160});
  CHECK(a.total_blocks == 20);
  CHECK(a.total_bytes == 0);
  // The same as a keep ratio of the 39 blocks: 0.5 * 39 = 19.5 -> 20.
  CHECK(allocate_paged("uniform", make_req({100, 200, 300}, {}, 16, {}, paged_budget::ratio(0.5)), none)
            .blocks == counts_t{3, 7, 10});
  // Everything: the last blocks are partly filled, keep is the length.
  a = allocate_paged("uniform", make_req({100, 200, 300}, {}, 16, {}, paged_budget::in_blocks(39)), none);
  CHECK(a.blocks == counts_t{7, 13, 19});
  CHECK(a.keep == counts_t{100, 200, 300});
  // Floors of 40 tokens (sink + recent) are 3 blocks; a 30-token layer keeps its 2 blocks.
  a = allocate_paged("uniform", make_req({100, 100, 30}, {40}, 16, {}, paged_budget::in_blocks(8)), none);
  CHECK(a.blocks == counts_t{3, 3, 2});
  CHECK(a.keep == counts_t{48, 48, 30});
  // Pyramid, beta 2, two equal layers: weights 1.5 and 0.5 -> 6 and 2 of 8 blocks.
  CHECK(allocate_paged(pyramid_allocator{2.0}, make_req({160, 160}, {}, 16, {}, paged_budget::in_blocks(8)),
                       none)
            .blocks == counts_t{6, 2});
  // Equal costs given: bytes count floor(bytes / cost) blocks, bytes reported.
  a = allocate_paged("uniform", make_req({160, 160}, {}, 16, {1000}, paged_budget::in_bytes(12345)), none);
  CHECK(a.blocks == counts_t{6, 6});
  CHECK(a.total_bytes == 12000);
  // A budget in blocks with unequal costs counts blocks; the costs only price the result.
  a = allocate_paged("uniform", make_req({160, 160}, {}, 16, {2000, 1000}, paged_budget::in_blocks(9)), none);
  CHECK(a.blocks == counts_t{5, 4});
  CHECK(a.total_bytes == 14000);
}

TEST_CASE("paged_budget: hand-computed splits in bytes with unequal block costs") {
  const sensitivity_profile none;
  // Layer 0 has twice the kv heads: 2000 bytes per block against 1000; 10 blocks each.
  const counts_t len = {160, 160}, cost = {2000, 1000};
  auto a = allocate_paged("uniform", make_req(len, {}, 16, cost, paged_budget::in_bytes(15000)), none);
  CHECK(a.blocks == counts_t{5, 5});  // the same keep ratio, 10000 + 5000 bytes
  CHECK(a.total_bytes == 15000);
  a = allocate_paged("uniform", make_req(len, {}, 16, cost, paged_budget::in_bytes(15999)), none);
  CHECK(a.blocks == counts_t{5, 5});  // 999 bytes buy no block
  CHECK(a.total_bytes == 15000);
  // 16 units of 1000 bytes: uniform gives 10.67 and 5.33 units -> 11 and 5; layer 0's 11 units
  // are 5 blocks and a half; the half (1000 bytes) cannot buy its block but buys one of layer 1.
  a = allocate_paged("uniform", make_req(len, {}, 16, cost, paged_budget::in_bytes(16000)), none);
  CHECK(a.blocks == counts_t{5, 6});
  CHECK(a.total_bytes == 16000);
  a = allocate_paged("uniform", make_req(len, {}, 16, cost, paged_budget::ratio(0.5)), none);
  CHECK(a.blocks == counts_t{5, 5});
  // Two 3000-byte layers and a 1000-byte one, 25 units of 1000: shares 10.71, 10.71, 3.57 units
  // -> 11, 11, 3 -> 3 + 2/3, 3 + 2/3, 3 blocks; 4 units left: the largest remainder first (layer
  // 0 gets its block, layer 1's no longer fits), then layer 2 one more: 25000 bytes.
  a = allocate_paged(
      "uniform", make_req({160, 160, 160}, {}, 16, {3000, 3000, 1000}, paged_budget::in_bytes(25000)), none);
  CHECK(a.blocks == counts_t{4, 3, 4});
  CHECK(a.total_bytes == 25000);
  // Costs with gcd 1 (1999 and 1000 bytes), 3 layers: budget 9000 -> blocks within it.
  a = allocate_paged(
      "uniform", make_req({160, 160, 160}, {}, 16, {1999, 1000, 1000}, paged_budget::in_bytes(9000)), none);
  CHECK(a.total_bytes <= 9000);
  CHECK(9000 - a.total_bytes < 1000);
  CHECK(a.blocks == counts_t{2, 3, 2});  // 1999 * 2 + 1000 * 5 = 8998: shares 2.25 blocks each
}

TEST_CASE("paged_budget: request errors name the argument and say by how many blocks or bytes") {
  const sensitivity_profile none;
  const auto run = [&](const paged_allocation_request& r) { (void)allocate_paged("uniform", r, none); };
  const auto blk = paged_budget::in_blocks(5);
  require_error([&] { run(make_req({}, {}, 16, {}, blk)); }, {"allocate_paged", "lengths is empty"});
  require_error([&] { run(make_req({10, 10, 10}, {1, 2}, 16, {}, blk)); }, {"minimums has 2 entries"});
  require_error([&] { run(make_req({10, 10, 10}, {}, 16, {5, 6}, blk)); }, {"block_bytes has 2 entries"});
  require_error([&] { run(make_req({10, 10, 10}, {}, 16, {5, 0, 6}, blk)); }, {"block_bytes[1] = 0"});
  require_error([&] { run(make_req({10}, {}, 0, {}, blk)); }, {"block_size must be > 0"});
  require_error([&] { run(make_req({10}, {}, 16, {}, paged_budget::in_bytes(100))); },
                {"budget of 100 bytes needs block_bytes"});
  // Floors: 3 + 3 + 2 blocks.
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, {}, paged_budget::in_blocks(7)));
      },
      {"budget of 7 blocks is below the sum of per-layer floors (8 blocks", "by 1 blocks"});
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, {}, paged_budget::in_blocks(17)));
      },
      {"budget of 17 blocks exceeds the 16 blocks", "by 1 blocks"});
  // In bytes: floors 3 * 200 + 3 * 100 + 2 * 100 = 1100, everything 7 * 200 + 7 * 100 + 2 * 100 = 2300.
  const counts_t c = {200, 100, 100};
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, c, paged_budget::in_bytes(1099)));
      },
      {"budget of 1099 bytes is below the 1100 bytes the per-layer floors cost", "by 1 bytes"});
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, c, paged_budget::in_bytes(2301)));
      },
      {"budget of 2301 bytes exceeds the 2300 bytes", "by 1 bytes"});
  CHECK(allocate_paged("uniform", make_req({100, 100, 30}, {40}, 16, c, paged_budget::in_bytes(1100)), none)
            .blocks == counts_t{3, 3, 2});
  CHECK(allocate_paged("uniform", make_req({100, 100, 30}, {40}, 16, c, paged_budget::in_bytes(2300)), none)
            .blocks == counts_t{7, 7, 2});
  require_error([&] { run(make_req({100}, {}, 16, {}, paged_budget::ratio(1.5))); },
                {"keep ratio 1.5 outside"});
  require_error([&] { run(make_req({100}, {}, 16, {}, paged_budget::ratio(std::nan("")))); }, {"keep ratio"});
  // Ratio 0.1 of 16 blocks = 2 blocks, floors 8: in blocks; with unequal costs in bytes (units of 100).
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, {}, paged_budget::ratio(0.1)));
      },
      {"keep ratio 0.1 of 16 blocks gives 2 blocks, below the per-layer floors (8 blocks", "by 6 blocks"});
  require_error(
      [&] {
        run(make_req({100, 100, 30}, {40}, 16, c, paged_budget::ratio(0.1)));
      },
      {"keep ratio 0.1 of 2300 bytes gives 200 bytes", "(1100 bytes", "by 900 bytes"});
  // SIZE_MAX-class sizes.
  require_error([&] { run(make_req({smax}, {}, 1, {}, blk)); },
                {"lengths[0] = 18446744073709551615 tokens", "above the supported 9007199254740992 blocks"});
  require_error(
      [&] {
        run(make_req({1u << 30, 1u << 30}, {}, 1, {1, std::size_t{1} << 24}, paged_budget::in_bytes(1)));
      },
      {"lengths[1] = 1073741824 tokens", "16777216 units of 1 bytes each", "cost units (2^53)"});
  require_error([&] { run(make_req({std::size_t{1} << 40}, {}, 1, {std::size_t{1} << 30}, blk)); },
                {"lengths[0] = 1099511627776 tokens", "above SIZE_MAX bytes"});
  require_error([&] { run(make_req({10}, {}, smax, {}, blk)); }, {"budget of 5 blocks exceeds the 1 blocks"});
  CHECK(allocate_paged("uniform", make_req({smax}, {}, smax, {}, paged_budget::in_blocks(1)), none).keep ==
        counts_t{smax});
}

TEST_CASE("paged_budget: allocator errors and broken allocators") {
  sensitivity_profile p3 = random_profile(3);
  const auto req = make_req({100, 100}, {}, 16, {}, paged_budget::in_blocks(5));
  require_error([&] { (void)allocate_paged("curve", req, p3); },
                {"allocate_paged: allocator 'curve' counting in blocks", "profile has 3 layers"});
  require_error(
      [&] {
        (void)allocate_paged("proportional", make_req({100, 100}, {}, 16, {3, 5}, paged_budget::in_bytes(30)),
                             p3);
      },
      {"allocator 'proportional' counting in cost units of 1 bytes", "profile has 3 layers"});
  require_error([&] { (void)allocate_paged("greedy", req, p3); }, {"unknown allocator 'greedy'"});
  require_error([&] { (void)allocate_paged(short_allocator{}, req, p3); },
                {"allocator 'short' returned 1 counts for 2 layers"});
  require_error([&] { (void)allocate_paged(greedy_allocator{}, req, p3); },
                {"allocator 'greedy' returned counts summing to 14, not the budget of 5"});
}

TEST_CASE("paged_budget: random requests, equal costs: exact block sums, floors, bounds (all allocators)") {
  for (int it = 0; it < 300; ++it) {
    const std::size_t L = uniform_int(1, 12);
    const auto s = random_shape(L);
    const auto p = random_profile(L);
    paged_allocation_request r = make_req(s.lengths, s.minimums, s.B, {}, {});
    const std::size_t mode = uniform_int(0, 2);  // no costs, one cost, n equal costs
    const std::size_t c = uniform_int(1, 70000);
    if (mode == 1) r.block_bytes = {c};
    if (mode == 2) r.block_bytes.assign(L, c);
    const expect e = expected(r);
    const std::size_t lo = sum(e.floor_blocks), hi = sum(e.len_blocks), want = uniform_int(lo, hi);
    for (const auto name : allocator_names) {
      INFO(name << " iteration " << it << " block size " << s.B << " budget " << want);
      r.budget = paged_budget::in_blocks(want);
      const auto a = allocate_paged(name, r, p);
      check_shape(a, r, e);
      CHECK(a.total_blocks == want);
      // Reference: the token allocator on the lengths and floors in blocks.
      const auto ref =
          allocate(name, token_req(e.len_blocks, e.floor_blocks, global_budget::tokens(want)), p);
      CHECK(a.blocks == ref);
      if (mode != 0) {  // the same budget in bytes, plus less than a block: the same blocks
        r.budget = paged_budget::in_bytes(want * c + (want < hi ? uniform_int(0, c - 1) : 0));
        CHECK(allocate_paged(name, r, p).blocks == a.blocks);
      }
      // A keep ratio rounds half up to blocks.
      const double ratio = urand(0.0, 1.0);
      const auto rb = static_cast<std::size_t>(std::floor(static_cast<long double>(ratio) * hi + 0.5L));
      if (rb >= lo) {
        r.budget = paged_budget::ratio(ratio);
        CHECK(allocate_paged(name, r, p).total_blocks == rb);
      }
    }
  }
}

TEST_CASE("paged_budget: block size 1 and equal costs reproduce the token allocators exactly") {
  for (int it = 0; it < 200; ++it) {
    const std::size_t L = uniform_int(1, 12);
    auto s = random_shape(L);
    const auto p = random_profile(L);
    std::size_t lo = 0, total = 0;
    for (std::size_t l = 0; l < L; ++l) {
      lo += std::min(s.minimums[l], s.lengths[l]);
      total += s.lengths[l];
    }
    const std::size_t want = uniform_int(lo, total);
    const double ratio = urand(0.0, 1.0);
    for (const auto name : allocator_names) {
      INFO(name << " iteration " << it);
      const auto tok = allocate(name, token_req(s.lengths, s.minimums, global_budget::tokens(want)), p);
      const auto a =
          allocate_paged(name, make_req(s.lengths, s.minimums, 1, {}, paged_budget::in_blocks(want)), p);
      CHECK(a.blocks == tok);
      CHECK(a.keep == tok);
      const auto b = allocate_paged(
          name,
          make_req(s.lengths, s.minimums, 1, {4}, paged_budget::in_bytes(4 * want + (want < total ? 3 : 0))),
          p);
      CHECK(b.blocks == tok);
      CHECK(b.total_bytes == 4 * want);
      const allocation_request tr = token_req(s.lengths, s.minimums, global_budget::ratio(ratio));
      if (resolve(token_req(s.lengths, {}, global_budget::ratio(ratio))).budget >= lo) {
        CHECK(allocate_paged(name, make_req(s.lengths, s.minimums, 1, {}, paged_budget::ratio(ratio)), p)
                  .blocks == allocate(name, tr, p));
      }
    }
  }
}

TEST_CASE("paged_budget: random requests, unequal costs: bytes never exceeded, leftover below a block") {
  std::size_t with_leftover = 0, exact = 0;
  for (int it = 0; it < 300; ++it) {
    const std::size_t L = uniform_int(2, 12);
    const auto s = random_shape(L);
    const auto p = random_profile(L);
    paged_allocation_request r = make_req(s.lengths, s.minimums, s.B, random_costs(L, s.B), {});
    const expect e = expected(r);
    const std::size_t lo = dot(e.floor_blocks, e.cost), hi = dot(e.len_blocks, e.cost);
    const std::size_t want = uniform_int(lo, hi);
    std::size_t g = 0;
    for (const auto c : e.cost) g = std::gcd(g, c);
    for (const auto name : allocator_names) {
      INFO(name << " iteration " << it << " block size " << s.B << " budget " << want << " bytes");
      r.budget = paged_budget::in_bytes(want);
      const auto a = allocate_paged(name, r, p);
      check_shape(a, r, e);
      check_bytes(a, e, want);
      (a.total_bytes == want ? exact : with_leftover) += 1;
      // Never below the allocator's own split in cost units (g bytes), floored to blocks.
      counts_t vlen(L), vmin(L), unit(L);
      for (std::size_t l = 0; l < L; ++l) {
        unit[l] = e.cost[l] / g;
        vlen[l] = e.len_blocks[l] * unit[l];
        vmin[l] = e.floor_blocks[l] * unit[l];
      }
      const auto u = allocate(name, token_req(vlen, vmin, global_budget::tokens(want / g)), p);
      for (std::size_t l = 0; l < L; ++l) CHECK(a.blocks[l] >= u[l] / unit[l]);
      // A keep ratio of the current bytes, rounded half up to units of g bytes.
      const double ratio = urand(0.0, 1.0);
      const auto ru = static_cast<std::size_t>(std::floor(static_cast<long double>(ratio) * (hi / g) + 0.5L));
      if (ru * g >= lo) {
        r.budget = paged_budget::ratio(ratio);
        const auto b = allocate_paged(name, r, p);
        check_shape(b, r, e);
        check_bytes(b, e, ru * g);
      }
    }
  }
  CHECK(with_leftover > 0);  // the leftover bound was exercised, not only exact fits
  CHECK(exact > 0);
}

TEST_CASE("paged_budget: a layer with twice the kv heads is charged twice") {
  const sensitivity_profile none;
  for (int it = 0; it < 300; ++it) {
    const std::size_t B = uniform_int(0, 1) ? 16 : uniform_int(1, 8), len = uniform_int(B, 4000);
    const std::size_t c4 = layer_block_bytes(heads{4}, dim{128}, 2, block_tokens{B});
    const std::size_t c8 = layer_block_bytes(heads{8}, dim{128}, 2, block_tokens{B});
    REQUIRE(c8 == 2 * c4);
    const std::size_t nb = cdiv(len, B), want = uniform_int(0, 3 * nb * c4);
    const auto a =
        allocate_paged("uniform", make_req({len, len}, {}, B, {c4, c8}, paged_budget::in_bytes(want)), none);
    INFO("block size " << B << " length " << len << " budget " << want << " blocks " << a.blocks[0] << ", "
                       << a.blocks[1]);
    // The same keep ratio in both (up to the rounding of blocks), so the 8-head layer takes
    // twice the bytes; a byte budget that ignored heads would give it half the ratio.
    const double r = double(want) / double(3 * nb * c4);
    CHECK(std::abs(double(a.blocks[0]) - r * double(nb)) < 2.0 + 1e-9);
    CHECK(std::abs(double(a.blocks[1]) - r * double(nb)) < 2.0 + 1e-9);
    CHECK(a.blocks[0] + 2 >= a.blocks[1]);
    CHECK(a.blocks[1] + 2 >= a.blocks[0]);
    CHECK(a.total_bytes == a.blocks[0] * c4 + a.blocks[1] * c8);
    CHECK(a.total_bytes <= want);
    if (a.blocks[0] < nb) CHECK(want - a.total_bytes < c4);
  }
}

TEST_CASE("paged_budget: uniform in bytes keeps one ratio across layers of any cost") {
  // Independent reference without floors: the real share of layer l is r * len_blocks[l] with
  // r = budget / total bytes; each layer within 2 blocks of it... and above its floor by at most
  // what the bytes left over could buy.
  for (int it = 0; it < 300; ++it) {
    const std::size_t L = uniform_int(2, 10), B = 16;
    counts_t len(L), cost(L);
    for (std::size_t l = 0; l < L; ++l) {
      len[l] = uniform_int(1, 3000);
      cost[l] = layer_block_bytes(heads{std::size_t{1} << uniform_int(0, 3)}, dim{128}, 2, block_tokens{B});
    }
    const auto r = make_req(len, {}, B, cost, {});
    const expect e = expected(r);
    const std::size_t total = dot(e.len_blocks, cost), want = uniform_int(0, total);
    auto rq = r;
    rq.budget = paged_budget::in_bytes(want);
    const auto a = allocate_paged("uniform", rq, sensitivity_profile{});
    const double ratio = double(want) / double(total);
    std::size_t max_cost = 0, min_cost = smax;
    for (const auto c : cost) {
      max_cost = std::max(max_cost, c);
      min_cost = std::min(min_cost, c);
    }
    for (std::size_t l = 0; l < L; ++l) {
      INFO("layer " << l << " cost " << cost[l] << " blocks " << a.blocks[l] << " share "
                    << ratio * double(e.len_blocks[l]));
      CHECK(double(a.blocks[l]) > ratio * double(e.len_blocks[l]) - 2.0);
      CHECK(double(a.blocks[l]) < ratio * double(e.len_blocks[l]) + 2.0 + double(max_cost / min_cost));
    }
    check_bytes(a, e, want);
  }
}

TEST_CASE("paged_budget: split_heads_paged and per_head_extent") {
  const counts_t hl = {100, 100, 50, 0};  // 7, 7, 4, 0 blocks of 16
  auto s = split_heads_paged(blocks{13}, hl, block_tokens{16});
  CHECK(s.blocks == counts_t{5, 5, 3, 0});  // 5.06, 5.06, 2.89 -> 5, 5, 2 + the largest remainder
  CHECK(s.keep == counts_t{80, 80, 48, 0});
  s = split_heads_paged(blocks{9}, hl, block_tokens{16}, 40);  // floors 3, 3, 3, 0
  CHECK(s.blocks == counts_t{3, 3, 3, 0});
  CHECK(s.keep == counts_t{48, 48, 48, 0});
  s = split_heads_paged(blocks{18}, hl, block_tokens{16});
  CHECK(s.keep == hl);
  s = split_heads_paged(blocks{4}, counts_t{64, 64}, block_tokens{16}, 0, std::vector<double>{1, 3});
  CHECK(s.blocks == counts_t{1, 3});  // 4 blocks each, weights 1:3
  s = split_heads_paged(blocks{6}, counts_t{64, 64}, block_tokens{16}, 0, std::vector<double>{1, 3});
  CHECK(s.blocks == counts_t{2, 4});  // 1.5 and 4.5: head 1 saturates at its 4 blocks, head 0 takes the rest
  require_error(
      [&] { (void)split_heads_paged(blocks{8}, hl, block_tokens{16}, 40); },
      {"split_heads_paged", "total of 8 blocks is below the heads' floors (9 blocks", "by 1 blocks"});
  require_error([&] { (void)split_heads_paged(blocks{19}, hl, block_tokens{16}); },
                {"total of 19 blocks exceeds the 18 blocks", "by 1 blocks"});
  require_error([&] { (void)split_heads_paged(blocks{1}, counts_t{}, block_tokens{16}); },
                {"head_lengths is empty"});
  require_error([&] { (void)split_heads_paged(blocks{1}, hl, block_tokens{0}); }, {"block_size must be > 0"});
  require_error([&] { (void)split_heads_paged(blocks{1}, hl, block_tokens{16}, 0, std::vector<double>{1}); },
                {"head_weights has 1 entries"});
  require_error(
      [&] {
        (void)split_heads_paged(blocks{1}, hl, block_tokens{16}, 0, std::vector<double>{1, 1, -2, 1});
      },
      {"head_weights[2] = -2"});
  require_error(
      [&] {
        (void)split_heads_paged(blocks{1}, counts_t{smax, smax}, block_tokens{1});
      },
      {"head_lengths[0] = 18446744073709551615", "2^53"});
  // per_head_extent: 7 + 7 + 4 + 0 blocks; floors of 40 tokens: 3 + 3 + 3 + 0.
  const paged_extent x = per_head_extent(hl, block_tokens{16}, 40);
  CHECK(x.length == 18 * 16);
  CHECK(x.minimum == 9 * 16);
  require_error([&] { (void)per_head_extent(counts_t{}, block_tokens{16}); },
                {"per_head_extent", "head_lengths is empty"});
  require_error([&] { (void)per_head_extent(hl, block_tokens{0}); }, {"block_size must be > 0"});
  require_error(
      [&] {
        (void)per_head_extent(counts_t{smax, smax}, block_tokens{1});
      },
      {"head_lengths[1] = 18446744073709551615", "overflows size_t"});
  require_error([&] { (void)per_head_extent(counts_t{smax}, block_tokens{2}); }, {"overflows size_t"});
  // Random: exact sums, floors, bounds.
  for (int it = 0; it < 300; ++it) {
    const std::size_t H = uniform_int(1, 16), B = uniform_int(1, 3) == 1 ? 1 : uniform_int(2, 32);
    counts_t lens(H);
    for (auto& v : lens) v = uniform_int(0, 500);
    const std::size_t m = uniform_int(0, 60);
    std::size_t lo = 0, hi = 0;
    for (const auto v : lens) {
      lo += cdiv(std::min(m, v), B);
      hi += cdiv(v, B);
    }
    std::vector<double> w;
    if (uniform_int(0, 1)) {
      w.resize(H);
      for (auto& v : w) v = urand(0.0, 2.0);
    }
    const std::size_t total = uniform_int(lo, hi);
    const auto sp = split_heads_paged(blocks{total}, lens, block_tokens{B}, m, w);
    CHECK(sum(sp.blocks) == total);
    for (std::size_t h = 0; h < H; ++h) {
      CHECK(sp.blocks[h] >= cdiv(std::min(m, lens[h]), B));
      CHECK(sp.blocks[h] <= cdiv(lens[h], B));
      CHECK(sp.keep[h] == std::min(lens[h], sp.blocks[h] * B));
      CHECK(sp.keep[h] >= std::min(m, lens[h]));
    }
    const auto ex = per_head_extent(lens, block_tokens{B}, m);
    CHECK(ex.length == hi * B);
    CHECK(ex.minimum == lo * B);
  }
}

TEST_CASE("paged_budget: layers of heads of different lengths, in one-head pages, then split per head") {
  for (int it = 0; it < 100; ++it) {
    const std::size_t L = uniform_int(1, 6), B = 16, m = 20;
    const auto p = random_profile(L);
    std::vector<counts_t> head_lengths(L);
    paged_allocation_request r;
    r.block_size = block_tokens{B};
    std::size_t lo = 0, hi = 0;
    for (std::size_t l = 0; l < L; ++l) {
      head_lengths[l].resize(uniform_int(1, 8));
      for (auto& v : head_lengths[l]) v = uniform_int(0, 600);
      const auto x = per_head_extent(head_lengths[l], block_tokens{B}, m);
      r.lengths.push_back(x.length);
      r.minimums.push_back(x.minimum);
      r.block_bytes.push_back(
          layer_block_bytes(heads{1}, dim{uniform_int(0, 1) ? 64u : 128u}, 2, block_tokens{B}));
      lo += x.minimum / B * r.block_bytes.back();
      hi += x.length / B * r.block_bytes.back();
    }
    const std::size_t want = uniform_int(lo, hi);
    r.budget = paged_budget::in_bytes(want);
    for (const auto name : allocator_names) {
      INFO(name << " iteration " << it);
      const auto a = allocate_paged(name, r, p);
      check_shape(a, r, expected(r));
      check_bytes(a, expected(r), want);
      std::size_t bytes = 0;
      for (std::size_t l = 0; l < L; ++l) {
        const auto sp =
            split_heads_paged(blocks{a.blocks[l]}, head_lengths[l], block_tokens{B}, m);  // feasible
        CHECK(sum(sp.blocks) == a.blocks[l]);
        bytes += sum(sp.blocks) * r.block_bytes[l];
        for (std::size_t h = 0; h < sp.blocks.size(); ++h)
          CHECK(sp.keep[h] >= std::min(m, head_lengths[l][h]));
      }
      CHECK(bytes == a.total_bytes);
    }
  }
  // Heads of equal length: b blocks per head are b * H pages, split back equally.
  const auto sp = split_heads_paged(blocks{5 * 4}, counts_t(4, 100), block_tokens{16});
  CHECK(sp.blocks == counts_t(4, 5));
}

TEST_CASE("paged_budget: a paged_cache pruned to the allocation holds exactly its blocks and bytes") {
  // Two layers of 2 kv heads (paged_cache pages hold one head): a block costs 2 * block_bytes().
  const std::size_t L = 3, H = 2, D = 8, B = 16, pool = 64;
  paged_cache<float> pc(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{pool}, block_tokens{B}));
  const auto s = pc.add_sequence();
  const counts_t len = {150, 97, 200};
  std::vector<float> k(H * 200 * D), v(k.size());
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(0.37f * float(i));
    v[i] = std::cos(0.11f * float(i));
  }
  std::vector<pos_t> pos(200);
  std::iota(pos.begin(), pos.end(), 0);
  for (std::size_t l = 0; l < L; ++l) {
    const kv_shape sh(heads{H}, tokens{len[l]}, dim{D});
    std::vector<float> kl(H * len[l] * D), vl(kl.size());
    std::copy(k.begin(), k.begin() + std::ptrdiff_t(kl.size()), kl.begin());
    std::copy(v.begin(), v.begin() + std::ptrdiff_t(vl.size()), vl.begin());
    pc.append(s, l, kv_view<const float>::hnd(kl.data(), sh), kv_view<const float>::hnd(vl.data(), sh),
              span<const pos_t>(pos.data(), len[l]));
  }
  const std::size_t cost = layer_block_bytes(heads{H}, dim{D}, sizeof(float), block_tokens{B});
  REQUIRE(cost == H * pc.block_bytes());
  const knorm policy{1, 4};
  const auto p = random_profile(L);
  for (const auto name : allocator_names) {
    INFO(name);
    const auto a = allocate_paged(
        name,
        make_req(len, {policy.n_sink + policy.n_recent}, B, {cost}, paged_budget::in_bytes(12 * cost + 5)),
        p);
    CHECK(a.total_blocks == 12);
    CHECK(a.total_bytes == 12 * cost);
    paged_cache<float> copy = pc;
    paged_prune_workspace<float> ws;
    prune_options opt;
    opt.mode = granularity::shared;
    std::size_t held_bytes = 0;
    for (std::size_t l = 0; l < L; ++l) {
      (void)prune_paged(copy, s, l, a.keep[l], policy, ws, {}, opt);
      CHECK(copy.blocks_held(s, l) == a.blocks[l] * H);
      for (std::size_t h = 0; h < H; ++h) CHECK(copy.length(s, l, h) == a.keep[l]);
      held_bytes += copy.blocks_held(s, l) * copy.block_bytes();
    }
    CHECK(held_bytes == a.total_bytes);
  }
}
