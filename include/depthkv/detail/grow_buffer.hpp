// A grow-only scratch array of trivially copyable T (internal): reallocates only when asked for
// more than it holds, never zero-fills. The kernels' scratch types are built from it rather than
// std::vector, so that no standard-library code compiled with another TU's -m flags sits on
// their path (detail/target.hpp).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>
#include <memory>
#include <type_traits>

#include "depthkv/detail/target.hpp"

namespace depthkv::detail {
DEPTHKV_BASELINE_BEGIN

template <class T>
class grow_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "grow_buffer holds trivially copyable elements");

 public:
  // Room for at least n elements (contents unspecified after a reallocation).
  T* reserve(std::size_t n) {
    if (size_ < n) {
      data_.reset(new T[n]);  // default-initialised: no fill
      size_ = n;
    }
    return data_.get();
  }
  T* data() noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }

 private:
  std::unique_ptr<T[]> data_;
  std::size_t size_ = 0;
};

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail
