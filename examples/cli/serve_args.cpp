// serve's command line; see args.hpp.
#include <iterator>

#include "cli/args.hpp"
#include "cli/option_parser.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/score/policies.hpp"

namespace dcli {

serve_options parse_serve_args(int argc, const char* const* argv) {
  serve_options o;
  const std::vector<std::string> policies(std::begin(depthkv::policy_names), std::end(depthkv::policy_names));
  const std::vector<std::string> allocators(depthkv::allocator_names.begin(), depthkv::allocator_names.end());
  const std::string T = std::to_string(max_tokens_arg);
  option_parser p("serve",
                  "serve: a batched serving loop over a fixed paged KV pool. Requests (the prompts of --data)\n"
                  "are admitted while the pool has the blocks for their prompt and continuation, prefilled,\n"
                  "pruned to a per-layer share of the budget (the freed blocks go back to the pool), then\n"
                  "decoded round-robin along their continuation (teacher-forced); finished ones return every\n"
                  "block. Prints per step: running sequences, blocks used/free, decode tokens/s; at the end\n"
                  "KL and retrieval accuracy against an unpruned run of the same requests.");
  p.text("--model", o.model, "PATH", "llama2.c checkpoint or GGUF file (default models/recall-6l/model.bin)");
  p.text("--tokenizer", o.tokenizer, "PATH", "llama2.c tokenizer.bin (default: the one next to a llama2.c model)");
  p.text("--data", o.data, "PATH", "requests: eval data lines context<TAB>continuation (default models/recall-6l/test.txt)");
  p.count("--max-seqs", o.max_seqs, 0, max_tokens_arg, "requests read from --data, 0 = all (default)");
  p.count("--max-context", o.max_context, 0, max_tokens_arg,
          "cut each prompt to BOS + its last N - 1 tokens, 0 = whole prompts (default), else >= 2");
  real_range mib;
  mib.lo = 0;
  mib.lo_open = true;
  mib.hi = 65536;
  p.real("--pool-mib", o.pool_mib, mib, "KV pool of all layers in MiB, in (0, 65536] (default 8)");
  p.choice("--pool", o.pool, {"shared", "per-layer"},
           "shared: one pool of blocks for all layers (a layer with a larger budget takes more of it); per-layer: "
           "the MiB split evenly, one pool per layer (default shared)");
  p.count("--block-size", o.block_size, 1, 4096, "tokens per block, 1..4096 (default 16)");
  p.choice("--policy", o.policy, policies, "snapkv|h2o|tova|knorm|streaming|random (default snapkv)");
  p.choice("--allocator", o.allocator, allocators,
           "uniform|pyramid|proportional|curve (default uniform); proportional and curve need --profile");
  p.text("--profile", o.profile, "CSV", "sensitivity profile CSV measured on this model (eval writes them)");
  real_range unit = mib;  // (0, 1]
  unit.hi = 1;
  p.real("--budget", o.budget, unit, "global keep ratio of each prompt's KV cache in (0, 1] (default 0.2; 1 = no pruning)");
  p.choice("--granularity", o.granularity, {"token", "block"},
           "token: keep the best tokens, moved to the first blocks; block: keep the best whole blocks (default token)");
  p.real_list("--compare", o.compare, unit,
              "instead of serving: KL and accuracy of dense, paged token- and block-granular pruning at the same "
              "memory, at each keep ratio of the list");
  p.count("--sink", o.sink, 0, max_tokens_arg, "protected first rows per head, 0.." + T + " (default 4)");
  p.count("--recent", o.recent, 0, max_tokens_arg, "protected last rows per head, 0.." + T + " (default 16)");
  p.count("--window", o.window, 1, max_tokens_arg, "observation window (snapkv, tova), 1.." + T + " (default 16)");
  p.flag("--quiet", o.quiet, true, "no per-step lines");
  p.footer(
      "Example (the shipped model, 64 requests of ~1000 tokens, an 8 MiB pool):\n"
      "  serve --pool-mib 8 --policy snapkv --allocator uniform --budget 0.2\n"
      "A pool too small for one request's prompt, or a budget below the protected rows, is refused\n"
      "naming the flag. Bad arguments exit with status 2.\n");
  p.parse(argc, argv);
  if (o.max_context == 1) throw cli_error("--max-context: '1' must be 0 (all) or >= 2");
  if ((o.allocator == "proportional" || o.allocator == "curve") && o.profile.empty())
    throw cli_error("--allocator " + o.allocator + " needs --profile CSV (a sensitivity profile of this model)");
  return o;
}

}  // namespace dcli
