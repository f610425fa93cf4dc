// minillama: model hyperparameters and f32 weights of a llama-architecture transformer.
//
// Weight layout follows llama2.c: every linear map is a row-major [out][in] matrix, applied as
// y = W x. RoPE rotates ADJACENT pairs (x[2i], x[2i+1]) of each head (llama2.c run.c, Meta's
// original checkpoints, and GGUF files of architecture "llama", whose converters already
// permuted Q/K from Hugging Face's rotate-half order back to adjacent pairs). A Hugging Face
// checkpoint loaded directly would need that permutation of wq/wk rows:
//   row (h, 2i + j) of ours  <-  row (h, i + j * head_dim / 2) of HF's, j in {0, 1}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace minillama {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using vector = Eigen::VectorXf;

// Hyperparameters. head_dim = dim / n_heads; kv_dim = head_dim * n_kv_heads.
struct config {
  int dim = 0;
  int hidden_dim = 0;  // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;     // training context (informative; the engine does not cap positions)
  float rope_theta = 10000.0f;
  // Rotated dims per head: pairs i < rope_dim / 2 turn by pos * theta^(-2i / rope_dim), the other
  // dims carry no position (partial rotary, GGUF's llama.rope.dimension_count). 0 = head_dim.
  int rope_dim = 0;
  float norm_eps = 1e-5f;
  bool shared_classifier = true;  // classifier == token embedding
  // Hybrid attention (Mistral, Gemma 2/3): a local layer attends through a sliding window, the
  // query at position p sees the keys at positions k with p - k < sliding_window (HF
  // Mistral/Gemma convention, the same in tools/reference.py and tools/train.py); its cache keeps
  // the last sliding_window rows. 0 = no window, every layer global.
  int sliding_window = 0;
  // Per layer, true = local. Empty with sliding_window > 0: every layer is local (Mistral).
  std::vector<bool> local_layers;
  // Gemma-2 attention logit soft-cap: the scaled scores s become cap * tanh(s / cap) before the
  // causal/window mask and the softmax. Absent = none.
  std::optional<float> attn_softcap;

  int head_dim() const noexcept { return n_heads > 0 ? dim / n_heads : 0; }
  int kv_dim() const noexcept { return head_dim() * n_kv_heads; }
  int rotary_dim() const noexcept { return rope_dim > 0 ? rope_dim : head_dim(); }
  // Angle per position of rotary pair i (0 for the pairs past rotary_dim).
  double rope_freq(int i) const noexcept;
  // Sliding window of `layer`: sliding_window for a local layer, 0 for a global one.
  int window(std::size_t layer) const noexcept;
  // Whether any layer is local.
  bool has_local_layers() const noexcept;
  // Throws depthkv::error("<where>: ...") naming the first inconsistent field.
  void validate(const std::string& where) const;
};

// local_layers for llama.cpp's `sliding_window_pattern = period`: layer l is global when
// (l + 1) % period == 0 (the last layer of every group of `period`), local otherwise; period 1:
// every layer global, 0: every layer local. Throws depthkv::error for n_layers or period < 0.
std::vector<bool> local_layer_pattern(int n_layers, int period);

struct layer_weights {
  vector attn_norm;       // [dim]
  matrix wq, wk, wv, wo;  // [dim][dim], [kv_dim][dim], [kv_dim][dim], [dim][dim]
  vector ffn_norm;        // [dim]
  matrix w1, w2, w3;      // gate [hidden][dim], down [dim][hidden], up [hidden][dim]
};

struct model {
  config cfg;
  matrix token_embedding;  // [vocab][dim]
  std::vector<layer_weights> layers;
  vector final_norm;       // [dim]
  matrix classifier;       // [vocab][dim]; empty when cfg.shared_classifier

  const matrix& output_weights() const noexcept {
    return cfg.shared_classifier ? token_embedding : classifier;
  }
  // Allocates zero weights of the right shapes for cfg (validated).
  static model zeros(const config& cfg);
  // Throws depthkv::error if any weight's shape disagrees with cfg.
  void check_shapes(const std::string& where) const;
  // Bytes of f32 weights held.
  std::size_t weight_bytes() const noexcept;
};

// Deterministic random weights (splitmix64; identical to tools/reference.py --random):
// linear maps uniform in +-1/sqrt(in), embeddings +-1, norms 1 +- 0.25. Tensors are drawn in
// llama2.c file order from one stream seeded with `seed`.
model make_random_model(const config& cfg, std::uint64_t seed);

// The splitmix64 step and the float it maps to (exact in f32 and in Python): uniform in [-1, 1).
std::uint64_t splitmix64(std::uint64_t& state) noexcept;
float uniform_pm1(std::uint64_t& state) noexcept;

}  // namespace minillama
