// llama2.c checkpoint and tokenizer loaders.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <new>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

#include "minillama/loaders.hpp"
#include "reader.hpp"

namespace minillama {

namespace detail {
void check_finite(const reader& r, const float* p, std::size_t n, const std::string& tensor) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i])) r.fail("tensor ", tensor, " holds a non-finite value (", p[i], ") at element ", i);
}
}  // namespace detail

namespace {

// Rotary embedding encoded by llama2.c's freq_cis tables (real/imag [S][half], row p pair i =
// cos/sin(p * theta^(-2i/rope_dim)) for the first rope_dim/2 pairs, (1, 0) for the rest).
struct table_rope {
  double theta = 0.0;  // 0: the tables carry no theta (all zero, half < 2 or S < 2)
  int rope_dim = 0;    // rotated dims per head
};

// Throws if the tables are not a rotary table of any theta and rope_dim.
table_rope rope_of_freq_cis(const detail::reader& r, const std::vector<float>& t, std::uint64_t S, std::uint64_t half) {
  table_rope out;
  if (std::all_of(t.begin(), t.end(), [](float v) { return v == 0.0f; })) return out;
  if (half < 2 || S < 2) return out;
  const float* re = t.data();
  const float* im = t.data() + S * half;
  // Unrotated pairs (partial rotary) are the trailing pairs whose angle at position 1 is 0; a
  // rotating pair turns by theta^(-2i/rope_dim) > 0 there.
  std::uint64_t rh = half;
  while (rh > 0 && im[half + rh - 1] == 0.0f && re[half + rh - 1] == 1.0f) --rh;
  if (rh == 0) r.fail("freq_cis tables rotate no pair (position 1 is the identity): pass rope_theta explicitly");
  out.rope_dim = static_cast<int>(2 * rh);
  // Pair 1 at position 1 turns by theta^(-2/rope_dim) in (0, 1] for theta >= 1; with one rotating
  // pair, theta does not matter (pair 0 turns by 1 rad): report 10000.
  double theta = 10000.0;
  if (rh >= 2) {
    const double a1 = std::atan2(static_cast<double>(im[half + 1]), static_cast<double>(re[half + 1]));
    theta = a1 > 0.0 && a1 <= 1.0 ? std::pow(a1, -static_cast<double>(rh)) : 0.0;
    if (theta > 0.0) {  // exporters use round values (10000, 500000, 1e6): snap to 6 digits
      const double scale = std::pow(10.0, std::floor(std::log10(theta)) - 5.0);
      theta = std::round(theta / scale) * scale;
    }
  }
  // f32 tables of angles up to S radians: |error| ~1e-7 * S; allow a wide margin.
  const double tol = 1e-3 + 1e-6 * static_cast<double>(S);
  for (std::uint64_t p = 0; p < S; ++p)
    for (std::uint64_t i = 0; i < half; ++i) {
      const double f = i < rh ? std::pow(theta, -static_cast<double>(i) / static_cast<double>(rh)) : 0.0;
      const double a = theta > 0.0 ? static_cast<double>(p) * f : 0.0;
      const double dr = std::abs(std::cos(a) - re[p * half + i]), di = std::abs(std::sin(a) - im[p * half + i]);
      if (theta == 0.0 || dr > tol || di > tol)
        r.fail("freq_cis tables are not a rotary table of any theta (position ", p, " pair ", i, ": (",
               re[p * half + i], ", ", im[p * half + i], ") vs theta estimate ", theta, ", rotary dims ", 2 * rh,
               "); pass rope_theta explicitly");
    }
  out.theta = theta;
  return out;
}

}  // namespace

void check_regular_file(const std::string& path) {
  if (path.empty()) throw load_error("<empty path>: cannot open file (no path given)");
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    throw load_error(path + ": cannot open file (" + std::strerror(err) + ")");
  }
  if (S_ISDIR(st.st_mode)) throw load_error(path + ": is a directory, not a file");
  if (!S_ISREG(st.st_mode)) throw load_error(path + ": is not a regular file (a device, FIFO or socket)");
  if (::access(path.c_str(), R_OK) != 0) {
    const int err = errno;
    throw load_error(path + ": cannot open file (not readable: " + std::strerror(err) + ")");
  }
}

std::vector<std::uint8_t> read_file(const std::string& path) {
  check_regular_file(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw load_error(path + ": cannot open file");
  f.seekg(0, std::ios::end);
  const std::streamoff size = f.tellg();
  if (size < 0) throw load_error(path + ": cannot determine the file size");
  f.seekg(0, std::ios::beg);
  std::vector<std::uint8_t> buf;
  try {
    buf.resize(static_cast<std::size_t>(size));
  } catch (const std::bad_alloc&) {
    throw load_error(minillama::concat(path, ": the file's ", size, " bytes do not fit in memory"));
  } catch (const std::length_error&) {
    throw load_error(minillama::concat(path, ": the file's ", size, " bytes do not fit in memory"));
  }
  if (size > 0 && !f.read(reinterpret_cast<char*>(buf.data()), size)) throw load_error(path + ": read failed");
  return buf;
}

model load_llama2c(bytes_view bytes, const std::string& name, float rope_theta, float norm_eps) {
  detail::reader r(bytes, name);
  if (r.size() >= 4) {
    std::uint32_t magic;
    std::memcpy(&magic, bytes.data(), 4);
    if (magic == 0x616b3432u)
      r.fail("this is a llama2.c 'ak42' versioned export (export.py --version 1/2); only the legacy format "
             "(version 0) is supported");
    if (magic == 0x46554747u) r.fail("this is a GGUF file, not a llama2.c checkpoint (use load_gguf)");
  }
  std::int32_t h[7];
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i) h[i] = r.get<std::int32_t>("header");
  config c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  if (h[5] == std::numeric_limits<std::int32_t>::min()) r.fail("header: vocab_size = ", h[5], " is absurd");
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] < 0 ? -h[5] : h[5];
  c.seq_len = h[6];
  c.rope_theta = rope_theta > 0.0f ? rope_theta : 10000.0f;
  c.norm_eps = norm_eps;
  try {
    c.validate("header");
  } catch (const depthkv::error& e) {
    std::string hdr;
    for (int i = 0; i < 7; ++i) hdr += std::string(i ? ", " : "") + names[i] + "=" + std::to_string(h[i]);
    r.fail(e.what(), " (header: ", hdr, ")");
  }
  // All sizes are bounded by validate (widths <= 2^20, layers <= 4096): products fit in 64 bits.
  const std::uint64_t d = static_cast<std::uint64_t>(c.dim), hd = static_cast<std::uint64_t>(c.head_dim()),
                      kv = static_cast<std::uint64_t>(c.kv_dim()), hid = static_cast<std::uint64_t>(c.hidden_dim),
                      L = static_cast<std::uint64_t>(c.n_layers), V = static_cast<std::uint64_t>(c.vocab_size),
                      S = static_cast<std::uint64_t>(c.seq_len);
  const std::uint64_t per_layer = d + d * d + 2 * kv * d + d * d + d + 3 * hid * d;
  const std::uint64_t total = V * d + L * per_layer + d + S * hd + (c.shared_classifier ? 0 : V * d);
  if (total > r.remaining() / 4 || r.remaining() != total * 4) {
    const std::uint64_t need = total * 4;
    if (need > r.remaining())
      r.fail("truncated: the header (dim ", c.dim, ", hidden_dim ", c.hidden_dim, ", n_layers ", c.n_layers,
             ", n_heads ", c.n_heads, ", n_kv_heads ", c.n_kv_heads, ", vocab_size ", h[5], ", seq_len ", c.seq_len,
             ") needs ", need, " bytes of weights but the file has ", r.remaining(), " after the header");
    r.fail("the header needs ", need, " bytes of weights but the file has ", r.remaining() - need,
           " bytes more: not a legacy llama2.c checkpoint of this shape");
  }
  model m = model::zeros(c);
  auto read = [&](float* dst, std::uint64_t n, const std::string& tensor) {
    r.floats(dst, n, tensor.c_str());
    detail::check_finite(r, dst, static_cast<std::size_t>(n), tensor);
  };
  auto each = [&](const char* tensor, auto get) {
    for (std::size_t l = 0; l < m.layers.size(); ++l) {
      auto& t = get(m.layers[l]);
      read(t.data(), static_cast<std::uint64_t>(t.size()), std::string(tensor) + "[" + std::to_string(l) + "]");
    }
  };
  read(m.token_embedding.data(), V * d, "token_embedding");
  each("rms_att_weight", [](layer_weights& w) -> vector& { return w.attn_norm; });
  each("wq", [](layer_weights& w) -> matrix& { return w.wq; });
  each("wk", [](layer_weights& w) -> matrix& { return w.wk; });
  each("wv", [](layer_weights& w) -> matrix& { return w.wv; });
  each("wo", [](layer_weights& w) -> matrix& { return w.wo; });
  each("rms_ffn_weight", [](layer_weights& w) -> vector& { return w.ffn_norm; });
  each("w1", [](layer_weights& w) -> matrix& { return w.w1; });
  each("w2", [](layer_weights& w) -> matrix& { return w.w2; });
  each("w3", [](layer_weights& w) -> matrix& { return w.w3; });
  read(m.final_norm.data(), d, "rms_final_weight");
  std::vector<float> freq_cis(static_cast<std::size_t>(S * hd));
  read(freq_cis.data(), S * hd, "freq_cis_real/imag");
  if (!c.shared_classifier) read(m.classifier.data(), V * d, "wcls");
  if (!(rope_theta > 0.0f)) {
    const table_rope t = rope_of_freq_cis(r, freq_cis, S, hd / 2);
    if (t.theta > 0.0) {
      m.cfg.rope_theta = static_cast<float>(t.theta);
      m.cfg.rope_dim = t.rope_dim == c.head_dim() ? 0 : t.rope_dim;
    }
  }
  return m;
}

model load_llama2c_file(const std::string& path, float rope_theta, float norm_eps) {
  const auto buf = read_file(path);
  return load_llama2c(bytes_view(buf.data(), buf.size()), path, rope_theta, norm_eps);
}

tokenizer load_llama2c_tokenizer(bytes_view bytes, int vocab_size, const std::string& name, tokenizer_options opt) {
  detail::reader r(bytes, name);
  if (vocab_size < 0) r.fail("vocab_size must be >= 0, got ", vocab_size);
  const auto max_len = r.get<std::int32_t>("max_token_length");
  if (max_len < 0 || max_len > (1 << 20)) r.fail("max_token_length = ", max_len, " is absurd");
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (std::size_t i = 0; vocab_size == 0 ? r.remaining() > 0 : i < static_cast<std::size_t>(vocab_size); ++i) {
    if (i >= (1u << 24)) r.fail("more than 2^24 tokens");
    const float score = r.get<float>("token score");
    const auto len = r.get<std::int32_t>("token length");
    if (len < 0 || len > max_len)
      r.fail("token ", i, " has length ", len, ", outside [0, max_token_length = ", max_len, "]");
    r.need(static_cast<std::uint64_t>(len), "token bytes");
    pieces.emplace_back(reinterpret_cast<const char*>(r.here()), static_cast<std::size_t>(len));
    r.skip(static_cast<std::uint64_t>(len), "token bytes");
    if (!std::isfinite(score)) r.fail("token ", i, " has a non-finite score");
    scores.push_back(score);
  }
  if (r.remaining() != 0)
    r.fail(r.remaining(), " trailing bytes after ", vocab_size, " tokens: the vocabulary size does not match");
  if (pieces.empty()) r.fail("the vocabulary is empty");
  return tokenizer(std::move(pieces), std::move(scores), std::move(opt));
}

tokenizer load_llama2c_tokenizer_file(const std::string& path, int vocab_size, tokenizer_options opt) {
  const auto buf = read_file(path);
  return load_llama2c_tokenizer(bytes_view(buf.data(), buf.size()), vocab_size, path, std::move(opt));
}

}  // namespace minillama
