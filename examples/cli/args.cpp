// parse_args_for_fuzz: every program's parser behind one entry; see args.hpp.
#include "cli/args.hpp"

namespace dcli {

int parse_args_for_fuzz(const std::vector<std::string>& args) {
  if (args.empty()) return 3;
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  const int argc = static_cast<int>(args.size());
  try {
    if (args[0] == "generate") (void)parse_generate_args(argc, argv.data());
    else if (args[0] == "eval") (void)parse_eval_args(argc, argv.data());
    else if (args[0] == "allocate") (void)parse_allocate_args(argc, argv.data());
    else if (args[0] == "demo_prune") (void)parse_demo_prune_args(argc, argv.data());
    else if (args[0] == "serve") (void)parse_serve_args(argc, argv.data());
    else return 3;
  } catch (const help_requested&) {
    return 1;
  } catch (const cli_error&) {
    return 2;
  }
  return 0;
}

}  // namespace dcli
