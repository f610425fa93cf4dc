// Top-k selection and in-place compaction against their obvious baselines, in one binary.
//
// topk/<impl>/<n>/<k per mille>: position-ordered top-k of n uniform random floats, k from 5%
// to 90%. Each iteration takes the next array of a pool of distinct random arrays (>= 2M
// scores = 8 MiB in all, >= 4 arrays): no branch predictor learns 2M random values, and the
// scores come from L3 (not L1/L2), as they would after a scoring pass over a layer. Impls:
// depthkv (the dispatched path, printed as depthkv_isa in the context), depthkv_avx2 and
// depthkv_scalar (forced with scoped_isa; depthkv_scalar is the portable path), and the
// baselines nth_element + sort of indices, partial_sort, and Highway VQSort argsort (when
// built with libhwy). Counters: ns_per_elem, and bytes_per_second = score bytes read per second.
//
// compact/<impl>/<row bytes>/<buffer MiB>/<kept %>: in-place compaction of one head's rows
// (random keep list) against memcpy of the same number of bytes between two buffers. Out of
// cache (buffer >= 64 MiB) every iteration first flushes the buffers from the caches (paused).
#include <benchmark/benchmark.h>

#include "bench_main.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <immintrin.h>

#include "depthkv/select/compact.hpp"
#include "depthkv/select/topk.hpp"

#if defined(DEPTHKV_BENCH_HAVE_HWY)
#include <hwy/contrib/sort/vqsort.h>
#endif

using namespace depthkv;

namespace {

// ----------------------------------------------------------------------------------- top-k
struct score_pool {
  std::vector<std::vector<float>> arrays;
  explicit score_pool(std::size_t n) {
    const std::size_t count = std::max<std::size_t>(4, (std::size_t{2} << 20) / n);
    std::mt19937_64 g(n * 7919 + 1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    arrays.resize(count);
    for (auto& a : arrays) {
      a.resize(n);
      for (auto& x : a) x = u(g);
    }
  }
};

const score_pool& pool_for(std::size_t n) {
  static std::vector<std::pair<std::size_t, score_pool>> pools;
  for (auto& p : pools)
    if (p.first == n) return p.second;
  pools.emplace_back(n, score_pool(n));
  return pools.back().second;
}

// Every impl: scores, k, out (room for k) -> count written, ascending indices.
struct nth_sort_impl {
  std::vector<index_t> order;
  std::size_t operator()(const std::vector<float>& s, std::size_t k, index_t* out) {
    order.resize(s.size());
    std::iota(order.begin(), order.end(), 0u);
    auto better = [&](index_t a, index_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
    std::nth_element(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k - 1), order.end(), better);
    std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    std::copy_n(order.begin(), k, out);
    return k;
  }
};

struct partial_sort_impl {
  std::vector<index_t> order;
  std::size_t operator()(const std::vector<float>& s, std::size_t k, index_t* out) {
    order.resize(s.size());
    std::iota(order.begin(), order.end(), 0u);
    auto better = [&](index_t a, index_t b) { return s[a] > s[b] || (s[a] == s[b] && a < b); };
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k), order.end(), better);
    std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
    std::copy_n(order.begin(), k, out);
    return k;
  }
};

#if defined(DEPTHKV_BENCH_HAVE_HWY)
// Argsort by VQSort: (order-preserving key << 32 | ~index) sorted descending puts the best
// first with earlier positions winning ties; then the k indices are sorted ascending.
struct vqsort_impl {
  std::vector<std::uint64_t> packed;
  std::vector<std::uint32_t> idx;
  hwy::Sorter sorter;
  std::size_t operator()(const std::vector<float>& s, std::size_t k, index_t* out) {
    const std::size_t n = s.size();
    packed.resize(n);
    idx.resize(k);
    for (std::size_t i = 0; i < n; ++i) {
      const auto key = static_cast<std::uint32_t>(detail::float_key(s[i])) ^ 0x80000000u;  // signed -> unsigned order
      packed[i] = (static_cast<std::uint64_t>(key) << 32) | (0xffffffffu - static_cast<std::uint32_t>(i));
    }
    sorter(packed.data(), n, hwy::SortDescending());
    for (std::size_t i = 0; i < k; ++i) idx[i] = 0xffffffffu - static_cast<std::uint32_t>(packed[i]);
    sorter(idx.data(), k, hwy::SortAscending());
    std::copy_n(idx.begin(), k, out);
    return k;
  }
};
#endif

struct depthkv_impl {
  isa path;
  topk_scratch scratch;
  std::size_t operator()(const std::vector<float>& s, std::size_t k, index_t* out) {
    const scoped_isa use(path);
    return topk(s, k, span<index_t>(out, k), {}, scratch);
  }
};

template <class Impl>
void run_topk_bench(benchmark::State& state, Impl impl) {
  const auto n = static_cast<std::size_t>(state.range(0));
  const auto k = static_cast<std::size_t>(state.range(1)) * n / 1000;
  const score_pool& pool = pool_for(n);
  std::vector<index_t> out(k), want(k);
  {  // the impl must agree with depthkv (no ties in these arrays, so every impl is exact)
    depthkv_impl ref{isa::scalar, {}};
    ref(pool.arrays[0], k, want.data());
    impl(pool.arrays[0], k, out.data());
    if (out != want) {
      state.SkipWithError("result differs from depthkv::topk");
      return;
    }
  }
  std::size_t next = 0;
  for (auto _ : state) {
    const auto& s = pool.arrays[next];
    next = next + 1 == pool.arrays.size() ? 0 : next + 1;
    benchmark::DoNotOptimize(impl(s, k, out.data()));
    benchmark::ClobberMemory();
  }
  const auto items = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(n);
  state.SetItemsProcessed(items);
  state.SetBytesProcessed(items * static_cast<std::int64_t>(sizeof(float)));
  state.counters["ns_per_elem"] = benchmark::Counter(static_cast<double>(n) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate |
                                                         benchmark::Counter::kInvert);
}

void topk_args(benchmark::internal::Benchmark* b) {
  for (long n : {4096L, 32768L, 262144L, 1048576L})
    for (long k : {50L, 100L, 500L, 900L}) b->Args({n, k});
  b->ArgNames({"n", "k_permille"})->Unit(benchmark::kMicrosecond)->MinTime(0.2);
}

void BM_topk_depthkv(benchmark::State& st) { run_topk_bench(st, depthkv_impl{active_isa(), {}}); }
void BM_topk_depthkv_avx2(benchmark::State& st) {
  if (!isa_supported(isa::avx2)) return st.SkipWithError("avx2 not supported here");
  run_topk_bench(st, depthkv_impl{isa::avx2, {}});
}
void BM_topk_depthkv_scalar(benchmark::State& st) { run_topk_bench(st, depthkv_impl{isa::scalar, {}}); }
void BM_topk_nth_element_sort(benchmark::State& st) { run_topk_bench(st, nth_sort_impl{}); }
void BM_topk_partial_sort(benchmark::State& st) { run_topk_bench(st, partial_sort_impl{}); }
BENCHMARK(BM_topk_depthkv)->Apply(topk_args);
BENCHMARK(BM_topk_depthkv_avx2)->Apply(topk_args);
BENCHMARK(BM_topk_depthkv_scalar)->Apply(topk_args);
BENCHMARK(BM_topk_nth_element_sort)->Apply(topk_args);
BENCHMARK(BM_topk_partial_sort)->Apply(topk_args);
#if defined(DEPTHKV_BENCH_HAVE_HWY)
void BM_topk_vqsort(benchmark::State& st) { run_topk_bench(st, vqsort_impl{}); }
BENCHMARK(BM_topk_vqsort)->Apply(topk_args);
#endif

// ------------------------------------------------------------------------------ compaction
void flush(const void* p, std::size_t bytes) {
  const auto* c = static_cast<const char*>(p);
  for (std::size_t i = 0; i < bytes; i += 64) _mm_clflush(c + i);
  _mm_mfence();
}

// A 64-byte-aligned byte buffer (engine tensors and kv_cache rows are at least that aligned).
struct aligned_bytes {
  std::vector<unsigned char> storage;
  unsigned char* ptr;
  std::size_t len;
  aligned_bytes(std::size_t n, unsigned char fill) : storage(n + 64, fill), len(n) {
    const auto addr = reinterpret_cast<std::uintptr_t>(storage.data());
    ptr = storage.data() + ((64 - addr % 64) % 64);
  }
  unsigned char* data() { return ptr; }
  std::size_t size() const { return len; }
};

struct compact_setup {
  std::size_t row_bytes, rows, kept;
  bool out_of_cache;
  aligned_bytes buf;
  std::vector<index_t> keep;
  explicit compact_setup(const benchmark::State& state)
      : row_bytes(static_cast<std::size_t>(state.range(0))),
        rows((static_cast<std::size_t>(state.range(1)) << 20) / row_bytes),
        kept(rows * static_cast<std::size_t>(state.range(2)) / 100),
        out_of_cache(state.range(1) >= 64),
        buf(rows * row_bytes, 1) {
    std::mt19937_64 g(rows + row_bytes);
    std::vector<index_t> all(rows);
    std::iota(all.begin(), all.end(), 0u);
    std::shuffle(all.begin(), all.end(), g);
    keep.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(kept));
    std::sort(keep.begin(), keep.end());
  }
  void finish(benchmark::State& state) const {
    const auto bytes = static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kept * row_bytes);
    state.SetBytesProcessed(bytes);  // bytes moved (each read once and written once)
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(kept));
  }
};

// Rows of `row_bytes` as float rows (row_bytes is a multiple of 4 here); f16/bf16 rows of the
// same byte size take the same kernel path.
void run_compact(benchmark::State& state, isa path) {
  compact_setup c(state);
  const scoped_isa use(path);
  const std::size_t dim = c.row_bytes / sizeof(float);
  rows_view<float> rows{reinterpret_cast<float*>(c.buf.data()), c.rows, dim, static_cast<std::ptrdiff_t>(dim)};
  for (auto _ : state) {
    if (c.out_of_cache) {
      state.PauseTiming();
      flush(c.buf.data(), c.buf.size());
      state.ResumeTiming();
    }
    // Repeating the compaction on the compacted buffer moves the same bytes (the values differ).
    detail::compact_rows_unchecked(rows, c.keep.data(), c.keep.size());
    benchmark::ClobberMemory();
  }
  c.finish(state);
}

void BM_compact_depthkv(benchmark::State& st) { run_compact(st, active_isa()); }
void BM_compact_scalar_memcpy_rows(benchmark::State& st) { run_compact(st, isa::scalar); }

void BM_compact_memcpy_baseline(benchmark::State& state) {
  compact_setup c(state);
  const std::size_t bytes = c.kept * c.row_bytes;
  aligned_bytes dst(bytes, 2);
  // The source is the tail of the same buffer (as many bytes as the compaction moves).
  const unsigned char* src = c.buf.data() + c.buf.size() - bytes;
  for (auto _ : state) {
    if (c.out_of_cache) {
      state.PauseTiming();
      flush(src, bytes);
      flush(dst.data(), bytes);
      state.ResumeTiming();
    }
    std::memcpy(dst.data(), src, bytes);
    benchmark::ClobberMemory();
  }
  c.finish(state);
}

// The same memcpy, but each iteration reads the next slice of the whole buffer, so (in cache)
// the source comes from L3 as the scattered kept rows of a compaction do, while the plain
// baseline's source and destination stay in L2. Shows how much of the gap to the plain baseline
// is the cache level the rows are read from rather than the row-by-row copy.
void BM_compact_memcpy_l3_source(benchmark::State& state) {
  compact_setup c(state);
  const std::size_t bytes = c.kept * c.row_bytes;
  aligned_bytes dst(bytes, 2);
  const std::size_t slices = c.buf.size() / bytes;
  std::size_t it = 0;
  for (auto _ : state) {
    const unsigned char* src = c.buf.data() + (it++ % slices) * bytes;
    std::memcpy(dst.data(), src, bytes);
    benchmark::ClobberMemory();
  }
  c.finish(state);
}

// In cache: a 4 MiB buffer (L3-resident; the kept rows fit in L2). Out of cache: 64 MiB, flushed
// before every iteration; a fixed iteration count bounds the (paused) flush time.
void compact_args_in_cache(benchmark::internal::Benchmark* b) {
  for (long row : {128L, 256L, 512L})
    for (long pct : {10L, 50L}) b->Args({row, 4, pct});
  b->ArgNames({"row_bytes", "MiB", "kept_pct"})->Unit(benchmark::kMicrosecond)->MinTime(0.2);
}
void compact_args_out_of_cache(benchmark::internal::Benchmark* b) {
  for (long row : {128L, 256L, 512L})
    for (long pct : {10L, 50L}) b->Args({row, 64, pct});
  b->ArgNames({"row_bytes", "MiB", "kept_pct"})->Unit(benchmark::kMicrosecond)->Iterations(20);
}
BENCHMARK(BM_compact_depthkv)->Apply(compact_args_in_cache);
BENCHMARK(BM_compact_scalar_memcpy_rows)->Apply(compact_args_in_cache);
BENCHMARK(BM_compact_memcpy_baseline)->Apply(compact_args_in_cache);
BENCHMARK(BM_compact_memcpy_l3_source)->Apply(compact_args_in_cache);
BENCHMARK(BM_compact_depthkv)->Apply(compact_args_out_of_cache);
BENCHMARK(BM_compact_scalar_memcpy_rows)->Apply(compact_args_out_of_cache);
BENCHMARK(BM_compact_memcpy_baseline)->Apply(compact_args_out_of_cache);

}  // namespace

DEPTHKV_BENCHMARK_MAIN()
