// Message building for the engine's errors (the library's own helper is internal).
#pragma once

#include <sstream>
#include <string>
#include <utility>

namespace minillama {

// The parts streamed one after another into one string.
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

}  // namespace minillama
