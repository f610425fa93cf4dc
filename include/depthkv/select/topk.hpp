// Top-k selection: indices of the k largest scores, emitted in ascending position order.
//
// Contract (every overload, every ISA path; tests/test_topk.cpp checks each clause):
//  - exactly min(k, n) indices, strictly ascending; k = 0 gives none, k >= n gives all;
//  - scores rank by value: -0.0 and +0.0 are equal, -inf and +inf are ordinary values,
//    denormals are ordinary values, and NaN (any sign or payload) ranks below every number;
//  - ties at the threshold are broken by position: the earlier position wins;
//  - the first n_sink and last n_recent positions are always kept and count toward k;
//    it is an error if they alone (min(n, n_sink + n_recent) positions) exceed k.
// Errors throw depthkv::error before anything is written.
//
// Method: a sampled bracket around the threshold, vectorized filter passes that shrink the
// candidate set to the exact threshold, then one order-preserving emit pass (AVX-512:
// compare -> compress into a register -> store; AVX2: movemask -> permutation table).
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/select/detail/topk_driver.hpp"
#include "depthkv/select/topk_options.hpp"
#include "depthkv/types.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

namespace detail {
// Largest row top-k accepts: every index must fit in index_t.
inline constexpr std::size_t topk_max_n = std::size_t{std::numeric_limits<index_t>::max()} + 1;

// Validates one row and returns min(k, n).
inline std::size_t check_topk_row(const char* where, std::size_t n, std::size_t k, std::size_t out_room,
                                  const topk_options& opt) {
  DEPTHKV_CHECK(n <= topk_max_n, where, "a row of ", n, " scores exceeds the ", topk_max_n,
                " that 32-bit indices can address");
  const std::size_t m = std::min(k, n);
  DEPTHKV_CHECK(out_room >= m, where, "out has room for ", out_room, " indices, need ", m);
  const std::size_t prot = protected_rows(n, opt.n_sink, opt.n_recent);
  DEPTHKV_CHECK(prot <= m, where, "protected positions (n_sink ", opt.n_sink, " + n_recent ", opt.n_recent,
                ": ", prot, " of ", n, " rows) exceed k = ", k);
  return m;
}

}  // namespace detail

// Writes the indices of the min(k, n) largest scores into out[0..), ascending, and returns
// how many, on the active kernel path (active_isa()). Uses and grows `scratch`; allocates
// nothing once scratch has room for n scores.
inline std::size_t topk(span<const float> scores, std::size_t k, span<index_t> out, const topk_options& opt,
                        topk_scratch& scratch) {
  detail::check_topk_row("depthkv::topk", scores.size(), k, out.size(), opt);
  return detail::topk_row_on(active_isa(), scores.data(), scores.size(), k, out.data(), opt, scratch);
}

// Same with temporary scratch (allocates about 8 bytes per score when n >= 2048).
inline std::size_t topk(span<const float> scores, std::size_t k, span<index_t> out, const topk_options& opt = {}) {
  topk_scratch scratch;
  return topk(scores, k, out, opt, scratch);
}

// Batched top-k over rows (one score row per kv head): row h is scores[h * score_stride ..
// + n), its k is ks[h], and its min(ks[h], n) indices go to out[h * out_stride ..). counts (if
// not empty, size n_rows) receives min(ks[h], n). Every row is validated before any is written.
// Pre-conditions checked: ks.size() == n_rows, score_stride >= n, scores and out large
// enough (every row start h * out_stride within out), out rows do not overlap (out_stride >=
// every min(ks[h], n) but the last), and no stride arithmetic overflows size_t.
inline void topk_rows(span<const float> scores, std::size_t n_rows, std::size_t n, std::size_t score_stride,
                      span<const std::size_t> ks, span<index_t> out, std::size_t out_stride, span<std::size_t> counts,
                      const topk_options& opt, topk_scratch& scratch) {
  constexpr const char* where = "depthkv::topk_rows";
  DEPTHKV_CHECK(ks.size() == n_rows, where, "ks has ", ks.size(), " entries, expected n_rows = ", n_rows);
  DEPTHKV_CHECK(counts.empty() || counts.size() == n_rows, where, "counts has ", counts.size(),
                " entries, expected 0 or n_rows = ", n_rows);
  if (n_rows == 0) return;
  DEPTHKV_CHECK(n_rows == 1 || score_stride >= n, where, "score_stride ", score_stride, " < n ", n);
  // Last row's end and start, overflow-checked: afterwards h * score_stride and h * out_stride
  // (h < n_rows) cannot wrap.
  const std::size_t score_end = detail::checked_add(
      where, detail::checked_mul(where, n_rows - 1, score_stride, "score_stride ", score_stride, " for ", n_rows, " rows"),
      n, "score_stride ", score_stride, " for ", n_rows, " rows of ", n);
  DEPTHKV_CHECK(score_end <= scores.size(), where, "scores has ", scores.size(), " elements, need ", score_end,
                " for ", n_rows, " rows of ", n, " (score_stride ", score_stride, ")");
  (void)detail::checked_mul(where, n_rows - 1, out_stride, "out_stride ", out_stride, " for ", n_rows, " rows");
  for (std::size_t h = 0; h < n_rows; ++h) {
    const std::size_t base = h * out_stride;
    DEPTHKV_CHECK(base <= out.size(), where, "out has ", out.size(), " entries, but row ", h, " starts at ", base,
                  " (out_stride ", out_stride, ")");
    const std::size_t room = out.size() - base;
    detail::check_topk_row(where, n, ks[h], h + 1 < n_rows ? std::min(room, out_stride) : room, opt);
  }
  const isa path = active_isa();
  for (std::size_t h = 0; h < n_rows; ++h) {
    const std::size_t m =
        detail::topk_row_on(path, scores.data() + h * score_stride, n, ks[h], out.data() + h * out_stride, opt, scratch);
    if (!counts.empty()) counts[h] = m;
  }
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
