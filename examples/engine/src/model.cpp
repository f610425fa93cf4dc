// minillama model: config validation, shapes, deterministic random weights.
#include "minillama/model.hpp"

#include <cmath>

#include "depthkv/error.hpp"

namespace minillama {

void config::validate(const std::string& where) const {
  const char* w = where.c_str();
  constexpr int kMax = 1 << 20;  // far above any real width; keeps products in 64-bit range
  DEPTHKV_CHECK(dim > 0 && dim <= kMax, w, "dim must be in [1, ", kMax, "], got ", dim);
  DEPTHKV_CHECK(hidden_dim > 0 && hidden_dim <= kMax, w, "hidden_dim must be in [1, ", kMax, "], got ", hidden_dim);
  DEPTHKV_CHECK(n_layers > 0 && n_layers <= 4096, w, "n_layers must be in [1, 4096], got ", n_layers);
  DEPTHKV_CHECK(n_heads > 0 && n_heads <= dim, w, "n_heads must be in [1, dim = ", dim, "], got ", n_heads);
  DEPTHKV_CHECK(dim % n_heads == 0, w, "dim (", dim, ") is not a multiple of n_heads (", n_heads, ")");
  DEPTHKV_CHECK(head_dim() % 2 == 0, w, "head_dim = dim / n_heads = ", head_dim(), " must be even for RoPE");
  DEPTHKV_CHECK(n_kv_heads > 0 && n_kv_heads <= n_heads, w, "n_kv_heads must be in [1, n_heads = ", n_heads,
                "], got ", n_kv_heads);
  DEPTHKV_CHECK(n_heads % n_kv_heads == 0, w, "n_heads (", n_heads, ") is not a multiple of n_kv_heads (",
                n_kv_heads, ")");
  DEPTHKV_CHECK(vocab_size > 0 && vocab_size <= (1 << 24), w, "vocab_size must be in [1, 2^24], got ", vocab_size);
  DEPTHKV_CHECK(seq_len >= 0, w, "seq_len must be >= 0, got ", seq_len);
  DEPTHKV_CHECK(std::isfinite(rope_theta) && rope_theta > 0, w, "rope_theta must be finite and > 0, got ", rope_theta);
  DEPTHKV_CHECK(rope_dim >= 0 && rope_dim <= head_dim() && rope_dim % 2 == 0, w,
                "rope_dim must be even and in [0, head_dim = ", head_dim(), "] (0 = head_dim), got ", rope_dim);
  DEPTHKV_CHECK(std::isfinite(norm_eps) && norm_eps >= 0, w, "norm_eps must be finite and >= 0, got ", norm_eps);
  DEPTHKV_CHECK(sliding_window >= 0, w, "sliding_window must be >= 0 (0 = no window), got ", sliding_window);
  DEPTHKV_CHECK(local_layers.empty() || sliding_window > 0, w, "local_layers is set but sliding_window is 0");
  DEPTHKV_CHECK(local_layers.empty() || local_layers.size() == static_cast<std::size_t>(n_layers), w,
                "local_layers has ", local_layers.size(), " entries, expected n_layers = ", n_layers, " (or none)");
  DEPTHKV_CHECK(!attn_softcap || (std::isfinite(*attn_softcap) && *attn_softcap > 0), w,
                "attn_softcap must be finite and > 0 when set, got ", attn_softcap ? *attn_softcap : 0.0f);
}

int config::window(std::size_t layer) const noexcept {
  if (sliding_window <= 0) return 0;
  if (local_layers.empty()) return sliding_window;
  return layer < local_layers.size() && local_layers[layer] ? sliding_window : 0;
}

bool config::has_local_layers() const noexcept {
  for (int l = 0; l < n_layers; ++l)
    if (window(static_cast<std::size_t>(l)) > 0) return true;
  return false;
}

std::vector<bool> local_layer_pattern(int n_layers, int period) {
  constexpr const char* where = "minillama::local_layer_pattern";
  DEPTHKV_CHECK(n_layers >= 0, where, "n_layers must be >= 0, got ", n_layers);
  DEPTHKV_CHECK(period >= 0, where, "period must be >= 0 (0 = every layer local), got ", period);
  std::vector<bool> local(static_cast<std::size_t>(n_layers));
  for (int l = 0; l < n_layers; ++l) local[static_cast<std::size_t>(l)] = period == 0 || (l + 1) % period != 0;
  return local;
}

double config::rope_freq(int i) const noexcept {
  const int rd = rotary_dim();
  return 2 * i < rd ? std::pow(static_cast<double>(rope_theta), -2.0 * i / rd) : 0.0;
}

model model::zeros(const config& cfg) {
  cfg.validate("minillama::model::zeros");
  model m;
  m.cfg = cfg;
  const int d = cfg.dim, kv = cfg.kv_dim(), h = cfg.hidden_dim;
  m.token_embedding = matrix::Zero(cfg.vocab_size, d);
  m.layers.resize(static_cast<std::size_t>(cfg.n_layers));
  for (auto& L : m.layers) {
    L.attn_norm = vector::Zero(d);
    L.wq = matrix::Zero(d, d);
    L.wk = matrix::Zero(kv, d);
    L.wv = matrix::Zero(kv, d);
    L.wo = matrix::Zero(d, d);
    L.ffn_norm = vector::Zero(d);
    L.w1 = matrix::Zero(h, d);
    L.w2 = matrix::Zero(d, h);
    L.w3 = matrix::Zero(h, d);
  }
  m.final_norm = vector::Zero(d);
  if (!cfg.shared_classifier) m.classifier = matrix::Zero(cfg.vocab_size, d);
  return m;
}

void model::check_shapes(const std::string& where) const {
  cfg.validate(where);
  const char* w = where.c_str();
  const Eigen::Index d = cfg.dim, kv = cfg.kv_dim(), h = cfg.hidden_dim, V = cfg.vocab_size;
  auto mat = [&](const matrix& m, Eigen::Index r, Eigen::Index c, const char* name, std::size_t l) {
    DEPTHKV_CHECK(m.rows() == r && m.cols() == c, w, name, " of layer ", l, " has shape [", m.rows(), "][",
                  m.cols(), "], expected [", r, "][", c, "]");
  };
  auto vec = [&](const vector& v, Eigen::Index n, const char* name, std::size_t l) {
    DEPTHKV_CHECK(v.size() == n, w, name, " of layer ", l, " has ", v.size(), " entries, expected ", n);
  };
  DEPTHKV_CHECK(token_embedding.rows() == V && token_embedding.cols() == d, w, "token_embedding has shape [",
                token_embedding.rows(), "][", token_embedding.cols(), "], expected [", V, "][", d, "]");
  DEPTHKV_CHECK(layers.size() == static_cast<std::size_t>(cfg.n_layers), w, "model has ", layers.size(),
                " layers, config says ", cfg.n_layers);
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto& L = layers[l];
    vec(L.attn_norm, d, "attn_norm", l);
    mat(L.wq, d, d, "wq", l);
    mat(L.wk, kv, d, "wk", l);
    mat(L.wv, kv, d, "wv", l);
    mat(L.wo, d, d, "wo", l);
    vec(L.ffn_norm, d, "ffn_norm", l);
    mat(L.w1, h, d, "w1", l);
    mat(L.w2, d, h, "w2", l);
    mat(L.w3, h, d, "w3", l);
  }
  DEPTHKV_CHECK(final_norm.size() == d, w, "final_norm has ", final_norm.size(), " entries, expected ", d);
  if (!cfg.shared_classifier)
    DEPTHKV_CHECK(classifier.rows() == V && classifier.cols() == d, w, "classifier has shape [", classifier.rows(),
                  "][", classifier.cols(), "], expected [", V, "][", d, "]");
}

std::size_t model::weight_bytes() const noexcept {
  std::size_t n = static_cast<std::size_t>(token_embedding.size() + final_norm.size() + classifier.size());
  for (const auto& L : layers)
    n += static_cast<std::size_t>(L.attn_norm.size() + L.wq.size() + L.wk.size() + L.wv.size() + L.wo.size() +
                                  L.ffn_norm.size() + L.w1.size() + L.w2.size() + L.w3.size());
  return n * sizeof(float);
}

std::uint64_t splitmix64(std::uint64_t& state) noexcept {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float uniform_pm1(std::uint64_t& state) noexcept {
  // 24 random bits -> k * 2^-23 - 1, exact in f32.
  const auto k = static_cast<std::int32_t>(splitmix64(state) >> 40);
  return static_cast<float>(k - (1 << 23)) * (1.0f / static_cast<float>(1 << 23));
}

model make_random_model(const config& cfg, std::uint64_t seed) {
  model m = model::zeros(cfg);
  std::uint64_t st = seed;
  auto fill = [&](float* p, Eigen::Index n, float scale) {
    for (Eigen::Index i = 0; i < n; ++i) p[i] = uniform_pm1(st) * scale;
  };
  auto fill_norm = [&](vector& v) {
    for (Eigen::Index i = 0; i < v.size(); ++i) v[i] = 1.0f + 0.25f * uniform_pm1(st);
  };
  auto inv_sqrt = [](int n) { return static_cast<float>(1.0 / std::sqrt(static_cast<double>(n))); };
  const float sd = inv_sqrt(cfg.dim), sh = inv_sqrt(cfg.hidden_dim);
  fill(m.token_embedding.data(), m.token_embedding.size(), 1.0f);
  for (auto& L : m.layers) fill_norm(L.attn_norm);
  for (auto& L : m.layers) fill(L.wq.data(), L.wq.size(), sd);
  for (auto& L : m.layers) fill(L.wk.data(), L.wk.size(), sd);
  for (auto& L : m.layers) fill(L.wv.data(), L.wv.size(), sd);
  for (auto& L : m.layers) fill(L.wo.data(), L.wo.size(), sd);
  for (auto& L : m.layers) fill_norm(L.ffn_norm);
  for (auto& L : m.layers) fill(L.w1.data(), L.w1.size(), sd);
  for (auto& L : m.layers) fill(L.w2.data(), L.w2.size(), sh);
  for (auto& L : m.layers) fill(L.w3.data(), L.w3.size(), sd);
  fill_norm(m.final_norm);
  if (!cfg.shared_classifier) fill(m.classifier.data(), m.classifier.size(), sd);
  return m;
}

}  // namespace minillama
