// The command lines of the example programs, parsed without running them: each parse function
// returns the program's options or throws dcli::cli_error (exit status 2 in the program, via
// parse_or_exit) or dcli::help_requested (status 0). Everything that needs no file is checked
// here (syntax, ranges, names, combinations of options); the programs check the files named
// and what depends on the model or the data afterwards, with the same rules and status.
//
// argv[0] is the program name (ignored), as in main. See each program's --help.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cli/cli.hpp"
#include "minillama/model.hpp"

namespace dcli {

// Upper bound of token counts given on a command line (--sink, --recent, --window, --steps,
// --max-context, --cont, ...): 2^20, far above any context these programs run.
inline constexpr std::uint64_t max_tokens_arg = std::uint64_t{1} << 20;

// ---- generate
struct generate_options {
  std::string model, tokenizer, prompt = "Once upon a time", policy = "snapkv", allocator = "uniform", profile;
  std::size_t steps = 64;
  float temperature = 0.0f;
  std::uint64_t seed = 1;
  double budget = 0.5;
  std::size_t sink = 4, recent = 16, window = 16;
  bool dummy_prefix = true, ids = false, evict = false;
  // Pruning happens at the end of the prefill (policy != none and budget < 1).
  bool pruning() const { return policy != "none" && budget < 1.0; }
};
generate_options parse_generate_args(int argc, const char* const* argv);

// ---- eval
// --random-model SPEC: comma list of dim=,hidden=,layers=,heads=,kv=,seed= (for tests), and for a
// hybrid model window=W (sliding window of the local layers) with period=P (every P-th layer is
// global, llama.cpp's sliding_window_pattern; default 2).
struct random_model_spec {
  int dim = 32, hidden = 64, layers = 3, heads = 4, kv = 2, window = 0, period = 2;
  std::uint64_t seed = 7;
  // The model configuration it describes (context 1024), for a vocabulary of `vocab` tokens.
  minillama::config config(int vocab) const;
};
struct eval_options {
  std::string model = "models/recall-6l/model.bin", tokenizer, random_spec;
  std::string calib = "models/recall-6l/calib.txt", test = "models/recall-6l/test.txt";
  std::string out = "out/eval", profile_dir, profile;
  bool dummy_prefix = false, check = false, quiet = false;
  std::size_t max_seqs = 0, max_context = 0, cont = 32;
  std::vector<std::string> policies{"snapkv", "h2o", "tova", "knorm", "streaming", "random"};
  std::vector<std::string> allocators{"uniform", "pyramid", "proportional", "curve"};
  std::vector<double> budgets{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
  std::vector<double> ratios{0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8};
  std::size_t sink = 4, recent = 16, window = 16;
  double exponent = 1.0, beta = 20.0;
  std::uint64_t seed = 1;
  random_model_spec random;  // parsed random_spec (when not empty)
  // Hybrid models (sliding-window layers): what --budgets cover ("all": every layer, the windows
  // charged first; "global": the global layers only), and whether the profiles measure the
  // sliding layers too (by default they are skipped: they keep their window whatever the budget).
  std::string budget_scope = "all";
  bool profile_local_layers = false;
  // Long-generation mode (--generate M > 0; 0 = the prefill grid): M tokens generated greedily by
  // the full cache between each context and its continuation, replayed by every cell with its
  // cache held at its decode budget (examples/eval/longgen.hpp).
  std::size_t generate = 0;
  std::size_t kl_block = 128;      // generated positions per KL block
  std::size_t rescore_every = 16;  // beta: re-scoring period of the decode-time evictor
  std::optional<std::size_t> decode_slack;  // rows per head over budget (unset: ceil(budget / 16))
  std::size_t threads = 1;                  // sequences run at once
  bool profile_generate = false;  // ablation profiles measured in the long-generation setting
};
eval_options parse_eval_args(int argc, const char* const* argv);

// The checks of eval's options against the data, run once the sets are read (before any
// profile or grid cell): the protected rows (--sink + --recent) must be below the shortest
// context, the smallest --budgets value must keep at least them, snapkv's --window must fit in
// the context. `set` names the data set ("test set", "calibration set") and `flag` its option.
// n_layers: the model's. Throws cli_error naming the flags.
void check_eval_against_data(const eval_options& o, std::size_t shortest_context, std::size_t n_layers,
                             const std::string& set, const std::string& flag, bool check_budgets);

// ---- allocate
struct allocate_options {
  std::string profile;
  double ratio = 0.2;
  bool have_budget = false;
  std::size_t budget = 0, tokens = 384, minimum = 36;
  std::vector<std::size_t> lengths;
  double beta = 20.0, exponent = 1.0;
  bool sweep = false;
  std::vector<std::size_t> local_layers;  // --local-layers: the sliding-window layers (empty: none)
  std::size_t local_window = 1;           // --local-window W of those layers (given with --local-layers)
  bool scope_global = false;              // --budget-scope global: the budget covers the global layers only
};
allocate_options parse_allocate_args(int argc, const char* const* argv);

// ---- demo_prune
struct demo_prune_options {
  std::size_t tokens = 4096;
};
// The demo's fixed setup (8 layers, keep ratios 0.10..0.60, 4 sink + 32 recent rows protected):
// the token count must give every layer at least the protected rows.
inline constexpr double demo_prune_keep_ratios[8] = {0.40, 0.15, 0.10, 0.10, 0.15, 0.20, 0.30, 0.60};
inline constexpr std::size_t demo_prune_sink = 4, demo_prune_recent = 32;
inline constexpr std::size_t demo_prune_max_tokens = 65536;
std::size_t demo_prune_min_tokens();
demo_prune_options parse_demo_prune_args(int argc, const char* const* argv);

// ---- serve
// The batched serving loop over a paged KV pool (examples/serve.cpp).
struct serve_options {
  std::string model = "models/recall-6l/model.bin", tokenizer, data = "models/recall-6l/test.txt";
  std::string policy = "snapkv", allocator = "uniform", profile;
  std::size_t max_seqs = 0;  // requests read from --data (0 = all)
  std::size_t max_context = 0;  // prompt: BOS + its last max_context - 1 tokens (0 = all; else >= 2)
  double pool_mib = 8.0;     // KV pool of all layers, MiB (2^20 bytes)
  std::size_t block_size = 16;
  double budget = 0.2;       // global keep ratio of each prompt's KV cache (1 = no pruning)
  std::string granularity = "token";  // token | block
  std::string pool = "shared";        // shared (one pool for all layers) | per-layer
  std::vector<double> compare;        // --compare: quality table at these budgets instead of serving
  std::size_t sink = 4, recent = 16, window = 16;
  bool quiet = false;
  bool pruning() const { return budget < 1.0; }
};
serve_options parse_serve_args(int argc, const char* const* argv);

// For a fuzz target: args[0] selects the parser ("generate", "eval", "allocate", "demo_prune";
// another name: 3) and is passed as argv[0]. Returns 0 (parsed), 1 (help) or 2 (cli_error);
// never exits; anything else thrown is a bug and propagates.
int parse_args_for_fuzz(const std::vector<std::string>& args);

}  // namespace dcli
