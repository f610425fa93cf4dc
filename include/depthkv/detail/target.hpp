// Which SIMD paths a build compiles, and the code regions that compile a path's kernels for its
// instruction set by target attribute, whatever -m flags the including translation unit has
// (internal header; the only place ISA flags and names are spelled).
//
// Regions (each opened and closed around namespace-scope code; never nested):
//   DEPTHKV_BASELINE_BEGIN/END  plain code compiled for x86-64 (SSE2) even in a TU built with
//                               -mavx2 or -march=native: the portable kernels and the dispatch
//                               switches, so that their machine code is the same in every TU.
//   DEPTHKV_AVX2_BEGIN/END      the AVX2 path: AVX2, FMA, F16C, BMI1/2, LZCNT, POPCNT, SSE4.2.
//   DEPTHKV_AVX512_BEGIN/END    the AVX-512 path: the AVX2 set + AVX512F/BW/DQ/VL/CD (x86-64-v4).
// A target attribute adds to the TU's own flags and cannot take them away from code that calls
// intrinsics (both GCC and Clang refuse to inline the intrinsics then), so a TU whose flags
// already go beyond a path (e.g. -march=x86-64-v4 for the AVX2 path, -march=sapphirerapids for
// the AVX-512 one) would compile that path with the extra instructions. Such a TU therefore
// compiles the path under a TU-specific namespace (DEPTHKV_AVX2_NS / DEPTHKV_AVX512_NS) and only
// declares the shared names weakly: the program uses a copy from a TU built without the extra
// flags when it has one (the same code in every such TU), else that TU's own copy.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

// DEPTHKV_PORTABLE_ONLY (define before including depthkv) compiles the portable path only.
#if !defined(DEPTHKV_PORTABLE_ONLY) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__x86_64__) || defined(_M_X64))
#define DEPTHKV_X86_SIMD 1
#else
#define DEPTHKV_X86_SIMD 0
#endif

// SIMD paths compiled into this build (whatever the TU's flags; the CPU is checked at run time).
#define DEPTHKV_HAVE_AVX2 DEPTHKV_X86_SIMD
#define DEPTHKV_HAVE_AVX512 DEPTHKV_X86_SIMD

#define DEPTHKV_TARGET_STR_AVX2 "avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt,sse3,ssse3,sse4.1,sse4.2"
#define DEPTHKV_TARGET_STR_AVX512 DEPTHKV_TARGET_STR_AVX2 ",avx512f,avx512bw,avx512dq,avx512vl,avx512cd"
#define DEPTHKV_TARGET_STR_BASELINE                                                                          \
  "no-avx,no-avx2,no-fma,no-f16c,no-bmi,no-bmi2,no-lzcnt,no-popcnt,no-sse3,no-ssse3,no-sse4.1,no-sse4.2," \
  "no-avx512f,no-gfni,no-vaes,no-vpclmulqdq,no-movbe"

#if DEPTHKV_X86_SIMD
#define DEPTHKV_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define DEPTHKV_REGION_BEGIN(str) DEPTHKV_PRAGMA(clang attribute push(__attribute__((target(str))), apply_to = function))
#define DEPTHKV_REGION_END DEPTHKV_PRAGMA(clang attribute pop)
#else
#define DEPTHKV_REGION_BEGIN(str) DEPTHKV_PRAGMA(GCC push_options) DEPTHKV_PRAGMA(GCC target(str))
#define DEPTHKV_REGION_END DEPTHKV_PRAGMA(GCC pop_options)
#endif
#define DEPTHKV_BASELINE_BEGIN DEPTHKV_REGION_BEGIN(DEPTHKV_TARGET_STR_BASELINE)
#define DEPTHKV_BASELINE_END DEPTHKV_REGION_END
#define DEPTHKV_AVX2_BEGIN DEPTHKV_REGION_BEGIN(DEPTHKV_TARGET_STR_AVX2)
#define DEPTHKV_AVX2_END DEPTHKV_REGION_END
#define DEPTHKV_AVX512_BEGIN DEPTHKV_REGION_BEGIN(DEPTHKV_TARGET_STR_AVX512)
#define DEPTHKV_AVX512_END DEPTHKV_REGION_END
#else
#define DEPTHKV_BASELINE_BEGIN
#define DEPTHKV_BASELINE_END
#endif

// Instruction sets that change what a compiler may emit for vector code, beyond each path's set.
#if defined(__AVX512F__) || defined(__AVXVNNI__) || defined(__AVXIFMA__) || defined(__AVXVNNIINT8__) || \
    defined(__AVXNECONVERT__) || defined(__GFNI__) || defined(__VAES__) || defined(__VPCLMULQDQ__)
#define DEPTHKV_TU_ABOVE_AVX2 1
#else
#define DEPTHKV_TU_ABOVE_AVX2 0
#endif
#if defined(__AVX512FP16__) || defined(__AVX512BF16__) || defined(__AVX512VNNI__) || defined(__AVX512IFMA__) || \
    defined(__AVX512VBMI__) || defined(__AVX512VBMI2__) || defined(__AVX512BITALG__) ||                        \
    defined(__AVX512VPOPCNTDQ__) || defined(__AVX512VP2INTERSECT__) || defined(__AVX512ER__) ||               \
    defined(__AVX512PF__) || defined(__AVX5124FMAPS__) || defined(__AVX5124VNNIW__) || defined(__AVXVNNI__) ||  \
    defined(__AVXIFMA__) || defined(__AVXVNNIINT8__) || defined(__AVXNECONVERT__) || defined(__GFNI__) ||        \
    defined(__VAES__) || defined(__VPCLMULQDQ__) || defined(__AMX_TILE__)
#define DEPTHKV_TU_ABOVE_AVX512 1
#else
#define DEPTHKV_TU_ABOVE_AVX512 0
#endif

// A TU-specific namespace name for a path compiled in a TU above it: the path's name followed by
// one digit per extra instruction set, so TUs with different extra flags never share it.
#if defined(__AVX512F__)
#define DEPTHKV_F_0 1
#else
#define DEPTHKV_F_0 0
#endif
#if defined(__AVX512FP16__) || defined(__AVX512BF16__)
#define DEPTHKV_F_1 1
#else
#define DEPTHKV_F_1 0
#endif
#if defined(__AVX512VNNI__) || defined(__AVXVNNI__) || defined(__AVXVNNIINT8__)
#define DEPTHKV_F_2 1
#else
#define DEPTHKV_F_2 0
#endif
#if defined(__AVX512IFMA__) || defined(__AVXIFMA__)
#define DEPTHKV_F_3 1
#else
#define DEPTHKV_F_3 0
#endif
#if defined(__AVX512VBMI__) || defined(__AVX512VBMI2__)
#define DEPTHKV_F_4 1
#else
#define DEPTHKV_F_4 0
#endif
#if defined(__AVX512BITALG__) || defined(__AVX512VPOPCNTDQ__)
#define DEPTHKV_F_5 1
#else
#define DEPTHKV_F_5 0
#endif
#if defined(__GFNI__) || defined(__VAES__) || defined(__VPCLMULQDQ__)
#define DEPTHKV_F_6 1
#else
#define DEPTHKV_F_6 0
#endif
#if defined(__AVX512VP2INTERSECT__) || defined(__AVX512ER__) || defined(__AVX512PF__) || \
    defined(__AVX5124FMAPS__) || defined(__AVX5124VNNIW__) || defined(__AVXNECONVERT__) || defined(__AMX_TILE__)
#define DEPTHKV_F_7 1
#else
#define DEPTHKV_F_7 0
#endif
#define DEPTHKV_TU_NS_(p, a, b, c, d, e, f, g, h) p##_tu##a##b##c##d##e##f##g##h
#define DEPTHKV_TU_NS(p, a, b, c, d, e, f, g, h) DEPTHKV_TU_NS_(p, a, b, c, d, e, f, g, h)
#define DEPTHKV_TU_LOCAL_NS(path) \
  DEPTHKV_TU_NS(path, DEPTHKV_F_0, DEPTHKV_F_1, DEPTHKV_F_2, DEPTHKV_F_3, DEPTHKV_F_4, DEPTHKV_F_5, DEPTHKV_F_6, DEPTHKV_F_7)

// Where this TU defines each path's code: the shared name, or its own when its flags exceed it.
#if DEPTHKV_TU_ABOVE_AVX2
#define DEPTHKV_AVX2_NS DEPTHKV_TU_LOCAL_NS(avx2)
#else
#define DEPTHKV_AVX2_NS avx2
#endif
#if DEPTHKV_TU_ABOVE_AVX512
#define DEPTHKV_AVX512_NS DEPTHKV_TU_LOCAL_NS(avx512)
#else
#define DEPTHKV_AVX512_NS avx512
#endif

// A weak declaration of a shared-name entry point (TUs above the path only).
#define DEPTHKV_WEAK __attribute__((weak))

// Pointer to entry point `fn` of a path: the shared copy; in a TU above the path, the shared copy
// when another TU of the program defined it (the weak reference resolved), else this TU's own.
#if DEPTHKV_TU_ABOVE_AVX2
#define DEPTHKV_AVX2_FN(fn) \
  (&::depthkv::detail::avx2::fn ? &::depthkv::detail::avx2::fn : &::depthkv::detail::DEPTHKV_AVX2_NS::fn)
#else
#define DEPTHKV_AVX2_FN(fn) (&::depthkv::detail::avx2::fn)
#endif
#if DEPTHKV_TU_ABOVE_AVX512
#define DEPTHKV_AVX512_FN(fn) \
  (&::depthkv::detail::avx512::fn ? &::depthkv::detail::avx512::fn : &::depthkv::detail::DEPTHKV_AVX512_NS::fn)
#else
#define DEPTHKV_AVX512_FN(fn) (&::depthkv::detail::avx512::fn)
#endif
