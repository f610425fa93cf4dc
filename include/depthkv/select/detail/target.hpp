// The inline namespace that separates copies of select/ code built for different ISAs.
#pragma once

#include "depthkv/config.hpp"

// Code whose machine code depends on the TU's ISA flags (the driver, the public entries) lives
// in an inline namespace named after those flags, so TUs built with different -m flags link
// distinct symbols instead of violating the one-definition rule. Callers never name it.
#if DEPTHKV_HAVE_AVX512
#define DEPTHKV_TARGET_NS target_avx512
#elif DEPTHKV_HAVE_AVX2
#define DEPTHKV_TARGET_NS target_avx2
#else
#define DEPTHKV_TARGET_NS target_generic
#endif
