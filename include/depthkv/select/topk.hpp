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
#include "depthkv/view/strided_rows.hpp"

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

namespace detail {
/// Largest row top-k accepts: every index must fit in index_t.
inline constexpr std::size_t topk_max_n = std::size_t{std::numeric_limits<index_t>::max()} + 1;

/// Validates one row and returns min(k, n).
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

/// Throws unless rows (n_rows > 0) do not overlap (stride >= length when n_rows > 1) and the
/// last row, ending at (n_rows - 1) * stride + length (overflow-checked), lies within data.
template <class T>
void check_strided_rows(const char* where, const char* name, const strided_rows<T>& r) {
  DEPTHKV_CHECK(r.n_rows == 1 || r.stride >= r.length, where, name, ".stride ", r.stride, " < ", name,
                ".length ", r.length);
  const std::size_t end = checked_add(where, checked_mul(where, r.n_rows - 1, r.stride, name, ".stride ", r.stride,
                                                         " for ", r.n_rows, " rows"),
                                      r.length, name, ": ", r.n_rows, " rows of ", r.length, " (stride ", r.stride, ")");
  DEPTHKV_CHECK(end <= r.data.size(), where, name, " has ", r.data.size(), " elements, need ", end, " for ", r.n_rows,
                " rows of ", r.length, " (stride ", r.stride, ")");
}

}  // namespace detail

/// Writes the indices of the min(k, n) largest scores into out[0..), ascending, and returns
/// how many, on the active kernel path (active_isa()). Uses and grows `scratch`; allocates
/// nothing once scratch has room for n scores.
inline std::size_t topk(span<const float> scores, std::size_t k, span<index_t> out, const topk_options& opt,
                        topk_scratch& scratch) {
  detail::check_topk_row("depthkv::topk", scores.size(), k, out.size(), opt);
  return detail::topk_row_on(active_isa(), scores.data(), scores.size(), k, out.data(), opt, scratch);
}

/// Same with temporary scratch (allocates about 8 bytes per score when n >= 2048).
inline std::size_t topk(span<const float> scores, std::size_t k, span<index_t> out, const topk_options& opt = {}) {
  topk_scratch scratch;
  return topk(scores, k, out, opt, scratch);
}

/// Batched top-k, one row per kv head: row h of `scores` ([n_rows][length], row stride
/// scores.stride) keeps its min(ks[h], length) largest scores, whose indices go to row h of
/// `out` (out.length: room per row, >= every min(ks[h], length)), ascending. counts ([n_rows],
/// or empty when not wanted) receives min(ks[h], length).
/// Errors (depthkv::error, before any row is written): ks or counts of the wrong size, out with
/// another n_rows, a stride below its length, rows beyond their span (all extents are
/// overflow-checked), a row whose protected positions exceed its k.
/// Complexity: O(n_rows * length) expected, no allocation once scratch has grown.
inline void topk_rows(strided_rows<const float> scores, span<const std::size_t> ks, strided_rows<index_t> out,
                      span<std::size_t> counts, const topk_options& opt, topk_scratch& scratch) {
  constexpr const char* where = "depthkv::topk_rows";
  const std::size_t n_rows = scores.n_rows, n = scores.length;
  DEPTHKV_CHECK(ks.size() == n_rows, where, "ks has ", ks.size(), " entries, expected scores.n_rows = ", n_rows);
  DEPTHKV_CHECK(out.n_rows == n_rows, where, "out.n_rows ", out.n_rows, " != scores.n_rows ", n_rows);
  DEPTHKV_CHECK(counts.empty() || counts.size() == n_rows, where, "counts has ", counts.size(),
                " entries, expected 0 or n_rows = ", n_rows);
  if (n_rows == 0) return;
  detail::check_strided_rows(where, "scores", scores);
  detail::check_strided_rows(where, "out", out);
  for (std::size_t h = 0; h < n_rows; ++h) detail::check_topk_row(where, n, ks[h], out.length, opt);
  const isa path = active_isa();
  for (std::size_t h = 0; h < n_rows; ++h) {
    const std::size_t m = detail::topk_row_on(path, scores.row(h), n, ks[h], out.row(h), opt, scratch);
    if (!counts.empty()) counts[h] = m;
  }
}

DEPTHKV_BASELINE_END
}  // namespace depthkv
