// Allocation with sliding-window ("local") layers, hybrid-attention models: hand-computed splits
// in both budget scopes, exact sums, bounds, the local layers' counts min(n, W), every allocator
// (and a user-defined one) against an independent reference (the hybrid rules re-derived here,
// the allocator run on the global layers' sub-request), profiles without local entries,
// infeasible and malformed requests; the same for paged budgets (window blocks counted by
// enumerating positions, in place and packed), and select_layers.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/paged_budget.hpp"
#include "depthkv/budget/profile.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;
using counts_t = std::vector<std::size_t>;

namespace {

double urand(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng()); }
std::size_t sum(const counts_t& c) { return std::accumulate(c.begin(), c.end(), std::size_t{0}); }
std::size_t cdiv(std::size_t a, std::size_t b) { return (a + b - 1) / b; }  // test sizes: no overflow

layer_attention glob() { return layer_attention::global(); }
layer_attention slide(std::size_t w) { return layer_attention::sliding(window_tokens{w}); }

allocation_request make_req(counts_t lengths, counts_t minimums, std::vector<layer_attention> attention,
                            global_budget budget, budget_scope scope = budget_scope::all_layers) {
  allocation_request r;
  r.lengths = std::move(lengths);
  r.minimums = std::move(minimums);
  r.attention = std::move(attention);
  r.budget = budget;
  r.scope = scope;
  return r;
}

paged_allocation_request make_paged(counts_t lengths, counts_t minimums,
                                    std::vector<layer_attention> attention, std::size_t block_size,
                                    counts_t block_bytes, paged_budget budget,
                                    budget_scope scope = budget_scope::all_layers,
                                    window_placement placement = window_placement::in_place) {
  paged_allocation_request r;
  r.lengths = std::move(lengths);
  r.minimums = std::move(minimums);
  r.attention = std::move(attention);
  r.block_size = block_tokens{block_size};
  r.block_bytes = std::move(block_bytes);
  r.budget = budget;
  r.scope = scope;
  r.sliding_windows = placement;
  return r;
}

std::size_t min_of(const counts_t& m, std::size_t l) { return m.empty() ? 0 : m.size() == 1 ? m[0] : m[l]; }

// Convex decreasing curves (as in test_allocate).
void add_curve(sensitivity_profile& p, std::size_t l) {
  const double a = std::exp(urand(-4.0, 1.0)), c = urand(0.02, 0.5), pw = urand(1.0, 2.5);
  for (const double r : {0.05, 0.1, 0.2, 0.4, 0.7})
    if (uniform_int(0, 3) != 0 || r == 0.05) p.add_point(l, r, a * std::pow(1.0 - r, pw) / (r + c));
}

// ---- The hybrid rules, re-derived from the documentation.

struct token_ref {
  std::vector<std::size_t> global;  // indices of the global layers
  counts_t fixed;                   // [layer] min(n, W) of a sliding layer, 0 for a global one
  std::size_t sliding = 0, global_total = 0, global_floor = 0;
  std::size_t keep = 0;  // expected sum of the counts
  bool feasible = false;
  allocation_request sub;  // the global layers, their share in tokens
};

// Ratio budgets in the tests are j / 64: r * total + 0.5 is exact in double.
std::size_t round_half_up(double r, std::size_t total) {
  return static_cast<std::size_t>(std::floor(r * double(total) + 0.5));
}

token_ref reference(const allocation_request& req) {
  token_ref t;
  const std::size_t n = req.lengths.size();
  t.fixed.assign(n, 0);
  for (std::size_t l = 0; l < n; ++l) {
    const bool sl = !req.attention.empty() && req.attention[l].is_sliding();
    if (sl) {
      t.fixed[l] = std::min(req.lengths[l], req.attention[l].window->value);
      t.sliding += t.fixed[l];
    } else {
      t.global.push_back(l);
      t.sub.lengths.push_back(req.lengths[l]);
      if (req.minimums.size() > 1) t.sub.minimums.push_back(req.minimums[l]);
      t.global_total += req.lengths[l];
      t.global_floor += std::min(min_of(req.minimums, l), req.lengths[l]);
    }
  }
  if (req.minimums.size() == 1) t.sub.minimums = req.minimums;
  const bool all = req.scope == budget_scope::all_layers;
  const std::size_t held = t.sliding + t.global_total;
  const std::size_t b = req.budget.is_ratio
                            ? round_half_up(req.budget.keep_ratio, all ? held : t.global_total)
                            : req.budget.n_tokens;
  std::size_t share = 0;
  if (all) {
    t.feasible = b >= t.sliding + t.global_floor && b <= held;
    share = t.feasible ? b - t.sliding : 0;
  } else {
    t.feasible = b >= t.global_floor && b <= t.global_total;
    share = b;
  }
  t.sub.budget = global_budget::tokens(share);
  t.keep = t.sliding + share;
  return t;
}

counts_t place(const token_ref& t, const counts_t& g) {
  counts_t c = t.fixed;
  for (std::size_t i = 0; i < t.global.size(); ++i) c[t.global[i]] = g[i];
  return c;
}

// Exact sum, sliding layers at min(n, W), global layers within [min(minimum, n), n].
void check_counts(const counts_t& c, const allocation_request& req, const token_ref& t) {
  REQUIRE(c.size() == req.lengths.size());
  CHECK(sum(c) == t.keep);
  for (std::size_t l = 0; l < c.size(); ++l) {
    INFO("layer " << l);
    if (!req.attention.empty() && req.attention[l].is_sliding()) {
      CHECK(c[l] == std::min(req.lengths[l], req.attention[l].window->value));
    } else {
      CHECK(c[l] >= std::min(min_of(req.minimums, l), req.lengths[l]));
      CHECK(c[l] <= req.lengths[l]);
    }
  }
}

// A user-defined ("later") allocator: fills the layers in order from their floors; no profile.
struct front_first_allocator {
  static constexpr std::string_view name = "front_first";
  counts_t allocate(const allocation_request& r, const sensitivity_profile&) const {
    const auto res = resolve(r, "front_first");
    counts_t c = res.lo;
    std::size_t left = res.budget - sum(res.lo);
    for (std::size_t l = 0; l < c.size(); ++l) {
      const std::size_t take = std::min(left, res.hi[l] - c[l]);
      c[l] += take;
      left -= take;
    }
    return c;
  }
};

// Records what it was handed.
struct recording_allocator {
  static constexpr std::string_view name = "recording";
  mutable allocation_request seen;
  mutable sensitivity_profile seen_profile;
  mutable int calls = 0;
  counts_t allocate(const allocation_request& r, const sensitivity_profile& p) const {
    seen = r;
    seen_profile = p;
    ++calls;
    return allocate_uniform(r);
  }
};

struct random_hybrid {
  allocation_request req;
  token_ref ref;
};

// Lengths (some 0 or short), windows (some beyond the length), sliding layers with probability
// 1/2 (all-global and all-sliding requests included), a feasible budget in tokens or j/64.
random_hybrid random_request(std::size_t L) {
  for (;;) {
    random_hybrid h;
    const std::size_t max_len = uniform_int(0, 2) == 0 ? 30 : 2000;
    counts_t len(L), mins(L);
    std::vector<layer_attention> att(L);
    for (std::size_t l = 0; l < L; ++l) {
      len[l] = uniform_int(0, 6) == 0 ? uniform_int(0, 3) : uniform_int(1, max_len);
      mins[l] = uniform_int(0, max_len / 4 + 1);
      att[l] = uniform_int(0, 1) == 0 ? slide(uniform_int(1, max_len / 2 + 1)) : glob();
    }
    const std::size_t mode = uniform_int(0, 2);
    h.req = make_req(len,
                     mode == 0   ? counts_t{}
                     : mode == 1 ? counts_t{mins[0]}
                                 : mins,
                     att, global_budget::tokens(0),
                     uniform_int(0, 1) ? budget_scope::all_layers : budget_scope::global_layers);
    const token_ref t0 = reference(h.req);
    if (uniform_int(0, 2) == 0) {
      h.req.budget = global_budget::ratio(double(uniform_int(0, 64)) / 64.0);
    } else {
      const bool all = h.req.scope == budget_scope::all_layers;
      const std::size_t lo = (all ? t0.sliding : 0) + t0.global_floor;
      h.req.budget = global_budget::tokens(uniform_int(lo, lo + t0.global_total - t0.global_floor));
    }
    h.ref = reference(h.req);
    if (h.ref.feasible) return h;
  }
}

// A profile of L layers; the layers in `without` get no points (local layers need none).
sensitivity_profile random_profile(std::size_t L, const std::vector<bool>& without = {}) {
  sensitivity_profile p(L);
  p.model = "hybrid-test";
  p.metric = "kl";
  for (std::size_t l = 0; l < L; ++l)
    if (without.empty() || !without[l]) add_curve(p, l);
  return p;
}

std::vector<bool> sliding_mask(const allocation_request& req) {
  std::vector<bool> m(req.lengths.size(), false);
  for (std::size_t l = 0; l < req.attention.size(); ++l) m[l] = req.attention[l].is_sliding();
  return m;
}

}  // namespace

TEST_CASE("hybrid: hand-computed splits, both scopes, tokens and keep ratios") {
  const sensitivity_profile none;
  // Gemma-like: 6 layers of 1000 tokens, local-local-global repeated, window 128.
  const counts_t len(6, 1000);
  const std::vector<layer_attention> att = {slide(128), slide(128), glob(), slide(128), slide(128), glob()};
  // All layers: 812 tokens, the 4 x 128 window tokens first, 300 left for two global layers.
  const counts_t expect_300 = {128, 128, 150, 128, 128, 150};
  CHECK(allocate("uniform", make_req(len, {}, att, global_budget::tokens(812)), none) == expect_300);
  // Global layers only: 300 tokens for them, the windows on top.
  CHECK(allocate("uniform", make_req(len, {}, att, global_budget::tokens(300), budget_scope::global_layers),
                 none) == expect_300);
  // Ratio of all tokens the layers hold: 0.5 * (512 + 2000) = 1256, 744 for the global layers.
  CHECK(allocate("uniform", make_req(len, {}, att, global_budget::ratio(0.5)), none) ==
        counts_t{128, 128, 372, 128, 128, 372});
  // Ratio of the global layers' tokens: 0.5 * 2000.
  CHECK(allocate("uniform", make_req(len, {}, att, global_budget::ratio(0.5), budget_scope::global_layers),
                 none) == counts_t{128, 128, 500, 128, 128, 500});
  // Ratio 1 keeps everything the layers can keep (a local layer never more than its window).
  CHECK(allocate("uniform", make_req(len, {}, att, global_budget::ratio(1.0)), none) ==
        counts_t{128, 128, 1000, 128, 128, 1000});
  // A local layer shorter than its window keeps everything: 100 tokens; 600 for the global ones.
  CHECK(allocate("uniform",
                 make_req({100, 1000, 1000}, {}, {slide(128), glob(), glob()}, global_budget::tokens(700)),
                 none) == counts_t{100, 300, 300});
  // Unequal global lengths: the same keep ratio among the global layers only (20% of 500, 1500).
  CHECK(allocate("uniform",
                 make_req({500, 4000, 1500}, {}, {glob(), slide(256), glob()}, global_budget::tokens(656)),
                 none) == counts_t{100, 256, 300});
  // Pyramid sees two layers (the global ones, in order): beta 2 gives weights 1.5 and 0.5.
  const counts_t len4(4, 1000);
  const std::vector<layer_attention> att4 = {slide(100), glob(), slide(100), glob()};
  CHECK(allocate_pyramid(make_req(len4, {}, att4, global_budget::tokens(600)), 2.0) ==
        counts_t{100, 300, 100, 100});
  allocator_params ap;
  ap.pyramid_beta = 2.0;
  CHECK(allocate("pyramid", make_req(len4, {}, att4, global_budget::tokens(600)), none, ap) ==
        counts_t{100, 300, 100, 100});
  // Proportional 1 : 3 over the global layers; the local layers' sensitivities are not read
  // (they would be invalid), or only the global layers' are given.
  CHECK(allocate_proportional(make_req(len4, {}, att4, global_budget::tokens(600)),
                              std::vector<double>{-5.0, 1.0, std::nan(""), 3.0}) ==
        counts_t{100, 100, 100, 300});
  CHECK(allocate_proportional(make_req(len4, {}, att4, global_budget::tokens(600)),
                              std::vector<double>{1.0, 3.0}) == counts_t{100, 100, 100, 300});
  // A local layer's minimum is ignored: minimums of 200 (above the window) bind the global layers only.
  CHECK(allocate("uniform", make_req(len4, {200}, att4, global_budget::tokens(600)), none) ==
        counts_t{100, 200, 100, 200});
  CHECK(allocate("uniform", make_req(len4, {500, 250, 0, 0}, att4, global_budget::tokens(600)), none) ==
        counts_t{100, 250, 100, 150});
  // An all-local model: nothing to split; the budget is exactly the windows (or 0 on top).
  CHECK(allocate("curve", make_req({50, 300}, {}, {slide(64), slide(64)}, global_budget::tokens(114)),
                 none) == counts_t{50, 64});
  CHECK(allocate("uniform",
                 make_req({50, 300}, {}, {slide(64), slide(64)}, global_budget::tokens(0),
                          budget_scope::global_layers),
                 none) == counts_t{50, 64});
  // Attention entries that are all global change nothing.
  const auto plain = make_req({100, 200, 300}, {10}, {}, global_budget::tokens(150));
  auto all_global = plain;
  all_global.attention.assign(3, glob());
  for (const auto scope : {budget_scope::all_layers, budget_scope::global_layers}) {
    all_global.scope = scope;
    CHECK(allocate("uniform", all_global, none) == allocate("uniform", plain, none));
  }
}

TEST_CASE("hybrid: resolve() gives every layer's bounds and the tokens kept in all") {
  const auto req = make_req({1000, 50, 1000, 300}, {40}, {slide(128), slide(128), glob(), glob()},
                            global_budget::tokens(500));
  const auto r = resolve(req);
  CHECK(r.lo == counts_t{128, 50, 40, 40});
  CHECK(r.hi == counts_t{128, 50, 1000, 300});
  CHECK(r.sliding == 178);
  CHECK(r.total == 178 + 1300);
  CHECK(r.budget == 500);
  auto g = req;
  g.scope = budget_scope::global_layers;
  CHECK(resolve(g).budget == 678);  // 500 for the global layers, the 178 window tokens on top
  g.budget = global_budget::ratio(0.25);
  CHECK(resolve(g).budget == 178 + 325);
  auto a = req;
  a.budget = global_budget::ratio(0.5);
  CHECK(resolve(a).budget == 739);  // 0.5 * 1478
  CHECK(resolve(a).keep_ratio() == Approx(0.5).margin(1e-3));
}

TEST_CASE("hybrid: random requests: every allocator honours the local layers, against the reference") {
  std::size_t n_hybrid = 0, n_all_local = 0;
  for (int it = 0; it < 400; ++it) {
    const std::size_t L = uniform_int(1, 12);
    const auto h = random_request(L);
    const auto& ref = h.ref;
    const auto mask = sliding_mask(h.req);
    // A profile of every layer whose local layers have no points, a complete one, or one of the
    // global layers only.
    const std::size_t pk = uniform_int(0, 2);
    const sensitivity_profile p = pk == 0   ? random_profile(L, mask)
                                  : pk == 1 ? random_profile(L)
                                            : random_profile(ref.global.size());
    const sensitivity_profile gp =
        pk == 2 ? p : select_layers(p, span<const std::size_t>(ref.global.data(), ref.global.size()));
    n_hybrid += ref.global.size() < L;
    n_all_local += ref.global.empty();
    INFO("iteration " << it << " layers " << L << " global " << ref.global.size() << " profile kind " << pk);
    for (const auto name : allocator_names) {
      INFO(name);
      const counts_t got = allocate(name, h.req, p);
      check_counts(got, h.req, ref);
      const counts_t want = ref.global.empty() ? ref.fixed : place(ref, allocate(name, ref.sub, gp));
      CHECK(got == want);
    }
    // The typed interface, the free functions and a user-defined allocator agree.
    CHECK(allocate(curve_allocator{}, h.req, p) == allocate("curve", h.req, p));
    CHECK(allocate_curve(h.req, p) == allocate("curve", h.req, p));
    CHECK(allocate_uniform(h.req) == allocate("uniform", h.req, p));
    CHECK(allocate_pyramid(h.req, 20.0) == allocate("pyramid", h.req, p));
    CHECK(proportional_allocator{}.allocate(h.req, p) == allocate("proportional", h.req, p));
    const counts_t ff = allocate(front_first_allocator{}, h.req, p);
    check_counts(ff, h.req, ref);
    CHECK(ff == (ref.global.empty() ? ref.fixed : place(ref, front_first_allocator{}.allocate(ref.sub, gp))));
    // Deterministic.
    CHECK(allocate("curve", h.req, p) == allocate("curve", h.req, p));
  }
  CHECK(n_hybrid > 100);
  CHECK(n_all_local > 0);
}

TEST_CASE("hybrid: the allocator sees the global layers' sub-request and their profile") {
  sensitivity_profile p = random_profile(5);
  p.policy = "snapkv";
  const auto req = make_req({800, 900, 700, 600, 500}, {10, 20, 30, 40, 50},
                            {glob(), slide(64), glob(), slide(32), glob()}, global_budget::tokens(1000));
  recording_allocator rec;
  const counts_t c = allocate(rec, req, p);
  REQUIRE(rec.calls == 1);
  CHECK(rec.seen.attention.empty());
  CHECK(rec.seen.lengths == counts_t{800, 700, 500});
  CHECK(rec.seen.minimums == counts_t{10, 30, 50});
  CHECK(!rec.seen.budget.is_ratio);
  CHECK(rec.seen.budget.n_tokens == 1000 - 96);
  REQUIRE(rec.seen_profile.n_layers() == 3);
  CHECK(rec.seen_profile.model == p.model);
  CHECK(rec.seen_profile.policy == "snapkv");
  for (std::size_t i = 0; i < 3; ++i) {
    const auto a = rec.seen_profile.points(i), b = p.points(2 * i);
    CHECK(std::vector<curve_point>(a.begin(), a.end()) == std::vector<curve_point>(b.begin(), b.end()));
  }
  CHECK(c[1] == 64);
  CHECK(c[3] == 32);
  // Global layers only: the allocator gets the budget as given; a ratio of the global tokens.
  auto g = req;
  g.scope = budget_scope::global_layers;
  g.budget = global_budget::ratio(0.25);
  (void)allocate(rec, g, p);
  CHECK(rec.seen.budget.n_tokens == 500);
  // An all-local request never calls the allocator.
  (void)allocate(rec, make_req({10, 20}, {}, {slide(4), slide(4)}, global_budget::tokens(8)),
                 sensitivity_profile{});
  CHECK(rec.calls == 2);
  // proportional's reference ratio is the global layers' keep ratio.
  const auto gp = select_layers(p, std::vector<std::size_t>{0, 2, 4});
  const auto sub = make_req({800, 700, 500}, {10, 30, 50}, {}, global_budget::tokens(904));
  CHECK(allocate("proportional", req, p) == [&] {
    const auto s = allocate_proportional(sub, layer_sensitivities(gp, 904.0 / 2000.0));
    return counts_t{s[0], 64, s[1], 32, s[2]};
  }());
}

TEST_CASE("hybrid: infeasible requests say by how many tokens and what the local layers take") {
  const sensitivity_profile none;
  const auto att = std::vector<layer_attention>{slide(128), glob(), slide(128), glob()};
  const counts_t len(4, 1000);
  for (const auto name : allocator_names) {
    INFO(name);
    const sensitivity_profile p = random_profile(4, {true, false, true, false});
    // Needed: 256 window tokens + 2 x 36 minimums = 328.
    require_error([&] { (void)allocate(name, make_req(len, {36}, att, global_budget::tokens(300)), p); },
                  {"budget of 300 tokens is below what the layers must keep (328 tokens",
                   "the 2 sliding-window layers' 256 tokens (min(length, window))",
                   "global layers' minimums 72", "by 28 tokens"});
    require_error([&] { (void)allocate(name, make_req(len, {36}, att, global_budget::tokens(2300)), p); },
                  {"budget of 2300 tokens exceeds the 2256 tokens the layers hold",
                   "the 2 sliding-window layers' 256 tokens", "global layers' 2000", "by 44 tokens"});
    // A ratio of all tokens: 0.1 * 2256 = 226 < 328.
    require_error(
        [&] { (void)allocate(name, make_req(len, {36}, att, global_budget::ratio(0.1)), p); },
        {"budget of 226 tokens (keep ratio 0.1 of the 2256 tokens the layers hold)", "by 102 tokens"});
    // Global layers only.
    require_error(
        [&] {
          (void)allocate(name,
                         make_req(len, {36}, att, global_budget::tokens(70), budget_scope::global_layers), p);
        },
        {"budget of 70 tokens for the global layers is below the sum of their minimums (72) by 2 tokens",
         "budget_scope::global_layers: the 2 sliding-window layers' 256 tokens"});
    require_error(
        [&] {
          (void)allocate(
              name, make_req(len, {36}, att, global_budget::tokens(2001), budget_scope::global_layers), p);
        },
        {"exceeds their total of 2000 tokens by 1 tokens"});
    require_error(
        [&] {
          (void)allocate(
              name, make_req(len, {36}, att, global_budget::ratio(0.03), budget_scope::global_layers), p);
        },
        {"budget of 60 tokens for the global layers (keep ratio 0.03 of the global layers' 2000 tokens)",
         "by 12 tokens"});
    // An all-local model with a budget other than its windows.
    require_error(
        [&] {
          (void)allocate(name, make_req({50, 300}, {}, {slide(64), slide(64)}, global_budget::tokens(100)),
                         sensitivity_profile{});
        },
        {"below what the layers must keep (114 tokens", "by 14 tokens"});
  }
}

TEST_CASE("hybrid: malformed requests and profiles name the argument") {
  const counts_t len = {100, 100, 100};
  const auto att = std::vector<layer_attention>{slide(16), glob(), glob()};
  const auto tok = global_budget::tokens(100);
  const sensitivity_profile p3 = random_profile(3), p2 = random_profile(2), p1 = random_profile(1);
  for (const auto name : allocator_names) {
    INFO(name);
    require_error(
        [&] {
          (void)allocate(name, make_req(len, {}, {slide(16), glob()}, tok), p3);
        },
        {"attention has 2 entries, expected 0 (every layer global) or n_layers = 3"});
    require_error(
        [&] {
          (void)allocate(name, make_req(len, {}, {glob(), glob()}, tok), p3);
        },
        {"attention has 2 entries"});
    require_error(
        [&] {
          (void)allocate(name, make_req(len, {}, {glob(), slide(0), glob()}, tok), p3);
        },
        {"attention[1] is a sliding window of 0 tokens"});
    require_error(
        [&] { (void)allocate(name, make_req(len, {}, att, tok, static_cast<budget_scope>(7)), p3); },
        {"scope 7 is not a budget_scope"});
    require_error([&] { (void)allocate(name, make_req(len, {}, att, global_budget::ratio(1.5)), p3); },
                  {"keep ratio 1.5 outside [0, 1]"});
    // A profile of every layer, of the global layers or of none are fine (for those that use none).
    CHECK_NOTHROW(allocate(name, make_req(len, {}, att, tok), p3));
    CHECK_NOTHROW(allocate(name, make_req(len, {}, att, tok), p2));
  }
  require_error(
      [&] { (void)allocate("curve", make_req(len, {}, att, tok), p1); },
      {"depthkv::allocate: profile has 1 layers, expected n_layers = 3", "2 (the global layers only)"});
  require_error([&] { (void)allocate_curve(make_req(len, {}, att, tok), p1); },
                {"depthkv::allocate_curve: profile has 1 layers"});
  require_error([&] { (void)proportional_allocator{}.allocate(make_req(len, {}, att, tok), p1); },
                {"profile has 1 layers"});
  CHECK_NOTHROW(allocate("uniform", make_req(len, {}, att, tok), sensitivity_profile{}));
  // An allocator that needs a profile says so, on the global layers.
  require_error([&] { (void)allocate("curve", make_req(len, {}, att, tok), sensitivity_profile{}); },
                {"allocator 'curve' on the 2 global layers", "profile has 0 layers, request has 2"});
  // A global layer without points is still an error; a local one is not.
  sensitivity_profile holes(3);
  holes.add_point(1, 0.5, 1.0);
  require_error([&] { (void)allocate("curve", make_req(len, {}, att, tok), holes); }, {"without points"});
  holes.add_point(2, 0.5, 2.0);
  CHECK_NOTHROW(allocate("curve", make_req(len, {}, att, tok), holes));
  require_error([&] { (void)allocate_proportional(make_req(len, {}, att, tok), std::vector<double>{1.0}); },
                {"sensitivities has 1 entries, expected n_layers = 3", "or the 2 global layers"});
  require_error(
      [&] {
        (void)allocate_proportional(make_req(len, {}, att, tok), std::vector<double>{0.0, -1.0, 1.0});
      },
      {"on the 2 global layers", "sensitivities[0] = -1"});
  require_error([&] { (void)allocate_pyramid(make_req(len, {}, att, tok), 0.5); }, {"beta 0.5"});
}

TEST_CASE("select_layers: picks layers in the given order with the metadata") {
  sensitivity_profile p(4);
  p.model = "m";
  p.metric = "nll";
  p.policy = "snapkv";
  p.calibration_tokens = 4096;
  p.add_point(0, 0.5, 1.0);
  p.add_point(2, 0.25, 3.0);
  p.add_point(2, 0.75, 2.0);
  p.add_point(3, 0.1, 4.0);
  const auto q = select_layers(p, std::vector<std::size_t>{3, 2, 1});
  REQUIRE(q.n_layers() == 3);
  CHECK(q.model == "m");
  CHECK(q.metric == "nll");
  CHECK(q.policy == "snapkv");
  CHECK(q.calibration_tokens == 4096);
  CHECK(q.n_points() == 3);
  CHECK(q.delta_at(0, 0.1) == 4.0);
  CHECK(q.delta_at(1, 0.25) == 3.0);
  CHECK(q.delta_at(1, 0.5) == Approx(2.5));
  CHECK(q.points(2).empty());
  CHECK(select_layers(p, std::vector<std::size_t>{0, 1, 2, 3}) == p);
  CHECK(select_layers(p, std::vector<std::size_t>{}).n_layers() == 0);
  require_error(
      [&] {
        (void)select_layers(p, std::vector<std::size_t>{1, 4});
      },
      {"select_layers", "layer_indices[1] = 4 out of range (n_layers 4)"});
}

// ---- Paged budgets.

namespace {

// Blocks of B that positions n - k .. n - 1 fall in, counted one position at a time.
std::size_t window_blocks_enumerated(std::size_t n, std::size_t w, std::size_t B) {
  const std::size_t k = std::min(n, w);
  std::vector<std::size_t> ids;
  for (std::size_t pos = n - k; pos < n; ++pos) ids.push_back(pos / B);
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids.size();
}

struct paged_ref {
  bool feasible = true;  // false: an all-layers keep ratio below what the layers must hold
  std::vector<std::size_t> global;
  counts_t fixed_blocks, fixed_keep;
  std::size_t s_blocks = 0, s_bytes = 0;
  paged_allocation_request sub;  // the global layers, their share of the budget
};

// The global layers' request and the sliding layers' fixed cost, from the documentation.
paged_ref paged_reference(const paged_allocation_request& r) {
  paged_ref t;
  const std::size_t n = r.lengths.size(), B = r.block_size.value;
  t.fixed_blocks.assign(n, 0);
  t.fixed_keep.assign(n, 0);
  t.sub.block_size = r.block_size;
  std::size_t g_blocks = 0, g_bytes = 0, g_floor_blocks = 0, g_floor_bytes = 0, g_all = 0;
  bool equal_all = true;
  const auto cost = [&](std::size_t l) {
    return r.block_bytes.size() == 1 ? r.block_bytes[0] : r.block_bytes[l];
  };
  for (std::size_t l = 0; l < n; ++l) {
    if (!r.block_bytes.empty()) {
      g_all = std::gcd(g_all, cost(l));
      equal_all = equal_all && cost(l) == cost(0);
    }
    if (!r.attention.empty() && r.attention[l].is_sliding()) {
      const std::size_t w = r.attention[l].window->value, k = std::min(r.lengths[l], w);
      t.fixed_keep[l] = k;
      t.fixed_blocks[l] = r.sliding_windows == window_placement::packed
                              ? cdiv(k, B)
                              : window_blocks_enumerated(r.lengths[l], w, B);
      t.s_blocks += t.fixed_blocks[l];
      if (!r.block_bytes.empty()) t.s_bytes += t.fixed_blocks[l] * cost(l);
      continue;
    }
    t.global.push_back(l);
    t.sub.lengths.push_back(r.lengths[l]);
    if (r.minimums.size() > 1) t.sub.minimums.push_back(r.minimums[l]);
    if (r.block_bytes.size() > 1) t.sub.block_bytes.push_back(r.block_bytes[l]);
    const std::size_t fb = cdiv(std::min(min_of(r.minimums, l), r.lengths[l]), B);
    g_blocks += cdiv(r.lengths[l], B);
    g_floor_blocks += fb;
    if (!r.block_bytes.empty()) {
      g_bytes += cdiv(r.lengths[l], B) * cost(l);
      g_floor_bytes += fb * cost(l);
    }
  }
  if (r.minimums.size() == 1) t.sub.minimums = r.minimums;
  if (r.block_bytes.size() == 1) t.sub.block_bytes = r.block_bytes;
  const bool all = r.scope == budget_scope::all_layers;
  const std::size_t c = r.budget.count;
  switch (r.budget.which) {
    case paged_budget::kind::blocks:
      t.sub.budget = paged_budget::in_blocks(all ? c - t.s_blocks : c);
      break;
    case paged_budget::kind::bytes:
      t.sub.budget = paged_budget::in_bytes(all ? c - t.s_bytes : c);
      break;
    case paged_budget::kind::ratio:
      if (!all) {
        t.sub.budget = r.budget;
      } else if (r.block_bytes.empty() || equal_all) {  // rounded to blocks
        const std::size_t b = round_half_up(r.budget.keep_ratio, t.s_blocks + g_blocks);
        t.feasible = b >= t.s_blocks + g_floor_blocks;
        t.sub.budget = paged_budget::in_blocks(t.feasible ? b - t.s_blocks : 0);
      } else {  // rounded to units of the gcd of all costs
        const std::size_t b = round_half_up(r.budget.keep_ratio, (t.s_bytes + g_bytes) / g_all) * g_all;
        t.feasible = b >= t.s_bytes + g_floor_bytes;
        t.sub.budget = paged_budget::in_bytes(t.feasible ? b - t.s_bytes : 0);
      }
      break;
  }
  return t;
}

}  // namespace

TEST_CASE("paged hybrid: sliding_window_blocks against positions enumerated") {
  for (std::size_t B = 1; B <= 9; ++B)
    for (std::size_t w = 1; w <= 40; ++w)
      for (std::size_t n = 0; n <= 90; ++n) {
        INFO("n " << n << " window " << w << " block " << B);
        const std::size_t k = std::min(n, w);
        const std::size_t in_place =
            sliding_window_blocks(n, window_tokens{w}, block_tokens{B}, window_placement::in_place);
        CHECK(in_place == window_blocks_enumerated(n, w, B));
        CHECK(sliding_window_blocks(n, window_tokens{w}, block_tokens{B}, window_placement::packed) ==
              cdiv(k, B));
        CHECK(in_place >= cdiv(k, B));
        CHECK(in_place <= cdiv(k + B - 1, B));  // at most W + B - 1 slots
      }
  // Hand-computed: 100 tokens, window 40, blocks of 16: positions 60..99 lie in blocks 3..6.
  CHECK(sliding_window_blocks(100, window_tokens{40}, block_tokens{16}, window_placement::in_place) == 4);
  CHECK(sliding_window_blocks(100, window_tokens{40}, block_tokens{16}, window_placement::packed) == 3);
  CHECK(sliding_window_blocks(96, window_tokens{32}, block_tokens{16}, window_placement::in_place) == 2);
  CHECK(sliding_window_blocks(97, window_tokens{32}, block_tokens{16}, window_placement::in_place) == 3);
  require_error(
      [] { (void)sliding_window_blocks(10, window_tokens{0}, block_tokens{4}, window_placement::packed); },
      {"sliding_window_blocks", "window must be > 0"});
  require_error(
      [] { (void)sliding_window_blocks(10, window_tokens{4}, block_tokens{0}, window_placement::packed); },
      {"block_size must be > 0"});
}

TEST_CASE("paged hybrid: hand-computed splits in blocks and bytes, both scopes, in place and packed") {
  const sensitivity_profile none;
  // 4 layers of 100 tokens in blocks of 16 (7 blocks each); layers 0 and 2 slide over 40 tokens:
  // in place 4 blocks each (positions 60..99), packed 3.
  const counts_t len(4, 100);
  const std::vector<layer_attention> att = {slide(40), glob(), slide(40), glob()};
  auto a = allocate_paged("uniform", make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12)), none);
  CHECK(a.blocks == counts_t{4, 2, 4, 2});  // 8 blocks for the windows, 4 left
  CHECK(a.keep == counts_t{40, 32, 40, 32});
  CHECK(a.total_blocks == 12);
  a = allocate_paged("uniform",
                     make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12), budget_scope::all_layers,
                                window_placement::packed),
                     none);
  CHECK(a.blocks == counts_t{3, 3, 3, 3});  // 6 for the windows, 6 left
  CHECK(a.keep == counts_t{40, 48, 40, 48});
  a = allocate_paged(
      "uniform", make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(4), budget_scope::global_layers),
      none);
  CHECK(a.blocks == counts_t{4, 2, 4, 2});
  CHECK(a.total_blocks == 12);
  // Ratio of all blocks held: 0.5 * (8 + 14) = 11, 3 for the global layers: 1.5 each -> 2, 1.
  a = allocate_paged("uniform", make_paged(len, {}, att, 16, {}, paged_budget::ratio(0.5)), none);
  CHECK(a.blocks == counts_t{4, 2, 4, 1});
  // Ratio of the global layers' 14 blocks: 7 -> 4, 3.
  a = allocate_paged("uniform",
                     make_paged(len, {}, att, 16, {}, paged_budget::ratio(0.5), budget_scope::global_layers),
                     none);
  CHECK(a.blocks == counts_t{4, 4, 4, 3});
  // Bytes: the sliding layers have twice the heads (2000 bytes a block against 1000). Their
  // 8 blocks cost 16000 bytes first; 4500 left buy 4 global blocks.
  const counts_t cost = {2000, 1000, 2000, 1000};
  a = allocate_paged("uniform", make_paged(len, {}, att, 16, cost, paged_budget::in_bytes(20500)), none);
  CHECK(a.blocks == counts_t{4, 2, 4, 2});
  CHECK(a.total_bytes == 20000);
  CHECK(a.total_blocks == 12);
  a = allocate_paged(
      "uniform",
      make_paged(len, {}, att, 16, cost, paged_budget::in_bytes(4500), budget_scope::global_layers), none);
  CHECK(a.blocks == counts_t{4, 2, 4, 2});
  CHECK(a.total_bytes == 20000);
  // Ratio of all bytes held: 0.5 * (16000 + 14000) = 15000 < 16000 for the windows alone.
  require_error(
      [&] {
        (void)allocate_paged("uniform", make_paged(len, {}, att, 16, cost, paged_budget::ratio(0.5)), none);
      },
      {"keep ratio 0.5 of the 30000 bytes the layers hold gives 15000 bytes",
       "below what the layers must hold (16000 bytes", "by 1000 bytes"});
  // 0.75 * 30 units of 1000 = 22.5 -> 23: 7000 bytes for the global layers.
  a = allocate_paged("uniform", make_paged(len, {}, att, 16, cost, paged_budget::ratio(0.75)), none);
  CHECK(a.blocks == counts_t{4, 4, 4, 3});
  CHECK(a.total_bytes == 23000);
  // Curve and a profile without entries for the local layers.
  sensitivity_profile holes(4);
  holes.add_point(1, 0.5, 1.0);
  holes.add_point(3, 0.5, 3.0);
  a = allocate_paged("curve", make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12)), holes);
  CHECK(a.blocks[0] == 4);
  CHECK(a.blocks[2] == 4);
  CHECK(a.blocks[1] + a.blocks[3] == 4);
  CHECK(a.blocks[3] > a.blocks[1]);  // the more sensitive layer keeps more
}

TEST_CASE("paged hybrid: infeasible and malformed requests say by how many blocks or bytes") {
  const sensitivity_profile none;
  const counts_t len(4, 100);
  const std::vector<layer_attention> att = {slide(40), glob(), slide(40), glob()};
  const counts_t cost = {2000, 1000, 2000, 1000};
  const auto run = [&](const paged_allocation_request& r) { (void)allocate_paged("uniform", r, none); };
  // Floors of 40 tokens: 3 blocks per global layer. Windows: 8 blocks in place.
  require_error([&] { run(make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(13))); },
                {"budget of 13 blocks is below what the layers must hold (14 blocks",
                 "the 2 sliding-window layers' 8 blocks (their last min(length, window) tokens in place)",
                 "global layers' floors 6", "by 1 blocks"});
  require_error([&] { run(make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(23))); },
                {"budget of 23 blocks exceeds the 22 blocks the layers hold", "by 1 blocks"});
  require_error(
      [&] {
        run(make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(11), budget_scope::all_layers,
                       window_placement::packed));
      },
      {"budget of 11 blocks is below what the layers must hold (12 blocks",
       "6 blocks (their last min(length, window) tokens packed)", "by 1 blocks"});
  CHECK_NOTHROW(allocate_paged("uniform",
                               make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(12),
                                          budget_scope::all_layers, window_placement::packed),
                               none));
  require_error(
      [&] {
        run(make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(5), budget_scope::global_layers));
      },
      {"budget of 5 blocks for the global layers is below the sum of per-layer floors (6 blocks",
       "by 1 blocks", "budget_scope::global_layers: the 2 sliding-window layers' 8 blocks"});
  require_error(
      [&] {
        run(make_paged(len, {40}, att, 16, {}, paged_budget::in_blocks(15), budget_scope::global_layers));
      },
      {"budget of 15 blocks for the global layers exceeds the 14 blocks the global layers hold by 1 blocks"});
  // Bytes: windows 16000, floors 6000, everything 30000.
  require_error([&] { run(make_paged(len, {40}, att, 16, cost, paged_budget::in_bytes(21999))); },
                {"budget of 21999 bytes is below the 22000 bytes the layers must hold",
                 "the 2 sliding-window layers' 16000 bytes", "by 1 bytes"});
  require_error([&] { run(make_paged(len, {40}, att, 16, cost, paged_budget::in_bytes(30001))); },
                {"budget of 30001 bytes exceeds the 30000 bytes the layers' blocks cost", "by 1 bytes"});
  require_error(
      [&] {
        run(make_paged(len, {40}, att, 16, cost, paged_budget::in_bytes(5999), budget_scope::global_layers));
      },
      {"budget of 5999 bytes for the global layers is below the 6000 bytes", "by 1 bytes"});
  // Ratio of all blocks: 0.5 * 22 = 11 < 14.
  require_error(
      [&] { run(make_paged(len, {40}, att, 16, {}, paged_budget::ratio(0.5))); },
      {"keep ratio 0.5 of the 22 blocks the layers hold gives 11 blocks", "(14 blocks", "by 3 blocks"});
  require_error(
      [&] {
        run(make_paged(len, {40}, att, 16, {}, paged_budget::ratio(0.25), budget_scope::global_layers));
      },
      {"keep ratio 0.25 of the global layers' 14 blocks gives 4 blocks", "(6 blocks", "by 2 blocks"});
  // Malformed.
  require_error(
      [&] { run(make_paged(len, {}, {slide(4)}, 16, {}, paged_budget::in_blocks(4))); },
      {"allocate_paged", "attention has 1 entries, expected 0 (every layer global) or n_layers = 4"});
  require_error(
      [&] {
        run(make_paged(len, {}, {glob(), glob(), slide(0), glob()}, 16, {}, paged_budget::in_blocks(4)));
      },
      {"attention[2] is a sliding window of 0 tokens"});
  require_error(
      [&] {
        run(make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12), budget_scope::all_layers,
                       static_cast<window_placement>(5)));
      },
      {"sliding_windows 5 is not a window_placement"});
  require_error(
      [&] {
        (void)allocate_paged("curve", make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12)),
                             random_profile(3));
      },
      {"allocate_paged: profile has 3 layers, expected n_layers = 4"});
  require_error(
      [&] {
        (void)allocate_paged("curve", make_paged(len, {}, att, 16, {}, paged_budget::in_blocks(12)), none);
      },
      {"allocator 'curve' on the 2 global layers counting in blocks", "profile has 0 layers"});
}

TEST_CASE("paged hybrid: random requests against the reference: local blocks, global split, totals") {
  std::size_t n_bytes_cases = 0;
  for (int it = 0; it < 300; ++it) {
    const std::size_t L = uniform_int(1, 10);
    const std::size_t pick = uniform_int(0, 3);
    const std::size_t B = pick == 0 ? 1 : pick == 1 ? uniform_int(2, 5) : pick == 2 ? 16 : 64;
    const std::size_t max_len = uniform_int(0, 2) == 0 ? 40 : 3000;
    counts_t len(L), mins(L);
    std::vector<layer_attention> att(L);
    for (std::size_t l = 0; l < L; ++l) {
      len[l] = uniform_int(0, 6) == 0 ? uniform_int(0, 3) : uniform_int(1, max_len);
      mins[l] = uniform_int(0, max_len / 4 + 1);
      att[l] = uniform_int(0, 1) == 0 ? slide(uniform_int(1, max_len / 2 + 1)) : glob();
    }
    const std::size_t cost_mode = uniform_int(0, 3);  // none, one, equal per layer, unequal
    counts_t cost;
    if (cost_mode == 1) cost = {uniform_int(1, 5000)};
    if (cost_mode == 2) cost.assign(L, uniform_int(1, 5000));
    if (cost_mode == 3)
      for (std::size_t l = 0; l < L; ++l) cost.push_back(100 * uniform_int(1, 8));
    auto r = make_paged(len, mins, att, B, cost, paged_budget::in_blocks(0),
                        uniform_int(0, 1) ? budget_scope::all_layers : budget_scope::global_layers,
                        uniform_int(0, 1) ? window_placement::in_place : window_placement::packed);
    const bool all = r.scope == budget_scope::all_layers;
    // Feasible ranges, from the definitions.
    paged_ref t0 = paged_reference(r);
    std::size_t g_floor_blocks = 0, g_blocks = 0, g_floor_bytes = 0, g_bytes = 0;
    for (const std::size_t l : t0.global) {
      const std::size_t c = cost.empty() ? 0 : cost.size() == 1 ? cost[0] : cost[l];
      g_floor_blocks += cdiv(std::min(mins[l], len[l]), B);
      g_blocks += cdiv(len[l], B);
      g_floor_bytes += cdiv(std::min(mins[l], len[l]), B) * c;
      g_bytes += cdiv(len[l], B) * c;
    }
    const std::size_t kind =
        cost.empty() ? uniform_int(0, 1) * 2 : uniform_int(0, 2);  // blocks, bytes, ratio
    std::size_t want = 0;
    if (kind == 0) {
      want = (all ? t0.s_blocks : 0) + uniform_int(g_floor_blocks, g_blocks);
      r.budget = paged_budget::in_blocks(want);
    } else if (kind == 1) {
      want = (all ? t0.s_bytes : 0) + uniform_int(g_floor_bytes, g_bytes);
      r.budget = paged_budget::in_bytes(want);
      ++n_bytes_cases;
    } else {
      r.budget = paged_budget::ratio(double(uniform_int(0, 64)) / 64.0);
    }
    const paged_ref t = paged_reference(r);
    const sensitivity_profile p =
        random_profile(L, sliding_mask(make_req(len, {}, att, global_budget::tokens(0))));
    const sensitivity_profile gp =
        select_layers(p, span<const std::size_t>(t.global.data(), t.global.size()));
    for (const auto name : allocator_names) {
      INFO(name << " iteration " << it << " B " << B << " cost mode " << cost_mode << " kind " << kind);
      paged_allocation sub_a;
      bool sub_ok = t.feasible;
      if (sub_ok && !t.global.empty()) {
        try {
          sub_a = allocate_paged(name, t.sub, gp);
        } catch (const error&) {
          sub_ok = false;  // an infeasible ratio: the hybrid request must fail too
        }
      }
      if (!sub_ok) {
        CHECK_THROWS_AS(allocate_paged(name, r, p), error);
        continue;
      }
      const auto a = allocate_paged(name, r, p);
      REQUIRE(a.blocks.size() == L);
      counts_t want_blocks = t.fixed_blocks, want_keep = t.fixed_keep;
      for (std::size_t i = 0; i < t.global.size(); ++i) {
        want_blocks[t.global[i]] = sub_a.blocks[i];
        want_keep[t.global[i]] = sub_a.keep[i];
      }
      CHECK(a.blocks == want_blocks);
      CHECK(a.keep == want_keep);
      CHECK(a.total_blocks == sum(a.blocks));
      CHECK(a.total_blocks == t.s_blocks + sub_a.total_blocks);
      std::size_t bytes = 0;
      for (std::size_t l = 0; l < L; ++l)
        bytes += cost.empty() ? 0 : a.blocks[l] * (cost.size() == 1 ? cost[0] : cost[l]);
      CHECK(a.total_bytes == bytes);
      if (kind == 0) CHECK(a.total_blocks == (all ? want : want + t.s_blocks));
      if (kind == 1) CHECK(a.total_bytes <= (all ? want : want + t.s_bytes));
    }
  }
  CHECK(n_bytes_cases > 20);
}

TEST_CASE("paged hybrid: block size 1 reproduces the token allocation with local layers") {
  for (int it = 0; it < 200; ++it) {
    const std::size_t L = uniform_int(1, 10);
    const auto h = random_request(L);
    if (h.req.budget.is_ratio) continue;
    const sensitivity_profile p = random_profile(L, sliding_mask(h.req));
    for (const auto placement : {window_placement::in_place, window_placement::packed}) {
      const auto r = make_paged(h.req.lengths, h.req.minimums, h.req.attention, 1, {},
                                paged_budget::in_blocks(h.req.budget.n_tokens), h.req.scope, placement);
      for (const auto name : allocator_names) {
        INFO(name << " iteration " << it);
        const auto tok = allocate(name, h.req, p);
        const auto a = allocate_paged(name, r, p);
        CHECK(a.blocks == tok);
        CHECK(a.keep == tok);
        CHECK(a.total_blocks == h.ref.keep);
      }
    }
  }
}
