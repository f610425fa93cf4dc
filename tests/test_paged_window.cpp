// paged_cache::drop_blocks_before (sliding windows of local layers in paged memory): against a
// dense kv_cache that drops exactly the rows outside the window, over random prefill / decode
// steps of several sequences; blocks return to the pool (memory constant at W..W+B-1 rows per
// head over thousands of steps), and errors change nothing.
#include <algorithm>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/cache/paged_cache.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::uniform_int;

namespace {
constexpr std::size_t L = 2, H = 2, D = 3;

// K row value of (layer, head, position, dim): exact in float.
float val(std::size_t l, std::size_t h, std::size_t p, std::size_t d) {
  return static_cast<float>(((l * 7 + h) * 10000 + p) * 4 + d);
}

void append(paged_cache<float>& pc, paged_cache<float>::sequence_id s, kv_cache<float>& ref, std::size_t l,
            std::size_t pos, std::size_t n) {
  std::vector<float> buf(H * n * D);
  for (std::size_t h = 0; h < H; ++h)
    for (std::size_t t = 0; t < n; ++t)
      for (std::size_t d = 0; d < D; ++d) buf[(h * n + t) * D + d] = val(l, h, pos + t, d);
  const kv_shape sh(heads{H}, tokens{n}, dim{D});
  std::vector<pos_t> P(n);
  for (std::size_t t = 0; t < n; ++t) P[t] = static_cast<pos_t>(pos + t);
  const auto v = kv_view<const float>::hnd(buf.data(), sh);
  pc.append(s, l, v, v, P);
  if (ref.capacity(l, 0) < ref.length(l, 0) + n) ref.reserve(l, 2 * (ref.length(l, 0) + n));
  ref.append(l, v, v, P);
}

// The paged rows of (s, l, h) are the reference rows preceded by fewer than B older rows.
void require_window(const paged_cache<float>& pc, paged_cache<float>::sequence_id s, const kv_cache<float>& ref,
                    std::size_t l, std::size_t B) {
  for (std::size_t h = 0; h < H; ++h) {
    const std::size_t n = pc.length(s, l, h), m = ref.length(l, h);
    INFO("layer " << l << " head " << h << ": paged " << n << " rows, window " << m);
    REQUIRE(n >= m);
    REQUIRE(n - m < B);
    for (std::size_t t = 0; t < n; ++t) {
      const auto p = static_cast<std::size_t>(pc.position(s, l, h, t));
      if (t >= n - m) REQUIRE(pc.position(s, l, h, t) == ref.positions(l, h)[t - (n - m)]);
      if (t > 0) REQUIRE(pc.position(s, l, h, t) == pc.position(s, l, h, t - 1) + 1);
      for (std::size_t d = 0; d < D; ++d) REQUIRE(pc.key_row(s, l, h, t)[d] == val(l, h, p, d));
    }
  }
}
}  // namespace

TEST_CASE("paged_cache drop_blocks_before keeps the window and returns whole blocks", "[paged][window]") {
  for (const std::size_t B : {std::size_t{1}, std::size_t{4}, std::size_t{16}}) {
    for (int round = 0; round < 6; ++round) {
      const std::size_t W = uniform_int(1, 40), S = 3;
      paged_cache<float> pc(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{4000}, block_tokens{B}));
      std::vector<paged_cache<float>::sequence_id> ids;
      std::vector<kv_cache<float>> refs;
      std::vector<std::size_t> next(S, 0);
      for (std::size_t s = 0; s < S; ++s) {
        ids.push_back(pc.add_sequence());
        refs.emplace_back(layers{L}, heads{H}, dim{D}, 0);
      }
      for (int step = 0; step < 150; ++step) {
        const std::size_t s = uniform_int(0, S - 1);
        const std::size_t n = uniform_int(0, 3) == 0 ? uniform_int(1, 50) : 1;  // prefill chunk or decode
        const std::size_t pos = next[s];
        // layer 0 is local (window W), layer 1 global: drop what no query of the call sees,
        // append, then what no later query sees (as paged_session does)
        const auto first_seen = static_cast<pos_t>(pos) - static_cast<pos_t>(W) + 1;
        std::vector<std::size_t> dropped(H);
        const std::size_t used = pc.blocks_used(0);
        const std::size_t back = pc.drop_blocks_before(ids[s], 0, first_seen, dropped);
        REQUIRE(pc.blocks_used(0) == used - back);
        for (std::size_t h = 0; h < H; ++h) REQUIRE(dropped[h] % B == 0);
        append(pc, ids[s], refs[s], 0, pos, n);
        append(pc, ids[s], refs[s], 1, pos, n);
        next[s] = pos + n;
        const auto first_kept = static_cast<pos_t>(next[s]) - static_cast<pos_t>(W);
        pc.drop_blocks_before(ids[s], 0, first_kept);
        refs[s].drop_before(0, first_kept);
        require_window(pc, ids[s], refs[s], 0, B);
        for (std::size_t h = 0; h < H; ++h) REQUIRE(pc.length(ids[s], 1, h) == next[s]);  // global: untouched
        std::size_t held = 0;
        for (std::size_t q = 0; q < S; ++q) held += pc.blocks_held(ids[q], 0);
        REQUIRE(pc.blocks_used(0) == held);  // no leak
        if (uniform_int(0, 40) == 0) {  // a sequence ends, another starts
          pc.free_sequence(ids[s]);
          ids[s] = pc.add_sequence();
          refs[s] = kv_cache<float>(layers{L}, heads{H}, dim{D}, 0);
          next[s] = 0;
        }
      }
      for (auto id : ids) pc.free_sequence(id);
      REQUIRE(pc.blocks_used(0) == 0);
      REQUIRE(pc.blocks_used(1) == 0);
    }
  }
}

TEST_CASE("paged_cache sliding window: memory constant at W..W+B-1 rows over 5000 decode steps", "[paged][window]") {
  constexpr std::size_t W = 128, B = 16, steps = 5000;
  constexpr std::size_t per_head = (W + B - 1 + B - 1) / B;  // blocks of W + B - 1 rows
  // the local layer's pool holds just what the window needs (plus one block for the next token)
  paged_cache<float> pc(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{H * (per_head + 1)}, block_tokens{B}));
  const auto s = pc.add_sequence();
  kv_cache<float> ref(layers{L}, heads{H}, dim{D}, 0);
  std::size_t max_used = 0;
  for (std::size_t p = 0; p < steps; ++p) {
    pc.drop_blocks_before(s, 0, static_cast<pos_t>(p) - static_cast<pos_t>(W) + 1);
    std::vector<float> buf(H * D);
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t d = 0; d < D; ++d) buf[h * D + d] = val(0, h, p, d);
    const auto v = kv_view<const float>::hnd(buf.data(), kv_shape(heads{H}, tokens{1}, dim{D}));
    const pos_t P = static_cast<pos_t>(p);
    pc.append(s, 0, v, v, span<const pos_t>(&P, 1));
    if (ref.length(0, 0) == ref.capacity(0, 0)) ref.reserve(0, 2 * W + 2);
    if (ref.length(0, 0) == W) ref.drop_oldest(0, 1);
    ref.append(0, v, v, span<const pos_t>(&P, 1));
    pc.drop_blocks_before(s, 0, static_cast<pos_t>(p + 1) - static_cast<pos_t>(W));
    max_used = std::max(max_used, pc.blocks_used(0));
    const std::size_t n = pc.length(s, 0, 0);
    if (p + 1 >= W) {
      REQUIRE(n >= W);
      REQUIRE(n <= W + B - 1);
    }
    if (p % 101 == 0) require_window(pc, s, ref, 0, B);
  }
  CHECK(max_used <= H * per_head);
  // a whole table older than first_kept (the last block partly filled) is returned too
  std::vector<std::size_t> dropped(H);
  const std::size_t held = pc.blocks_held(s, 0);
  CHECK(pc.drop_blocks_before(s, 0, static_cast<pos_t>(steps) + 5, dropped) == held);
  CHECK(pc.length(s, 0, 0) == 0);
  CHECK(pc.blocks_used(0) == 0);
  const pos_t P = static_cast<pos_t>(steps + 10);
  std::vector<float> buf(H * D, 1.0f);
  const auto v = kv_view<const float>::hnd(buf.data(), kv_shape(heads{H}, tokens{1}, dim{D}));
  pc.append(s, 0, v, v, span<const pos_t>(&P, 1));
  CHECK(pc.length(s, 0, 1) == 1);
}

TEST_CASE("paged_cache drop_blocks_before errors name the argument and change nothing", "[paged][window][errors]") {
  paged_cache<float> pc(paged_cache_shape(layers{L}, heads{H}, dim{D}, blocks{16}, block_tokens{4}));
  const auto s = pc.add_sequence();
  std::vector<float> buf(H * 10 * D, 1.0f);
  std::vector<pos_t> P(10);
  for (std::size_t t = 0; t < 10; ++t) P[t] = static_cast<pos_t>(t);
  const auto v = kv_view<const float>::hnd(buf.data(), kv_shape(heads{H}, tokens{10}, dim{D}));
  pc.append(s, 0, v, v, P);
  std::vector<std::size_t> wrong(H + 1);
  require_error([&] { pc.drop_blocks_before(s, 0, 9, wrong); },
                {"depthkv::paged_cache::drop_blocks_before", "dropped_rows has 3 entries", "n_kv_heads = 2"});
  require_error([&] { pc.drop_blocks_before(s, 2, 9); }, {"layer 2 out of range"});
  require_error([&] { pc.drop_blocks_before(s + 1, 0, 9); }, {"sequence 1 is not a live sequence"});
  CHECK(pc.length(s, 0, 0) == 10);
  CHECK(pc.blocks_used(0) == 2 * H + H);
  // rows 0..3 and 4..7 are older than 8; 8, 9 stay in the partly filled third block
  std::vector<std::size_t> dropped(H);
  CHECK(pc.drop_blocks_before(s, 0, 8, dropped) == 2 * H);
  CHECK(dropped[0] == 8);
  CHECK(pc.length(s, 0, 1) == 2);
  CHECK(pc.position(s, 0, 1, 0) == 8);
  CHECK(pc.drop_blocks_before(s, 0, 9) == 0);  // block 8..9 still holds position 9
}
