// Window scoring with a sliding window and a logit soft-cap (issue #17, item 2): every ISA path
// against an independent double-precision reference on random shapes and key types, the scalar
// path, hand-computed cases, the window convention (p - k < W, by position), adversarial input
// (ties, NaN, +-inf, tiny n, queries that see nothing), the vector tanh against std::tanh, the
// snapkv / tova / visit_policy pass-through, and the argument checks.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "catch.hpp"
#include "depthkv/score/policies.hpp"
#include "depthkv/score/window.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::check_close;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;

namespace {

constexpr double inf_d = std::numeric_limits<double>::infinity();

/// What the reference needs to know about which keys a query sees and how logits are capped.
struct ref_knobs {
  double scale = 1.0;
  std::optional<std::int64_t> window{};  ///< sliding window W (positions)
  std::optional<double> cap{};           ///< soft-cap
  bool use_max = false;
};

/// Naive double reference, written from the definition: query i (position qp[i]) of head h sees
/// key j (position kp[j]) iff kp[j] <= qp[i] and qp[i] - kp[j] < W; logit = cap(scale * q.k)
/// with cap(x) = c tanh(x / c); softmax over the keys it sees; summed over the queries; mean or
/// max over the group's heads. q: [H][w][d] floats, keys: [n][d] doubles (rounded values).
std::vector<double> reference(const std::vector<float>& q, std::size_t H, std::size_t w, std::size_t d,
                              std::size_t n_kv, std::size_t kv_head, const std::vector<double>& keys,
                              const std::vector<std::int64_t>& kp, const std::vector<std::int64_t>& qp,
                              const ref_knobs& r) {
  const std::size_t n = kp.size(), g = H / n_kv;
  std::vector<double> out(n, 0.0);
  for (std::size_t hh = 0; hh < g; ++hh) {
    const std::size_t h = kv_head * g + hh;
    std::vector<double> hs(n, 0.0);
    for (std::size_t i = 0; i < w; ++i) {
      std::vector<double> lg(n, -inf_d);
      std::vector<bool> vis(n, false);
      double m = -inf_d;
      bool any = false;
      for (std::size_t j = 0; j < n; ++j) {
        vis[j] = kp[j] <= qp[i] && (!r.window || qp[i] - kp[j] < *r.window);
        if (!vis[j]) continue;
        double s = 0;
        for (std::size_t t = 0; t < d; ++t) s += double(q[(h * w + i) * d + t]) * keys[j * d + t];
        s *= r.scale;
        if (r.cap) s = *r.cap * std::tanh(s / *r.cap);
        lg[j] = s;
        m = std::max(m, s);
        any = true;
      }
      if (!any) continue;
      double z = 0;
      for (std::size_t j = 0; j < n; ++j)
        if (vis[j]) z += std::exp(lg[j] - m);
      for (std::size_t j = 0; j < n; ++j)
        if (vis[j]) hs[j] += std::exp(lg[j] - m) / z;
    }
    for (std::size_t j = 0; j < n; ++j) out[j] = r.use_max ? std::max(out[j], hs[j]) : out[j] + hs[j] / double(g);
  }
  return out;
}


/// Random queries [H][w][d] (N(0, qscale^2)) and keys [n][stride] of type T.
template <class T>
struct random_case {
  std::size_t H, n_kv, w, d, n, stride;
  std::vector<float> q;
  std::vector<T> k;
  std::vector<double> kd;  // rounded key values [n][d]
  random_case(std::size_t H_, std::size_t n_kv_, std::size_t w_, std::size_t d_, std::size_t n_, float qscale,
              std::size_t pad = 0)
      : H(H_), n_kv(n_kv_), w(w_), d(d_), n(n_), stride(d_ + pad), q(H_ * w_ * d_), k(n_ * (d_ + pad)), kd(n_ * d_) {
    std::normal_distribution<float> nd;
    for (auto& x : q) x = nd(rng()) * qscale;
    for (std::size_t j = 0; j < n; ++j)
      for (std::size_t t = 0; t < stride; ++t) set_key(j, t, nd(rng()));
  }
  void set_key(std::size_t j, std::size_t t, float x) {
    k[j * stride + t] = T(x);
    if (t < d) kd[j * d + t] = double(static_cast<float>(k[j * stride + t]));
  }
  rows_view<const T> keys() const { return {k.data(), n, d, static_cast<std::ptrdiff_t>(stride)}; }
  window_queries queries() const { return window_queries::dense(q.data(), kv_shape(heads{H}, tokens{w}, dim{d})); }
};

std::vector<std::int64_t> widen(const std::vector<pos_t>& p) { return {p.begin(), p.end()}; }

// Positions of the default convention (the last w keys are the window): rows, or key positions.
std::vector<std::int64_t> tail_positions(const std::vector<std::int64_t>& kp, std::size_t w) {
  return {kp.end() - static_cast<std::ptrdiff_t>(w), kp.end()};
}

std::vector<std::int64_t> iota64(std::size_t n) {
  std::vector<std::int64_t> v(n);
  for (std::size_t j = 0; j < n; ++j) v[j] = std::int64_t(j);
  return v;
}

// Runs window_scores on path p into a fresh n + 1 buffer; checks the sentinel past n.
template <class T>
std::vector<float> run_path(isa p, const random_case<T>& c, std::size_t kv_head, span<const pos_t> kpos,
                            const window_options& o) {
  const scoped_isa use(p);
  window_scratch ws;
  std::vector<float> out(c.n + 1, -7.f);
  window_scores(c.queries(), c.n_kv, kv_head, c.keys(), kpos, out, ws, o);
  CHECK(out[c.n] == -7.f);
  out.pop_back();
  return out;
}

}  // namespace

TEST_CASE("window_scores: sliding window by hand (p - k < W)", "[window][hybrid]") {
  // d = 2, q = (1, 0), keys along the first axis: logits 0, 1, 2, 3 (scale 1). The query is the
  // last key (position 3); W = 2 lets it see positions 2 and 3 only.
  const std::vector<float> q{1.f, 0.f};
  const std::vector<float> k{0.f, 5.f, 1.f, -3.f, 2.f, 0.5f, 3.f, 1.f};
  const double z = std::exp(2.0) + std::exp(3.0);
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(4, -1.f);
    window_options o;
    o.scale = 1.f;
    o.sliding_window = 2;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{2})), 1, 0,
                  rows_view<const float>{k.data(), 4, 2, 2}, {}, out, ws, o);
    CHECK(out[0] == 0.f);
    CHECK(out[1] == 0.f);
    CHECK(out[2] == Approx(std::exp(2.0) / z).epsilon(1e-6));
    CHECK(out[3] == Approx(std::exp(3.0) / z).epsilon(1e-6));
    // The same by explicit positions: the query at 13 sees keys at 12 and 13 but not 11 (13 - 11 = W).
    const std::vector<pos_t> kpos{10, 11, 12, 13}, qpos{13};
    o.query_positions = qpos;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{2})), 1, 0,
                  rows_view<const float>{k.data(), 4, 2, 2}, kpos, out, ws, o);
    CHECK(out[1] == 0.f);
    CHECK(out[2] == Approx(std::exp(2.0) / z).epsilon(1e-6));
    CHECK(out[3] == Approx(std::exp(3.0) / z).epsilon(1e-6));
  }
}

TEST_CASE("window_scores: W = 1 makes every query see only itself", "[window][hybrid]") {
  // Default convention (the last w keys are the window's queries): each window row scores 1 on
  // every head, every older key 0, whatever the logits.
  random_case<float> c(4, 2, 5, 24, 30, 3.f);
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    window_options o;
    o.sliding_window = 1;
    for (bool use_max : {false, true}) {
      o.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
      const auto out = run_path(p, c, 1, {}, o);
      for (std::size_t j = 0; j < c.n; ++j) REQUIRE(out[j] == (j >= c.n - c.w ? 1.f : 0.f));
    }
  }
}

TEST_CASE("window_scores: soft-cap by hand (c tanh(x / c) before the softmax)", "[window][hybrid]") {
  // Logits 0, 1, 2, 40 with cap 2: 0, 2 tanh(1/2), 2 tanh(1), 2 tanh(20) (~2).
  const std::vector<float> q{1.f, 0.f};
  const std::vector<float> k{0.f, 5.f, 1.f, -3.f, 2.f, 0.5f, 40.f, 1.f};
  double e[4], z = 0;
  const double lg[4] = {0.0, 1.0, 2.0, 40.0};
  for (int j = 0; j < 4; ++j) z += e[j] = std::exp(2.0 * std::tanh(lg[j] / 2.0));
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    window_scratch ws;
    std::vector<float> out(4);
    window_options o;
    o.scale = 1.f;
    o.soft_cap = 2.f;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{2})), 1, 0,
                  rows_view<const float>{k.data(), 4, 2, 2}, {}, out, ws, o);
    for (int j = 0; j < 4; ++j) CHECK(out[j] == Approx(e[j] / z).epsilon(1e-6));
    // The cap applies to the scaled logit: scale 2 with cap 4 is cap 2 of logits x, doubled.
    o.scale = 2.f;
    o.soft_cap = 4.f;
    window_scores(window_queries::dense(q.data(), kv_shape(heads{1}, tokens{1}, dim{2})), 1, 0,
                  rows_view<const float>{k.data(), 4, 2, 2}, {}, out, ws, o);
    double z2 = 0, e2[4];
    for (int j = 0; j < 4; ++j) z2 += e2[j] = std::exp(4.0 * std::tanh(2.0 * lg[j] / 4.0));
    for (int j = 0; j < 4; ++j) CHECK(out[j] == Approx(e2[j] / z2).epsilon(1e-6));
  }
}

TEMPLATE_TEST_CASE("window_scores: sliding window and soft-cap vs fp64 reference on random shapes", "[window][hybrid]",
                   float, f16, bf16) {
  // Random shapes (tiny n, odd head_dim, GQA groups that straddle tiles, strided keys), random W
  // (1 .. beyond the cache), caps from sharp to nearly off, both causal conventions (the window
  // as the last keys, by row or by gapped key positions; explicit query positions), both reductions.
  const float caps[] = {0.5f, 2.f, 5.f, 30.f, 50.f};
  for (int rep = 0; rep < 40; ++rep) {
    const std::size_t n_kv = uniform_int(1, 3), g = uniform_int(1, 5), H = n_kv * g;
    const std::size_t w = uniform_int(1, rep % 4 == 0 ? 3 : 40), d = uniform_int(1, 140);
    const std::size_t n = w + uniform_int(0, rep % 3 == 0 ? 8 : 400), pad = uniform_int(0, 3);
    const float qscale = rep % 2 == 0 ? 1.f : 2.f;  // sharper softmax on odd reps
    random_case<TestType> c(H, n_kv, w, d, n, qscale, pad);
    const int mode = rep % 3;  // 0: last keys by row, 1: last keys with gapped positions, 2: query positions
    std::vector<pos_t> kpos(n);
    pos_t at = pos_t(uniform_int(0, 100));
    for (std::size_t j = 0; j < n; ++j) {
      kpos[j] = at;
      at += pos_t(mode == 0 ? 1 : uniform_int(1, 4));
    }
    std::vector<pos_t> qpos;
    if (mode == 2) {  // ascending, some before every key, the last beyond the cache
      pos_t p = kpos[0] - pos_t(uniform_int(0, 3));
      for (std::size_t i = 0; i < w; ++i) {
        p += pos_t(uniform_int(1, 2 * (std::size_t(kpos[n - 1] - kpos[0]) + 1) / w + 1));
        qpos.push_back(p);
      }
    }
    const std::size_t span_pos = std::size_t(kpos[n - 1] - kpos[0]) + 1;
    std::optional<std::size_t> W;
    if (rep % 5 != 4) W = uniform_int(1, span_pos + 3);
    std::optional<float> cap;
    if (rep % 4 != 3) cap = caps[uniform_int(0, 4)];
    if (!W && !cap) W = 1 + span_pos / 3;
    const std::size_t kvh = uniform_int(0, n_kv - 1);
    const std::vector<std::int64_t> kp = mode == 0 ? iota64(n) : widen(kpos);
    const std::vector<std::int64_t> qp = mode == 2 ? widen(qpos) : tail_positions(kp, w);
    for (bool use_max : {false, true}) {
      ref_knobs r;
      r.scale = 1.0 / std::sqrt(double(float(d)));
      if (W) r.window = std::int64_t(*W);
      if (cap) r.cap = double(*cap);
      r.use_max = use_max;
      const auto ref = reference(c.q, H, w, d, n_kv, kvh, c.kd, kp, qp, r);
      window_options o;
      o.reduce = use_max ? gqa_reduce::max : gqa_reduce::mean;
      o.sliding_window = W;
      o.soft_cap = cap;
      if (mode == 2) o.query_positions = qpos;
      const span<const pos_t> kspan = mode == 0 ? span<const pos_t>{} : span<const pos_t>(kpos);
      std::vector<float> scalar_out;
      for (isa p : depthkv_test::supported_paths()) {
        INFO("rep " << rep << " H" << H << " kv" << n_kv << " w" << w << " d" << d << " n" << n << " pad " << pad
                    << " mode " << mode << " W " << (W ? long(*W) : -1L) << " cap " << cap.value_or(0.f) << " max "
                    << use_max << " path " << isa_name(p) << " " << element_name<TestType>());
        const auto out = run_path(p, c, kvh, kspan, o);
        check_close(out, ref);
        for (std::size_t j = 0; j < n; ++j)
          if (ref[j] == 0.0) REQUIRE(out[j] == 0.f);  // keys no query sees score exactly 0
        if (p == isa::scalar) scalar_out = out;
        else
          for (std::size_t j = 0; j < n; ++j)  // against the portable path: same within float noise
            REQUIRE(std::abs(out[j] - scalar_out[j]) <= 2e-5f * std::abs(scalar_out[j]) + 1e-30f);
      }
    }
  }
}

TEST_CASE("window_scores: long cache, short window (keys outside every window skipped)", "[window][hybrid]") {
  // n = 3000, w = 16, W = 200: only the last 215 keys matter; every other key is NaN, which a
  // kernel that read it (or failed to mask it) would turn into NaN scores.
  const std::size_t n = 3000, w = 16, d = 64;
  const std::size_t W = 200;
  random_case<f16> c(4, 1, w, d, n, 1.f);
  const std::size_t lo = n - w + 1 - W;  // the first key the first window query sees
  for (std::size_t j = 0; j < lo; ++j) c.set_key(j, j % d, std::numeric_limits<float>::quiet_NaN());
  for (std::size_t j = 0; j < lo; ++j) c.kd[j * d + j % d] = 0.0;  // never seen by the reference either
  ref_knobs r;
  r.scale = 0.125;
  r.window = std::int64_t(W);
  r.cap = 30.0;
  const auto kp = iota64(n);
  const auto ref = reference(c.q, 4, w, d, 1, 0, c.kd, kp, tail_positions(kp, w), r);
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    window_options o;
    o.sliding_window = W;
    o.soft_cap = 30.f;
    const auto out = run_path(p, c, 0, {}, o);
    check_close(out, ref);
    for (std::size_t j = 0; j < lo; ++j) REQUIRE(out[j] == 0.f);
    double sum = 0;
    for (float x : out) sum += x;
    CHECK(sum == Approx(double(w)).epsilon(1e-5));  // every query sees keys, spreads mass 1
  }
}

TEST_CASE("window_scores: sliding window over gapped positions, queries that see nothing", "[window][hybrid]") {
  // Keys at 0, 10, 20, ...; W = 5: the query at 15 sees no key (10 is 5 away), the one at 21
  // sees only key 20, the one at -3 nothing; the last query is the last key.
  const std::size_t n = 12, d = 8;
  random_case<float> c(2, 1, 4, d, n, 2.f);
  std::vector<pos_t> kpos(n);
  for (std::size_t j = 0; j < n; ++j) kpos[j] = pos_t(10 * j);
  const std::vector<pos_t> qpos{-3, 15, 21, 110};
  ref_knobs r;
  r.scale = 1.0 / std::sqrt(double(float(d)));
  r.window = 5;
  for (bool capped : {false, true}) {
    if (capped) r.cap = 1.5;
    const auto ref = reference(c.q, 2, 4, d, 1, 0, c.kd, widen(kpos), widen(qpos), r);
    for (isa p : depthkv_test::supported_paths()) {
      INFO("path " << isa_name(p) << " capped " << capped);
      window_options o;
      o.sliding_window = 5;
      if (capped) o.soft_cap = 1.5f;
      o.query_positions = qpos;
      const auto out = run_path(p, c, 0, kpos, o);
      check_close(out, ref);
      CHECK(out[2] == Approx(1.0).epsilon(1e-6));   // all of query 21's mass
      CHECK(out[11] == Approx(1.0).epsilon(1e-6));  // all of query 110's mass
      for (std::size_t j : {0, 1, 3, 4, 5, 6, 7, 8, 9, 10}) REQUIRE(out[j] == 0.f);
    }
  }
  // No query sees a key at all: every score 0.
  const std::vector<pos_t> none{-3, 15, 25, 37};
  for (isa p : depthkv_test::supported_paths()) {
    window_options o;
    o.sliding_window = 5;
    o.query_positions = none;
    const auto out = run_path(p, c, 0, kpos, o);
    for (float x : out) REQUIRE(x == 0.f);
  }
}

TEST_CASE("window_scores: default window by key positions when given, by rows otherwise", "[window][hybrid]") {
  // A cache pruned before (positions with gaps): with W = 6 the last key (position 40) sees
  // positions 35..40, i.e. rows with positions 36 and 40 only; by rows it would see the last 6 rows.
  const std::size_t n = 10, d = 16;
  random_case<float> c(1, 1, 1, d, n, 1.f);
  const std::vector<pos_t> kpos{0, 3, 8, 12, 20, 25, 30, 33, 36, 40};
  ref_knobs r;
  r.scale = 0.25;
  r.window = 6;
  const auto by_pos = reference(c.q, 1, 1, d, 1, 0, c.kd, widen(kpos), {40}, r);
  const auto by_row = reference(c.q, 1, 1, d, 1, 0, c.kd, iota64(n), {9}, r);
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    window_options o;
    o.scale = 0.25f;
    o.sliding_window = 6;
    const auto a = run_path(p, c, 0, kpos, o);
    check_close(a, by_pos);
    for (std::size_t j = 0; j < 8; ++j) REQUIRE(a[j] == 0.f);
    const auto b = run_path(p, c, 0, {}, o);
    check_close(b, by_row);
    for (std::size_t j = 0; j < 4; ++j) REQUIRE(b[j] == 0.f);
    CHECK(b[4] > 0.f);
  }
}

TEST_CASE("window_scores: a window covering everything is bit-identical to none", "[window][hybrid]") {
  random_case<bf16> c(8, 2, 16, 64, 333, 1.f);
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    window_options o;
    const auto plain = run_path(p, c, 1, {}, o);
    for (std::size_t W : {std::size_t{333}, std::size_t{100000}, std::numeric_limits<std::size_t>::max()}) {
      o.sliding_window = W;
      const auto wide = run_path(p, c, 1, {}, o);
      for (std::size_t j = 0; j < c.n; ++j) REQUIRE(wide[j] == plain[j]);
    }
  }
}

TEST_CASE("window_scores: soft-capped ties, NaN and +-inf on every path", "[window][hybrid]") {
  // n = 70, w = 6, W = 20 by rows: query row r sees rows r - 19 .. r, so rows 50 .. 64 are seen
  // by all six queries (rows 64 .. 69), rows 45 .. 49 by some, rows < 45 by none.
  const std::size_t n = 70, d = 16, w = 6;
  random_case<float> c(2, 1, w, d, n, 2.f);
  for (auto& x : c.q) x = std::abs(x) + 0.1f;  // positive queries: an inf key element gives an inf logit
  // Ties: keys 51, 56, 63 identical and seen by the same queries: equal scores on every path.
  for (std::size_t t = 0; t < d; ++t) {
    c.set_key(56, t, float(c.kd[51 * d + t]));
    c.set_key(63, t, float(c.kd[51 * d + t]));
  }
  window_options o;
  o.sliding_window = 20;
  o.soft_cap = 3.f;
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    const auto out = run_path(p, c, 0, {}, o);
    CHECK(out[51] == out[56]);
    CHECK(out[56] == out[63]);
  }
  // +inf and -inf key elements: logits +-inf, capped to +-3 (finite scores, as in the model).
  c.set_key(60, 3, std::numeric_limits<float>::infinity());
  c.set_key(58, 5, -std::numeric_limits<float>::infinity());
  ref_knobs r;
  r.scale = 0.25;
  r.window = 20;
  r.cap = 3.0;
  const auto kp = iota64(n);
  const auto ref = reference(c.q, 2, w, d, 1, 0, c.kd, kp, tail_positions(kp, w), r);
  REQUIRE(std::isfinite(ref[60]));
  REQUIRE(std::isfinite(ref[58]));
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    const auto out = run_path(p, c, 0, {}, o);
    check_close(out, ref);
    for (std::size_t j = 45; j < n; ++j)
      if (j != 60) CHECK(out[60] > out[j]);  // the +cap logit: the largest weight of every query
  }
  // NaN in a key no window query sees (key 10) changes nothing; NaN in key 55, which every query
  // sees, makes every score of the window's range NaN.
  c.set_key(10, 1, std::numeric_limits<float>::quiet_NaN());
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    check_close(run_path(p, c, 0, {}, o), ref);
  }
  c.set_key(55, 1, std::numeric_limits<float>::quiet_NaN());
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    const auto out = run_path(p, c, 0, {}, o);
    for (std::size_t j = 45; j < n; ++j) REQUIRE(std::isnan(out[j]));
    for (std::size_t j = 0; j < 45; ++j) REQUIRE(out[j] == 0.f);
  }
}

TEST_CASE("window_scores: tiny shapes with window and cap", "[window][hybrid]") {
  // n = 1 .. 3, w = 1 .. n, d = 1 .. 3, every W in 1 .. 4.
  for (std::size_t n = 1; n <= 3; ++n)
    for (std::size_t w = 1; w <= n; ++w)
      for (std::size_t d = 1; d <= 3; ++d)
        for (std::size_t W = 1; W <= 4; ++W) {
          random_case<f16> c(2, 1, w, d, n, 2.f);
          ref_knobs r;
          r.scale = 1.0 / std::sqrt(double(float(d)));
          r.window = std::int64_t(W);
          r.cap = 1.0;
          const auto kp = iota64(n);
          const auto ref = reference(c.q, 2, w, d, 1, 0, c.kd, kp, tail_positions(kp, w), r);
          for (isa p : depthkv_test::supported_paths()) {
            INFO("n " << n << " w " << w << " d " << d << " W " << W << " path " << isa_name(p));
            window_options o;
            o.sliding_window = W;
            o.soft_cap = 1.f;
            check_close(run_path(p, c, 0, {}, o), ref);
          }
        }
}

TEST_CASE("window_scores: the kernels' tanh against std::tanh", "[window][hybrid]") {
  // Every 97th float in [2^-30, 20] (~7e6 of them, both signs), and the special values. Bound:
  // 3e-7 relative on the SIMD paths (measured 2.4e-7 over every float in the range); the scalar
  // path is std::tanh itself.
  std::vector<float> x;
  const float lo = std::ldexp(1.f, -30), hi = 20.f;
  std::uint32_t b0, b1;
  std::memcpy(&b0, &lo, 4);
  std::memcpy(&b1, &hi, 4);
  for (std::uint32_t b = b0; b <= b1; b += 97) {
    float f;
    std::memcpy(&f, &b, 4);
    x.push_back(f);
    x.push_back(-f);
  }
  for (float f : {0.625f, std::nextafter(0.625f, 0.f), 9.f, 50.f, 1e30f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::denorm_min(), 1e-40f})
    for (float s : {1.f, -1.f}) x.push_back(s * f);
  x.push_back(0.f);
  x.push_back(-0.f);
  x.push_back(std::numeric_limits<float>::infinity());
  x.push_back(-std::numeric_limits<float>::infinity());
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  for (isa p : depthkv_test::supported_paths()) {
    INFO("path " << isa_name(p));
    // odd sizes: the tail of a vector
    for (std::size_t m : {x.size(), std::size_t{1}, std::size_t{7}, std::size_t{13}}) {
      std::vector<float> y(m);
      const float* xs = x.data() + (x.size() - m);
      detail::window_tanh_on(p, xs, y.data(), m);
      double worst = 0;
      std::size_t bad = 0;  // elements that break an exact property
      float first_bad = 0.f;
      for (std::size_t i = 0; i < m; ++i) {
        const float xi = xs[i], yi = y[i];
        const double want = std::tanh(double(xi));
        bool ok;
        if (std::isnan(xi)) {
          ok = std::isnan(yi);
        } else {
          ok = std::signbit(yi) == std::signbit(xi);  // odd, signed zeros kept
          if (p == isa::scalar) ok = ok && yi == std::tanh(xi);
          if (p != isa::scalar && std::abs(xi) < 1e-4f) ok = ok && yi == xi;  // exact near 0 (glibc's is not)
          if (std::abs(xi) >= 9.1f) ok = ok && std::abs(yi) == 1.f;
          if (want != 0.0) worst = std::max(worst, std::abs(double(yi) - want) / std::abs(want));
        }
        if (!ok && bad++ == 0) first_bad = xi;
      }
      INFO("m " << m << " first bad x " << first_bad << " worst relative error " << worst);
      CHECK(bad == 0);
      CHECK(worst < 3e-7);
    }
  }
}

TEST_CASE("snapkv and tova pass sliding_window and soft_cap to window_scores", "[window][hybrid][policies]") {
  const std::size_t H = 4, n_kv = 2, w = 8, d = 32, n = 120;
  random_case<float> c(H, n_kv, w, d, n * n_kv, 2.f);  // keys of both heads: [n_kv][n][d]
  std::vector<pos_t> kpos(n);
  for (std::size_t j = 0; j < n; ++j) kpos[j] = pos_t(5 + 3 * j);  // gapped: the window is by position
  const window_queries wq = c.queries();
  auto input = [&](std::size_t h) {
    head_input<float> in;
    in.kv_head = h;
    in.n_kv_heads = n_kv;
    in.keys = {c.k.data() + h * n * d, n, d, static_cast<std::ptrdiff_t>(d)};
    in.positions = kpos;
    in.queries = &wq;
    return in;
  };
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    INFO("path " << isa_name(p));
    score_scratch s;
    window_scratch ws;
    for (std::size_t h = 0; h < n_kv; ++h) {
      snapkv sk;
      sk.window = 5;
      sk.pool = pool_kind::none;
      sk.reduce = gqa_reduce::max;
      sk.scale = 0.2f;
      sk.sliding_window = 40;
      sk.soft_cap = 4.f;
      sk.check(input(h));
      std::vector<float> got(n), want(n);
      sk.score(input(h), got, s);
      window_options o;
      o.reduce = gqa_reduce::max;
      o.scale = 0.2f;
      o.sliding_window = 40;
      o.soft_cap = 4.f;
      window_scores(wq.last(5), n_kv, h, input(h).keys, kpos, want, ws, o);
      for (std::size_t j = 0; j < n; ++j) REQUIRE(got[j] == want[j]);
      // and against the reference: the last 5 queries at the last 5 key positions
      ref_knobs r;
      r.scale = 0.2;
      r.window = 40;
      r.cap = 4.0;
      r.use_max = true;
      std::vector<float> q5;  // the last 5 queries of each head, [H][5][d]
      for (std::size_t hq = 0; hq < H; ++hq)
        q5.insert(q5.end(), c.q.begin() + std::ptrdiff_t((hq * w + 3) * d), c.q.begin() + std::ptrdiff_t((hq * w + w) * d));
      std::vector<double> kd(c.kd.begin() + std::ptrdiff_t(h * n * d), c.kd.begin() + std::ptrdiff_t((h + 1) * n * d));
      const auto kp = widen(kpos);
      check_close(got, reference(q5, H, 5, d, n_kv, h, kd, kp, tail_positions(kp, 5), r));
      // query row r sees rows j with 3 (r - j) < 40, j >= r - 13; the first of the 5 is row n - 5
      for (std::size_t j = 0; j + 18 < n; ++j) REQUIRE(got[j] == 0.f);

      tova tv;
      tv.sliding_window = 7;
      tv.soft_cap = 2.f;
      tv.check(input(h));
      tv.score(input(h), got, s);
      window_options ot;
      ot.sliding_window = 7;
      ot.soft_cap = 2.f;
      window_scores(wq.last(1), n_kv, h, input(h).keys, kpos, want, ws, ot);
      for (std::size_t j = 0; j < n; ++j) REQUIRE(got[j] == want[j]);
      for (std::size_t j = 0; j + 3 < n; ++j) REQUIRE(got[j] == 0.f);  // 3 (n - 1 - j) < 7: the last 3 rows
    }
  }
}

TEST_CASE("visit_policy builds snapkv and tova with scale, sliding_window and soft_cap", "[window][hybrid][policies]") {
  policy_config cfg;
  cfg.scale = 0.5f;
  cfg.sliding_window = 4096;
  cfg.soft_cap = 50.f;
  for (const char* name : {"snapkv", "tova"}) {
    const bool ok = visit_policy(name, cfg, [](const auto& p) {
      using P = std::decay_t<decltype(p)>;
      if constexpr (std::is_same_v<P, snapkv> || std::is_same_v<P, tova>)
        return p.scale == 0.5f && p.sliding_window == std::size_t{4096} && p.soft_cap == 50.f;
      else
        return false;
    });
    CHECK(ok);
  }
  const bool unset = visit_policy("snapkv", policy_config{}, [](const auto& p) {
    using P = std::decay_t<decltype(p)>;
    if constexpr (std::is_same_v<P, snapkv>) return !p.scale && !p.sliding_window && !p.soft_cap;
    else return false;
  });
  CHECK(unset);
}

TEST_CASE("window_scores and policies reject bad sliding_window / soft_cap, writing nothing", "[window][hybrid]") {
  random_case<float> c(4, 2, 4, 16, 10, 1.f);
  window_scratch ws;
  std::vector<float> out(10, 3.f);
  const auto q = c.queries();
  const auto k = c.keys();
  std::vector<pos_t> kpos(10);
  for (std::size_t j = 0; j < 10; ++j) kpos[j] = pos_t(j);
  window_options o;
  o.sliding_window = 0;
  require_error([&] { window_scores(q, 2, 0, k, {}, out, ws, o); }, {"depthkv::window_scores", "sliding_window must be >= 1", "got 0"});
  o.sliding_window.reset();
  for (float bad : {0.f, -1.f, std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                    std::numeric_limits<float>::quiet_NaN()}) {
    o.soft_cap = bad;
    require_error([&] { window_scores(q, 2, 0, k, {}, out, ws, o); }, {"soft_cap must be finite and > 0", "got"});
  }
  o.soft_cap.reset();
  // With a sliding window, key positions given in the default convention are read: checked.
  o.sliding_window = 3;
  require_error([&] { window_scores(q, 2, 0, k, span<const pos_t>(kpos.data(), 9), out, ws, o); },
                {"key_positions has 9", "expected one per key (10)"});
  kpos[4] = kpos[3];
  require_error([&] { window_scores(q, 2, 0, k, kpos, out, ws, o); },
                {"key_positions must be strictly ascending", "key_positions[4] = 3"});
  for (float x : out) CHECK(x == 3.f);
  // ... but without a window they are not read (as before).
  o.sliding_window.reset();
  window_scores(q, 2, 0, k, kpos, out, ws, o);

  const window_queries wq = c.queries();
  head_input<float> in;
  in.n_kv_heads = 2;
  in.keys = k;
  in.queries = &wq;
  snapkv sk;
  sk.soft_cap = -2.f;
  require_error([&] { sk.check(in); }, {"depthkv::snapkv", "soft_cap", "-2"});
  sk.soft_cap.reset();
  sk.sliding_window = 0;
  require_error([&] { sk.check(in); }, {"depthkv::snapkv", "sliding_window"});
  tova tv;
  tv.soft_cap = 0.f;
  require_error([&] { tv.check(in); }, {"depthkv::tova", "soft_cap"});
  tv.soft_cap.reset();
  tv.sliding_window = 0;
  require_error([&] { tv.check(in); }, {"depthkv::tova", "sliding_window"});
}
