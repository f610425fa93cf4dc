// Window-scoring kernel and whole-layer prune.
//
// fma_peak/<isa>: one core's f32 FMA peak, measured in this binary: a loop of 12 independent
// FMA chains (AVX-512 zmm or AVX2 ymm). The widest one is the reference for pct_peak.
//
// window/<keys>/<isa>/w/head_dim/n/g: window_scores of one kv head with g query heads (g = 1:
// the window's w queries are the GEMM's rows; g = 4: a GQA group, 4w rows) over n cached keys.
// GFLOPs counts the logits GEMM only (2 * g * w * n * head_dim per call): the softmax, mask and column sums are overhead the
// kernel has to hide. pct_peak = GFLOPs / fma_peak * 100 (the best peak measured so far in the
// process, re-measured before every benchmark: see measured_peak). Both use the
// thread's CPU time.
// Baseline: the scalar path (isa scalar) on a subset of sizes.
//
// window_gemm/lanes/n and window_softmax: the kernel's GEMM and softmax step measured apart
// (AVX-512 only), which bounds the whole kernel's pct_peak (see below).
//
// prune/<part>: one layer, 8 kv heads, 32 query heads (GQA 4), head_dim 128, n = 32768 f16
// tokens, SnapKV with a 32-query window, keep 20%: score (8 heads), select (top-k of 8 rows),
// compact (retain on every head), and the whole prune_layer. Each iteration of compact/total
// restores the cache first (paused timing).
#include <benchmark/benchmark.h>

#include "bench_main.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <type_traits>
#include <random>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "depthkv/prune.hpp"
#include "depthkv/prune_paged.hpp"
#include "depthkv/score/window.hpp"

using namespace depthkv;

namespace {

// This thread's CPU seconds: on a shared machine the wall clock also counts the time other
// tenants hold the core, which would make both the peak and the kernels look slower at random.
double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// ------------------------------------------------------------------------------ FMA peak
#if DEPTHKV_HAVE_AVX512
DEPTHKV_AVX512_BEGIN
template <int N>
__attribute__((noinline)) float fma_loop_512(long iters) {
  __m512 a[N];
  for (int i = 0; i < N; ++i) a[i] = _mm512_set1_ps(0.001f * float(i));
  const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(1e-4f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < N; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
  }
  alignas(64) float t[16];
  float s = 0;
  for (int i = 0; i < N; ++i) {
    _mm512_store_ps(t, a[i]);
    s += t[0];
  }
  return s;
}
DEPTHKV_AVX512_END
#else
template <int N>
float fma_loop_512(long) { return 0.f; }
#endif

#if DEPTHKV_HAVE_AVX2
DEPTHKV_AVX2_BEGIN
template <int N>
__attribute__((noinline)) float fma_loop_256(long iters) {
  __m256 a[N];
  for (int i = 0; i < N; ++i) a[i] = _mm256_set1_ps(0.001f * float(i));
  const __m256 b = _mm256_set1_ps(0.999f), c = _mm256_set1_ps(1e-4f);
  for (long it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < N; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
  }
  alignas(32) float t[8];
  float s = 0;
  for (int i = 0; i < N; ++i) {
    _mm256_store_ps(t, a[i]);
    s += t[0];
  }
  return s;
}
DEPTHKV_AVX2_END
#else
template <int N>
float fma_loop_256(long) { return 0.f; }
#endif

constexpr int chains = 12;

double flops_per_iter(isa p) { return p == isa::avx512 ? chains * 32.0 : chains * 16.0; }

double run_fma(isa p, long iters) {
  return p == isa::avx512 ? double(fma_loop_512<chains>(iters)) : double(fma_loop_256<chains>(iters));
}

// One ~30 ms FMA-loop measurement on the widest path (GFLOP/s).
double fma_gflops_once() {
  const isa p = isa_supported(isa::avx512) ? isa::avx512 : isa::avx2;
  if (!isa_supported(p)) return 1.0;
  const long iters = 3000000;
  volatile long vit = iters;  // opaque count: the pure loop can be neither folded nor hoisted
  const long it = vit;
  const double t0 = thread_seconds();
  benchmark::DoNotOptimize(run_fma(p, it));
  const double s = thread_seconds() - t0;
  return flops_per_iter(p) * double(iters) / s / 1e9;
}

// Best GFLOP/s seen so far: 8 runs at start-up, then 3 more on every call, so a start-up
// measurement disturbed by a neighbour on the VM (it happened: 190 instead of ~227 GFLOP/s,
// which inflated every ratio of that process by 15-18 points) is corrected before the next
// benchmark instead of skewing all of them.
double measured_peak() {
  static double best = [] {
    double b = 0;
    for (int r = 0; r < 8; ++r) b = std::max(b, fma_gflops_once());
    std::fprintf(stderr, "bench_score: f32 FMA peak (best of 8 at start-up) = %.1f GFLOP/s\n", b);
    return b;
  }();
  for (int r = 0; r < 3; ++r) best = std::max(best, fma_gflops_once());
  return best;
}

void BM_fma_peak(benchmark::State& st) {
  const isa p = static_cast<isa>(st.range(0));
  if (!isa_supported(p)) {
    st.SkipWithError("isa not supported here");
    return;
  }
  const long iters = 1000000;
  const double t0 = thread_seconds();
  for (auto _ : st) {
    volatile long vit = iters;  // opaque count: keeps the (pure) loop from being hoisted out
    benchmark::DoNotOptimize(run_fma(p, vit));
  }
  st.counters["GFLOPs"] = flops_per_iter(p) * double(iters) * double(st.iterations()) * 1e-9 / (thread_seconds() - t0);
  st.SetLabel(isa_name(p));
}
BENCHMARK(BM_fma_peak)->Arg(int(isa::avx512))->Arg(int(isa::avx2))->Unit(benchmark::kMillisecond);

// ------------------------------------------------------------------------------ window kernel
constexpr int dispatched_arg = 9;

template <class T>
void BM_window(benchmark::State& st) {
  // isa argument: a path, or dispatched_arg for the path dispatch picks (active_isa()).
  const isa p = st.range(0) == dispatched_arg ? active_isa() : static_cast<isa>(st.range(0));
  const auto w = static_cast<std::size_t>(st.range(1)), d = static_cast<std::size_t>(st.range(2)),
             n = static_cast<std::size_t>(st.range(3)), gq = static_cast<std::size_t>(st.range(4));
  if (!isa_supported(p)) {
    st.SkipWithError("isa not supported here");
    return;
  }
  const scoped_isa use(p);
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  std::vector<float> q(gq * w * d);
  std::vector<T> k(n * d);
  for (auto& x : q) x = nd(g);
  for (auto& x : k) x = T(nd(g));
  const window_queries wq = window_queries::dense(q.data(), kv_shape(heads{gq}, tokens{w}, dim{d}));
  const rows_view<const T> keys{k.data(), n, d, static_cast<std::ptrdiff_t>(d)};
  std::vector<float> out(n);
  window_scratch ws;
  window_options o;
  const double peak = measured_peak();
  const double t0 = thread_seconds();
  for (auto _ : st) {
    window_scores(wq, 1, 0, keys, {}, out, ws, o);
    benchmark::DoNotOptimize(out.data());
  }
  const double gflops =
      2.0 * double(gq * w) * double(n) * double(d) * double(st.iterations()) * 1e-9 / (thread_seconds() - t0);
  st.counters["GFLOPs"] = gflops;
  st.counters["pct_peak"] = 100.0 * gflops / peak;
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * n));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * n * d * sizeof(T)));
  st.SetLabel(std::string(element_name<T>()) + " " + isa_name(p) + (st.range(0) == dispatched_arg ? " (dispatched)" : ""));
}

void window_args(benchmark::internal::Benchmark* b) {
  // The dispatched path and the forced portable one on the same shape (issue #14's target
  // shape: GQA 4, w 32, head_dim 128, 8K keys), then every SIMD path's grid.
  b->Args({dispatched_arg, 32, 128, 8192, 4});
  b->Args({int(isa::scalar), 32, 128, 8192, 4});
  for (int p : {int(isa::avx512), int(isa::avx2)})
    for (int n : {4096, 32768})
      for (int d : {64, 128})
        for (int w : {8, 16, 32, 64}) b->Args({p, w, d, n, 1});
  // a GQA group of 4 query heads per kv head (Llama-3-8B's ratio): 4w GEMM rows
  for (int n : {4096, 32768})
    for (int w : {8, 16, 32}) b->Args({int(isa::avx512), w, 128, n, 4});
  b->Args({int(isa::scalar), 16, 128, 4096, 1});  // the obvious baseline
  b->ArgNames({"isa", "w", "d", "n", "g"});
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK_TEMPLATE(BM_window, float)->Apply(window_args);
BENCHMARK_TEMPLATE(BM_window, f16)->Apply(window_args);
BENCHMARK_TEMPLATE(BM_window, bf16)->Apply(window_args);

// window_hybrid/<keys>/<isa>/w/d/n/g/W/cap: window_scores with a sliding window of W positions
// and / or a logit soft-cap (W = 0, cap = 0: unset), the window's queries being the last w keys.
// GFLOPs counts the logits GEMM of the keys some query sees (2 * g * w * min(n, W + w - 1) *
// head_dim per call), so a short window shows as fewer microseconds, not more GFLOPs.
template <class T>
void BM_window_hybrid(benchmark::State& st) {
  const isa p = st.range(0) == dispatched_arg ? active_isa() : static_cast<isa>(st.range(0));
  const auto w = static_cast<std::size_t>(st.range(1)), d = static_cast<std::size_t>(st.range(2)),
             n = static_cast<std::size_t>(st.range(3)), gq = static_cast<std::size_t>(st.range(4)),
             W = static_cast<std::size_t>(st.range(5));
  const auto cap = static_cast<float>(st.range(6));
  if (!isa_supported(p)) {
    st.SkipWithError("isa not supported here");
    return;
  }
  const scoped_isa use(p);
  std::mt19937 g(7);
  std::normal_distribution<float> nd;
  std::vector<float> q(gq * w * d);
  std::vector<T> k(n * d);
  for (auto& x : q) x = nd(g);
  for (auto& x : k) x = T(nd(g));
  const window_queries wq = window_queries::dense(q.data(), kv_shape(heads{gq}, tokens{w}, dim{d}));
  const rows_view<const T> keys{k.data(), n, d, static_cast<std::ptrdiff_t>(d)};
  std::vector<float> out(n);
  window_scratch ws;
  window_options o;
  if (W > 0) o.sliding_window = W;
  if (cap > 0.f) o.soft_cap = cap;
  const std::size_t seen = W > 0 ? std::min(n, W + w - 1) : n;
  const double peak = measured_peak();
  const double t0 = thread_seconds();
  for (auto _ : st) {
    window_scores(wq, 1, 0, keys, {}, out, ws, o);
    benchmark::DoNotOptimize(out.data());
  }
  const double gflops =
      2.0 * double(gq * w) * double(seen) * double(d) * double(st.iterations()) * 1e-9 / (thread_seconds() - t0);
  st.counters["GFLOPs"] = gflops;
  st.counters["pct_peak"] = 100.0 * gflops / peak;
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * n));
  st.SetLabel(std::string(element_name<T>()) + " " + isa_name(p) + (st.range(0) == dispatched_arg ? " (dispatched)" : ""));
}

void window_hybrid_args(benchmark::internal::Benchmark* b) {
  // issue #14's shape (GQA 4, w 32, head_dim 128) over 32K keys: plain, soft-cap 50 (Gemma 2),
  // sliding window 4096 (Gemma 2 local layers), both; the portable path at 8K keys.
  for (int W : {0, 4096})
    for (int cap : {0, 50}) b->Args({dispatched_arg, 32, 128, 32768, 4, W, cap});
  for (int cap : {0, 50}) b->Args({int(isa::scalar), 32, 128, 8192, 4, 0, cap});
  b->ArgNames({"isa", "w", "d", "n", "g", "W", "cap"});
  b->Unit(benchmark::kMicrosecond);
}
BENCHMARK_TEMPLATE(BM_window_hybrid, float)->Apply(window_hybrid_args);
BENCHMARK_TEMPLATE(BM_window_hybrid, f16)->Apply(window_hybrid_args);

// ------------------------------------------------------------------------------ kernel parts
// The window kernel's two parts measured apart with its own code (AVX-512 traits), to bound
// what the whole kernel can reach: pct_peak <= gemm_pct / (1 + softmax cost per logit / GEMM
// cost per logit).
#if DEPTHKV_HAVE_AVX512
DEPTHKV_AVX512_BEGIN
using vt512 = detail::DEPTHKV_AVX512_NS::window_vt;
using simd512 = detail::DEPTHKV_AVX512_NS::window_simd<vt512>;

// window_gemm/<lanes>/n: the logits GEMM alone (micro-tiles of the given query width: 16 =
// pair tiles, 32 = 2 vectors x 12 keys, 64 = 4 vectors x 6 keys) over n f32 keys of head_dim 128
// streamed from memory, logits stored as the kernel stores them; no softmax.
__attribute__((noinline)) void window_gemm_impl(benchmark::State& st) {
  const auto W = static_cast<std::size_t>(st.range(0)), n = static_cast<std::size_t>(st.range(1));
  constexpr std::size_t d = 128;
  std::mt19937 g(11);
  std::normal_distribution<float> nd;
  std::vector<float> k(n * d), qt(d * W), L(n * W);
  for (auto& x : k) x = nd(g);
  for (auto& x : qt) x = nd(g);
  const auto ks = static_cast<std::ptrdiff_t>(d);
  auto sweep = [&](auto mk_tag, auto fn) {
    constexpr std::size_t MK = decltype(mk_tag)::value;
    for (std::size_t a = 0; a + MK <= n; a += MK) {
      const float* kp = k.data() + static_cast<std::ptrdiff_t>(a) * ks;
      fn(kp, L.data() + a * W, a + 2 * MK <= n ? kp + static_cast<std::ptrdiff_t>(MK) * ks : nullptr);
    }
    return n - n % MK;
  };
  const double peak = measured_peak();
  std::size_t keys = 0;
  const double t0 = thread_seconds();
  for (auto _ : st) {
    if (W == 64)
      keys = sweep(std::integral_constant<std::size_t, vt512::mk4>{}, [&](const float* kp, float* out, const float* next) {
        simd512::micro<4, vt512::mk4>(qt.data(), kp, ks, d, out, next);
      });
    else if (W == 32)
      keys = sweep(std::integral_constant<std::size_t, vt512::mk2>{}, [&](const float* kp, float* out, const float* next) {
        simd512::micro<2, vt512::mk2>(qt.data(), kp, ks, d, out, next);
      });
    else
      keys = sweep(std::integral_constant<std::size_t, vt512::mkp>{}, [&](const float* kp, float* out, const float* next) {
        simd512::micro_pair<vt512::mkp, 2>(qt.data(), kp, ks, d, out, next);
      });
    benchmark::DoNotOptimize(L.data());
  }
  const double gflops = 2.0 * double(W) * double(keys) * double(d) * double(st.iterations()) * 1e-9 /
                        (thread_seconds() - t0);
  st.counters["GFLOPs"] = gflops;
  st.counters["pct_peak"] = 100.0 * gflops / peak;
}

// window_softmax: the kernel's per-group softmax step (mask check, running max, 2^(L - M_g)
// in place, per-lane sums) on one L1-resident group of 48 keys x 64 query lanes. pct_of_gemm:
// its time per logit as a share of the logits GEMM at head_dim 128 at the measured peak
// (2 * 128 flops per logit); ceiling_pct = 100 / (1 + pct_of_gemm / 100), the % of peak left
// for a kernel whose GEMM ran at peak and whose softmax cost nothing else.
__attribute__((noinline)) void window_softmax_impl(benchmark::State& st) {
  constexpr std::size_t W = 64, G = detail::window_simd_plan::group, d = 128;
  std::mt19937 g(13);
  std::normal_distribution<float> nd;
  alignas(64) float L[G * W], mx[W], M[2 * W], S[2 * W];
  alignas(64) std::size_t lim[W];
  for (auto& x : L) x = 4.f * nd(g);
  for (std::size_t l = 0; l < W; ++l) {
    mx[l] = -std::numeric_limits<float>::infinity();
    lim[l] = G;
  }
  simd512::tile t;
  t.rows = t.width = W;
  t.lim_min = G;
  t.L = L;
  t.mx = mx;
  t.lim = lim;
  t.M = M;
  t.S = S;
  const double peak = measured_peak();
  const double t0 = thread_seconds();
  for (auto _ : st) {
    // Repeated in place the values settle in (0, 1] (no denormals): the same work every time.
    simd512::group_softmax(t, 0, G);
    benchmark::DoNotOptimize(L);
  }
  const double s = thread_seconds() - t0;
  const double logits = double(G * W) * double(st.iterations());
  const double gemm_s = logits * 2.0 * d / (peak * 1e9);
  st.counters["ns_per_16_logits"] = s / logits * 16 * 1e9;
  st.counters["pct_of_gemm"] = 100.0 * s / gemm_s;
  st.counters["ceiling_pct"] = 100.0 / (1.0 + s / gemm_s);
}
DEPTHKV_AVX512_END

// Outside the region: these run (and skip) on any CPU.
void BM_window_gemm(benchmark::State& st) {
  if (!isa_supported(isa::avx512)) return st.SkipWithError("avx512 not supported here");
  window_gemm_impl(st);
}
void BM_window_softmax(benchmark::State& st) {
  if (!isa_supported(isa::avx512)) return st.SkipWithError("avx512 not supported here");
  window_softmax_impl(st);
}
BENCHMARK(BM_window_gemm)
    ->ArgsProduct({{16, 32, 64}, {4096, 32768}})
    ->ArgNames({"lanes", "n"})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_window_softmax)->Unit(benchmark::kNanosecond);
#endif

// ------------------------------------------------------------------------------ whole-layer prune
struct prune_fixture {
  static constexpr std::size_t H = 8, Hq = 32, d = 128, n = 32768, w = 32, keep = n / 5;
  kv_cache<f16> original{layers{1}, heads{H}, dim{d}, n};
  kv_cache<f16> cache;
  std::vector<float> q;
  layer_queries lq;
  snapkv policy;
  prune_workspace ws;

  prune_fixture() : q(Hq * w * d) {
    std::mt19937 g(11);
    std::normal_distribution<float> nd;
    for (auto& x : q) x = nd(g);
    std::vector<f16> k(H * n * d), v(H * n * d);
    for (auto& x : k) x = f16(nd(g));
    for (auto& x : v) x = f16(nd(g));
    original.append(0, kv_view<const f16>::hnd(k.data(), kv_shape(heads{H}, tokens{n}, dim{d})), kv_view<const f16>::hnd(v.data(), kv_shape(heads{H}, tokens{n}, dim{d})),
                    pos_t(0));
    cache = original;
    lq.queries = window_queries::dense(q.data(), kv_shape(heads{Hq}, tokens{w}, dim{d}));
    policy.n_sink = 4;
    policy.n_recent = w;
  }
  static prune_fixture& get() {
    static prune_fixture f;
    return f;
  }
  void restore() { cache = original; }
};

head_input<f16> prune_input(prune_fixture& f, std::size_t h) {
  head_input<f16> in;
  in.kv_head = h;
  in.n_kv_heads = prune_fixture::H;
  in.keys = f.cache.keys(0, h);
  in.positions = f.cache.positions(0, h);
  in.queries = &f.lq.queries;
  return in;
}

void BM_prune_score(benchmark::State& st) {
  auto& f = prune_fixture::get();
  f.restore();
  std::vector<float> s(prune_fixture::H * prune_fixture::n);
  const double peak = measured_peak();
  const double t0 = thread_seconds();
  for (auto _ : st)
    for (std::size_t h = 0; h < prune_fixture::H; ++h)
      f.policy.score(prune_input(f, h), span<float>(s.data() + h * prune_fixture::n, prune_fixture::n), f.ws.score);
  const double flops = 2.0 * prune_fixture::Hq * prune_fixture::w * double(prune_fixture::n) * prune_fixture::d;
  const double gflops = flops * double(st.iterations()) * 1e-9 / (thread_seconds() - t0);
  st.counters["GFLOPs"] = gflops;
  st.counters["pct_peak"] = 100.0 * gflops / peak;
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * prune_fixture::H * prune_fixture::n));
}
BENCHMARK(BM_prune_score)->Unit(benchmark::kMillisecond);

void BM_prune_select(benchmark::State& st) {
  auto& f = prune_fixture::get();
  f.restore();
  std::vector<float> s(prune_fixture::H * prune_fixture::n);
  for (std::size_t h = 0; h < prune_fixture::H; ++h)
    f.policy.score(prune_input(f, h), span<float>(s.data() + h * prune_fixture::n, prune_fixture::n), f.ws.score);
  std::vector<index_t> out(prune_fixture::H * prune_fixture::n);
  topk_scratch ts;
  for (auto _ : st)
    for (std::size_t h = 0; h < prune_fixture::H; ++h)
      benchmark::DoNotOptimize(topk(span<const float>(s.data() + h * prune_fixture::n, prune_fixture::n),
                                    prune_fixture::keep, span<index_t>(out.data() + h * prune_fixture::n, prune_fixture::n),
                                    topk_options{f.policy.n_sink, f.policy.n_recent}, ts));
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * prune_fixture::H * prune_fixture::n));
}
BENCHMARK(BM_prune_select)->Unit(benchmark::kMillisecond);

void BM_prune_compact(benchmark::State& st) {
  auto& f = prune_fixture::get();
  std::vector<index_t> keep;
  std::mt19937 g(3);
  for (index_t j = 0; j < prune_fixture::n; ++j)
    if (g() % 5 == 0) keep.push_back(j);
  for (auto _ : st) {
    st.PauseTiming();
    f.restore();
    st.ResumeTiming();
    for (std::size_t h = 0; h < prune_fixture::H; ++h) f.cache.retain(0, h, keep);
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations() * prune_fixture::H * keep.size() * f.cache.row_bytes()));
}
BENCHMARK(BM_prune_compact)->Unit(benchmark::kMillisecond);

void BM_prune_total(benchmark::State& st) {
  auto& f = prune_fixture::get();
  for (auto _ : st) {
    st.PauseTiming();
    f.restore();
    st.ResumeTiming();
    prune_layer(f.cache, 0, prune_fixture::keep, f.policy, f.ws, f.lq);
  }
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * prune_fixture::H * prune_fixture::n));
}
BENCHMARK(BM_prune_total)->Unit(benchmark::kMillisecond);

// The same layer in paged memory: per-head tables over pages of one head, 16-token blocks with
// shuffled ids (as a pool looks after many sequences came and went). Baseline: BM_prune_total.
struct paged_fixture {
  static constexpr std::size_t B = 16, H = prune_fixture::H, d = prune_fixture::d, n = prune_fixture::n;
  static constexpr std::size_t per_head = n / B, n_blocks = H * per_head;
  std::vector<f16> k0, v0, k, v;
  std::vector<pos_t> pos0, pos;
  std::vector<std::int32_t> ids;  // [H][per_head]
  std::vector<block_table> tables0, tables;
  paged_layer<f16> layer;
  paged_prune_workspace<f16> ws;

  paged_fixture() : k0(n_blocks * B * d), v0(k0.size()), pos0(n_blocks * B), ids(n_blocks), tables0(H) {
    auto& f = prune_fixture::get();
    std::iota(ids.begin(), ids.end(), 0);
    std::mt19937 g(5);
    std::shuffle(ids.begin(), ids.end(), g);
    for (std::size_t h = 0; h < H; ++h)
      tables0[h] = block_table{span<std::int32_t>(ids.data() + h * per_head, per_head), B};
    const page_shape shape(blocks{n_blocks}, block_tokens{B}, heads{1}, dim{d});
    k = k0, v = v0, pos = pos0, tables = tables0;
    layer = paged_layer<f16>{page_pool_view<f16>(k.data(), shape, layout::nhd),
                             page_pool_view<f16>(v.data(), shape, layout::nhd), span<pos_t>(pos),
                             span<block_table>(tables), H};
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t t = 0; t < n; ++t) {
        std::memcpy(layer.key_row(h, t), f.original.keys(0, h).row(t), d * sizeof(f16));
        std::memcpy(layer.value_row(h, t), f.original.values(0, h).row(t), d * sizeof(f16));
        *layer.position(h, t) = f.original.positions(0, h)[t];
      }
    k0 = k, v0 = v, pos0 = pos;
  }
  static paged_fixture& get() {
    static paged_fixture f;
    return f;
  }
  void restore() {  // same buffers: the layer's views stay valid
    std::copy(k0.begin(), k0.end(), k.begin());
    std::copy(v0.begin(), v0.end(), v.begin());
    std::copy(pos0.begin(), pos0.end(), pos.begin());
    std::copy(tables0.begin(), tables0.end(), tables.begin());
  }
};

void BM_prune_paged_total(benchmark::State& st) {
  auto& f = prune_fixture::get();
  auto& p = paged_fixture::get();
  std::size_t released = 0;
  for (auto _ : st) {
    st.PauseTiming();
    p.restore();
    st.ResumeTiming();
    released = prune_paged(p.layer, 0, prune_fixture::keep, f.policy, p.ws, f.lq);
  }
  st.counters["blocks_released"] = static_cast<double>(released);
  st.SetItemsProcessed(static_cast<int64_t>(st.iterations() * prune_fixture::H * prune_fixture::n));
}
BENCHMARK(BM_prune_paged_total)->Unit(benchmark::kMillisecond);

}  // namespace

DEPTHKV_BENCHMARK_MAIN()
