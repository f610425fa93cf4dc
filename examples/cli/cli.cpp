// Shared command-line rules of the example programs; see cli.hpp.
#include "cli/cli.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

#include "depthkv/error.hpp"
#include "minillama/loaders.hpp"

namespace dcli {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The value as given, quoted (shortened when very long: a fuzzer's argument can be huge).
std::string quote(const std::string& s) {
  constexpr std::size_t kMax = 200;
  return "'" + (s.size() <= kMax ? s : s.substr(0, kMax) + "...") + "'";
}
// A path, quoted whole.
std::string quote_path(const std::string& s) { return "'" + s + "'"; }

std::string num(double x) {
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// [+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?
bool is_decimal_real(const std::string& s) {
  std::size_t i = 0, n = s.size();
  if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
  std::size_t digits = 0;
  while (i < n && is_digit(s[i])) ++i, ++digits;
  if (i < n && s[i] == '.') {
    ++i;
    while (i < n && is_digit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t e = 0;
    while (i < n && is_digit(s[i])) ++i, ++e;
    if (e == 0) return false;
  }
  return i == n;
}

bool names_non_finite(const std::string& s) {
  std::string t = lower(s);
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) t.erase(0, 1);
  return t == "nan" || t == "inf" || t == "infinity" || t.rfind("nan(", 0) == 0;
}

// "[lo, hi]". (A stream, not std::string operator+: GCC 12 at -O3 in C++20 reports a false
// -Wrestrict on that concatenation.)
template <class Int>
std::string range_text(Int lo, Int hi) {
  std::ostringstream os;
  os << '[' << lo << ", " << hi << ']';
  return os.str();
}

std::string count_range(std::uint64_t lo, std::uint64_t hi) { return range_text(lo, hi); }

}  // namespace

bool real_range::contains(double x) const noexcept {
  if (std::isnan(x)) return false;
  const bool above = lo_open ? x > lo : x >= lo;
  const bool below = hi_open ? x < hi : x <= hi;
  return above && below;
}

std::string real_range::describe() const {
  return std::string(lo_open ? "(" : "[") + num(lo) + ", " + num(hi) + (hi_open || std::isinf(hi) ? ")" : "]");
}

real_range at_least(double lo) {
  real_range r;
  r.lo = lo;
  r.hi = std::numeric_limits<double>::infinity();
  r.hi_open = true;
  return r;
}

double to_real(const std::string& flag, const std::string& text, const real_range& range) {
  if (text.empty()) throw cli_error(flag + ": '' is not a number (empty value)");
  if (names_non_finite(text)) throw cli_error(flag + ": " + quote(text) + " is not a finite number");
  if (!is_decimal_real(text)) throw cli_error(flag + ": " + quote(text) + " is not a number");
  errno = 0;
  char* end = nullptr;
  const double x = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) throw cli_error(flag + ": " + quote(text) + " is not a number");
  if (!std::isfinite(x)) throw cli_error(flag + ": " + quote(text) + " is not a finite number (too large)");
  if (!range.contains(x)) throw cli_error(flag + ": " + quote(text) + " is outside " + range.describe());
  return x;
}

namespace {
std::uint64_t to_unsigned(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi,
                          const char* noun) {
  if (text.empty()) throw cli_error(flag + ": '' is not " + noun + " (empty value)");
  bool digits = true;
  for (char c : text) digits = digits && is_digit(c);
  if (!digits) {
    bool negative = text.size() > 1 && text[0] == '-';
    for (std::size_t i = 1; negative && i < text.size(); ++i) negative = is_digit(text[i]);
    if (negative) throw cli_error(flag + ": " + quote(text) + " is negative; expected " + noun + " in " + count_range(lo, hi));
    throw cli_error(flag + ": " + quote(text) + " is not " + noun + " (a non-negative integer in " + count_range(lo, hi) +
                    ")");
  }
  std::uint64_t v = 0;
  for (char c : text) {
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
      throw cli_error(flag + ": " + quote(text) + " is outside " + count_range(lo, hi));
    v = v * 10 + d;
  }
  if (v < lo || v > hi) throw cli_error(flag + ": " + quote(text) + " is outside " + count_range(lo, hi));
  return v;
}
}  // namespace

std::uint64_t to_count(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
  return to_unsigned(flag, text, lo, hi, "a count");
}

std::uint64_t to_u64(const std::string& flag, const std::string& text) {
  return to_unsigned(flag, text, 0, std::numeric_limits<std::uint64_t>::max(), "an unsigned 64-bit integer");
}

std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t lo, std::int64_t hi) {
  const bool neg = !text.empty() && text[0] == '-';
  const std::string mag = neg ? text.substr(1) : text;
  bool digits = !mag.empty();
  for (char c : mag) digits = digits && is_digit(c);
  const std::string range = range_text(lo, hi);
  if (!digits) throw cli_error(flag + ": " + quote(text) + " is not an integer");
  std::uint64_t v = 0;
  for (char c : mag) {
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
    if (v > (std::uint64_t{1} << 62)) throw cli_error(flag + ": " + quote(text) + " is outside " + range);
  }
  const std::int64_t x = neg ? -static_cast<std::int64_t>(v) : static_cast<std::int64_t>(v);
  if (x < lo || x > hi) throw cli_error(flag + ": " + quote(text) + " is outside " + range);
  return x;
}

std::vector<std::string> to_items(const std::string& flag, const std::string& text) {
  if (text.empty()) throw cli_error(flag + ": empty list");
  std::vector<std::string> out;
  std::size_t b = 0;
  for (;;) {
    const std::size_t e = text.find(',', b);
    out.push_back(text.substr(b, e == std::string::npos ? std::string::npos : e - b));
    if (out.back().empty())
      throw cli_error(flag + ": item " + std::to_string(out.size()) + " of " + quote(text) + " is empty");
    if (e == std::string::npos) break;
    b = e + 1;
  }
  return out;
}

namespace {
// Converts each item with f, prefixing errors with the item's position in the list.
template <class T, class F>
std::vector<T> each_item(const std::string& flag, const std::string& text, F f) {
  const std::vector<std::string> items = to_items(flag, text);
  std::vector<T> out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      out.push_back(f(items[i]));
    } catch (const cli_error& e) {
      if (items.size() == 1) throw;
      // e.what() is "<flag>: <problem>": keep the problem, name the item.
      const std::string msg = e.what();
      const std::string problem = msg.substr(std::min(msg.size(), flag.size() + 2));
      throw cli_error(flag + ": item " + std::to_string(i + 1) + " of " + quote(text) + ": " + problem);
    }
  }
  return out;
}
}  // namespace

std::vector<double> to_real_list(const std::string& flag, const std::string& text, const real_range& range) {
  return each_item<double>(flag, text, [&](const std::string& s) { return to_real(flag, s, range); });
}

std::vector<std::uint64_t> to_count_list(const std::string& flag, const std::string& text, std::uint64_t lo,
                                         std::uint64_t hi) {
  return each_item<std::uint64_t>(flag, text, [&](const std::string& s) { return to_count(flag, s, lo, hi); });
}

std::string to_choice(const std::string& flag, const std::string& text, const std::vector<std::string>& allowed) {
  for (const auto& a : allowed)
    if (a == text) return text;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  throw cli_error(flag + ": " + quote(text) + " is not one of " + list);
}

std::vector<std::string> to_choice_list(const std::string& flag, const std::string& text,
                                        const std::vector<std::string>& allowed) {
  return each_item<std::string>(flag, text, [&](const std::string& s) { return to_choice(flag, s, allowed); });
}

void check_input_file(const std::string& flag, const std::string& path) {
  if (path.empty()) throw cli_error(flag + ": empty path");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT) throw cli_error(flag + ": " + quote_path(path) + " does not exist");
    throw cli_error(flag + ": " + quote_path(path) + " cannot be opened (" + std::strerror(err) + ")");
  }
  if (S_ISDIR(st.st_mode)) throw cli_error(flag + ": " + quote_path(path) + " is a directory, not a file");
  if (!S_ISREG(st.st_mode)) throw cli_error(flag + ": " + quote_path(path) + " is not a regular file");
  if (::access(path.c_str(), R_OK) != 0) {
    const int err = errno;
    throw cli_error(flag + ": " + quote_path(path) + " is not readable (" + std::strerror(err) + ")");
  }
}

std::string model_identity(const std::string& path) {
  const std::vector<std::uint8_t> bytes = minillama::read_file(path);
  std::uint64_t h = 1469598103934665603ull;  // FNV-1a 64
  for (std::uint8_t b : bytes) h = (h ^ b) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return path + " fnv1a64=" + hex;
}

bool profile_matches_model(const std::string& profile_model, const std::string& identity) {
  if (profile_model.empty()) return true;
  auto hash_of = [](const std::string& m) {
    const auto k = m.find("fnv1a64=");
    return k == std::string::npos ? m : m.substr(k);
  };
  return hash_of(profile_model) == hash_of(identity);
}

const char* usage_of(const std::string& program) {
  if (program == "generate")
    return "usage: generate --model PATH [--tokenizer PATH] [--prompt TEXT] [--ids] [--steps N] [--temperature T]\n"
           "                [--seed S] [--policy NAME] [--allocator NAME] [--profile CSV] [--budget RATIO]\n"
           "                [--sink N] [--recent N] [--window N] [--no-dummy-prefix] [--evict]";
  if (program == "eval")
    return "usage: eval [--model PATH | --random-model SPEC] [--calib PATH] [--test PATH] [--policies LIST]\n"
           "            [--allocators LIST] [--budgets LIST] [--ratios LIST] [--sink N] [--recent N] [--window N]\n"
           "            [--out DIR] [options]";
  if (program == "allocate")
    return "usage: allocate PROFILE.csv [--ratio R | --budget N] [--tokens N | --lengths a,b,...]\n"
           "                [--min M] [--beta B] [--exponent P] [--sweep]\n"
           "                [--local-layers a,b,... --local-window W [--budget-scope all|global]]";
  if (program == "demo_prune") return "usage: demo_prune [TOKENS]";
  if (program == "serve")
    return "usage: serve [--model PATH] [--data PATH] [--max-seqs N] [--pool-mib MIB] [--pool shared|per-layer]\n"
           "             [--block-size N] [--policy NAME] [--allocator NAME] [--profile CSV] [--budget RATIO]\n"
           "             [--granularity token|block] [--compare LIST] [--sink N] [--recent N] [--window N] [--quiet]";
  return "usage: see --help";
}

void exit_usage_error(const std::string& program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n%s\nRun '%s --help' for every option.\n", program.c_str(), message.c_str(),
               usage_of(program), program.c_str());
  std::exit(2);
}

void exit_input_error(const std::string& program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program.c_str(), message.c_str());
  std::exit(2);
}

void exit_help(const std::string& text) {
  std::fputs(text.c_str(), stdout);
  std::fflush(stdout);
  std::exit(0);
}

}  // namespace dcli
