// Build configuration: the internal assert and compile-time ISA selection.
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

// Widest SIMD instruction set this translation unit is compiled for. Kernels pick their
// default implementation from it; tests and benchmarks may still force a narrower one.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define DEPTHKV_HAVE_AVX512 1
#else
#define DEPTHKV_HAVE_AVX512 0
#endif
#if defined(__AVX2__) && defined(__FMA__)
#define DEPTHKV_HAVE_AVX2 1
#else
#define DEPTHKV_HAVE_AVX2 0
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

namespace depthkv {

// Instruction-set paths a kernel can run. `best` is the widest this TU was compiled for.
enum class isa { scalar, avx2, avx512 };

inline constexpr isa best_isa =
#if DEPTHKV_HAVE_AVX512
    isa::avx512;
#elif DEPTHKV_HAVE_AVX2
    isa::avx2;
#else
    isa::scalar;
#endif

// True when this TU can run kernels of `i` (compiled in; the CPU is assumed to match the flags).
constexpr bool isa_available(isa i) noexcept {
  switch (i) {
    case isa::scalar: return true;
    case isa::avx2: return DEPTHKV_HAVE_AVX2 != 0;
    case isa::avx512: return DEPTHKV_HAVE_AVX512 != 0;
  }
  return false;
}

constexpr const char* isa_name(isa i) noexcept {
  switch (i) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
  }
  return "?";
}

}  // namespace depthkv
