// The top-k driver of one kernel path (internal; no include guard): included by each path's
// header inside that path's namespace and target region, after its `topk_kernels` struct, so
// the driver is compiled for the path's instruction set and inlines its kernels. Defines the
// path's entry point topk_row. Finds the exact threshold key with sampled brackets and
// vectorized filter passes, then runs one order-preserving emit pass.
// Internal header: not part of the depthkv API (may change in any release); include a public header.

// Exact threshold of x[0..len) (1 <= rank <= len) by the kernel's quickselect on its keys.
template <class K>
topk_threshold topk_exact(const float* x, std::size_t len, std::size_t rank, topk_scratch& sc) {
  std::int32_t* keys = sc.keys(len + 16);
  for (std::size_t i = 0; i < len; ++i) keys[i] = float_key(x[i]);
  return K::select(keys, len, rank, sc.keys2(len + 16));
}

// Threshold of x[0..len) at `rank` (1 <= rank <= len). Each round brackets the threshold with
// two sample order statistics ~3.5 sigma apart, counts what lies above the bracket and moves
// what lies inside it to the candidate buffer (one vectorized pass), and recurses on that.
// A missed bracket narrows the key range known to hold the threshold and retries with a
// doubled margin (one more pass); after three misses, or when a round barely shrinks the set,
// the exact select finishes on the current set, so the result is always exact. Candidates
// ping-pong between two scratch regions so a round's input stays intact: region A holds up
// to len + 16, region B up to len / 2 + 16 (a round that continues keeps at most half).
template <class K>
topk_threshold topk_find_threshold(const float* x, std::size_t len, std::size_t rank, topk_scratch& sc) {
  float* const region_a = sc.candidates(topk_scratch_floats(len));
  float* const region_b = region_a + len + 32;
  std::size_t above_acc = 0;
  auto exact = [&] {
    topk_threshold t = topk_exact<K>(x, len, rank, sc);
    t.above += above_acc;
    return t;
  };
  for (;;) {
    if (len < topk_exact_below) return exact();
    const std::size_t s = std::min<std::size_t>(4096, std::max<std::size_t>(256, (len / 64) & ~std::size_t{7}));
    std::int32_t* const sample = sc.keys(2 * s + 32);  // two copies: select reorders its input
    std::int32_t* const sample2 = sample + s + 16;       // select may write 16 past its input
    topk_sample(x, len, s, sample);
    const double q = static_cast<double>(rank) / static_cast<double>(len);
    const auto j = static_cast<std::ptrdiff_t>(q * static_cast<double>(s));
    const double sigma = std::sqrt(static_cast<double>(s) * q * (1.0 - q));
    const auto ss = static_cast<std::ptrdiff_t>(s);
    std::int32_t known_lo = key_nan, known_hi = key_pos_inf;  // the threshold key lies in here
    filter_counts fc;
    std::int32_t lo = 0, hi = 0;
    bool found = false;
    float* const cand = x == region_a ? region_b : region_a;
    for (int attempt = 0; attempt < 4 && !found; ++attempt) {
      if (known_hi < key_neg_inf) break;  // only NaNs can be left: the exact select handles it
      std::copy(sample, sample + s, sample2);
      const auto d = static_cast<std::ptrdiff_t>(std::ceil((3.5 * sigma + 2.0) * static_cast<double>(1 << attempt)));
      const std::ptrdiff_t jl = j + d, jh = j - d;  // 0-based ranks in the sample, best first
      lo = key_nan;
      hi = key_pos_inf;
      if (jl < ss) lo = K::select(sample2, s, static_cast<std::size_t>(jl) + 1, sc.keys2(s + 16)).key;
      if (jh >= 0) {
        std::copy(sample, sample + s, sample2);
        hi = K::select(sample2, s, static_cast<std::size_t>(jh) + 1, sc.keys2(s + 16)).key;
      }
      lo = std::min(std::max(lo, known_lo), known_hi);
      hi = std::min(std::max(hi, known_lo), known_hi);
      hi = std::max(hi, key_neg_inf);  // the filter compares floats: hi must be a number
      lo = std::min(lo, hi);
      fc = K::filter(x, len, key_float(lo), key_float(hi), lo == key_nan, cand);
      if (fc.above >= rank) known_lo = hi + 1;                      // threshold above the bracket
      else if (fc.above + fc.inside < rank) known_hi = lo - 1;      // threshold below the bracket
      else found = true;
    }
    if (!found || fc.inside > len / 2) return exact();
    above_acc += fc.above;
    rank -= fc.above;
    if (lo == hi) return {lo, above_acc, fc.inside};  // every candidate is a tie at the threshold
    x = cand;
    len = fc.inside;
  }
}

// Emits the ascending indices of the k best scores (protected ranges first-class). Pre: the
// arguments were validated (out has room for min(k, n); protected <= min(k, n)).
template <class K>
std::size_t topk_run(const float* s, std::size_t n, std::size_t k, index_t* out, const topk_options& opt,
                     topk_scratch& sc) {
  const std::size_t m = std::min(k, n);
  if (m == 0) return 0;
  const std::size_t a = std::min(opt.n_sink, n);                    // middle range [a, b)
  const std::size_t b = std::max(a, n - std::min(opt.n_recent, n));
  const std::size_t prot = a + (n - b);
  DEPTHKV_ASSERT(prot <= m);
  const std::size_t r = m - prot, len = b - a;
  for (std::size_t i = 0; i < a; ++i) out[i] = static_cast<index_t>(i);
  if (r == len) {
    for (std::size_t i = a; i < b; ++i) out[i] = static_cast<index_t>(i);
  } else if (r > 0) {
    const topk_threshold t = topk_find_threshold<K>(s + a, len, r, sc);
    DEPTHKV_ASSERT(t.above < r && r <= t.above + t.ties);
    const std::size_t got =
        K::emit(s + a, len, static_cast<index_t>(a), key_float(t.key), t.key == key_nan, r - t.above, t.ties, out + a, r);
    DEPTHKV_ASSERT(got == r);
    (void)got;
  }
  for (std::size_t i = b; i < n; ++i) out[a + r + (i - b)] = static_cast<index_t>(i);
  return m;
}

// Entry point of the path: the top-k of one validated row (see topk_run).
inline std::size_t topk_row(const float* s, std::size_t n, std::size_t k, index_t* out, const topk_options& opt,
                            topk_scratch& sc) {
  return topk_run<topk_kernels>(s, n, k, out, opt, sc);
}
