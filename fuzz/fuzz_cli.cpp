// libFuzzer target for the example programs' command-line parsers (examples/cli): the input is
// split at NUL bytes into argv words; the first byte picks the program (generate, eval,
// allocate, demo_prune). Every command line must parse, ask for help, or be rejected with
// dcli::cli_error (exit status 2 in the programs): never another exception, a crash or a
// sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/args.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const char* const programs[4] = {"generate", "eval", "allocate", "demo_prune"};
  std::vector<std::string> args{programs[data[0] % 4]};
  std::string word;
  for (std::size_t i = 1; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(word);
      word.clear();
    } else {
      word += static_cast<char>(data[i]);
    }
  }
  if (!word.empty()) args.push_back(word);
  const int r = dcli::parse_args_for_fuzz(args);
  if (r < 0 || r > 2) std::abort();
  return 0;
}
