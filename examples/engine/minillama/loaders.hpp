// minillama loaders: llama2.c checkpoints and tokenizers, GGUF (v2/v3, architecture "llama").
//
// Every loader parses an in-memory byte buffer (the file wrappers read the file first), checks
// every size against the bytes present before reading or allocating, and reports bad input as
// load_error("<name>: <what is wrong>"): never a crash or an out-of-bounds read.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "depthkv/error.hpp"
#include "depthkv/types.hpp"
#include "minillama/model.hpp"
#include "minillama/tokenizer.hpp"

namespace minillama {

// Malformed or unsupported model/tokenizer input. what() starts with the file name.
class load_error : public depthkv::error {
 public:
  using depthkv::error::error;
};

using bytes_view = depthkv::span<const std::uint8_t>;

// Throws load_error("<path>: ...") unless `path` names an existing regular file this process may
// read: a missing path, a directory, a device or FIFO, or an unreadable file is named as such.
void check_regular_file(const std::string& path);

// Whole file into memory; throws load_error naming the path if it cannot be read (see
// check_regular_file) or is too large to hold in memory.
std::vector<std::uint8_t> read_file(const std::string& path);

// llama2.c legacy checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size (< 0: separate classifier follows), seq_len), then f32 weights in llama2.c order
// (embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real/imag
// [seq_len][head_dim/2], classifier if unshared). The header has no rope theta or norm eps.
// rope_theta > 0 is used as given (all dims rotated); rope_theta = 0 (default) reads theta and
// rope_dim (trailing pairs that never turn = partial rotary) from the freq_cis tables (run.c's
// legacy rotation tables encode them), or uses 10000 when the tables are all zero; tables that
// fit no theta are an error then. norm_eps comes from the argument.
model load_llama2c(bytes_view bytes, const std::string& name = "<memory>", float rope_theta = 0.0f,
                   float norm_eps = 1e-5f);
model load_llama2c_file(const std::string& path, float rope_theta = 0.0f, float norm_eps = 1e-5f);

// llama2.c tokenizer.bin: int32 max_token_length, then per token: f32 score, int32 length, bytes.
// vocab_size > 0: exactly that many tokens are read (trailing bytes are an error);
// vocab_size == 0: tokens are read to the end of the buffer.
tokenizer load_llama2c_tokenizer(bytes_view bytes, int vocab_size, const std::string& name = "<memory>",
                                 tokenizer_options opt = {});
tokenizer load_llama2c_tokenizer_file(const std::string& path, int vocab_size, tokenizer_options opt = {});

// GGML tensor types the GGUF loader reads (ggml_type ids).
enum class ggml_type : std::uint32_t { f32 = 0, f16 = 1, q8_0 = 8, bf16 = 30 };
const char* ggml_type_name(std::uint32_t t) noexcept;

struct gguf_model {
  model weights;
  tokenizer vocab;           // valid when has_vocab
  bool has_vocab = false;
  std::string vocab_note;    // why there is no vocabulary, when has_vocab is false
  std::uint32_t version = 0;
  std::string name;          // general.name, if present
};

// GGUF v2/v3, little-endian, general.architecture = "llama". Tensors F32, F16, BF16 or Q8_0
// (dequantised to f32). Hyperparameters from llama.* metadata; vocabulary from
// tokenizer.ggml.tokens/scores (model "llama": score-BPE with U+2581 as the space marker).
// Hybrid attention, where present: llama.attention.sliding_window (W), and
// llama.attention.sliding_window_pattern as per-layer bools (true = local) or llama.cpp's
// uint32 period (layer l global when (l + 1) % period == 0; absent = every layer local);
// llama.attn_logit_softcapping (Gemma 2's soft-cap; 0 = none).
gguf_model load_gguf(bytes_view bytes, const std::string& name = "<memory>");
gguf_model load_gguf_file(const std::string& path);

// A model and (if found) its tokenizer from a path: GGUF by magic, else llama2.c with the
// tokenizer at `tokenizer_path` (if non-empty).
struct loaded {
  model weights;
  tokenizer vocab;
  bool has_vocab = false;
  std::string format;  // "gguf" or "llama2c"
};
loaded load_any(const std::string& model_path, const std::string& tokenizer_path = "");

}  // namespace minillama
