// depthkv::error and the argument checks that raise it at public entry points:
//   class depthkv::error (a std::invalid_argument) whose message names the argument and value;
//   DEPTHKV_CHECK(cond, where, message parts...) throws it when cond is false.
#pragma once

#include "depthkv/detail/raise.hpp"
