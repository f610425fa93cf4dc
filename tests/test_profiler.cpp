// Profilers: ablation against a synthetic additive loss (progress, resume), CAKE preference
// and SqueezeAttention importance against hand-computed and naive references.
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profiler.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;

namespace {

double urand(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng()); }

// loss(r) = 3 + sum_l a_l * (1 - r_l)^2 / (r_l + 0.1): additive, so every delta is exact.
struct additive_loss {
  std::vector<double> a;
  std::size_t calls = 0;
  double term(std::size_t l, double r) const { return a[l] * (1 - r) * (1 - r) / (r + 0.1); }
  double operator()(span<const double> r) {
    ++calls;
    REQUIRE(r.size() == a.size());
    double s = 3.0;
    for (std::size_t l = 0; l < a.size(); ++l) s += term(l, r[l]);
    return s;
  }
};

additive_loss make_loss(std::size_t L) {
  additive_loss f;
  for (std::size_t l = 0; l < L; ++l) f.a.push_back(urand(0.01, 2.0));
  return f;
}

}  // namespace

TEST_CASE("profile_ablation: deltas of an additive loss are its per-layer terms") {
  const std::size_t L = 5;
  auto f = make_loss(L);
  ablation_options opt;
  opt.keep_ratios = {0.05, 0.2, 0.5, 1.0};
  std::vector<std::pair<std::size_t, std::size_t>> seen;
  const auto p = profile_ablation(
      L, [&](span<const double> r) {
        // Only one layer is pruned at a time, all others full.
        std::size_t pruned = 0;
        for (const double v : r) pruned += v != 1.0;
        CHECK(pruned <= 1);
        return f(r);
      },
      opt, sensitivity_profile{}, [&](const ablation_progress& pr) {
        CHECK(pr.n_layers == L);
        CHECK(pr.n_ratios == 4);
        CHECK_FALSE(pr.skipped);
        REQUIRE(pr.partial != nullptr);
        CHECK(pr.partial->has_point(pr.layer, pr.keep_ratio));
        seen.emplace_back(pr.layer, pr.ratio_index);
      });
  CHECK(f.calls == 1 + L * 4);
  REQUIRE(seen.size() == L * 4);
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].first == i / 4);
    CHECK(seen[i].second == i % 4);
  }
  REQUIRE(p.complete());
  for (std::size_t l = 0; l < L; ++l) {
    REQUIRE(p.points(l).size() == 4);
    for (const auto& q : p.points(l)) CHECK(q.delta == Approx(f.term(l, q.keep_ratio)).margin(1e-12));
  }
  // Additivity: the deltas predict the all-pruned loss exactly.
  std::vector<double> r(L);
  for (auto& v : r) v = 0.2;
  const double predicted = 3.0 + [&] {
    double s = 0;
    for (std::size_t l = 0; l < L; ++l) s += p.delta_at(l, 0.2);
    return s;
  }();
  CHECK(f(r) == Approx(predicted));
}

TEST_CASE("profile_ablation: resumes from a partly filled profile (also through CSV)") {
  const std::size_t L = 4;
  auto full_f = make_loss(L);
  ablation_options opt;  // default 8 ratios
  const auto full = profile_ablation(L, full_f, opt);
  CHECK(full_f.calls == 1 + L * 8);

  // A run that dies after 13 calls; the progress callback saved the partial profile.
  auto f = full_f;
  f.calls = 0;
  std::string saved;
  auto dying = [&](span<const double> r) {
    if (f.calls == 13) throw std::runtime_error("engine crashed");
    return f(r);
  };
  auto save = [&](const ablation_progress& pr) {
    std::ostringstream os;
    write_profile(os, *pr.partial);
    saved = os.str();
  };
  CHECK_THROWS_AS(profile_ablation(L, dying, opt, sensitivity_profile{}, save), std::runtime_error);
  std::istringstream is(saved);
  auto partial = read_profile(is, profile_read_options{true});
  partial.model = "resumed-model";
  CHECK(partial.n_points() == 12);  // 1 baseline + 12 points before the crash

  f.calls = 0;
  std::size_t skipped = 0, measured = 0;
  const auto resumed = profile_ablation(L, f, opt, partial, [&](const ablation_progress& pr) {
    (pr.skipped ? skipped : measured) += 1;
    if (pr.skipped) CHECK(pr.delta == Approx(full_f.term(pr.layer, pr.keep_ratio)));
  });
  CHECK(skipped == 12);
  CHECK(measured == L * 8 - 12);
  CHECK(f.calls == 1 + L * 8 - 12);
  CHECK(resumed.model == "resumed-model");
  for (std::size_t l = 0; l < L; ++l) {
    REQUIRE(resumed.points(l).size() == full.points(l).size());
    for (std::size_t j = 0; j < full.points(l).size(); ++j)
      CHECK(resumed.points(l)[j].delta == Approx(full.points(l)[j].delta).margin(1e-12));
  }
  // A complete profile needs no call at all, not even the baseline.
  f.calls = 0;
  CHECK(profile_ablation(L, f, opt, resumed) == resumed);
  CHECK(f.calls == 0);
}

TEST_CASE("profile_ablation: errors") {
  auto f = make_loss(3);
  ablation_options bad;
  bad.keep_ratios = {};
  require_error([&] { (void)profile_ablation(3, f, bad); }, {"keep_ratios is empty"});
  bad.keep_ratios = {0.5, 0.0};
  require_error([&] { (void)profile_ablation(3, f, bad); }, {"keep_ratios[1] = 0"});
  bad.keep_ratios = {0.5, 1.5};
  require_error([&] { (void)profile_ablation(3, f, bad); }, {"keep_ratios[1] = 1.5"});
  bad.keep_ratios = {0.5, 0.2, 0.5};
  require_error([&] { (void)profile_ablation(3, f, bad); }, {"keep_ratios[2] = 0.5 repeats keep_ratios[0]"});
  require_error([&] { (void)profile_ablation(0, f); }, {"n_layers 0"});
  require_error([&] { (void)profile_ablation(3, f, ablation_options{}, sensitivity_profile(4)); },
                {"resumed profile has 4 layers, expected 3"});
  // A non-finite loss names the layer and ratio (or the baseline).
  require_error([&] { (void)profile_ablation(3, [](span<const double>) { return std::nan(""); }); },
                {"baseline"});
  require_error(
      [&] {
        (void)profile_ablation(3, [](span<const double> r) {
          return r[1] == 0.15 ? std::numeric_limits<double>::infinity() : 1.0;
        });
      },
      {"layer 1", "keep ratio 0.15"});
}

TEST_CASE("cake_profiler: hand-computed entropy, variance and preference") {
  // One head, window 2, 4 keys: the prefix is keys 0 and 1.
  const std::vector<float> probs = {0.25f, 0.25f, 0.5f, 0.0f,   // query 0 (causal: key 3 masked)
                                    0.4f, 0.2f, 0.2f, 0.2f};    // query 1
  const window_attention a{span<const float>(probs), 1, 2, 4};
  const double H = -(2 * 0.25 * std::log(0.25) + 0.4 * std::log(0.4) + 0.2 * std::log(0.2));
  // Key 0: 0.25, 0.4 -> unbiased variance 0.01125; key 1: 0.25, 0.2 -> 0.00125.
  const double V = 0.01125 + 0.00125;
  CHECK(attention_entropy(a) == Approx(H).epsilon(1e-6));
  CHECK(attention_variance(a) == Approx(V).epsilon(1e-6));
  CHECK(cake_profiler(1).preference(a) == Approx(H * V).epsilon(1e-6));
  cake_options o;
  o.tau1 = 2.0;
  o.tau2 = 0.5;
  CHECK(cake_profiler(1, o).preference(a) == Approx(std::sqrt(H) * V * V).epsilon(1e-6));
}

TEST_CASE("cake_profiler: random windows against a naive reference; profile and allocation") {
  const std::size_t L = 4, heads = 3, window = 5, keys = 17;
  cake_options o;
  o.tau1 = 1.5;
  o.tau2 = 2.0;
  cake_profiler prof(L, o);
  std::vector<double> expect(L, 0.0);
  for (std::size_t sample = 0; sample < 2; ++sample)
    for (std::size_t l = 0; l < L; ++l) {
      std::vector<float> p(heads * window * keys, 0.0f);
      for (std::size_t h = 0; h < heads; ++h)
        for (std::size_t q = 0; q < window; ++q) {
          const std::size_t visible = keys - window + q + 1;  // causal
          double z = 0;
          std::vector<double> e(visible);
          for (auto& v : e) z += (v = std::exp(urand(-3.0, 3.0) * double(l + 1)));
          for (std::size_t j = 0; j < visible; ++j) p[(h * window + q) * keys + j] = float(e[j] / z);
        }
      // Naive reference: entropy and variance with explicit index arithmetic.
      double H = 0, V = 0;
      for (std::size_t h = 0; h < heads; ++h)
        for (std::size_t j = 0; j + window < keys; ++j) {
          std::vector<double> col;
          for (std::size_t q = 0; q < window; ++q) {
            const double x = p[h * window * keys + q * keys + j];
            col.push_back(x);
            if (x > 0) H += -x * std::log(x);
          }
          double m = 0;
          for (const double x : col) m += x / double(window);
          double ss = 0;
          for (const double x : col) ss += (x - m) * (x - m);
          V += ss / double(window - 1);
        }
      expect[l] += 0.5 * std::pow(H, 1 / 1.5) * std::pow(V, 1 / 2.0);
      prof.add_layer(l, window_attention{span<const float>(p), heads, window, keys});
    }
  for (std::size_t l = 0; l < L; ++l) CHECK(prof.layer_preference(l) == Approx(expect[l]).epsilon(1e-5));
  const auto p = prof.result();
  CHECK(p.metric == "cake_preference");
  REQUIRE(p.complete());
  for (std::size_t l = 0; l < L; ++l) {
    REQUIRE(p.points(l).size() == 1);
    CHECK(p.points(l)[0].keep_ratio == 0.5);
    CHECK(p.points(l)[0].delta == Approx(expect[l]).epsilon(1e-5));
  }
  // Proportional allocation from the profile is CAKE's rule: budget proportional to preference,
  // at any global ratio (single-point curves scale with the preference), up to one token.
  for (const double kr : {0.1, 0.3, 0.5, 0.9}) {
    allocation_request req;
    req.lengths.assign(L, 1000);
    req.budget = global_budget::ratio(kr);
    const auto c = allocate("proportional", req, p);
    const auto ref = allocate_proportional(req, expect);
    for (std::size_t l = 0; l < L; ++l) CHECK(double(c[l]) == Approx(double(ref[l])).margin(1.0));
  }
}

TEST_CASE("cake_profiler: errors") {
  const std::vector<float> ok(1 * 2 * 4, 0.25f);
  require_error([] { cake_profiler(0); }, {"n_layers 0"});
  cake_options o;
  o.tau1 = 0;
  require_error([&] { cake_profiler(2, o); }, {"tau1 0"});
  o = {};
  o.tau2 = -1;
  require_error([&] { cake_profiler(2, o); }, {"tau2 -1"});
  o = {};
  o.point_ratio = 1.0;
  require_error([&] { cake_profiler(2, o); }, {"point_ratio 1"});
  cake_profiler c(2);
  require_error([&] { c.add_layer(2, window_attention{span<const float>(ok), 1, 2, 4}); }, {"layer 2"});
  require_error([&] { c.add_layer(0, window_attention{span<const float>(ok), 1, 1, 8}); }, {"window 1"});
  require_error([&] { c.add_layer(0, window_attention{span<const float>(ok), 1, 4, 2}); }, {"keys 2"});
  require_error([&] { c.add_layer(0, window_attention{span<const float>(ok), 1, 2, 5}); }, {"probs has 8"});
  require_error([&] { c.add_layer(0, window_attention{span<const float>(ok), 0, 2, 4}); }, {"heads"});
  std::vector<float> bad = ok;
  bad[3] = std::nanf("");
  require_error([&] { c.add_layer(0, window_attention{span<const float>(bad), 1, 2, 4}); }, {"probs[3]"});
  bad[3] = -0.1f;
  require_error([&] { c.add_layer(0, window_attention{span<const float>(bad), 1, 2, 4}); }, {"probs[3]"});
  c.add_layer(0, window_attention{span<const float>(ok), 1, 2, 4});
  require_error([&] { (void)c.result(); }, {"layer 1 has no data"});
  require_error([&] { (void)c.layer_preference(1); }, {"layer 1 has no data"});
}

TEST_CASE("squeeze_profiler: 1 - cosine similarity of attention input and output") {
  squeeze_profiler s(4, 0.25);
  // Layer 0: output equals input (scaled): importance 0.
  const std::vector<float> in0 = {1, 2, 3, -1, 0, 2};
  std::vector<float> out0 = in0;
  for (auto& v : out0) v *= 2.5f;
  s.add_layer(0, in0, out0, 2, 3);
  // Layer 1: orthogonal rows: importance 1.
  s.add_layer(1, std::vector<float>{1, 0, 0, 1}, std::vector<float>{0, 1, -1, 0}, 2, 2);
  // Layer 2: opposite rows and one zero row (skipped): importance 2.
  s.add_layer(2, std::vector<float>{1, 1, 0, 0}, std::vector<float>{-1, -1, 3, 4}, 2, 2);
  // Layer 3: two samples, 45 degrees then 90 degrees: mean of (1 - 0.7071) and 1.
  s.add_layer(3, std::vector<float>{1, 0}, std::vector<float>{1, 1}, 1, 2);
  s.add_layer(3, std::vector<float>{1, 0}, std::vector<float>{0, 1}, 1, 2);
  CHECK(s.layer_importance(0) == Approx(0.0).margin(1e-7));
  CHECK(s.layer_importance(1) == Approx(1.0));
  CHECK(s.layer_importance(2) == Approx(2.0));
  CHECK(s.layer_importance(3) == Approx(0.5 * (1 - std::sqrt(0.5)) + 0.5));
  // A cosine the engine measured itself counts as a sample of the same kind.
  squeeze_profiler s2(4, 0.25);
  s2.add_mean_cosine(3, std::sqrt(0.5));
  s2.add_mean_cosine(3, 0.0);
  CHECK(s2.layer_importance(3) == Approx(s.layer_importance(3)));
  require_error([&] { s2.add_mean_cosine(4, 0.5); }, {"add_mean_cosine", "layer 4"});
  require_error([&] { s2.add_mean_cosine(0, 1.5); }, {"mean_cosine must be in [-1, 1]", "1.5"});
  require_error([&] { s2.add_mean_cosine(0, std::nan("")); }, {"mean_cosine must be in [-1, 1]"});
  const auto p = s.result();
  CHECK(p.metric == "squeeze_1_minus_cos");
  CHECK(p.points(3)[0].keep_ratio == 0.25);
  CHECK(p.points(2)[0].delta == Approx(2.0));
  // Random rows against a naive reference.
  const std::size_t T = 7, D = 5;
  std::vector<float> a(T * D), b(T * D);
  for (auto& v : a) v = float(urand(-1, 1));
  for (auto& v : b) v = float(urand(-1, 1));
  double ref = 0;
  for (std::size_t t = 0; t < T; ++t) {
    double d = 0, x = 0, y = 0;
    for (std::size_t k = 0; k < D; ++k) {
      const double u = a[t * D + k], w = b[t * D + k];
      d += u * w;
      x += u * u;
      y += w * w;
    }
    ref += d / std::sqrt(x * y) / double(T);
  }
  CHECK(squeeze_profiler::mean_cosine(a, b, T, D) == Approx(ref).epsilon(1e-9));
}

TEST_CASE("squeeze_profiler: errors") {
  require_error([] { squeeze_profiler(0); }, {"n_layers 0"});
  require_error([] { squeeze_profiler(2, 0.0); }, {"point_ratio 0"});
  squeeze_profiler s(2);
  const std::vector<float> v(6, 1.0f);
  require_error([&] { s.add_layer(2, v, v, 2, 3); }, {"layer 2"});
  require_error([&] { s.add_layer(0, v, v, 2, 2); }, {"expected tokens * dim = 4"});
  require_error([&] { s.add_layer(0, v, std::vector<float>(5, 1.0f), 2, 3); }, {"hidden_out 5"});
  require_error([&] { s.add_layer(0, v, v, 0, 3); }, {"tokens (0)"});
  std::vector<float> w = v;
  w[4] = std::numeric_limits<float>::infinity();
  require_error([&] { s.add_layer(0, v, w, 2, 3); }, {"index 4"});
  s.add_layer(0, v, v, 2, 3);
  require_error([&] { (void)s.result(); }, {"layer 1 has no data"});
}

TEST_CASE("profilers skip the sliding-window layers of a hybrid model unless asked", "[profiler][hybrid]") {
  const std::size_t L = 5;
  auto f = make_loss(L);
  ablation_options opt;
  opt.keep_ratios = {0.1, 0.5};
  opt.attention.assign(L, layer_attention::global());
  opt.attention[1] = opt.attention[3] = layer_attention::sliding(window_tokens{64});
  std::vector<std::size_t> profiled;
  auto p = profile_ablation(L, f, opt, sensitivity_profile{},
                            [&](const ablation_progress& pr) { profiled.push_back(pr.layer); });
  CHECK(profiled == std::vector<std::size_t>{0, 0, 2, 2, 4, 4});
  CHECK(f.calls == 1 + 6);  // the baseline, then two points of each global layer
  for (const std::size_t l : {std::size_t{1}, std::size_t{3}}) CHECK(p.points(l).empty());
  for (const std::size_t l : {std::size_t{0}, std::size_t{2}, std::size_t{4}}) {
    REQUIRE(p.points(l).size() == 2);
    CHECK(p.delta_at(l, 0.1) == Approx(f.term(l, 0.1)));
  }
  // The allocators read only the global layers: the profile is enough for curve.
  allocation_request req;
  req.lengths.assign(L, 1000);
  req.attention = opt.attention;
  req.budget = global_budget::ratio(0.5);
  const auto keep = allocate(curve_allocator{}, req, p);
  CHECK(keep[1] == 64);
  CHECK(keep[3] == 64);
  CHECK(keep[0] + keep[2] + keep[4] == 1564 - 128);  // 0.5 of 3 x 1000 + 2 x 64, windows charged first
  // local_layers::profile measures them too.
  opt.local = local_layers::profile;
  f.calls = 0;
  p = profile_ablation(L, f, opt);
  CHECK(f.calls == 1 + 10);
  CHECK(p.complete());
  opt.attention.resize(2);
  require_error([&] { (void)profile_ablation(L, f, opt); }, {"attention has 2 entries, expected 0 or n_layers = 5"});
  // Proxies: unfed sliding layers are fine when skipped, an unfed global layer is not.
  cake_profiler cake(3);
  squeeze_profiler squeeze(3);
  const std::vector<layer_attention> att{layer_attention::global(), layer_attention::sliding(window_tokens{8}),
                                         layer_attention::global()};
  for (const std::size_t l : {std::size_t{0}, std::size_t{2}}) squeeze.add_mean_cosine(l, 0.5 + 0.1 * double(l));
  const auto q = squeeze.result(span<const layer_attention>(att));
  CHECK(q.points(1).empty());
  CHECK(q.delta_at(2, q.points(2)[0].keep_ratio) == Approx(0.3));
  require_error([&] { (void)squeeze.result(span<const layer_attention>(att), local_layers::profile); },
                {"layer 1 has no data yet"});
  require_error([&] { (void)cake.result(span<const layer_attention>(att)); }, {"layer 0 has no data yet"});
}
