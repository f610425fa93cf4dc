// minillama::tokenizer: score-driven BPE over a vocabulary of byte-string pieces
// (llama2.c tokenizer.bin, or the tokenizer.ggml.* arrays of a GGUF file).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "depthkv/types.hpp"

namespace minillama {

struct tokenizer_options {
  int bos = 1;                    // id of the begin-of-sequence token (-1: none)
  int eos = 2;                    // id of the end-of-sequence token (-1: none)
  bool add_dummy_prefix = true;   // sentencepiece: a leading space before non-empty text
  std::string space_marker;       // "" (llama2.c pieces hold real spaces) or "\xE2\x96\x81" (GGUF "llama": U+2581)
};

class tokenizer {
 public:
  tokenizer() = default;
  // pieces[i] is token i's bytes, scores[i] its merge priority (higher merges first).
  // Throws depthkv::error when the sizes differ or the vocabulary is empty.
  tokenizer(std::vector<std::string> pieces, std::vector<float> scores, tokenizer_options opt = {});

  std::size_t size() const noexcept { return pieces_.size(); }
  const std::string& piece(int id) const;
  float score(int id) const;
  const tokenizer_options& options() const noexcept { return opt_; }
  // Id of an exact piece, or -1.
  int find(const std::string& piece) const;

  // Text -> ids: code points (UTF-8) looked up as pieces, unknown ones as byte tokens "<0xXX>",
  // then repeatedly merges the adjacent pair whose concatenation is the highest-scoring piece
  // (leftmost on ties). Throws depthkv::error if a byte has neither a piece nor a byte token.
  std::vector<int> encode(const std::string& text, bool add_bos, bool add_eos = false) const;
  // One token's text given the previous token (drops the dummy-prefix space after BOS,
  // turns "<0xXX>" into the byte, and the space marker into spaces).
  std::string decode(int prev, int token) const;
  // Ids -> text.
  std::string decode(depthkv::span<const int> ids) const;

 private:
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  tokenizer_options opt_;
  std::unordered_map<std::string, int> index_;
  int byte_token_[256];
};

}  // namespace minillama
