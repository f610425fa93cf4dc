#include "allocators.hpp"

#include <stdexcept>

namespace eval {

const allocator_entry& find_allocator(const std::string& name) {
  for (const allocator_entry& a : allocator_entries)
    if (a.name == name) return a;
  throw std::invalid_argument("unknown allocator '" + name + "'");
}

bool any_needs(const std::vector<std::string>& names, profile_kind k) {
  for (const std::string& n : names)
    if (find_allocator(n).profile == k) return true;
  return false;
}

std::vector<std::size_t> allocate(const allocator_entry& a, const depthkv::allocation_request& req,
                                  const depthkv::sensitivity_profile& profile, const depthkv::allocator_params& params) {
  return depthkv::allocate(a.library, req, profile, params);
}

}  // namespace eval
