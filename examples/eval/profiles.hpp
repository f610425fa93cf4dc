// The sensitivity profiles the allocators run on: read the ones present, measure the rest on the
// calibration set.
//
// Ablation profiles (proportional, curve): one per policy, depthkv::profile_ablation with the
// mean KL to the full cache as loss, written to profile_<policy>.csv after every point (an
// interrupted run resumes). Proxy profiles (cake, squeeze): depthkv::cake_profiler and
// depthkv::squeeze_profiler fed from the same calibration prefills. A profile whose model field
// names another model is stale: not used, and a fresh one goes to --out.
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <string>

#include "allocators.hpp"
#include "depthkv/budget/profile.hpp"
#include "inputs.hpp"

namespace eval {

struct profile_set {
  std::map<std::string, depthkv::sensitivity_profile> ablation;  // per policy
  std::map<std::string, std::string> ablation_path;               // per policy: read from / written to
  std::map<std::string, depthkv::sensitivity_profile> proxy;      // per proxy allocator name
  std::map<std::string, std::string> proxy_path;                  // per proxy allocator name

  // The profile allocator `a` runs on in a cell of `policy` (an empty one when it needs none).
  const depthkv::sensitivity_profile& for_cell(const allocator_entry& a, const std::string& policy) const;
  // The files of the profiles the requested allocators used.
  std::set<std::string> files_used(const dcli::eval_options& o) const;
};

// Every profile the requested allocators need, read or measured (then written).
profile_set prepare_profiles(const run_context& c, const data_reader& reader);
// Each ablation profile's delta KL per layer at keep 0.1, 0.2, 0.4, on stderr.
void print_ablation_profiles(const profile_set& s, std::size_t n_layers);

}  // namespace eval
