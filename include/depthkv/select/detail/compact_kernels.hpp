// Row-move kernels of in-place compaction: dst row i <- src row keep[i] (never overlapping).
// Fixed-size paths for the common row sizes (head_dim 64/128 in f16/bf16/f32: 128, 256 and
// 512 bytes) load the whole row into registers and store it; other sizes use 64-byte (or
// 32-byte) chunks with a masked (or scalar) tail. Scalar: memcpy per row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "depthkv/config.hpp"
#include "depthkv/select/detail/target.hpp"
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
  bool prefetch;          // prefetch rows ahead (large spans, see compact_prefetch_span)
};

inline namespace DEPTHKV_TARGET_NS {  // see topk_scalar.hpp: per-TU copies of portable code
namespace scalar {
inline void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  for (std::size_t i = first; i < k; ++i)
    std::memcpy(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride, m.row_bytes);
}
}  // namespace scalar
}  // inline namespace DEPTHKV_TARGET_NS

// Rows this far ahead are prefetched when the rows span more than compact_prefetch_span bytes
// (then likely not cache-resident) or more than a quarter of them are kept: out of cache,
// scattered rows defeat the hardware prefetcher (every kept row is a new stream); in cache
// at low keep ratios the prefetches only cost issue slots. Measured on Zen 4 (256-byte rows):
// 64 MiB at 10% kept +65%; 4 MiB at 10% kept -20%; 4 MiB at 50% kept +12%.
inline constexpr std::size_t compact_prefetch_rows = 8;
inline constexpr std::size_t compact_prefetch_span = std::size_t{16} << 20;

#if DEPTHKV_HAVE_AVX2
namespace avx2 {
template <std::size_t Bytes>
inline void copy_fixed(unsigned char* d, const unsigned char* s) noexcept {
  constexpr std::size_t n = Bytes / 32;
  __m256i r[n];
  for (std::size_t j = 0; j < n; ++j) r[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 32 * j));
  for (std::size_t j = 0; j < n; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 32 * j), r[j]);
}

inline void copy_any(unsigned char* d, const unsigned char* s, std::size_t bytes) noexcept {
  std::size_t j = 0;
  for (; j + 32 <= bytes; j += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + j), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + j)));
  if (j < bytes) std::memcpy(d + j, s + j, bytes - j);
}

template <std::size_t Bytes, bool Prefetch>
inline void move_fixed(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  for (std::size_t i = first; i < k; ++i) {
    if (Prefetch && i + compact_prefetch_rows < k) {
      const unsigned char* p = m.base + static_cast<std::ptrdiff_t>(keep[i + compact_prefetch_rows]) * m.stride;
      for (std::size_t b = 0; b < Bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
    }
    copy_fixed<Bytes>(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                      m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride);
  }
}

inline void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  switch (m.row_bytes) {
    case 64: return m.prefetch ? move_fixed<64, true>(m, keep, first, k) : move_fixed<64, false>(m, keep, first, k);
    case 128: return m.prefetch ? move_fixed<128, true>(m, keep, first, k) : move_fixed<128, false>(m, keep, first, k);
    case 256: return m.prefetch ? move_fixed<256, true>(m, keep, first, k) : move_fixed<256, false>(m, keep, first, k);
    case 512: return m.prefetch ? move_fixed<512, true>(m, keep, first, k) : move_fixed<512, false>(m, keep, first, k);
    default:
      for (std::size_t i = first; i < k; ++i)
        copy_any(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                 m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride, m.row_bytes);
  }
}
}  // namespace avx2
#endif

#if DEPTHKV_HAVE_AVX512
namespace avx512 {
template <std::size_t Bytes>
inline void copy_fixed(unsigned char* d, const unsigned char* s) noexcept {
  constexpr std::size_t n = Bytes / 64;
  __m512i r[n];
  for (std::size_t j = 0; j < n; ++j) r[j] = _mm512_loadu_si512(static_cast<const void*>(s + 64 * j));
  for (std::size_t j = 0; j < n; ++j) _mm512_storeu_si512(static_cast<void*>(d + 64 * j), r[j]);
}

inline void copy_any(unsigned char* d, const unsigned char* s, std::size_t bytes) noexcept {
  std::size_t j = 0;
  for (; j + 64 <= bytes; j += 64)
    _mm512_storeu_si512(static_cast<void*>(d + j), _mm512_loadu_si512(static_cast<const void*>(s + j)));
  if (j < bytes) {
    const __mmask64 t = bytes - j == 64 ? ~__mmask64{0} : (__mmask64{1} << (bytes - j)) - 1;
    _mm512_mask_storeu_epi8(d + j, t, _mm512_maskz_loadu_epi8(t, s + j));
  }
}

template <std::size_t Bytes, bool Prefetch>
inline void move_fixed(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  for (std::size_t i = first; i < k; ++i) {
    if (Prefetch && i + compact_prefetch_rows < k) {
      const unsigned char* p = m.base + static_cast<std::ptrdiff_t>(keep[i + compact_prefetch_rows]) * m.stride;
      for (std::size_t b = 0; b < Bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
    }
    copy_fixed<Bytes>(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                      m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride);
  }
}

inline void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  switch (m.row_bytes) {
    case 64: return m.prefetch ? move_fixed<64, true>(m, keep, first, k) : move_fixed<64, false>(m, keep, first, k);
    case 128: return m.prefetch ? move_fixed<128, true>(m, keep, first, k) : move_fixed<128, false>(m, keep, first, k);
    case 256: return m.prefetch ? move_fixed<256, true>(m, keep, first, k) : move_fixed<256, false>(m, keep, first, k);
    case 512: return m.prefetch ? move_fixed<512, true>(m, keep, first, k) : move_fixed<512, false>(m, keep, first, k);
    default:
      for (std::size_t i = first; i < k; ++i)
        copy_any(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                 m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride, m.row_bytes);
  }
}
}  // namespace avx512
#endif

}  // namespace depthkv::detail
