// minillama::session forward pass.
#include "minillama/session.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "depthkv/view/kv_view.hpp"
#include "depthkv/error.hpp"

namespace minillama {
namespace {

using cmap = Eigen::Map<const matrix, 0, Eigen::OuterStride<>>;

// out.row(i) = w .* x.row(i) / sqrt(mean(x.row(i)^2) + eps)  (llama2.c rmsnorm)
matrix rmsnorm(const matrix& x, const vector& w, float eps) {
  matrix out(x.rows(), x.cols());
  const float inv_d = 1.0f / static_cast<float>(x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const float ss = x.row(i).squaredNorm() * inv_d + eps;
    const float s = 1.0f / std::sqrt(ss);
    out.row(i) = (x.row(i) * s).cwiseProduct(w.transpose());
  }
  return out;
}

// Rotates adjacent pairs (2i, 2i+1) of every head of row r by the angle with cosine/sine
// cs/sn[r][i] (pos * config::rope_freq(i)).
void rope(matrix& x, int n_heads, int hd, const std::vector<float>& cs, const std::vector<float>& sn) {
  const int half = hd / 2;
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    float* row = x.row(r).data();
    const float* c = cs.data() + r * half;
    const float* s = sn.data() + r * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = row + h * hd;
      for (int i = 0; i < half; ++i) {
        const float v0 = v[2 * i], v1 = v[2 * i + 1];
        v[2 * i] = v0 * c[i] - v1 * s[i];
        v[2 * i + 1] = v0 * s[i] + v1 * c[i];
      }
    }
  }
}

double mean_cosine(const matrix& a, const matrix& b) {
  double acc = 0;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    const double na = a.row(i).cast<double>().norm(), nb = b.row(i).cast<double>().norm();
    const double dot = a.row(i).cast<double>().dot(b.row(i).cast<double>());
    acc += (na > 0 && nb > 0) ? std::clamp(dot / (na * nb), -1.0, 1.0) : 0.0;  // rounding may pass 1
  }
  return a.rows() ? acc / static_cast<double>(a.rows()) : 0.0;
}

}  // namespace

session::session(const model& m, std::size_t initial_capacity) : m_(&m) {
  m.check_shapes("minillama::session");
  const config& c = m.cfg;
  cache_ = depthkv::kv_cache<float>(depthkv::layers{static_cast<std::size_t>(c.n_layers)},
                                    depthkv::heads{static_cast<std::size_t>(c.n_kv_heads)},
                                    depthkv::dim{static_cast<std::size_t>(c.head_dim())}, initial_capacity);
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
  constexpr const char* where = "minillama::session::forward";
  const config& c = m_->cfg;
  const std::size_t n = tokens.size();
  DEPTHKV_CHECK(n > 0, where, "tokens is empty");
  for (std::size_t i = 0; i < n; ++i)
    DEPTHKV_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, where, "tokens[", i, "] = ", tokens[i],
                  " is outside the vocabulary [0, ", c.vocab_size, ")");
  DEPTHKV_CHECK(pos_ + n <= static_cast<std::size_t>(std::numeric_limits<depthkv::pos_t>::max()), where,
                "position ", pos_ + n, " leaves the int32 range");
  const int d = c.dim, hd = c.head_dim(), nh = c.n_heads, nkv = c.n_kv_heads, half = hd / 2;
  const auto L = static_cast<std::size_t>(c.n_layers);

  // Room for n more rows in every head (geometric growth; pruned heads may be shorter).
  for (std::size_t l = 0; l < L; ++l) {
    std::size_t need = 0, cap = std::numeric_limits<std::size_t>::max();
    for (std::size_t g = 0; g < cache_.n_kv_heads(); ++g) {
      need = std::max(need, cache_.length(l, g) + n);
      cap = std::min(cap, cache_.capacity(l, g));
    }
    if (need > cap) cache_.reserve(l, std::max(need, cap + cap / 2));
  }

  std::vector<depthkv::pos_t> qpos(n);
  std::vector<float> cs(n * static_cast<std::size_t>(half)), sn(cs.size());
  for (std::size_t i = 0; i < n; ++i) {
    qpos[i] = static_cast<depthkv::pos_t>(pos_ + i);
    for (int j = 0; j < half; ++j) {
      const double a = static_cast<double>(qpos[i]) * c.rope_freq(j);
      cs[i * half + j] = static_cast<float>(std::cos(a));
      sn[i * half + j] = static_cast<float>(std::sin(a));
    }
  }

  matrix x(static_cast<Eigen::Index>(n), d);
  for (std::size_t i = 0; i < n; ++i) x.row(static_cast<Eigen::Index>(i)) = m_->token_embedding.row(tokens[i]);

  for (std::size_t l = 0; l < L; ++l) {
    const layer_weights& W = m_->layers[l];
    layer_record& rec = records_[l];
    rec = layer_record{};
    matrix xn = rmsnorm(x, W.attn_norm, c.norm_eps);
    matrix q = xn * W.wq.transpose();
    matrix k = xn * W.wk.transpose();
    matrix v = xn * W.wv.transpose();
    rope(q, nh, hd, cs, sn);
    rope(k, nkv, hd, cs, sn);
    using view = depthkv::kv_view<const float>;
    const depthkv::kv_shape shape(depthkv::heads{static_cast<std::size_t>(nkv)}, depthkv::tokens{n},
                                  depthkv::dim{static_cast<std::size_t>(hd)});
    cache_.append(l, view::nhd(k.data(), shape), view::nhd(v.data(), shape), depthkv::span<const depthkv::pos_t>(qpos));
    matrix att(static_cast<Eigen::Index>(n), d);
    const auto t0 = std::chrono::steady_clock::now();
    attention(l, q, n, qpos, opt, att);
    attn_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    matrix h = x + att * W.wo.transpose();
    if (opt.cosine) rec.cos_attention = mean_cosine(x, h);
    xn = rmsnorm(h, W.ffn_norm, c.norm_eps);
    matrix gate = xn * W.w1.transpose();
    const matrix up = xn * W.w3.transpose();
    gate = gate.unaryExpr([](float g) { return g / (1.0f + std::exp(-g)); }).cwiseProduct(up);
    matrix out = h + gate * W.w2.transpose();
    if (opt.cosine) rec.cos_layer = mean_cosine(x, out);
    x = std::move(out);
    if (opt.hook) opt.hook(l, cache_, rec);
  }
  pos_ += n;

  const Eigen::Index first = opt.all_logits ? 0 : static_cast<Eigen::Index>(n) - 1;
  const matrix last = x.bottomRows(static_cast<Eigen::Index>(n) - first);
  const matrix xn = rmsnorm(last, m_->final_norm, c.norm_eps);
  return xn * m_->output_weights().transpose();
}

void session::attention(std::size_t layer, const matrix& q, std::size_t n, const std::vector<depthkv::pos_t>& qpos,
                        const forward_options& opt, matrix& out) {
  const config& c = m_->cfg;
  const int hd = c.head_dim(), group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto nn = static_cast<Eigen::Index>(n);
  layer_record& rec = records_[layer];
  const std::size_t w = std::min(opt.window, n);
  rec.window = w;
  if (w) {
    rec.window_positions.assign(qpos.end() - static_cast<std::ptrdiff_t>(w), qpos.end());
    rec.probs.resize(static_cast<std::size_t>(c.n_heads));
    rec.queries.resize(static_cast<std::size_t>(c.n_heads));
  }
  if (opt.column_sums) rec.column_sums.resize(static_cast<std::size_t>(c.n_kv_heads));
  std::vector<std::size_t> vis(n);
  matrix s;
  for (int g = 0; g < c.n_kv_heads; ++g) {
    const auto K = cache_.keys(layer, static_cast<std::size_t>(g));
    const auto V = cache_.values(layer, static_cast<std::size_t>(g));
    const auto P = cache_.positions(layer, static_cast<std::size_t>(g));
    const auto rows = static_cast<Eigen::Index>(K.n);
    const cmap Km(K.data, rows, hd, Eigen::OuterStride<>(K.stride));
    const cmap Vm(V.data, rows, hd, Eigen::OuterStride<>(V.stride));
    for (std::size_t i = 0; i < n; ++i)
      vis[i] = static_cast<std::size_t>(std::upper_bound(P.begin(), P.end(), qpos[i]) - P.begin());
    if (opt.column_sums) rec.column_sums[static_cast<std::size_t>(g)].assign(K.n, 0.0f);
    for (int j = 0; j < group; ++j) {
      const int h = g * group + j;
      s.noalias() = (q.middleCols(h * hd, hd) * scale) * Km.transpose();
      for (std::size_t i = 0; i < n; ++i) {
        float* r = s.row(static_cast<Eigen::Index>(i)).data();
        const std::size_t m = vis[i];
        float mx = -std::numeric_limits<float>::infinity();
        for (std::size_t t = 0; t < m; ++t) mx = std::max(mx, r[t]);
        float sum = 0;
        for (std::size_t t = 0; t < m; ++t) sum += (r[t] = std::exp(r[t] - mx));
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        for (std::size_t t = 0; t < m; ++t) r[t] *= inv;
        for (std::size_t t = m; t < K.n; ++t) r[t] = 0.0f;
      }
      out.middleCols(h * hd, hd).noalias() = s * Vm;
      if (w) {
        rec.probs[static_cast<std::size_t>(h)] = s.bottomRows(static_cast<Eigen::Index>(w));
        rec.queries[static_cast<std::size_t>(h)] = q.block(nn - static_cast<Eigen::Index>(w), h * hd,
                                                           static_cast<Eigen::Index>(w), hd);
      }
      if (opt.column_sums) {
        auto& cs = rec.column_sums[static_cast<std::size_t>(g)];
        for (Eigen::Index i = 0; i < nn; ++i)
          for (Eigen::Index t = 0; t < rows; ++t) cs[static_cast<std::size_t>(t)] += s(i, t);
      }
    }
  }
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
