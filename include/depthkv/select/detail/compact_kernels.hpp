// Row-move kernels of in-place compaction: dst row i <- src row keep[i] (never overlapping).
// Fixed-size paths for the common row sizes (head_dim 64/128 in f16/bf16/f32: 128, 256 and
// 512 bytes) load the whole row into registers and store it; other sizes use 64-byte (or
// 32-byte) chunks with a masked (or scalar) tail. Scalar: memcpy per row.
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/isa.hpp"
#include "depthkv/types.hpp"

#if DEPTHKV_HAVE_AVX2 || DEPTHKV_HAVE_AVX512
#include <immintrin.h>
#endif

namespace depthkv::detail {

// Moves rows: for i in [first, k), bytes at base + keep[i] * stride -> base + i * stride.
// Pre: keep strictly ascending, keep[i] >= i, rows of `row_bytes` do not overlap.
struct row_move {
  unsigned char* base;
  std::ptrdiff_t stride;  // bytes
  std::size_t row_bytes;
  bool prefetch;  // prefetch rows ahead (large spans, see compact_prefetch_span)
  bool stream;    // non-temporal stores (large spans; 64-byte aligned rows, see move_fixed)
};

namespace scalar {
DEPTHKV_BASELINE_BEGIN
inline void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  for (std::size_t i = first; i < k; ++i)
    std::memcpy(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride, m.row_bytes);
}
DEPTHKV_BASELINE_END
}  // namespace scalar

// Rows compact_prefetch_rows ahead (out of cache: about compact_prefetch_bytes ahead) are
// prefetched when the rows span more than compact_prefetch_span bytes (then likely not
// cache-resident) or more than a quarter of them are kept: out of cache, scattered rows defeat
// the hardware prefetcher (every kept row is a new stream); in cache at low keep ratios the
// prefetches only cost issue slots. Measured on Zen 4 (256-byte rows, 8 rows ahead): 64 MiB at
// 10% kept +65%; 4 MiB at 10% kept -20%; 4 MiB at 50% kept +12%. Out of cache, 4 KiB ahead
// beat 8 rows for 128- and 256-byte rows (stand-alone test, 64 MiB, 10% kept). Re-measured
// later in cache (4 MiB, 10% kept, 128-512-byte rows): 2-16 rows ahead into L1 gave 79-84 GB/s
// against 75-84 without, into L2 71-80: nothing to gain there.
inline constexpr std::size_t compact_prefetch_rows = 8;
inline constexpr std::size_t compact_prefetch_bytes = 4096;
inline constexpr std::size_t compact_prefetch_span = std::size_t{16} << 20;
// Above this span the destination rows are written with non-temporal stores: a plain store to a
// line not in cache first reads it from memory (read for ownership), which a large memcpy
// avoids the same way. Safe in place: row i is never read after it is written (keep[j] > i
// for every later j).
inline constexpr std::size_t compact_stream_span = std::size_t{16} << 20;

#if DEPTHKV_HAVE_AVX2
namespace DEPTHKV_AVX2_NS {
DEPTHKV_AVX2_BEGIN
// Row copies with AVX2 registers.
struct copier {
  // Stream: d is 32-byte aligned.
  template <std::size_t Bytes, bool Stream>
  static void copy_fixed(unsigned char* d, const unsigned char* s) noexcept {
    constexpr std::size_t n = Bytes / 32;
    __m256i r[n];
    for (std::size_t j = 0; j < n; ++j)
      r[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32 * j));
    for (std::size_t j = 0; j < n; ++j) {
      if (Stream)
        _mm256_stream_si256(reinterpret_cast<__m256i*>(d + 32 * j), r[j]);
      else
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 32 * j), r[j]);
    }
  }

  static void copy_any(unsigned char* d, const unsigned char* s, std::size_t bytes) noexcept {
    std::size_t j = 0;
    for (; j + 32 <= bytes; j += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j),
                          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + j)));
    if (j < bytes) std::memcpy(d + j, s + j, bytes - j);
  }
};

#include "depthkv/select/detail/compact_simd.inl"
DEPTHKV_AVX2_END
}  // namespace DEPTHKV_AVX2_NS
#if DEPTHKV_TU_ABOVE_AVX2
namespace avx2 {  // the shared copy, defined by TUs not above this path (see detail/target.hpp)
DEPTHKV_WEAK void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept;
}
#endif
#endif

#if DEPTHKV_HAVE_AVX512
namespace DEPTHKV_AVX512_NS {
DEPTHKV_AVX512_BEGIN
// Row copies with AVX512 registers.
struct copier {
  // Stream: d is 64-byte aligned.
  template <std::size_t Bytes, bool Stream>
  static void copy_fixed(unsigned char* d, const unsigned char* s) noexcept {
    constexpr std::size_t n = Bytes / 64;
    __m512i r[n];
    for (std::size_t j = 0; j < n; ++j) r[j] = _mm512_loadu_si512(static_cast<const void*>(s + 64 * j));
    for (std::size_t j = 0; j < n; ++j) {
      if (Stream)
        _mm512_stream_si512(reinterpret_cast<__m512i*>(d + 64 * j), r[j]);
      else
        _mm512_storeu_si512(static_cast<void*>(d + 64 * j), r[j]);
    }
  }

  static void copy_any(unsigned char* d, const unsigned char* s, std::size_t bytes) noexcept {
    std::size_t j = 0;
    for (; j + 64 <= bytes; j += 64)
      _mm512_storeu_si512(static_cast<void*>(d + j), _mm512_loadu_si512(static_cast<const void*>(s + j)));
    if (j < bytes) {
      const __mmask64 t = bytes - j == 64 ? ~__mmask64{0} : (__mmask64{1} << (bytes - j)) - 1;
      _mm512_mask_storeu_epi8(d + j, t, _mm512_maskz_loadu_epi8(t, s + j));
    }
  }
};

#include "depthkv/select/detail/compact_simd.inl"
DEPTHKV_AVX512_END
}  // namespace DEPTHKV_AVX512_NS
#if DEPTHKV_TU_ABOVE_AVX512
namespace avx512 {  // the shared copy, defined by TUs not above this path (see detail/target.hpp)
DEPTHKV_WEAK void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept;
}
#endif
#endif

DEPTHKV_BASELINE_BEGIN
// Moves the rows of `m` on path `path` (compiled in and supported by the CPU).
inline void move_rows_on(isa path, const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  switch (path) {
#if DEPTHKV_HAVE_AVX512
    case isa::avx512: return (*DEPTHKV_AVX512_FN(move_rows))(m, keep, first, k);
#endif
#if DEPTHKV_HAVE_AVX2
    case isa::avx2: return (*DEPTHKV_AVX2_FN(move_rows))(m, keep, first, k);
#endif
    default: return scalar::move_rows(m, keep, first, k);
  }
}
DEPTHKV_BASELINE_END

}  // namespace depthkv::detail
