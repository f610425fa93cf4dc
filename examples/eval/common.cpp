#include "common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "cli/cli.hpp"

namespace eval {

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void input_error(const std::string& msg) { dcli::exit_input_error("eval", msg); }

void die(const std::string& msg) {
  std::fprintf(stderr, "eval: %s\n", msg.c_str());
  std::exit(2);
}

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void make_dirs(const std::string& path) {
  std::string cur;
  for (std::size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty()) ::mkdir(cur.c_str(), 0755);
    }
    if (i < path.size()) cur += path[i];
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) die("cannot create directory '" + path + "'");
}

std::string dirname_of(const std::string& path) {
  const auto k = path.find_last_of('/');
  return k == std::string::npos ? "." : (k == 0 ? "/" : path.substr(0, k));
}

std::string fmt(double x, const char* f) {
  if (!std::isfinite(x)) return "";
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

progress_bar::progress_bar(bool enabled, std::size_t total, std::string title)
    : on_(enabled), tty_(::isatty(2) != 0), total_(std::max<std::size_t>(total, 1)), title_(std::move(title)),
      t0_(clock_type::now()), last_(t0_) {}

void progress_bar::update(std::size_t done, const std::string& label) {
  if (!on_) return;
  const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
  const auto now = clock_type::now();
  const double elapsed = std::chrono::duration<double>(now - t0_).count();
  const double eta = frac > 0 ? elapsed * (1 - frac) / frac : 0;
  if (tty_) {
    if (done < total_ && std::chrono::duration<double>(now - last_).count() < 0.2) return;
    last_ = now;
    redraw(frac, done, elapsed, eta, label);
  } else {
    log_line(frac, done, elapsed, label);
  }
  std::fflush(stderr);
}

void progress_bar::redraw(double frac, std::size_t done, double elapsed, double eta, const std::string& label) {
  constexpr int W = 30;
  const int fill = static_cast<int>(frac * W);
  std::string bar(static_cast<std::size_t>(fill), '#');
  bar.resize(W, '.');
  std::fprintf(stderr, "\r%s [%s] %3d%% %zu/%zu  %.0fs, eta %.0fs  %-34.34s", title_.c_str(), bar.c_str(),
               static_cast<int>(frac * 100), done, total_, elapsed, eta, label.c_str());
  if (done >= total_) std::fprintf(stderr, "\n");
}

void progress_bar::log_line(double frac, std::size_t done, double elapsed, const std::string& label) {
  const int decile = static_cast<int>(frac * 10);
  if (decile <= printed_ && done < total_) return;
  if (done >= total_ && printed_ >= 10) return;
  printed_ = done >= total_ ? 10 : decile;
  std::fprintf(stderr, "%s %3d%% %zu/%zu  %.0fs  %s\n", title_.c_str(), printed_ * 10, done, total_, elapsed,
               label.c_str());
}

}  // namespace eval
