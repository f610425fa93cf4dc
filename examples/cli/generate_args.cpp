// generate's command line; see args.hpp.
#include <iterator>

#include "cli/args.hpp"
#include "cli/option_parser.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/score/policies.hpp"
#include "minillama/eval_data.hpp"

namespace dcli {

generate_options parse_generate_args(int argc, const char* const* argv) {
  generate_options o;
  std::vector<std::string> policies(std::begin(depthkv::policy_names), std::end(depthkv::policy_names));
  policies.push_back("none");
  const std::vector<std::string> allocators(depthkv::allocator_names.begin(), depthkv::allocator_names.end());
  const std::string T = std::to_string(max_tokens_arg);

  option_parser p("generate",
                  "generate: prompt -> text with the minillama engine, pruning the KV cache at the end of the\n"
                  "prefill with a depthkv policy and a per-layer allocation of a global budget. Prints the text,\n"
                  "then tokens/s (prefill and decode) and KV memory in use against the full cache.");
  p.text("--model", o.model, "PATH", "llama2.c checkpoint or GGUF file (the GGUF vocabulary is used unless --tokenizer)");
  p.required("--model");
  p.text("--tokenizer", o.tokenizer, "PATH", "llama2.c tokenizer.bin");
  p.text("--prompt", o.prompt, "TEXT", "the prompt (default \"Once upon a time\"); token ids with --ids");
  p.count("--steps", o.steps, 0, max_tokens_arg,
          "tokens to generate, 0.." + T + " (default 64); the prompt plus --steps must fit in the model's context "
          "length (seq_len), a longer request is rejected");
  double temperature = 0.0;
  real_range tr;
  tr.lo = 0;
  tr.hi = 100;
  p.real("--temperature", temperature, tr, "sampling temperature in [0, 100] (default 0 = argmax)");
  p.u64("--seed", o.seed, "seed of sampling and of the random policy, 0..2^64-1 (default 1)");
  p.choice("--policy", o.policy, policies, "snapkv|h2o|tova|knorm|streaming|random|none (default snapkv)");
  p.choice("--allocator", o.allocator, allocators,
           "uniform|pyramid|proportional|curve (default uniform); proportional and curve need --profile");
  p.text("--profile", o.profile, "CSV", "sensitivity profile CSV measured on this model (eval writes them)");
  real_range br;
  br.lo = 0;
  br.lo_open = true;
  br.hi = 1;
  p.real("--budget", o.budget, br, "global keep ratio of the prompt's KV cache in (0, 1] (default 0.5; 1 = no pruning)");
  p.count("--sink", o.sink, 0, max_tokens_arg, "protected first rows per head, 0.." + T + " (default 4)");
  p.count("--recent", o.recent, 0, max_tokens_arg, "protected last rows per head, 0.." + T + " (default 16)");
  p.count("--window", o.window, 1, max_tokens_arg,
          "observation window (snapkv, tova), 1.." + T + " (default 16; at most the prompt's length is used)");
  p.flag("--no-dummy-prefix", o.dummy_prefix, false, "no sentencepiece-style leading space (character vocabularies)");
  p.flag("--ids", o.ids, true, "the prompt is a list of token ids (\"1 45 9\"), output ids too");
  p.flag("--evict", o.evict, true,
         "also hold every layer at its budget during decode (policy h2o or streaming; depthkv's "
         "decode_evictor: a layer over its budget by 1/16 is pruned back to it in one pass; per-head lengths for h2o)");
  p.footer(
      "Examples:\n"
      "  generate --model model.bin --tokenizer tokenizer.bin --prompt \"Once upon a time\"\n"
      "           --policy snapkv --allocator uniform --budget 0.3 --steps 64\n"
      "  generate --model model.gguf --prompt \"...\" --policy h2o --allocator curve --profile profile.csv\n"
      "A prompt no longer than the protected rows (--sink + --recent) is kept whole (said on stderr); a\n"
      "budget below the protected rows is raised to them. A profile whose model field names another\n"
      "model (content hash) is refused. Bad arguments exit with status 2.\n");
  p.parse(argc, argv);
  o.temperature = static_cast<float>(temperature);

  if ((o.allocator == "proportional" || o.allocator == "curve") && o.profile.empty())
    throw cli_error("--allocator " + o.allocator +
                    " needs --profile CSV (a sensitivity profile of this model, e.g. written by eval)");
  if (o.evict && !(o.pruning() && (o.policy == "h2o" || o.policy == "streaming")))
    throw cli_error("--evict needs --policy h2o or streaming and --budget < 1");
  if (o.ids) {
    try {
      if (minillama::parse_token_ids(o.prompt, 0).empty()) throw cli_error("--prompt: no token ids (--ids)");
    } catch (const minillama::token_id_error& e) {
      throw cli_error(std::string("--prompt: ") + e.what());
    }
  }
  return o;
}

}  // namespace dcli
