// The exact three-way quickselect of one kernel path (internal; no include guard): included by
// each SIMD path's header inside its namespace and target region, before its `topk_kernels`,
// whose select() runs it with the path's vector partition.
// Internal header: not part of the depthkv API (may change in any release); include a public header.

// Quickselect of the rank-th largest of keys[0..len) with a three-way partition; tmp has room
// for len keys. Partition(src, len, p, dst, ngt, nlt) is the ISA part: it writes the keys > p to
// dst[0..ngt) and compacts the keys < p in place to src[0..nlt); keys == p are only counted.
template <class Partition>
inline topk_threshold quickselect3(std::int32_t* keys, std::size_t len, std::size_t rank, std::int32_t* tmp,
                                   Partition&& partition) noexcept {
  std::int32_t* src = keys;
  std::int32_t* dst = tmp;
  std::size_t above = 0;
  std::uint32_t h = 0x2545f491u;
  for (int depth = 0;; ++depth) {
    if (len <= 64 || depth > 40) return select_nth(src, len, rank, above);  // depth cap, as introselect
    const std::int32_t p = select_pivot(src, len, h);
    std::size_t ngt = 0, nlt = 0;
    partition(src, len, p, dst, ngt, nlt);
    const std::size_t neq = len - ngt - nlt;
    if (rank <= ngt) {
      len = ngt;
      std::swap(src, dst);
    } else if (rank <= ngt + neq) {
      return {p, above + ngt, neq};
    } else {
      rank -= ngt + neq;
      above += ngt + neq;
      len = nlt;
    }
  }
}

