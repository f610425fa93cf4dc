// minillama::session forward pass.
#include "minillama/session.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "depthkv/error.hpp"
#include "depthkv/view/kv_view.hpp"
#include "forward.hpp"

namespace minillama {
namespace {

// session's KV store: the dense cache, grown geometrically; the hook after each layer.
struct dense_store {
  depthkv::kv_cache<float>& cache;
  const layer_hook& hook;
  void append(std::size_t l, depthkv::kv_view<const float> k, depthkv::kv_view<const float> v,
              depthkv::span<const depthkv::pos_t> positions) {
    cache.append(l, k, v, positions);
  }
  detail::head_rows head(std::size_t l, std::size_t g) const {
    const auto K = cache.keys(l, g), V = cache.values(l, g);
    return {K.data, static_cast<std::size_t>(K.stride), V.data, static_cast<std::size_t>(V.stride), cache.positions(l, g), K.n};
  }
  void after_layer(std::size_t l, const layer_record& rec) {
    if (hook) hook(l, cache, rec);
  }
  void drop_before(std::size_t l, depthkv::pos_t first_kept, depthkv::span<std::size_t> dropped) {
    cache.drop_before(l, first_kept, dropped);  // O(1) per head: moves the head's start
  }
};

// Rows a local layer holds between calls (the last W tokens) live in capacity 2W: the ring
// moves them back to the buffer's start once per W + 1 appends.
std::size_t ring_capacity(int window) { return 2 * static_cast<std::size_t>(window); }

}  // namespace

session::session(const model& m, std::size_t initial_capacity) : m_(&m) {
  m.check_shapes("minillama::session");
  const config& c = m.cfg;
  std::vector<std::size_t> caps(static_cast<std::size_t>(c.n_layers), initial_capacity);
  for (std::size_t l = 0; l < caps.size(); ++l)
    if (c.window(l) > 0) caps[l] = ring_capacity(c.window(l));
  cache_ = depthkv::kv_cache<float>(depthkv::layers{static_cast<std::size_t>(c.n_layers)},
                                    depthkv::heads{static_cast<std::size_t>(c.n_kv_heads)},
                                    depthkv::dim{static_cast<std::size_t>(c.head_dim())},
                                    depthkv::span<const std::size_t>(caps));
  records_.resize(static_cast<std::size_t>(c.n_layers));
}

void session::reset() {
  for (std::size_t l = 0; l < cache_.n_layers(); ++l) cache_.clear(l);
  pos_ = 0;
  for (auto& r : records_) r = layer_record{};
}

void session::set_position(std::size_t p) {
  constexpr const char* where = "minillama::session::set_position";
  DEPTHKV_CHECK(p <= static_cast<std::size_t>(std::numeric_limits<depthkv::pos_t>::max()), where, "position ", p,
                " leaves the int32 range");
  for (std::size_t l = 0; l < cache_.n_layers(); ++l)
    for (std::size_t g = 0; g < cache_.n_kv_heads(); ++g) {
      const auto P = cache_.positions(l, g);
      DEPTHKV_CHECK(P.empty() || static_cast<std::size_t>(P[P.size() - 1]) < p, where, "position ", p,
                    " is not above the cached position ", P.empty() ? 0 : P[P.size() - 1], " of layer ", l, " head ", g);
    }
  pos_ = p;
}

void session::prune(const layer_hook& fn) {
  DEPTHKV_CHECK(static_cast<bool>(fn), "minillama::session::prune", "the prune function is empty");
  for (std::size_t l = 0; l < cache_.n_layers(); ++l) fn(l, cache_, records_[l]);
}

vector session::prefill(depthkv::span<const int> tokens, const forward_options& opt) {
  forward_options o = opt;
  o.all_logits = false;
  matrix lg = forward(tokens, o);
  return lg.row(0).transpose();
}

vector session::decode(int token, const forward_options& opt) {
  forward_options o = opt;
  o.all_logits = false;
  matrix lg = forward(depthkv::span<const int>(&token, 1), o);
  return lg.row(0).transpose();
}

matrix session::forward(depthkv::span<const int> tokens, const forward_options& opt) {
  const config& c = m_->cfg;
  detail::check_forward("minillama::session::forward", c, tokens, pos_);
  const std::size_t n = tokens.size();
  // Local layers first drop the rows no query of this call sees (positions < pos - W + 1; dead
  // for every later call too, so this changes nothing observable if reserve then throws).
  for (std::size_t l = 0; l < cache_.n_layers(); ++l)
    if (const int W = c.window(l); W > 0)
      cache_.drop_before(l, static_cast<depthkv::pos_t>(pos_) - W + 1);
  // Room for n more rows in every head (geometric growth; pruned heads may be shorter; local
  // layers at least their ring capacity).
  for (std::size_t l = 0; l < cache_.n_layers(); ++l) {
    std::size_t need = 0, cap = std::numeric_limits<std::size_t>::max();
    for (std::size_t g = 0; g < cache_.n_kv_heads(); ++g) {
      need = std::max(need, cache_.length(l, g) + n);
      cap = std::min(cap, cache_.capacity(l, g));
    }
    if (const int W = c.window(l); W > 0) need = std::max(need, ring_capacity(W));
    if (need > cap) cache_.reserve(l, std::max(need, cap + cap / 2));
  }
  dense_store store{cache_, opt.hook};
  matrix logits = detail::forward_tokens(*m_, store, tokens, pos_, opt, records_, attn_seconds_);
  pos_ += n;
  // A long prefill grew a local layer past its ring: back to 2W (it now holds at most W rows).
  for (std::size_t l = 0; l < cache_.n_layers(); ++l)
    if (const int W = c.window(l); W > 0 && cache_.capacity(l, 0) > ring_capacity(W) &&
                                   cache_.max_length(l) <= static_cast<std::size_t>(W)) {
      cache_.shrink_to_fit(l);
      cache_.reserve(l, ring_capacity(W));
    }
  return logits;
}

std::vector<double> attention_entropy(const layer_record& rec) {
  std::vector<double> out;
  for (const matrix& p : rec.probs) {
    double acc = 0;
    for (Eigen::Index i = 0; i < p.rows(); ++i)
      for (Eigen::Index t = 0; t < p.cols(); ++t) {
        const double v = p(i, t);
        if (v > 0) acc -= v * std::log(v);
      }
    out.push_back(p.rows() ? acc / static_cast<double>(p.rows()) : 0.0);
  }
  return out;
}

int argmax(const vector& logits) {
  DEPTHKV_CHECK(logits.size() > 0, "minillama::argmax", "logits is empty");
  Eigen::Index best = 0;
  for (Eigen::Index i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return static_cast<int>(best);
}

std::vector<double> log_softmax(const float* logits, std::size_t n) {
  std::vector<double> out(n);
  double mx = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < n; ++i) mx = std::max(mx, static_cast<double>(logits[i]));
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<double>(logits[i]) - lse;
  return out;
}

int sample(const vector& logits, float temperature, std::uint64_t& rng_state) {
  if (!(temperature > 0)) return argmax(logits);
  const auto n = static_cast<std::size_t>(logits.size());
  DEPTHKV_CHECK(n > 0, "minillama::sample", "logits is empty");
  std::vector<float> scaled(n);
  for (std::size_t i = 0; i < n; ++i) scaled[i] = logits[static_cast<Eigen::Index>(i)] / temperature;
  const std::vector<double> lp = log_softmax(scaled.data(), n);
  const double r = static_cast<double>(splitmix64(rng_state) >> 11) * 0x1.0p-53;
  double cdf = 0;
  for (std::size_t i = 0; i < n; ++i) {
    cdf += std::exp(lp[i]);
    if (r < cdf) return static_cast<int>(i);
  }
  return static_cast<int>(n - 1);
}

}  // namespace minillama
