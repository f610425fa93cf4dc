// The transformer pass shared by minillama::session (a dense depthkv::kv_cache) and
// minillama::paged_session (a sequence of a depthkv::paged_cache): one template over the KV
// store, so both run the same arithmetic and give bit-identical logits for the same cache rows.
//
// A Store provides, for layer l of the forward call:
//   void append(l, kv_view<const float> k, kv_view<const float> v, span<const pos_t> positions)
//   head_rows head(l, g)   // kv head g's cached keys, values, positions (ascending), rows n
//   void after_layer(l, const layer_record&)
//   void drop_before(l, pos_t first_kept, span<size_t> dropped)  // local layers: drop leading
//       rows below first_kept (the paged store whole blocks only), dropped[g] = rows of head g
//
// Local layers (config::window(l) = W > 0): the query at position p sees keys k with
// p - k < W; rows before a call's first window are skipped, and after the call the layer keeps
// only the rows at positions >= next - W (the last W tokens).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "depthkv/error.hpp"
#include "depthkv/view/kv_view.hpp"
#include "minillama/session.hpp"

namespace minillama::detail {

// kv head g's cached rows as attention reads them: [n][head_dim] with row strides.
struct head_rows {
  const float* keys = nullptr;
  std::size_t key_stride = 0;
  const float* values = nullptr;
  std::size_t value_stride = 0;
  depthkv::span<const depthkv::pos_t> positions;
  std::size_t n = 0;
};

using cmap = Eigen::Map<const matrix, 0, Eigen::OuterStride<>>;

// out.row(i) = w .* x.row(i) / sqrt(mean(x.row(i)^2) + eps)  (llama2.c rmsnorm)
inline matrix rmsnorm(const matrix& x, const vector& w, float eps) {
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
inline void rope(matrix& x, int n_heads, int hd, const std::vector<float>& cs, const std::vector<float>& sn) {
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

inline double mean_cosine(const matrix& a, const matrix& b) {
  double acc = 0;
  for (Eigen::Index i = 0; i < a.rows(); ++i) {
    const double na = a.row(i).cast<double>().norm(), nb = b.row(i).cast<double>().norm();
    const double dot = a.row(i).cast<double>().dot(b.row(i).cast<double>());
    acc += (na > 0 && nb > 0) ? std::clamp(dot / (na * nb), -1.0, 1.0) : 0.0;  // rounding may pass 1
  }
  return a.rows() ? acc / static_cast<double>(a.rows()) : 0.0;
}

// Attention of the call's n queries q [n][dim] over every kv head's cached rows; fills out
// [n][dim] and what opt asks of rec. Query i sees the rows with positions in
// (qpos[i] - W, qpos[i]] for a local layer (W = c.window(layer)), <= qpos[i] otherwise; scores
// are soft-capped (c.attn_softcap) before the softmax. Rows before the first query's window
// take no part in the products (probability 0 in rec), so a store that keeps a few extra
// leading rows (paged blocks) computes exactly what the dense one does.
template <class Store>
void attention(const config& c, Store& store, std::size_t layer, const matrix& q, std::size_t n,
               const std::vector<depthkv::pos_t>& qpos, const forward_options& opt, layer_record& rec, matrix& out) {
  const int hd = c.head_dim(), group = c.n_heads / c.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const depthkv::pos_t W = c.window(layer);
  const bool capped = c.attn_softcap.has_value();
  const float cap = capped ? *c.attn_softcap : 1.0f, inv_cap = 1.0f / cap;
  const auto nn = static_cast<Eigen::Index>(n);
  const std::size_t w = std::min(opt.window, n);
  rec.window = w;
  if (w) {
    rec.window_positions.assign(qpos.end() - static_cast<std::ptrdiff_t>(w), qpos.end());
    rec.probs.resize(static_cast<std::size_t>(c.n_heads));
    rec.queries.resize(static_cast<std::size_t>(c.n_heads));
  }
  if (opt.column_sums) rec.column_sums.resize(static_cast<std::size_t>(c.n_kv_heads));
  std::vector<std::size_t> lo(n), vis(n);  // query i sees rows [lo[i], vis[i]) (indices past `first`)
  matrix s;
  for (int g = 0; g < c.n_kv_heads; ++g) {
    const head_rows H = store.head(layer, static_cast<std::size_t>(g));
    const auto& P = H.positions;
    auto below = [&](depthkv::pos_t p) {  // rows with position < p
      return static_cast<std::size_t>(std::lower_bound(P.begin(), P.end(), p) - P.begin());
    };
    // Rows [0, first) are outside every query's window (qpos ascends): left out of the products.
    const std::size_t first = W > 0 ? below(qpos[0] - W + 1) : 0;
    const auto rows = static_cast<Eigen::Index>(H.n - first), skip = static_cast<Eigen::Index>(first);
    const cmap Km(H.keys + first * H.key_stride, rows, hd, Eigen::OuterStride<>(static_cast<Eigen::Index>(H.key_stride)));
    const cmap Vm(H.values + first * H.value_stride, rows, hd,
                  Eigen::OuterStride<>(static_cast<Eigen::Index>(H.value_stride)));
    for (std::size_t i = 0; i < n; ++i) {
      vis[i] = static_cast<std::size_t>(std::upper_bound(P.begin(), P.end(), qpos[i]) - P.begin()) - first;
      lo[i] = W > 0 ? std::min(below(qpos[i] - W + 1) - first, vis[i]) : 0;
    }
    if (opt.column_sums) rec.column_sums[static_cast<std::size_t>(g)].assign(H.n, 0.0f);
    for (int j = 0; j < group; ++j) {
      const int h = g * group + j;
      s.noalias() = (q.middleCols(h * hd, hd) * scale) * Km.transpose();
      for (std::size_t i = 0; i < n; ++i) {
        float* r = s.row(static_cast<Eigen::Index>(i)).data();
        const std::size_t a = lo[i], m = vis[i];
        if (capped)
          for (std::size_t t = a; t < m; ++t) r[t] = cap * std::tanh(r[t] * inv_cap);
        float mx = -std::numeric_limits<float>::infinity();
        for (std::size_t t = a; t < m; ++t) mx = std::max(mx, r[t]);
        float sum = 0;
        for (std::size_t t = a; t < m; ++t) sum += (r[t] = std::exp(r[t] - mx));
        const float inv = sum > 0 ? 1.0f / sum : 0.0f;
        for (std::size_t t = a; t < m; ++t) r[t] *= inv;
        for (std::size_t t = 0; t < a; ++t) r[t] = 0.0f;
        for (std::size_t t = m; t < static_cast<std::size_t>(rows); ++t) r[t] = 0.0f;
      }
      out.middleCols(h * hd, hd).noalias() = s * Vm;
      if (w) {
        auto& pr = rec.probs[static_cast<std::size_t>(h)];
        if (first == 0) {
          pr = s.bottomRows(static_cast<Eigen::Index>(w));
        } else {  // [window][all rows of the head]: the skipped leading rows got nothing
          pr = matrix::Zero(static_cast<Eigen::Index>(w), static_cast<Eigen::Index>(H.n));
          pr.rightCols(rows) = s.bottomRows(static_cast<Eigen::Index>(w));
        }
        rec.queries[static_cast<std::size_t>(h)] =
            q.block(nn - static_cast<Eigen::Index>(w), h * hd, static_cast<Eigen::Index>(w), hd);
      }
      if (opt.column_sums) {
        auto& cs = rec.column_sums[static_cast<std::size_t>(g)];
        for (Eigen::Index i = 0; i < nn; ++i)
          for (Eigen::Index t = 0; t < rows; ++t) cs[static_cast<std::size_t>(t + skip)] += s(i, t);
      }
    }
  }
}

// After a call of a local layer: drops the rows no later query sees beyond the last W tokens
// (positions < next - W) and the same leading columns of rec, which keeps indexing the rows.
template <class Store>
void trim_window(const config& c, Store& store, std::size_t layer, std::size_t next, layer_record& rec) {
  const int W = c.window(layer);
  if (W <= 0) return;
  const std::size_t group = static_cast<std::size_t>(c.n_heads / c.n_kv_heads);
  std::vector<std::size_t> dropped(static_cast<std::size_t>(c.n_kv_heads));
  store.drop_before(layer, static_cast<depthkv::pos_t>(next) - W, depthkv::span<std::size_t>(dropped));
  for (std::size_t g = 0; g < dropped.size(); ++g) {
    const std::size_t d = dropped[g];
    if (d == 0) continue;
    for (std::size_t j = 0; j < group && g * group + j < rec.probs.size(); ++j) {
      matrix& pr = rec.probs[g * group + j];
      const Eigen::Index keep = pr.cols() - static_cast<Eigen::Index>(std::min<std::size_t>(d, pr.cols()));
      pr = matrix(pr.rightCols(keep));
    }
    if (g < rec.column_sums.size()) {
      auto& cs = rec.column_sums[g];
      cs.erase(cs.begin(), cs.begin() + static_cast<std::ptrdiff_t>(std::min(d, cs.size())));
    }
  }
}

// Runs `tokens` (validated by the caller) at positions pos, pos+1, ... through every layer,
// appending their keys and values to `store`; returns logits as session::forward does.
template <class Store>
matrix forward_tokens(const model& m, Store& store, depthkv::span<const int> tokens, std::size_t pos,
                      const forward_options& opt, std::vector<layer_record>& records, double& attn_seconds) {
  const config& c = m.cfg;
  const std::size_t n = tokens.size();
  const int d = c.dim, hd = c.head_dim(), nh = c.n_heads, nkv = c.n_kv_heads, half = hd / 2;
  const auto L = static_cast<std::size_t>(c.n_layers);

  std::vector<depthkv::pos_t> qpos(n);
  std::vector<float> cs(n * static_cast<std::size_t>(half)), sn(cs.size());
  for (std::size_t i = 0; i < n; ++i) {
    qpos[i] = static_cast<depthkv::pos_t>(pos + i);
    for (int j = 0; j < half; ++j) {
      const double a = static_cast<double>(qpos[i]) * c.rope_freq(j);
      cs[i * half + j] = static_cast<float>(std::cos(a));
      sn[i * half + j] = static_cast<float>(std::sin(a));
    }
  }

  matrix x(static_cast<Eigen::Index>(n), d);
  for (std::size_t i = 0; i < n; ++i) x.row(static_cast<Eigen::Index>(i)) = m.token_embedding.row(tokens[i]);

  for (std::size_t l = 0; l < L; ++l) {
    const layer_weights& W = m.layers[l];
    layer_record& rec = records[l];
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
    store.append(l, view::nhd(k.data(), shape), view::nhd(v.data(), shape), depthkv::span<const depthkv::pos_t>(qpos));
    matrix att(static_cast<Eigen::Index>(n), d);
    const auto t0 = std::chrono::steady_clock::now();
    attention(c, store, l, q, n, qpos, opt, rec, att);
    attn_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    matrix h = x + att * W.wo.transpose();
    if (opt.cosine) rec.cos_attention = mean_cosine(x, h);
    xn = rmsnorm(h, W.ffn_norm, c.norm_eps);
    matrix gate = xn * W.w1.transpose();
    const matrix up = xn * W.w3.transpose();
    gate = gate.unaryExpr([](float g) { return g / (1.0f + std::exp(-g)); }).cwiseProduct(up);
    matrix out = h + gate * W.w2.transpose();
    if (opt.cosine) rec.cos_layer = mean_cosine(x, out);
    x = std::move(out);
    store.after_layer(l, rec);
    trim_window(c, store, l, pos + n, rec);
  }

  const Eigen::Index first = opt.all_logits ? 0 : static_cast<Eigen::Index>(n) - 1;
  const matrix last = x.bottomRows(static_cast<Eigen::Index>(n) - first);
  const matrix xn = rmsnorm(last, m.final_norm, c.norm_eps);
  return xn * m.output_weights().transpose();
}

// The checks every forward call makes before it changes anything.
inline void check_forward(const char* where, const config& c, depthkv::span<const int> tokens, std::size_t pos) {
  // checked again here: the caller may have edited the model's config after constructing it
  c.validate(where);
  const std::size_t n = tokens.size();
  DEPTHKV_CHECK(n > 0, where, "tokens is empty");
  for (std::size_t i = 0; i < n; ++i)
    DEPTHKV_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, where, "tokens[", i, "] = ", tokens[i],
                  " is outside the vocabulary [0, ", c.vocab_size, ")");
  DEPTHKV_CHECK(pos + n <= static_cast<std::size_t>(std::numeric_limits<depthkv::pos_t>::max()), where, "position ",
                pos + n, " leaves the int32 range");
}

}  // namespace minillama::detail
