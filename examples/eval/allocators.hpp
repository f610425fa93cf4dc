// eval's allocator names, and the one place they become a depthkv allocator.
//
// Four are the library's (depthkv::allocator_names, built by depthkv::visit_allocator through
// depthkv::allocate): uniform and pyramid need no profile, proportional and curve run on the
// layer-ablation profile of the cell's policy. Two are proxy-profile baselines: "cake" and
// "squeeze" are the library's proportional allocator run on the CAKE (depthkv::cake_profiler)
// or SqueezeAttention (depthkv::squeeze_profiler) profile measured on the calibration prefills.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"

namespace eval {

// Where an allocator's sensitivity profile comes from.
enum class profile_kind { none, ablation, proxy };

struct allocator_entry {
  std::string_view name;         // as given to --allocators
  std::string_view library;      // the depthkv allocator it runs (one of depthkv::allocator_names)
  profile_kind profile;
  std::string_view proxy_title;  // the proxy method in messages ("" when not a proxy)
};

// Every name --allocators accepts: the library's, then the proxies.
inline constexpr allocator_entry allocator_entries[] = {
    {depthkv::uniform_allocator::name, depthkv::uniform_allocator::name, profile_kind::none, ""},
    {depthkv::pyramid_allocator::name, depthkv::pyramid_allocator::name, profile_kind::none, ""},
    {depthkv::proportional_allocator::name, depthkv::proportional_allocator::name, profile_kind::ablation, ""},
    {depthkv::curve_allocator::name, depthkv::curve_allocator::name, profile_kind::ablation, ""},
    {"cake", depthkv::proportional_allocator::name, profile_kind::proxy, "CAKE"},
    {"squeeze", depthkv::proportional_allocator::name, profile_kind::proxy, "SqueezeAttention"},
};

// The entry called `name` (std::invalid_argument for an unknown one: the parser checked them).
const allocator_entry& find_allocator(const std::string& name);
// True when one of `names` runs on a profile of kind `k`.
bool any_needs(const std::vector<std::string>& names, profile_kind k);

// Runs entry `a` on `profile` (ignored by allocators that need none).
std::vector<std::size_t> allocate(const allocator_entry& a, const depthkv::allocation_request& req,
                                  const depthkv::sensitivity_profile& profile, const depthkv::allocator_params& params);

}  // namespace eval
