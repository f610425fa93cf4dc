// Owning, 64-byte aligned, uninitialised array of trivially copyable T.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace depthkv::detail {

template <class T>
class aligned_buffer {
  static_assert(std::is_trivially_copyable_v<T>, "aligned_buffer holds trivially copyable elements");

 public:
  static constexpr std::size_t alignment = 64;

  aligned_buffer() noexcept = default;
  // Throws std::bad_array_new_length when n * sizeof(T) does not fit in size_t (as new T[n] does).
  explicit aligned_buffer(std::size_t n) : size_(n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    if (n) data_.reset(static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{alignment})));
  }
  aligned_buffer(const aligned_buffer& o) : aligned_buffer(o.size_) {
    if (size_) std::memcpy(data_.get(), o.data_.get(), size_ * sizeof(T));
  }
  aligned_buffer& operator=(const aligned_buffer& o) {
    if (this != &o) {
      aligned_buffer tmp(o);
      swap(tmp);
    }
    return *this;
  }
  aligned_buffer(aligned_buffer&& o) noexcept : data_(std::move(o.data_)), size_(o.size_) { o.size_ = 0; }
  aligned_buffer& operator=(aligned_buffer&& o) noexcept {
    data_ = std::move(o.data_);
    size_ = o.size_;
    o.size_ = 0;
    return *this;
  }

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  std::size_t size() const noexcept { return size_; }
  void swap(aligned_buffer& o) noexcept {
    data_.swap(o.data_);
    std::swap(size_, o.size_);
  }

 private:
  struct deleter {
    void operator()(T* p) const noexcept { ::operator delete(p, std::align_val_t{alignment}); }
  };
  std::unique_ptr<T, deleter> data_;
  std::size_t size_ = 0;
};

}  // namespace depthkv::detail
