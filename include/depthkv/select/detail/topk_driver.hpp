// The top-k kernel paths and the switch that runs one of them (internal).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>

#include "depthkv/detail/target.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/select/detail/topk_avx2.hpp"
#include "depthkv/select/detail/topk_avx512.hpp"
#include "depthkv/select/detail/topk_common.hpp"
#include "depthkv/select/detail/topk_scalar.hpp"
#include "depthkv/select/detail/topk_types.hpp"

namespace depthkv::detail {
DEPTHKV_BASELINE_BEGIN

// Top-k of one validated row on path `path` (compiled in and supported by the CPU).
inline std::size_t topk_row_on(isa path, const float* s, std::size_t n, std::size_t k, index_t* out,
                               const topk_options& opt, topk_scratch& sc) {
  switch (path) {
#if DEPTHKV_HAVE_AVX512
    case isa::avx512: return (*DEPTHKV_AVX512_FN(topk_row))(s, n, k, out, opt, sc);
#endif
#if DEPTHKV_HAVE_AVX2
    case isa::avx2: return (*DEPTHKV_AVX2_FN(topk_row))(s, n, k, out, opt, sc);
#endif
    default: return scalar::topk_row(s, n, k, out, opt, sc);
  }
}

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail
