// sensitivity_profile: points, curve evaluation, strict CSV reader (every error), round trips.
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "depthkv/budget/profile.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;

namespace {

sensitivity_profile read_str(const std::string& s, const profile_read_options& opt = {}) {
  std::istringstream is(s);
  return read_profile(is, opt);
}

std::string write_str(const sensitivity_profile& p) {
  std::ostringstream os;
  write_profile(os, p);
  return os.str();
}

const std::string head2 = "# n_layers: 2\nlayer,keep_ratio,delta\n";

sensitivity_profile random_profile() {
  auto& g = rng();
  sensitivity_profile p(uniform_int(1, 12));
  const char* names[] = {"", "tiny-llama", "m:with:colons", "a b,c", "unicode-\xc3\xa9"};
  p.model = names[uniform_int(0, 4)];
  p.metric = names[uniform_int(0, 4)];
  p.policy = names[uniform_int(0, 4)];
  p.calibration_tokens = uniform_int(0, 1) ? uniform_int(0, 1u << 30) : std::numeric_limits<std::uint64_t>::max();
  std::uniform_real_distribution<double> ur(0.0, 1.0);
  for (std::size_t l = 0; l < p.n_layers(); ++l) {
    const std::size_t k = uniform_int(1, 9);
    for (std::size_t i = 0; i < k; ++i) {
      double r = uniform_int(0, 3) == 0 ? double(uniform_int(1, 20)) / 20.0 : ur(g);
      if (r <= 0.0) r = 1e-300;
      if (p.has_point(l, r)) continue;
      double d;
      switch (uniform_int(0, 3)) {
        case 0: d = ur(g); break;
        case 1: d = -ur(g) * 1e-3; break;
        case 2: d = std::ldexp(ur(g), int(uniform_int(0, 200)) - 100); break;
        default: d = double(uniform_int(0, 1000)); break;
      }
      p.add_point(l, r, d);
    }
  }
  return p;
}

}  // namespace

TEST_CASE("profile: add_point keeps points sorted and rejects bad points without changing the profile") {
  sensitivity_profile p(3);
  p.add_point(1, 0.5, 0.2);
  p.add_point(1, 0.1, 0.9);
  p.add_point(1, 1.0, 0.01);
  p.add_point(1, 0.3, 0.4);
  const auto pts = p.points(1);
  REQUIRE(pts.size() == 4);
  CHECK(pts[0].keep_ratio == 0.1);
  CHECK(pts[1].keep_ratio == 0.3);
  CHECK(pts[2].keep_ratio == 0.5);
  CHECK(pts[3].keep_ratio == 1.0);
  CHECK(p.has_point(1, 0.3));
  CHECK_FALSE(p.has_point(1, 0.31));
  CHECK_FALSE(p.has_point(7, 0.3));
  CHECK_FALSE(p.complete());
  CHECK(p.n_points() == 4);

  const sensitivity_profile before = p;
  require_error([&] { p.add_point(3, 0.5, 1.0); }, {"layer 3", "out of range"});
  require_error([&] { p.add_point(0, 0.0, 1.0); }, {"keep_ratio 0", "(0, 1]"});
  require_error([&] { p.add_point(0, 1.5, 1.0); }, {"keep_ratio 1.5"});
  require_error([&] { p.add_point(0, std::nan(""), 1.0); }, {"keep_ratio"});
  require_error([&] { p.add_point(0, 0.5, std::numeric_limits<double>::infinity()); }, {"not finite"});
  require_error([&] { p.add_point(1, 0.5, 3.0); }, {"duplicate", "0.5"});
  CHECK(p == before);
  require_error([] { sensitivity_profile q(max_profile_layers + 1); }, {"n_layers"});
}

TEST_CASE("profile: delta_at interpolates, ends at (1, 0) and extrapolates below the first point") {
  sensitivity_profile p(4);
  // Layer 0: two points; between them linear, after the last towards (1, 0).
  p.add_point(0, 0.2, 1.0);
  p.add_point(0, 0.6, 0.2);
  CHECK(p.delta_at(0, 0.2) == Approx(1.0));
  CHECK(p.delta_at(0, 0.4) == Approx(0.6));
  CHECK(p.delta_at(0, 0.6) == Approx(0.2));
  CHECK(p.delta_at(0, 0.8) == Approx(0.1));
  CHECK(p.delta_at(0, 1.0) == Approx(0.0));
  // Below 0.2 with the first segment's slope (0.8 / 0.4 = 2 per unit ratio).
  CHECK(p.delta_at(0, 0.1) == Approx(1.2));
  CHECK(p.delta_at(0, 0.0) == Approx(1.4));
  // Layer 1: single point: the line through (0.5, 0.3) and (1, 0).
  p.add_point(1, 0.5, 0.3);
  CHECK(p.delta_at(1, 0.75) == Approx(0.15));
  CHECK(p.delta_at(1, 0.25) == Approx(0.45));
  CHECK(p.delta_at(1, 0.0) == Approx(0.6));
  // Layer 2: an explicit point at 1 replaces the implicit zero.
  p.add_point(2, 0.5, 0.5);
  p.add_point(2, 1.0, 0.1);
  CHECK(p.delta_at(2, 1.0) == Approx(0.1));
  CHECK(p.delta_at(2, 0.75) == Approx(0.3));
  // Layer 3: first segment rising with r (noise): below the first point it stays flat.
  p.add_point(3, 0.3, 0.1);
  p.add_point(3, 0.5, 0.4);
  CHECK(p.delta_at(3, 0.1) == Approx(0.1));
  CHECK(p.delta_at(3, 0.4) == Approx(0.25));

  require_error([&] { (void)p.delta_at(4, 0.5); }, {"layer 4"});
  require_error([&] { (void)p.delta_at(0, 1.5); }, {"1.5"});
  sensitivity_profile q(2);
  require_error([&] { (void)q.delta_at(1, 0.5); }, {"no points"});
}

TEST_CASE("profile csv: write then read gives an equal profile (random profiles)") {
  for (int it = 0; it < 300; ++it) {
    const auto p = random_profile();
    const std::string s = write_str(p);
    INFO(s);
    const auto q = read_str(s);
    CHECK(q == p);
    CHECK(write_str(q) == s);
  }
}

TEST_CASE("profile csv: tolerant of layout: CRLF, blanks, padding, comments, unknown keys, any row order") {
  const std::string s =
      "# a plain comment\r\n"
      "\r\n"
      "#model:  my-model  \r\n"
      "# n_layers: 2\r\n"
      "# future_key: whatever\r\n"
      "#   metric : kl\r\n"
      "# calibration_tokens: 4096\r\n"
      "# policy: snapkv\r\n"
      " layer , keep_ratio ,delta\r\n"
      "1, 0.5 ,\t0.25\r\n"
      "\r\n"
      "0,0.1,1e-3\r\n"
      "1,0.1,2.5\r\n";
  const auto p = read_str(s);
  CHECK(p.model == "my-model");
  CHECK(p.metric == "kl");
  CHECK(p.policy == "snapkv");
  CHECK(p.calibration_tokens == 4096);
  REQUIRE(p.n_layers() == 2);
  REQUIRE(p.points(0).size() == 1);
  CHECK(p.points(0)[0].delta == 1e-3);
  REQUIRE(p.points(1).size() == 2);
  CHECK(p.points(1)[0] == curve_point{0.1, 2.5});
  CHECK(p.points(1)[1] == curve_point{0.5, 0.25});
  // No trailing newline at the end of the last row is fine too.
  CHECK(read_str(head2 + "0,1,0\n1,1,0").n_points() == 2);
}

TEST_CASE("profile csv: every reader error names the line and the offending text") {
  struct bad {
    std::string text;
    std::vector<std::string> needles;
  };
  const std::vector<bad> cases = {
      {"", {"n_layers"}},
      {"layer,keep_ratio,delta\n0,0.5,1\n", {"line 1", "n_layers", "layer,keep_ratio,delta"}},
      {"# n_layers: two\nlayer,keep_ratio,delta\n", {"line 1", "n_layers", "two"}},
      {"# n_layers: -2\n", {"line 1", "n_layers"}},
      {"# n_layers: 0\n", {"line 1", "outside"}},
      {"# n_layers: 100000\n", {"line 1", "100000", "outside"}},
      {"# n_layers: 2\n# n_layers: 2\n", {"line 2", "duplicate metadata", "n_layers"}},
      {"# model: a\n# model: b\n# n_layers: 1\n", {"line 2", "duplicate metadata", "model"}},
      {"# model: a\x01z\n", {"line 1", "control character", "\\x01"}},
      {"# n_layers: 1\n# calibration_tokens: -5\n", {"line 2", "calibration_tokens", "-5"}},
      {"# n_layers: 1\n# calibration_tokens: 1.5\n", {"line 2", "calibration_tokens"}},
      {"# n_layers: 1\n", {"missing the header"}},
      {"# n_layers: 1\nlayer,ratio,delta\n", {"line 2", "header", "layer,ratio,delta"}},
      {"# n_layers: 1\nlayer,keep_ratio,delta,extra\n", {"line 2", "header"}},
      {"# n_layers: 1\nlayer,keep_ratio\n", {"line 2", "header"}},
      {"# n_layers: 1\n0,0.5,1\n", {"line 2", "header", "0,0.5,1"}},
      {head2 + "0,0.5\n", {"line 3", "3 fields", "0,0.5"}},
      {head2 + "0,0.5,1,7\n", {"line 3", "3 fields", "0,0.5,1,7"}},
      {head2 + "0,0.5,1,\n", {"line 3", "3 fields"}},
      {head2 + "0;0.5;1\n", {"line 3", "3 fields", "0;0.5;1"}},
      {head2 + "a,0.5,1\n", {"line 3", "layer 'a'", "a,0.5,1"}},
      {head2 + "1.5,0.5,1\n", {"line 3", "layer '1.5'"}},
      {head2 + ",0.5,1\n", {"line 3", "layer ''"}},
      {head2 + "-1,0.5,1\n", {"line 3", "negative layer", "-1,0.5,1"}},
      {head2 + "2,0.5,1\n", {"line 3", "layer 2 out of range (n_layers 2)", "2,0.5,1"}},
      {head2 + "99999999999999999999999,0.5,1\n", {"line 3", "layer"}},
      {head2 + "0,0,1\n", {"line 3", "keep_ratio 0 outside (0, 1]", "0,0,1"}},
      {head2 + "0,-0.25,1\n", {"line 3", "keep_ratio -0.25 outside"}},
      {head2 + "0,1.0000001,1\n", {"line 3", "keep_ratio 1.0000001 outside"}},
      {head2 + "0,nan,1\n", {"line 3", "keep_ratio is not finite", "0,nan,1"}},
      {head2 + "0,inf,1\n", {"line 3", "keep_ratio is not finite"}},
      {head2 + "0,0.5,nan\n", {"line 3", "delta is not finite", "0,0.5,nan"}},
      {head2 + "0,0.5,-inf\n", {"line 3", "delta is not finite"}},
      {head2 + "0,0.5,infinity\n", {"line 3", "delta is not finite"}},
      {head2 + "0,0.5,1e999\n", {"line 3", "delta '1e999' is not a number"}},
      {head2 + "0,0.5,abc\n", {"line 3", "delta 'abc' is not a number"}},
      {head2 + "0,0.5,\n", {"line 3", "delta '' is not a number"}},
      {head2 + "0,0.5x,1\n", {"line 3", "keep_ratio '0.5x' is not a number"}},
      {head2 + "0,0.5,1 2\n", {"line 3", "delta '1 2'"}},
      {head2 + "0,0.5,1\n1,0.5,1\n0,0.50,2\n", {"line 5", "duplicate point (layer 0, keep_ratio 0.5)", "0,0.50,2"}},
      {head2 + "0,0.5,1\n# late comment\n", {"line 4", "after the header"}},
      {"# n_layers: 3\nlayer,keep_ratio,delta\n0,0.5,1\n2,0.5,1\n", {"line 4", "1 of 3 layers have no points",
                                                                     "first missing layer 1"}},
      {"# n_layers: 3\nlayer,keep_ratio,delta\n", {"3 of 3 layers have no points", "first missing layer 0"}},
  };
  for (const auto& c : cases) {
    INFO("input: " << c.text);
    require_error([&] { (void)read_str(c.text); }, c.needles);
  }
}

TEST_CASE("profile csv: allow_missing_layers reads a partly filled profile") {
  const std::string s = "# n_layers: 3\nlayer,keep_ratio,delta\n2,0.5,1\n";
  require_error([&] { (void)read_str(s); }, {"no points"});
  const auto p = read_str(s, profile_read_options{true});
  CHECK(p.n_layers() == 3);
  CHECK_FALSE(p.complete());
  CHECK(p.points(2).size() == 1);
  CHECK(read_str(write_str(p), profile_read_options{true}) == p);
}

TEST_CASE("profile csv: writer rejects metadata that would not read back") {
  sensitivity_profile p(1);
  p.add_point(0, 0.5, 1.0);
  p.model = " padded";
  require_error([&] { (void)write_str(p); }, {"model", "padded"});
  p.model = "ok";
  p.metric = "line\nbreak";
  require_error([&] { (void)write_str(p); }, {"metric"});
  p.metric = "kl";
  p.policy = "tab\t";
  require_error([&] { (void)write_str(p); }, {"policy"});
  require_error([] { (void)write_str(sensitivity_profile{}); }, {"no layers"});
}

TEST_CASE("profile csv: save_profile / load_profile and file errors") {
  const auto p = random_profile();
  const std::string path = "test_profile_roundtrip.csv";
  save_profile(path, p);
  CHECK(load_profile(path) == p);
  std::remove(path.c_str());
  require_error([] { (void)load_profile("/nonexistent/dir/profile.csv"); }, {"cannot open", "/nonexistent/dir"});
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    std::fputs("# n_layers: 1\nlayer,keep_ratio,delta\n0,2,1\n", f);
    std::fclose(f);
  }
  require_error([&] { (void)load_profile(path); }, {"line 3", path});
  std::remove(path.c_str());
}
