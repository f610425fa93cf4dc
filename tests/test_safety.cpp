// SIZE_MAX-class arguments at every public entry: each call throws depthkv::error naming the
// argument (never wraps past a check into an out-of-bounds access), and leaves its outputs and
// the cache exactly as they were. Also the edge cases where huge but meaningful values (n_sink =
// SIZE_MAX with k >= n, keep = SIZE_MAX, lengths summing to 2^53) must still work.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <numeric>
#include <vector>

#include "catch.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/view/kv_view.hpp"
#include "depthkv/detail/aligned_buffer.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/prune.hpp"
#include "depthkv/score/pooling.hpp"
#include "depthkv/score/window.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/select/topk.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;

namespace {

constexpr std::size_t big = std::numeric_limits<std::size_t>::max();

// A size the optimiser cannot see through: huge sizes that a call must reject would otherwise
// make GCC warn about the (unreachable) kernel loops they would drive.
std::size_t opaque(std::size_t v) {
  volatile std::size_t x = v;
  return x;
}
constexpr index_t sentinel = 0xdeadbeefu;

std::vector<float> random_scores(std::size_t n) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> s(n);
  for (float& x : s) x = u(rng());
  return s;
}

// A cache of L layers x H heads x n rows with distinct K values; V = K + 1.
kv_cache<float> make_cache(std::size_t L, std::size_t H, std::size_t d, std::size_t n) {
  kv_cache<float> c(layers{L}, heads{H}, dim{d}, n);
  std::vector<float> k(H * n * d), v(H * n * d);
  for (std::size_t l = 0; l < L; ++l) {
    for (std::size_t i = 0; i < k.size(); ++i) {
      k[i] = static_cast<float>(l * 100000 + i);
      v[i] = k[i] + 1.f;
    }
    c.append(l, kv_view<const float>::hnd(k.data(), kv_shape(heads{H}, tokens{n}, dim{d})), kv_view<const float>::hnd(v.data(), kv_shape(heads{H}, tokens{n}, dim{d})), pos_t{0});
  }
  return c;
}

// Everything observable about a cache: per (layer, head) length, capacity, rows and positions.
std::vector<float> snapshot(const kv_cache<float>& c) {
  std::vector<float> s;
  for (std::size_t l = 0; l < c.n_layers(); ++l)
    for (std::size_t h = 0; h < c.n_kv_heads(); ++h) {
      s.push_back(static_cast<float>(c.length(l, h)));
      s.push_back(static_cast<float>(c.capacity(l, h)));
      const auto k = c.keys(l, h), v = c.values(l, h);
      for (std::size_t t = 0; t < k.n; ++t) {
        s.insert(s.end(), k.row(t), k.row(t) + k.dim);
        s.insert(s.end(), v.row(t), v.row(t) + v.dim);
        s.push_back(static_cast<float>(c.positions(l, h)[t]));
      }
    }
  return s;
}

}  // namespace

TEST_CASE("checked arithmetic helpers", "[safety]") {
  std::size_t r = 0;
  CHECK(detail::add_fits(big - 1, 1, r));
  CHECK(r == big);
  CHECK_FALSE(detail::add_fits(big, 1, r));
  CHECK(detail::mul_fits(big / 3, 3, r));
  CHECK_FALSE(detail::mul_fits(big / 3 + 1, 3, r));
  CHECK(detail::mul_fits(0, big, r));
  CHECK(r == 0);
  CHECK(detail::sat_add(big, big) == big);
  CHECK(detail::sat_mul(std::size_t{1} << 32, std::size_t{1} << 32) == big);
  CHECK(detail::sat_mul(std::size_t{1} << 31, std::size_t{1} << 32) == std::size_t{1} << 63);
  require_error([] { detail::checked_add("f", big, 2, "x"); }, {"f: x", "overflows size_t"});
  require_error([] { detail::checked_mul("f", big / 2, 3, "y"); }, {"f: y", "overflows size_t"});
  // protected_rows = min(n, n_sink + n_recent) with no wrap for any inputs.
  CHECK(detail::protected_rows(10, big, big) == 10);
  CHECK(detail::protected_rows(10, big, 1) == 10);
  CHECK(detail::protected_rows(10, 3, big) == 10);
  CHECK(detail::protected_rows(10, 3, 4) == 7);
  CHECK(detail::protected_rows(0, big, big) == 0);
  CHECK(detail::clamp_to_count(1e300, 5) == 5);
  CHECK(detail::clamp_to_count(-1.0, 5) == 0);
  CHECK(detail::clamp_to_count(std::numeric_limits<double>::quiet_NaN(), 5) == 0);
  CHECK(detail::clamp_to_count(18446744073709551616.0, big) == big);
  CHECK(detail::clamp_to_count(3.7, 5) == 3);
}

TEST_CASE("topk: n_sink / n_recent near SIZE_MAX are errors or exact, never a wrap", "[safety][topk]") {
  for (const std::size_t n : {std::size_t{5}, std::size_t{100}, std::size_t{5000}}) {
    const auto s = random_scores(n);
    for (isa path : depthkv_test::supported_paths()) {
      const scoped_isa use(path);
      INFO("n " << n << " path " << isa_name(path));
      std::vector<index_t> out(n, sentinel);
      // n_sink + n_recent wraps to a small number: the protected rows are really all n.
      for (const topk_options opt : {topk_options{big, 1}, topk_options{big, big}, topk_options{1, big},
                                     topk_options{big / 2 + 1, big / 2 + 1}}) {
        topk_scratch sc;
        require_error([&] { topk(s, n / 2, out, opt, sc); },
                      {"depthkv::topk", "protected positions", "exceed k = " + std::to_string(n / 2)});
        CHECK(std::all_of(out.begin(), out.end(), [](index_t i) { return i == sentinel; }));
      }
      // k >= n: everything is kept, protected or not.
      topk_scratch sc;
      const std::size_t m = topk(s, n, out, topk_options{big, big}, sc);
      REQUIRE(m == n);
      for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == i);
      std::fill(out.begin(), out.end(), sentinel);
      CHECK(topk(s, big, out, topk_options{big, 0}, sc) == n);
      for (std::size_t i = 0; i < n; ++i) CHECK(out[i] == i);
    }
  }
}

TEST_CASE("topk_rows: stride arithmetic that wraps is an error, outputs untouched", "[safety][topk]") {
  const std::size_t n = 10, rows = 4;
  const auto s = random_scores(rows * n);
  const std::vector<std::size_t> ks(rows, 3);
  std::vector<index_t> out(rows * n, sentinel);
  std::vector<std::size_t> counts(rows, 77);
  topk_scratch sc;
  auto untouched = [&] {
    CHECK(std::all_of(out.begin(), out.end(), [](index_t i) { return i == sentinel; }));
    CHECK(std::all_of(counts.begin(), counts.end(), [](std::size_t c) { return c == 77; }));
  };
  // (rows - 1) * score_stride wraps to a small number that passed the old size check.
  const std::size_t wrap3 = big / 3 + 1;  // 3 * wrap3 == 2 (mod 2^64)
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(s, rows, n, wrap3), ks, strided_rows<index_t>::with_stride(out, rows, n, n), counts, {}, sc); },
                {"depthkv::topk_rows", "scores.stride " + std::to_string(wrap3), "overflows size_t"});
  untouched();
  // (rows - 1) * score_stride + n wraps.
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(s, 2, n, big - 5), {ks.data(), 2}, strided_rows<index_t>::with_stride(out, 2, n, n), {}, {}, sc); },
                {"scores: 2 rows", "overflows size_t"});
  untouched();
  // out_stride 2^63: h * out_stride wraps for h = 2; for h = 1 row 1 would start beyond out.
  const std::size_t half = std::size_t{1} << 63;
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(s, rows, n, n), ks, strided_rows<index_t>::with_stride(out, rows, half, half), counts, {}, sc); },
                {"out.stride " + std::to_string(half), "overflows size_t"});
  untouched();
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(s, 2, n, n), {ks.data(), 2}, strided_rows<index_t>::with_stride(out, 2, half, half), {counts.data(), 2}, {}, sc); },
                {"out: 2 rows of " + std::to_string(half), "overflows size_t"});
  untouched();
  // n beyond what 32-bit indices address (checked before the spans are touched).
  // (The span claims more scores than exist; the call must fail before reading any.)
  const span<const float> claimed(s.data(), opaque(std::size_t{1} << 33));
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(claimed, 1, std::size_t{1} << 33, std::size_t{1} << 33), {ks.data(), 1}, strided_rows<index_t>::with_stride(out, 1, n, n), {}, {}, sc); },
                {"32-bit indices"});
  untouched();
  // Protected rows that wrap, per row.
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(s, rows, n, n), ks, strided_rows<index_t>::with_stride(out, rows, n, n), counts, topk_options{big, 2}, sc); },
                {"protected positions"});
  untouched();
  // The same call with sane strides works.
  topk_rows(strided_rows<const float>::with_stride(s, rows, n, n), ks, strided_rows<index_t>::with_stride(out, rows, n, n), counts, {}, sc);
  for (std::size_t h = 0; h < rows; ++h) CHECK(counts[h] == 3);
}

TEST_CASE("prune: protected rows near SIZE_MAX are errors and leave the cache unchanged", "[safety][prune]") {
  kv_cache<float> c = make_cache(2, 2, 4, 20);
  const auto before = snapshot(c);
  prune_workspace ws;
  knorm pol;
  for (const auto& [sink, recent] : {std::pair<std::size_t, std::size_t>{big, 1}, {big, big}, {1, big},
                                     {big / 2 + 1, big / 2 + 1}}) {
    pol.n_sink = sink;
    pol.n_recent = recent;
    INFO("n_sink " << sink << " n_recent " << recent);
    for (granularity g : {granularity::per_head, granularity::shared, granularity::adaptive}) {
      prune_options opt;
      opt.mode = g;
      opt.alpha = 0.5f;
      require_error([&] { prune_layer(c, 0, 5, pol, ws, {}, opt); }, {"depthkv::prune_layer", "protected rows"});
      const std::vector<std::size_t> keep{5, 5};
      require_error([&] { prune(c, keep, pol, ws, {}, opt); }, {"depthkv::prune", "protected rows"});
      CHECK(snapshot(c) == before);
    }
  }
  // Over an engine view too.
  std::vector<float> k(2 * 20 * 4), v(k.size());
  std::iota(k.begin(), k.end(), 0.f);
  std::iota(v.begin(), v.end(), 1.f);
  const auto k0 = k, v0 = v;
  std::vector<std::size_t> lens(2, 20);
  pol.n_sink = big;
  pol.n_recent = 3;
  const kv_shape shape(heads{2}, tokens{20}, dim{4});
  const layer_view<float> view{kv_view<float>::hnd(k.data(), shape), kv_view<float>::hnd(v.data(), shape),
                               layer_positions::none(), span<std::size_t>(lens)};
  require_error([&] { prune_view(view, 0, 5, pol, ws); }, {"depthkv::prune_view", "protected rows"});
  CHECK(k == k0);
  CHECK(v == v0);
  CHECK(lens == std::vector<std::size_t>(2, 20));
}

TEST_CASE("prune: keep = SIZE_MAX keeps everything in every mode", "[safety][prune]") {
  for (granularity g : {granularity::per_head, granularity::shared, granularity::adaptive}) {
    kv_cache<float> c = make_cache(1, 3, 4, 30);
    const auto before = snapshot(c);
    prune_workspace ws;
    knorm pol;
    pol.n_sink = big;  // with keep = SIZE_MAX the protected rows (all) fit
    pol.n_recent = big;
    prune_options opt;
    opt.mode = g;
    opt.alpha = 1.f;  // ceil(alpha * keep) as a count must not be an out-of-range double -> size_t cast
    prune_layer(c, 0, big, pol, ws, {}, opt);
    CHECK(snapshot(c) == before);
  }
}

TEST_CASE("allocators: lengths whose sum overflows are rejected naming them", "[safety][allocate]") {
  allocation_request req;
  req.lengths = {big, 1, 1};
  req.budget = global_budget::tokens(2);
  sensitivity_profile prof(3);
  for (std::size_t l = 0; l < 3; ++l) {
    prof.add_point(l, 0.5, 1.0 + double(l));
    prof.add_point(l, 1.0, 0.0);
  }
  for (const auto name : allocator_names) {
    INFO(name);
    require_error([&] { allocate(name, req, prof); }, {"lengths[0] = " + std::to_string(big), "2^53"});
  }
  req.budget = global_budget::ratio(1.0);  // used to be accepted against a wrapped total of 1
  require_error([&] { allocate_uniform(req); }, {"lengths[0]", "2^53"});
  req.lengths = {std::size_t{1} << 53, 1};
  require_error([&] { allocate_uniform(req); }, {"lengths[1] = 1", "2^53"});
  // Large but representable totals allocate exactly.
  req.lengths = {std::size_t{1} << 52, std::size_t{1} << 51, std::size_t{1} << 51};
  req.minimums = {big};  // clamps to each length: the budget must then be everything
  req.budget = global_budget::ratio(1.0);
  CHECK(allocate_uniform(req) == req.lengths);
  req.minimums = {};
  for (const double r : {0.0, 0.1, 0.5, 1.0}) {
    req.budget = global_budget::ratio(r);
    const auto want = static_cast<std::size_t>(std::floor(r * double(std::size_t{1} << 53) + 0.5));
    for (const auto name : allocator_names) {
      INFO(name << " at " << r);
      const auto c = allocate(name, req, prof);
      REQUIRE(c.size() == 3);
      CHECK(std::accumulate(c.begin(), c.end(), std::size_t{0}) == want);
      for (std::size_t l = 0; l < 3; ++l) CHECK(c[l] <= req.lengths[l]);
    }
  }
  proportional_options po;
  po.min_keep_ratio = 0.25;
  po.max_keep_ratio = 0.75;
  req.budget = global_budget::ratio(0.5);
  const std::vector<double> sens{1.0, 2.0, 3.0};
  const auto c = allocate_proportional(req, sens, po);
  CHECK(std::accumulate(c.begin(), c.end(), std::size_t{0}) == std::size_t{1} << 52);
  // A token budget beyond the total, and split_heads' lengths.
  req.budget = global_budget::tokens(big);
  require_error([&] { allocate_uniform(req); }, {"exceeds the total"});
  const std::vector<std::size_t> heads{big, big};
  require_error([&] { split_heads(4, heads); }, {"depthkv::split_heads", "lengths[0]"});
}

TEST_CASE("kv_view: strides and shapes whose extent overflows are rejected", "[safety][view]") {
  std::vector<float> buf(64);
  require_error([&] { kv_view<float>::nhd(buf.data(), kv_shape(heads{std::size_t{1} << 62}, tokens{2}, dim{8})); },
                {"depthkv::kv_view::nhd", "n_heads " + std::to_string(std::size_t{1} << 62), "head_dim 8"});
  require_error([&] { kv_view<float>::hnd(buf.data(), kv_shape(heads{2}, tokens{1}, dim{8}), big); },
                {"depthkv::kv_view::hnd", "token_capacity " + std::to_string(big)});
  const std::ptrdiff_t pmax = std::numeric_limits<std::ptrdiff_t>::max(), pmin = std::numeric_limits<std::ptrdiff_t>::min();
  require_error([&] { kv_view<float>(buf.data(), kv_shape(heads{2}, tokens{2}, dim{4}), kv_strides{pmax, 4}); },
                {"strides (head " + std::to_string(pmax), "address more than"});
  require_error([&] { kv_view<float>(buf.data(), kv_shape(heads{2}, tokens{2}, dim{4}), kv_strides{4, pmin}); }, {"address more than"});
  require_error([&] { kv_view<f16>(nullptr, kv_shape(heads{1}, tokens{1}, dim{big}), kv_strides{0, 0}); }, {"data is null"});
  require_error([&] { kv_view<f16>(reinterpret_cast<f16*>(buf.data()), kv_shape(heads{1}, tokens{1}, dim{big}), kv_strides{0, 0}); },
                {"address more than"});
  // The old overlap check computed inner * (inner_count - 1) + head_dim, which wrapped.
  require_error([&] {
    kv_view<float>(buf.data(), kv_shape(heads{3}, tokens{std::size_t{1} << 62}, dim{4}), kv_strides{8, 4});
  }, {"address more than"});
  // Sane views still construct.
  CHECK(kv_view<float>::nhd(buf.data(), kv_shape(heads{2}, tokens{4}, dim{8})).strides().token == 16);
  CHECK(kv_view<float>::hnd(buf.data(), kv_shape(heads{2}, tokens{3}, dim{8}), 4).strides().head == 32);
}

TEST_CASE("compact_rows and window_scores reject rows views whose extent overflows", "[safety][view]") {
  std::vector<float> buf(64, 1.f);
  const std::vector<index_t> keep{0, 1};
  require_error([&] { compact_rows(rows_view<float>{buf.data(), opaque(big), 1, 1}, keep); },
                {"depthkv::compact_rows", "rows:", "address more than"});
  require_error([&] { compact_rows(rows_view<float>{buf.data(), 3, 1, std::numeric_limits<std::ptrdiff_t>::max()}, keep); },
                {"depthkv::compact_rows", "address more than"});
  CHECK(buf == std::vector<float>(64, 1.f));
  std::vector<float> q(8, 0.5f), out(8, -1.f);
  window_scratch ws;
  const auto wq = window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{8}));
  require_error([&] { window_scores(wq, 1, 0, rows_view<const float>{buf.data(), opaque(big / 2), 8, 8}, {}, out, ws); },
                {"depthkv::window_scores", "keys", "address more than"});
  CHECK(out == std::vector<float>(8, -1.f));
  require_error([&] { window_queries::dense(q.data(), kv_shape(heads{std::size_t{1} << 40}, tokens{std::size_t{1} << 40}, dim{128})); },
                {"depthkv::window_queries::dense", "overflow"});
  require_error([&] { window_queries::token_major(q.data(), kv_shape(heads{big}, tokens{2}, dim{1})); }, {"depthkv::window_queries::token_major"});
  // pool1d's scratch size 2n for an input span that claims SIZE_MAX / 2 + 1 scores.
  const std::size_t huge = opaque(big / 2 + 1);
  const span<const float> claimed(buf.data(), huge);
  require_error([&] { pool1d(claimed, span<float>(out.data(), huge), 3, pool_kind::avg, span<float>(out)); },
                {"depthkv::pool1d", "scratch", "overflows size_t"});
}

TEST_CASE("kv_cache: sizes that overflow are errors before anything is allocated", "[safety][cache]") {
  require_error([] { kv_cache<float>(layers{big / 2}, heads{4}, dim{8}, 0); }, {"depthkv::kv_cache", "n_layers", "overflows size_t"});
  require_error([] { kv_cache<float>(layers{big / 8}, heads{1}, dim{8}, 0); }, {"depthkv::kv_cache", "heads exceed"});
  require_error([] { kv_cache<float>(layers{1}, heads{1}, dim{big / 4}, 0); }, {"depthkv::kv_cache", "head_dim", "overflows size_t"});
  require_error([] { kv_cache<f16>(layers{2}, heads{1}, dim{std::size_t{1} << 40}, std::size_t{1} << 30); },
                {"capacity_per_layer[0] = " + std::to_string(std::size_t{1} << 30), "overflows size_t"});
  kv_cache<float> c(layers{1}, heads{1}, dim{std::size_t{1} << 33}, 0);  // no rows: allocates nothing
  require_error([&] { c.reserve(0, std::size_t{1} << 31); }, {"depthkv::kv_cache::reserve", "capacity", "overflows"});
  CHECK(c.capacity(0, 0) == 0);
  // append(first_position) with a token count whose sum with first_position wraps.
  kv_cache<float> d = make_cache(1, 1, 2, 4);
  const auto before = snapshot(d);
  std::vector<float> rows(8);
  const auto huge = kv_view<const float>::hnd(rows.data(), kv_shape(heads{1}, tokens{std::size_t{1} << 40}, dim{2}));
  require_error([&] { d.append(0, huge, huge, pos_t{1}); }, {"first_position 1", "int32 range"});
  const auto two = kv_view<const float>::hnd(rows.data(), kv_shape(heads{1}, tokens{2}, dim{2}));
  require_error([&] { d.append(0, two, two, std::numeric_limits<pos_t>::max()); }, {"int32 range"});
  CHECK(snapshot(d) == before);
  // h2o_state's table size.
  require_error([] { h2o_state(big, 2); }, {"depthkv::h2o_state", "overflows size_t"});
  // The internal buffer: a byte count that wraps is bad_array_new_length, not a small buffer.
  CHECK_THROWS_AS(detail::aligned_buffer<float>(big / 2), std::bad_array_new_length);
}
