// minillama::paged_session forward pass (the shared template in forward.hpp).
#include "minillama/paged_session.hpp"

#include <limits>

#include "depthkv/error.hpp"
#include "forward.hpp"

namespace minillama {

// paged_session's KV store: appends into the sequence's blocks; attention reads a head's rows
// gathered into the session's scratch.
struct paged_store {
  paged_session& s;
  void append(std::size_t l, depthkv::kv_view<const float> k, depthkv::kv_view<const float> v,
              depthkv::span<const depthkv::pos_t> positions) {
    s.cache_->append(s.seq_, l, k, v, positions);
  }
  detail::head_rows head(std::size_t l, std::size_t g) {
    const std::size_t n = s.cache_->length(s.seq_, l, g), d = s.cache_->shape().head_dim;
    if (s.keys_.size() < n * d) {
      s.keys_.resize(n * d + n * d / 2);
      s.values_.resize(s.keys_.size());
      s.positions_.resize(s.keys_.size() / d);
    }
    s.cache_->copy_head(s.seq_, l, g, depthkv::span<float>(s.keys_), depthkv::span<float>(s.values_),
                        depthkv::span<depthkv::pos_t>(s.positions_));
    return {s.keys_.data(), d, s.values_.data(), d, depthkv::span<const depthkv::pos_t>(s.positions_.data(), n), n};
  }
  void after_layer(std::size_t, const layer_record&) {}
  void drop_before(std::size_t l, depthkv::pos_t first_kept, depthkv::span<std::size_t> dropped) {
    s.cache_->drop_blocks_before(s.seq_, l, first_kept, dropped);  // whole blocks back to the pool
  }
};

namespace {
// Local layers return the blocks whose rows no query from position `pos` on sees.
void drop_outside_windows(paged_session::cache_type& cache, paged_session::cache_type::sequence_id seq,
                          const config& c, std::size_t pos) {
  for (std::size_t l = 0; l < cache.shape().n_layers; ++l)
    if (const int W = c.window(l); W > 0) cache.drop_blocks_before(seq, l, static_cast<depthkv::pos_t>(pos) - W + 1);
}
}  // namespace

paged_session::paged_session(const model& m, cache_type& cache) : m_(&m), cache_(&cache) {
  constexpr const char* where = "minillama::paged_session";
  m.check_shapes(where);
  const config& c = m.cfg;
  const auto& sh = cache.shape();
  DEPTHKV_CHECK(sh.n_layers == static_cast<std::size_t>(c.n_layers) &&
                    sh.n_kv_heads == static_cast<std::size_t>(c.n_kv_heads) &&
                    sh.head_dim == static_cast<std::size_t>(c.head_dim()),
                where, "the cache holds ", sh.n_layers, " layers x ", sh.n_kv_heads, " kv heads x head_dim ", sh.head_dim,
                ", the model has ", c.n_layers, " x ", c.n_kv_heads, " x ", c.head_dim());
  seq_ = cache.add_sequence();
  records_.resize(static_cast<std::size_t>(c.n_layers));
}

paged_session::~paged_session() { cache_->free_sequence(seq_); }

std::size_t paged_session::blocks_needed(std::size_t n_tokens) const {
  std::size_t b = 0;
  for (std::size_t l = 0; l < cache_->shape().n_layers; ++l) b += cache_->blocks_needed(seq_, l, n_tokens);
  return b;
}

bool paged_session::fits(std::size_t n_tokens) const { return cache_->fits(seq_, n_tokens); }

std::size_t paged_session::blocks_held() const {
  std::size_t b = 0;
  for (std::size_t l = 0; l < cache_->shape().n_layers; ++l) b += cache_->blocks_held(seq_, l);
  return b;
}

void paged_session::set_position(std::size_t p) {
  constexpr const char* where = "minillama::paged_session::set_position";
  DEPTHKV_CHECK(p <= static_cast<std::size_t>(std::numeric_limits<depthkv::pos_t>::max()), where, "position ", p,
                " leaves the int32 range");
  for (std::size_t l = 0; l < cache_->shape().n_layers; ++l)
    for (std::size_t g = 0; g < cache_->shape().n_kv_heads; ++g) {
      const std::size_t n = cache_->length(seq_, l, g);
      const std::size_t last = n == 0 ? 0 : static_cast<std::size_t>(cache_->position(seq_, l, g, n - 1));
      DEPTHKV_CHECK(n == 0 || last < p, where, "position ", p, " is not above the cached position ", last,
                    " of layer ", l, " head ", g);
    }
  pos_ = p;
}

matrix paged_session::forward(depthkv::span<const int> tokens, const forward_options& opt) {
  constexpr const char* where = "minillama::paged_session::forward";
  detail::check_forward(where, m_->cfg, tokens, pos_);
  DEPTHKV_CHECK(!opt.hook, where, "forward_options.hook is not supported on paged sessions (prune between calls)");
  drop_outside_windows(*cache_, seq_, m_->cfg, pos_);  // dead rows: free before counting blocks
  if (!cache_->fits(seq_, tokens.size())) {
    const auto& sh = cache_->shape();
    if (sh.scope == depthkv::pool_scope::shared)
      DEPTHKV_CHECK(false, where, tokens.size(), " tokens need ", blocks_needed(tokens.size()),
                    " blocks of the shared pool, which has ", cache_->blocks_free(0), " free");
    for (std::size_t l = 0; l < sh.n_layers; ++l) {
      const std::size_t need = cache_->blocks_needed(seq_, l, tokens.size()), free = cache_->blocks_free(l);
      DEPTHKV_CHECK(need <= free, where, tokens.size(), " tokens need ", need, " blocks of layer ", l,
                    "'s pool, which has ", free, " free");
    }
  }
  paged_store store{*this};
  matrix logits = detail::forward_tokens(*m_, store, tokens, pos_, opt, records_, attn_seconds_);
  pos_ += tokens.size();
  return logits;
}

vector paged_session::prefill(depthkv::span<const int> tokens, const forward_options& opt) {
  forward_options o = opt;
  o.all_logits = false;
  return forward(tokens, o).row(0).transpose();
}

vector paged_session::decode(int token, const forward_options& opt) {
  forward_options o = opt;
  o.all_logits = false;
  return forward(depthkv::span<const int>(&token, 1), o).row(0).transpose();
}

}  // namespace minillama
