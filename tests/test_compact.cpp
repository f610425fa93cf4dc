// In-place compaction against a naive reference (copy the kept rows out, write them back),
// byte for byte over the whole buffer (rows past k and padding must be untouched), on every
// compiled path, for f32/f16/bf16, many head_dims, both layouts; errors leave memory unchanged.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "depthkv/select/compact.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::rng;
using depthkv_test::uniform_int;

namespace {

// Random bytes (any bit pattern, NaNs included: rows are moved, never interpreted).
template <class T>
std::vector<T> random_buffer(std::size_t elements) {
  std::vector<std::uint8_t> bytes(elements * sizeof(T));
  for (auto& b : bytes) b = static_cast<std::uint8_t>(rng()());
  std::vector<T> v(elements);
  if (elements) std::memcpy(static_cast<void*>(v.data()), bytes.data(), bytes.size());
  return v;
}

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

// A random strictly ascending subset of [0, n) with about `percent`% kept; shapes: random,
// a kept prefix (rows already in place), only the last row, everything, nothing.
std::vector<index_t> random_keep(std::size_t n, int shape) {
  std::vector<index_t> keep;
  switch (shape) {
    case 0: for (std::size_t i = 0; i < n; ++i) if (uniform_int(0, 99) < 10) keep.push_back(static_cast<index_t>(i)); break;
    case 1: for (std::size_t i = 0; i < n; ++i) if (uniform_int(0, 99) < 50) keep.push_back(static_cast<index_t>(i)); break;
    case 2: for (std::size_t i = 0; i < n; ++i) if (i < n / 3 || uniform_int(0, 1)) keep.push_back(static_cast<index_t>(i)); break;
    case 3: if (n) keep.push_back(static_cast<index_t>(n - 1)); break;
    case 4: keep.resize(n); std::iota(keep.begin(), keep.end(), 0u); break;
    default: break;
  }
  return keep;
}
constexpr int n_shapes = 6;

// Naive reference on a rows_view-described buffer: row i <- old row keep[i].
template <class T>
std::vector<T> naive_compact(const std::vector<T>& buf, std::size_t offset, std::size_t dim, std::ptrdiff_t stride,
                             const std::vector<index_t>& keep) {
  std::vector<T> out = buf;
  for (std::size_t i = 0; i < keep.size(); ++i)
    for (std::size_t d = 0; d < dim; ++d)
      out[offset + i * static_cast<std::size_t>(stride) + d] = buf[offset + keep[i] * static_cast<std::size_t>(stride) + d];
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("compact_rows: every path, every head_dim, padding untouched", "[compact]", float, f16, bf16) {
  using T = TestType;
  for (isa path : depthkv_test::supported_paths()) {
    const scoped_isa use(path);
    for (std::size_t dim : {1u, 3u, 8u, 16u, 32u, 33u, 64u, 80u, 96u, 100u, 128u, 256u}) {
      for (std::size_t pad : {0u, 5u}) {
        for (int shape = 0; shape < n_shapes; ++shape) {
          const std::size_t n = uniform_int(0, 90);
          const auto stride = static_cast<std::ptrdiff_t>(dim + pad);
          auto buf = random_buffer<T>(n * (dim + pad) + 7);  // 7 spare elements after the last row
          const auto keep = random_keep(n, shape);
          const auto want = naive_compact(buf, 0, dim, stride, keep);
          compact_rows(rows_view<T>{buf.data(), n, dim, stride}, span<const index_t>(keep));
          INFO("path " << isa_name(path) << ", dim " << dim << ", pad " << pad << ", shape " << shape << ", n " << n);
          REQUIRE(same_bytes(buf, want));
        }
      }
    }
  }
}

TEST_CASE("compact_rows: spans above the streaming threshold (non-temporal stores)", "[compact]") {
  // > detail::compact_stream_span bytes of 64-byte aligned rows take the streaming-store path;
  // misaligned rows or a padded stride keep plain stores. Same reference, byte for byte.
  for (isa path : depthkv_test::supported_paths()) {
    const scoped_isa use(path);
    for (std::size_t row_bytes : {64u, 128u, 256u, 512u}) {
      for (std::size_t pad : {0u, 4u}) {
        const std::size_t dim = row_bytes / sizeof(float);
        const std::size_t n = (detail::compact_stream_span + (1u << 20)) / row_bytes;
        const auto stride = static_cast<std::ptrdiff_t>(dim + pad);
        auto storage = random_buffer<float>(n * (dim + pad) + 16 + 7);
        // 64-byte aligned start inside the vector (its allocation is at least 16-byte aligned)
        const std::size_t off = ((64 - reinterpret_cast<std::uintptr_t>(storage.data()) % 64) % 64) / sizeof(float);
        for (int shape : {0, 1, 2}) {
          const auto keep = random_keep(n, shape);
          const auto want = naive_compact(storage, off, dim, stride, keep);
          compact_rows(rows_view<float>{storage.data() + off, n, dim, stride}, span<const index_t>(keep));
          INFO("path " << isa_name(path) << ", row bytes " << row_bytes << ", pad " << pad << ", shape " << shape);
          REQUIRE(same_bytes(storage, want));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("retain: NHD and HND views, positions move with their rows", "[compact]", float, f16, bf16) {
  using T = TestType;
  for (layout l : {layout::nhd, layout::hnd}) {
    for (std::size_t dim : {1u, 3u, 64u, 80u, 128u}) {
      for (int shape = 0; shape < n_shapes; ++shape) {
        const std::size_t heads = uniform_int(1, 4), n = uniform_int(0, 60), cap = n + 3;
        const std::size_t elems = l == layout::nhd ? n * heads * dim : heads * cap * dim;
        auto kb = random_buffer<T>(elems), vb = random_buffer<T>(elems);
        auto kv = l == layout::nhd ? kv_view<T>::nhd(kb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim})) : kv_view<T>::hnd(kb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim}), cap);
        auto vv = l == layout::nhd ? kv_view<T>::nhd(vb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim})) : kv_view<T>::hnd(vb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim}), cap);
        std::vector<pos_t> pos(heads * cap);
        for (std::size_t i = 0; i < pos.size(); ++i) pos[i] = static_cast<pos_t>(i * 7 + 1);
        const auto keep = random_keep(n, shape);
        // Reference: per head, through the view's own row addressing.
        std::vector<T> kw = kb, vw = vb;
        std::vector<pos_t> pw = pos;
        for (std::size_t h = 0; h < heads; ++h)
          for (std::size_t i = 0; i < keep.size(); ++i) {
            const auto dst = static_cast<std::size_t>(kv.row(h, i) - kb.data());
            const auto src = static_cast<std::size_t>(kv.row(h, keep[i]) - kb.data());
            std::copy_n(kb.begin() + static_cast<std::ptrdiff_t>(src), dim, kw.begin() + static_cast<std::ptrdiff_t>(dst));
            std::copy_n(vb.begin() + static_cast<std::ptrdiff_t>(src), dim, vw.begin() + static_cast<std::ptrdiff_t>(dst));
            pw[h * cap + i] = pos[h * cap + keep[i]];
          }
        INFO(layout_name(l) << ", dim " << dim << ", heads " << heads << ", n " << n << ", shape " << shape);
        retain(kv, vv, span<const index_t>(keep), layer_positions::per_head(pos.data(), static_cast<std::ptrdiff_t>(cap)));
        REQUIRE(same_bytes(kb, kw));
        REQUIRE(same_bytes(vb, vw));
        REQUIRE(pos == pw);
      }
    }
  }
}

TEST_CASE("retain: shared position row and retain_head", "[compact]") {
  const std::size_t heads = 3, n = 40, dim = 64;
  auto kb = random_buffer<float>(heads * n * dim), vb = random_buffer<float>(heads * n * dim);
  auto kv = kv_view<float>::nhd(kb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim})), vv = kv_view<float>::nhd(vb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim}));
  std::vector<pos_t> pos(n);
  std::iota(pos.begin(), pos.end(), 100);
  const std::vector<index_t> keep{0, 5, 6, 7, 20, 39};
  retain(kv, vv, span<const index_t>(keep), layer_positions::shared(pos.data()));
  CHECK(std::vector<pos_t>(pos.begin(), pos.begin() + 6) == std::vector<pos_t>{100, 105, 106, 107, 120, 139});
  CHECK(pos[6] == 106);  // past k: untouched

  // retain_head on head 1 of an HND view with 30 live rows: other heads untouched.
  const std::size_t cap = 50;
  auto hk = random_buffer<bf16>(heads * cap * dim), hv = random_buffer<bf16>(heads * cap * dim);
  auto k2 = kv_view<bf16>::hnd(hk.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{cap}, depthkv::dim{dim})), v2 = kv_view<bf16>::hnd(hv.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{cap}, depthkv::dim{dim}));
  std::vector<pos_t> p1(cap);
  std::iota(p1.begin(), p1.end(), 0);
  const std::vector<index_t> keep2{2, 3, 29};
  const auto want_k = naive_compact(hk, 1 * cap * dim, dim, static_cast<std::ptrdiff_t>(dim), keep2);
  const auto want_v = naive_compact(hv, 1 * cap * dim, dim, static_cast<std::ptrdiff_t>(dim), keep2);
  retain_head(k2, v2, 1, tokens{30}, span<const index_t>(keep2), p1.data());
  CHECK(same_bytes(hk, want_k));
  CHECK(same_bytes(hv, want_v));
  CHECK(p1[0] == 2);
  CHECK(p1[1] == 3);
  CHECK(p1[2] == 29);
  CHECK(p1[3] == 3);
}

TEST_CASE("compaction errors leave memory unchanged", "[compact]") {
  const std::size_t heads = 2, n = 10, dim = 8;
  auto kb = random_buffer<f16>(heads * n * dim), vb = random_buffer<f16>(heads * n * dim);
  const auto k0 = kb, v0 = vb;
  auto kv = kv_view<f16>::hnd(kb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim})), vv = kv_view<f16>::hnd(vb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n}, depthkv::dim{dim}));
  std::vector<pos_t> pos(heads * n, 3);
  const auto p0 = pos;
  auto unchanged = [&] { return same_bytes(kb, k0) && same_bytes(vb, v0) && pos == p0; };
  const std::vector<index_t> unsorted{1, 3, 2}, dup{1, 1}, range{0, 10}, ok{0, 2};
  require_error([&] { retain(kv, vv, span<const index_t>(unsorted), layer_positions::per_head(pos.data(), 10)); },
                {"depthkv::retain", "strictly ascending", "keep[1] = 3", "keep[2] = 2"});
  CHECK(unchanged());
  require_error([&] { retain(kv, vv, span<const index_t>(dup), layer_positions::per_head(pos.data(), 10)); }, {"strictly ascending"});
  CHECK(unchanged());
  require_error([&] { retain(kv, vv, span<const index_t>(range), layer_positions::per_head(pos.data(), 10)); }, {"keep[1] = 10", "out of range"});
  CHECK(unchanged());
  auto small = kv_view<f16>::hnd(vb.data(), kv_shape(depthkv::heads{heads}, depthkv::tokens{n - 1}, depthkv::dim{dim}), n);
  require_error([&] { retain(kv, small, span<const index_t>(ok)); }, {"K shape", "V shape"});
  CHECK(unchanged());
  require_error([&] { retain_head(kv, vv, 2, span<const index_t>(ok)); }, {"head 2 out of range"});
  require_error([&] { retain_head(kv, vv, 0, tokens{11}, span<const index_t>(ok), nullptr); }, {"live rows 11"});
  require_error([&] { retain_head(kv, vv, 0, tokens{2}, span<const index_t>(ok), nullptr); }, {"keep[1] = 2", "out of range"});
  CHECK(unchanged());
  // Position rows closer than a head's rows would overlap; one row for all heads is named.
  require_error([&] { retain(kv, vv, span<const index_t>(ok), layer_positions::per_head(pos.data(), 9)); },
                {"depthkv::retain", "head_stride 9", "overlaps rows of 10"});
  require_error([&] { (void)layer_positions::per_head(pos.data(), 0); }, {"head_stride is 0", "shared"});
  require_error([&] { (void)layer_positions::per_head(nullptr, 10); }, {"data is null"});
  CHECK(unchanged());
  for (isa p : depthkv_test::supported_paths()) {
    const scoped_isa use(p);
    require_error([&] { compact_rows(kv.head(0), span<const index_t>(unsorted)); }, {"depthkv::compact_rows"});
    CHECK(unchanged());
  }
}
