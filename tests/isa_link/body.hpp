// Shared body of the two translation units of the isa_link test (tu_avx2.cpp, tu_v4.cpp): top-k,
// compaction and window scoring through the public entries, on fixed inputs. Internal linkage
// (static): each TU runs its own copy of this body, compiled with its own -m flags, while the
// depthkv code it calls is shared between the TUs as the linker resolves it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <typeinfo>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/isa.hpp"
#include "isa_link.hpp"
#include "depthkv/score/window.hpp"
#include "depthkv/select/compact.hpp"
#include "depthkv/select/topk.hpp"

namespace isa_link {

static result run_body() {
  constexpr std::size_t n = 6000, k = 700, d = 128, w = 8;
  static float scores[n], keys[n * d], q[w * d], out[n];
  static depthkv::index_t idx[k];
  std::uint32_t s = 12345;
  auto next = [&s] {
    s = s * 1664525u + 1013904223u;
    return static_cast<float>(s >> 8) / 16777216.f - 0.5f;
  };
  for (float& x : scores) x = next();
  for (float& x : keys) x = next();
  for (float& x : q) x = next();
  std::uint64_t h = 1469598103934665603ull;
  depthkv::topk_scratch sc;
  const std::size_t m = depthkv::topk(depthkv::span<const float>(scores, n), k, depthkv::span<depthkv::index_t>(idx, k),
                                      depthkv::topk_options{4, 16}, sc);
  for (std::size_t i = 0; i < m; ++i) h = mix(h, idx[i]);
  depthkv::compact_rows(depthkv::rows_view<float>{keys, n, d, static_cast<std::ptrdiff_t>(d)},
                        depthkv::span<const depthkv::index_t>(idx, m));
  depthkv::window_scratch ws;
  depthkv::window_scores(depthkv::window_queries::dense(q, depthkv::kv_shape(depthkv::heads{1}, depthkv::tokens{w}, depthkv::dim{d})), 1, 0,
                         depthkv::rows_view<const float>{keys, m, d, static_cast<std::ptrdiff_t>(d)}, {},
                         depthkv::span<float>(out, m), ws);
  for (std::size_t j = 0; j < m; ++j) {
    std::uint32_t bits;
    __builtin_memcpy(&bits, &out[j], sizeof bits);
    h = mix(h, bits);  // the same path gives the same bits in every TU
  }
  return {h, static_cast<int>(depthkv::active_isa()), typeid(depthkv::kv_cache<float>).name()};
}

}  // namespace isa_link
