// The SIMD row-move loop of one kernel path (internal; no include guard): included by each
// SIMD path inside its namespace and target region, after its `copier` (copy_fixed<Bytes>(d, s):
// a whole row in registers; copy_any(d, s, bytes)). Defines the path's entry point move_rows.
// Internal header: not part of the depthkv API (may change in any release); include a public header.

template <class Copy, std::size_t Bytes, bool Prefetch, bool Stream>
inline void move_fixed(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  // Far ahead only out of cache (the streaming case): in cache it did not help (128-byte rows,
  // 4 MiB, 50% kept: median 89% of memcpy at 32 rows ahead vs 100% at 8).
  constexpr std::size_t far =
      compact_prefetch_bytes / Bytes > compact_prefetch_rows ? compact_prefetch_bytes / Bytes : compact_prefetch_rows;
  constexpr std::size_t ahead = Stream ? far : compact_prefetch_rows;
  for (std::size_t i = first; i < k; ++i) {
    if (Prefetch && i + ahead < k) {
      const unsigned char* p = m.base + static_cast<std::ptrdiff_t>(keep[i + ahead]) * m.stride;
      for (std::size_t b = 0; b < Bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
    }
    Copy::template copy_fixed<Bytes, Stream>(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                                             m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride);
  }
  if (Stream) _mm_sfence();  // order the weakly ordered streaming stores before later stores
}

template <class Copy, std::size_t Bytes>
inline void move_fixed(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  if (m.stream)
    move_fixed<Copy, Bytes, true, true>(m, keep, first, k);
  else if (m.prefetch)
    move_fixed<Copy, Bytes, true, false>(m, keep, first, k);
  else
    move_fixed<Copy, Bytes, false, false>(m, keep, first, k);
}

template <class Copy>
inline void move_rows_simd(const row_move& m, const index_t* keep, std::size_t first,
                           std::size_t k) noexcept {
  switch (m.row_bytes) {
    case 64:
      return move_fixed<Copy, 64>(m, keep, first, k);
    case 128:
      return move_fixed<Copy, 128>(m, keep, first, k);
    case 256:
      return move_fixed<Copy, 256>(m, keep, first, k);
    case 512:
      return move_fixed<Copy, 512>(m, keep, first, k);
    default:
      for (std::size_t i = first; i < k; ++i)
        Copy::copy_any(m.base + static_cast<std::ptrdiff_t>(i) * m.stride,
                       m.base + static_cast<std::ptrdiff_t>(keep[i]) * m.stride, m.row_bytes);
  }
}
// Entry point of the path (see row_move).
inline void move_rows(const row_move& m, const index_t* keep, std::size_t first, std::size_t k) noexcept {
  move_rows_simd<copier>(m, keep, first, k);
}
