// Bounds-checked little-endian reader over a byte buffer; failures throw load_error naming the input.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "minillama/loaders.hpp"
#include "text.hpp"

namespace minillama::detail {

static_assert(sizeof(float) == 4, "minillama loaders need 32-bit float");

inline bool host_is_little_endian() noexcept {
  const std::uint16_t x = 1;
  unsigned char c;
  std::memcpy(&c, &x, 1);
  return c == 1;
}

class reader {
 public:
  reader(bytes_view b, const std::string& name) : p_(b.data()), n_(b.size()), name_(name) {
    if (!host_is_little_endian()) fail("loaders support little-endian hosts only");
  }

  template <class... Parts>
  [[noreturn]] void fail(Parts&&... parts) const {
    throw load_error(minillama::concat(name_, ": ", std::forward<Parts>(parts)...));
  }

  std::size_t offset() const noexcept { return off_; }
  std::size_t size() const noexcept { return n_; }
  std::size_t remaining() const noexcept { return n_ - off_; }
  const std::uint8_t* here() const noexcept { return p_ + off_; }

  // Throws unless k more bytes exist.
  void need(std::uint64_t k, const char* what) const {
    if (k > remaining())
      fail("truncated: ", what, " needs ", k, " bytes at offset ", off_, " but only ", remaining(), " remain");
  }
  void skip(std::uint64_t k, const char* what) {
    need(k, what);
    off_ += static_cast<std::size_t>(k);
  }
  void seek(std::uint64_t pos, const char* what) {
    if (pos > n_) fail("truncated: ", what, " at offset ", pos, " is past the end (", n_, " bytes)");
    off_ = static_cast<std::size_t>(pos);
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + off_, sizeof(T));
    off_ += sizeof(T);
    return v;
  }
  // Copies n floats (little-endian f32) into dst.
  void floats(float* dst, std::uint64_t n, const char* what) {
    if (n > remaining() / 4)
      fail("truncated: ", what, " needs ", n, " floats at offset ", off_, " but only ", remaining(), " bytes remain");
    std::memcpy(dst, p_ + off_, static_cast<std::size_t>(n) * 4);
    off_ += static_cast<std::size_t>(n) * 4;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::size_t off_ = 0;
  const std::string& name_;
};

// Throws load_error if any of the n values is NaN or infinite.
void check_finite(const reader& r, const float* p, std::size_t n, const std::string& tensor);

}  // namespace minillama::detail
