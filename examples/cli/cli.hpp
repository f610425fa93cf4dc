// Shared command-line rules of the example programs (generate, eval, allocate, demo_prune):
// strict value conversions, input-file checks, the model identity that ties a sensitivity
// profile to the weights it was measured on, and the mapping of errors to exit codes.
//
// Every conversion throws cli_error("<flag>: <what is wrong with the value>") and never exits,
// so the parse functions (args.hpp) can be called from tests and fuzz targets; only
// parse_or_exit / exit_usage_error turn an error into exit status 2 (help: status 0).
//
// Values are strict: a number is the whole argument (no leading blanks, no trailing
// characters), decimal only (no hex, no octal), finite (no nan/inf), inside the option's range;
// a count is a non-negative decimal integer below the option's bound. Lists are comma-separated
// with no empty item.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace dcli {

// A bad command line or input named on it; what() is "<flag>: <problem>" (no program name).
class cli_error : public std::runtime_error {
 public:
  explicit cli_error(const std::string& what) : std::runtime_error(what) {}
};

// -h / --help: text() is the help to print (exit status 0).
class help_requested : public std::exception {
 public:
  explicit help_requested(std::string text) : text_(std::move(text)) {}
  const std::string& text() const noexcept { return text_; }
  const char* what() const noexcept override { return "help requested"; }

 private:
  std::string text_;
};

// A closed/open interval of reals, e.g. (0, 1] for keep ratios.
struct real_range {
  double lo = 0, hi = 0;
  bool lo_open = false, hi_open = false;
  bool contains(double x) const noexcept;
  std::string describe() const;  // "(0, 1]", "[1, inf)"
};
real_range at_least(double lo);  // [lo, inf)

// Strict conversions; `flag` names the option in messages.
double to_real(const std::string& flag, const std::string& text, const real_range& range);
// A non-negative decimal integer in [lo, hi].
std::uint64_t to_count(const std::string& flag, const std::string& text, std::uint64_t lo, std::uint64_t hi);
// A non-negative decimal integer of 64 bits (seeds).
std::uint64_t to_u64(const std::string& flag, const std::string& text);
// A decimal integer (optionally negative) in [lo, hi].
std::int64_t to_int(const std::string& flag, const std::string& text, std::int64_t lo, std::int64_t hi);
// Comma-separated lists; an empty list or an empty item ("0.1,,0.2") is an error naming the item.
std::vector<std::string> to_items(const std::string& flag, const std::string& text);
std::vector<double> to_real_list(const std::string& flag, const std::string& text, const real_range& range);
std::vector<std::uint64_t> to_count_list(const std::string& flag, const std::string& text, std::uint64_t lo,
                                         std::uint64_t hi);
// One of `allowed`; the message lists them.
std::string to_choice(const std::string& flag, const std::string& text, const std::vector<std::string>& allowed);
std::vector<std::string> to_choice_list(const std::string& flag, const std::string& text,
                                        const std::vector<std::string>& allowed);

// Throws cli_error("<flag>: '<path>' ...") unless path names an existing, readable regular file
// (says "does not exist", "is a directory", "is not a regular file", "is not readable").
void check_input_file(const std::string& flag, const std::string& path);

// The identity of a model file as written into a profile's `model` field: "<path> fnv1a64=<16
// hex digits of the FNV-1a 64 hash of the file's bytes>". Throws minillama::load_error if the
// file cannot be read.
std::string model_identity(const std::string& path);
// True when a profile's `model` field names the model `identity` (model_identity or another
// name such as "random(...)"): the same content hash when both carry one, else the same text.
// An empty field (unknown model) matches.
bool profile_matches_model(const std::string& profile_model, const std::string& identity);

// "usage: <program> ..." line(s) of each example program, and the help pointer after them.
const char* usage_of(const std::string& program);
// Prints "<program>: <message>" and the usage hint on stderr, exits 2.
[[noreturn]] void exit_usage_error(const std::string& program, const std::string& message);
// Prints "<program>: <message>" on stderr (no usage hint: an input named on the command line
// is bad), exits 2.
[[noreturn]] void exit_input_error(const std::string& program, const std::string& message);
// Prints the help on stdout, exits 0.
[[noreturn]] void exit_help(const std::string& text);

// Runs a parse function; help -> exit 0, cli_error -> exit 2 with the usage hint.
template <class Options>
Options parse_or_exit(const std::string& program, Options (*parse)(int, const char* const*), int argc,
                      const char* const* argv) {
  try {
    return parse(argc, argv);
  } catch (const help_requested& h) {
    exit_help(h.text());
  } catch (const cli_error& e) {
    exit_usage_error(program, e.what());
  }
}

}  // namespace dcli
