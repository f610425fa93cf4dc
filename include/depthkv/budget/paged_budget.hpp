// Budgets in blocks and bytes for paged KV memory: any allocator's per-layer split rounded to
// whole blocks per layer (and per kv head), a budget given in blocks, in bytes or as a keep
// ratio, and what one block of a layer costs.
//
// What a block of a layer is: block_size token slots of *every* kv head of the layer. With one
// table for all heads (pages of every head) that is one page; with a table per kv head (pages
// of one head, as paged_cache holds them) it is n_kv_heads pages, one per head. So lengths and
// keep counts are tokens per kv head, as prune_paged takes them, blocks[l] is the length of each
// head's table, and a layer with twice the kv heads costs twice the bytes per block
// (layer_block_bytes). Heads of *different* lengths (after a per-head prune) are entered in
// one-head pages instead (per_head_extent) and their pages split with split_heads_paged.
//
// How it stays generic: every allocator splits by keep ratio per layer, so it runs unchanged on
// a request in cost units. With g = gcd of the layers' block costs and unit[l] = block_bytes[l]
// / g, layer l is entered as ceil(length / block_size) * unit[l] units with a floor of
// ceil(min(minimum, length) / block_size) * unit[l] (floors rounded up to whole blocks), the
// budget as bytes / g units. The allocator's units become blocks by floor(units[l] / unit[l]);
// the bytes this leaves are handed out one block at a time, largest remainder (units[l] mod
// unit[l] as a fraction of a block) first, ties to the lower layer, wherever the block fits and
// the layer has blocks left; what still fits after that goes to the cheapest layers that can
// grow. With equal costs (or a budget in blocks) a unit is a block and nothing is left over.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <numeric>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "depthkv/detail/checked.hpp"
#include "depthkv/error.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/paged.hpp"
#include "depthkv/view/shape.hpp"

namespace depthkv {

/// How a layer's pages hold its kv heads (the two table shapes of paged_layer).
enum class page_heads {
  one,  ///< pages of one kv head, a table per head (paged_cache): a block is n_kv_heads pages
  all   ///< pages of every kv head, one table for the layer: a block is one page
};

/// Whether the pages carry a position slot (pos_t) per token slot.
enum class page_positions { stored, none };

/// Bytes one block of a layer costs: block_size token slots of every kv head, K and V rows of
/// head_dim elements of element_bytes each, plus a pos_t per slot and page when positions are
/// stored. For pages of one head, heads{1} gives paged_cache<T>::block_bytes() and heads{H}
/// H times that. Throws when a count is 0 or the size overflows size_t.
inline std::size_t layer_block_bytes(heads n_kv_heads, dim head_dim, std::size_t element_bytes,
                                     block_tokens block_size, page_heads pages = page_heads::one,
                                     page_positions positions = page_positions::stored) {
  constexpr const char* where = "depthkv::layer_block_bytes";
  const std::size_t H = n_kv_heads.value, D = head_dim.value, B = block_size.value;
  DEPTHKV_CHECK(H > 0, where, "n_kv_heads must be > 0");
  DEPTHKV_CHECK(D > 0, where, "head_dim must be > 0");
  DEPTHKV_CHECK(element_bytes > 0, where, "element_bytes must be > 0");
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  const std::size_t heads_per_page = pages == page_heads::one ? 1 : H;
  const std::size_t pages_per_block = pages == page_heads::one ? H : 1;
  const std::size_t pos_bytes = positions == page_positions::stored ? sizeof(pos_t) : 0;
  std::size_t b = 0;
  const bool ok = heads_per_page <= detail::size_max / 2 && detail::mul_fits(2 * heads_per_page, D, b) &&
                  detail::mul_fits(b, element_bytes, b) && detail::add_fits(b, pos_bytes, b) &&
                  detail::mul_fits(b, B, b) && detail::mul_fits(b, pages_per_block, b);
  DEPTHKV_CHECK(ok, where, "a block of ", B, " tokens x ", H, " kv heads x head_dim ", D, " x ",
                element_bytes, " bytes overflows size_t");
  return b;
}

/// The budget of allocate_paged, built by its named constructors: blocks, bytes or a keep ratio.
struct paged_budget {
  enum class kind { blocks, bytes, ratio };
  kind which = kind::blocks;
  std::size_t count = 0;    ///< blocks or bytes
  double keep_ratio = 0.0;  ///< ratio only, in [0, 1]

  /// Exactly n blocks in all (layer blocks as defined above; block costs do not weigh the split).
  static paged_budget in_blocks(std::size_t n) noexcept { return {kind::blocks, n, 0.0}; }
  /// At most n bytes in all, each layer charged block_bytes[l] per block (needs block_bytes).
  static paged_budget in_bytes(std::size_t n) noexcept { return {kind::bytes, n, 0.0}; }
  /// A keep ratio r of what the layers' blocks cost now (their bytes; their blocks when every
  /// block costs the same), rounded half up to whole cost units (to blocks when all cost the same).
  static paged_budget ratio(double r) noexcept { return {kind::ratio, 0, r}; }
};

/// What to allocate over paged layers. Shapes: lengths[n_layers] tokens per kv head;
/// minimums in tokens, [n_layers] or one for every layer or empty (no floor), at least the
/// protected sink + recent tokens (prune_paged_blocks protects whole blocks: give it
/// (ceil(n_sink / B) + ceil(n_recent / B)) * B); block_bytes[n_layers] or one for every layer
/// (layer_block_bytes), or empty: every block costs the same (then no budget in bytes).
struct paged_allocation_request {
  std::vector<std::size_t> lengths;
  std::vector<std::size_t> minimums;
  block_tokens block_size{0};
  std::vector<std::size_t> block_bytes;
  paged_budget budget;
};

/// The split in whole blocks.
struct paged_allocation {
  std::vector<std::size_t> blocks;  ///< [layer] blocks (per kv head: each head's table length)
  std::vector<std::size_t> keep;    ///< [layer] tokens per kv head: min(lengths[l], blocks[l] * block_size)
  std::size_t total_blocks = 0;     ///< sum of blocks
  std::size_t total_bytes = 0;      ///< sum of blocks[l] * block_bytes[l]; 0 when block_bytes is empty
};

namespace detail::pbudget {

constexpr std::size_t ceil_div(std::size_t a, std::size_t b) noexcept { return a / b + (a % b != 0); }

/// A request checked and entered in cost units.
struct plan {
  std::size_t block_size = 0;
  std::vector<std::size_t> len_blocks,
      floor_blocks;                     ///< [layer] ceil(length / B), ceil(min(minimum, length) / B)
  std::vector<std::size_t> cost;        ///< [layer] bytes per block; empty without block_bytes
  std::vector<std::size_t> unit;        ///< [layer] cost units per block
  std::vector<std::size_t> vlen, vmin;  ///< [layer] the allocator's lengths and floors, in units
  std::size_t unit_bytes = 0;           ///< bytes per unit when units are not blocks, else 0
  std::size_t budget_units = 0;
  std::size_t n_layers() const noexcept { return len_blocks.size(); }
};

inline std::string unit_words(const plan& p) {
  return p.unit_bytes == 0
             ? std::string("blocks")
             : concat("cost units of ", p.unit_bytes, " bytes (a block of layer l = block_bytes[l] / ",
                      p.unit_bytes, " units)");
}

inline plan make_plan(const paged_allocation_request& req, const char* where) {
  const std::size_t n = req.lengths.size(), B = req.block_size.value;
  DEPTHKV_CHECK(n > 0, where, "lengths is empty (need one length per layer)");
  DEPTHKV_CHECK(req.minimums.empty() || req.minimums.size() == 1 || req.minimums.size() == n, where,
                "minimums has ", req.minimums.size(), " entries, expected 0, 1 or n_layers = ", n);
  DEPTHKV_CHECK(req.block_bytes.empty() || req.block_bytes.size() == 1 || req.block_bytes.size() == n, where,
                "block_bytes has ", req.block_bytes.size(),
                " entries, expected 0 (every block costs the same), 1 or ", "n_layers = ", n);
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  for (std::size_t i = 0; i < req.block_bytes.size(); ++i)
    DEPTHKV_CHECK(req.block_bytes[i] > 0, where, "block_bytes[", i, "] = 0 must be > 0");
  const paged_budget::kind kind = req.budget.which;
  DEPTHKV_CHECK(kind != paged_budget::kind::bytes || !req.block_bytes.empty(), where, "a budget of ",
                req.budget.count, " bytes needs block_bytes (what one block of each layer costs)");
  plan p;
  p.block_size = B;
  p.len_blocks.resize(n);
  p.floor_blocks.resize(n);
  p.unit.assign(n, 1);
  p.vlen.resize(n);
  p.vmin.resize(n);
  const bool costed = !req.block_bytes.empty();
  std::size_t g = 0;
  bool equal = true;
  if (costed) {
    p.cost.resize(n);
    for (std::size_t l = 0; l < n; ++l) {
      p.cost[l] = req.block_bytes.size() == 1 ? req.block_bytes[0] : req.block_bytes[l];
      g = std::gcd(g, p.cost[l]);
      equal = equal && p.cost[l] == p.cost[0];
    }
  }
  const bool units_are_bytes = costed && !equal && kind != paged_budget::kind::blocks;
  if (units_are_bytes) p.unit_bytes = g;
  std::size_t total_units = 0, floor_units = 0, total_blocks = 0, floor_blocks = 0, total_bytes = 0,
              floor_bytes = 0;
  for (std::size_t l = 0; l < n; ++l) {
    const std::size_t len = req.lengths[l];
    const std::size_t m = req.minimums.empty()       ? 0
                          : req.minimums.size() == 1 ? req.minimums[0]
                                                     : req.minimums[l];
    const std::size_t lb = ceil_div(len, B), fb = ceil_div(std::min(m, len), B);
    p.len_blocks[l] = lb;
    p.floor_blocks[l] = fb;
    if (units_are_bytes) p.unit[l] = p.cost[l] / g;
    std::size_t v = 0;
    DEPTHKV_CHECK(mul_fits(lb, p.unit[l], v) && v <= max_allocation_tokens - total_units, where, "lengths[",
                  l, "] = ", len, " tokens (", lb, " blocks of ", B, " tokens",
                  units_are_bytes ? concat(", ", p.unit[l], " units of ", g, " bytes each") : std::string(),
                  ") brings the layers' total above the supported ", max_allocation_tokens,
                  units_are_bytes ? " cost units" : " blocks", " (2^53)");
    p.vlen[l] = v;
    p.vmin[l] = fb * p.unit[l];  // <= v
    total_units += v;
    floor_units += p.vmin[l];
    total_blocks += lb;  // <= total_units
    floor_blocks += fb;
    if (costed) {
      std::size_t bytes = 0;
      DEPTHKV_CHECK(mul_fits(lb, p.cost[l], bytes) && add_fits(total_bytes, bytes, total_bytes), where,
                    "lengths[", l, "] = ", len, " tokens (", lb, " blocks) x block_bytes = ", p.cost[l],
                    " brings what the layers' blocks cost above SIZE_MAX bytes");
      floor_bytes += fb * p.cost[l];  // <= total_bytes
    }
  }
  switch (kind) {
    case paged_budget::kind::blocks: {
      const std::size_t b = req.budget.count;
      DEPTHKV_CHECK(b >= floor_blocks, where, "budget of ", b,
                    " blocks is below the sum of per-layer floors (", floor_blocks,
                    " blocks: minimums rounded up to whole blocks of ", B, " tokens) by ", floor_blocks - b,
                    " blocks");
      DEPTHKV_CHECK(b <= total_blocks, where, "budget of ", b, " blocks exceeds the ", total_blocks,
                    " blocks the layers hold by ", b - total_blocks, " blocks");
      p.budget_units = b;
      break;
    }
    case paged_budget::kind::bytes: {
      const std::size_t b = req.budget.count;
      DEPTHKV_CHECK(b >= floor_bytes, where, "budget of ", b, " bytes is below the ", floor_bytes,
                    " bytes the per-layer floors cost (minimums rounded up to whole blocks of ", B,
                    " tokens) by ", floor_bytes - b, " bytes");
      DEPTHKV_CHECK(b <= total_bytes, where, "budget of ", b, " bytes exceeds the ", total_bytes,
                    " bytes the layers' blocks cost by ", b - total_bytes, " bytes");
      p.budget_units = b / (units_are_bytes ? g : p.cost[0]);
      break;
    }
    case paged_budget::kind::ratio: {
      allocation_request r;  // resolve's rounding and range check, on the units (no floors: checked below)
      r.lengths = p.vlen;
      r.budget = global_budget::ratio(req.budget.keep_ratio);
      p.budget_units = resolve(r, where).budget;
      const std::size_t per = units_are_bytes ? g : 1;  // <= 2^53 units of at most g: no overflow below
      DEPTHKV_CHECK(
          p.budget_units >= floor_units, where, "keep ratio ", req.budget.keep_ratio, " of ",
          total_units * per, units_are_bytes ? " bytes" : " blocks", " gives ", p.budget_units * per,
          units_are_bytes ? " bytes" : " blocks", ", below the per-layer floors (", floor_units * per,
          units_are_bytes ? " bytes" : " blocks", ": minimums rounded up to whole blocks of ", B,
          " tokens) by ", (floor_units - p.budget_units) * per, units_are_bytes ? " bytes" : " blocks");
      break;
    }
  }
  return p;
}

/// Allocator counts in units -> whole blocks (see the file comment). Pre: u within [vmin, vlen],
/// summing to budget_units.
inline paged_allocation to_blocks(const plan& p, const std::vector<std::size_t>& u,
                                  const std::vector<std::size_t>& lengths) {
  const std::size_t n = p.n_layers();
  paged_allocation a;
  a.blocks.resize(n);
  std::size_t left = p.budget_units;
  for (std::size_t l = 0; l < n; ++l) {
    a.blocks[l] = u[l] / p.unit[l];  // >= floor_blocks: vmin is a whole number of blocks
    left -= a.blocks[l] * p.unit[l];
  }
  if (left > 0) {
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
      return double(u[x] % p.unit[x]) / double(p.unit[x]) > double(u[y] % p.unit[y]) / double(p.unit[y]);
    });
    for (const std::size_t l : order)
      if (a.blocks[l] < p.len_blocks[l] && p.unit[l] <= left) {
        ++a.blocks[l];
        left -= p.unit[l];
      }
    // What still fits: less than the dearest block a layer with room could not take above.
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t x, std::size_t y) { return p.unit[x] < p.unit[y]; });
    for (const std::size_t l : order) {
      const std::size_t take = std::min(p.len_blocks[l] - a.blocks[l], left / p.unit[l]);
      a.blocks[l] += take;
      left -= take * p.unit[l];
    }
  }
  a.keep.resize(n);
  for (std::size_t l = 0; l < n; ++l) {
    a.keep[l] = a.blocks[l] >= p.len_blocks[l] ? lengths[l] : a.blocks[l] * p.block_size;  // < lengths[l]
    a.total_blocks += a.blocks[l];
    if (!p.cost.empty()) a.total_bytes += a.blocks[l] * p.cost[l];  // <= the checked total
  }
  return a;
}

}  // namespace detail::pbudget

/// Runs `allocator` (any type meeting the allocator contract) on `req` in cost units and rounds
/// its split to whole blocks. Guarantees:
///   floor_blocks[l] = ceil(min(minimum, length) / block_size) <= blocks[l] <= ceil(length / block_size);
///   blocks[l] >= floor(units[l] / unit[l]): never below its share of the allocator's split (the
///   leftover can lift the cheapest layers more than one block above theirs: by less than one
///   block of the dearest layer, in bytes, in all);
///   a budget in blocks, or every block costing the same: sum(blocks) == the budget in blocks
///   exactly (floor(bytes / cost) for a budget in bytes);
///   blocks of different costs: total_bytes <= the budget in bytes (for a ratio: the rounded
///   ratio of the current bytes), and the bytes left unused are fewer than one block of the
///   cheapest layer that still has blocks to keep.
/// Errors (depthkv::error): a malformed request naming the entry, a budget below the floors or
/// above what the layers hold, saying by how many blocks or bytes, sizes beyond 2^53 units or
/// SIZE_MAX bytes; an allocator's own error comes back saying which units it counted in.
template <class A, class = std::enable_if_t<!std::is_convertible_v<const A&, std::string_view>>>
paged_allocation allocate_paged(const A& allocator, const paged_allocation_request& req,
                                const sensitivity_profile& profile) {
  check_allocator<A>();
  constexpr const char* where = "depthkv::allocate_paged";
  const detail::pbudget::plan p = detail::pbudget::make_plan(req, where);
  allocation_request v;
  v.lengths = p.vlen;
  v.minimums = p.vmin;
  v.budget = global_budget::tokens(p.budget_units);
  std::vector<std::size_t> u;
  try {
    u = allocator.allocate(v, profile);
  } catch (const error& e) {
    detail::fail(where, "allocator '", std::string(A::name), "' counting in ", detail::pbudget::unit_words(p),
                 ": ", e.what());
  }
  // The conversion relies on the contract: a user's allocator that breaks it gets an error, not UB.
  DEPTHKV_CHECK(u.size() == p.n_layers(), where, "allocator '", std::string(A::name), "' returned ", u.size(),
                " counts for ", p.n_layers(), " layers");
  std::size_t sum = 0;
  for (std::size_t l = 0; l < u.size(); ++l) {
    DEPTHKV_CHECK(u[l] >= p.vmin[l] && u[l] <= p.vlen[l], where, "allocator '", std::string(A::name),
                  "' returned counts[", l, "] = ", u[l], " outside [", p.vmin[l], ", ", p.vlen[l], "]");
    sum += u[l];  // each <= its length: the total stays <= 2^53
  }
  DEPTHKV_CHECK(sum == p.budget_units, where, "allocator '", std::string(A::name),
                "' returned counts summing to ", sum, ", not the budget of ", p.budget_units);
  return detail::pbudget::to_blocks(p, u, req.lengths);
}

/// allocate_paged with the allocator called `name` (see visit_allocator).
inline paged_allocation allocate_paged(std::string_view name, const paged_allocation_request& req,
                                       const sensitivity_profile& profile,
                                       const allocator_params& params = {}) {
  return visit_allocator(
      name, [&](const auto& a) { return allocate_paged(a, req, profile); }, params);
}

/// A layer entry counted in one-head pages (for allocate_paged's lengths[l] and minimums[l]).
struct paged_extent {
  std::size_t length = 0;   ///< tokens: (sum over heads of ceil(head_lengths[h] / B)) * B
  std::size_t minimum = 0;  ///< tokens: (sum over heads of ceil(min(head_minimum, head_lengths[h]) / B)) * B
};

/// Enters a layer whose kv heads hold different token counts (tables per head) in one-head
/// pages: with these as lengths[l] and minimums[l] and block_bytes[l] the cost of one one-head
/// page (layer_block_bytes(heads{1}, ...)), blocks[l] is the layer's pages in all, to split
/// with split_heads_paged(blocks{blocks[l]}, head_lengths, block_size, head_minimum).
inline paged_extent per_head_extent(span<const std::size_t> head_lengths, block_tokens block_size,
                                    std::size_t head_minimum = 0) {
  constexpr const char* where = "depthkv::per_head_extent";
  const std::size_t B = block_size.value;
  DEPTHKV_CHECK(!head_lengths.empty(), where, "head_lengths is empty");
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  std::size_t pages = 0, floor_pages = 0;
  for (std::size_t h = 0; h < head_lengths.size(); ++h) {
    pages = detail::checked_add(where, pages, detail::pbudget::ceil_div(head_lengths[h], B), "head_lengths[",
                                h, "] = ", head_lengths[h], ": the heads' blocks");
    floor_pages += detail::pbudget::ceil_div(std::min(head_minimum, head_lengths[h]), B);  // <= pages
  }
  paged_extent e;
  e.length = detail::checked_mul(where, pages, B, "the heads' ", pages, " blocks of ", B, " tokens");
  e.minimum = floor_pages * B;  // <= length
  return e;
}

/// One layer's blocks split over its kv heads.
struct paged_head_split {
  std::vector<std::size_t> blocks;  ///< [kv head] blocks of the head's table
  std::vector<std::size_t> keep;    ///< [kv head] tokens: min(head_lengths[h], blocks[h] * block_size)
};

/// Splits `total` one-head blocks of a layer over its kv heads in whole blocks (tables per
/// head): split_heads on the heads' lengths in blocks ceil(head_lengths[h] / B), each head's
/// floor ceil(min(head_minimum, head_lengths[h]) / B) blocks, weights as split_heads (empty:
/// the same keep ratio in blocks). sum(blocks) == total exactly. A layer allocate_paged gave
/// b blocks per head holds b * n_kv_heads pages: pass blocks{b * n_kv_heads}.
/// Throws when total is below the heads' floors or above their blocks (saying by how many
/// blocks), on block_size 0, empty head_lengths, bad weights, or totals beyond 2^53 blocks.
inline paged_head_split split_heads_paged(blocks total, span<const std::size_t> head_lengths,
                                          block_tokens block_size, std::size_t head_minimum = 0,
                                          span<const double> head_weights = {}) {
  constexpr const char* where = "depthkv::split_heads_paged";
  const std::size_t B = block_size.value, H = head_lengths.size();
  DEPTHKV_CHECK(H > 0, where, "head_lengths is empty");
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  DEPTHKV_CHECK(head_weights.empty() || head_weights.size() == H, where, "head_weights has ",
                head_weights.size(), " entries, expected 0 or n_heads = ", H);
  for (std::size_t h = 0; h < head_weights.size(); ++h)
    DEPTHKV_CHECK(std::isfinite(head_weights[h]) && head_weights[h] >= 0.0, where, "head_weights[", h,
                  "] = ", head_weights[h], " must be finite and >= 0");
  std::vector<std::size_t> hb(H);
  std::size_t sum = 0, floor_sum = 0;
  for (std::size_t h = 0; h < H; ++h) {
    hb[h] = detail::pbudget::ceil_div(head_lengths[h], B);
    DEPTHKV_CHECK(hb[h] <= max_allocation_tokens - sum, where, "head_lengths[", h, "] = ", head_lengths[h],
                  " brings the heads' total above the supported ", max_allocation_tokens, " blocks (2^53)");
    sum += hb[h];
    floor_sum += detail::pbudget::ceil_div(std::min(head_minimum, head_lengths[h]), B);
  }
  const std::size_t t = total.value;
  DEPTHKV_CHECK(t >= floor_sum, where, "total of ", t, " blocks is below the heads' floors (", floor_sum,
                " blocks: head_minimum ", head_minimum, " tokens rounded up to whole blocks of ", B, ") by ",
                floor_sum - t, " blocks");
  DEPTHKV_CHECK(t <= sum, where, "total of ", t, " blocks exceeds the ", sum, " blocks the heads hold by ",
                t - sum, " blocks");
  paged_head_split s;
  s.blocks = split_heads(t, hb, detail::pbudget::ceil_div(head_minimum, B), head_weights);
  s.keep.resize(H);
  for (std::size_t h = 0; h < H; ++h) s.keep[h] = s.blocks[h] >= hb[h] ? head_lengths[h] : s.blocks[h] * B;
  return s;
}

}  // namespace depthkv
