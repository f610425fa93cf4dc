// GGUF v2/v3 loader for llama-architecture models.
#include <cmath>
#include <map>
#include <limits>

#include "minillama/loaders.hpp"
#include "reader.hpp"

namespace minillama {

const char* ggml_type_name(std::uint32_t t) noexcept {
  switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 6: return "Q5_0";
    case 7: return "Q5_1";
    case 8: return "Q8_0";
    case 9: return "Q8_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K";
    case 12: return "Q4_K";
    case 13: return "Q5_K";
    case 14: return "Q6_K";
    case 15: return "Q8_K";
    case 30: return "BF16";
    default: return "unknown";
  }
}

namespace {

enum vt : std::uint32_t {
  T_U8 = 0, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64, T_COUNT
};
const char* type_name(std::uint32_t t) {
  static const char* n[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                            "bool", "string", "array", "uint64", "int64", "float64"};
  return t < T_COUNT ? n[t] : "invalid";
}
std::uint64_t scalar_size(std::uint32_t t) {
  switch (t) {
    case T_U8: case T_I8: case T_BOOL: return 1;
    case T_U16: case T_I16: return 2;
    case T_U32: case T_I32: case T_F32: return 4;
    case T_U64: case T_I64: case T_F64: return 8;
    default: return 0;
  }
}

// One metadata value. Numbers are kept as double plus exact integer; arrays keep numbers or strings.
struct value {
  std::uint32_t type = 0;
  bool is_int = false;
  std::int64_t i = 0;     // integer types and bool (uint64 above 2^63-1 is flagged by big)
  bool big = false;
  double f = 0;
  std::string s;
  std::uint32_t elem = 0;              // array element type
  std::vector<double> nums;            // numeric array
  std::vector<std::string> strs;       // string array
  std::uint64_t count = 0;             // array length
};

struct tensor_info {
  std::string name;
  std::vector<std::uint64_t> ne;
  std::uint32_t type = 0;
  std::uint64_t offset = 0;
  std::uint64_t nelem = 1;
};

class gguf_parser {
 public:
  gguf_parser(bytes_view b, const std::string& name) : r_(b, name) {}

  gguf_model parse();

 private:
  std::string str(const char* what) {
    const auto n = r_.get<std::uint64_t>(what);
    r_.need(n, what);
    std::string s(reinterpret_cast<const char*>(r_.here()), static_cast<std::size_t>(n));
    r_.skip(n, what);
    return s;
  }
  void scalar(std::uint32_t t, value& v, const std::string& key) {
    v.type = t;
    switch (t) {
      case T_U8: v.i = r_.get<std::uint8_t>("value"); v.is_int = true; break;
      case T_I8: v.i = r_.get<std::int8_t>("value"); v.is_int = true; break;
      case T_U16: v.i = r_.get<std::uint16_t>("value"); v.is_int = true; break;
      case T_I16: v.i = r_.get<std::int16_t>("value"); v.is_int = true; break;
      case T_U32: v.i = r_.get<std::uint32_t>("value"); v.is_int = true; break;
      case T_I32: v.i = r_.get<std::int32_t>("value"); v.is_int = true; break;
      case T_I64: v.i = r_.get<std::int64_t>("value"); v.is_int = true; break;
      case T_U64: {
        const auto u = r_.get<std::uint64_t>("value");
        v.big = u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
        v.i = v.big ? 0 : static_cast<std::int64_t>(u);
        v.is_int = true;
        break;
      }
      case T_BOOL: {
        const auto b = r_.get<std::uint8_t>("value");
        if (b > 1) r_.fail("metadata '", key, "': bool value ", int(b), " is neither 0 nor 1");
        v.i = b;
        v.is_int = true;
        break;
      }
      case T_F32: v.f = r_.get<float>("value"); break;
      case T_F64: v.f = r_.get<double>("value"); break;
      case T_STR: v.s = str("string value"); break;
      default: r_.fail("metadata '", key, "': invalid value type ", t);
    }
    if (v.is_int) v.f = static_cast<double>(v.i);
  }
  void read_value(std::uint32_t t, value& v, const std::string& key, int depth) {
    if (t != T_ARR) return scalar(t, v, key);
    if (depth > 2) r_.fail("metadata '", key, "': arrays nested too deeply");
    v.type = T_ARR;
    v.elem = r_.get<std::uint32_t>("array type");
    v.count = r_.get<std::uint64_t>("array length");
    if (v.elem >= T_COUNT) r_.fail("metadata '", key, "': invalid array element type ", v.elem);
    // Every element takes at least one byte (8 for strings and arrays): bound the count first.
    const std::uint64_t min_size = v.elem == T_STR || v.elem == T_ARR ? 8 : scalar_size(v.elem);
    if (v.count > r_.remaining() / min_size)
      r_.fail("truncated or absurd: metadata '", key, "' claims ", v.count, " elements of type ", type_name(v.elem),
              " but only ", r_.remaining(), " bytes remain");
    if (v.elem == T_STR) v.strs.reserve(static_cast<std::size_t>(v.count));
    else if (v.elem != T_ARR) v.nums.reserve(static_cast<std::size_t>(v.count));
    for (std::uint64_t k = 0; k < v.count; ++k) {
      value e;
      read_value(v.elem, e, key, depth + 1);
      if (v.elem == T_STR) v.strs.push_back(std::move(e.s));
      else if (v.elem != T_ARR) v.nums.push_back(e.f);
    }
  }

  const value* find(const std::string& k) const {
    auto it = kv_.find(k);
    return it == kv_.end() ? nullptr : &it->second;
  }
  // Integer metadata in [lo, hi]; `required` or default.
  std::int64_t get_int(const std::string& k, bool required, std::int64_t def, std::int64_t lo, std::int64_t hi) const {
    const value* v = find(k);
    if (!v) {
      if (required) r_.fail("missing metadata '", k, "'");
      return def;
    }
    if (!v->is_int || v->type == T_BOOL) r_.fail("metadata '", k, "' has type ", type_name(v->type), ", expected an integer");
    if (v->big || v->i < lo || v->i > hi) r_.fail("metadata '", k, "' = ", v->i, " is outside [", lo, ", ", hi, "]");
    return v->i;
  }
  double get_float(const std::string& k, double def) const {
    const value* v = find(k);
    if (!v) return def;
    if (v->type != T_F32 && v->type != T_F64 && !v->is_int)
      r_.fail("metadata '", k, "' has type ", type_name(v->type), ", expected a number");
    if (!std::isfinite(v->f)) r_.fail("metadata '", k, "' is not finite");
    return v->f;
  }

  // Copies tensor `name` (ggml shape ne = {cols, rows}) into dst (rows x cols row-major).
  void load_tensor(const std::string& name, float* dst, std::uint64_t cols, std::uint64_t rows, bool required = true);

  detail::reader r_;
  std::map<std::string, value> kv_;
  std::map<std::string, tensor_info> tensors_;
  std::uint64_t data_start_ = 0;
};

float f16_to_f32(std::uint16_t h) { return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h)); }
float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void gguf_parser::load_tensor(const std::string& name, float* dst, std::uint64_t cols, std::uint64_t rows,
                              bool required) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    if (required) r_.fail("missing tensor '", name, "'");
    return;
  }
  const tensor_info& t = it->second;
  // Shape: ggml lists the fastest dimension first; trailing 1s are insignificant.
  std::vector<std::uint64_t> ne = t.ne;
  while (ne.size() > 1 && ne.back() == 1) ne.pop_back();
  const bool ok = rows == 1 ? (ne.size() == 1 && ne[0] == cols) : (ne.size() == 2 && ne[0] == cols && ne[1] == rows);
  if (!ok) {
    std::string got;
    for (auto x : t.ne) got += (got.empty() ? "" : ", ") + std::to_string(x);
    r_.fail("tensor '", name, "' has shape [", got, "], expected [", cols, rows == 1 ? "" : ", ",
            rows == 1 ? std::string() : std::to_string(rows), "] (ggml order, fastest first)");
  }
  const std::uint64_t n = t.nelem;
  std::uint64_t bytes = 0;
  switch (t.type) {
    case 0: bytes = n * 4; break;
    case 1: case 30: bytes = n * 2; break;
    case 8:
      if (cols % 32) r_.fail("tensor '", name, "' is Q8_0 but its row length ", cols, " is not a multiple of 32");
      bytes = n / 32 * 34;
      break;
    default:
      r_.fail("tensor '", name, "' has type ", ggml_type_name(t.type), " (", t.type,
              "); supported: F32, F16, BF16, Q8_0");
  }
  const std::uint64_t avail = r_.size() - data_start_;
  if (t.offset > avail || bytes > avail - t.offset)
    r_.fail("truncated: tensor '", name, "' needs ", bytes, " bytes at data offset ", t.offset, " but the data section has ",
            avail, " bytes");
  const std::uint8_t* p = r_.here() - r_.offset() + data_start_ + t.offset;
  const std::size_t nn = static_cast<std::size_t>(n);
  switch (t.type) {
    case 0: std::memcpy(dst, p, nn * 4); break;
    case 1:
    case 30:
      for (std::size_t i = 0; i < nn; ++i) {
        std::uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = t.type == 1 ? f16_to_f32(h) : bf16_to_f32(h);
      }
      break;
    case 8:
      for (std::size_t b = 0; b < nn / 32; ++b) {
        std::uint16_t h;
        std::memcpy(&h, p + 34 * b, 2);
        const float d = f16_to_f32(h);
        for (std::size_t j = 0; j < 32; ++j) dst[32 * b + j] = d * static_cast<float>(static_cast<std::int8_t>(p[34 * b + 2 + j]));
      }
      break;
    default: break;
  }
  detail::check_finite(r_, dst, nn, "'" + name + "'");
}

gguf_model gguf_parser::parse() {
  gguf_model out;
  r_.need(4, "magic");
  if (std::memcmp(r_.here(), "GGUF", 4) != 0) r_.fail("bad magic: not a GGUF file (expected 'GGUF')");
  r_.skip(4, "magic");
  out.version = r_.get<std::uint32_t>("version");
  if (out.version == 1) r_.fail("GGUF version 1 is not supported (only 2 and 3)");
  if (out.version != 2 && out.version != 3)
    r_.fail("unsupported GGUF version ", out.version,
            (out.version & 0xFFFF) == 0 ? " (a big-endian file?)" : "", "; supported: 2, 3");
  const auto n_tensors = r_.get<std::uint64_t>("tensor_count");
  const auto n_kv = r_.get<std::uint64_t>("metadata_kv_count");
  // Each KV takes >= 13 bytes and each tensor info >= 24: bound the counts by the bytes present.
  if (n_kv > r_.remaining() / 13) r_.fail("absurd metadata_kv_count ", n_kv, " for a file of ", r_.size(), " bytes");
  if (n_tensors > r_.remaining() / 24) r_.fail("absurd tensor_count ", n_tensors, " for a file of ", r_.size(), " bytes");
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = str("metadata key");
    const auto t = r_.get<std::uint32_t>("metadata value type");
    if (t >= T_COUNT) r_.fail("metadata '", key, "': invalid value type ", t);
    value v;
    read_value(t, v, key, 0);
    if (!kv_.emplace(key, std::move(v)).second) r_.fail("duplicate metadata key '", key, "'");
  }
  std::uint64_t alignment = 32;
  if (find("general.alignment")) {
    alignment = static_cast<std::uint64_t>(get_int("general.alignment", true, 32, 1, 1 << 20));
    if (alignment & (alignment - 1)) r_.fail("general.alignment = ", alignment, " is not a power of two");
  }
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    tensor_info t;
    t.name = str("tensor name");
    const auto nd = r_.get<std::uint32_t>("tensor n_dims");
    if (nd == 0 || nd > 4) r_.fail("tensor '", t.name, "' has ", nd, " dimensions (1..4 allowed)");
    for (std::uint32_t k = 0; k < nd; ++k) {
      const auto e = r_.get<std::uint64_t>("tensor dimension");
      if (e == 0 || e > (std::uint64_t{1} << 40)) r_.fail("tensor '", t.name, "' has absurd dimension ", e);
      if (t.nelem > (std::uint64_t{1} << 50) / e) r_.fail("tensor '", t.name, "' has an absurd element count");
      t.nelem *= e;
      t.ne.push_back(e);
    }
    t.type = r_.get<std::uint32_t>("tensor type");
    t.offset = r_.get<std::uint64_t>("tensor offset");
    if (t.offset % alignment) r_.fail("tensor '", t.name, "' offset ", t.offset, " is not a multiple of the alignment ", alignment);
    const std::string nm = t.name;
    if (!tensors_.emplace(nm, std::move(t)).second) r_.fail("duplicate tensor '", nm, "'");
  }
  data_start_ = (static_cast<std::uint64_t>(r_.offset()) + alignment - 1) / alignment * alignment;
  if (data_start_ > r_.size()) r_.fail("truncated: the tensor data section would start at ", data_start_,
                                      " but the file has ", r_.size(), " bytes");

  // Architecture and hyperparameters.
  const value* arch = find("general.architecture");
  if (!arch) r_.fail("missing metadata 'general.architecture'");
  if (arch->type != T_STR) r_.fail("metadata 'general.architecture' is not a string");
  if (arch->s != "llama") r_.fail("architecture '", arch->s, "' is not supported (only 'llama')");
  if (const value* nm = find("general.name"); nm && nm->type == T_STR) out.name = nm->s;
  config c;
  constexpr std::int64_t kMax = 1 << 20;
  c.n_layers = static_cast<int>(get_int("llama.block_count", true, 0, 1, 4096));
  c.dim = static_cast<int>(get_int("llama.embedding_length", true, 0, 1, kMax));
  c.hidden_dim = static_cast<int>(get_int("llama.feed_forward_length", true, 0, 1, kMax));
  c.n_heads = static_cast<int>(get_int("llama.attention.head_count", true, 0, 1, kMax));
  c.n_kv_heads = static_cast<int>(get_int("llama.attention.head_count_kv", false, c.n_heads, 1, kMax));
  c.seq_len = static_cast<int>(get_int("llama.context_length", false, 0, 0, std::numeric_limits<std::int32_t>::max()));
  c.rope_theta = static_cast<float>(get_float("llama.rope.freq_base", 10000.0));
  c.norm_eps = static_cast<float>(get_float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  {
    auto emb = tensors_.find("token_embd.weight");
    if (emb == tensors_.end()) r_.fail("missing tensor 'token_embd.weight'");
    if (emb->second.ne.size() < 2 || emb->second.ne[1] > (1u << 24))
      r_.fail("tensor 'token_embd.weight' has no valid vocabulary dimension");
    c.vocab_size = static_cast<int>(emb->second.ne[1]);
  }
  c.shared_classifier = tensors_.find("output.weight") == tensors_.end();
  // Hybrid attention: <arch>.attention.sliding_window = W (query p sees keys k with p - k < W);
  // <arch>.attention.sliding_window_pattern: per-layer bools (true = local) or llama.cpp's
  // uint32 period (layer l global when (l + 1) % period == 0); absent = every layer local.
  const std::string swa_key = arch->s + ".attention.sliding_window", pat_key = swa_key + "_pattern";
  const value* pat = find(pat_key);
  if (find(swa_key)) {
    c.sliding_window = static_cast<int>(get_int(swa_key, true, 0, 0, std::numeric_limits<std::int32_t>::max()));
    if (pat && c.sliding_window == 0) r_.fail("metadata '", pat_key, "' is set but '", swa_key, "' is 0");
  } else if (pat) {
    r_.fail("metadata '", pat_key, "' is set without '", swa_key, "'");
  }
  if (pat) {
    if (pat->type == T_ARR) {
      if (pat->elem != T_BOOL && !(pat->elem <= T_I32 || pat->elem == T_U64 || pat->elem == T_I64))
        r_.fail("metadata '", pat_key, "' is an array of ", type_name(pat->elem), ", expected bool");
      if (pat->nums.size() != static_cast<std::size_t>(c.n_layers))
        r_.fail("metadata '", pat_key, "' has ", pat->nums.size(), " entries, expected block_count = ", c.n_layers);
      for (double v : pat->nums) c.local_layers.push_back(v != 0);
    } else if (pat->is_int && pat->type != T_BOOL) {
      const auto period = get_int(pat_key, true, 0, 0, 4096);
      c.local_layers = local_layer_pattern(c.n_layers, static_cast<int>(period));
    } else {
      r_.fail("metadata '", pat_key, "' has type ", type_name(pat->type), ", expected a uint32 period or a bool array");
    }
  }
  // Gemma 2's attention logit soft-cap (<arch>.attn_logit_softcapping); 0 = none.
  const std::string cap_key = arch->s + ".attn_logit_softcapping";
  if (find(cap_key)) {
    const double cap = get_float(cap_key, 0.0);
    if (cap < 0) r_.fail("metadata '", cap_key, "' = ", cap, " must be >= 0 (0 = none)");
    if (cap > 0) c.attn_softcap = static_cast<float>(cap);
  }
  try {
    c.validate("hyperparameters");
  } catch (const depthkv::error& e) {
    r_.fail(e.what());
  }
  if (find("llama.rope.dimension_count")) {
    const auto rd = get_int("llama.rope.dimension_count", true, 0, 0, kMax);
    if (rd < 2 || rd > c.head_dim() || rd % 2 != 0)
      r_.fail("llama.rope.dimension_count = ", rd, " must be even and in [2, head_dim = ", c.head_dim(), "]");
    c.rope_dim = static_cast<int>(rd);
  }
  // The weights the hyperparameters imply must fit in the file (>= 1 byte each even in Q8_0)
  // before anything is allocated. Widths <= 2^20 and layers <= 4096 keep this in 64 bits.
  {
    const std::uint64_t d = static_cast<std::uint64_t>(c.dim), kv = static_cast<std::uint64_t>(c.kv_dim()),
                        hid = static_cast<std::uint64_t>(c.hidden_dim);
    const std::uint64_t implied = static_cast<std::uint64_t>(c.vocab_size) * d * (c.shared_classifier ? 1 : 2) + d +
                                  static_cast<std::uint64_t>(c.n_layers) * (2 * d + 2 * d * d + 2 * kv * d + 3 * hid * d);
    if (implied > r_.size())
      r_.fail("the hyperparameters (n_layers ", c.n_layers, ", dim ", c.dim, ", hidden_dim ", c.hidden_dim,
              ", vocab ", c.vocab_size, ") imply ", implied, " weights, more than the file's ", r_.size(), " bytes hold");
  }

  model m = model::zeros(c);
  const std::uint64_t d = static_cast<std::uint64_t>(c.dim), kv = static_cast<std::uint64_t>(c.kv_dim()),
                      hid = static_cast<std::uint64_t>(c.hidden_dim), V = static_cast<std::uint64_t>(c.vocab_size);
  load_tensor("token_embd.weight", m.token_embedding.data(), d, V);
  for (std::size_t l = 0; l < m.layers.size(); ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    layer_weights& w = m.layers[l];
    load_tensor(b + "attn_norm.weight", w.attn_norm.data(), d, 1);
    load_tensor(b + "attn_q.weight", w.wq.data(), d, d);
    load_tensor(b + "attn_k.weight", w.wk.data(), d, kv);
    load_tensor(b + "attn_v.weight", w.wv.data(), d, kv);
    load_tensor(b + "attn_output.weight", w.wo.data(), d, d);
    load_tensor(b + "ffn_norm.weight", w.ffn_norm.data(), d, 1);
    load_tensor(b + "ffn_gate.weight", w.w1.data(), d, hid);
    load_tensor(b + "ffn_down.weight", w.w2.data(), hid, d);
    load_tensor(b + "ffn_up.weight", w.w3.data(), d, hid);
  }
  load_tensor("output_norm.weight", m.final_norm.data(), d, 1);
  if (!c.shared_classifier) load_tensor("output.weight", m.classifier.data(), d, V);
  out.weights = std::move(m);

  // Vocabulary (optional).
  if (const value* toks = find("tokenizer.ggml.tokens")) {
    if (toks->type != T_ARR || toks->elem != T_STR) r_.fail("metadata 'tokenizer.ggml.tokens' is not an array of strings");
    if (toks->strs.empty()) r_.fail("metadata 'tokenizer.ggml.tokens' is empty");
    std::vector<float> scores(toks->strs.size(), 0.0f);
    if (const value* sc = find("tokenizer.ggml.scores")) {
      if (sc->type != T_ARR || sc->elem == T_STR || sc->elem == T_ARR)
        r_.fail("metadata 'tokenizer.ggml.scores' is not a numeric array");
      if (sc->nums.size() != scores.size())
        r_.fail("tokenizer.ggml.scores has ", sc->nums.size(), " entries but tokenizer.ggml.tokens has ", scores.size());
      for (std::size_t i = 0; i < scores.size(); ++i) scores[i] = static_cast<float>(sc->nums[i]);
    }
    tokenizer_options opt;
    const auto nv = static_cast<std::int64_t>(toks->strs.size());
    opt.bos = static_cast<int>(get_int("tokenizer.ggml.bos_token_id", false, 1, -1, nv - 1));
    opt.eos = static_cast<int>(get_int("tokenizer.ggml.eos_token_id", false, 2, -1, nv - 1));
    std::string tm = "llama";
    if (const value* v = find("tokenizer.ggml.model"); v && v->type == T_STR) tm = v->s;
    if (const value* v = find("tokenizer.ggml.add_space_prefix"); v && v->type == T_BOOL) opt.add_dummy_prefix = v->i != 0;
    if (tm == "llama") {
      opt.space_marker = "\xE2\x96\x81";
      out.vocab = tokenizer(toks->strs, std::move(scores), opt);
      out.has_vocab = true;
    } else {
      out.vocab_note = "tokenizer model '" + tm + "' is not supported (only 'llama', score-based BPE)";
    }
  } else {
    out.vocab_note = "no tokenizer.ggml.tokens metadata";
  }
  return out;
}

}  // namespace

gguf_model load_gguf(bytes_view bytes, const std::string& name) { return gguf_parser(bytes, name).parse(); }

gguf_model load_gguf_file(const std::string& path) {
  const auto buf = read_file(path);
  return load_gguf(bytes_view(buf.data(), buf.size()), path);
}

loaded load_any(const std::string& model_path, const std::string& tokenizer_path) {
  const auto buf = read_file(model_path);
  loaded out;
  if (buf.size() >= 4 && std::memcmp(buf.data(), "GGUF", 4) == 0) {
    gguf_model g = load_gguf(bytes_view(buf.data(), buf.size()), model_path);
    out.weights = std::move(g.weights);
    out.vocab = std::move(g.vocab);
    out.has_vocab = g.has_vocab;
    out.format = "gguf";
  } else {
    out.weights = load_llama2c(bytes_view(buf.data(), buf.size()), model_path);
    out.format = "llama2c";
  }
  if (!tokenizer_path.empty()) {
    out.vocab = load_llama2c_tokenizer_file(tokenizer_path, out.weights.cfg.vocab_size);
    out.has_vocab = true;
  }
  return out;
}

}  // namespace minillama
