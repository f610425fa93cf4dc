// eval's small shared pieces: timing, the two ways to stop, files and directories, number
// formatting and the progress bar.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace eval {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0);

// Input errors (the files named, options that do not fit the data): status 2, naming the flag,
// with no usage hint.
[[noreturn]] void input_error(const std::string& msg);
// Outputs that cannot be written: "eval: <msg>", status 2.
[[noreturn]] void die(const std::string& msg);

bool file_exists(const std::string& path);
// mkdir -p; dies when `path` is not a directory afterwards.
void make_dirs(const std::string& path);
std::string dirname_of(const std::string& path);

// printf-formatted number; "" for NaN and infinities (empty CSV fields).
std::string fmt(double x, const char* f = "%.6g");

// A progress bar on stderr: redrawn in place on a terminal (at most 5 times a second), one line
// per 10% otherwise (logs). Disabled: prints nothing.
class progress_bar {
 public:
  progress_bar(bool enabled, std::size_t total, std::string title);
  void update(std::size_t done, const std::string& label);

 private:
  void redraw(double frac, std::size_t done, double elapsed, double eta, const std::string& label);
  void log_line(double frac, std::size_t done, double elapsed, const std::string& label);

  bool on_, tty_;
  std::size_t total_;
  std::string title_;
  clock_type::time_point t0_, last_;
  int printed_ = -1;
};

}  // namespace eval
