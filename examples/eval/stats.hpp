// 95% confidence intervals of a mean over sequences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace eval {

struct interval {
  double mean = NAN, lo = NAN, hi = NAN;
  std::size_t n = 0;  // finite values used
};

// Normal approximation: mean +- 1.96 sd / sqrt(n), sd with n - 1 (0 for one value); NaNs and
// infinities are skipped; all NaN when nothing is left.
inline interval ci95(const std::vector<double>& v) {
  interval r;
  double s = 0;
  for (double x : v)
    if (std::isfinite(x)) {
      s += x;
      ++r.n;
    }
  if (r.n == 0) return r;
  r.mean = s / static_cast<double>(r.n);
  double ss = 0;
  for (double x : v)
    if (std::isfinite(x)) ss += (x - r.mean) * (x - r.mean);
  const double sd = r.n > 1 ? std::sqrt(ss / static_cast<double>(r.n - 1)) : 0.0;
  const double h = 1.96 * sd / std::sqrt(static_cast<double>(r.n));
  r.lo = r.mean - h;
  r.hi = r.mean + h;
  return r;
}

// The same clamped to the metric's range (KL >= 0, accuracy in [0, 1]).
inline interval clamp_to(interval r, double lo, double hi) {
  if (r.n == 0) return r;
  r.lo = std::clamp(r.lo, lo, hi);
  r.hi = std::clamp(r.hi, lo, hi);
  return r;
}

}  // namespace eval
