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
//
// Sliding-window layers (attention as in allocation_request): such a layer keeps its last
// min(length, W) tokens, a fixed number of blocks (sliding_window_blocks; which blocks those are
// depends on window_placement), and the allocator runs on the global layers alone. With
// budget_scope::all_layers the sliding layers' fixed blocks (bytes) are charged first and the
// rest is split over the global layers; a keep ratio is of what all layers hold (the sliding
// layers: their fixed blocks), rounded half up to blocks when every layer's block costs the same,
// else to units of the gcd of all layers' costs. With budget_scope::global_layers the budget and
// a ratio are of the global layers' blocks (bytes) and the fixed blocks come on top. Either way
// the global layers get exactly what allocate_paged gives the request of the global layers alone
// with their share of the budget (in blocks, or in bytes).
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

/// Where a sliding-window layer's kept tokens lie in its blocks, which sets its fixed cost.
enum class window_placement {
  /// Where they were appended: positions 0..n-1 fill blocks from a block boundary and the engine
  /// frees only blocks wholly outside the window (vLLM-style). The last min(n, W) positions span
  /// ceil(min(n, W) / B) blocks or one more (up to W + B - 1 token slots): never under-counted.
  in_place,
  /// Moved to the front of the layer's blocks (as a compacting prune_paged leaves them):
  /// ceil(min(n, W) / B) blocks.
  packed
};

/// Blocks of block_size tokens that a sliding-window layer of `length` tokens and window W
/// occupies for its last min(length, W) tokens (see window_placement). Throws when W or
/// block_size is 0.
inline std::size_t sliding_window_blocks(std::size_t length, window_tokens window, block_tokens block_size,
                                         window_placement placement) {
  constexpr const char* where = "depthkv::sliding_window_blocks";
  const std::size_t W = window.value, B = block_size.value;
  DEPTHKV_CHECK(W > 0, where, "window must be > 0");
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  const std::size_t k = std::min(length, W);
  if (k == 0) return 0;
  if (placement == window_placement::packed) return k / B + (k % B != 0);
  return (length - 1) / B - (length - k) / B + 1;  // the blocks of positions length - k .. length - 1
}

/// What to allocate over paged layers. Shapes: lengths[n_layers] tokens per kv head;
/// minimums in tokens, [n_layers] or one for every layer or empty (no floor), at least the
/// protected sink + recent tokens (prune_paged_blocks protects whole blocks: give it
/// (ceil(n_sink / B) + ceil(n_recent / B)) * B); block_bytes[n_layers] or one for every layer
/// (layer_block_bytes), or empty: every block costs the same (then no budget in bytes);
/// attention[n_layers] or empty (every layer global): a sliding-window layer of `lengths[l]`
/// tokens (its positions 0..n-1) keeps min(n, W) of them in sliding_window_blocks(n, W, B,
/// sliding_windows) blocks, its minimum ignored; `scope` says what the budget covers.
struct paged_allocation_request {
  std::vector<std::size_t> lengths;
  std::vector<std::size_t> minimums;
  block_tokens block_size{0};
  std::vector<std::size_t> block_bytes;
  paged_budget budget;
  std::vector<layer_attention> attention;
  budget_scope scope = budget_scope::all_layers;
  window_placement sliding_windows = window_placement::in_place;
};

/// The split in whole blocks.
struct paged_allocation {
  std::vector<std::size_t> blocks;  ///< [layer] blocks (per kv head: each head's table length)
  /// [layer] tokens per kv head: min(lengths[l], blocks[l] * block_size); a sliding-window
  /// layer's min(lengths[l], W) in its sliding_window_blocks
  std::vector<std::size_t> keep;
  std::size_t total_blocks = 0;     ///< sum of blocks (sliding layers' included)
  std::size_t total_bytes = 0;      ///< sum of blocks[l] * block_bytes[l]; 0 when block_bytes is empty
};

namespace detail::pbudget {

constexpr std::size_t ceil_div(std::size_t a, std::size_t b) noexcept { return a / b + (a % b != 0); }

/// A request checked and entered in cost units.
struct plan {
  // Per-layer entries below are of the global layers (all layers without sliding ones).
  std::vector<std::size_t> global;        ///< [global layer] its index among all layers
  std::vector<std::size_t> lengths;       ///< [global layer] tokens
  std::vector<std::size_t> fixed_blocks;  ///< [layer] a sliding layer's window blocks (0: global layer)
  std::vector<std::size_t> fixed_keep;    ///< [layer] a sliding layer's min(length, W) (0: global layer)
  std::size_t n_all = 0, n_sliding = 0;
  std::size_t sliding_blocks = 0, sliding_bytes = 0;  ///< the sliding layers' fixed cost
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
  DEPTHKV_CHECK(req.attention.empty() || req.attention.size() == n, where, "attention has ",
                req.attention.size(), " entries, expected 0 (every layer global) or n_layers = ", n);
  DEPTHKV_CHECK(req.scope == budget_scope::all_layers || req.scope == budget_scope::global_layers, where,
                "scope ", static_cast<int>(req.scope), " is not a budget_scope");
  DEPTHKV_CHECK(
      req.sliding_windows == window_placement::in_place || req.sliding_windows == window_placement::packed,
      where, "sliding_windows ", static_cast<int>(req.sliding_windows), " is not a window_placement");
  DEPTHKV_CHECK(B > 0, where, "block_size must be > 0");
  for (std::size_t i = 0; i < req.block_bytes.size(); ++i)
    DEPTHKV_CHECK(req.block_bytes[i] > 0, where, "block_bytes[", i, "] = 0 must be > 0");
  for (std::size_t l = 0; l < req.attention.size(); ++l)
    DEPTHKV_CHECK(!req.attention[l].window || req.attention[l].window->value > 0, where, "attention[", l,
                  "] is a sliding window of 0 tokens (a window must be > 0)");
  const paged_budget::kind kind = req.budget.which;
  DEPTHKV_CHECK(kind != paged_budget::kind::bytes || !req.block_bytes.empty(), where, "a budget of ",
                req.budget.count, " bytes needs block_bytes (what one block of each layer costs)");
  const double kr = req.budget.keep_ratio;
  DEPTHKV_CHECK(kind != paged_budget::kind::ratio || (std::isfinite(kr) && kr >= 0.0 && kr <= 1.0), where,
                "keep ratio ", kr, " outside [0, 1]");
  plan p;
  p.n_all = n;
  p.block_size = B;
  p.fixed_blocks.assign(n, 0);
  p.fixed_keep.assign(n, 0);
  const auto is_sliding = [&](std::size_t l) {
    return !req.attention.empty() && req.attention[l].window.has_value();
  };
  const bool costed = !req.block_bytes.empty();
  std::vector<std::size_t> cost(costed ? n : 0);
  // The allocator's units: blocks, or when the global layers' blocks cost differently (and the
  // budget is not in blocks) the gcd g of their costs; g_all, equal_all: over every layer.
  std::size_t g = 0, g_all = 0, first = 0;
  bool equal = true, equal_all = true, have_first = false;
  for (std::size_t l = 0; l < cost.size(); ++l) {
    cost[l] = req.block_bytes.size() == 1 ? req.block_bytes[0] : req.block_bytes[l];
    g_all = std::gcd(g_all, cost[l]);
    equal_all = equal_all && cost[l] == cost[0];
    if (is_sliding(l)) continue;
    if (!have_first) first = cost[l];
    have_first = true;
    g = std::gcd(g, cost[l]);
    equal = equal && cost[l] == first;
  }
  const bool units_are_bytes = costed && !equal && kind != paged_budget::kind::blocks;
  if (units_are_bytes) p.unit_bytes = g;
  // Totals of the global layers (g_...).
  std::size_t g_units = 0, g_floor_units = 0, g_blocks = 0, g_floor_blocks = 0, g_bytes = 0,
              g_floor_bytes = 0;
  for (std::size_t l = 0; l < n; ++l) {
    const std::size_t len = req.lengths[l];
    const std::size_t lb = ceil_div(len, B);
    if (is_sliding(l)) {
      const window_tokens w = *req.attention[l].window;
      const std::size_t fb = sliding_window_blocks(len, w, req.block_size, req.sliding_windows);  // <= lb
      p.fixed_blocks[l] = fb;
      p.fixed_keep[l] = std::min(len, w.value);
      ++p.n_sliding;
      std::size_t bytes = 0;
      DEPTHKV_CHECK(add_fits(p.sliding_blocks, fb, p.sliding_blocks) &&
                        (!costed ||
                         (mul_fits(fb, cost[l], bytes) && add_fits(p.sliding_bytes, bytes, p.sliding_bytes))),
                    where, "attention[", l, "]: the window of ", w.value, " tokens (", fb,
                    " blocks) brings the sliding-window layers' fixed cost above SIZE_MAX ",
                    costed ? "bytes" : "blocks");
      continue;
    }
    const std::size_t m = req.minimums.empty()       ? 0
                          : req.minimums.size() == 1 ? req.minimums[0]
                                                     : req.minimums[l];
    const std::size_t fb = ceil_div(std::min(m, len), B);
    const std::size_t unit = units_are_bytes ? cost[l] / g : 1;
    std::size_t v = 0;
    DEPTHKV_CHECK(mul_fits(lb, unit, v) && v <= max_allocation_tokens - g_units, where, "lengths[", l,
                  "] = ", len, " tokens (", lb, " blocks of ", B, " tokens",
                  units_are_bytes ? concat(", ", unit, " units of ", g, " bytes each") : std::string(),
                  ") brings the layers' total above the supported ", max_allocation_tokens,
                  units_are_bytes ? " cost units" : " blocks", " (2^53)");
    if (costed) {
      std::size_t bytes = 0;
      DEPTHKV_CHECK(mul_fits(lb, cost[l], bytes) && add_fits(g_bytes, bytes, g_bytes), where, "lengths[", l,
                    "] = ", len, " tokens (", lb, " blocks) x block_bytes = ", cost[l],
                    " brings what the layers' blocks cost above SIZE_MAX bytes");
      g_floor_bytes += fb * cost[l];  // <= g_bytes
      p.cost.push_back(cost[l]);
    }
    p.global.push_back(l);
    p.lengths.push_back(len);
    p.len_blocks.push_back(lb);
    p.floor_blocks.push_back(fb);
    p.unit.push_back(unit);
    p.vlen.push_back(v);
    p.vmin.push_back(fb * unit);  // <= v
    g_units += v;
    g_floor_units += fb * unit;
    g_blocks += lb;  // <= g_units
    g_floor_blocks += fb;
  }
  const bool hybrid = p.n_sliding > 0, all = req.scope == budget_scope::all_layers;
  std::size_t hold_blocks = 0, hold_bytes = 0;  // what all layers hold: the sliding layers' windows
  DEPTHKV_CHECK(
      add_fits(p.sliding_blocks, g_blocks, hold_blocks) && add_fits(p.sliding_bytes, g_bytes, hold_bytes),
      where, "the layers' fixed and global blocks together exceed SIZE_MAX ", costed ? "bytes" : "blocks");
  const std::string place = req.sliding_windows == window_placement::in_place
                                ? "their last min(length, window) tokens in place"
                                : "their last min(length, window) tokens packed";
  // "the S sliding-window layers' X <unit> (...)"; for budget_scope::global_layers: they come on top.
  const auto sliding_words = [&](std::size_t x, const char* unit_name) {
    return concat("the ", p.n_sliding, " sliding-window layers' ", x, " ", unit_name, " (", place, ")");
  };
  const auto on_top = [&](std::size_t x, const char* unit_name) {
    return hybrid ? concat(" (budget_scope::global_layers: ", sliding_words(x, unit_name), " come on top)")
                  : std::string();
  };
  // Bytes per unit of the global layers' budget in bytes (every global cost is a multiple of it).
  const std::size_t per = units_are_bytes ? g : have_first ? first : 1;
  switch (kind) {
    case paged_budget::kind::blocks: {
      const std::size_t b = req.budget.count;
      if (hybrid && all) {
        const std::size_t need = p.sliding_blocks + g_floor_blocks;  // <= hold_blocks
        DEPTHKV_CHECK(b >= need, where, "budget of ", b, " blocks is below what the layers must hold (", need,
                      " blocks: ", sliding_words(p.sliding_blocks, "blocks"),
                      " plus the global layers' floors ", g_floor_blocks,
                      ", minimums rounded up to whole blocks of ", B, " tokens) by ", need - b, " blocks");
        DEPTHKV_CHECK(b <= hold_blocks, where, "budget of ", b, " blocks exceeds the ", hold_blocks,
                      " blocks the layers hold (", sliding_words(p.sliding_blocks, "blocks"),
                      " plus the global layers' ", g_blocks, ") by ", b - hold_blocks, " blocks");
        p.budget_units = b - p.sliding_blocks;
        break;
      }
      const char* whose = hybrid ? " for the global layers" : "";
      DEPTHKV_CHECK(b >= g_floor_blocks, where, "budget of ", b, " blocks", whose,
                    " is below the sum of per-layer floors (", g_floor_blocks,
                    " blocks: minimums rounded up to whole blocks of ", B, " tokens) by ", g_floor_blocks - b,
                    " blocks", on_top(p.sliding_blocks, "blocks"));
      DEPTHKV_CHECK(b <= g_blocks, where, "budget of ", b, " blocks", whose, " exceeds the ", g_blocks,
                    " blocks the ", hybrid ? "global " : "", "layers hold by ", b - g_blocks, " blocks",
                    on_top(p.sliding_blocks, "blocks"));
      p.budget_units = b;
      break;
    }
    case paged_budget::kind::bytes: {
      const std::size_t b = req.budget.count;
      if (hybrid && all) {
        const std::size_t need = p.sliding_bytes + g_floor_bytes;  // <= hold_bytes
        DEPTHKV_CHECK(b >= need, where, "budget of ", b, " bytes is below the ", need,
                      " bytes the layers must hold (", sliding_words(p.sliding_bytes, "bytes"),
                      " plus the global layers' floors ", g_floor_bytes,
                      ", minimums rounded up to whole blocks of ", B, " tokens) by ", need - b, " bytes");
        DEPTHKV_CHECK(b <= hold_bytes, where, "budget of ", b, " bytes exceeds the ", hold_bytes,
                      " bytes the layers' blocks cost (", sliding_words(p.sliding_bytes, "bytes"),
                      " plus the global layers' ", g_bytes, ") by ", b - hold_bytes, " bytes");
        p.budget_units = (b - p.sliding_bytes) / per;
        break;
      }
      const char* whose = hybrid ? " for the global layers" : "";
      DEPTHKV_CHECK(b >= g_floor_bytes, where, "budget of ", b, " bytes", whose, " is below the ",
                    g_floor_bytes,
                    " bytes the per-layer floors cost (minimums rounded up to whole blocks of ", B,
                    " tokens) by ", g_floor_bytes - b, " bytes", on_top(p.sliding_bytes, "bytes"));
      DEPTHKV_CHECK(b <= g_bytes, where, "budget of ", b, " bytes", whose, " exceeds the ", g_bytes,
                    " bytes the ", hybrid ? "global " : "", "layers' blocks cost by ", b - g_bytes, " bytes",
                    on_top(p.sliding_bytes, "bytes"));
      p.budget_units = b / per;
      break;
    }
    case paged_budget::kind::ratio: {
      if (hybrid && all) {
        // A ratio of what every layer holds, rounded half up to blocks when every block of every
        // layer costs the same (or no costs), else to units of g_all bytes (the gcd of all costs).
        const bool in_blocks = !costed || equal_all;
        const std::size_t unit_bytes = in_blocks ? 1 : g_all;
        const std::size_t hold = in_blocks ? hold_blocks : hold_bytes / g_all;
        const std::size_t fixed = in_blocks ? p.sliding_blocks : p.sliding_bytes;  // blocks or bytes
        const std::size_t floors = in_blocks ? g_floor_blocks : g_floor_bytes;
        const char* unit_word = in_blocks ? "blocks" : "bytes";
        DEPTHKV_CHECK(hold <= max_allocation_tokens, where, "the layers hold ", hold,
                      in_blocks ? " blocks" : concat(" units of ", g_all, " bytes"), ", above the supported ",
                      max_allocation_tokens, " (2^53) for a keep ratio");
        const std::size_t b = detail::alloc::round_ratio(kr, hold) * unit_bytes;  // <= hold_bytes in bytes
        const std::size_t need = fixed + floors;
        DEPTHKV_CHECK(b >= need, where, "keep ratio ", kr, " of the ", hold * unit_bytes, " ", unit_word,
                      " the layers hold gives ", b, " ", unit_word, ", below what the layers must hold (",
                      need, " ", unit_word, ": ", sliding_words(fixed, unit_word),
                      " plus the global layers' floors ", floors, ", minimums rounded up to whole blocks of ",
                      B, " tokens) by ", need - b, " ", unit_word);
        // What the global layers get, as a budget in blocks or in bytes of their own units.
        p.budget_units = in_blocks ? b - fixed : (b - fixed) / per;  // in_blocks: units are blocks
        break;
      }
      const std::size_t pu = units_are_bytes ? g : 1;  // <= 2^53 units of at most g: no overflow below
      const char* unit_word = units_are_bytes ? "bytes" : "blocks";
      const std::size_t b = detail::alloc::round_ratio(kr, g_units);
      DEPTHKV_CHECK(b >= g_floor_units, where, "keep ratio ", kr, " of ", hybrid ? "the global layers' " : "",
                    g_units * pu, " ", unit_word, " gives ", b * pu, " ", unit_word,
                    ", below the per-layer floors (", g_floor_units * pu, " ", unit_word,
                    ": minimums rounded up to whole blocks of ", B, " tokens) by ", (g_floor_units - b) * pu,
                    " ", unit_word, on_top(units_are_bytes ? p.sliding_bytes : p.sliding_blocks, unit_word));
      p.budget_units = b;
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
/// Sliding-window layers: blocks[l] = sliding_window_blocks(length, W, block_size,
/// sliding_windows), keep[l] = min(length, W); the guarantees above hold for the global layers,
/// with the budget less the sliding layers' fixed blocks (bytes) under budget_scope::all_layers.
/// The allocator sees the global layers only, and `profile` has every layer (the sliding
/// layers' entries unread), only the global layers, or none (allocators without a profile).
/// Errors (depthkv::error): a malformed request naming the entry, a budget below the floors or
/// above what the layers hold, saying by how many blocks or bytes (and what the sliding layers
/// take of it), sizes beyond 2^53 units or SIZE_MAX bytes; an allocator's own error comes back
/// saying which units it counted in.
template <class A, class = std::enable_if_t<!std::is_convertible_v<const A&, std::string_view>>>
paged_allocation allocate_paged(const A& allocator, const paged_allocation_request& req,
                                const sensitivity_profile& profile) {
  check_allocator<A>();
  constexpr const char* where = "depthkv::allocate_paged";
  const detail::pbudget::plan p = detail::pbudget::make_plan(req, where);
  const std::size_t G = p.n_layers();
  const bool hybrid = p.n_sliding > 0;
  sensitivity_profile storage;
  const sensitivity_profile& prof =
      hybrid ? detail::alloc::global_profile(profile, p.n_all, p.global, storage, where) : profile;
  const std::string on_global = hybrid ? detail::concat(" on the ", G, " global layers") : std::string();
  std::vector<std::size_t> u;
  if (G > 0) {
    allocation_request v;
    v.lengths = p.vlen;
    v.minimums = p.vmin;
    v.budget = global_budget::tokens(p.budget_units);
    try {
      u = allocator.allocate(v, prof);
    } catch (const error& e) {
      detail::fail(where, "allocator '", std::string(A::name), "'", on_global, " counting in ",
                   detail::pbudget::unit_words(p), ": ", e.what());
    }
  }
  // The conversion relies on the contract: a user's allocator that breaks it gets an error, not UB.
  DEPTHKV_CHECK(u.size() == G, where, "allocator '", std::string(A::name), "' returned ", u.size(),
                " counts for ", G, hybrid ? " global" : "", " layers");
  std::size_t sum = 0;
  for (std::size_t l = 0; l < u.size(); ++l) {
    DEPTHKV_CHECK(u[l] >= p.vmin[l] && u[l] <= p.vlen[l], where, "allocator '", std::string(A::name),
                  "' returned counts[", l, "] = ", u[l], " outside [", p.vmin[l], ", ", p.vlen[l], "]");
    sum += u[l];  // each <= its length: the total stays <= 2^53
  }
  DEPTHKV_CHECK(sum == p.budget_units, where, "allocator '", std::string(A::name),
                "' returned counts summing to ", sum, ", not the budget of ", p.budget_units);
  paged_allocation ga = detail::pbudget::to_blocks(p, u, p.lengths);
  if (!hybrid) return ga;
  paged_allocation a;
  a.blocks = p.fixed_blocks;
  a.keep = p.fixed_keep;
  for (std::size_t i = 0; i < G; ++i) {
    a.blocks[p.global[i]] = ga.blocks[i];
    a.keep[p.global[i]] = ga.keep[i];
  }
  a.total_blocks = ga.total_blocks + p.sliding_blocks;  // <= the checked totals
  a.total_bytes = ga.total_bytes + p.sliding_bytes;
  return a;
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
