// Run-time choice of the kernel path: which instruction sets this build compiled, which of them
// the CPU (and the OS, for the AVX-512 register state) supports, and which one kernels use.
//
// On first use the library picks the best supported path once (thread-safe). The environment
// variable DEPTHKV_ISA=scalar|avx2|avx512, read at that moment, caps it: a path the CPU lacks
// falls back to the best one below it; other values are ignored. set_isa() forces a path for
// the whole process (tests, benchmarks); scoped_isa does so for a scope. Every kernel entry
// (top-k, compaction, window scoring, and the pipeline over them) dispatches on active_isa().
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "depthkv/detail/target.hpp"
#include "depthkv/error.hpp"

#if DEPTHKV_X86_SIMD
#include <cpuid.h>
#endif

namespace depthkv {
DEPTHKV_BASELINE_BEGIN  // the same machine code in every TU (detail/target.hpp)

/// Kernel paths: portable C++ (`scalar`), AVX2+FMA+F16C, AVX-512 (F/BW/DQ/VL/CD).
enum class isa { scalar, avx2, avx512 };

constexpr const char* isa_name(isa i) noexcept {
  switch (i) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
  }
  return "?";
}

/// True when this build contains path i (x86-64 GCC/Clang builds contain all three, whatever
/// their -m flags; others, and DEPTHKV_PORTABLE_ONLY builds, only the portable one).
constexpr bool isa_compiled(isa i) noexcept {
  return i == isa::scalar || DEPTHKV_X86_SIMD != 0;
}

namespace detail {

#if DEPTHKV_X86_SIMD
/// XCR0: which register states the OS saves on a context switch (xgetbv, after checking OSXSAVE).
inline unsigned long long xcr0() noexcept {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}
#endif

/// The best path the CPU and OS support among those compiled (cpuid + xgetbv).
inline isa detect_isa() noexcept {
#if DEPTHKV_X86_SIMD
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return isa::scalar;
  const unsigned c1 = c;
  auto bit = [](unsigned reg, int i) { return ((reg >> i) & 1u) != 0; };
  // SSE3, SSSE3, FMA, SSE4.1, SSE4.2, POPCNT, OSXSAVE, AVX, F16C
  const bool base = bit(c1, 0) && bit(c1, 9) && bit(c1, 12) && bit(c1, 19) && bit(c1, 20) && bit(c1, 23) &&
                    bit(c1, 27) && bit(c1, 28) && bit(c1, 29);
  if (!base || (xcr0() & 0x6) != 0x6) return isa::scalar;  // XMM and YMM state
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return isa::scalar;
  const unsigned b7 = b;
  unsigned lz = 0;
  if (__get_cpuid(0x80000001u, &a, &b, &c, &d)) lz = c;
  // AVX2, BMI1, BMI2, LZCNT (ABM)
  if (!(bit(b7, 5) && bit(b7, 3) && bit(b7, 8) && bit(lz, 5))) return isa::scalar;
  // AVX512F, DQ, CD, BW, VL and the opmask / ZMM state.
  const bool f512 = bit(b7, 16) && bit(b7, 17) && bit(b7, 28) && bit(b7, 30) && bit(b7, 31);
  if (f512 && (xcr0() & 0xe6) == 0xe6) return isa::avx512;
  return isa::avx2;
#else
  return isa::scalar;
#endif
}

// The path kernels use now; -1 until first use. Accessed with the compiler's atomic builtins:
// std::atomic's always-inline members cannot be inlined into baseline-region code of a TU
// built with wider -m flags.
#if defined(__GNUC__) || defined(__clang__)
inline int g_active_isa = -1;
inline int load_active() noexcept { return __atomic_load_n(&g_active_isa, __ATOMIC_RELAXED); }
inline void store_active(int v) noexcept { __atomic_store_n(&g_active_isa, v, __ATOMIC_RELAXED); }
inline int init_active(int v) noexcept {  // first writer wins; returns the value in place
  int expected = -1;
  return __atomic_compare_exchange_n(&g_active_isa, &expected, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
             ? v
             : expected;
}
#else
inline std::atomic<int> g_active_isa{-1};
inline int load_active() noexcept { return g_active_isa.load(std::memory_order_relaxed); }
inline void store_active(int v) noexcept { g_active_isa.store(v, std::memory_order_relaxed); }
inline int init_active(int v) noexcept {
  int expected = -1;
  return g_active_isa.compare_exchange_strong(expected, v, std::memory_order_relaxed) ? v : expected;
}
#endif

/// The first-use choice: the detected path, capped by DEPTHKV_ISA.
inline isa initial_isa() noexcept {
  const isa best = detect_isa();
  const char* env = std::getenv("DEPTHKV_ISA");
  if (env == nullptr) return best;
  isa cap = best;
  if (std::strcmp(env, "scalar") == 0) cap = isa::scalar;
  else if (std::strcmp(env, "avx2") == 0) cap = isa::avx2;
  else if (std::strcmp(env, "avx512") == 0) cap = isa::avx512;
  return static_cast<int>(cap) < static_cast<int>(best) ? cap : best;
}

}  // namespace detail

/// The best path compiled into this build that this CPU (and OS) can run.
inline isa detected_isa() noexcept {
  static const isa best = detail::detect_isa();
  return best;
}

/// True when path i is compiled in and this CPU can run it.
inline bool isa_supported(isa i) noexcept {
  return isa_compiled(i) && static_cast<int>(i) <= static_cast<int>(detected_isa());
}

/// The path every kernel uses: set on first use (detected_isa(), capped by DEPTHKV_ISA), or by set_isa.
inline isa active_isa() noexcept {
  int v = detail::load_active();
  if (v < 0) v = detail::init_active(static_cast<int>(detail::initial_isa()));
  return static_cast<isa>(v);
}

/// Makes every later kernel call (all threads) use path i. Throws depthkv::error if this build
/// or this CPU lacks it. Calls in flight on other threads finish on the path they started with.
inline void set_isa(isa i) {
  DEPTHKV_CHECK(isa_supported(i), "depthkv::set_isa", "isa ", isa_name(i),
                isa_compiled(i) ? " is not supported by this CPU (best: " : " is not compiled into this build (best: ",
                isa_name(detected_isa()), ")");
  detail::store_active(static_cast<int>(i));
}

/// Forces path i for its lifetime and restores the previous one (process-wide, like set_isa).
class scoped_isa {
 public:
  explicit scoped_isa(isa i) : previous_(active_isa()) { set_isa(i); }
  ~scoped_isa() { detail::store_active(static_cast<int>(previous_)); }
  scoped_isa(const scoped_isa&) = delete;
  scoped_isa& operator=(const scoped_isa&) = delete;

 private:
  isa previous_;
};

DEPTHKV_BASELINE_END
}  // namespace depthkv
