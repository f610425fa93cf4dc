// Options and reusable working memory of depthkv::topk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace depthkv {

// Positions that are always kept and count toward k: the first n_sink and the last n_recent.
struct topk_options {
  std::size_t n_sink = 0;
  std::size_t n_recent = 0;
};

// Reusable working memory for topk: after it has grown to the largest row seen (or after
// reserve(n)), topk allocates nothing. One scratch per thread; never shared concurrently.
class topk_scratch {
 public:
  topk_scratch() = default;
  explicit topk_scratch(std::size_t n) { reserve(n); }

  // Grows the buffers so that rows of up to n scores need no allocation (14 bytes per score).
  void reserve(std::size_t n) {
    grow(cand_, n + 32 + n / 2 + 32);
    grow(keys_, n + 16);
    grow(keys2_, n + 16);
  }

  // Internal (used by the kernels): a candidate buffer of >= n floats, two key buffers of >= n.
  // Contents are unspecified (never zero-filled: growing costs an allocation, not a pass).
  float* candidates(std::size_t n) { return grow(cand_, n); }
  std::int32_t* keys(std::size_t n) { return grow(keys_, n); }
  std::int32_t* keys2(std::size_t n) { return grow(keys2_, n); }

 private:
  template <class T>
  struct buffer {
    std::unique_ptr<T[]> data;
    std::size_t size = 0;
  };
  template <class T>
  static T* grow(buffer<T>& b, std::size_t n) {
    if (b.size < n) {
      b.data.reset(new T[n]);  // default-initialized: no fill
      b.size = n;
    }
    return b.data.get();
  }
  buffer<float> cand_;
  buffer<std::int32_t> keys_, keys2_;
};

}  // namespace depthkv
