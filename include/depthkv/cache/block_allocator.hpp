// Free-list allocator of a page pool's block ids: O(1) allocate and free, no heap allocation
// after construction, double frees and foreign ids rejected.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "depthkv/detail/raise.hpp"
#include "depthkv/types.hpp"
#include "depthkv/view/paged.hpp"

namespace depthkv {

/// Hands out the block ids 0..n_blocks-1 of one pool. Every member that throws leaves the
/// allocator as it was. Not thread-safe: one allocator per pool, guarded by its owner.
class block_allocator {
 public:
  /// Largest pool: block ids are int32 (as in vLLM's block tables).
  static constexpr std::size_t max_blocks = static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()) + 1;

  block_allocator() = default;
  /// All n_blocks ids free. Throws when n_blocks exceeds max_blocks.
  explicit block_allocator(blocks n_blocks) {
    DEPTHKV_CHECK(n_blocks.value <= max_blocks, "depthkv::block_allocator", "n_blocks ", n_blocks.value,
                  " exceeds the ", max_blocks, " that int32 block ids can name");
    free_.resize(n_blocks.value);
    used_.assign(n_blocks.value, 0);
    // Lowest ids first out: free_ is a stack whose top is the next id handed out.
    for (std::size_t i = 0; i < n_blocks.value; ++i) free_[i] = static_cast<std::int32_t>(n_blocks.value - 1 - i);
  }

  std::size_t n_blocks() const noexcept { return used_.size(); }
  std::size_t n_free() const noexcept { return free_.size(); }
  std::size_t n_used() const noexcept { return used_.size() - free_.size(); }
  /// Whether `id` is a block of this pool that is currently handed out.
  bool is_used(std::int32_t id) const noexcept { return in_range(id) && used_[static_cast<std::size_t>(id)] != 0; }

  /// A free block id, or nothing when the pool is exhausted. O(1).
  std::optional<std::int32_t> try_allocate() noexcept {
    if (free_.empty()) return std::nullopt;
    const std::int32_t id = free_.back();
    free_.pop_back();  // never reallocates
    used_[static_cast<std::size_t>(id)] = 1;
    return id;
  }
  /// Fills `out` with free ids, all or none: false (nothing taken) when fewer than out.size() are free.
  bool try_allocate(span<std::int32_t> out) noexcept {
    if (out.size() > free_.size()) return false;
    for (std::int32_t& id : out) id = *try_allocate();
    return true;
  }
  /// Returns `id` to the pool. O(1). Throws for an id outside the pool or one that is not in use.
  void free(std::int32_t id) {
    check_freeable("depthkv::block_allocator::free", id, "id");
    release(id);
  }
  /// Returns every id in `ids`, all or none: throws (freeing nothing) when one is outside the
  /// pool, not in use, or listed twice.
  void free(span<const std::int32_t> ids) {
    constexpr const char* where = "depthkv::block_allocator::free";
    std::size_t i = 0;
    // Marks listed ids as not in use while checking, so a repeat is caught; undone on error.
    struct undo {
      block_allocator& a;
      span<const std::int32_t> ids;
      std::size_t& done;
      bool armed = true;
      ~undo() {
        if (armed)
          for (std::size_t j = 0; j < done; ++j) a.used_[static_cast<std::size_t>(ids[j])] = 1;
      }
    } guard{*this, ids, i};
    for (; i < ids.size(); ++i) {
      DEPTHKV_CHECK(in_range(ids[i]), where, "ids[", i, "] = ", ids[i], " is not a block of this pool (n_blocks ",
                    n_blocks(), ")");
      DEPTHKV_CHECK(used_[static_cast<std::size_t>(ids[i])] != 0, where, "ids[", i, "] = ", ids[i],
                    " is not in use (freed twice, or listed twice)");
      used_[static_cast<std::size_t>(ids[i])] = 0;
    }
    guard.armed = false;
    for (const std::int32_t id : ids) free_.push_back(id);  // capacity n_blocks: never reallocates
  }

 private:
  bool in_range(std::int32_t id) const noexcept { return id >= 0 && static_cast<std::size_t>(id) < used_.size(); }
  void check_freeable(const char* where, std::int32_t id, const char* name) const {
    DEPTHKV_CHECK(in_range(id), where, name, " ", id, " is not a block of this pool (n_blocks ", n_blocks(), ")");
    DEPTHKV_CHECK(used_[static_cast<std::size_t>(id)] != 0, where, name, " ", id, " is not in use (freed twice?)");
  }
  void release(std::int32_t id) noexcept {
    used_[static_cast<std::size_t>(id)] = 0;
    free_.push_back(id);
  }

  std::vector<std::int32_t> free_;  // stack of free ids; capacity n_blocks from the start
  std::vector<std::uint8_t> used_;  // [n_blocks] 1 while handed out
};

}  // namespace depthkv
