// eval's long-generation mode (--generate M): decode-time budgets over a long generation.
//
// Per test sequence: the full cache prefills the context and generates M tokens greedily; then
// the sequence's own continuation (with its retrieval queries) follows. Every cell (policy x
// allocator x keep ratio) replays exactly those tokens (teacher forcing), with its cache pruned
// to its budget at the end of the prefill and held there by depthkv::decode_evictor at every
// generated token: per-layer budgets from depthkv::decode_budget::ratio(keep).split(allocator,
// seen lengths, profile), re-split every --rescore-every tokens, when the policy also re-scores
// (snapkv from its last --window queries, tova from the step's query, h2o from the attention
// the engine accumulates, streaming by position). Metrics per cell: KL(full || pruned) of every
// generated position, as means per block of --kl-block positions and over all of them, and the
// retrieval accuracy of the continuation after the generation.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "depthkv/types.hpp"

#include "inputs.hpp"
#include "profiles.hpp"

namespace eval {

// One cell's metrics, one entry per test sequence.
struct long_cell {
  std::string policy, allocator;
  double budget = 1;
  std::vector<std::vector<double>> block_kl;  // [block][sequence] mean KL over the block's generated positions
  std::vector<double> kl;                     // [sequence] mean KL over all generated positions
  std::vector<double> acc;                    // [sequence] retrieval accuracy of the continuation (NaN: no query)
  std::size_t correct = 0, queries = 0;
  double kv_bytes = 0, kv_bytes_full = 0;  // at the end of each sequence, summed over sequences
  std::size_t evictions = 0;               // decode-time evictions (layer prunes), all sequences
  std::string note;                        // why the cell was skipped
};

struct long_result {
  std::vector<long_cell> cells;  // policies x allocators x budgets, in the order of the options
  long_cell full;                // the full cache ("none" / "full")
  std::size_t generated = 0;     // M
  std::size_t block = 0;         // generated positions per KL block
  bool broken = false;           // a --check invariant failed
};

// The long-generation grid on `test` (models without sliding-window layers).
long_result run_long_grid(const run_context& c, const std::vector<sample>& test, const profile_set& profiles);

// --profile-generate: the calibration sequences with their full-cache long generations (M
// tokens each, computed once), for the ablation loss below.
struct long_calibration;
std::shared_ptr<const long_calibration> prepare_long_calibration(const run_context& c, std::vector<sample> calib);
// The ablation profilers' loss in the long-generation setting: per-layer keep ratios -> mean
// over the calibration sequences of the mean KL over their M generated positions, each global
// layer held at max(protected rows, round(ratio * its current length)) tokens per kv head by
// policy `policy`'s decode-time evictor (as the cells are). Runs sequences on --threads.
std::function<double(depthkv::span<const double>)> make_long_generation_loss(
    const run_context& c, std::shared_ptr<const long_calibration> cal, const std::string& policy);

// long_results.csv (every cell), long_kl_by_position.csv (every cell's KL per block) and the
// summary tables on stdout.
void report_long(const run_context& c, const std::vector<sample>& test, const long_result& g,
                 const profile_set& profiles);

}  // namespace eval
