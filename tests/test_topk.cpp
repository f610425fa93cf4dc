// topk on every compiled ISA path against an independent naive reference (stable sort by
// (protected, value desc, position asc)) and against the scalar path, on random and
// adversarial input; protected ranges; the batched form; every error leaves out unchanged.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "depthkv/select/topk.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
const float qnan = std::numeric_limits<float>::quiet_NaN();

// Independent reference: rank by value with NaN last, ties by position; protected first.
std::vector<index_t> naive_topk(const std::vector<float>& s, std::size_t k, topk_options opt = {}) {
  const std::size_t n = s.size();
  std::vector<index_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  auto prot = [&](index_t i) { return i < opt.n_sink || n - i <= opt.n_recent; };
  std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) {
    if (prot(a) != prot(b)) return prot(a);
    const bool na = std::isnan(s[a]), nb = std::isnan(s[b]);
    if (na || nb) return !na && nb;
    return s[a] > s[b];  // -0.0 == +0.0: equal, so stable order keeps the earlier one first
  });
  order.resize(std::min(k, n));
  std::sort(order.begin(), order.end());
  return order;
}

std::vector<index_t> run_topk(isa path, const std::vector<float>& s, std::size_t k, topk_options opt,
                              topk_scratch& sc) {
  std::vector<index_t> out(std::min(k, s.size()) + 3, 0xdeadbeefu);
  const scoped_isa use(path);
  const std::size_t m = topk(s, k, out, opt, sc);
  REQUIRE(m == std::min(k, s.size()));
  CHECK(out[m] == 0xdeadbeefu);  // nothing written past the result
  out.resize(m);
  return out;
}

// Describes the first difference of two index lists ("" when equal), to keep failures short.
std::string first_diff(const std::vector<index_t>& got, const std::vector<index_t>& want) {
  if (got == want) return "";
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  std::string d = "sizes " + std::to_string(got.size()) + " vs " + std::to_string(want.size()) + ", first difference at " +
                  std::to_string(i);
  if (i < got.size()) d += ": got " + std::to_string(got[i]);
  if (i < want.size()) d += ", want " + std::to_string(want[i]);
  return d;
}

// Checks every compiled path against the naive reference and the scalar path.
void check_all_paths(const std::vector<float>& s, std::size_t k, topk_options opt = {}) {
  static topk_scratch sc;  // reused across sizes, as a prune would
  const auto want = naive_topk(s, k, opt);
  const auto scalar = run_topk(isa::scalar, s, k, opt, sc);
  INFO("n = " << s.size() << ", k = " << k << ", sink = " << opt.n_sink << ", recent = " << opt.n_recent);
  REQUIRE(first_diff(scalar, want) == "");
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    REQUIRE(first_diff(run_topk(p, s, k, opt, sc), scalar) == "");
  }
}

float denormal(int i) { return std::numeric_limits<float>::denorm_min() * static_cast<float>(i); }

// Score generators, random and adversarial.
std::vector<float> make_scores(int kind, std::size_t n) {
  std::vector<float> s(n);
  auto& g = rng();
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (std::size_t i = 0; i < n; ++i) {
    const auto r = static_cast<int>(uniform_int(0, 999));
    switch (kind) {
      case 0: s[i] = u(g); break;                                                 // random
      case 1: s[i] = 0.5f; break;                                                 // all equal
      case 2: s[i] = static_cast<float>(r % 3); break;                            // many ties
      case 3: s[i] = r < 300 ? qnan : r < 350 ? -qnan : u(g); break;              // NaN mix
      case 4: s[i] = r < 150 ? inf : r < 300 ? -inf : r < 400 ? qnan : u(g); break;  // +-inf
      case 5: s[i] = r < 500 ? denormal(r % 7) : -denormal(r % 5); break;         // denormals
      case 6: s[i] = r < 500 ? 0.0f : -0.0f; break;                               // -0 / +0
      case 7: s[i] = static_cast<float>(i); break;                                // sorted
      case 8: s[i] = -static_cast<float>(i); break;                               // reverse sorted
      case 9: s[i] = qnan; break;                                                 // all NaN
      case 10: s[i] = static_cast<float>(i % 64); break;                          // periodic
      default: s[i] = r < 100 ? 1.0f : u(g); break;                               // tie block at top
    }
  }
  return s;
}
constexpr int n_kinds = 12;

}  // namespace

TEST_CASE("topk: hand-computed contract cases", "[topk]") {
  topk_scratch sc;
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    // NaN below everything, -inf ordinary, -0 == +0 with the earlier one winning.
    const std::vector<float> s{3.0f, qnan, -inf, -0.0f, 0.0f, 3.0f, inf, -1.0f};
    CHECK(run_topk(p, s, 0, {}, sc).empty());
    CHECK(run_topk(p, s, 1, {}, sc) == std::vector<index_t>{6});
    CHECK(run_topk(p, s, 2, {}, sc) == std::vector<index_t>{0, 6});
    CHECK(run_topk(p, s, 4, {}, sc) == std::vector<index_t>{0, 3, 5, 6});  // -0 at 3 beats +0 at 4
    CHECK(run_topk(p, s, 6, {}, sc) == std::vector<index_t>{0, 3, 4, 5, 6, 7});
    CHECK(run_topk(p, s, 7, {}, sc) == std::vector<index_t>{0, 2, 3, 4, 5, 6, 7});  // NaN is last
    CHECK(run_topk(p, s, 8, {}, sc) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7});
    CHECK(run_topk(p, s, 100, {}, sc).size() == 8);
    // Protected: sink 1 and recent 2 count toward k; the best of the middle fills the rest.
    CHECK(run_topk(p, s, 4, {1, 2}, sc) == std::vector<index_t>{0, 5, 6, 7});
    CHECK(run_topk(p, s, 3, {0, 2}, sc) == std::vector<index_t>{0, 6, 7});
    CHECK(run_topk(p, s, 3, {1, 2}, sc) == std::vector<index_t>{0, 6, 7});
    // Earlier position wins among equal scores.
    const std::vector<float> eq(20, 1.0f);
    CHECK(run_topk(p, eq, 3, {}, sc) == std::vector<index_t>{0, 1, 2});
    CHECK(run_topk(p, eq, 3, {0, 1}, sc) == std::vector<index_t>{0, 1, 19});
  }
}

TEST_CASE("topk: every n from 0 to 70, every kind, k at the edges", "[topk]") {
  for (std::size_t n = 0; n <= 70; ++n) {
    for (int kind = 0; kind < n_kinds; ++kind) {
      const auto s = make_scores(kind, n);
      std::vector<std::size_t> ks{0, 1, n / 2, n + 1, n + 100, uniform_int(0, n + 1)};
      if (n >= 1) ks.push_back(n - 1);
      ks.push_back(n);
      for (std::size_t k : ks) check_all_paths(s, k);
      // Random protection that fits in k.
      const std::size_t k = uniform_int(0, n + 2);
      const std::size_t sink = uniform_int(0, std::min(k, n) + 1);
      const std::size_t recent = uniform_int(0, std::min(k, n) + 1);
      if (std::min(n, sink + recent) <= std::min(k, n)) check_all_paths(s, k, {sink, recent});
    }
  }
}

TEST_CASE("topk: large n through the sampled-threshold path", "[topk]") {
  // Sizes around the exact/sampled switch (2048): every kind, k from 5% to 90% and the edges.
  for (std::size_t n : {2047u, 2049u, 5003u}) {
    for (int kind = 0; kind < n_kinds; ++kind) {
      INFO("kind " << kind);
      const auto s = make_scores(kind, n);
      if (n < 5000)
        for (std::size_t k : {std::size_t{1}, n / 10, n - 1}) check_all_paths(s, k);
      for (std::size_t k : {n / 20, n / 2, n * 9 / 10}) check_all_paths(s, k);
      check_all_paths(s, n / 3, {4, 32});
    }
  }
  // Several sampled rounds: random, ties-heavy, NaN-heavy and a tie block at the top.
  for (int kind : {0, 2, 3, 11}) {
    INFO("kind " << kind);
    const auto s = make_scores(kind, 20000);
    for (std::size_t k : {1000u, 10000u, 18000u}) check_all_paths(s, k);
  }
  check_all_paths(make_scores(0, 100000), 50000, {4, 64});
}

TEST_CASE("topk: data that defeats the sample still gives the exact answer", "[topk]") {
  const std::size_t n = 30000;
  // The top 2% are concentrated in one block that a spread sample barely sees.
  std::vector<float> s = make_scores(0, n);
  for (std::size_t i = 15000; i < 15600; ++i) s[i] = 10.0f + static_cast<float>(i % 7);
  for (std::size_t k : {std::size_t{300}, std::size_t{600}, std::size_t{601}, std::size_t{900}}) check_all_paths(s, k);
  // Two distinct values, threshold inside the tie block; NaN threshold.
  std::vector<float> two(n);
  for (std::size_t i = 0; i < n; ++i) two[i] = (i * 7919) % 5 == 0 ? 2.0f : 1.0f;
  for (std::size_t k : {std::size_t{100}, n / 5, n / 5 + 1, n - 3}) check_all_paths(two, k);
  std::vector<float> nanny = make_scores(3, n);  // ~35% NaN: k above the numbers' count
  for (std::size_t k : {n * 7 / 10, n - 1}) check_all_paths(nanny, k);
}

TEST_CASE("topk: protection ranges", "[topk]") {
  const auto s = make_scores(0, 50);
  check_all_paths(s, 10, {10, 0});   // sink alone fills k
  check_all_paths(s, 10, {0, 10});   // recent alone fills k
  check_all_paths(s, 10, {4, 6});    // together fill k
  check_all_paths(s, 50, {30, 30});  // overlapping, cover everything
  check_all_paths(s, 60, {100, 100});
  check_all_paths(s, 20, {15, 15 - 10});
  const auto big = make_scores(0, 10000);
  check_all_paths(big, 3000, {500, 2000});
  check_all_paths(big, 2500, {500, 2000});
}

TEST_CASE("topk: errors leave out unchanged", "[topk]") {
  const auto s = make_scores(0, 40);
  std::vector<index_t> out(10, 7u);
  const std::vector<index_t> before = out;
  topk_scratch sc;
  require_error([&] { topk(s, 11, out); }, {"depthkv::topk", "out has room for 10", "need 11"});
  CHECK(out == before);
  require_error([&] { topk(s, 5, out, {3, 3}); }, {"protected", "n_sink 3", "n_recent 3", "k = 5"});
  CHECK(out == before);
  require_error([&] { topk(s, 5, out, {6, 0}, sc); }, {"protected", "exceed k = 5"});
  CHECK(out == before);
  for (isa p : {isa::scalar, isa::avx2, isa::avx512}) {
    if (isa_supported(p)) continue;
    require_error([&] { set_isa(p); }, {"depthkv::set_isa", isa_name(p), "not"});
    CHECK(active_isa() == detected_isa());
  }
  // Empty input is never an error, whatever the protection.
  CHECK(topk(span<const float>(), 5, span<index_t>(), {100, 100}) == 0);
}

TEST_CASE("topk_rows: each row its own k, strides, and validation before writing", "[topk]") {
  const std::size_t rows = 5, n = 3000, stride = 3017, out_stride = 2000;
  std::vector<float> scores(rows * stride);
  for (auto& x : scores) x = static_cast<float>(uniform_int(0, 500));  // many ties
  const std::vector<std::size_t> ks{12, 13, 150, 1500, 2000};
  std::vector<index_t> out(rows * out_stride, 0u);
  std::vector<std::size_t> counts(rows, 99);
  topk_scratch sc;
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    const scoped_isa use(p);
    topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), ks, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {4, 8}, sc);
    for (std::size_t h = 0; h < rows; ++h) {
      const std::vector<float> row(scores.begin() + static_cast<std::ptrdiff_t>(h * stride),
                                   scores.begin() + static_cast<std::ptrdiff_t>(h * stride + n));
      const auto want = naive_topk(row, ks[h], {4, 8});
      REQUIRE(counts[h] == want.size());
      REQUIRE(std::equal(want.begin(), want.end(), out.begin() + static_cast<std::ptrdiff_t>(h * out_stride)));
    }
  }
  // Row 3 has k < protected: the whole call must fail before writing any row.
  std::fill(out.begin(), out.end(), 5u);
  const auto before = out;
  const std::vector<std::size_t> ks_bad{12, 13, 150, 11, 2000};
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), ks_bad, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {4, 8}, sc); },
                {"depthkv::topk_rows", "exceed k = 11"});
  CHECK(out == before);
  const std::vector<std::size_t> ks_ok{12, 13, 150, 1500, 2000};
  topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), ks_ok, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {4, 8}, sc);
  CHECK(counts == std::vector<std::size_t>{12, 13, 150, 1500, 2000});
  std::fill(out.begin(), out.end(), 5u);
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), {ks_ok.data(), 4}, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {}, sc); },
                {"ks has 4", "n_rows = 5"});
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows, n, 100), ks_ok, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {}, sc); },
                {"scores.stride 100 < scores.length 3000"});
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows + 1, n, stride), std::vector<std::size_t>(6, 1), strided_rows<index_t>::with_stride(out, rows + 1, out_stride, out_stride), {}, {}, sc); },
                {"scores has"});
  const std::vector<std::size_t> ks_big{2001, 1, 1, 1, 1};  // would overlap row 1
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), ks_big, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {}, sc); },
                {"out has room for 2000", "need 2001"});
  const std::vector<std::size_t> ks_last{1, 1, 1, 1, 2001};  // runs past the end
  require_error([&] { topk_rows(strided_rows<const float>::with_stride(scores, rows, n, stride), ks_last, strided_rows<index_t>::with_stride(out, rows, out_stride, out_stride), counts, {}, sc); },
                {"need 2001"});
  CHECK(out == std::vector<index_t>(rows * out_stride, 5u));
}
