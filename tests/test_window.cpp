// Window scoring kernel: hand-computed cases, a double-precision reference on random inputs for
// every ISA path and key type, causal masks (both conventions), GQA mean/max, NaN, errors.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"
#include "depthkv/score/window.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::check_close;
using depthkv_test::require_error;
using depthkv_test::rng;

namespace {

// Naive double reference. keys: already-rounded element values as double, [n][d].
// Query i sees keys j with visible(i, j).
template <class Vis>
std::vector<double> reference(const std::vector<float>& q, std::size_t H, std::size_t w, std::size_t d,
                              std::size_t n_kv, std::size_t kv_head, const std::vector<double>& keys, std::size_t n,
                              double scale, bool use_max, Vis visible) {
  const std::size_t g = H / n_kv;
  std::vector<double> out(n, use_max ? -1.0 : 0.0);
  for (std::size_t hh = 0; hh < g; ++hh) {
    const std::size_t h = kv_head * g + hh;
    std::vector<double> hs(n, 0.0);
    for (std::size_t i = 0; i < w; ++i) {
      std::vector<double> lg(n, 0.0);
      double m = -std::numeric_limits<double>::infinity();
      bool any = false;
      for (std::size_t j = 0; j < n; ++j) {
        if (!visible(i, j)) continue;
        double s = 0;
        for (std::size_t t = 0; t < d; ++t) s += double(q[(h * w + i) * d + t]) * keys[j * d + t];
        lg[j] = s * scale;
        m = std::max(m, lg[j]);
        any = true;
      }
      if (!any) continue;
      double z = 0;
      for (std::size_t j = 0; j < n; ++j)
        if (visible(i, j)) z += std::exp(lg[j] - m);
      for (std::size_t j = 0; j < n; ++j)
        if (visible(i, j)) hs[j] += std::exp(lg[j] - m) / z;
    }
    for (std::size_t j = 0; j < n; ++j) out[j] = use_max ? std::max(out[j], hs[j]) : out[j] + hs[j] / double(g);
  }
  return out;
}


template <class T>
struct random_case {
  std::size_t H, n_kv, w, d, n;
  std::vector<float> q;
  std::vector<T> k;          // [n][stride]
  std::vector<double> kd;    // rounded values [n][d]
  std::size_t stride;
  random_case(std::size_t H_, std::size_t n_kv_, std::size_t w_, std::size_t d_, std::size_t n_, float qscale = 1.f,
              std::size_t pad = 0)
      : H(H_), n_kv(n_kv_), w(w_), d(d_), n(n_), q(H_ * w_ * d_), k(n_ * (d_ + pad)), kd(n_ * d_), stride(d_ + pad) {
    std::normal_distribution<float> nd;
    for (auto& x : q) x = nd(rng()) * qscale;
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t t = 0; t < stride; ++t) {
        k[j * stride + t] = T(nd(rng()));
        if (t < d) kd[j * d + t] = double(static_cast<float>(k[j * stride + t]));
      }
  }
  rows_view<const T> keys() const { return {k.data(), n, d, static_cast<std::ptrdiff_t>(stride)}; }
  window_queries queries() const { return window_queries::dense(q.data(), kv_shape(heads{H}, tokens{w}, dim{d})); }
};

}  // namespace

TEST_CASE("window_scores: hand-computed single query", "[window]") {
  // d = 2, q = (1, 0), keys x = 0, 1, 2 along the first axis, scale 1: logits 0, 1, 2.
  const std::vector<float> q{1.f, 0.f};
  const std::vector<float> k{0.f, 5.f, 1.f, -3.f, 2.f, 0.5f};
  const double z = 1 + std::exp(1.0) + std::exp(2.0);
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(3);
    window_options o;
    o.scale = 1.f;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{2})), 1, 0, rows_view<const float>{k.data(), 3, 2, 2}, {}, out,
                  ws, o);
    CHECK(out[0] == Approx(1 / z).epsilon(1e-6));
    CHECK(out[1] == Approx(std::exp(1.0) / z).epsilon(1e-6));
    CHECK(out[2] == Approx(std::exp(2.0) / z).epsilon(1e-6));
  }
}

TEST_CASE("window_scores: causal window of two queries (last keys are the window)", "[window]") {
  // n = 3, w = 2: query 0 is key 1 and sees keys {0, 1}; query 1 is key 2 and sees {0, 1, 2}.
  // All logits 0 (q = 0): query 0 spreads 1/2, query 1 spreads 1/3.
  const std::vector<float> q(2 * 4, 0.f);
  std::vector<float> k(3 * 4, 1.f);
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(3);
    window_options o;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{2}, dim{4})), 1, 0, rows_view<const float>{k.data(), 3, 4, 4}, {}, out,
                  ws, o);
    CHECK(out[0] == Approx(0.5 + 1.0 / 3).epsilon(1e-6));
    CHECK(out[1] == Approx(0.5 + 1.0 / 3).epsilon(1e-6));
    CHECK(out[2] == Approx(1.0 / 3).epsilon(1e-6));
  }
}

TEMPLATE_TEST_CASE("window_scores: every path matches the double reference", "[window]", float, f16, bf16) {
  struct shape {
    std::size_t H, n_kv, w, d, n, pad;
  };
  const shape shapes[] = {{1, 1, 1, 1, 1, 0},    {1, 1, 3, 5, 7, 0},     {4, 2, 8, 64, 131, 0},
                          {8, 2, 16, 128, 301, 0}, {2, 1, 33, 24, 97, 3}, {4, 4, 64, 130, 200, 0},
                          {6, 2, 17, 16, 40, 0},  {32, 8, 2, 32, 60, 0},
                          // 40 rows: a 32- and an 8-row tile share each key block (f16/bf16
                          // converted once per block; single-tile shapes convert per micro-tile)
                          {2, 1, 20, 48, 250, 2}};
  for (const shape& s : shapes) {
    random_case<TestType> c(s.H, s.n_kv, s.w, s.d, s.n, 1.f, s.pad);
    for (bool use_max : {false, true}) {
      const std::size_t kvh = s.n_kv - 1;
      const auto ref = reference(c.q, s.H, s.w, s.d, s.n_kv, kvh, c.kd, s.n, 1.0 / std::sqrt(double(s.d)), use_max,
                                 [&](std::size_t i, std::size_t j) { return j <= s.n - s.w + i; });
      for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
        INFO("shape H" << s.H << " kv" << s.n_kv << " w" << s.w << " d" << s.d << " n" << s.n << " max " << use_max
                       << " path " << isa_name(p) << " " << element_name<TestType>());
        window_scratch ws;
        std::vector<float> out(s.n + 1, -7.f);
        window_options o;
        o.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
        window_scores(c.queries(), s.n_kv, kvh, c.keys(), {}, out, ws, o);
        check_close(out, ref);
        CHECK(out[s.n] == -7.f);  // nothing written past n
      }
    }
  }
}

TEST_CASE("window_scores: sharp softmax (large logits) stays within 1e-5", "[window]") {
  random_case<float> c(4, 1, 16, 64, 257, 4.f);  // logits ~ N(0, 16): weights span many decades
  const auto ref = reference(c.q, 4, 16, 64, 1, 0, c.kd, 257, 1.0 / 8.0, false,
                             [&](std::size_t i, std::size_t j) { return j <= 257 - 16 + i; });
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(257);
    window_options o;
    window_scores(c.queries(), 1, 0, c.keys(), {}, out, ws, o);
    for (std::size_t j = 0; j < 257; ++j) {
      INFO("j " << j << " got " << out[j] << " ref " << ref[j]);
      // below 1e-30 f32 exp2 underflows / denormalises differently; such scores never matter
      if (ref[j] > 1e-30) REQUIRE(std::abs(out[j] - ref[j]) <= 2e-5 * ref[j]);
      else REQUIRE(out[j] <= 1e-29f);
    }
  }
}

TEST_CASE("window_scores: explicit positions mask (window not cached, gaps)", "[window]") {
  // Keys at positions 0, 3, 4, 9, ... ; queries at 5, 9, 20: query i sees keys with pos <= qpos[i].
  const std::size_t n = 50, w = 3, d = 16;
  random_case<float> c(2, 1, w, d, n);
  std::vector<pos_t> kpos(n);
  for (std::size_t j = 0; j < n; ++j) kpos[j] = pos_t(j * 3 + (j % 3));
  std::vector<pos_t> qpos{-1, 9, 40};  // the first query sees no key at all
  const auto ref = reference(c.q, 2, w, d, 1, 0, c.kd, n, 0.25, false,
                             [&](std::size_t i, std::size_t j) { return kpos[j] <= qpos[i]; });
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(n);
    window_options o;
    o.query_positions = qpos;
    window_scores(c.queries(), 1, 0, c.keys(), kpos, out, ws, o);
    check_close(out, ref);
    double sum = 0;
    for (float x : out) sum += x;
    CHECK(sum == Approx(2.0).epsilon(1e-5));  // two queries see keys, each spreads mass 1
  }
}

TEST_CASE("window_scores: GQA mean and max over the group's heads", "[window]") {
  // Two query heads share one kv head; head 0 attends only to key 0, head 1 only to key 2.
  const std::size_t d = 4;
  std::vector<float> k{1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
  std::vector<float> q{60, 0, 0, 0, 0, 0, 60, 0};  // [2 heads][w=1][4]
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(3);
    window_options o;
    o.scale = 1.f;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{2}, tokens{1}, dim{d})), 1, 0, rows_view<const float>{k.data(), 3, d, 4}, {}, out,
                  ws, o);
    CHECK(out[0] == Approx(0.5).margin(1e-6));
    CHECK(out[1] == Approx(0.0).margin(1e-6));
    CHECK(out[2] == Approx(0.5).margin(1e-6));
    o.reduce = gqa_reduce::max;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{2}, tokens{1}, dim{d})), 1, 0, rows_view<const float>{k.data(), 3, d, 4}, {}, out,
                  ws, o);
    CHECK(out[0] == Approx(1.0).margin(1e-6));
    CHECK(out[2] == Approx(1.0).margin(1e-6));
  }
}

TEST_CASE("window_scores: token-major queries and strided (NHD) keys", "[window]") {
  const std::size_t H = 4, n_kv = 2, w = 5, d = 32, n = 70;
  random_case<float> c(H, n_kv, w, d, n);
  // Same queries laid out [w][H][d]; keys of kv head 1 inside an NHD buffer [n][2][d].
  std::vector<float> qt(H * w * d), nhd(n * n_kv * d, 99.f);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t i = 0; i < w; ++i)
      for (std::size_t t = 0; t < d; ++t) qt[(i * H + h) * d + t] = c.q[(h * w + i) * d + t];
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t t = 0; t < d; ++t) nhd[(j * n_kv + 1) * d + t] = c.k[j * d + t];
  const auto view = kv_view<const float>::nhd(nhd.data(), kv_shape(heads{n_kv}, tokens{n}, dim{d}));
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    window_scratch ws;
    std::vector<float> a(n), b(n);
    window_options o;
    window_scores(c.queries(), n_kv, 1, c.keys(), {}, a, ws, o);
    window_scores(window_queries::token_major(qt.data(), kv_shape(heads{H}, tokens{w}, dim{d})), n_kv, 1, view.head(1), {}, b, ws, o);
    for (std::size_t j = 0; j < n; ++j) REQUIRE(a[j] == b[j]);
  }
}

TEST_CASE("window_scores: SIMD paths agree with scalar on ties and NaN", "[window]") {
  const std::size_t n = 41, d = 16, w = 4;
  random_case<float> c(1, 1, w, d, n);
  // Ties: keys 3, 10 and 20 are identical, so their scores must be identical on every path.
  for (std::size_t t = 0; t < d; ++t) c.k[10 * d + t] = c.k[20 * d + t] = c.k[3 * d + t];
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    window_scratch ws;
    std::vector<float> out(n);
    window_options o;
    window_scores(c.queries(), 1, 0, c.keys(), {}, out, ws, o);
    CHECK(out[3] == out[10]);
    CHECK(out[10] == out[20]);
  }
  c.k[7 * d + 2] = std::numeric_limits<float>::quiet_NaN();
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(n);
    window_options o;
    window_scores(c.queries(), 1, 0, c.keys(), {}, out, ws, o);
    for (std::size_t j = 0; j < n; ++j) REQUIRE(std::isnan(out[j]));  // every query sees key 7
  }
}

TEST_CASE("window_scores: scratch is reused without growing", "[window]") {
  random_case<f16> c(8, 2, 16, 64, 500);
  window_scratch ws;
  std::vector<float> out(500);
  window_scores(c.queries(), 2, 0, c.keys(), {}, out, ws);
  const std::size_t bytes = ws.bytes_reserved();
  CHECK(bytes > 0);
  window_scores(c.queries(), 2, 1, c.keys(), {}, out, ws);
  window_scores(c.queries(), 2, 0, rows_view<const f16>{c.k.data(), 100, 64, 64}, {}, out, ws);
  CHECK(ws.bytes_reserved() == bytes);
}

TEST_CASE("window_scores: invalid input throws and writes nothing", "[window]") {
  random_case<float> c(4, 2, 4, 16, 10);
  window_scratch ws;
  std::vector<float> out(10, 3.f);
  const auto q = c.queries();
  const auto k = c.keys();
  require_error([&] { window_scores(q, 3, 0, k, {}, out, ws); }, {"n_q_heads (4)", "n_kv_heads (3)"});
  require_error([&] { window_scores(q, 2, 2, k, {}, out, ws); }, {"kv_head 2"});
  require_error([&] { window_scores(q, 2, 0, rows_view<const float>{c.k.data(), 10, 8, 16}, {}, out, ws); },
                {"head_dim 16", "keys have 8"});
  require_error([&] { window_scores(q, 2, 0, rows_view<const float>{c.k.data(), 3, 16, 16}, {}, out, ws); },
                {"4 queries", "only 3 keys"});
  std::vector<float> small(9);
  require_error([&] { window_scores(q, 2, 0, k, {}, small, ws); }, {"out has 9"});
  window_options o;
  std::vector<pos_t> qpos{1, 2, 2, 3};
  o.query_positions = qpos;
  std::vector<pos_t> kpos(10);
  for (std::size_t j = 0; j < 10; ++j) kpos[j] = pos_t(j);
  require_error([&] { window_scores(q, 2, 0, k, kpos, out, ws, o); }, {"query_positions must be strictly ascending"});
  qpos = {1, 2, 3, 4};
  require_error([&] { window_scores(q, 2, 0, k, span<const pos_t>(kpos.data(), 9), out, ws, o); },
                {"key_positions has 9"});
  o.scale = -1.f;
  require_error([&] { window_scores(q, 2, 0, k, kpos, out, ws, o); }, {"scale"});
  o.scale = 0.f;  // not a "default" value any more: unset scale is 1/sqrt(head_dim)
  require_error([&] { window_scores(q, 2, 0, k, kpos, out, ws, o); }, {"scale must be finite and > 0"});
  require_error([&] { window_scores(window_queries{}, 2, 0, k, {}, out, ws); }, {"queries are empty"});
  for (float x : out) CHECK(x == 3.f);
}

TEST_CASE("window_scores: portable kernel's bit conversions and exp2 are exact / accurate", "[window]") {
  // Every binary16 and bfloat16 pattern converts exactly (subnormals, signed zeros, inf, NaN).
  for (std::uint32_t b = 0; b < 0x10000u; ++b) {
    const auto h = static_cast<std::uint16_t>(b);
    const float want16 = static_cast<float>(Eigen::numext::bit_cast<f16>(h));
    const float got16 = detail::scalar::half_bits_to_float(h);
    const float want_b = static_cast<float>(Eigen::numext::bit_cast<bf16>(h));
    const float got_b = detail::scalar::bf16_bits_to_float(h);
    INFO("bits " << b);
    if (std::isnan(want16)) REQUIRE(std::isnan(got16));
    else REQUIRE(detail::scalar::bits_of(got16) == detail::scalar::bits_of(want16));
    if (std::isnan(want_b)) REQUIRE(std::isnan(got_b));
    else REQUIRE(detail::scalar::bits_of(got_b) == detail::scalar::bits_of(want_b));
  }
  // 2^x on [-126, 0] within 3e-7 relative; below the float range 0; -inf 0; NaN NaN.
  double worst = 0;
  for (float x = -126.f; x <= 0.f; x += 0.00390625f * 3.1f) {
    const double want = std::exp2(double(x));
    worst = std::max(worst, std::abs(double(detail::scalar::exp2_neg(x)) - want) / want);
  }
  CHECK(worst < 3e-7);
  CHECK(detail::scalar::exp2_neg(0.f) == Approx(1.0).epsilon(3e-7));
  CHECK(detail::scalar::exp2_neg(-127.5f) == 0.f);
  CHECK(detail::scalar::exp2_neg(-1e30f) == 0.f);
  CHECK(detail::scalar::exp2_neg(-std::numeric_limits<float>::infinity()) == 0.f);
  CHECK(std::isnan(detail::scalar::exp2_neg(std::numeric_limits<float>::quiet_NaN())));
}

TEMPLATE_TEST_CASE("window_scores: positions mask with GQA max, heads not a multiple of the tile", "[window]", float,
                   f16, bf16) {
  // 3 query heads of 11 queries (tiles of the portable path straddle heads unless reducing
  // with max); the first queries see few or no keys, so some tiles stop early.
  const std::size_t H = 3, w = 11, d = 20, n = 90;
  random_case<TestType> c(H, 1, w, d, n, 2.f);
  std::vector<pos_t> kpos(n);
  for (std::size_t j = 0; j < n; ++j) kpos[j] = pos_t(2 * j);
  const std::vector<pos_t> qpos{-1, 3, 10, 30, 50, 60, 100, 120, 150, 170, 178};
  for (bool use_max : {false, true}) {
    const auto ref = reference(c.q, H, w, d, 1, 0, c.kd, n, 1.0 / std::sqrt(double(d)), use_max,
                               [&](std::size_t i, std::size_t j) { return kpos[j] <= qpos[i]; });
    for (isa p : depthkv_test::supported_paths()) {
      const scoped_isa use(p);
      INFO("path " << isa_name(p) << " max " << use_max << " " << element_name<TestType>());
      window_scratch ws;
      std::vector<float> out(n);
      window_options o;
      o.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
      o.query_positions = qpos;
      window_scores(c.queries(), 1, 0, c.keys(), kpos, out, ws, o);
      check_close(out, ref);
    }
  }
  // A NaN key poisons the rows that see it; the last query sees every key, so every score is
  // NaN, with either reduction.
  c.k[2 * c.stride + 1] = TestType(std::numeric_limits<float>::quiet_NaN());
  for (bool use_max : {false, true})
    for (isa p : depthkv_test::supported_paths()) {
      const scoped_isa use(p);
      INFO("path " << isa_name(p) << " max " << use_max);
      window_scratch ws;
      std::vector<float> out(n);
      window_options o;
      o.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
      o.query_positions = qpos;
      window_scores(c.queries(), 1, 0, c.keys(), kpos, out, ws, o);
      for (std::size_t j = 0; j < n; ++j) REQUIRE(std::isnan(out[j]));
    }
}
