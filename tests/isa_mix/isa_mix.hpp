// Shared body of the two translation units of test_isa_mix (see generic_tu.cpp).
#pragma once

#include <string>
#include <typeinfo>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"

namespace isa_mix {

struct tu_result {
  depthkv::isa active;         // the path the kernels ran on
  std::string cache_type;      // mangled name of kv_cache<float> in this TU
  std::vector<float> keys;     // head 0 keys after retain({1, 3, 4})
  std::vector<depthkv::pos_t> positions;
};

// Internal linkage: each TU gets its own copy, compiled with its own flags.
namespace {
inline tu_result run_here() {
  constexpr std::size_t n = 6, dim = 64;
  depthkv::kv_cache<float> c(1, 1, dim, n);
  std::vector<float> k(n * dim), v(n * dim);
  for (std::size_t i = 0; i < k.size(); ++i) {
    k[i] = static_cast<float>(i);
    v[i] = -static_cast<float>(i);
  }
  using view = depthkv::kv_view<const float>;
  std::vector<depthkv::pos_t> pos = {10, 11, 12, 13, 14, 15};
  c.append(0, view::nhd(k.data(), n, 1, dim), view::nhd(v.data(), n, 1, dim), pos);
  const std::vector<depthkv::index_t> keep = {1, 3, 4};
  c.retain(0, keep);
  tu_result r{depthkv::active_isa(), typeid(depthkv::kv_cache<float>).name(), {}, {}};
  const auto rows = c.keys(0, 0);
  for (std::size_t i = 0; i < rows.n; ++i)
    for (std::size_t d = 0; d < dim; ++d) r.keys.push_back(rows.data[i * rows.stride + d]);
  const auto p = c.positions(0, 0);
  r.positions.assign(p.begin(), p.end());
  return r;
}
}  // namespace

tu_result run_generic();  // defined in generic_tu.cpp

}  // namespace isa_mix
