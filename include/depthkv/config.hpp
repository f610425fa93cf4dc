// Build configuration: the internal assert, compiler hints, and the kernel paths (isa.hpp).
#pragma once

#include <cstdio>
#include <cstdlib>

// DEPTHKV_ASSERT checks internal invariants (never user input: that throws depthkv::error).
// Define DEPTHKV_ASSERT before including depthkv to route failures elsewhere; define
// DEPTHKV_DISABLE_ASSERTS to compile them out. By default they are on unless NDEBUG.
#ifndef DEPTHKV_ASSERT
#if defined(DEPTHKV_DISABLE_ASSERTS) || (defined(NDEBUG) && !defined(DEPTHKV_ENABLE_ASSERTS))
#define DEPTHKV_ASSERT(cond) ((void)0)
#else
namespace depthkv::detail {
[[noreturn]] inline void assert_fail(const char* expr, const char* file, int line) noexcept {
  std::fprintf(stderr, "depthkv: internal assertion failed: %s (%s:%d)\n", expr, file, line);
  std::abort();
}
}  // namespace depthkv::detail
#define DEPTHKV_ASSERT(cond) \
  ((cond) ? (void)0 : ::depthkv::detail::assert_fail(#cond, __FILE__, __LINE__))
#endif
#endif

#if defined(__GNUC__) || defined(__clang__)
#define DEPTHKV_RESTRICT __restrict__
#define DEPTHKV_LIKELY(x) __builtin_expect(!!(x), 1)
#define DEPTHKV_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define DEPTHKV_RESTRICT
#define DEPTHKV_LIKELY(x) (x)
#define DEPTHKV_UNLIKELY(x) (x)
#endif

// The kernel paths and their run-time choice.
#include "depthkv/isa.hpp"
