// minillama writers: llama2.c (legacy) checkpoints and tokenizers, GGUF v3 — for tests,
// fuzz seeds and tools. Byte buffers in memory; write_file stores one.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "minillama/loaders.hpp"
#include "minillama/model.hpp"
#include "minillama/tokenizer.hpp"

namespace minillama {

std::vector<std::uint8_t> write_llama2c(const model& m);
std::vector<std::uint8_t> write_llama2c_tokenizer(const tokenizer& t);

struct gguf_write_options {
  ggml_type matrix_type = ggml_type::f32;  // 2-D weights; norms are always F32 (as llama.cpp does)
  std::uint32_t version = 3;               // 2 or 3 (same layout for little-endian files)
  std::uint32_t alignment = 32;            // written as general.alignment when != 32
  std::string name = "minillama";
  // Hybrid models: llama.attention.sliding_window_pattern as a per-layer bool array (0, default)
  // or as llama.cpp's uint32 period (then cfg.local_layers must be local_layer_pattern(n_layers,
  // period), or empty = every layer local for period 0).
  std::uint32_t swa_period = 0;
};
// Writes architecture "llama" with tensors named as llama.cpp does; the vocabulary (if given)
// as tokenizer.ggml.* with model "llama" (spaces of pieces become U+2581). Sliding windows as
// llama.attention.sliding_window (uint32) and llama.attention.sliding_window_pattern (true =
// local; absent = every layer local), the soft-cap as llama.attn_logit_softcapping (float32).
std::vector<std::uint8_t> write_gguf(const model& m, const tokenizer* vocab = nullptr, const gguf_write_options& opt = {});

// Rounds every 2-D weight of m exactly as write_gguf(type) stores it, so a model written as
// llama2.c after rounding loads to the same weights as the GGUF file.
void round_weights(model& m, ggml_type type);

void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes);

// A byte-fallback vocabulary for tests: <unk>, <s>, </s>, <0x00>..<0xFF>, then `extra` pieces
// (scores descending in order given).
tokenizer make_byte_vocab(const std::vector<std::string>& extra = {});

}  // namespace minillama
