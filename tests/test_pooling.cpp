// 1-D pooling: hand-computed edges, a naive reference over many sizes and kernels (including
// kernels larger than n), in-place use, NaN/inf, and errors.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "catch.hpp"
#include "depthkv/score/pooling.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;

namespace {
std::vector<double> naive(const std::vector<float>& in, std::size_t kernel, pool_kind kind) {
  const std::size_t n = in.size(), r = kernel / 2;
  std::vector<double> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t lo = i >= r ? i - r : 0, hi = std::min(n - 1, i + r);
    double s = 0, m = -std::numeric_limits<double>::infinity();
    for (std::size_t j = lo; j <= hi; ++j) {
      s += in[j];
      m = std::max(m, double(in[j]));
    }
    out[i] = kind == pool_kind::avg ? s / double(hi - lo + 1) : m;
  }
  return out;
}
}  // namespace

TEST_CASE("pool1d: hand-computed edges", "[pooling]") {
  const std::vector<float> in{1, 2, 3, 4, 10};
  std::vector<float> out(5);
  pool1d(in, out, 3, pool_kind::avg);
  // Edges divide by the number of valid elements: (1+2)/2, (1+2+3)/3, ..., (4+10)/2.
  CHECK(out == std::vector<float>{1.5f, 2.f, 3.f, 17.f / 3.f, 7.f});
  pool1d(in, out, 3, pool_kind::max);
  CHECK(out == std::vector<float>{2, 3, 4, 10, 10});
  pool1d(in, out, 5, pool_kind::max);
  CHECK(out == std::vector<float>{3, 4, 10, 10, 10});
  // Kernel larger than n: every window is the whole array.
  pool1d(in, out, 101, pool_kind::avg);
  for (float x : out) CHECK(x == Approx(4.0));
  pool1d(in, out, 101, pool_kind::max);
  for (float x : out) CHECK(x == 10.f);
  // Kernel 1 and kind none copy.
  pool1d(in, out, 1, pool_kind::avg);
  CHECK(out == in);
  pool1d(in, out, 7, pool_kind::none);
  CHECK(out == in);
}

TEST_CASE("pool1d: matches the naive reference for many n and kernels", "[pooling]") {
  std::normal_distribution<float> nd;
  for (std::size_t n : {1u, 2u, 3u, 4u, 5u, 7u, 16u, 33u, 100u}) {
    std::vector<float> in(n);
    for (auto& x : in) x = nd(rng());
    for (std::size_t kernel : {1u, 3u, 5u, 7u, 9u, 15u, 63u, 201u}) {
      for (pool_kind kind : {pool_kind::avg, pool_kind::max}) {
        INFO("n " << n << " kernel " << kernel << " " << pool_kind_name(kind));
        std::vector<float> out(n);
        pool1d(in, out, kernel, kind);
        const auto ref = naive(in, kernel, kind);
        for (std::size_t i = 0; i < n; ++i) REQUIRE(out[i] == Approx(ref[i]).epsilon(1e-5).margin(1e-6));
        // In place, with caller scratch: same result.
        std::vector<float> inplace = in, scratch(2 * n);
        pool1d(inplace, inplace, kernel, kind, scratch);
        REQUIRE(inplace == out);
      }
    }
  }
}

TEST_CASE("pool1d: NaN propagates through max, inf stays inf through avg", "[pooling]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> in{0, 1, nan, 2, 3, 4, 5, 6};
  std::vector<float> out(in.size());
  pool1d(in, out, 3, pool_kind::max);
  CHECK(out[0] == 1.f);
  CHECK(std::isnan(out[1]));
  CHECK(std::isnan(out[2]));
  CHECK(std::isnan(out[3]));
  CHECK(out[4] == 4.f);
  CHECK(out[7] == 6.f);
  in = {0, 1, inf, 2, 3, 4, 5, 6};
  pool1d(in, out, 3, pool_kind::avg);
  CHECK(out[0] == Approx(0.5));
  CHECK(out[1] == inf);
  CHECK(out[3] == inf);
  CHECK(out[4] == Approx(3.0));  // no subtraction: the inf does not leak as NaN downstream
  CHECK(out[7] == Approx(5.5));
}

TEST_CASE("pool1d: errors", "[pooling]") {
  std::vector<float> in(4, 1.f), out(4, 0.f), small(3);
  require_error([&] { pool1d(in, out, 4, pool_kind::avg); }, {"kernel must be odd", "4"});
  require_error([&] { pool1d(in, out, 0, pool_kind::avg); }, {"kernel must be odd"});
  require_error([&] { pool1d(in, small, 3, pool_kind::avg); }, {"out has 3"});
  require_error([&] { pool1d(in, out, 3, pool_kind::max, span<float>(small)); }, {"scratch has 3", "need 8"});
  for (float x : out) CHECK(x == 0.f);
  std::vector<float> empty;
  pool1d(empty, empty, 5, pool_kind::avg);  // n = 0 is fine
}
