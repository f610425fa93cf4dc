// minillama loaders: llama2.c and GGUF round trips give identical logits; tokenizers round
// trip; malformed files give load_error naming the input and the problem.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "minillama/loaders.hpp"
#include "minillama/session.hpp"
#include "minillama/writers.hpp"
#include "test_util.hpp"

using namespace minillama;
using bytes = std::vector<std::uint8_t>;

namespace {

config small_config(bool shared) {
  config c;
  c.dim = 64;
  c.hidden_dim = 96;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.seq_len = 16;
  c.shared_classifier = shared;
  return c;
}

matrix logits_of(const model& m) {
  session s(m);
  forward_options o;
  o.all_logits = true;
  return s.forward(std::vector<int>{1, 5, 9, 3, 17, 33, 2}, o);
}

bool same_bits(const matrix& a, const matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

bytes_view view(const bytes& b) { return bytes_view(b.data(), b.size()); }

template <class F>
void require_load_error(F&& f, std::vector<std::string> needles) {
  try {
    f();
  } catch (const load_error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    return;
  }
  FAIL("expected minillama::load_error");
}

void put_u32(bytes& b, std::size_t off, std::uint32_t v) { std::memcpy(b.data() + off, &v, 4); }
void put_u64(bytes& b, std::size_t off, std::uint64_t v) { std::memcpy(b.data() + off, &v, 8); }

}  // namespace

TEST_CASE("loaders: llama2.c and GGUF F32 give bit-identical logits", "[engine][loaders]") {
  for (bool shared : {true, false}) {
    const model m = make_random_model(small_config(shared), shared ? 1 : 2);
    const matrix ref = logits_of(m);
    const model a = load_llama2c(view(write_llama2c(m)), "a.bin");
    CHECK(a.cfg.shared_classifier == shared);
    CHECK(a.cfg.seq_len == 16);
    CHECK(same_bits(logits_of(a), ref));
    for (std::uint32_t version : {2u, 3u})
      for (std::uint32_t align : {32u, 64u}) {
        gguf_write_options o;
        o.version = version;
        o.alignment = align;
        const gguf_model g = load_gguf(view(write_gguf(m, nullptr, o)), "a.gguf");
        INFO("version " << version << " alignment " << align << " shared " << shared);
        CHECK(g.version == version);
        CHECK(!g.has_vocab);
        CHECK(g.weights.cfg.n_kv_heads == 2);
        CHECK(g.weights.cfg.shared_classifier == shared);
        CHECK(same_bits(logits_of(g.weights), ref));
      }
  }
}

TEST_CASE("loaders: GGUF F16, BF16, Q8_0 match llama2.c of the same rounded weights", "[engine][loaders]") {
  for (ggml_type t : {ggml_type::f16, ggml_type::bf16, ggml_type::q8_0}) {
    model m = make_random_model(small_config(false), 3);
    const matrix unrounded = logits_of(m);
    round_weights(m, t);
    gguf_write_options o;
    o.matrix_type = t;
    const gguf_model g = load_gguf(view(write_gguf(m, nullptr, o)), "q.gguf");
    const model a = load_llama2c(view(write_llama2c(m)), "q.bin");
    const matrix lg = logits_of(g.weights);
    INFO("type " << ggml_type_name(static_cast<std::uint32_t>(t)));
    CHECK(same_bits(lg, logits_of(a)));
    CHECK(!same_bits(lg, unrounded));                            // rounding really happened
    CHECK((lg - unrounded).cwiseAbs().maxCoeff() < 0.1f * unrounded.cwiseAbs().maxCoeff());  // and is small
  }
}

TEST_CASE("loaders: GGUF hyperparameters from metadata", "[engine][loaders]") {
  config c = small_config(true);
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  c.seq_len = 2048;
  const model m = make_random_model(c, 4);
  const gguf_model g = load_gguf(view(write_gguf(m)), "h.gguf");
  CHECK(g.weights.cfg.rope_theta == 500000.0f);
  CHECK(g.weights.cfg.norm_eps == 1e-6f);
  CHECK(g.weights.cfg.seq_len == 2048);
  CHECK(g.name == "minillama");
  CHECK(same_bits(logits_of(g.weights), logits_of(m)));
}

TEST_CASE("loaders: llama2.c rope theta comes from the freq_cis tables", "[engine][loaders]") {
  for (float theta : {10000.0f, 500000.0f, 1000000.0f, 12345.5f}) {
    config c = small_config(true);
    c.rope_theta = theta;
    c.seq_len = 1024;
    const model m = make_random_model(c, 5);
    const bytes b = write_llama2c(m);
    INFO("theta " << theta);
    const model a = load_llama2c(view(b), "t.bin");
    CHECK(std::abs(a.cfg.rope_theta - theta) <= 1e-5f * theta);
    CHECK(load_llama2c(view(b), "t.bin", 777.0f).cfg.rope_theta == 777.0f);  // explicit wins
  }
  // the tables start after the weights: locate them from the end (shared classifier: they are last)
  config c = small_config(true);
  c.rope_theta = 500000.0f;
  const model m = make_random_model(c, 6);
  const bytes good = write_llama2c(m);
  const std::size_t half = static_cast<std::size_t>(c.head_dim() / 2), S = static_cast<std::size_t>(c.seq_len);
  const std::size_t tables = good.size() - 2 * S * half * 4;
  bytes zero = good;
  std::fill(zero.begin() + static_cast<std::ptrdiff_t>(tables), zero.end(), std::uint8_t{0});
  CHECK(load_llama2c(view(zero), "z.bin").cfg.rope_theta == 10000.0f);  // no tables: the default
  bytes bad = good;
  const float junk = 0.25f;
  std::memcpy(bad.data() + tables + 4 * (5 * half + 3), &junk, 4);  // real[5][3]
  require_load_error([&] { (void)load_llama2c(view(bad), "bad.bin"); },
                     {"bad.bin", "freq_cis", "position 5 pair 3", "rope_theta"});
  CHECK(load_llama2c(view(bad), "bad.bin", 500000.0f).cfg.rope_theta == 500000.0f);
}

TEST_CASE("loaders: partial rotary (rope_dim < head_dim) round trips through both formats", "[engine][loaders]") {
  for (int rd : {2, 8, 14, 16}) {
    config c = small_config(true);  // head_dim 16
    c.rope_theta = 500000.0f;
    c.rope_dim = rd;
    c.seq_len = 64;
    const model m = make_random_model(c, 9);
    INFO("rope_dim " << rd);
    const model a = load_llama2c(view(write_llama2c(m)), "p.bin");
    CHECK(a.cfg.rotary_dim() == rd);
    CHECK(a.cfg.rope_theta == (rd == 2 ? 10000.0f : 500000.0f));  // one rotating pair: theta is moot
    const gguf_model g = load_gguf(view(write_gguf(m)), "p.gguf");
    CHECK(g.weights.cfg.rotary_dim() == rd);
    CHECK(same_bits(logits_of(g.weights), logits_of(m)));
    CHECK(same_bits(logits_of(a), logits_of(m)));
    if (rd < 16) {  // the unrotated dims change the logits (independent values: the golden test)
      config full = c;
      full.rope_dim = 0;
      model mf = m;
      mf.cfg = full;
      CHECK(!same_bits(logits_of(mf), logits_of(m)));
    }
  }
  // rope_dim must be even and within the head
  for (int bad : {-2, 3, 18}) {
    config c = small_config(true);
    c.rope_dim = bad;
    depthkv_test::require_error([&] { c.validate("cfg"); }, {"cfg", "rope_dim", std::to_string(bad)});
  }
  // GGUF dimension_count outside [2, head_dim] or odd is a load error
  config c = small_config(true);
  c.rope_dim = 8;
  const bytes good = write_gguf(make_random_model(c, 10));
  const std::string key = "llama.rope.dimension_count";
  const auto it = std::search(good.begin(), good.end(), key.begin(), key.end());
  REQUIRE(it != good.end());
  const std::size_t at = static_cast<std::size_t>(it - good.begin()) + key.size() + 4;  // after the u32 type
  for (std::uint32_t v : {0u, 7u, 18u}) {
    bytes b = good;
    put_u32(b, at, v);
    require_load_error([&] { (void)load_gguf(view(b), "r.gguf"); },
                       {"r.gguf", "llama.rope.dimension_count", std::to_string(v)});
  }
}

TEST_CASE("tokenizer: BPE by score with byte fallback; both file formats round trip", "[engine][tokenizer]") {
  const tokenizer t =
      make_byte_vocab({" h", "el", " hel", "lo", " hello", " w", "or", "ld", " wor", " world", "ll", "x"});
  const std::vector<int> ids = t.encode("hello world!", true);
  REQUIRE(ids.size() >= 2);
  CHECK(ids[0] == 1);
  REQUIRE(ids.size() == 4);
  CHECK(t.piece(ids[1]) == " hello");
  CHECK(t.piece(ids[2]) == " world");
  CHECK(t.piece(ids[3]) == "<0x21>");
  CHECK(t.decode(ids) == "hello world!");
  // Non-ASCII text falls back to bytes and decodes back exactly.
  const std::string utf = "na\xC3\xAFve \xE2\x82\xAC";
  CHECK(t.decode(t.encode(utf, true)) == utf);
  CHECK(t.encode("", true) == std::vector<int>{1});

  const bytes tb = write_llama2c_tokenizer(t);
  const tokenizer t2 = load_llama2c_tokenizer(view(tb), static_cast<int>(t.size()), "tok.bin");
  CHECK(t2.encode("hello world!", true) == ids);
  const tokenizer t3 = load_llama2c_tokenizer(view(tb), 0, "tok.bin");  // read to the end
  CHECK(t3.size() == t.size());

  config c = small_config(true);
  c.vocab_size = static_cast<int>(t.size());
  const model m = make_random_model(c, 5);
  const gguf_model g = load_gguf(view(write_gguf(m, &t)), "v.gguf");
  REQUIRE(g.has_vocab);
  CHECK(g.vocab.piece(ids[1]) == "\xE2\x96\x81hello");
  CHECK(g.vocab.encode("hello world!", true) == ids);
  CHECK(g.vocab.decode(ids) == "hello world!");
}

TEST_CASE("loaders: malformed llama2.c input gives load_error naming the file", "[engine][loaders][errors]") {
  const model m = make_random_model(small_config(false), 6);
  const bytes good = write_llama2c(m);
  SECTION("every truncation") {
    for (std::size_t n = 0; n < good.size(); n += (n < 64 ? 1 : 997)) {
      const bytes b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      require_load_error([&] { load_llama2c(view(b), "cut.bin"); }, {"cut.bin", "truncated"});
    }
  }
  SECTION("trailing bytes") {
    bytes b = good;
    b.push_back(0);
    require_load_error([&] { load_llama2c(view(b), "long.bin"); }, {"long.bin", "1 bytes more"});
  }
  SECTION("absurd and inconsistent headers") {
    const std::vector<std::pair<std::size_t, std::int32_t>> cases = {
        {0, 0}, {0, -5}, {0, 1 << 30}, {1, 0}, {2, 100000}, {3, 7}, {4, 3}, {4, 0}, {5, 0}, {5, INT32_MIN}, {6, -1}};
    for (const auto& [field, v] : cases) {
      bytes b = good;
      put_u32(b, 4 * field, static_cast<std::uint32_t>(v));
      INFO("field " << field << " = " << v);
      require_load_error([&] { load_llama2c(view(b), "hdr.bin"); }, {"hdr.bin"});
    }
  }
  SECTION("huge but consistent header is rejected before allocating") {
    bytes b = good;
    put_u32(b, 0, 1 << 20);   // dim
    put_u32(b, 4, 1 << 20);   // hidden
    put_u32(b, 8, 4096);      // layers
    put_u32(b, 12, 1 << 10);  // heads
    put_u32(b, 16, 1 << 10);
    require_load_error([&] { load_llama2c(view(b), "big.bin"); }, {"big.bin", "truncated", "needs"});
  }
  SECTION("non-finite weights and other formats") {
    bytes b = good;
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(b.data() + 28 + 4 * 10, &nan, 4);
    require_load_error([&] { load_llama2c(view(b), "nan.bin"); }, {"nan.bin", "token_embedding", "non-finite"});
    const bytes gg = write_gguf(m);
    require_load_error([&] { load_llama2c(view(gg), "x.gguf"); }, {"x.gguf", "GGUF"});
    require_load_error([] { load_llama2c_file("/nonexistent/model.bin"); }, {"/nonexistent/model.bin", "cannot open"});
  }
  SECTION("tokenizer files") {
    const tokenizer t = make_byte_vocab({"ab"});
    const bytes tb = write_llama2c_tokenizer(t);
    for (std::size_t n = 0; n < tb.size(); n += 7) {
      const bytes cut(tb.begin(), tb.begin() + static_cast<std::ptrdiff_t>(n));
      require_load_error([&] { load_llama2c_tokenizer(view(cut), static_cast<int>(t.size()), "tok.bin"); },
                         {"tok.bin"});
    }
    require_load_error([&] { load_llama2c_tokenizer(view(tb), static_cast<int>(t.size()) - 1, "tok.bin"); },
                       {"tok.bin", "trailing"});
    bytes bad = tb;
    put_u32(bad, 4 + 4, 0x7fffffff);  // first token's length
    require_load_error([&] { load_llama2c_tokenizer(view(bad), static_cast<int>(t.size()), "tok.bin"); },
                       {"tok.bin", "length"});
  }
}

TEST_CASE("loaders: malformed GGUF input gives load_error naming the file", "[engine][loaders][errors]") {
  const model m = make_random_model(small_config(false), 7);
  const tokenizer t = make_byte_vocab();
  config cv = small_config(false);
  cv.vocab_size = static_cast<int>(t.size());
  const model mv = make_random_model(cv, 8);
  const bytes good = write_gguf(mv, &t);
  REQUIRE(load_gguf(view(good), "ok.gguf").has_vocab);
  SECTION("every truncation") {
    for (std::size_t n = 0; n < good.size(); n += (n < 4096 ? 3 : 1499)) {
      const bytes b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
      require_load_error([&] { load_gguf(view(b), "cut.gguf"); }, {"cut.gguf"});
    }
  }
  const bytes plain = write_gguf(m);
  SECTION("magic, version, counts") {
    bytes b = plain;
    b[0] = 'X';
    require_load_error([&] { load_gguf(view(b), "m.gguf"); }, {"m.gguf", "magic"});
    for (std::uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
      b = plain;
      put_u32(b, 4, v);
      require_load_error([&] { load_gguf(view(b), "v.gguf"); }, {"v.gguf", "version"});
    }
    b = plain;
    put_u64(b, 8, ~std::uint64_t{0});
    require_load_error([&] { load_gguf(view(b), "c.gguf"); }, {"c.gguf", "tensor_count"});
    b = plain;
    put_u64(b, 16, std::uint64_t{1} << 60);
    require_load_error([&] { load_gguf(view(b), "c.gguf"); }, {"c.gguf", "metadata_kv_count"});
    b = plain;
    put_u64(b, 24, std::uint64_t{1} << 62);  // length of the first key
    require_load_error([&] { load_gguf(view(b), "k.gguf"); }, {"k.gguf", "truncated"});
  }
  // Patch helpers: find a byte string in the file.
  auto find = [](const bytes& b, const std::string& s) {
    const auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
    REQUIRE(it != b.end());
    return static_cast<std::size_t>(it - b.begin());
  };
  SECTION("missing tensor, wrong shape, unsupported type, bad offset") {
    bytes b = plain;
    b[find(b, "blk.1.ffn_up.weight") + 4] = 'X';  // rename: the tensor is now missing
    require_load_error([&] { load_gguf(view(b), "t.gguf"); }, {"t.gguf", "missing tensor 'blk.1.ffn_up.weight'"});
    const std::string nm = "blk.0.attn_k.weight";
    const std::size_t info = find(plain, nm) + nm.size();  // n_dims, ne0, ne1, type, offset
    b = plain;
    put_u64(b, info + 4 + 8, 33);  // ne1 32 -> 33
    require_load_error([&] { load_gguf(view(b), "s.gguf"); }, {"s.gguf", "blk.0.attn_k.weight", "shape"});
    b = plain;
    put_u32(b, info + 4 + 16, 12);  // Q4_K
    require_load_error([&] { load_gguf(view(b), "q.gguf"); }, {"q.gguf", "Q4_K", "supported"});
    b = plain;
    put_u32(b, info + 4 + 16, 77);
    require_load_error([&] { load_gguf(view(b), "q.gguf"); }, {"q.gguf", "type"});
    b = plain;
    put_u64(b, info + 4 + 20, std::uint64_t{1} << 40);
    require_load_error([&] { load_gguf(view(b), "o.gguf"); }, {"o.gguf", "blk.0.attn_k.weight", "truncated"});
    b = plain;
    put_u64(b, info + 4 + 20, 8);
    require_load_error([&] { load_gguf(view(b), "o.gguf"); }, {"o.gguf", "alignment"});
    b = plain;
    put_u32(b, info, 7);
    require_load_error([&] { load_gguf(view(b), "d.gguf"); }, {"d.gguf", "dimensions"});
  }
  SECTION("metadata: architecture, hyperparameters, duplicates") {
    bytes b = plain;
    b[find(b, "general.architecture") + 20 + 4 + 8] = 'X';  // value "llama" -> "Xlama"
    require_load_error([&] { load_gguf(view(b), "a.gguf"); }, {"a.gguf", "Xlama", "not supported"});
    b = plain;
    const std::string key = "llama.attention.head_count_kv";
    put_u32(b, find(b, key) + key.size() + 4, 3);  // 4 heads, 3 kv heads
    require_load_error([&] { load_gguf(view(b), "h.gguf"); }, {"h.gguf", "n_kv_heads"});
    b = plain;
    const std::string bk = "llama.block_count";
    put_u32(b, find(b, bk) + bk.size() + 4, 1u << 31);
    require_load_error([&] { load_gguf(view(b), "h.gguf"); }, {"h.gguf", "llama.block_count"});
    b = plain;
    b[find(b, "llama.embedding_length") + 6] = 'X';
    require_load_error([&] { load_gguf(view(b), "h.gguf"); }, {"h.gguf", "missing metadata 'llama.embedding_length'"});
    b = plain;
    const std::string ek = "llama.embedding_length";
    put_u32(b, find(b, ek) + ek.size(), 8);  // value type uint32 -> string: misparses the rest
    require_load_error([&] { load_gguf(view(b), "h.gguf"); }, {"h.gguf"});
    b = plain;
    const std::string hk = "llama.attention.head_count";
    put_u32(b, find(b, hk + "\x04") + hk.size(), 6);  // uint32 -> float32
    require_load_error([&] { load_gguf(view(b), "h.gguf"); }, {"h.gguf", "head_count"});
  }
  SECTION("tokenizer arrays") {
    bytes b = good;
    const std::string tk = "tokenizer.ggml.tokens";
    put_u64(b, find(b, tk) + tk.size() + 4 + 4, std::uint64_t{1} << 61);
    require_load_error([&] { load_gguf(view(b), "v.gguf"); }, {"v.gguf", "tokenizer.ggml.tokens"});
  }
}

TEST_CASE("loaders: GGUF sliding windows and soft-cap round trip (bool array, uint32 period, all local)",
          "[engine][loaders][window]") {
  config c = small_config(true);
  c.n_layers = 3;
  c.sliding_window = 4;
  c.attn_softcap = 3.5f;
  for (int form = 0; form < 3; ++form) {
    INFO("form " << form);
    config cf = c;
    gguf_write_options opt;
    if (form == 0) cf.local_layers = {true, false, true};
    if (form == 1) {  // 0, 1 local; 2 global
      cf.local_layers = local_layer_pattern(3, 3);
      opt.swa_period = 3;
    }
    // form 2: no pattern key, every layer local (Mistral)
    const model m = make_random_model(cf, 12);
    const bytes b = write_gguf(m, nullptr, opt);
    const model g = load_gguf(view(b), "w.gguf").weights;
    CHECK(g.cfg.sliding_window == 4);
    CHECK(g.cfg.attn_softcap == std::optional<float>(3.5f));
    CHECK(g.cfg.local_layers == cf.local_layers);
    for (std::size_t l = 0; l < 3; ++l) CHECK(g.cfg.window(l) == m.cfg.window(l));
    CHECK(same_bits(logits_of(g), logits_of(m)));  // 7 tokens > W: the windows are in force
  }
  CHECK(local_layer_pattern(6, 6) == std::vector<bool>{true, true, true, true, true, false});
  CHECK(local_layer_pattern(4, 0) == std::vector<bool>(4, true));
  CHECK(local_layer_pattern(2, 1) == std::vector<bool>(2, false));
  // a plain model writes none of the keys
  const bytes plain = write_gguf(make_random_model(small_config(true), 3));
  const std::string ps(plain.begin(), plain.end());
  CHECK(ps.find("sliding_window") == std::string::npos);
  CHECK(ps.find("softcapping") == std::string::npos);
}

TEST_CASE("loaders: bad GGUF sliding-window / soft-cap metadata and configs are errors naming them",
          "[engine][loaders][window][errors]") {
  config c = small_config(true);
  c.sliding_window = 4;
  c.local_layers = {true, false};
  c.attn_softcap = 3.5f;
  const model m = make_random_model(c, 13);
  const bytes good = write_gguf(m);
  auto find = [](const bytes& b, const std::string& s) {
    const auto it = std::search(b.begin(), b.end(), s.begin(), s.end());
    REQUIRE(it != b.end());
    return static_cast<std::size_t>(it - b.begin());
  };
  const std::string wk = "llama.attention.sliding_window", pk = wk + "_pattern", ck = "llama.attn_logit_softcapping";
  bytes b = good;
  b[find(b, wk + "\x04") + wk.size() - 1] = 'x';  // the window key renamed: a pattern without window
  require_load_error([&] { load_gguf(view(b), "p.gguf"); }, {"p.gguf", pk, "without", wk});
  b = good;
  put_u32(b, find(b, wk + "\x04") + wk.size() + 4, 0);  // W = 0 with a pattern
  require_load_error([&] { load_gguf(view(b), "z.gguf"); }, {"z.gguf", pk, "is 0"});
  {  // 3 bools for 2 layers: a 3-layer file whose block_count says 2
    config c3 = c;
    c3.n_layers = 3;
    c3.local_layers = {true, false, true};
    b = write_gguf(make_random_model(c3, 15));
    const std::string bk = "llama.block_count";
    put_u32(b, find(b, bk) + bk.size() + 4, 2);
    require_load_error([&] { load_gguf(view(b), "n.gguf"); }, {"n.gguf", pk, "has 3 entries", "block_count = 2"});
  }
  b = good;
  put_u32(b, find(b, pk) + pk.size() + 4, 6);  // array of float32 (the 2 bools + 6 bytes misparse)
  require_load_error([&] { load_gguf(view(b), "t.gguf"); }, {"t.gguf"});
  b = good;
  const float neg = -1.0f;
  std::memcpy(b.data() + find(b, ck) + ck.size() + 4, &neg, 4);
  require_load_error([&] { load_gguf(view(b), "c.gguf"); }, {"c.gguf", ck, "must be >= 0"});
  b = good;
  const float inf = std::numeric_limits<float>::infinity();
  std::memcpy(b.data() + find(b, ck) + ck.size() + 4, &inf, 4);
  require_load_error([&] { load_gguf(view(b), "c.gguf"); }, {"c.gguf", ck, "not finite"});
  // a period form: uint32 period within [0, 4096]
  gguf_write_options opt;
  config cp = c;
  cp.local_layers = local_layer_pattern(2, 2);
  opt.swa_period = 2;
  b = write_gguf(make_random_model(cp, 14), nullptr, opt);
  CHECK(load_gguf(view(b), "ok.gguf").weights.cfg.local_layers == std::vector<bool>{true, false});
  put_u32(b, find(b, pk) + pk.size() + 4, 5000);
  require_load_error([&] { load_gguf(view(b), "q.gguf"); }, {"q.gguf", pk, "5000", "outside"});
  opt.swa_period = 3;  // does not describe {true, false}
  depthkv_test::require_error([&] { write_gguf(make_random_model(cp, 14), nullptr, opt); },
                              {"minillama::write_gguf", "swa_period 3"});
  // configs that validate() rejects, naming the field
  config bad = small_config(true);
  bad.sliding_window = -1;
  depthkv_test::require_error([&] { model::zeros(bad); }, {"sliding_window must be >= 0", "-1"});
  bad = small_config(true);
  bad.local_layers = {true, true};
  depthkv_test::require_error([&] { model::zeros(bad); }, {"local_layers is set but sliding_window is 0"});
  bad.sliding_window = 4;
  bad.local_layers = {true};
  depthkv_test::require_error([&] { model::zeros(bad); }, {"local_layers has 1 entries", "n_layers = 2"});
  bad.local_layers.clear();
  bad.attn_softcap = 0.0f;
  depthkv_test::require_error([&] { model::zeros(bad); }, {"attn_softcap must be finite and > 0", "got 0"});
  depthkv_test::require_error([&] { local_layer_pattern(3, -1); }, {"minillama::local_layer_pattern", "period", "-1"});
}
