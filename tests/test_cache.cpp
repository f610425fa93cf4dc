// kv_view and kv_cache against a naive reference: append, retain, memory, errors.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "depthkv/cache/kv_cache.hpp"
#include "depthkv/error.hpp"
#include "test_util.hpp"

using namespace depthkv;
using depthkv_test::require_error;
using depthkv_test::uniform_int;

namespace {

// Naive model of one head: rows as vectors of float values (exact in every element type,
// since values are small integers).
struct ref_head {
  std::vector<std::vector<float>> k, v;
  std::vector<pos_t> pos;
};
using ref_cache = std::vector<std::vector<ref_head>>;  // [layer][head]

// Engine-owned buffer for n tokens in layout l, filled with distinct small integers.
template <class T>
struct engine_buffer {
  std::vector<T> data;
  kv_view<T> view;
  engine_buffer(layout l, std::size_t n_heads, std::size_t n_tokens, std::size_t head_dim, float base) {
    // Pad HND with spare capacity to exercise non-dense strides.
    const std::size_t cap = l == layout::hnd ? n_tokens + 3 : n_tokens;
    data.assign(n_heads * cap * head_dim, T(0.0f));
    const kv_shape shape(heads{n_heads}, tokens{n_tokens}, dim{head_dim});
    view = l == layout::nhd ? kv_view<T>::nhd(data.data(), shape) : kv_view<T>::hnd(data.data(), shape, cap);
    float x = base;
    for (std::size_t h = 0; h < n_heads; ++h)
      for (std::size_t t = 0; t < n_tokens; ++t)
        for (std::size_t d = 0; d < head_dim; ++d) view.row(h, t)[d] = T(x = std::fmod(x + 1.0f, 2000.0f));
  }
};

template <class T>
void require_equal(const kv_cache<T>& c, const ref_cache& ref) {
  for (std::size_t l = 0; l < c.n_layers(); ++l)
    for (std::size_t h = 0; h < c.n_kv_heads(); ++h) {
      const ref_head& r = ref[l][h];
      REQUIRE(c.length(l, h) == r.pos.size());
      auto pos = c.positions(l, h);
      REQUIRE(std::equal(pos.begin(), pos.end(), r.pos.begin()));
      auto k = c.keys(l, h);
      auto v = c.values(l, h);
      for (std::size_t t = 0; t < r.pos.size(); ++t)
        for (std::size_t d = 0; d < c.head_dim(); ++d) {
          REQUIRE(float(k.row(t)[d]) == r.k[t][d]);
          REQUIRE(float(v.row(t)[d]) == r.v[t][d]);
        }
    }
}

template <class T>
std::vector<index_t> random_keep(std::size_t n) {
  std::vector<index_t> keep;
  const std::size_t want = uniform_int(0, n);
  std::vector<index_t> all(n);
  std::iota(all.begin(), all.end(), 0u);
  std::shuffle(all.begin(), all.end(), depthkv_test::rng());
  keep.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(want));
  std::sort(keep.begin(), keep.end());
  return keep;
}

// Snapshot of everything observable, to prove a failed call changed nothing.
template <class T>
struct snapshot {
  std::vector<std::size_t> len, cap;
  std::vector<std::vector<float>> data;
  std::vector<std::vector<pos_t>> pos;
  std::size_t used = 0, reserved = 0;
  explicit snapshot(const kv_cache<T>& c) : used(c.bytes_in_use()), reserved(c.bytes_reserved()) {
    for (std::size_t l = 0; l < c.n_layers(); ++l)
      for (std::size_t h = 0; h < c.n_kv_heads(); ++h) {
        len.push_back(c.length(l, h));
        cap.push_back(c.capacity(l, h));
        auto p = c.positions(l, h);
        pos.emplace_back(p.begin(), p.end());
        std::vector<float> d;
        for (auto rows : {c.keys(l, h), c.values(l, h)})
          for (std::size_t t = 0; t < rows.n; ++t)
            for (std::size_t i = 0; i < rows.dim; ++i) d.push_back(float(rows.row(t)[i]));
        data.push_back(std::move(d));
      }
  }
  bool operator==(const snapshot& o) const {
    return len == o.len && cap == o.cap && data == o.data && pos == o.pos && used == o.used &&
           reserved == o.reserved;
  }
};

}  // namespace

TEMPLATE_TEST_CASE("kv_cache append/retain match a naive reference", "[cache]", float, f16, bf16) {
  using T = TestType;
  for (int round = 0; round < 40; ++round) {
    const std::size_t L = uniform_int(1, 4), H = uniform_int(1, 4), D = uniform_int(1, 20);
    std::vector<std::size_t> caps(L);
    for (auto& c : caps) c = uniform_int(0, 80);
    kv_cache<T> cache(layers{L}, heads{H}, dim{D}, caps);
    ref_cache ref(L, std::vector<ref_head>(H));
    std::vector<pos_t> next_pos(L, 0);
    float base = 0;
    for (int step = 0; step < 12; ++step) {
      const std::size_t l = uniform_int(0, L - 1);
      const int op = static_cast<int>(uniform_int(0, 3));
      if (op <= 1) {  // append a batch (prefill) or one token (decode) in a random layout
        std::size_t room = caps[l];
        for (std::size_t h = 0; h < H; ++h) room = std::min(room, caps[l] - ref[l][h].pos.size());
        const std::size_t n = op == 0 ? uniform_int(0, room) : std::min<std::size_t>(1, room);
        const layout lay = uniform_int(0, 1) ? layout::nhd : layout::hnd;
        engine_buffer<T> kb(lay, H, n, D, base), vb(lay, H, n, D, base + 500);
        base += 37;
        const pos_t first = next_pos[l] + static_cast<pos_t>(uniform_int(0, 3));
        if (n == 1 && lay == layout::hnd && uniform_int(0, 1)) {
          std::vector<T> kr(H * D), vr(H * D);
          for (std::size_t h = 0; h < H; ++h)
            for (std::size_t d = 0; d < D; ++d) kr[h * D + d] = kb.view.row(h, 0)[d], vr[h * D + d] = vb.view.row(h, 0)[d];
          cache.append_token(l, kr.data(), vr.data(), first);
        } else {
          cache.append(l, kv_view<const T>(kb.view), kv_view<const T>(vb.view), first);
        }
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t t = 0; t < n; ++t) {
            std::vector<float> kr(D), vr(D);
            for (std::size_t d = 0; d < D; ++d) kr[d] = float(kb.view.row(h, t)[d]), vr[d] = float(vb.view.row(h, t)[d]);
            ref[l][h].k.push_back(kr);
            ref[l][h].v.push_back(vr);
            ref[l][h].pos.push_back(first + static_cast<pos_t>(t));
          }
        if (n) next_pos[l] = first + static_cast<pos_t>(n);
      } else if (op == 2) {  // retain one list for the whole layer: an error when heads differ
        std::size_t min_len = SIZE_MAX, max_len = 0;
        for (std::size_t h = 0; h < H; ++h)
          min_len = std::min(min_len, ref[l][h].pos.size()), max_len = std::max(max_len, ref[l][h].pos.size());
        const auto keep = random_keep<T>(min_len);
        if (min_len != max_len) {
          require_error([&] { cache.retain(l, keep); }, {"depthkv::kv_cache::retain", "heads of different lengths"});
          require_equal(cache, ref);
          continue;
        }
        cache.retain(l, keep);
        for (std::size_t h = 0; h < H; ++h) {
          ref_head r;
          for (index_t i : keep) r.k.push_back(ref[l][h].k[i]), r.v.push_back(ref[l][h].v[i]), r.pos.push_back(ref[l][h].pos[i]);
          ref[l][h] = r;
        }
      } else {  // retain one head with its own list
        const std::size_t h = uniform_int(0, H - 1);
        const auto keep = random_keep<T>(ref[l][h].pos.size());
        cache.retain(l, h, keep);
        ref_head r;
        for (index_t i : keep) r.k.push_back(ref[l][h].k[i]), r.v.push_back(ref[l][h].v[i]), r.pos.push_back(ref[l][h].pos[i]);
        ref[l][h] = r;
      }
      require_equal(cache, ref);
    }
    // Memory accounting follows lengths and capacities.
    std::size_t rows = 0, cap_rows = 0;
    for (std::size_t l = 0; l < L; ++l)
      for (std::size_t h = 0; h < H; ++h) rows += ref[l][h].pos.size(), cap_rows += caps[l];
    const std::size_t row_bytes = 2 * D * sizeof(T) + sizeof(pos_t);
    REQUIRE(cache.bytes_in_use() == rows * row_bytes);
    REQUIRE(cache.bytes_reserved() == cap_rows * row_bytes);
    cache.shrink_to_fit();
    REQUIRE(cache.bytes_reserved() == rows * row_bytes);
    require_equal(cache, ref);
  }
}

TEST_CASE("kv_cache layers keep their own capacity and shrink_to_fit frees per head", "[cache]") {
  const std::vector<std::size_t> caps{100, 10};
  kv_cache<float> c(layers{2}, heads{2}, dim{8}, caps);
  const std::size_t row = 2 * 8 * sizeof(float) + sizeof(pos_t);
  REQUIRE(c.bytes_reserved(0) == 2 * 100 * row);
  REQUIRE(c.bytes_reserved(1) == 2 * 10 * row);
  std::vector<float> buf(2 * 100 * 8, 1.0f);
  c.append(0, kv_view<const float>::hnd(buf.data(), kv_shape(heads{2}, tokens{100}, dim{8})), kv_view<const float>::hnd(buf.data(), kv_shape(heads{2}, tokens{100}, dim{8})), 0);
  const std::vector<index_t> keep_h0{0, 5, 99}, keep_h1{1};
  c.retain(0, 0, keep_h0);
  c.retain(0, 1, keep_h1);
  REQUIRE(c.length(0, 0) == 3);
  REQUIRE(c.length(0, 1) == 1);
  REQUIRE(c.max_length(0) == 3);
  REQUIRE(c.bytes_in_use(0) == 4 * row);
  c.shrink_to_fit(0);
  REQUIRE(c.capacity(0, 0) == 3);
  REQUIRE(c.capacity(0, 1) == 1);
  REQUIRE(c.bytes_reserved(0) == 4 * row);
  REQUIRE(c.positions(0, 0)[2] == 99);
  c.reserve(0, 50);
  REQUIRE(c.capacity(0, 0) == 50);
  REQUIRE(c.positions(0, 0)[1] == 5);  // reserve keeps the rows
  require_error([&] { (void)c.length(0); }, {"differ in length", "head 1: 1"});
}

TEST_CASE("kv_view strides address NHD and HND buffers", "[cache][view]") {
  // NHD [token][head][dim]: element (h, t, d) at t*H*D + h*D + d.
  std::vector<float> nhd(5 * 3 * 4);
  std::iota(nhd.begin(), nhd.end(), 0.0f);
  auto a = kv_view<float>::nhd(nhd.data(), kv_shape(heads{3}, tokens{5}, dim{4}));
  REQUIRE(a.row(2, 4)[1] == float(4 * 12 + 2 * 4 + 1));
  auto hnd = kv_view<float>::hnd(nhd.data(), kv_shape(heads{3}, tokens{5}, dim{4}));
  REQUIRE(hnd.row(2, 4)[1] == float(2 * 20 + 4 * 4 + 1));
  auto padded = kv_view<float>::hnd(nhd.data(), kv_shape(heads{3}, tokens{2}, dim{4}), 5);
  REQUIRE(padded.row(1, 1)[0] == float(1 * 20 + 4));
  REQUIRE(padded.head(1).stride == 4);
}

TEST_CASE("kv_view rejects bad shapes and overlapping strides", "[cache][view][errors]") {
  std::vector<float> b(64);
  require_error([&] { kv_view<float>(b.data(), kv_shape(heads{2}, tokens{2}, dim{0}), kv_strides{4, 4}); }, {"head_dim", "0"});
  require_error([&] { kv_view<float>(nullptr, kv_shape(heads{2}, tokens{2}, dim{4}), kv_strides{8, 4}); }, {"data is null"});
  require_error([&] { kv_view<float>(b.data(), kv_shape(heads{2}, tokens{2}, dim{4}), kv_strides{8, 2}); }, {"overlap", "token 2"});
  require_error([&] { kv_view<float>(b.data(), kv_shape(heads{2}, tokens{3}, dim{4}), kv_strides{8, 4}); }, {"overlap", "head 8"});
  require_error([&] { kv_view<float>::hnd(b.data(), kv_shape(heads{2}, tokens{4}, dim{4}), 3); }, {"token_capacity (3)"});
  REQUIRE_NOTHROW(kv_view<float>(nullptr, kv_shape(heads{0}, tokens{5}, dim{4}), kv_strides{0, 0}));
}

TEMPLATE_TEST_CASE("kv_cache errors name the argument and leave the cache unchanged", "[cache][errors]", float,
                   f16, bf16) {
  using T = TestType;
  kv_cache<T> c(layers{2}, heads{2}, dim{4}, 6);
  std::vector<T> buf(2 * 6 * 4, T(1.0f));
  auto kv4 = kv_view<const T>::hnd(buf.data(), kv_shape(heads{2}, tokens{4}, dim{4}));
  c.append(0, kv4, kv4, 10);
  const std::vector<index_t> keep_first{0, 2};
  c.retain(0, 1, keep_first);  // heads now differ: 4 and 2 rows
  const snapshot<T> before(c);
  auto unchanged = [&] { REQUIRE(snapshot<T>(c) == before); };

  const std::vector<index_t> out_of_range{0, 4};
  require_error([&] { c.retain(0, 0, out_of_range); }, {"keep[1] = 4", "out of range"});
  unchanged();
  const std::vector<index_t> past_short_head{0, 3};  // valid for head 0, not head 1
  // A layer-wide list on heads of different lengths would name different tokens per head.
  require_error([&] { c.retain(0, past_short_head); }, {"depthkv::kv_cache::retain", "heads of different lengths (layer 0 head 0: 4, head 1: 2 rows)"});
  unchanged();
  const std::vector<index_t> fits_both{0, 1};  // in range for both heads, still ambiguous
  require_error([&] { c.retain(0, fits_both); }, {"heads of different lengths", "retain(layer, head, keep)"});
  unchanged();
  const std::vector<index_t> not_ascending{1, 1};
  require_error([&] { c.retain(0, 0, not_ascending); }, {"strictly ascending", "keep[1] = 1"});
  unchanged();
  const std::vector<index_t> descending{2, 0};
  require_error([&] { c.retain(0, 0, descending); }, {"strictly ascending"});
  unchanged();
  require_error([&] { c.retain(2, keep_first); }, {"layer 2", "n_layers 2"});
  unchanged();
  require_error([&] { c.retain(0, 5, keep_first); }, {"head 5", "n_kv_heads 2"});
  unchanged();
  require_error([&] { (void)c.keys(7, 0); }, {"layer 7"});
  unchanged();
  // Head 0 holds 4 of 6; 3 more would overflow it.
  auto kv3 = kv_view<const T>::hnd(buf.data(), kv_shape(heads{2}, tokens{3}, dim{4}));
  require_error([&] { c.append(0, kv3, kv3, 100); }, {"appending 3 tokens", "head 0", "capacity 6"});
  unchanged();
  auto wrong_dim = kv_view<const T>::hnd(buf.data(), kv_shape(heads{2}, tokens{1}, dim{3}));
  require_error([&] { c.append(0, wrong_dim, wrong_dim, 100); }, {"k has shape [2][1][3]", "expected [2][n][4]"});
  unchanged();
  auto wrong_heads = kv_view<const T>::hnd(buf.data(), kv_shape(heads{1}, tokens{1}, dim{4}));
  auto kv1 = kv_view<const T>::hnd(buf.data(), kv_shape(heads{2}, tokens{1}, dim{4}));
  require_error([&] { c.append(0, kv1, wrong_heads, 100); }, {"v has shape [1][1][4]"});
  unchanged();
  auto kv2 = kv_view<const T>::hnd(buf.data(), kv_shape(heads{2}, tokens{2}, dim{4}));
  require_error([&] { c.append(0, kv1, kv2, 100); }, {"k has 1 tokens but v has 2"});
  unchanged();
  require_error([&] { c.append(0, kv1, kv1, 12); }, {"positions[0] = 12", "last position 13"});
  unchanged();
  const std::vector<pos_t> bad_pos{20, 20};
  require_error([&] { c.append(0, kv2, kv2, bad_pos); }, {"strictly ascending", "positions[1] = 20"});
  unchanged();
  const std::vector<pos_t> short_pos{20};
  require_error([&] { c.append(0, kv2, kv2, short_pos); }, {"positions has 1 entries, expected 2"});
  unchanged();
  require_error([&] { c.append(0, kv1, kv1, -1); }, {"first_position -1"});
  unchanged();
  require_error([&] { c.reserve(3, 10); }, {"layer 3"});
  unchanged();
  require_error([&] { kv_cache<T>(layers{0}, heads{1}, dim{1}, 1); }, {"n_layers must be > 0"});
  require_error([&] { kv_cache<T>(layers{1}, heads{0}, dim{1}, 1); }, {"n_kv_heads must be > 0"});
  require_error([&] { kv_cache<T>(layers{1}, heads{1}, dim{0}, 1); }, {"head_dim must be > 0"});
  const std::vector<std::size_t> two_caps{1, 2};
  require_error([&] { kv_cache<T>(layers{3}, heads{1}, dim{1}, two_caps); }, {"capacity_per_layer has 2 entries", "n_layers = 3"});
}

TEMPLATE_TEST_CASE("kv_cache drop_oldest/drop_before interleaved with append/retain match a naive reference",
                   "[cache][window]", float, f16, bf16) {
  using T = TestType;
  for (int round = 0; round < 30; ++round) {
    const std::size_t H = uniform_int(1, 3), D = uniform_int(1, 9), cap = uniform_int(4, 40);
    kv_cache<T> cache(layers{1}, heads{H}, dim{D}, cap);
    ref_cache ref(1, std::vector<ref_head>(H));
    pos_t next = 0;
    float base = 0;
    for (int step = 0; step < 60; ++step) {
      const int op = static_cast<int>(uniform_int(0, 5));
      auto& R = ref[0];
      if (op <= 1) {  // append up to the room left (may move the live rows back to the base)
        std::size_t room = cap;
        for (std::size_t h = 0; h < H; ++h) room = std::min(room, cap - R[h].pos.size());
        const std::size_t n = uniform_int(0, room);
        engine_buffer<T> kb(layout::nhd, H, n, D, base), vb(layout::nhd, H, n, D, base + 500);
        base += 37;
        cache.append(0, kv_view<const T>(kb.view), kv_view<const T>(vb.view), next);
        for (std::size_t h = 0; h < H; ++h)
          for (std::size_t t = 0; t < n; ++t) {
            std::vector<float> kr(D), vr(D);
            for (std::size_t d = 0; d < D; ++d) kr[d] = float(kb.view.row(h, t)[d]), vr[d] = float(vb.view.row(h, t)[d]);
            R[h].k.push_back(kr), R[h].v.push_back(vr), R[h].pos.push_back(next + static_cast<pos_t>(t));
          }
        next += static_cast<pos_t>(n) + static_cast<pos_t>(uniform_int(0, 2));
      } else if (op == 2) {  // drop the same count from every head
        std::size_t m = SIZE_MAX;
        for (std::size_t h = 0; h < H; ++h) m = std::min(m, R[h].pos.size());
        const std::size_t n = uniform_int(0, m);
        cache.drop_oldest(0, n);
        for (auto& r : R) r.k.erase(r.k.begin(), r.k.begin() + static_cast<std::ptrdiff_t>(n)),
                          r.v.erase(r.v.begin(), r.v.begin() + static_cast<std::ptrdiff_t>(n)),
                          r.pos.erase(r.pos.begin(), r.pos.begin() + static_cast<std::ptrdiff_t>(n));
      } else if (op == 3) {  // drop by position: heads drop different counts
        const pos_t first = static_cast<pos_t>(uniform_int(0, static_cast<std::size_t>(next) + 1));
        std::vector<std::size_t> dropped(H);
        cache.drop_before(0, first, dropped);
        for (std::size_t h = 0; h < H; ++h) {
          auto& r = R[h];
          const auto d = static_cast<std::size_t>(std::lower_bound(r.pos.begin(), r.pos.end(), first) - r.pos.begin());
          REQUIRE(dropped[h] == d);
          r.k.erase(r.k.begin(), r.k.begin() + static_cast<std::ptrdiff_t>(d));
          r.v.erase(r.v.begin(), r.v.begin() + static_cast<std::ptrdiff_t>(d));
          r.pos.erase(r.pos.begin(), r.pos.begin() + static_cast<std::ptrdiff_t>(d));
        }
      } else if (op == 4) {  // retain one head (rows start past the base)
        const std::size_t h = uniform_int(0, H - 1);
        const auto keep = random_keep<T>(R[h].pos.size());
        cache.retain(0, h, keep);
        ref_head r;
        for (index_t i : keep) r.k.push_back(R[h].k[i]), r.v.push_back(R[h].v[i]), r.pos.push_back(R[h].pos[i]);
        R[h] = r;
      } else if (uniform_int(0, 1)) {  // reallocate: rows move to a new base
        cache.shrink_to_fit();
        cache.reserve(0, cap);
      } else {
        const std::size_t h = uniform_int(0, H - 1);
        const std::size_t n = uniform_int(0, R[h].pos.size());
        cache.drop_oldest(0, h, n);
        R[h].k.erase(R[h].k.begin(), R[h].k.begin() + static_cast<std::ptrdiff_t>(n));
        R[h].v.erase(R[h].v.begin(), R[h].v.begin() + static_cast<std::ptrdiff_t>(n));
        R[h].pos.erase(R[h].pos.begin(), R[h].pos.begin() + static_cast<std::ptrdiff_t>(n));
      }
      require_equal(cache, ref);
      for (std::size_t h = 0; h < H; ++h) REQUIRE(cache.capacity(0, h) == cap);
    }
  }
}

TEST_CASE("kv_cache as a sliding-window ring: W rows, constant memory over thousands of decode steps",
          "[cache][window]") {
  constexpr std::size_t W = 128, H = 2, D = 4, steps = 5000;
  kv_cache<float> c(layers{2}, heads{H}, dim{D}, std::vector<std::size_t>{2 * W, 8});
  const std::size_t reserved = c.bytes_reserved();
  std::vector<float> row(H * D);
  std::size_t moves = 0;
  const float* last_base = c.keys(0, 0).data;
  for (std::size_t p = 0; p < steps; ++p) {
    if (c.length(0, 0) == W) c.drop_oldest(0, 1);  // the oldest row leaves as a new one arrives
    for (std::size_t h = 0; h < H; ++h)
      for (std::size_t d = 0; d < D; ++d) row[h * D + d] = static_cast<float>(p * 10 + h * 3 + d);
    c.append_token(0, row.data(), row.data(), static_cast<pos_t>(p));
    const std::size_t n = std::min(p + 1, W);
    REQUIRE(c.length(0) == n);
    REQUIRE(c.bytes_in_use(0) == H * n * c.row_bytes());
    REQUIRE(c.bytes_reserved() == reserved);  // never reallocates
    const float* base = c.keys(0, 0).data;
    moves += base < last_base;  // the live rows went back to the buffer's start
    last_base = base;
    if (p % 97 == 0 || p + 1 == steps)
      for (std::size_t h = 0; h < H; ++h) {
        const auto P = c.positions(0, h);
        const auto K = c.keys(0, h), V = c.values(0, h);
        for (std::size_t t = 0; t < n; ++t) {
          const std::size_t q = p + 1 - n + t;  // the last W positions, in order
          REQUIRE(P[t] == static_cast<pos_t>(q));
          for (std::size_t d = 0; d < D; ++d) {
            REQUIRE(K.row(t)[d] == static_cast<float>(q * 10 + h * 3 + d));
            REQUIRE(V.row(t)[d] == static_cast<float>(q * 10 + h * 3 + d));
          }
        }
      }
  }
  // capacity 2W: the W live rows are copied back once per W + 1 appends after the window filled
  CHECK(moves == (steps - 2 * W) / (W + 1) + 1);
  CHECK(c.capacity(0, 0) == 2 * W);
}

TEST_CASE("kv_cache drop_oldest / drop_before errors change nothing", "[cache][window][errors]") {
  kv_cache<float> c(layers{2}, heads{2}, dim{4}, 8);
  std::vector<float> buf(2 * 8 * 4, 1.0f);
  auto kv4 = kv_view<const float>::hnd(buf.data(), kv_shape(heads{2}, tokens{4}, dim{4}));
  c.append(0, kv4, kv4, 10);
  const std::vector<index_t> keep{0, 2};
  c.retain(0, 1, keep);  // head 0: 4 rows, head 1: 2
  const snapshot<float> before(c);
  require_error([&] { c.drop_oldest(0, 3); }, {"depthkv::kv_cache::drop_oldest", "n = 3", "length 2", "head 1"});
  REQUIRE(snapshot<float>(c) == before);
  require_error([&] { c.drop_oldest(0, 0, 5); }, {"n = 5", "length 4", "head 0"});
  require_error([&] { c.drop_oldest(2, 1); }, {"layer 2", "n_layers 2"});
  require_error([&] { c.drop_oldest(0, 2, 1); }, {"head 2", "n_kv_heads 2"});
  std::vector<std::size_t> wrong(3);
  require_error([&] { c.drop_before(0, 12, wrong); }, {"depthkv::kv_cache::drop_before", "dropped has 3 entries"});
  REQUIRE(snapshot<float>(c) == before);
  c.drop_before(0, 12);  // head 0 keeps 12, 13; head 1 (10, 12) keeps 12
  REQUIRE(c.length(0, 0) == 2);
  REQUIRE(c.length(0, 1) == 1);
  REQUIRE(c.positions(0, 1)[0] == 12);
  require_error([&] { c.append(0, kv4, kv4, 13); }, {"positions[0] = 13", "last position 13"});
}
