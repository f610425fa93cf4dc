// minillama writers.
#include "minillama/writers.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "depthkv/error.hpp"

namespace minillama {
namespace {

struct out_buf {
  std::vector<std::uint8_t> b;
  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void raw(const void* p, std::size_t n) {
    const auto* q = static_cast<const std::uint8_t*>(p);
    b.insert(b.end(), q, q + n);
  }
  void floats(const float* p, Eigen::Index n) { raw(p, static_cast<std::size_t>(n) * 4); }
  void str(const std::string& s) {
    put<std::uint64_t>(s.size());
    raw(s.data(), s.size());
  }
  void pad(std::size_t a) {
    while (b.size() % a) b.push_back(0);
  }
};

std::uint16_t f16_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); }
std::uint16_t bf16_bits(float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(x)); }

// Q8_0 block of 32: scale d = amax / 127 stored as f16, q = round(x / d).
void q8_0_block(const float* x, std::uint16_t& dbits, std::int8_t* q) {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  dbits = f16_bits(d);
  for (int j = 0; j < 32; ++j) q[j] = static_cast<std::int8_t>(std::lround(x[j] * id));
}

void round_matrix(matrix& w, ggml_type t) {
  float* p = w.data();
  const auto n = static_cast<std::size_t>(w.size());
  switch (t) {
    case ggml_type::f32: break;
    case ggml_type::f16:
      for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<float>(Eigen::half(p[i]));
      break;
    case ggml_type::bf16:
      for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<float>(Eigen::bfloat16(p[i]));
      break;
    case ggml_type::q8_0:
      DEPTHKV_CHECK(w.cols() % 32 == 0, "minillama::round_weights", "Q8_0 needs rows that are multiples of 32, got ",
                    w.cols());
      for (std::size_t b = 0; b < n / 32; ++b) {
        std::uint16_t d;
        std::int8_t q[32];
        q8_0_block(p + 32 * b, d, q);
        const float df = static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(d));
        for (int j = 0; j < 32; ++j) p[32 * b + static_cast<std::size_t>(j)] = df * static_cast<float>(q[j]);
      }
      break;
  }
}

}  // namespace

std::vector<std::uint8_t> write_llama2c(const model& m) {
  m.check_shapes("minillama::write_llama2c");
  const config& c = m.cfg;
  out_buf o;
  const std::int32_t h[7] = {c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                             c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len};
  for (auto v : h) o.put(v);
  o.floats(m.token_embedding.data(), m.token_embedding.size());
  for (const auto& L : m.layers) o.floats(L.attn_norm.data(), L.attn_norm.size());
  for (const auto& L : m.layers) o.floats(L.wq.data(), L.wq.size());
  for (const auto& L : m.layers) o.floats(L.wk.data(), L.wk.size());
  for (const auto& L : m.layers) o.floats(L.wv.data(), L.wv.size());
  for (const auto& L : m.layers) o.floats(L.wo.data(), L.wo.size());
  for (const auto& L : m.layers) o.floats(L.ffn_norm.data(), L.ffn_norm.size());
  for (const auto& L : m.layers) o.floats(L.w1.data(), L.w1.size());
  for (const auto& L : m.layers) o.floats(L.w2.data(), L.w2.size());
  for (const auto& L : m.layers) o.floats(L.w3.data(), L.w3.size());
  o.floats(m.final_norm.data(), m.final_norm.size());
  // freq_cis_real then freq_cis_imag, [seq_len][head_dim / 2]: the loader reads theta and
  // rope_dim back from them.
  const int half = c.head_dim() / 2;
  for (int part = 0; part < 2; ++part)
    for (int p = 0; p < c.seq_len; ++p)
      for (int i = 0; i < half; ++i) {
        const double a = p * c.rope_freq(i);
        o.put(static_cast<float>(part == 0 ? std::cos(a) : std::sin(a)));
      }
  if (!c.shared_classifier) o.floats(m.classifier.data(), m.classifier.size());
  return std::move(o.b);
}

std::vector<std::uint8_t> write_llama2c_tokenizer(const tokenizer& t) {
  out_buf o;
  std::int32_t max_len = 0;
  for (std::size_t i = 0; i < t.size(); ++i)
    max_len = std::max(max_len, static_cast<std::int32_t>(t.piece(static_cast<int>(i)).size()));
  o.put(max_len);
  for (std::size_t i = 0; i < t.size(); ++i) {
    const std::string& p = t.piece(static_cast<int>(i));
    o.put(t.score(static_cast<int>(i)));
    o.put(static_cast<std::int32_t>(p.size()));
    o.raw(p.data(), p.size());
  }
  return std::move(o.b);
}

void round_weights(model& m, ggml_type type) {
  round_matrix(m.token_embedding, type);
  for (auto& L : m.layers)
    for (matrix* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w1, &L.w2, &L.w3}) round_matrix(*w, type);
  if (!m.cfg.shared_classifier) round_matrix(m.classifier, type);
}

std::vector<std::uint8_t> write_gguf(const model& m, const tokenizer* vocab, const gguf_write_options& opt) {
  m.check_shapes("minillama::write_gguf");
  DEPTHKV_CHECK(opt.version == 2 || opt.version == 3, "minillama::write_gguf", "version must be 2 or 3, got ",
                opt.version);
  DEPTHKV_CHECK(opt.alignment > 0 && (opt.alignment & (opt.alignment - 1)) == 0, "minillama::write_gguf",
                "alignment must be a power of two, got ", opt.alignment);
  const config& c = m.cfg;
  if (opt.swa_period != 0) {
    const bool ok = c.sliding_window > 0 &&
                    (c.local_layers.empty() ? false : c.local_layers == local_layer_pattern(c.n_layers, static_cast<int>(opt.swa_period)));
    DEPTHKV_CHECK(ok, "minillama::write_gguf", "swa_period ", opt.swa_period,
                  " does not describe the model's local layers (sliding_window ", c.sliding_window, ")");
  }
  struct tensor {
    std::string name;
    const float* data;
    std::uint64_t cols, rows;
    ggml_type type;
  };
  std::vector<tensor> ts;
  auto mat = [&](std::string n, const matrix& w) {
    ts.push_back({std::move(n), w.data(), static_cast<std::uint64_t>(w.cols()), static_cast<std::uint64_t>(w.rows()),
                  opt.matrix_type});
  };
  auto vec = [&](std::string n, const vector& v) {
    ts.push_back({std::move(n), v.data(), static_cast<std::uint64_t>(v.size()), 1, ggml_type::f32});
  };
  mat("token_embd.weight", m.token_embedding);
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    const auto& L = m.layers[l];
    vec(b + "attn_norm.weight", L.attn_norm);
    mat(b + "attn_q.weight", L.wq);
    mat(b + "attn_k.weight", L.wk);
    mat(b + "attn_v.weight", L.wv);
    mat(b + "attn_output.weight", L.wo);
    vec(b + "ffn_norm.weight", L.ffn_norm);
    mat(b + "ffn_gate.weight", L.w1);
    mat(b + "ffn_down.weight", L.w2);
    mat(b + "ffn_up.weight", L.w3);
  }
  vec("output_norm.weight", m.final_norm);
  if (!c.shared_classifier) mat("output.weight", m.classifier);

  out_buf o;
  o.raw("GGUF", 4);
  o.put<std::uint32_t>(opt.version);
  o.put<std::uint64_t>(ts.size());
  std::uint64_t n_kv = 0;
  out_buf kv;
  auto key = [&](const std::string& k, std::uint32_t type) {
    kv.str(k);
    kv.put(type);
    ++n_kv;
  };
  auto kv_u32 = [&](const std::string& k, std::uint32_t v) { key(k, 4); kv.put(v); };
  auto kv_f32 = [&](const std::string& k, float v) { key(k, 6); kv.put(v); };
  auto kv_str = [&](const std::string& k, const std::string& v) { key(k, 8); kv.str(v); };
  kv_str("general.architecture", "llama");
  kv_str("general.name", opt.name);
  if (opt.alignment != 32) kv_u32("general.alignment", opt.alignment);
  kv_u32("llama.context_length", static_cast<std::uint32_t>(c.seq_len));
  kv_u32("llama.embedding_length", static_cast<std::uint32_t>(c.dim));
  kv_u32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  kv_u32("llama.feed_forward_length", static_cast<std::uint32_t>(c.hidden_dim));
  kv_u32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  kv_u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  kv_u32("llama.rope.dimension_count", static_cast<std::uint32_t>(c.rotary_dim()));
  kv_f32("llama.rope.freq_base", c.rope_theta);
  kv_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  if (c.sliding_window > 0) {
    kv_u32("llama.attention.sliding_window", static_cast<std::uint32_t>(c.sliding_window));
    if (opt.swa_period != 0) {
      kv_u32("llama.attention.sliding_window_pattern", opt.swa_period);
    } else if (!c.local_layers.empty()) {
      key("llama.attention.sliding_window_pattern", 9);
      kv.put<std::uint32_t>(7);  // bool
      kv.put<std::uint64_t>(c.local_layers.size());
      for (bool local : c.local_layers) kv.put<std::uint8_t>(local ? 1 : 0);
    }
  }
  if (c.attn_softcap) kv_f32("llama.attn_logit_softcapping", *c.attn_softcap);
  if (vocab) {
    const std::string marker = "\xE2\x96\x81";
    kv_str("tokenizer.ggml.model", "llama");
    key("tokenizer.ggml.tokens", 9);
    kv.put<std::uint32_t>(8);
    kv.put<std::uint64_t>(vocab->size());
    for (std::size_t i = 0; i < vocab->size(); ++i) {
      std::string p = vocab->piece(static_cast<int>(i)), q;
      for (char ch : p) q += ch == ' ' ? marker : std::string(1, ch);
      kv.str(q);
    }
    key("tokenizer.ggml.scores", 9);
    kv.put<std::uint32_t>(6);
    kv.put<std::uint64_t>(vocab->size());
    for (std::size_t i = 0; i < vocab->size(); ++i) kv.put(vocab->score(static_cast<int>(i)));
    if (vocab->options().bos >= 0) kv_u32("tokenizer.ggml.bos_token_id", static_cast<std::uint32_t>(vocab->options().bos));
    if (vocab->options().eos >= 0) kv_u32("tokenizer.ggml.eos_token_id", static_cast<std::uint32_t>(vocab->options().eos));
    key("tokenizer.ggml.add_space_prefix", 7);
    kv.put<std::uint8_t>(vocab->options().add_dummy_prefix ? 1 : 0);
  }
  o.put<std::uint64_t>(n_kv);
  o.raw(kv.b.data(), kv.b.size());

  // Tensor data blobs (each padded to the alignment), then the infos that point at them.
  out_buf data;
  std::vector<std::uint64_t> offsets;
  for (const tensor& t : ts) {
    data.pad(opt.alignment);
    offsets.push_back(data.b.size());
    const std::size_t n = static_cast<std::size_t>(t.cols * t.rows);
    switch (t.type) {
      case ggml_type::f32: data.floats(t.data, static_cast<Eigen::Index>(n)); break;
      case ggml_type::f16: for (std::size_t i = 0; i < n; ++i) data.put(f16_bits(t.data[i])); break;
      case ggml_type::bf16: for (std::size_t i = 0; i < n; ++i) data.put(bf16_bits(t.data[i])); break;
      case ggml_type::q8_0:
        DEPTHKV_CHECK(t.cols % 32 == 0, "minillama::write_gguf", "Q8_0 needs rows that are multiples of 32; tensor ",
                      t.name, " has ", t.cols);
        for (std::size_t b = 0; b < n / 32; ++b) {
          std::uint16_t d;
          std::int8_t q[32];
          q8_0_block(t.data + 32 * b, d, q);
          data.put(d);
          data.raw(q, 32);
        }
        break;
    }
  }
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const tensor& t = ts[i];
    o.str(t.name);
    o.put<std::uint32_t>(t.rows == 1 ? 1 : 2);
    o.put<std::uint64_t>(t.cols);
    if (t.rows != 1) o.put<std::uint64_t>(t.rows);
    o.put<std::uint32_t>(static_cast<std::uint32_t>(t.type));
    o.put<std::uint64_t>(offsets[i]);
  }
  o.pad(opt.alignment);
  o.raw(data.b.data(), data.b.size());
  return std::move(o.b);
}

void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw load_error(path + ": cannot write file");
}

tokenizer make_byte_vocab(const std::vector<std::string>& extra) {
  std::vector<std::string> p = {"<unk>", "<s>", "</s>"};
  std::vector<float> s = {0, 0, 0};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    p.emplace_back(name);
    s.push_back(0);
  }
  float score = -1;
  for (const auto& e : extra) {
    p.push_back(e);
    s.push_back(score);
    score -= 1;
  }
  return tokenizer(std::move(p), std::move(s));
}

}  // namespace minillama
