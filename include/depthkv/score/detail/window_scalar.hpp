// The portable window-scoring kernel: the reference the SIMD paths are tested against.
// Compiled for the x86-64 baseline in every TU (the same code whatever the TU's -m flags).
//
// Plain C++ written for the auto-vectoriser (no intrinsics, no vector extensions): every hot
// loop is a counted loop of a compile-time number of independent lanes (R query rows, or 8
// elements of a key row), with no calls and no float reductions across the vectorised loop, so
// that GCC (-O2, very-cheap cost model) and Clang turn it into packed SSE2 (NEON on aarch64).
//
// Structure (per kv head), the same as the SIMD kernels (window_simd.inl) with R = 8 lanes:
//  - the g*w query rows are cut into tiles of R rows (one lane per row; max reduction: a tile
//    never straddles two heads), up to SR rows (a super-tile) at a time; each tile's queries
//    are packed transposed and pre-scaled, QT[dd][lane] = q[lane][dd] * scale * log2(e);
//  - keys stream in blocks of KB (f16/bf16 rows converted to float once per block with exact
//    bit manipulation, shared by every tile); per tile the logits of a block are a small GEMM
//    L[j][lane] = sum_dd K[j][dd] * QT[dd][lane] held in MK x R register accumulators;
//  - each block is then masked (causal limits), folded into the running per-lane max M, and
//    exponentiated against it while in L1 (degree-5 exp2 polynomial, exponent from bits), its
//    per-lane sum S_b and reference max M_b recorded;
//  - at the end Z = sum_b S_b 2^(M_b - M) (double) and one pass adds
//    sum_lane E[j][lane] 2^(M_b - M) / Z to each key's score.
// Sliding window (window_job::first): a block is also masked below each lane's first key. Soft-cap
// (window_job::capped): the queries are pre-scaled by scale / cap instead and each block's
// logits become cap * log2(e) * std::tanh(logit) before the mask (a call per logit: this path
// is the reference, not the fast one).
// Internal header: not part of the depthkv API (may change in any release); include a public header.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "depthkv/config.hpp"
#include "depthkv/detail/target.hpp"
#include "depthkv/score/detail/window_common.hpp"
#include "depthkv/types.hpp"

// Loop hints of the GEMM micro-tile. Its dd loop must stay a scalar loop around register
// accumulators (MK x R floats, SLP-vectorised); GCC at -O3 would otherwise vectorise the dd loop
// itself (with transposes). Keeping GCC from unrolling the lane loop before its loop vectoriser
// runs makes that vectoriser take the lane loop (the intended vectors) at -O2 and -O3 alike;
// Clang's SLP vectoriser wants the lane loop fully unrolled.
#if defined(__clang__)
#define DEPTHKV_SCALAR_STR(x) #x
#define DEPTHKV_SCALAR_UNROLL(n) _Pragma(DEPTHKV_SCALAR_STR(clang loop unroll_count(n)))
#define DEPTHKV_SCALAR_LANES _Pragma("clang loop unroll(full)")
#define DEPTHKV_SCALAR_NOINLINE __attribute__((noinline))
#elif defined(__GNUC__)
#define DEPTHKV_SCALAR_STR(x) #x
#define DEPTHKV_SCALAR_UNROLL(n) _Pragma(DEPTHKV_SCALAR_STR(GCC unroll n))
#define DEPTHKV_SCALAR_LANES _Pragma("GCC unroll 1")
#define DEPTHKV_SCALAR_NOINLINE __attribute__((noinline))
#else
#define DEPTHKV_SCALAR_UNROLL(n)
#define DEPTHKV_SCALAR_LANES
#define DEPTHKV_SCALAR_NOINLINE
#endif

namespace depthkv::detail::scalar {
DEPTHKV_BASELINE_BEGIN

// Tiling of the portable kernel. window_scratch_scalar (window_common.hpp) must cover floats().
struct window_scalar_plan {
  static constexpr std::size_t R = 8;    // query rows per tile (vector lanes of the GEMM)
  static constexpr std::size_t MK = 4;   // keys per GEMM micro-tile (MK x R accumulators)
  static constexpr std::size_t KB = 48;  // keys per block: converted at once, one softmax group
  static constexpr std::size_t SR = 64;  // query rows per super-tile (share each key block)
  static constexpr std::size_t tiles = SR / R;
  static std::size_t blocks(std::size_t n) noexcept { return n / KB + 2; }
  static std::size_t floats(std::size_t n, std::size_t d) noexcept {
    std::size_t f = sat_mul(SR + KB + MK, d);                  // packed queries, key block, tail pad
    f = sat_add(f, sat_mul(SR + 1, n));                        // exponentiated logits, one head's sums
    f = sat_add(f, sat_mul(2 * SR, blocks(n)));                // per block and lane: M_b, S_b
    return sat_add(f, 128);                                    // alignment slack
  }
};
static_assert(window_scalar_plan::SR % window_scalar_plan::R == 0 &&
                  window_scalar_plan::KB % window_scalar_plan::MK == 0 && window_scalar_plan::R == 8,
              "window_scalar_plan: tiles hold whole lanes, blocks whole micro-tiles (R = 8 lanes)");

inline std::uint32_t bits_of(float x) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
inline float float_of(std::uint32_t u) noexcept {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
// Selects by bit mask (all ones where c): no branch for the vectoriser's if-conversion to undo.
inline std::uint32_t mask_of(bool c) noexcept { return 0u - static_cast<std::uint32_t>(c); }
inline std::uint32_t select_bits(std::uint32_t m, std::uint32_t a, std::uint32_t b) noexcept {
  return (a & m) | (b & ~m);
}
inline float select_float(std::uint32_t m, float a, float b) noexcept {
  return float_of(select_bits(m, bits_of(a), bits_of(b)));
}

// 2^x for x <= 0 (-inf and x < -126.5 -> 0, NaN -> NaN); relative error ~2.3e-7 (exp2_poly).
// Branch-free and call-free so that loops over lanes of it vectorise.
inline float exp2_neg(float x) noexcept {
  const float xc = select_float(mask_of(x > -127.f), x, -127.f);       // -inf and NaN -> -127
  const auto i = static_cast<std::int32_t>(xc - 0.5f);           // xc - 0.5 < 0 truncates up: nearest integer
  const float f = xc - static_cast<float>(i);                    // in [-0.5, 0.5] (exact)
  float p = exp2_poly[5];
  p = p * f + exp2_poly[4];
  p = p * f + exp2_poly[3];
  p = p * f + exp2_poly[2];
  p = p * f + exp2_poly[1];
  p = p * f + exp2_poly[0];
  const float r = p * float_of(static_cast<std::uint32_t>(i + 127) << 23);  // i = -127 gives +0.0
  return select_float(mask_of(x == x), r, x);
}

// IEEE binary16 bits -> float, exact for every value (subnormals, signed zeros, inf, NaN).
inline float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = static_cast<std::uint32_t>(h & 0x7fffu) << 13;  // exponent, mantissa at float places
  const std::uint32_t e = em & 0x0f800000u;
  const std::uint32_t normal = em + (112u << 23);    // rebias the exponent: 127 - 15
  const std::uint32_t inf_nan = em + (224u << 23);   // exponent 31 -> 255, payload kept
  // subnormal (and zero): (1 + m/1024) 2^-14 - 2^-14 = m 2^-24, exact, no subnormal operands
  const std::uint32_t sub = bits_of(float_of(em + (113u << 23)) - float_of(113u << 23));
  const std::uint32_t u = select_bits(mask_of(e == 0), sub, select_bits(mask_of(e == 0x0f800000u), inf_nan, normal));
  return float_of(u | sign);
}
// bfloat16 bits -> float (exact: the upper half of the float).
inline float bf16_bits_to_float(std::uint16_t h) noexcept { return float_of(static_cast<std::uint32_t>(h) << 16); }

// Converts one key row of d elements to float, 8 elements at a time.
template <class T>
inline void convert_row_bits(const T* src, float* DEPTHKV_RESTRICT dst, std::size_t d) noexcept {
  static_assert(sizeof(T) == 2 && std::is_trivially_copyable_v<T>, "16-bit key elements");
  constexpr bool half = std::is_same_v<T, f16>;
  std::size_t i = 0;
  for (; i + 8 <= d; i += 8) {
    std::uint16_t raw[8];
    std::memcpy(raw, src + i, sizeof raw);
    for (std::size_t e = 0; e < 8; ++e) dst[i + e] = half ? half_bits_to_float(raw[e]) : bf16_bits_to_float(raw[e]);
  }
  if (i < d) {  // tail of < 8 elements, through a zero-padded chunk
    std::uint16_t raw[8] = {};
    std::memcpy(raw, src + i, (d - i) * sizeof(T));
    float tmp[8];
    for (std::size_t e = 0; e < 8; ++e) tmp[e] = half ? half_bits_to_float(raw[e]) : bf16_bits_to_float(raw[e]);
    std::memcpy(dst + i, tmp, (d - i) * sizeof(float));
  }
}

template <class T>
struct window_portable {
  using plan = window_scalar_plan;
  static constexpr std::size_t R = plan::R, MK = plan::MK, KB = plan::KB;

  // Trivially constructible on purpose: an implicit constructor would be compiled outside the
  // baseline region under Clang (with the TU's own flags); run sets every field.
  struct tile {
    std::size_t row0, rows;  // first concatenated row (h * w + i), real rows (<= R)
    std::size_t lim_min;     // keys below it are visible to every real row
    std::size_t lim_max;     // no real row sees a key at or above it
    std::size_t first_max;   // keys at or above it are inside every real row's sliding window
    std::size_t lim[R];
    std::size_t first[R];    // first key each lane sees (0 without a sliding window)
    bool capped;             // soft-cap: L <- cap_l2e * tanh(L) before the mask
    float cap_l2e;           // cap * log2(e)
    float mx[R];             // running max per lane
    float* qt;               // [d][R]
    float* E;                // [n][R] logits, then 2^(logit - M_b)
    float* M;                // [blocks][R] reference max of each block, then its factor
    float* S;                // [blocks][R] sum of each block
  };
  static_assert(std::is_trivially_default_constructible_v<tile>, "tile: no implicit constructor code");

  // L[a][r] = sum_dd k[a][dd] * qt[dd][r] for MK keys (rows a * ks apart) and R lanes.
  // (Kept out of line: its register tiling is what the vectoriser makes of it on its own.)
  DEPTHKV_SCALAR_NOINLINE static void micro(const float* DEPTHKV_RESTRICT qt, const float* DEPTHKV_RESTRICT k, std::ptrdiff_t ks,
                           std::size_t d, float* DEPTHKV_RESTRICT L) noexcept {
    float acc[MK][R] = {};
    const float* k1 = k + ks;
    const float* k2 = k + 2 * ks;
    const float* k3 = k + 3 * ks;
    static_assert(MK == 4, "micro: four key rows");
    for (std::size_t dd = 0; dd < d; ++dd) {
      const float* q = qt + dd * R;
      const float kv[MK] = {k[dd], k1[dd], k2[dd], k3[dd]};
      DEPTHKV_SCALAR_UNROLL(4)
      for (std::size_t a = 0; a < MK; ++a) {
        DEPTHKV_SCALAR_LANES
        for (std::size_t r = 0; r < R; ++r) acc[a][r] += kv[a] * q[r];
      }
    }
    DEPTHKV_SCALAR_UNROLL(4)
    for (std::size_t a = 0; a < MK; ++a) {
      DEPTHKV_SCALAR_UNROLL(8)
      for (std::size_t r = 0; r < R; ++r) L[a * R + r] = acc[a][r];
    }
  }

  // Softmax step of keys [j0, j0 + cnt) (block b) of a tile: soft-cap, causal and
  // sliding-window mask, running max, E <- 2^(L - M_b), S_b = lane sums.
  DEPTHKV_SCALAR_NOINLINE static void block_softmax(tile& t, std::size_t j0, std::size_t cnt, std::size_t b) noexcept {
    const float ninf = -std::numeric_limits<float>::infinity();
    const float lowest = std::numeric_limits<float>::lowest();
    float* DEPTHKV_RESTRICT L = t.E + j0 * R;
    if (t.capped)  // before the mask: masked keys must end at -inf, not at -cap
      for (std::size_t a = 0; a < cnt * R; ++a) L[a] = t.cap_l2e * std::tanh(L[a]);
    // keys some real row may not see: past its causal limit or before its window (lanes are independent)
    if (j0 + cnt > t.lim_min || j0 < t.first_max)
      for (std::size_t a = 0; a < cnt; ++a)
        for (std::size_t l = 0; l < R; ++l)
          if (j0 + a >= t.lim[l] || j0 + a < t.first[l]) L[a * R + l] = ninf;
    float m[R];
    for (std::size_t l = 0; l < R; ++l) m[l] = t.mx[l];
    for (std::size_t a = 0; a < cnt; ++a) {
        for (std::size_t l = 0; l < R; ++l) {
        const float x = L[a * R + l];
        m[l] = x > m[l] ? x : m[l];  // NaN logits leave the max alone; their weights turn NaN below
      }
    }
    // A row that has seen no key yet keeps M_b finite, so 2^(-inf - M_b) = 0, never NaN.
    float mref[R], s[R];
    for (std::size_t l = 0; l < R; ++l) {
      t.mx[l] = m[l];
      mref[l] = m[l] > lowest ? m[l] : lowest;
      s[l] = 0.f;
    }
    for (std::size_t a = 0; a < cnt; ++a) {
        for (std::size_t l = 0; l < R; ++l) {
        const float e = exp2_neg(L[a * R + l] - mref[l]);
        L[a * R + l] = e;
        s[l] += e;
      }
    }
    for (std::size_t l = 0; l < R; ++l) {
      t.M[b * R + l] = mref[l];
      t.S[b * R + l] = s[l];
    }
  }

  // Logits and softmax step of block b, keys [j0, j0 + nb), for one tile. Key a of the block
  // is the row kp + a * ks (floats); pad holds MK rows of d floats for the tail.
  static void block(tile& t, const float* kp, std::ptrdiff_t ks, std::size_t j0, std::size_t nb, std::size_t d,
                    float* pad, std::size_t b) noexcept {
    std::size_t a = 0;
    for (; a + MK <= nb; a += MK)
      micro(t.qt, kp + static_cast<std::ptrdiff_t>(a) * ks, ks, d, t.E + (j0 + a) * R);
    if (a < nb) {  // tail: zero-padded copy, then store only the real rows
      const std::size_t r = nb - a;
      for (std::size_t i = 0; i < r; ++i)
        std::memcpy(pad + i * d, kp + static_cast<std::ptrdiff_t>(a + i) * ks, d * sizeof(float));
      std::fill(pad + r * d, pad + MK * d, 0.f);
      float tmp[MK * R];
      micro(t.qt, pad, static_cast<std::ptrdiff_t>(d), d, tmp);
      std::memcpy(t.E + (j0 + a) * R, tmp, r * R * sizeof(float));
    }
    block_softmax(t, j0, nb, b);
  }

  // Normalises a tile's rows and adds its column sums to acc[j] for the keys it sees:
  // acc[j] += sum_lane E[j][lane] * 2^(M_b(j) - M) / Z.
  DEPTHKV_SCALAR_NOINLINE static void finish(tile& t, float* DEPTHKV_RESTRICT acc) noexcept {
    const float lowest = std::numeric_limits<float>::lowest();
    const std::size_t n = t.lim_max, nblk = (n + KB - 1) / KB;
    float mend[R];
    double z[R];
    for (std::size_t l = 0; l < R; ++l) {
      mend[l] = t.mx[l] > lowest ? t.mx[l] : lowest;
      z[l] = 0.0;
    }
    // Z per lane: sum_b S_b 2^(M_b - M) in double; the factors 2^(M_b - M) overwrite M_b.
    for (std::size_t b = 0; b < nblk; ++b) {
      float c[R];
      for (std::size_t l = 0; l < R; ++l) c[l] = exp2_neg(t.M[b * R + l] - mend[l]);
      for (std::size_t l = 0; l < R; ++l) {
        t.M[b * R + l] = c[l];
        z[l] += static_cast<double>(t.S[b * R + l]) * static_cast<double>(c[l]);
      }
    }
    // 1/Z per lane (0 for padding lanes and rows that see nothing; NaN stays NaN).
    float iz[R];
    for (std::size_t l = 0; l < R; ++l)
      iz[l] = l >= t.rows ? 0.f : z[l] > 0.0 ? static_cast<float>(1.0 / z[l]) : z[l] != z[l] ? z_nan(z[l]) : 0.f;
    for (std::size_t b = 0; b < nblk; ++b) {
      float f[R];
      DEPTHKV_SCALAR_UNROLL(8)
      for (std::size_t l = 0; l < R; ++l) f[l] = t.M[b * R + l] * iz[l];
      const std::size_t jend = std::min(n, (b + 1) * KB);
      for (std::size_t j = b * KB; j < jend; ++j) {
        const float* e = t.E + j * R;
        float p[R];
        DEPTHKV_SCALAR_UNROLL(8)
        for (std::size_t l = 0; l < R; ++l) p[l] = e[l] * f[l];
        float h[R / 2];
        DEPTHKV_SCALAR_UNROLL(4)
        for (std::size_t l = 0; l < R / 2; ++l) h[l] = p[l] + p[l + R / 2];
        acc[j] += (h[0] + h[2]) + (h[1] + h[3]);
      }
    }
  }

  static void run(const window_job& job, const T* keys, std::ptrdiff_t k_stride, float* out,
                  float* scratch) noexcept {
    const std::size_t n = job.n, d = job.d, g = job.g, w = job.w;
    constexpr std::size_t SR = plan::SR;
    const std::size_t NB = plan::blocks(n);
    // Carve the scratch (64-byte aligned pieces; plan::floats counts the slack).
    auto align = [](float* p) {
      const auto u = reinterpret_cast<std::uintptr_t>(p);
      return reinterpret_cast<float*>((u + 63) & ~std::uintptr_t(63));
    };
    float* qt_all = align(scratch);
    float* E_all = align(qt_all + SR * d);
    float* kbuf = align(E_all + SR * n);
    float* pad = align(kbuf + KB * d);
    float* M_all = align(pad + MK * d);
    float* S_all = M_all + SR * NB;
    float* hsum = align(S_all + SR * NB);
    DEPTHKV_ASSERT(static_cast<std::size_t>(hsum + n - scratch) <= window_scratch_scalar(n, d));

    const float ninf = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < n; ++j) out[j] = 0.f;
    // Max reduction: hsum holds the sums of head `open` (tiles never straddle heads, and are
    // visited in row order), folded into out when the next head starts.
    std::size_t open = 0;
    if (job.reduce_max) std::fill(hsum, hsum + n, 0.f);
    auto fold = [&] {
      for (std::size_t j = 0; j < n; ++j) {
        const float h = hsum[j];
        out[j] = h > out[j] || h != h ? h : out[j];
        hsum[j] = 0.f;
      }
    };

    const std::size_t total = g * w;
    const float s = window_query_factor(job);
    std::size_t row = 0;
    while (row < total) {
      tile tiles[plan::tiles];
      std::size_t nt = 0, nst = 0;
      while (row < total && nt < plan::tiles) {
        std::size_t rows = std::min(R, total - row);
        if (job.reduce_max) rows = std::min(rows, w - row % w);
        tile& t = tiles[nt];
        t.row0 = row;
        t.rows = rows;
        t.qt = qt_all + nt * R * d;
        t.E = E_all + nt * R * n;
        t.M = M_all + nt * R * NB;
        t.S = S_all + nt * R * NB;
        t.lim_min = n;
        t.lim_max = 0;
        t.first_max = 0;
        t.capped = job.capped;
        t.cap_l2e = window_cap_log2e(job);
        // Padding lanes repeat the tile's first row with weight factor 0 (finish): zero queries
        // would make 0 * inf = NaN logits from infinite keys, which 0 * NaN would carry into
        // the scores; a copy of a real row is finite wherever that row is.
        for (std::size_t l = 0; l < R; ++l) {
          t.mx[l] = ninf;
          const std::size_t r = row + (l < rows ? l : 0), h = r / w, i = r % w;
          t.lim[l] = job.limit[i];
          t.first[l] = job.first ? job.first[i] : 0;
          t.lim_min = std::min(t.lim_min, t.lim[l]);
          t.lim_max = std::max(t.lim_max, t.lim[l]);
          t.first_max = std::max(t.first_max, t.first[l]);
          const float* q = job.q + static_cast<std::ptrdiff_t>(h) * job.q_hs + static_cast<std::ptrdiff_t>(i) * job.q_rs;
          for (std::size_t dd = 0; dd < d; ++dd) t.qt[dd * R + l] = q[dd] * s;
        }
        nst = std::max(nst, t.lim_max);
        ++nt;
        row += rows;
      }
      // Logits of every tile, key block by key block (a tile stops after its last visible key).
      for (std::size_t j0 = 0, b = 0; j0 < nst; j0 += KB, ++b) {
        const std::size_t nb = std::min(KB, nst - j0);
        const float* kp;
        std::ptrdiff_t ks;
        if constexpr (std::is_same_v<T, float>) {
          kp = keys + static_cast<std::ptrdiff_t>(j0) * k_stride;
          ks = k_stride;
        } else {
          for (std::size_t a = 0; a < nb; ++a)
            convert_row_bits(keys + static_cast<std::ptrdiff_t>(j0 + a) * k_stride, kbuf + a * d, d);
          kp = kbuf;
          ks = static_cast<std::ptrdiff_t>(d);
        }
        for (std::size_t ti = 0; ti < nt; ++ti)
          if (j0 < tiles[ti].lim_max) block(tiles[ti], kp, ks, j0, nb, d, pad, b);
      }
      for (std::size_t ti = 0; ti < nt; ++ti) {
        tile& t = tiles[ti];
        if (job.reduce_max) {
          const std::size_t h = t.row0 / w;
          if (h != open) {
            fold();
            open = h;
          }
          finish(t, hsum);
        } else {
          finish(t, out);
        }
      }
    }
    if (job.reduce_max) {
      fold();
    } else {
      const float inv_g = 1.f / static_cast<float>(g);
      for (std::size_t j = 0; j < n; ++j) out[j] *= inv_g;
    }
  }
};

// The kernel of the portable path (signature shared with the SIMD paths' entry points).
template <class T>
void window_kernel(const window_job& job, const T* keys, std::ptrdiff_t k_stride, float* out,
                          float* scratch) noexcept {
  window_portable<T>::run(job, keys, k_stride, out, scratch);
}

// Entry points of the path, one per key element type.
inline void window_f32(const window_job& job, const float* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}
inline void window_f16(const window_job& job, const f16* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}
inline void window_bf16(const window_job& job, const bf16* keys, std::ptrdiff_t k_stride, float* out,
                        float* scratch) noexcept {
  window_kernel(job, keys, k_stride, out, scratch);
}
// y[i] = tanh(x[i]): the soft-cap of this path (std::tanh), the counterpart of the SIMD paths'
// window_tanh.
inline void window_tanh(const float* x, float* y, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::tanh(x[i]);
}

DEPTHKV_BASELINE_END
}  // namespace depthkv::detail::scalar

#undef DEPTHKV_SCALAR_UNROLL
#undef DEPTHKV_SCALAR_STR
#undef DEPTHKV_SCALAR_NOINLINE
#undef DEPTHKV_SCALAR_LANES
