// Element types, index types and a minimal span for C++17.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

namespace depthkv {

/// Token index inside one head's rows (what top-k emits and retain consumes).
using index_t = std::uint32_t;
/// Original position of a cached token in the sequence.
using pos_t = std::int32_t;

/// Half-precision element types accepted by the caches and kernels.
using f16 = Eigen::half;
using bf16 = Eigen::bfloat16;

/// True for the K/V element types depthkv supports: float, Eigen::half, Eigen::bfloat16.
template <class T>
inline constexpr bool is_kv_element_v =
    std::is_same_v<std::remove_const_t<T>, float> || std::is_same_v<std::remove_const_t<T>, f16> ||
    std::is_same_v<std::remove_const_t<T>, bf16>;

template <class T>
constexpr const char* element_name() noexcept {
  using U = std::remove_const_t<T>;
  if constexpr (std::is_same_v<U, float>) return "f32";
  else if constexpr (std::is_same_v<U, f16>) return "f16";
  else if constexpr (std::is_same_v<U, bf16>) return "bf16";
  else return "?";
}

/// Non-owning contiguous range (std::span is C++20; this is the subset depthkv needs).
template <class T>
class span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using size_type = std::size_t;

  constexpr span() noexcept = default;
  constexpr span(T* data, std::size_t size) noexcept : data_(data), size_(size) {}
  template <std::size_t N>
  constexpr span(T (&arr)[N]) noexcept : data_(arr), size_(N) {}
  template <class U, std::size_t N,
            class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr span(std::array<U, N>& arr) noexcept : data_(arr.data()), size_(N) {}
  template <class U, std::size_t N,
            class = std::enable_if_t<std::is_convertible_v<const U (*)[], T (*)[]>>>
  constexpr span(const std::array<U, N>& arr) noexcept : data_(arr.data()), size_(N) {}
  template <class U, class A, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  span(std::vector<U, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  template <class U, class A,
            class = std::enable_if_t<std::is_convertible_v<const U (*)[], T (*)[]>>>
  span(const std::vector<U, A>& v) noexcept : data_(v.data()), size_(v.size()) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U (*)[], T (*)[]>>>
  constexpr span(span<U> other) noexcept : data_(other.data()), size_(other.size()) {}

  constexpr T* data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T& operator[](std::size_t i) const noexcept { return data_[i]; }
  constexpr T* begin() const noexcept { return data_; }
  constexpr T* end() const noexcept { return data_ + size_; }
  constexpr span subspan(std::size_t off, std::size_t n) const noexcept { return {data_ + off, n}; }
  constexpr span first(std::size_t n) const noexcept { return {data_, n}; }

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace depthkv
