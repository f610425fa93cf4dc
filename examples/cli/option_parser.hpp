// A thin layer over CLI11 (2.1) for the example programs: CLI11 splits the command line
// (--flag VALUE, --flag=VALUE, flags, positionals, -h/--help, unknown options); every value is
// taken as text and converted afterwards by cli.hpp's strict conversions, because CLI11 2.1 by
// itself accepts nan/inf and hex floats for doubles, lets CLI::Range pass NaN, reads unsigned
// "-1" as 2^64-1 and "010" as octal 8, and exits with codes 100-127. Every CLI11 error
// becomes a cli_error (help: help_requested); nothing here exits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cli/cli.hpp"

namespace dcli {

class option_parser {
 public:
  option_parser(const std::string& program, const std::string& description);
  ~option_parser();
  option_parser(const option_parser&) = delete;
  option_parser& operator=(const option_parser&) = delete;

  // Options with one value (each may be given once). `type` is the value's name in the help.
  // Conversions run after the whole command line is split, in the order of registration.
  void text(const std::string& flag, std::string& out, const std::string& type, const std::string& help,
            bool allow_empty = false);
  void count(const std::string& flag, std::size_t& out, std::uint64_t lo, std::uint64_t hi, const std::string& help);
  void u64(const std::string& flag, std::uint64_t& out, const std::string& help);
  void real(const std::string& flag, double& out, const real_range& range, const std::string& help);
  void real_list(const std::string& flag, std::vector<double>& out, const real_range& range, const std::string& help);
  void count_list(const std::string& flag, std::vector<std::size_t>& out, std::uint64_t lo, std::uint64_t hi,
                  const std::string& help);
  void choice(const std::string& flag, std::string& out, const std::vector<std::string>& allowed,
              const std::string& help);
  void choice_list(const std::string& flag, std::vector<std::string>& out, const std::vector<std::string>& allowed,
                   const std::string& help);
  // A flag without a value: sets out = value when given.
  void flag(const std::string& flag, bool& out, bool value, const std::string& help);
  // The (single) positional argument.
  void positional(const std::string& name, std::string& out, const std::string& help, bool required);
  void required(const std::string& flag);
  // Text after the option list in --help.
  void footer(const std::string& text);

  // Splits and converts; throws cli_error or help_requested.
  void parse(int argc, const char* const* argv);
  // Whether the option (or positional) was given.
  bool given(const std::string& flag) const;

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace dcli
