// eval's outputs: results.csv (every cell), allocations.csv (every cell's per-layer keep counts
// for the first sequence's context length) and the summary table on stdout.
#pragma once

#include <string>
#include <vector>

#include "grid.hpp"
#include "inputs.hpp"
#include "profiles.hpp"

namespace eval {

struct output_files {
  std::string results, allocations;
};

output_files write_outputs(const run_context& c, const std::vector<sample>& test, const grid_result& g,
                           allocation_cache& alloc);

// The full cache's line, one table per policy (allocators x budgets: mean KL [95% CI] /
// accuracy), and where the outputs and the profiles used are.
void print_summary(const dcli::eval_options& o, const grid_result& g, std::size_t n_test, const output_files& files,
                   const profile_set& profiles);

}  // namespace eval
