// Sensitivity profile: per layer, a curve of (keep ratio -> loss increase) points, plus
// metadata; strict CSV read/write.
//
// A point (r, delta) means "keeping fraction r of this layer's tokens, every other layer full,
// increases the loss by delta". The curve between points is piecewise linear; delta at r = 1
// is 0 unless the profile holds a point at r = 1. Below the smallest sampled ratio r0 the curve
// continues with the slope of its first segment (the one from r0 to the next point, or to
// (1, 0)), but never below delta(r0): a layer is never cheaper to prune below what was
// measured. A single-point curve is therefore the line through (r0, delta) and (1, 0).
//
// CSV format (one profile per file, UTF-8/ASCII, LF or CRLF line ends):
//   # depthkv sensitivity profile v1        <- comment (a `#` line without `key: value`)
//   # model: tiny-llama-5l                  <- metadata `# key: value`, before the header only
//   # n_layers: 8                           <- required
//   # metric: kl
//   # calibration_tokens: 4096
//   # policy: snapkv
//   layer,keep_ratio,delta                  <- header, exactly these columns
//   0,0.05,0.0123                           <- one point per row, any order
// Blank lines are ignored; unknown metadata keys are ignored (forward compatibility);
// fields may be padded with spaces or tabs. Numbers are plain decimal (std::from_chars).
#pragma once

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <istream>
#include <limits>
#include <ostream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "depthkv/config.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"

namespace depthkv {

/// One sampled point of a layer's sensitivity curve.
struct curve_point {
  double keep_ratio = 1.0;  ///< in (0, 1]
  double delta = 0.0;       ///< loss increase over the full cache (finite, may be negative: noise)
  friend bool operator==(const curve_point& a, const curve_point& b) {
    return a.keep_ratio == b.keep_ratio && a.delta == b.delta;
  }
  friend bool operator!=(const curve_point& a, const curve_point& b) { return !(a == b); }
};

/// Largest layer count a profile accepts (guards the reader against absurd metadata).
inline constexpr std::size_t max_profile_layers = 1u << 16;

/// Per-layer sensitivity curves and the metadata of how they were measured.
class sensitivity_profile {
 public:
  std::string model;                     ///< model id
  std::string metric;                    ///< e.g. "kl", "nll", "cake_preference"
  std::string policy;                    ///< scoring policy used while profiling, e.g. "snapkv"
  std::uint64_t calibration_tokens = 0;  ///< tokens of calibration data (0 = unknown)

  sensitivity_profile() = default;
  /// An empty profile (no points) of n_layers layers. Throws if n_layers > max_profile_layers.
  explicit sensitivity_profile(std::size_t n_layers) {
    DEPTHKV_CHECK(n_layers <= max_profile_layers, "depthkv::sensitivity_profile", "n_layers ", n_layers,
                  " exceeds the limit of ", max_profile_layers);
    curves_.resize(n_layers);
  }

  std::size_t n_layers() const noexcept { return curves_.size(); }

  /// Adds a point; keeps the layer's points sorted by keep ratio. Throws (profile unchanged) on
  /// an out-of-range layer, a keep ratio outside (0, 1], a non-finite delta, or a duplicate ratio.
  void add_point(std::size_t layer, double keep_ratio, double delta) {
    constexpr const char* where = "depthkv::sensitivity_profile::add_point";
    DEPTHKV_CHECK(layer < curves_.size(), where, "layer ", layer, " out of range (n_layers ", curves_.size(), ")");
    DEPTHKV_CHECK(keep_ratio > 0.0 && keep_ratio <= 1.0, where, "keep_ratio ", keep_ratio,
                  " outside (0, 1] (layer ", layer, ")");
    DEPTHKV_CHECK(std::isfinite(delta), where, "delta ", delta, " is not finite (layer ", layer, ")");
    auto& c = curves_[layer];
    auto it = std::lower_bound(c.begin(), c.end(), keep_ratio,
                               [](const curve_point& p, double r) { return p.keep_ratio < r; });
    DEPTHKV_CHECK(it == c.end() || it->keep_ratio != keep_ratio, where, "duplicate point: layer ", layer,
                  " already has keep_ratio ", keep_ratio);
    c.insert(it, curve_point{keep_ratio, delta});
  }

  /// True when `layer` holds a point at exactly this keep ratio.
  bool has_point(std::size_t layer, double keep_ratio) const noexcept {
    if (layer >= curves_.size()) return false;
    for (const auto& p : curves_[layer])
      if (p.keep_ratio == keep_ratio) return true;
    return false;
  }

  /// The layer's points, ascending by keep ratio. Precondition: layer < n_layers().
  span<const curve_point> points(std::size_t layer) const noexcept {
    DEPTHKV_ASSERT(layer < curves_.size());
    return {curves_[layer].data(), curves_[layer].size()};
  }

  /// Every layer has at least one point.
  bool complete() const noexcept {
    return std::all_of(curves_.begin(), curves_.end(), [](const auto& c) { return !c.empty(); });
  }

  std::size_t n_points() const noexcept {
    std::size_t n = 0;
    for (const auto& c : curves_) n += c.size();
    return n;
  }

  /// The curve of `layer` evaluated at keep ratio r >= 0 (see the header comment for the
  /// rule below the smallest sampled ratio; only that extrapolation can exceed the sampled
  /// deltas, and it may reach +inf for absurdly steep first segments). Throws if the layer is
  /// out of range or has no points, or r is not in [0, 1].
  double delta_at(std::size_t layer, double r) const {
    constexpr const char* where = "depthkv::sensitivity_profile::delta_at";
    DEPTHKV_CHECK(layer < curves_.size(), where, "layer ", layer, " out of range (n_layers ", curves_.size(), ")");
    DEPTHKV_CHECK(!curves_[layer].empty(), where, "layer ", layer, " has no points");
    DEPTHKV_CHECK(r >= 0.0 && r <= 1.0, where, "keep ratio ", r, " outside [0, 1]");
    return detail_eval(curves_[layer], r);
  }

  friend bool operator==(const sensitivity_profile& a, const sensitivity_profile& b) {
    return a.model == b.model && a.metric == b.metric && a.policy == b.policy &&
           a.calibration_tokens == b.calibration_tokens && a.curves_ == b.curves_;
  }
  friend bool operator!=(const sensitivity_profile& a, const sensitivity_profile& b) { return !(a == b); }

 private:
  static double detail_eval(const std::vector<curve_point>& c, double r) noexcept {
    const curve_point& first = c.front();
    // The point after `first`: the next sample, or the implicit (1, 0).
    const bool has_next = c.size() > 1;
    const curve_point next = has_next ? c[1] : curve_point{1.0, 0.0};
    if (r <= first.keep_ratio) {
      if (r == first.keep_ratio || first.keep_ratio >= 1.0) return first.delta;
      // Continue the first segment: the rise per unit of that segment's width, times the
      // distance below r0 in those units (never negative). Can overflow to +inf only for
      // extreme curves (huge deltas on nearly equal ratios).
      const double rise = first.delta - next.delta;
      if (!(rise > 0.0)) return first.delta;
      return first.delta + rise * ((first.keep_ratio - r) / (next.keep_ratio - first.keep_ratio));
    }
    for (std::size_t i = 1; i < c.size(); ++i) {
      if (r <= c[i].keep_ratio) {
        // Convex combination: cannot overflow for finite deltas.
        const double t = (r - c[i - 1].keep_ratio) / (c[i].keep_ratio - c[i - 1].keep_ratio);
        return (1.0 - t) * c[i - 1].delta + t * c[i].delta;
      }
    }
    const curve_point& last = c.back();  // last.keep_ratio < r <= 1: towards the implicit (1, 0)
    const double t = (r - last.keep_ratio) / (1.0 - last.keep_ratio);
    return last.delta * (1.0 - t);
  }

  std::vector<std::vector<curve_point>> curves_;  ///< [layer] ascending by keep_ratio
};

/// The profile of some of p's layers, with p's metadata: layer i is p's layer layer_indices[i]
/// (e.g. the global layers of a hybrid model). Throws if an index is >= p.n_layers().
inline sensitivity_profile select_layers(const sensitivity_profile& p,
                                         span<const std::size_t> layer_indices) {
  constexpr const char* where = "depthkv::select_layers";
  for (std::size_t i = 0; i < layer_indices.size(); ++i)
    DEPTHKV_CHECK(layer_indices[i] < p.n_layers(), where, "layer_indices[", i, "] = ", layer_indices[i],
                  " out of range (n_layers ", p.n_layers(), ")");
  sensitivity_profile q(layer_indices.size());
  q.model = p.model;
  q.metric = p.metric;
  q.policy = p.policy;
  q.calibration_tokens = p.calibration_tokens;
  for (std::size_t i = 0; i < layer_indices.size(); ++i)
    for (const auto& pt : p.points(layer_indices[i])) q.add_point(i, pt.keep_ratio, pt.delta);
  return q;
}

/// Reader switches.
struct profile_read_options {
  /// Accept layers without points (a partly filled profile, e.g. to resume profiling).
  bool allow_missing_layers = false;
};

namespace detail::profile_csv {

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// Printable excerpt of an offending line (bounded, control bytes escaped).
inline std::string excerpt(std::string_view s) {
  std::string out;
  const std::size_t n = std::min<std::size_t>(s.size(), 80);
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch < 0x20 || ch >= 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (s.size() > n) out += "...";
  return out;
}

[[noreturn]] inline void line_fail(std::size_t line_no, std::string_view text, const std::string& msg) {
  detail::fail("depthkv::read_profile", "line ", line_no, ": ", msg, " in \"", excerpt(text), "\"");
}

inline bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

inline bool parse_double(std::string_view s, double& out) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out, std::chars_format::general);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

/// Shortest text that reads back to exactly x.
inline std::string format_double(double x) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, x);
  DEPTHKV_ASSERT(r.ec == std::errc());
  return std::string(buf, r.ptr);
}

inline bool valid_meta_value(const std::string& s) {
  if (s != trim(s)) return false;
  for (const char ch : s)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return false;
  return true;
}

}  // namespace detail::profile_csv

/// Writes `p` as CSV. Throws (nothing written) if a metadata string has leading/trailing blanks
/// or control characters (it would not read back equal).
inline void write_profile(std::ostream& os, const sensitivity_profile& p) {
  namespace pc = detail::profile_csv;
  constexpr const char* where = "depthkv::write_profile";
  DEPTHKV_CHECK(pc::valid_meta_value(p.model), where, "model \"", pc::excerpt(p.model),
                "\" has leading/trailing blanks or control characters");
  DEPTHKV_CHECK(pc::valid_meta_value(p.metric), where, "metric \"", pc::excerpt(p.metric),
                "\" has leading/trailing blanks or control characters");
  DEPTHKV_CHECK(pc::valid_meta_value(p.policy), where, "policy \"", pc::excerpt(p.policy),
                "\" has leading/trailing blanks or control characters");
  DEPTHKV_CHECK(p.n_layers() > 0, where, "the profile has no layers");
  std::string out;
  out += "# depthkv sensitivity profile v1\n";
  auto meta = [&](const char* key, const std::string& v) {
    out += std::string("# ") + key + ":" + (v.empty() ? "" : " ") + v + "\n";
  };
  meta("model", p.model);
  meta("n_layers", std::to_string(p.n_layers()));
  meta("metric", p.metric);
  meta("calibration_tokens", std::to_string(p.calibration_tokens));
  meta("policy", p.policy);
  out += "layer,keep_ratio,delta\n";
  for (std::size_t l = 0; l < p.n_layers(); ++l)
    for (const auto& pt : p.points(l))
      out += std::to_string(l) + "," + pc::format_double(pt.keep_ratio) + "," + pc::format_double(pt.delta) + "\n";
  os << out;
  DEPTHKV_CHECK(static_cast<bool>(os), where, "stream write failed");
}

/// Reads a CSV profile. Throws depthkv::error with the line number and the offending text on
/// any malformed input: bad metadata, missing/duplicate n_layers, wrong header, a row without
/// exactly three fields, a non-numeric field, NaN/inf, a negative or out-of-range layer, a keep
/// ratio outside (0, 1], a duplicate (layer, keep_ratio), or a layer without points (unless
/// allowed by `opt`).
inline sensitivity_profile read_profile(std::istream& is, const profile_read_options& opt = {}) {
  namespace pc = detail::profile_csv;
  sensitivity_profile p;
  bool have_layers = false, have_model = false, have_metric = false, have_policy = false, have_calib = false;
  bool header_seen = false;
  std::size_t line_no = 0;
  std::string line;
  while (std::getline(is, line)) {
    ++line_no;
    const std::string_view text(line);
    const std::string_view t = pc::trim(text);
    if (t.empty()) continue;
    if (t.front() == '#') {
      if (header_seen) pc::line_fail(line_no, text, "comment or metadata after the header");
      const std::string_view body = pc::trim(t.substr(1));
      const std::size_t colon = body.find(':');
      if (colon == std::string_view::npos) continue;  // plain comment
      const std::string_view key = pc::trim(body.substr(0, colon));
      const std::string_view value = pc::trim(body.substr(colon + 1));
      auto once = [&](bool& seen) {
        if (seen) pc::line_fail(line_no, text, "duplicate metadata key '" + std::string(key) + "'");
        seen = true;
        if (!pc::valid_meta_value(std::string(value)))
          pc::line_fail(line_no, text, "control character in the value of '" + std::string(key) + "'");
      };
      if (key == "n_layers") {
        once(have_layers);
        std::uint64_t n = 0;
        if (!pc::parse_u64(value, n)) pc::line_fail(line_no, text, "n_layers is not a non-negative integer");
        if (n == 0 || n > max_profile_layers)
          pc::line_fail(line_no, text, "n_layers " + std::to_string(n) + " outside [1, " +
                                           std::to_string(max_profile_layers) + "]");
        sensitivity_profile q(static_cast<std::size_t>(n));
        q.model = std::move(p.model);
        q.metric = std::move(p.metric);
        q.policy = std::move(p.policy);
        q.calibration_tokens = p.calibration_tokens;
        p = std::move(q);
      } else if (key == "model") {
        once(have_model);
        p.model = std::string(value);
      } else if (key == "metric") {
        once(have_metric);
        p.metric = std::string(value);
      } else if (key == "policy") {
        once(have_policy);
        p.policy = std::string(value);
      } else if (key == "calibration_tokens") {
        once(have_calib);
        if (!pc::parse_u64(value, p.calibration_tokens))
          pc::line_fail(line_no, text, "calibration_tokens is not a non-negative integer");
      }
      continue;  // unknown keys: ignored
    }
    if (!header_seen) {
      if (!have_layers) pc::line_fail(line_no, text, "missing '# n_layers: N' metadata before the header");
      // Header: exactly the three column names (blanks around names allowed).
      std::string_view rest = t;
      const char* names[3] = {"layer", "keep_ratio", "delta"};
      bool ok = true;
      for (int i = 0; i < 3 && ok; ++i) {
        const std::size_t comma = rest.find(',');
        const std::string_view field = pc::trim(i < 2 ? rest.substr(0, comma) : rest);
        if ((i < 2 && comma == std::string_view::npos) || field != names[i]) ok = false;
        if (i < 2 && ok) rest = rest.substr(comma + 1);
      }
      if (!ok) pc::line_fail(line_no, text, "expected the header 'layer,keep_ratio,delta'");
      header_seen = true;
      continue;
    }
    // Data row: layer,keep_ratio,delta
    std::string_view fields[3];
    std::string_view rest = t;
    std::size_t n_fields = 0;
    while (true) {
      const std::size_t comma = rest.find(',');
      if (n_fields == 3) {
        n_fields = 4;
        break;
      }
      fields[n_fields++] = pc::trim(rest.substr(0, comma));
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
    if (n_fields != 3) pc::line_fail(line_no, text, "expected 3 fields 'layer,keep_ratio,delta'");
    if (!fields[0].empty() && fields[0].front() == '-')
      pc::line_fail(line_no, text, "negative layer '" + std::string(fields[0]) + "'");
    std::uint64_t layer = 0;
    if (!pc::parse_u64(fields[0], layer))
      pc::line_fail(line_no, text, "layer '" + pc::excerpt(fields[0]) + "' is not a non-negative integer");
    if (layer >= p.n_layers())
      pc::line_fail(line_no, text, "layer " + std::to_string(layer) + " out of range (n_layers " +
                                       std::to_string(p.n_layers()) + ")");
    double r = 0.0, d = 0.0;
    if (!pc::parse_double(fields[1], r))
      pc::line_fail(line_no, text, "keep_ratio '" + pc::excerpt(fields[1]) + "' is not a number");
    if (!pc::parse_double(fields[2], d))
      pc::line_fail(line_no, text, "delta '" + pc::excerpt(fields[2]) + "' is not a number");
    if (!std::isfinite(r)) pc::line_fail(line_no, text, "keep_ratio is not finite");
    if (!std::isfinite(d)) pc::line_fail(line_no, text, "delta is not finite");
    if (!(r > 0.0 && r <= 1.0))
      pc::line_fail(line_no, text, "keep_ratio " + pc::format_double(r) + " outside (0, 1]");
    const auto l = static_cast<std::size_t>(layer);
    if (p.has_point(l, r))
      pc::line_fail(line_no, text, "duplicate point (layer " + std::to_string(l) + ", keep_ratio " +
                                       pc::format_double(r) + ")");
    p.add_point(l, r, d);
  }
  if (is.bad()) detail::fail("depthkv::read_profile", "stream read failed after line ", line_no);
  if (!header_seen) {
    if (!have_layers) detail::fail("depthkv::read_profile", "line ", line_no, ": missing '# n_layers: N' metadata");
    detail::fail("depthkv::read_profile", "line ", line_no, ": missing the header 'layer,keep_ratio,delta'");
  }
  if (!opt.allow_missing_layers) {
    std::size_t missing = 0, first_missing = 0;
    for (std::size_t l = p.n_layers(); l-- > 0;)
      if (p.points(l).empty()) {
        ++missing;
        first_missing = l;
      }
    if (missing > 0)
      detail::fail("depthkv::read_profile", "line ", line_no, " (end of input): ", missing, " of ", p.n_layers(),
           " layers have no points (n_layers metadata says ", p.n_layers(), "), first missing layer ",
           first_missing);
  }
  return p;
}

/// File forms of read_profile / write_profile; errors name the path.
inline sensitivity_profile load_profile(const std::string& path, const profile_read_options& opt = {}) {
  std::ifstream f(path, std::ios::binary);
  DEPTHKV_CHECK(static_cast<bool>(f), "depthkv::load_profile", "cannot open '", path, "'");
  try {
    return read_profile(f, opt);
  } catch (const error& e) {
    throw error(std::string(e.what()) + " (file '" + path + "')");
  }
}

inline void save_profile(const std::string& path, const sensitivity_profile& p) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  DEPTHKV_CHECK(static_cast<bool>(f), "depthkv::save_profile", "cannot open '", path, "' for writing");
  write_profile(f, p);
  f.flush();
  DEPTHKV_CHECK(static_cast<bool>(f), "depthkv::save_profile", "write to '", path, "' failed");
}

}  // namespace depthkv
