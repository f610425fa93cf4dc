// The grid: every test sequence is prefilled once with the full cache, then every cell (policy x
// allocator x global keep ratio) prunes a copy of that cache at the end of the prefill and
// scores the continuation against the full cache.
#pragma once

#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "inputs.hpp"
#include "profiles.hpp"

namespace eval {

// One cell's metrics, one entry per test sequence.
struct cell {
  std::string policy, allocator;
  double budget = 1;
  std::vector<double> kl, nll, acc;
  std::size_t correct = 0, queries = 0;
  double kv_bytes = 0, kv_bytes_full = 0;
  double kv_bytes_local = 0;  // of kv_bytes: the sliding-window layers' (hybrid models)
  std::size_t kept = 0, total = 0;  // tokens per head summed over layers (first sequence)
  double predicted = NAN;           // additive prediction from the ablation profile (same lengths)
  std::string note;                 // why the cell was skipped
};

// Per-layer keep counts of a cell for the given per-layer lengths, computed once per (cell,
// lengths). Throws depthkv::error when the allocator cannot meet the request.
class allocation_cache {
 public:
  allocation_cache(const run_context& c, const profile_set& profiles) : c_(c), profiles_(profiles) {}
  const std::vector<std::size_t>& get(const cell& x, const std::vector<std::size_t>& lengths);
  // The request behind get(): the cell's keep ratio over these lengths, the protected rows as
  // every layer's minimum, and a hybrid model's sliding layers and budget scope.
  depthkv::allocation_request request(const cell& x, const std::vector<std::size_t>& lengths) const;

 private:
  const run_context& c_;
  const profile_set& profiles_;
  std::map<std::string, std::vector<std::size_t>> cache_;
};

struct grid_result {
  std::vector<cell> cells;  // policies x allocators x budgets, in the order of the options
  cell full;                // the full cache ("none" / "full")
  bool broken = false;      // a --check invariant failed
};

// One Cell (policy, allocator, budget) per combination of the options, in their order: policies,
// then allocators, then budgets.
template <class Cell>
std::vector<Cell> cells_of(const dcli::eval_options& o) {
  std::vector<Cell> cells;
  for (const auto& p : o.policies)
    for (const auto& a : o.allocators)
      for (double b : o.budgets) {
        Cell x;
        x.policy = p;
        x.allocator = a;
        x.budget = b;
        cells.push_back(std::move(x));
      }
  return cells;
}

grid_result run_grid(const run_context& c, const std::vector<sample>& test, const profile_set& profiles,
                     allocation_cache& alloc);

}  // namespace eval
