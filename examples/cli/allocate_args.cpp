// allocate's command line; see args.hpp.
#include <algorithm>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "cli/option_parser.hpp"

namespace dcli {

allocate_options parse_allocate_args(int argc, const char* const* argv) {
  allocate_options o;
  constexpr std::uint64_t kLen = std::uint64_t{1} << 24, kBudget = std::uint64_t{1} << 40;
  real_range ratio;
  ratio.lo = 0;
  ratio.lo_open = true;
  ratio.hi = 1;
  option_parser p("allocate",
                  "allocate: reads a sensitivity profile (CSV) and prints the per-layer keep counts of every\n"
                  "allocator side by side, with totals and the loss each allocation predicts from the profile.");
  p.positional("PROFILE.csv", o.profile, "sensitivity profile CSV", true);
  p.real("--ratio", o.ratio, ratio, "global keep ratio in (0, 1] (default 0.2)");
  p.count("--budget", o.budget, 0, kBudget, "global budget in tokens (instead of --ratio), at most the total length");
  p.count("--tokens", o.tokens, 1, kLen, "length of every layer, 1..2^24 (default 384)");
  p.count_list("--lengths", o.lengths, 0, kLen, "per-layer lengths a,b,... (instead of --tokens), one per layer");
  p.count("--min", o.minimum, 0, kLen, "per-layer minimum keep count (default 36 = 4 sink + 32 window)");
  p.real("--beta", o.beta, at_least(1), "pyramid allocator's beta, finite and >= 1 (default 20)");
  p.real("--exponent", o.exponent, at_least(0), "proportional allocator's exponent, finite and >= 0 (default 1)");
  p.flag("--sweep", o.sweep, true, "also print the predicted loss of each allocator over a range of keep ratios");
  p.count_list("--local-layers", o.local_layers, 0, kLen,
               "sliding-window (local) layers a,b,... (0-based, with --local-window): each keeps min(length, W)");
  p.count("--local-window", o.local_window, 1, kLen, "window W of the --local-layers, 1..2^24");
  std::string scope = "all";
  p.choice("--budget-scope", scope, {"all", "global"},
           "with --local-layers, what --ratio/--budget cover: all (the windows are charged first, the rest goes "
           "to the global layers; default) or global (the global layers only, the windows on top)");
  p.footer("Bad arguments, and a budget outside [layers x --min, total length], exit with status 2.\n");
  p.parse(argc, argv);
  if (p.given("--ratio") && p.given("--budget")) throw cli_error("--ratio and --budget exclude each other");
  if (p.given("--tokens") && p.given("--lengths")) throw cli_error("--tokens and --lengths exclude each other");
  if (p.given("--local-layers") != p.given("--local-window"))
    throw cli_error("--local-layers and --local-window go together");
  if (p.given("--budget-scope") && !p.given("--local-layers"))
    throw cli_error("--budget-scope needs --local-layers (without local layers both scopes are the same)");
  std::vector<std::size_t> sorted = o.local_layers;
  std::sort(sorted.begin(), sorted.end());
  const auto twice = std::adjacent_find(sorted.begin(), sorted.end());
  if (twice != sorted.end()) throw cli_error("--local-layers: layer " + std::to_string(*twice) + " is given twice");
  o.have_budget = p.given("--budget");
  o.scope_global = scope == "global";
  return o;
}

}  // namespace dcli
