// eval's command line and its checks against the data; see args.hpp.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "cli/args.hpp"
#include "cli/option_parser.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/score/policies.hpp"
#include "eval/allocators.hpp"
#include "minillama/model.hpp"

namespace dcli {

namespace {

real_range unit_ratio() {  // (0, 1]
  real_range r;
  r.lo = 0;
  r.lo_open = true;
  r.hi = 1;
  return r;
}

std::string fmt_g(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", x);
  return b;
}

random_model_spec parse_random_spec(const std::string& spec) {
  const std::string flag = "--random-model";
  random_model_spec r;
  for (const std::string& kv : to_items(flag, spec)) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos) throw cli_error(flag + ": expected key=value, got '" + kv + "'");
    const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1), f = flag + " " + k;
    if (k == "dim") r.dim = static_cast<int>(to_int(f, v, 1, 4096));
    else if (k == "hidden") r.hidden = static_cast<int>(to_int(f, v, 1, 16384));
    else if (k == "layers") r.layers = static_cast<int>(to_int(f, v, 1, 256));
    else if (k == "heads") r.heads = static_cast<int>(to_int(f, v, 1, 4096));
    else if (k == "kv") r.kv = static_cast<int>(to_int(f, v, 1, 4096));
    else if (k == "seed") r.seed = to_u64(f, v);
    else if (k == "window") r.window = static_cast<int>(to_int(f, v, 1, 1 << 20));
    else if (k == "period") r.period = static_cast<int>(to_int(f, v, 1, 256));
    else throw cli_error(flag + ": unknown key '" + k + "' (known: dim, hidden, layers, heads, kv, seed, window, period)");
  }
  try {
    r.config(256).validate(flag);
  } catch (const depthkv::error& e) {
    throw cli_error(e.what());
  }
  return r;
}

bool has(const std::vector<std::string>& v, const std::string& x) { return std::find(v.begin(), v.end(), x) != v.end(); }

}  // namespace

minillama::config random_model_spec::config(int vocab) const {
  minillama::config c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.vocab_size = vocab;
  c.seq_len = 1024;
  if (window > 0) {
    c.sliding_window = window;
    c.local_layers = minillama::local_layer_pattern(layers, period);
  }
  return c;
}

eval_options parse_eval_args(int argc, const char* const* argv) {
  eval_options o;
  const std::vector<std::string> policies(std::begin(depthkv::policy_names), std::end(depthkv::policy_names));
  std::vector<std::string> allocators;  // the library's, then eval's proxy baselines: one table
  for (const eval::allocator_entry& e : eval::allocator_entries) allocators.emplace_back(e.name);
  const std::string T = std::to_string(max_tokens_arg);

  option_parser p("eval",
                  "eval: does layer-dependent KV pruning win? Prefill each test sequence's context with the full\n"
                  "cache, prune every layer at the end of the prefill to its share of a global budget, score the\n"
                  "continuation: per allocator x policy x keep ratio, KL to the full cache, NLL and retrieval\n"
                  "accuracy with 95% confidence intervals over sequences.");
  p.text("--model", o.model, "PATH", "llama2.c checkpoint or GGUF (default models/recall-6l/model.bin)");
  p.text("--tokenizer", o.tokenizer, "PATH", "llama2.c tokenizer (default: tokenizer.bin next to a llama2.c model)");
  p.flag("--dummy-prefix", o.dummy_prefix, true,
         "sentencepiece-style leading space when encoding text (off: character vocabularies)");
  p.text("--random-model", o.random_spec, "SPEC",
         "random weights instead of a file, byte vocabulary; SPEC = comma list of dim=,hidden=,layers=,heads=,"
         "kv=,seed= (for tests; dim <= 4096, hidden <= 16384, layers <= 256)");
  p.text("--calib", o.calib, "PATH", "calibration set (default models/recall-6l/calib.txt)");
  p.text("--test", o.test, "PATH", "test set (default models/recall-6l/test.txt)");
  p.count("--max-seqs", o.max_seqs, 0, std::uint64_t{1} << 24, "use the first N sequences of each set (0 = all)");
  p.count("--max-context", o.max_context, 0, max_tokens_arg,
          "keep BOS + the last N-1 context tokens (0 = all, else 2.." + T + ")");
  p.count("--cont", o.cont, 2, max_tokens_arg, "continuation length of lines without a TAB, 2.." + T + " (default 32)");
  p.choice_list("--policies", o.policies, policies, "snapkv,h2o,tova,knorm,streaming,random (default all)");
  p.choice_list("--allocators", o.allocators, allocators,
                "uniform,pyramid,proportional,curve[,cake,squeeze] (default the first four; "
                "cake/squeeze = proportional on the CAKE / SqueezeAttention proxy profile)");
  p.real_list("--budgets", o.budgets, unit_ratio(), "global keep ratios, each in (0, 1] (default 0.1,0.2,...,0.9)");
  p.real_list("--ratios", o.ratios, unit_ratio(),
              "keep ratios of the ablation profile, each in (0, 1] (default 0.05,0.1,0.15,0.2,0.3,0.4,0.6,0.8)");
  p.count("--sink", o.sink, 0, max_tokens_arg, "protected first rows per head, 0.." + T + " (default 4)");
  p.count("--recent", o.recent, 0, max_tokens_arg,
          "protected last rows per head, 0.." + T + " (default 16); the per-layer minimum is sink + recent, which "
          "must be below the context length");
  p.count("--window", o.window, 1, max_tokens_arg,
          "observation window (snapkv), 1.." + T + " (default 16); at most the shortest context");
  p.real("--exponent", o.exponent, at_least(0), "proportional allocator's exponent, finite and >= 0 (default 1)");
  p.real("--beta", o.beta, at_least(1), "pyramid allocator's beta, finite and >= 1 (default 20)");
  p.text("--profile-dir", o.profile_dir, "DIR",
         "where profile_<policy>.csv, profile_cake.csv, profile_squeeze.csv are read if present, else "
         "measured and written (default: the --out directory)");
  p.text("--profile", o.profile, "PATH",
         "one ablation profile for every policy (read if present, else measured with the first policy and written)");
  p.u64("--seed", o.seed, "seed of the random policy, 0..2^64-1 (default 1)");
  p.text("--out", o.out, "DIR", "results.csv, allocations.csv, profiles (default out/eval)");
  p.flag("--check", o.check, true,
         "verify invariants (allocation sums, KV bytes, KL = 0 at keep 1); exit 1 if broken");
  p.flag("--quiet", o.quiet, true, "no progress bar");
  p.choice("--budget-scope", o.budget_scope, {"all", "global"},
           "hybrid models: the keep ratios of --budgets are of all layers' tokens (all: the sliding-window "
           "layers' windows are charged first) or of the global layers' tokens (global: the windows come on top); "
           "default all");
  p.flag("--profile-local-layers", o.profile_local_layers, true,
         "hybrid models: also profile the sliding-window layers (skipped by default: they keep their window)");
  p.count("--generate", o.generate, 0, max_tokens_arg,
          "long-generation mode: N tokens generated greedily by the full cache after each context, then its "
          "continuation; every cell replays them with its cache held at its decode budget (keep ratio of the "
          "current length, re-split at every token); KL per generated position, retrieval after them. 0 = the "
          "prefill grid (default), else 1.." + T);
  p.count("--kl-block", o.kl_block, 1, max_tokens_arg,
          "--generate: generated positions per block of the KL-by-position table, 1.." + T + " (default 128)");
  p.count("--rescore-every", o.rescore_every, 1, max_tokens_arg,
          "--generate: the decode-time evictor re-scores a layer over its budget every N tokens, 1.." + T +
              " (default 16)");
  p.count("--threads", o.threads, 1, 256,
          "--generate: sequences run at once, 1..256 (default 1; the results do not depend on it)");
  p.flag("--profile-generate", o.profile_generate, true,
         "--generate: measure the ablation profiles in the long-generation setting (KL over the N generated "
         "tokens of the calibration sequences, one layer held at each --ratios value), into "
         "profile_<policy>_generate<N>.csv");
  std::string slack_text;
  p.text("--decode-slack", slack_text, "N",
         "--generate: rows per kv head a layer may hold over its budget before it is pruned back, 0.." + T +
             " (default ceil(budget / 16); 0: evict one token at a time)");
  p.footer(
      "Data: one sequence per line, context<TAB>continuation, as text (tokenized; BOS prepended) or as\n"
      "token ids separated by blanks (used as given; a line whose every field starts with a digit is read\n"
      "as ids, and each must be a valid id). A line without a TAB is split so that its last --cont tokens\n"
      "are the continuation. Retrieval queries ?K123; in the continuation are scored when a tokenizer is\n"
      "known. A profile whose model field names another model (content hash) is not used: a fresh one is\n"
      "measured into --out. Bad arguments, and options that do not fit the data (protected rows, budgets,\n"
      "window against the shortest context), exit with status 2 before anything runs.\n");
  p.parse(argc, argv);

  if (o.max_context == 1) throw cli_error("--max-context: '1' must be 0 (all) or >= 2");
  if (o.profile_generate && !o.generate) throw cli_error("--profile-generate: needs --generate N (N > 0)");
  if (!slack_text.empty()) o.decode_slack = static_cast<std::size_t>(to_int("--decode-slack", slack_text, 0, max_tokens_arg));
  if (!o.random_spec.empty()) o.random = parse_random_spec(o.random_spec);
  // With --max-context the context is at most that long: check what needs no data now.
  if (o.max_context) check_eval_against_data(o, o.max_context, 1, "data", "--max-context", true);
  return o;
}

void check_eval_against_data(const eval_options& o, std::size_t ctx, std::size_t n_layers, const std::string& set,
                             const std::string& flag, bool check_budgets) {
  const std::size_t prot = o.sink + o.recent;
  const std::string where = set == "data" ? "the context length of at most " + std::to_string(ctx) + " tokens (" +
                                                flag + " " + std::to_string(o.max_context) + ")"
                                          : "the " + set + "'s shortest context of " + std::to_string(ctx) +
                                                " tokens (" + flag + " " +
                                                (flag == "--test" ? o.test : o.calib) +
                                                (o.max_context ? ", --max-context " + std::to_string(o.max_context)
                                                               : std::string()) +
                                                ")";
  if (prot >= ctx)
    throw cli_error("--sink " + std::to_string(o.sink) + " + --recent " + std::to_string(o.recent) + " = " +
                    std::to_string(prot) + " protected rows per layer are not below " + where +
                    ": nothing could be pruned (every cell would be skipped)");
  if (has(o.policies, "snapkv") && o.window > ctx)
    throw cli_error("--window " + std::to_string(o.window) + " exceeds " + where +
                    ": snapkv scores with the last --window queries of the prefill");
  if (check_budgets && !o.budgets.empty()) {
    const double b = *std::min_element(o.budgets.begin(), o.budgets.end());
    // The allocators' rounding (depthkv::resolve): floor(ratio * total + 0.5) tokens of total.
    const long double total = static_cast<long double>(n_layers) * static_cast<long double>(ctx);
    const long double kept = std::floor(static_cast<long double>(b) * total + 0.5L);
    if (kept < static_cast<long double>(n_layers) * static_cast<long double>(prot))
      throw cli_error("--budgets: the smallest keep ratio " + fmt_g(b) + " keeps " +
                      fmt_g(static_cast<double>(kept) / static_cast<double>(n_layers)) + " tokens per layer of " +
                      where + ", below the " + std::to_string(prot) + " protected rows (--sink " +
                      std::to_string(o.sink) + " + --recent " + std::to_string(o.recent) +
                      "): its cells would be skipped");
  }
}

}  // namespace dcli
