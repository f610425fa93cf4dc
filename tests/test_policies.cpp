// Scoring policies against naive double-precision references, the h2o state, the policy trait
// and the run-time name dispatch.
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "catch.hpp"
#include "depthkv/score/policies.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;

namespace {

struct layer_data {
  std::size_t H, n_kv, w, d, n;
  std::vector<float> q;  // [H][w][d]
  std::vector<float> k;  // [n_kv][n][d]
  std::vector<pos_t> pos;
  window_queries wq;
  layer_data(std::size_t H_, std::size_t n_kv_, std::size_t w_, std::size_t d_, std::size_t n_)
      : H(H_), n_kv(n_kv_), w(w_), d(d_), n(n_), q(H_ * w_ * d_), k(n_kv_ * n_ * d_), pos(n_) {
    std::normal_distribution<float> nd;
    for (auto& x : q) x = nd(rng());
    for (auto& x : k) x = nd(rng());
    for (std::size_t j = 0; j < n; ++j) pos[j] = pos_t(10 + 2 * j);
    wq = window_queries::dense(q.data(), kv_shape(heads{H}, tokens{w}, dim{d}));
  }
  head_input<float> input(std::size_t h) const {
    head_input<float> in;
    in.layer = 1;
    in.kv_head = h;
    in.n_kv_heads = n_kv;
    in.keys = {k.data() + h * n * d, n, d, static_cast<std::ptrdiff_t>(d)};
    in.positions = pos;
    in.queries = &wq;
    return in;
  }
  // Naive: sum over the last `last` window queries of causal softmax, reduced over the group.
  std::vector<double> attention(std::size_t h, std::size_t last, bool use_max) const {
    const std::size_t g = H / n_kv;
    std::vector<double> out(n, use_max ? 0.0 : 0.0);
    for (std::size_t hh = 0; hh < g; ++hh) {
      std::vector<double> s(n, 0.0);
      for (std::size_t i = w - last; i < w; ++i) {
        const std::size_t lim = n - w + i + 1;
        std::vector<double> lg(lim);
        double m = -1e300, z = 0;
        for (std::size_t j = 0; j < lim; ++j) {
          double acc = 0;
          for (std::size_t t = 0; t < d; ++t)
            acc += double(q[((h * g + hh) * w + i) * d + t]) * double(k[(h * n + j) * d + t]);
          lg[j] = acc / std::sqrt(double(d));
          m = std::max(m, lg[j]);
        }
        for (std::size_t j = 0; j < lim; ++j) z += std::exp(lg[j] - m);
        for (std::size_t j = 0; j < lim; ++j) s[j] += std::exp(lg[j] - m) / z;
      }
      for (std::size_t j = 0; j < n; ++j) out[j] = use_max ? std::max(out[j], s[j]) : out[j] + s[j] / double(g);
    }
    return out;
  }
};

std::vector<double> naive_pool(const std::vector<double>& in, std::size_t kernel, bool avg) {
  const std::size_t n = in.size(), r = kernel / 2;
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t lo = i >= r ? i - r : 0, hi = std::min(n - 1, i + r);
    double s = 0, m = -1e300;
    for (std::size_t j = lo; j <= hi; ++j) {
      s += in[j];
      m = std::max(m, in[j]);
    }
    out[i] = avg ? s / double(hi - lo + 1) : m;
  }
  return out;
}

void require_close(const std::vector<float>& got, const std::vector<double>& ref, double rel = 1e-5) {
  for (std::size_t j = 0; j < ref.size(); ++j) {
    INFO("j " << j << " got " << got[j] << " ref " << ref[j]);
    REQUIRE(std::abs(double(got[j]) - ref[j]) <= rel * std::abs(ref[j]) + 1e-30);
  }
}

struct not_a_policy {
  static constexpr const char* name = "nope";
  std::size_t n_sink = 0;  // no n_recent, no score
};

}  // namespace

TEST_CASE("policy trait states the contract", "[policies]") {
  STATIC_REQUIRE(is_scoring_policy_v<snapkv>);
  STATIC_REQUIRE(is_scoring_policy_v<h2o>);
  STATIC_REQUIRE(is_scoring_policy_v<tova>);
  STATIC_REQUIRE(is_scoring_policy_v<knorm>);
  STATIC_REQUIRE(is_scoring_policy_v<streaming>);
  STATIC_REQUIRE(is_scoring_policy_v<random_policy>);
  STATIC_REQUIRE(!is_scoring_policy_v<not_a_policy>);
  STATIC_REQUIRE(!is_scoring_policy_v<int>);
  STATIC_REQUIRE(detail::has_on_retain<h2o>::value);
  STATIC_REQUIRE(!detail::has_on_retain<snapkv>::value);
}

TEST_CASE("snapkv: window attention + pooling vs naive reference (GQA mean and max)", "[policies]") {
  layer_data L(8, 2, 12, 32, 90);
  score_scratch s;
  for (bool use_max : {false, true}) {
    for (pool_kind pk : {pool_kind::none, pool_kind::avg, pool_kind::max}) {
      for (std::size_t window : {0u, 5u}) {  // 0: the window left unset (all queries)
        snapkv p;
        if (window > 0) p.window = window;
        p.pool = pk;
        p.kernel = 5;
        p.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
        INFO("max " << use_max << " pool " << pool_kind_name(pk) << " window " << window);
        for (std::size_t h = 0; h < 2; ++h) {
          std::vector<float> out(L.n);
          p.check(L.input(h));
          p.score(L.input(h), out, s);
          auto ref = L.attention(h, window == 0 ? L.w : window, use_max);
          if (pk != pool_kind::none) ref = naive_pool(ref, 5, pk == pool_kind::avg);
          require_close(out, ref);
        }
      }
    }
  }
}

TEST_CASE("snapkv: hand-computed pooled scores", "[policies]") {
  // One query (w = 1) with q = 0: uniform attention 1/4 over 4 keys; avg pooling keeps 1/4,
  // and the sum over keys is 1.
  std::vector<float> q(4, 0.f), k(16, 1.f);
  const window_queries wq = window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{4}));
  head_input<float> in;
  in.keys = {k.data(), 4, 4, 4};
  in.queries = &wq;
  score_scratch s;
  std::vector<float> out(4);
  snapkv{}.score(in, out, s);
  for (float x : out) CHECK(x == Approx(0.25).epsilon(1e-6));
}

TEST_CASE("tova: last query's attention averaged over the group", "[policies]") {
  layer_data L(6, 3, 7, 16, 40);
  score_scratch s;
  for (std::size_t h = 0; h < 3; ++h) {
    std::vector<float> out(L.n);
    tova{}.score(L.input(h), out, s);
    require_close(out, L.attention(h, 1, false));
    double sum = 0;
    for (float x : out) sum += x;
    CHECK(sum == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("knorm, streaming and random scores", "[policies]") {
  layer_data L(2, 2, 1, 24, 33);
  score_scratch s;
  std::vector<float> out(L.n);
  knorm{}.score(L.input(1), out, s);
  for (std::size_t j = 0; j < L.n; ++j) {
    double n2 = 0;
    for (std::size_t t = 0; t < L.d; ++t) n2 += double(L.k[(L.n + j) * L.d + t]) * L.k[(L.n + j) * L.d + t];
    REQUIRE(out[j] == Approx(-std::sqrt(n2)).epsilon(1e-6));
  }
  streaming{}.score(L.input(0), out, s);
  for (std::size_t j = 1; j < L.n; ++j) REQUIRE(out[j] > out[j - 1]);
  REQUIRE(out[L.n - 1] == std::numeric_limits<float>::max());
  // Strictly falling with age up to 2 * 0x7F7FFFFF rows (float(j) ties beyond 2^24):
  // neighbours around 2^24, the switch to negative floats, and the last distinct age.
  for (const std::size_t age : {std::size_t{0}, std::size_t{1} << 24, (std::size_t{1} << 24) + 1,
                                std::size_t{0x7F7FFFFE}, std::size_t{0x7F7FFFFF}, std::size_t{0x7F800000},
                                std::size_t{0xFEFFFFFD}}) {
    INFO("age " << age);
    const float a = streaming::recency_score(age), b = streaming::recency_score(age + 1);
    REQUIRE(std::isfinite(a));
    REQUIRE(std::isfinite(b));
    REQUIRE(a > b);
  }

  random_policy r{0, 0, 42};
  std::vector<float> a(L.n), b(L.n), c(L.n);
  r.score(L.input(0), a, s);
  r.score(L.input(0), b, s);
  CHECK(a == b);  // deterministic per seed
  r.seed = 43;
  r.score(L.input(0), c, s);
  CHECK(a != c);
  for (float x : a) CHECK((x >= 0.f && x < 1.f));
  // Scores follow positions, not row indices: dropping row 0 keeps the others' scores.
  head_input<float> in = L.input(0);
  in.keys.data += L.d;
  in.keys.n -= 1;
  in.positions = span<const pos_t>(L.pos.data() + 1, L.n - 1);
  std::vector<float> shifted(L.n - 1);
  r.seed = 42;
  r.score(in, shifted, s);
  for (std::size_t j = 0; j + 1 < L.n; ++j) REQUIRE(shifted[j] == a[j + 1]);
}

TEST_CASE("h2o_state accumulates, extends and compacts; h2o scores from it", "[policies]") {
  h2o_state st(2, 2);
  std::vector<float> r1{0.5f, 0.5f}, r2{0.2f, 0.3f, 0.5f};
  st.accumulate(1, 0, r1);
  st.accumulate(1, 0, r2);  // a new token arrived
  st.extend(1, 0, 4);       // and another, without feeding
  const auto sc = st.scores(1, 0);
  REQUIRE(sc.size() == 4);
  CHECK(sc[0] == Approx(0.7));
  CHECK(sc[1] == Approx(0.8));
  CHECK(sc[2] == Approx(0.5));
  CHECK(sc[3] == 0.f);
  std::vector<float> block{1, 0, 0, 0, 0.5f, 0.5f, 0, 0};  // two prefill rows of 4, stride 4
  st.accumulate_rows(1, 0, block.data(), 2, 4, 4);
  CHECK(st.scores(1, 0)[0] == Approx(2.2));
  const std::vector<index_t> keep{1, 3};
  st.retain(1, 0, keep);
  REQUIRE(st.length(1, 0) == 2);
  CHECK(st.scores(1, 0)[0] == Approx(1.3));
  CHECK(st.scores(1, 0)[1] == 0.f);

  std::vector<float> k(2 * 4, 0.f);
  head_input<float> in;
  in.layer = 1;
  in.kv_head = 0;
  in.n_kv_heads = 2;
  in.keys = {k.data(), 2, 4, 4};
  h2o p{0, 0, &st};
  p.check(in);
  score_scratch s;
  std::vector<float> out(2);
  p.score(in, out, s);
  CHECK(out[0] == Approx(1.3));
  in.keys.n = 1;
  require_error([&] { p.check(in); }, {"state tracks 2", "cache holds 1"});
  require_error([&] { h2o{}.check(in); }, {"no h2o_state"});
  require_error([&] { st.accumulate(1, 0, span<const float>(r1.data(), 1)); }, {"1 entries", "already tracks 2"});
  require_error([&] { st.accumulate(2, 0, r1); }, {"layer 2"});
  require_error([&] { st.retain(1, 0, std::vector<index_t>{1, 0}); }, {"strictly ascending"});
  CHECK(st.length(1, 0) == 2);  // unchanged by the failed calls
}

TEST_CASE("policies reject missing or mismatched queries", "[policies]") {
  layer_data L(4, 2, 6, 16, 20);
  head_input<float> in = L.input(0);
  in.queries = nullptr;
  require_error([&] { snapkv{}.check(in); }, {"snapkv", "window queries"});
  require_error([&] { tova{}.check(in); }, {"tova", "window queries"});
  snapkv p;
  p.kernel = 4;
  require_error([&] { p.check(L.input(0)); }, {"kernel must be odd"});
  p.kernel = 5;
  p.window = 7;
  require_error([&] { p.check(L.input(0)); }, {"window 7", "[1, 6]"});
  p.window = 0;  // no magic value: an empty window is an error, "all queries" is the unset window
  require_error([&] { p.check(L.input(0)); }, {"window 0", "[1, 6]"});
  p.window.reset();
  p.check(L.input(0));
  in = L.input(0);
  in.n_kv_heads = 3;
  require_error([&] { snapkv{}.check(in); }, {"n_kv_heads (3)"});
  in = L.input(0);
  in.keys.n = 5;  // fewer cached keys than window queries
  require_error([&] { snapkv{}.check(in); }, {"6 queries", "only 5 keys"});
  knorm{}.check(in);  // needs no queries
}

TEST_CASE("run-time dispatch by name", "[policies]") {
  policy_config cfg;
  cfg.n_sink = 3;
  cfg.n_recent = 5;
  for (const char* name : policy_names) {
    INFO(name);
    const std::string got = visit_policy(name, cfg, [](const auto& p) {
      CHECK(p.n_sink == 3);
      CHECK(p.n_recent == 5);
      return std::string(std::decay_t<decltype(p)>::name);
    });
    CHECK(got == name);
  }
  CHECK(policy_from_name("h2o") == policy_id::h2o);
  require_error([] { policy_from_name("snapKV"); }, {"unknown policy \"snapKV\"", "snapkv, h2o, tova, knorm, streaming, random"});
}
