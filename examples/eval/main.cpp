// eval: does layer-dependent KV pruning win? The evaluation harness of depthkv.
//
// Shows the whole method on a real model: measure each layer's sensitivity to pruning on a
// calibration set (depthkv::profile_ablation, and the CAKE / SqueezeAttention proxies through
// depthkv::cake_profiler / depthkv::squeeze_profiler), split a global KV budget across layers
// with each allocator (depthkv::allocate), prune with each scoring policy, and compare with the
// full cache.
//
// Setting: prefill each sequence's long context with the full cache, prune every layer at the
// end of the prefill to its share of a global budget, then score the continuation (teacher
// forcing). Per cell of the grid allocator x policy x global keep ratio, on the test set:
//   - mean next-token KL(full || pruned) over the continuation positions,
//   - NLL (and perplexity) of the continuation,
//   - retrieval accuracy: a query "?K123;" in the continuation is correct when every answer
//     digit is the model's argmax given the true prefix,
// each with a 95% confidence interval over sequences (mean +- 1.96 sd / sqrt(n)), and the KV
// bytes kept. Allocators that need a sensitivity profile (proportional, curve) use a layer
// ablation profile measured on a disjoint calibration set (the mean KL as loss); the CAKE and
// SqueezeAttention proxy profiles come from the same prefills. Profiles are CSV files, reused
// when they exist.
//
// Run from the repository root (the defaults name the shipped model and data in
// models/recall-6l), after building (scripts/demo.sh does both):
//   build/examples/eval                                  # shipped model and sets, full grid
//   build/examples/eval --policies snapkv --budgets 0.1,0.2,0.4,0.6 --profile-dir models/recall-6l
//   build/examples/eval --max-seqs 4 --budgets 0.2 --allocators uniform,curve,cake,squeeze --out out/quick
//   build/examples/eval --model m.gguf --calib c.txt --test t.txt --out out/mine
//   build/examples/eval --generate 1024 --policies h2o,snapkv,tova,streaming --allocators uniform,proportional,curve
//
// Long-generation mode (--generate M, examples/eval/longgen.hpp): after each context the full
// cache generates M tokens greedily, then the continuation follows; every cell replays those
// tokens with its cache held at its decode budget (depthkv::decode_evictor) and is scored by the
// KL of every generated position (per block of --kl-block positions) and the retrieval after.
//
// Data files (minillama/eval_data.hpp): one sequence per line, `context<TAB>continuation` (text,
// or token ids separated by blanks when every field of the line starts with a digit); a line
// without a TAB is split so that its last --cont tokens are the continuation. Text gets BOS +
// tokens of the context.
//
// The command line (examples/cli/eval_args.cpp, `eval --help`): bad arguments, bad files, and
// options that do not fit the data (protected rows, budgets, window against the shortest
// context) exit with status 2 before anything runs; a failure while running exits with 1, as
// does a broken invariant under --check.
//
// The files: inputs (model, tokenizer, data sets, shared settings), allocators (the allocator
// names), profiles (read, resume or measure them), grid (prefill, prune, score), longgen (the
// --generate mode), report (CSV files and the table), stats (confidence intervals), common
// (files, formatting, progress).
#include <cstdio>
#include <exception>
#include <vector>

#include "cli/args.hpp"
#include "common.hpp"
#include "grid.hpp"
#include "inputs.hpp"
#include "longgen.hpp"
#include "profiles.hpp"
#include "report.hpp"

int main(int argc, char** argv) {
  const dcli::eval_options o = dcli::parse_or_exit("eval", dcli::parse_eval_args, argc, argv);
  const auto t_start = eval::clock_type::now();
  eval::check_model_files(o);
  try {
    const eval::loaded_model model = eval::load_model(o);
    eval::print_model(model);
    const std::size_t n_layers = static_cast<std::size_t>(model.weights.cfg.n_layers);
    const eval::data_reader reader(o, model);
    const std::vector<eval::sample> test = eval::read_test_set(o, reader, n_layers);
    const eval::run_context ctx = eval::make_context(o, model);

    const eval::profile_set profiles = eval::prepare_profiles(ctx, reader);
    eval::print_ablation_profiles(profiles, n_layers);

    if (o.generate) {
      const eval::long_result lg = eval::run_long_grid(ctx, test, profiles);
      eval::report_long(ctx, test, lg, profiles);
      std::fprintf(stderr, "eval: total %.1f s\n", eval::seconds_since(t_start));
      return lg.broken ? 1 : 0;
    }

    eval::allocation_cache alloc(ctx, profiles);
    const eval::grid_result grid = eval::run_grid(ctx, test, profiles, alloc);

    const eval::output_files files = eval::write_outputs(ctx, test, grid, alloc);
    eval::print_summary(o, grid, test.size(), files, profiles);
    std::fprintf(stderr, "eval: total %.1f s\n", eval::seconds_since(t_start));
    return grid.broken ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eval: error: %s\n", e.what());
    return 1;
  }
}
