// allocate's command line; see args.hpp.
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
  p.footer("Bad arguments, and a budget outside [layers x --min, total length], exit with status 2.\n");
  p.parse(argc, argv);
  if (p.given("--ratio") && p.given("--budget")) throw cli_error("--ratio and --budget exclude each other");
  if (p.given("--tokens") && p.given("--lengths")) throw cli_error("--tokens and --lengths exclude each other");
  o.have_budget = p.given("--budget");
  return o;
}

}  // namespace dcli
