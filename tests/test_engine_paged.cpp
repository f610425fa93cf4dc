// minillama over paged memory: a paged_session gives the same logits as a dense session, before
// and after pruning (token-granular: the same policy and counts; block-granular: the dense cache
// retaining the same tokens), many sessions share one pool, and every block comes back.
#include <cstdint>
#include <memory>
#include <vector>

#include "catch.hpp"
#include "depthkv/prune.hpp"
#include "minillama/model.hpp"
#include "minillama/paged_session.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

using namespace minillama;
using paged = depthkv::paged_cache<float>;

namespace {

config small_config() {
  config c;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 50;
  c.seq_len = 256;
  return c;
}

std::vector<int> tokens_for(std::size_t n, int vocab, std::uint64_t seed) {
  std::vector<int> t;
  for (std::size_t i = 0; i < n; ++i) t.push_back(static_cast<int>(splitmix64(seed) % static_cast<std::uint64_t>(vocab)));
  return t;
}

paged make_cache(const config& c, std::size_t pool_blocks, std::size_t block_size,
                 depthkv::pool_scope scope = depthkv::pool_scope::per_layer) {
  return paged(depthkv::paged_cache_shape(depthkv::layers{static_cast<std::size_t>(c.n_layers)},
                                          depthkv::heads{static_cast<std::size_t>(c.n_kv_heads)},
                                          depthkv::dim{static_cast<std::size_t>(c.head_dim())},
                                          depthkv::blocks{pool_blocks}, depthkv::block_tokens{block_size}, scope));
}

// Every (layer, head) of the two caches holds the same positions, keys and values, in order.
void require_same_rows(const depthkv::kv_cache<float>& dense, const paged_session& p) {
  const auto& sh = p.cache().shape();
  for (std::size_t l = 0; l < sh.n_layers; ++l)
    for (std::size_t h = 0; h < sh.n_kv_heads; ++h) {
      const std::size_t n = dense.length(l, h);
      REQUIRE(p.cache().length(p.sequence(), l, h) == n);
      for (std::size_t t = 0; t < n; ++t) {
        REQUIRE(p.cache().position(p.sequence(), l, h, t) == dense.positions(l, h)[t]);
        for (std::size_t d = 0; d < sh.head_dim; ++d) {
          REQUIRE(p.cache().key_row(p.sequence(), l, h, t)[d] == dense.keys(l, h).row(t)[d]);
          REQUIRE(p.cache().value_row(p.sequence(), l, h, t)[d] == dense.values(l, h).row(t)[d]);
        }
      }
    }
}

// Pool blocks in use equal what the live tables need: ceil(length / block_size) per head.
std::size_t blocks_implied(const paged& c, std::size_t sequence) {
  std::size_t b = 0;
  for (std::size_t l = 0; l < c.shape().n_layers; ++l)
    for (std::size_t h = 0; h < c.shape().n_kv_heads; ++h)
      b += (c.length(sequence, l, h) + c.block_size() - 1) / c.block_size();
  return b;
}

std::size_t blocks_used(const paged& c) { return c.blocks_used(); }

}  // namespace

TEST_CASE("paged_session: same logits as a dense session, in chunks, with sessions interleaved", "[engine][paged]") {
  const model m = make_random_model(small_config(), 3);
  const auto toks = tokens_for(45, m.cfg.vocab_size, 1);
  for (const auto scope : {depthkv::pool_scope::per_layer, depthkv::pool_scope::shared})
  for (const std::size_t B : {1, 16, 64}) {
    INFO("block size " << B << (scope == depthkv::pool_scope::shared ? ", one pool for all layers" : ""));
    paged cache = make_cache(m.cfg, 600, B, scope);
    {
      session dense(m);
      paged_session a(m, cache), other(m, cache);  // `other` takes blocks between a's, so a's ids interleave
      const depthkv::span<const int> all(toks);
      for (const auto& [lo, n] : std::vector<std::pair<std::size_t, std::size_t>>{{0, 20}, {20, 1}, {21, 24}}) {
        forward_options o;
        o.all_logits = true;
        const matrix ld = dense.forward(all.subspan(lo, n), o);
        const matrix lp = a.forward(all.subspan(lo, n), o);
        REQUIRE(ld == lp);
        (void)other.forward(all.subspan(lo, n));
      }
      for (int step = 0; step < 5; ++step) {
        const int t = toks[static_cast<std::size_t>(step)];
        REQUIRE(dense.decode(t) == a.decode(t));
      }
      require_same_rows(dense.cache(), a);
      CHECK(blocks_used(cache) == blocks_implied(cache, a.sequence()) + blocks_implied(cache, other.sequence()));
      CHECK(a.blocks_held() == blocks_implied(cache, a.sequence()));
    }
    CHECK(blocks_used(cache) == 0);  // destructors returned every block
  }
}

TEST_CASE("paged_session: after a token-granular prune, the same rows and logits as the dense prune",
          "[engine][paged][prune]") {
  const model m = make_random_model(small_config(), 9);
  const auto toks = tokens_for(52, m.cfg.vocab_size, 2);
  const std::vector<std::size_t> keep{20, 9, 31};
  for (const char* name : {"snapkv", "h2o", "knorm", "tova", "streaming"})
    for (const auto mode : {depthkv::granularity::per_head, depthkv::granularity::shared, depthkv::granularity::adaptive})
      for (const std::size_t B : {1, 16}) {
        INFO(name << " mode " << static_cast<int>(mode) << " block size " << B);
        depthkv::policy_config cfg;
        cfg.n_sink = 2;
        cfg.n_recent = 4;
        cfg.window = 8;
        depthkv::prune_options opt;
        opt.mode = mode;
        forward_options pre;
        pre.window = 8;
        pre.column_sums = true;
        paged cache = make_cache(m.cfg, 400, B);
        session dense(m);
        paged_session p(m, cache);
        REQUIRE(dense.prefill(toks, pre) == p.prefill(toks, pre));
        prune_with_policy(dense, keep, name, cfg, opt);
        const std::size_t before = blocks_used(cache);
        const std::size_t released = prune_paged_with_policy(p, keep, name, cfg, opt);
        require_same_rows(dense.cache(), p);
        CHECK(blocks_used(cache) == blocks_implied(cache, p.sequence()));
        CHECK(before - released == blocks_used(cache));
        CHECK(released > 0);
        for (int step = 0; step < 4; ++step) {
          const int t = toks[static_cast<std::size_t>(step) + 3];
          REQUIRE(dense.decode(t) == p.decode(t));
        }
      }
}

TEST_CASE("paged_session: a block-granular prune equals the dense cache retaining the kept blocks' tokens",
          "[engine][paged][prune]") {
  const model m = make_random_model(small_config(), 17);
  const auto toks = tokens_for(70, m.cfg.vocab_size, 5);
  const std::size_t B = 8;
  const std::vector<std::size_t> keep_blocks{3, 5, 4};  // of ceil(70 / 8) = 9 per head
  for (const char* name : {"snapkv", "knorm", "h2o"})
    for (const auto agg : {depthkv::block_score::sum, depthkv::block_score::max}) {
      INFO(name << (agg == depthkv::block_score::sum ? " sum" : " max"));
      depthkv::policy_config cfg;
      cfg.n_sink = 2;
      cfg.n_recent = 4;
      cfg.window = 8;
      forward_options pre;
      pre.window = 8;
      pre.column_sums = true;
      paged cache = make_cache(m.cfg, 200, B);
      session dense(m);
      paged_session p(m, cache);
      REQUIRE(dense.prefill(toks, pre) == p.prefill(toks, pre));
      const std::size_t released = prune_paged_blocks_with_policy(p, keep_blocks, name, cfg, agg);
      CHECK(released == std::size_t{3 * 2 * 9 - 2 * (3 + 5 + 4)});
      // The dense reference keeps exactly the tokens whose positions the paged blocks kept.
      const auto& sh = cache.shape();
      for (std::size_t l = 0; l < sh.n_layers; ++l)
        for (std::size_t h = 0; h < sh.n_kv_heads; ++h) {
          std::vector<depthkv::index_t> kept;
          const std::size_t n = cache.length(p.sequence(), l, h);
          CHECK(n == (keep_blocks[l] - 1) * B + (70 - 8 * B));  // whole blocks, the last one partial
          CHECK(cache.position(p.sequence(), l, h, 0) == 0);      // the first block is protected
          CHECK(cache.position(p.sequence(), l, h, n - 1) == 69);  // and the last
          for (std::size_t t = 0; t < n; ++t)
            kept.push_back(static_cast<depthkv::index_t>(cache.position(p.sequence(), l, h, t)));
          dense.cache().retain(l, h, depthkv::span<const depthkv::index_t>(kept));
        }
      require_same_rows(dense.cache(), p);
      for (int step = 0; step < 4; ++step) REQUIRE(dense.decode(toks[static_cast<std::size_t>(step)]) == p.decode(toks[static_cast<std::size_t>(step)]));
    }
}

TEST_CASE("paged_session: errors change nothing", "[engine][paged][errors]") {
  const model m = make_random_model(small_config(), 4);
  const auto toks = tokens_for(30, m.cfg.vocab_size, 7);
  paged cache = make_cache(m.cfg, 4, 16);  // per layer 4 blocks: two per kv head, 32 tokens
  paged_session p(m, cache);
  (void)p.prefill(depthkv::span<const int>(toks).first(20));
  const std::size_t used = blocks_used(cache);
  CHECK(p.fits(12));
  CHECK_FALSE(p.fits(13));
  CHECK(p.blocks_needed(13) == 3 * 2);
  paged_session q(m, cache);
  CHECK_FALSE(q.fits(1));  // the pool is full
  const std::vector<int> more(13, 1);
  REQUIRE_THROWS_WITH(p.forward(more), Catch::Contains("13 tokens need 2 blocks of layer 0's pool, which has 0 free"));
  CHECK(p.position() == 20);
  CHECK(blocks_used(cache) == used);
  CHECK(cache.length(p.sequence(), 2, 1) == 20);
  forward_options hooked;
  hooked.hook = [](std::size_t, depthkv::kv_cache<float>&, const layer_record&) {};
  REQUIRE_THROWS_WITH(p.forward(more, hooked), Catch::Contains("hook is not supported"));
  const std::vector<int> bad{1, 99};
  REQUIRE_THROWS_WITH(p.forward(bad), Catch::Contains("tokens[1] = 99 is outside the vocabulary"));
  CHECK(p.position() == 20);
  paged wrong = paged(depthkv::paged_cache_shape(depthkv::layers{3}, depthkv::heads{4}, depthkv::dim{8},
                                                 depthkv::blocks{4}, depthkv::block_tokens{4}));
  REQUIRE_THROWS_WITH(paged_session(m, wrong), Catch::Contains("the cache holds 3 layers x 4 kv heads x head_dim 8, the model has 3 x 2 x 8"));
  // After the failure the session still decodes where it was: 12 more tokens fit.
  (void)p.forward(depthkv::span<const int>(toks).subspan(20, 10));
  CHECK(p.position() == 30);
}

TEST_CASE("paged_session: one pool shared by all layers lets a layer with a larger budget take more",
          "[engine][paged][prune]") {
  const model m = make_random_model(small_config(), 23);
  const auto toks = tokens_for(64, m.cfg.vocab_size, 3);
  // 3 layers x 2 heads x 4 blocks of 16 = 24 blocks for one unpruned 64-token prompt.
  paged cache = make_cache(m.cfg, 40, 16, depthkv::pool_scope::shared);
  paged_session a(m, cache);
  (void)a.prefill(toks);
  CHECK(cache.blocks_used() == 24);
  CHECK(cache.blocks_used(0) == 24);  // every layer reports the one pool
  CHECK(cache.blocks_free(2) == 16);
  depthkv::policy_config cfg;
  cfg.n_sink = 2;
  cfg.n_recent = 4;
  // Layer 2 keeps everything, layers 0 and 1 one block per head: 2 + 2 + 8 blocks.
  CHECK(prune_paged_with_policy(a, {16, 16, 64}, "knorm", cfg) == 12);
  CHECK(cache.blocks_used() == 12);
  paged_session b(m, cache);
  CHECK(b.fits(64));  // 24 blocks of 28 free
  (void)b.prefill(toks);
  CHECK(cache.blocks_used() == 36);
  paged_session c(m, cache);
  CHECK_FALSE(c.fits(64));
  REQUIRE_THROWS_WITH(c.prefill(toks), Catch::Contains("64 tokens need 24 blocks of the shared pool, which has 4 free"));
  CHECK(cache.blocks_used() == 36);
  // Per-layer pools of (about) the same memory, 13 blocks each: layer 2's pool cannot take b's
  // prompt after a kept all of layer 2, although 15 blocks are free in all.
  paged split = make_cache(m.cfg, 13, 16);
  paged_session a2(m, split), b2(m, split);
  (void)a2.prefill(toks);
  (void)prune_paged_with_policy(a2, {16, 16, 64}, "knorm", cfg);
  CHECK(split.blocks_free() == 39 - 12);
  CHECK_FALSE(b2.fits(64));
}
