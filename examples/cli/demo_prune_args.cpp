// demo_prune's command line; see args.hpp.
#include <cmath>

#include "cli/args.hpp"
#include "cli/option_parser.hpp"

namespace dcli {

std::size_t demo_prune_min_tokens() {
  // The smallest count for which every layer's llround(ratio * n) holds the protected rows.
  const std::size_t prot = demo_prune_sink + demo_prune_recent;
  for (std::size_t n = prot;; ++n) {
    bool ok = true;
    for (const double r : demo_prune_keep_ratios)
      ok = ok && static_cast<std::size_t>(std::llround(r * static_cast<double>(n))) >= prot;
    if (ok) return n;
  }
}

demo_prune_options parse_demo_prune_args(int argc, const char* const* argv) {
  demo_prune_options o;
  const std::uint64_t lo = demo_prune_min_tokens(), hi = demo_prune_max_tokens;
  std::string tokens;
  option_parser p("demo_prune",
                  "demo_prune: fill an 8-layer KV cache, prune each layer to its own keep ratio with top-k over\n"
                  "the negative key norm (knorm), and report memory before/after.");
  p.positional("TOKENS", tokens,
               "tokens per head, " + std::to_string(lo) + ".." + std::to_string(hi) +
                   " (default 4096; every layer must keep its 4 sink + 32 recent rows)",
               false);
  p.parse(argc, argv);
  if (p.given("TOKENS")) o.tokens = static_cast<std::size_t>(to_count("TOKENS", tokens, lo, hi));
  return o;
}

}  // namespace dcli
