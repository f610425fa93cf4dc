// depthkv::error, the message builder and the DEPTHKV_CHECK macro. Lives under detail/ so that
// the other internal headers can throw without including a public header (no include cycle
// between detail/ and the top level); users include depthkv/error.hpp.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace depthkv {

/// Thrown for invalid configuration or input at a public entry point. The message names the
/// argument and the bad value. A call that throws leaves every object it was given unchanged.
class error : public std::invalid_argument {
 public:
  explicit error(const std::string& what) : std::invalid_argument(what) {}
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Throws depthkv::error("<where>: <message parts...>").
template <class... Parts>
[[noreturn]] void fail(const char* where, Parts&&... parts) {
  throw error(concat(where, ": ", std::forward<Parts>(parts)...));
}

}  // namespace detail
}  // namespace depthkv

// Throws depthkv::error with the message parts when `cond` is false. Use at public entries.
#define DEPTHKV_CHECK(cond, where, ...)                   \
  do {                                                    \
    if (!(cond)) ::depthkv::detail::fail(where, __VA_ARGS__); \
  } while (0)
