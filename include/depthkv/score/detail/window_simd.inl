// The SIMD window-scoring kernel, written once over a vector-traits type VT (internal; no include
// guard): included by each SIMD path inside its namespace and target region, after its
// `window_vt`, so that the kernel is compiled for the path's instruction set. Defines the path's
// entry points window_f32, window_f16 and window_bf16.
//
// Structure (per kv head): the g*w query rows of the GQA group are cut into tiles of V, 2V or
// (AVX-512, when more than 3V rows are left) 4V rows (one lane per query row). For each tile, the
// queries are packed transposed and pre-scaled, QT[dd][lane] = q[lane][dd] * scale * log2(e), so
// the logits tile is a small GEMM L[j][lane] = sum_dd K[j][dd] * QT[dd][lane] computed with MK
// keys x MV vectors of register accumulators (each key element broadcast once and used MV times).
// Tiles of <= V rows would use each broadcast once; they pair up head_dim instead (micro_pair: a
// 64-bit broadcast of two key elements feeds two FMAs). Keys stream in blocks. f16 and bf16
// keys are converted to f32 micro-tile by micro-tile into an L1-resident buffer when a
// super-tile is one tile (the usual case), or once per block and shared when it holds several.
//
// The softmax is folded into the GEMM (one pass over the logits instead of three): every group
// of `group` keys is masked, exponentiated against the running per-lane maximum M_g while still
// in L1, and its per-lane sum S_g recorded. At the end Z = sum_g S_g 2^(M_g - M) (double) and a
// single pass adds sum_lane E[j][lane] 2^(M_g - M) / Z to each key's score, 16 (8) keys at a time
// through a transposing reduction.
//
// Sliding window and soft-cap (window_job::first, capped): the public entry already drops the
// keys no window query sees; here a group is also masked below each lane's first key, and with a
// soft-cap its logits (queries pre-scaled by scale / cap) become cap * log2(e) * tanh(logit)
// before the mask and the max (vector tanh below; the scalar path uses std::tanh).
// Internal header: not part of the depthkv API (may change in any release); include a public header.

template <class VT>
struct window_simd {
  using reg = typename VT::reg;
  static constexpr std::size_t V = VT::lanes;
  static constexpr int MK1 = VT::mk1;  // keys per micro-tile with one vector of queries
  static constexpr int MK2 = VT::mk2;  // keys per micro-tile with two vectors of queries
  static constexpr int MK4 = VT::mk4;  // keys per micro-tile with four vectors (0: no such tiles)
  static constexpr std::size_t G = window_simd_plan::group;
  static_assert(G % V == 0 && G % VT::mk1 == 0 && G % VT::mk2 == 0 && G % VT::mkp == 0 &&
                    (VT::mk4 == 0 || G % VT::mk4 == 0) &&
                    window_simd_plan::key_block % G == 0,
                "window kernel: a softmax group must hold whole micro-tiles and vectors");

  struct tile {
    std::size_t row0 = 0, rows = 0, width = 0;  // first concatenated row, real rows, lanes (V or 2V)
    std::size_t lim_min = 0;                    // keys below it are visible to every real row
    std::size_t first_max = 0;                  // keys at or above it are inside every row's sliding window
    bool capped = false;                        // soft-cap: L <- cap_l2e * tanh(L) before the softmax
    float cap_l2e = 1.f;                        // cap * log2(e)
    int kind = 0;                               // 0 plain, 1 pair, 2 half pair (see micro_pair)
    float* qt = nullptr;                        // [d][width]
    float* L = nullptr;                         // [n][width] logits, then 2^(logit - M_g)
    float* mx = nullptr;                        // [width] running max
    std::size_t* lim = nullptr;                 // [width]
    std::size_t first[4 * V];                   // per lane: first visible key (0 without a sliding window)
    float* M = nullptr;                         // [groups][width] reference max of each group
    float* S = nullptr;                         // [groups][width] sum of each group
  };

  // L[k][v] = sum_dd keys[k][dd] * qt[dd][v] for MK keys and MV vectors of query lanes.
  template <int MV, int MK>
  static inline void micro(const float* DEPTHKV_RESTRICT qt, const float* DEPTHKV_RESTRICT k, std::ptrdiff_t ks,
                           std::size_t d, float* DEPTHKV_RESTRICT L, const float* next) noexcept {
    constexpr std::size_t W = MV * V;
    reg acc[MK][MV];
#pragma GCC unroll 32
    for (int a = 0; a < MK; ++a)
#pragma GCC unroll 4
      for (int v = 0; v < MV; ++v) acc[a][v] = VT::zero();
    std::size_t dd = 0;
    for (; dd + 16 <= d; dd += 16) {
      if (next) {
#pragma GCC unroll 32
        for (int a = 0; a < MK; ++a) __builtin_prefetch(next + a * ks + static_cast<std::ptrdiff_t>(dd), 0, 3);
      }
#pragma GCC unroll 16
      for (std::size_t e = 0; e < 16; ++e) {
        reg qv[MV];
#pragma GCC unroll 4
        for (int v = 0; v < MV; ++v) qv[v] = VT::load(qt + (dd + e) * W + v * V);
#pragma GCC unroll 32
        for (int a = 0; a < MK; ++a) {
          const reg b = VT::set1(k[a * ks + static_cast<std::ptrdiff_t>(dd + e)]);
#pragma GCC unroll 4
          for (int v = 0; v < MV; ++v) acc[a][v] = VT::fmadd(b, qv[v], acc[a][v]);
        }
      }
    }
    for (std::size_t rem = d - dd; rem > 0 && rem < 16; --rem, ++dd) {
      reg qv[MV];
      for (int v = 0; v < MV; ++v) qv[v] = VT::load(qt + dd * W + v * V);
      for (int a = 0; a < MK; ++a) {
        const reg b = VT::set1(k[a * ks + static_cast<std::ptrdiff_t>(dd)]);
        for (int v = 0; v < MV; ++v) acc[a][v] = VT::fmadd(b, qv[v], acc[a][v]);
      }
    }
#pragma GCC unroll 32
    for (int a = 0; a < MK; ++a)
#pragma GCC unroll 4
      for (int v = 0; v < MV; ++v) VT::store(L + a * W + v * V, acc[a][v]);
  }

  // One-vector tiles (<= V query rows) would need one broadcast load per FMA. Instead pair up
  // head_dim: lanes hold (query, dd parity) for V/2 queries, a 64-bit broadcast loads
  // (k[dd], k[dd+1]) once for two FMAs (queries 0..V/2-1 and V/2..V-1), and pair_sum folds the
  // parities at the end. qt: [d/2][NQ][V] (see qt_index); d must be even. NQ = 1 serves tiles of
  // <= V/2 rows (a second vector would be all padding).
  template <int MK, int NQ>
  static inline void micro_pair(const float* DEPTHKV_RESTRICT qt, const float* DEPTHKV_RESTRICT k, std::ptrdiff_t ks,
                                std::size_t d, float* DEPTHKV_RESTRICT L, const float* next) noexcept {
    reg acc[MK][NQ];
#pragma GCC unroll 32
    for (int a = 0; a < MK; ++a)
#pragma GCC unroll 2
      for (int v = 0; v < NQ; ++v) acc[a][v] = VT::zero();
    const std::size_t dp_n = d / 2;
    std::size_t dp = 0;
    for (; dp + 8 <= dp_n; dp += 8) {
      if (next) {
#pragma GCC unroll 32
        for (int a = 0; a < MK; ++a) __builtin_prefetch(next + a * ks + static_cast<std::ptrdiff_t>(2 * dp), 0, 3);
      }
#pragma GCC unroll 8
      for (std::size_t e = 0; e < 8; ++e) {
        reg qv[NQ];
#pragma GCC unroll 2
        for (int v = 0; v < NQ; ++v) qv[v] = VT::load(qt + ((dp + e) * NQ + v) * V);
#pragma GCC unroll 32
        for (int a = 0; a < MK; ++a) {
          const reg b = VT::bcast2(k + a * ks + static_cast<std::ptrdiff_t>(2 * (dp + e)));
#pragma GCC unroll 2
          for (int v = 0; v < NQ; ++v) acc[a][v] = VT::fmadd(b, qv[v], acc[a][v]);
        }
      }
    }
    for (std::size_t rem = dp_n - dp; rem > 0 && rem < 8; --rem, ++dp) {
      reg qv[NQ];
      for (int v = 0; v < NQ; ++v) qv[v] = VT::load(qt + (dp * NQ + v) * V);
      for (int a = 0; a < MK; ++a) {
        const reg b = VT::bcast2(k + a * ks + static_cast<std::ptrdiff_t>(2 * dp));
        for (int v = 0; v < NQ; ++v) acc[a][v] = VT::fmadd(b, qv[v], acc[a][v]);
      }
    }
#pragma GCC unroll 32
    for (int a = 0; a < MK; ++a) VT::store(L + a * V, VT::pair_sum(acc[a][0], NQ == 2 ? acc[a][NQ - 1] : VT::zero()));
  }

  // tanh(x) for every float: signed zeros kept, +-inf -> +-1, NaN -> NaN. Relative error below
  // 3e-7 (2.42e-7 = 2.54 ulp measured over every float in [2^-30, 20] on AVX2; odd, and 1 beyond
  // 9.1), exactly x for |x| < 1e-4 (x u P(u) is below half an ulp of x). test_window_hybrid
  // checks the bound on every path. On |x|:
  //   |x| < tanh_poly_max: |x| + |x| u P(u), u = x^2 (window_common.hpp);
  //   else: (1 - e) / (1 + e), e = 2^(-2 |x| log2(e)) = e^(-2|x|) in [0, 0.29] (the kernel's
  //   exp2, relative 2.3e-7; 1 - e does not cancel there), 1 for |x| = inf;
  // then the sign of x.
  static inline reg tanh(reg x) noexcept {
    const reg ax = VT::abs(x);
    const reg u = VT::mul(ax, ax);
    reg p = VT::set1(tanh_poly[4]);
#pragma GCC unroll 4
    for (int i = 3; i >= 0; --i) p = VT::fmadd(p, u, VT::set1(tanh_poly[i]));
    const reg near0 = VT::fmadd(VT::mul(ax, u), p, ax);
    const reg e = VT::exp2(VT::mul(ax, VT::set1(-2.f * log2e_f)));
    const reg one = VT::set1(1.f);
    const reg far0 = VT::div(VT::sub(one, e), VT::add(one, e));
    return VT::copy_sign(VT::select_lt(ax, VT::set1(tanh_poly_max), near0, far0), x);
  }

  // Soft-cap of cnt keys' logits of a tile: L <- cap log2(e) tanh(L). Out of line so that the
  // uncapped kernel, into which group_softmax and the GEMM are inlined, compiles as it did
  // without it (the register allocation of the inlined GEMM is sensitive to such code).
  __attribute__((noinline)) static void cap_logits(const tile& t, float* L, std::size_t cnt) noexcept {
    const std::size_t W = t.width;
    const reg c = VT::set1(t.cap_l2e);
    for (std::size_t a = 0; a < cnt; ++a)
      for (std::size_t v = 0; v < W; v += V) VT::store(L + a * W + v, VT::mul(c, tanh(VT::load(L + a * W + v))));
  }

  // Softmax step of keys [j, j + cnt) (one group, or the last partial one) of a tile, while its
  // logits are in L1: soft-cap, causal and sliding-window mask, running max, L <- 2^(L - M_g),
  // S_g = row sums.
  static void group_softmax(const tile& t, std::size_t j, std::size_t cnt) noexcept {
    const float ninf = -std::numeric_limits<float>::infinity();
    const std::size_t W = t.width;
    float* L = t.L + j * W;
    if (t.capped) cap_logits(t, L, cnt);  // before the mask: masked keys must end at -inf, not at -cap
    // keys some real row may not see: past its causal limit or before its window (lanes are independent)
    if (j + cnt > t.lim_min || j < t.first_max)
      for (std::size_t a = 0; a < cnt; ++a)
        for (std::size_t l = 0; l < W; ++l)
          if (j + a >= t.lim[l] || j + a < t.first[l]) L[a * W + l] = ninf;
    // A row that has seen no key yet keeps M_g finite, so 2^(-inf - M_g) = 0, never NaN.
    const reg lowest = VT::set1(std::numeric_limits<float>::lowest());
    const std::size_t gi = j / G;
    for (std::size_t v = 0; v < W; v += V) {
      reg m0 = VT::load(t.mx + v), m1 = m0;
      std::size_t a = 0;
      for (; a + 2 <= cnt; a += 2) {
        m0 = VT::max(m0, VT::load(L + a * W + v));
        m1 = VT::max(m1, VT::load(L + (a + 1) * W + v));
      }
      if (a < cnt) m0 = VT::max(m0, VT::load(L + a * W + v));
      const reg m = VT::max(m0, m1);
      VT::store(t.mx + v, m);
      const reg mref = VT::max(m, lowest);
      reg s0 = VT::zero(), s1 = VT::zero();
      for (a = 0; a + 2 <= cnt; a += 2) {
        float* p0 = L + a * W + v;
        float* p1 = p0 + W;
        const reg e0 = VT::exp2(VT::sub(VT::load(p0), mref));
        const reg e1 = VT::exp2(VT::sub(VT::load(p1), mref));
        VT::store(p0, e0);
        VT::store(p1, e1);
        s0 = VT::add(s0, e0);
        s1 = VT::add(s1, e1);
      }
      if (a < cnt) {
        float* p0 = L + a * W + v;
        const reg e0 = VT::exp2(VT::sub(VT::load(p0), mref));
        VT::store(p0, e0);
        s0 = VT::add(s0, e0);
      }
      VT::store(t.M + gi * W + v, mref);
      VT::store(t.S + gi * W + v, VT::add(s0, s1));
    }
  }

  // Logits of keys [j0, j0 + nb) for one tile, each group of G keys exponentiated as soon as it
  // is complete. j0 is a multiple of G. Keys: row i of the block at kp + i * ks (elements); f32
  // rows are read in place, f16/bf16 rows are converted MK at a time into conv ([MK][d] floats,
  // stays in L1 next to the packed queries), with rows up to `avail` readable for prefetching.
  template <int MV, int MK, int KIND = 0, class K>  // KIND: 0 plain, 1 pair (NQ 2), 2 half pair (NQ 1)
  static void block(const tile& t, const K* kp, std::ptrdiff_t ks, std::size_t j0, std::size_t nb, std::size_t d,
                    float* pad, float* conv, std::size_t avail) noexcept {
    constexpr std::size_t W = MV * V;
    static_assert(KIND == 0 || MV == 1, "pair tiles are one vector wide");
    static_assert(G % MK == 0, "a softmax group holds whole micro-tiles");
    auto row = [&](std::size_t i) { return kp + static_cast<std::ptrdiff_t>(i) * ks; };
    auto gemm = [&](const float* src, std::ptrdiff_t ss, float* out, const float* next) {
      if constexpr (KIND != 0)
        micro_pair<MK, KIND == 1 ? 2 : 1>(t.qt, src, ss, d, out, next);
      else
        micro<MV, MK>(t.qt, src, ss, d, out, next);
    };
    std::size_t a = 0;
    for (; a + MK <= nb; a += MK) {
      const std::size_t j = j0 + a;
      if constexpr (std::is_same_v<K, float>) {
        gemm(row(a), ks, t.L + j * W, a + 2 * MK <= nb ? row(a + MK) : nullptr);
      } else {
        // The next micro-tile's rows (possibly the next block's) arrive during this GEMM.
        for (std::size_t i = a + MK; i < std::min(a + 2 * MK, avail); ++i) {
          const char* r = reinterpret_cast<const char*>(row(i));
          for (std::size_t off = 0; off < d * sizeof(K); off += 64) __builtin_prefetch(r + off, 0, 3);
        }
        for (std::size_t i = 0; i < static_cast<std::size_t>(MK); ++i) VT::convert_row(row(a + i), conv + i * d, d);
        gemm(conv, static_cast<std::ptrdiff_t>(d), t.L + j * W, nullptr);
      }
      if ((a + MK) % G == 0) group_softmax(t, j + MK - G, G);
    }
    if (a < nb) {  // tail: zero-padded copy, then store only the real rows
      const std::size_t r = nb - a;
      for (std::size_t i = 0; i < r; ++i) {
        if constexpr (std::is_same_v<K, float>)
          std::memcpy(pad + i * d, row(a + i), d * sizeof(float));
        else
          VT::convert_row(row(a + i), pad + i * d, d);
      }
      std::memset(pad + r * d, 0, (MK - r) * d * sizeof(float));
      alignas(64) float tmp[MK * W];
      gemm(pad, static_cast<std::ptrdiff_t>(d), tmp, nullptr);
      std::memcpy(t.L + (j0 + a) * W, tmp, r * W * sizeof(float));
    }
    const std::size_t whole = nb - nb % G;
    if (whole < nb) group_softmax(t, j0 + whole, nb - whole);
  }

  // Normalises a tile's rows and adds its column sums to acc[n]:
  // acc[j] += sum_lane L[j][lane] * 2^(M_g(j) - M) / Z.
  static void finish(const tile& t, std::size_t n, float* acc) noexcept {
    const std::size_t W = t.width, ng = (n + G - 1) / G;
    const reg lowest = VT::set1(std::numeric_limits<float>::lowest());
    // Z per lane: sum_g S_g * 2^(M_g - M), float within 32 groups, double across; the factors
    // 2^(M_g - M) overwrite M.
    double z[4 * V] = {};
    for (std::size_t v = 0; v < W; v += V) {
      const reg m = VT::max(VT::load(t.mx + v), lowest);
      for (std::size_t g0 = 0; g0 < ng; g0 += 32) {
        reg zs = VT::zero();
        for (std::size_t gi = g0; gi < std::min(ng, g0 + 32); ++gi) {
          const reg c = VT::exp2(VT::sub(VT::load(t.M + gi * W + v), m));
          VT::store(t.M + gi * W + v, c);
          zs = VT::fmadd(VT::load(t.S + gi * W + v), c, zs);
        }
        alignas(64) float tmp[V];
        VT::store(tmp, zs);
        for (std::size_t l = 0; l < V; ++l) z[v + l] += tmp[l];
      }
    }
    // 1/Z per lane (0 for padding lanes and rows that see nothing; NaN stays NaN).
    alignas(64) float iz[4 * V];
    for (std::size_t l = 0; l < W; ++l)
      iz[l] = l >= t.rows ? 0.f : z[l] > 0.0 ? static_cast<float>(1.0 / z[l]) : z[l] != z[l] ? z_nan(z[l]) : 0.f;
    for (std::size_t gi = 0; gi < ng; ++gi)
      for (std::size_t v = 0; v < W; v += V)
        VT::store(t.M + gi * W + v, VT::mul(VT::load(t.M + gi * W + v), VT::load(iz + v)));
    // Column sums, V keys at a time (G is a multiple of V: one factor row per run of V keys).
    const float* E = t.L;
    std::size_t j = 0;
    if (W == V) {
      for (; j + V <= n; j += V) {
        const reg f = VT::load(t.M + (j / G) * W);
        reg r[V];
#pragma GCC unroll 16
        for (std::size_t a = 0; a < V; ++a) r[a] = VT::mul(VT::load(E + (j + a) * W), f);
        VT::store(acc + j, VT::add(VT::load(acc + j), VT::transpose_sum(r)));
      }
      for (; j < n; ++j) acc[j] += VT::reduce_add(VT::mul(VT::load(E + j * W), VT::load(t.M + (j / G) * W)));
    } else if (W == 4 * V) {
      for (; j + V <= n; j += V) {
        const float* f = t.M + (j / G) * W;
        const reg f0 = VT::load(f), f1 = VT::load(f + V), f2 = VT::load(f + 2 * V), f3 = VT::load(f + 3 * V);
        reg r[V];
#pragma GCC unroll 16
        for (std::size_t a = 0; a < V; ++a) {
          const float* p = E + (j + a) * W;
          r[a] = VT::fmadd(VT::load(p + 3 * V), f3,
                           VT::fmadd(VT::load(p + 2 * V), f2, VT::fmadd(VT::load(p + V), f1, VT::mul(VT::load(p), f0))));
        }
        VT::store(acc + j, VT::add(VT::load(acc + j), VT::transpose_sum(r)));
      }
      for (; j < n; ++j) {
        const float* p = E + j * W;
        const float* f = t.M + (j / G) * W;
        reg x = VT::mul(VT::load(p), VT::load(f));
        for (std::size_t v = V; v < W; v += V) x = VT::fmadd(VT::load(p + v), VT::load(f + v), x);
        acc[j] += VT::reduce_add(x);
      }
    } else {
      for (; j + V <= n; j += V) {
        const reg f0 = VT::load(t.M + (j / G) * W), f1 = VT::load(t.M + (j / G) * W + V);
        reg r[V];
#pragma GCC unroll 16
        for (std::size_t a = 0; a < V; ++a) {
          const float* p = E + (j + a) * W;
          r[a] = VT::fmadd(VT::load(p + V), f1, VT::mul(VT::load(p), f0));
        }
        VT::store(acc + j, VT::add(VT::load(acc + j), VT::transpose_sum(r)));
      }
      for (; j < n; ++j) {
        const float* p = E + j * W;
        const float* f = t.M + (j / G) * W;
        acc[j] += VT::reduce_add(VT::fmadd(VT::load(p + V), VT::load(f + V), VT::mul(VT::load(p), VT::load(f))));
      }
    }
  }

  // Where query lane l, element dd goes in a tile's packed queries: [d][width] (kind 0), or for
  // pair tiles [d/2][NQ][V] with lane 2i + (dd & 1) of vector l / (V/2) holding query l.
  static std::size_t qt_index(int kind, std::size_t width, std::size_t l, std::size_t dd) noexcept {
    if (kind == 0) return dd * width + l;
    const std::size_t nq = kind == 1 ? 2 : 1;
    const std::size_t v = l / (V / 2), i = l % (V / 2);
    return ((dd / 2) * nq + v) * V + 2 * i + (dd & 1);
  }

  template <class T>
  static void run(const window_job& job, const T* keys, std::ptrdiff_t k_stride, float* out, float* scratch) noexcept {
    const std::size_t n = job.n, d = job.d, g = job.g, w = job.w;
    constexpr std::size_t SR = window_simd_plan::super_rows, KB = window_simd_plan::key_block;
    // Carve the scratch (64-byte aligned pieces).
    auto align = [](float* p) {
      const auto u = reinterpret_cast<std::uintptr_t>(p);
      return reinterpret_cast<float*>((u + 63) & ~std::uintptr_t(63));
    };
    float* qt_all = align(scratch);
    float* L_all = qt_all + SR * d;
    float* kbuf = L_all + SR * n;
    float* pad = kbuf + KB * d;
    float* mx_all = pad + 32 * d;
    std::size_t* lim_all = reinterpret_cast<std::size_t*>(mx_all + SR);  // 2*SR floats = SR size_t
    float* hsum = mx_all + 3 * SR;
    const std::size_t NG = window_simd_plan::groups(n);
    float* grp_all = align(hsum + g * n);  // M then S: [SR lanes][NG] each, per tile [NG][width]
    static_assert(sizeof(std::size_t) <= 2 * sizeof(float), "scratch layout");

    const float ninf = -std::numeric_limits<float>::infinity();
    for (std::size_t j = 0; j < n; ++j) out[j] = 0.f;
    if (job.reduce_max)
      for (std::size_t j = 0; j < g * n; ++j) hsum[j] = 0.f;

    const std::size_t total = g * w;
    const float s = window_query_factor(job);
    const bool pair_ok = d % 2 == 0;  // pair tiles read k[dd + 1]: whole pairs only
    std::size_t row = 0;
    while (row < total) {
      // Build the tiles of one super-tile (tiles never straddle heads when reducing with max).
      tile tiles[SR / V];
      std::size_t nt = 0, used = 0;
      while (row < total && used < SR) {
        std::size_t avail = total - row;
        if (job.reduce_max) avail = std::min(avail, w - row % w);
        // four-vector tiles (one key broadcast feeds four FMAs) where one fits and would be more
        // than 3/4 full; otherwise 2V + V tiles waste fewer lanes
        const std::size_t widest = MK4 > 0 && SR - used >= 4 * V && avail > 3 * V ? 4 * V : 2 * V;
        const std::size_t cap = std::min<std::size_t>(widest, SR - used);
        const std::size_t rows = std::min(avail, cap);
        tile& t = tiles[nt++];
        t.row0 = row;
        t.rows = rows;
        t.width = rows <= V ? V : rows <= 2 * V ? 2 * V : 4 * V;
        t.kind = t.width == V && pair_ok ? (rows <= V / 2 ? 2 : 1) : 0;
        t.qt = qt_all + used * d;
        t.L = L_all + used * n;
        t.mx = mx_all + used;
        t.lim = lim_all + used;
        t.M = grp_all + used * NG;
        t.S = grp_all + SR * NG + used * NG;
        t.lim_min = n;
        t.first_max = 0;
        t.capped = job.capped;
        t.cap_l2e = window_cap_log2e(job);
        // Padding lanes repeat the tile's first row with weight factor 0 (finish): zero queries
        // would make 0 * inf = NaN logits from infinite keys, which 0 * NaN would carry into
        // the scores; a copy of a real row is finite wherever that row is.
        for (std::size_t l = 0; l < t.width; ++l) {
          t.mx[l] = ninf;
          const std::size_t r = row + (l < rows ? l : 0), h = r / w, i = r % w;
          t.lim[l] = job.limit[i];
          t.lim_min = std::min(t.lim_min, t.lim[l]);
          t.first[l] = job.first ? job.first[i] : 0;
          t.first_max = std::max(t.first_max, t.first[l]);
          if (t.kind == 2 && l >= V / 2) continue;  // half-pair tiles have no slots for lanes >= V/2 (they read 0)
          const float* q = job.q + static_cast<std::ptrdiff_t>(h) * job.q_hs + static_cast<std::ptrdiff_t>(i) * job.q_rs;
          for (std::size_t dd = 0; dd < d; ++dd) t.qt[qt_index(t.kind, t.width, l, dd)] = q[dd] * s;
        }
        used += t.width;
        row += rows;
      }
      // Logits of every tile, key block by key block.
      for (std::size_t j0 = 0; j0 < n; j0 += KB) {
        const std::size_t nb = std::min(KB, n - j0);
        // One tile: f16/bf16 rows are converted per micro-tile inside block (a converted block
        // would have no other tile to serve, and at 96 rows it would push the packed queries
        // out of L1). Several tiles: the block is converted once and shared.
        auto run_tiles = [&](const auto* kp, std::ptrdiff_t ks) {
          for (std::size_t ti = 0; ti < nt; ++ti) {
            const tile& tt = tiles[ti];
            if (tt.kind == 1) block<1, VT::mkp, 1>(tt, kp, ks, j0, nb, d, pad, kbuf, n - j0);
            else if (tt.kind == 2) block<1, MK1, 2>(tt, kp, ks, j0, nb, d, pad, kbuf, n - j0);
            else if (tt.width == V) block<1, MK1>(tt, kp, ks, j0, nb, d, pad, kbuf, n - j0);
            else if (tt.width == 2 * V) block<2, MK2>(tt, kp, ks, j0, nb, d, pad, kbuf, n - j0);
            else if constexpr (MK4 > 0) block<4, MK4>(tt, kp, ks, j0, nb, d, pad, kbuf, n - j0);
          }
        };
        const T* raw = keys + static_cast<std::ptrdiff_t>(j0) * k_stride;
        if constexpr (std::is_same_v<T, float>) {
          run_tiles(raw, k_stride);
        } else if (nt == 1) {
          run_tiles(raw, k_stride);
        } else {
          // Convert this block; prefetch the next one, which then arrives during this block's GEMM
          // (the conversion would otherwise stall on memory with the FMA units idle).
          const std::size_t row_bytes = d * sizeof(T);
          for (std::size_t a = 0; a < nb; ++a) {
            VT::convert_row(raw + static_cast<std::ptrdiff_t>(a) * k_stride, kbuf + a * d, d);
            if (j0 + KB + a < n) {
              const char* r = reinterpret_cast<const char*>(keys + static_cast<std::ptrdiff_t>(j0 + KB + a) * k_stride);
              for (std::size_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(r + off, 0, 2);
            }
          }
          run_tiles(static_cast<const float*>(kbuf), static_cast<std::ptrdiff_t>(d));
        }
      }
      for (std::size_t ti = 0; ti < nt; ++ti) {
        const tile& t = tiles[ti];
        float* acc = job.reduce_max ? hsum + (t.row0 / w) * n : out;
        finish(t, n, acc);
      }
    }
    if (job.reduce_max) {
      for (std::size_t j = 0; j < n; ++j) out[j] = hsum[j];
      for (std::size_t h = 1; h < g; ++h)
        for (std::size_t j = 0; j < n; ++j) out[j] = std::max(out[j], hsum[h * n + j]);
    } else {
      const float inv_g = 1.f / static_cast<float>(g);
      for (std::size_t j = 0; j < n; ++j) out[j] *= inv_g;
    }
  }
};

// Entry points of the path (window_f32 / window_f16 / window_bf16), one per key element type.
inline void window_f32(const window_job& job, const float* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_simd<window_vt>::run(job, keys, k_stride, out, scratch);
}
inline void window_f16(const window_job& job, const f16* keys, std::ptrdiff_t k_stride, float* out,
                       float* scratch) noexcept {
  window_simd<window_vt>::run(job, keys, k_stride, out, scratch);
}
inline void window_bf16(const window_job& job, const bf16* keys, std::ptrdiff_t k_stride, float* out,
                        float* scratch) noexcept {
  window_simd<window_vt>::run(job, keys, k_stride, out, scratch);
}

// y[i] = tanh(x[i]) for i < n through the path's vector tanh (tests measure it against std::tanh).
inline void window_tanh(const float* x, float* y, std::size_t n) noexcept {
  using S = window_simd<window_vt>;
  constexpr std::size_t V = window_vt::lanes;
  std::size_t i = 0;
  for (; i + V <= n; i += V) window_vt::store(y + i, S::tanh(window_vt::load(x + i)));
  if (i < n) {  // tail through a zero-padded vector
    alignas(64) float buf[V] = {};
    std::memcpy(buf, x + i, (n - i) * sizeof(float));
    window_vt::store(buf, S::tanh(window_vt::load(buf)));
    std::memcpy(y + i, buf, (n - i) * sizeof(float));
  }
}
