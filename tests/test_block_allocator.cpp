// block_allocator (cache/block_allocator.hpp): a property test against a reference set over
// thousands of random allocate/free steps, O(1) calls that never allocate, and its errors.
#include <algorithm>
#include <cstdint>
#include <random>
#include <optional>
#include <set>
#include <vector>

#include "catch.hpp"
#include "count_allocations.hpp"  // g_news: operator new calls so far
#include "depthkv/cache/block_allocator.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;

TEST_CASE("block_allocator matches a reference set and never leaks", "[paged][allocator]") {
  for (const std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{256}}) {
    block_allocator a(blocks{n});
    std::set<std::int32_t> used;
    std::mt19937 g(static_cast<std::uint32_t>(n));
    std::vector<std::int32_t> batch(8);
    long allocs = 0;  // operator new calls made inside the allocator's members
    auto counted = [&](auto&& f) {
      const long before = g_news.load();
      f();
      allocs += g_news.load() - before;
    };
    for (int step = 0; step < 5000; ++step) {
      const int op = static_cast<int>(g() % 4);
      if (op == 0) {
        std::optional<std::int32_t> id;
        counted([&] { id = a.try_allocate(); });
        REQUIRE(id.has_value() == (used.size() < n));
        if (id) {
          REQUIRE(used.count(*id) == 0);
          REQUIRE((*id >= 0 && static_cast<std::size_t>(*id) < n));
          used.insert(*id);
        }
      } else if (op == 1) {
        const std::size_t m = g() % batch.size();
        bool ok = false;
        counted([&] { ok = a.try_allocate(span<std::int32_t>(batch.data(), m)); });
        REQUIRE(ok == (used.size() + m <= n));
        for (std::size_t i = 0; ok && i < m; ++i) REQUIRE(used.insert(batch[i]).second);
      } else if (op == 2 && !used.empty()) {
        auto it = used.begin();
        std::advance(it, static_cast<long>(g() % used.size()));
        counted([&] { a.free(*it); });
        used.erase(it);
      } else if (op == 3 && !used.empty()) {  // free a few at once, in a random order
        std::vector<std::int32_t> ids(used.begin(), used.end());
        std::shuffle(ids.begin(), ids.end(), g);
        ids.resize(std::min<std::size_t>(ids.size(), 1 + g() % 4));
        counted([&] { a.free(span<const std::int32_t>(ids)); });
        for (const std::int32_t id : ids) used.erase(id);
      }
      REQUIRE(a.n_used() == used.size());
      REQUIRE(a.n_free() == n - used.size());
    }
    CHECK(allocs == 0);  // no heap allocation after construction
    for (std::int32_t id = 0; id < static_cast<std::int32_t>(n); ++id) REQUIRE(a.is_used(id) == (used.count(id) == 1));
    a.free(span<const std::int32_t>(std::vector<std::int32_t>(used.begin(), used.end())));
    CHECK(a.n_free() == n);  // everything returned
  }
}

TEST_CASE("block_allocator errors leave it unchanged", "[paged][allocator][errors]") {
  block_allocator a(blocks{4});
  const std::int32_t x = *a.try_allocate(), y = *a.try_allocate();
  CHECK(x == 0);  // lowest ids first
  CHECK(y == 1);
  require_error([&] { a.free(4); }, {"depthkv::block_allocator::free", "id 4", "not a block of this pool (n_blocks 4)"});
  require_error([&] { a.free(-1); }, {"id -1", "not a block"});
  require_error([&] { a.free(2); }, {"id 2", "not in use"});
  const std::vector<std::int32_t> twice{x, y, x}, foreign{y, 9}, unused{x, 3};
  require_error([&] { a.free(span<const std::int32_t>(twice)); }, {"ids[2] = 0", "listed twice"});
  require_error([&] { a.free(span<const std::int32_t>(foreign)); }, {"ids[1] = 9", "not a block"});
  require_error([&] { a.free(span<const std::int32_t>(unused)); }, {"ids[1] = 3", "not in use"});
  CHECK(a.n_used() == 2);  // nothing was freed by the failed calls
  CHECK(a.is_used(x));
  CHECK(a.is_used(y));
  std::vector<std::int32_t> three(3);
  CHECK_FALSE(a.try_allocate(span<std::int32_t>(three)));  // only 2 free: all or nothing
  CHECK(a.n_free() == 2);
  require_error([] { block_allocator(blocks{block_allocator::max_blocks + 1}); }, {"exceeds", "int32 block ids"});
}
