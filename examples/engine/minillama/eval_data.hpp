// minillama evaluation data: token-id lists and the line-per-sequence data files of the
// evaluation harness (examples/eval.cpp).
//
// Data format: one sequence per line, `context<TAB>continuation`, either as text (tokenized,
// BOS prepended to the context) or as token ids separated by blanks (used as given). A line is
// read as token ids when every blank-separated field starts with a digit (or a sign and a
// digit); every field of such a line must then be a token id, else the line is an error (so
// `12abc` or `-3` is reported, never cut). A line without a TAB is split so that its last
// `cont_len` tokens are the continuation. CRLF line ends are accepted; empty lines are skipped.
//
// Every error is thrown (data_error naming `name:line`), never exit(): the readers parse from a
// std::istream or a string as well as from a file, so they can be fed arbitrary bytes.
#pragma once

#include <cstddef>
#include <iosfwd>
#include <string>
#include <vector>

#include "depthkv/error.hpp"
#include "minillama/tokenizer.hpp"

namespace minillama {

// A malformed token-id list. position() is the 1-based index of the offending field.
class token_id_error : public depthkv::error {
 public:
  token_id_error(const std::string& what, std::size_t position) : depthkv::error(what), position_(position) {}
  std::size_t position() const noexcept { return position_; }

 private:
  std::size_t position_;
};

// Largest vocabulary any minillama model has (config::validate): the bound on ids when the
// vocabulary is not known yet.
inline constexpr int max_vocab_size = 1 << 24;

// Blank-separated (space, TAB, CR, LF, VT, FF) token ids, each a decimal non-negative integer
// below vocab_size (vocab_size <= 0: below max_vocab_size). Throws token_id_error at the first
// bad field, e.g. "token id 70000 at position 3 is outside the vocabulary (512)"; `first_position`
// is the position of the text's first field (for a list that continues another one).
std::vector<int> parse_token_ids(const std::string& text, int vocab_size, std::size_t first_position = 1);

// True when the text has a field and every field starts with a digit or with '+'/'-' and a
// digit: such a data line is read as token ids (see the format above).
bool looks_like_token_ids(const std::string& text);

namespace eval_data {

// A data file problem: what() is "<name>:<line>: <message>" (or "<message>" naming the input
// when the problem is not on one line: missing file, no sequences).
class data_error : public depthkv::error {
 public:
  data_error(const std::string& name, std::size_t line, const std::string& message);
  const std::string& name() const noexcept { return name_; }
  std::size_t line() const noexcept { return line_; }  // 1-based; 0: not a line's problem

 private:
  std::string name_;
  std::size_t line_;
};

// One evaluation sequence: tokens = context (with BOS) + continuation.
struct sample {
  std::vector<int> tokens;
  std::size_t prefix = 0;  // context length (tokens[0, prefix) are prefilled)
  // Per query: continuation-relative indices of the answer tokens.
  std::vector<std::vector<std::size_t>> answers;
};

struct read_options {
  const tokenizer* tok = nullptr;  // needed for text lines and for retrieval queries
  int vocab = 0;                   // the model's vocabulary size (ids must be below it)
  bool dummy_prefix = false;       // the tokenizer adds a sentencepiece dummy-prefix space
  std::size_t max_seqs = 0;        // read at most this many sequences (0 = all)
  std::size_t max_context = 0;     // keep BOS + the last max_context - 1 context tokens (0 = all; else >= 2)
  std::size_t cont_len = 32;       // continuation length of lines without a TAB
};

// True when the line (without its line end) is read as token ids: looks_like_token_ids.
bool only_ids(const std::string& line);

// Token ids of one line's part; errors become data_error at `name`:`line`.
std::vector<int> parse_ids(const std::string& s, int vocab, const std::string& name, std::size_t line,
                           std::size_t first_position = 1);

// Queries "?" [A-Z]+ [0-9]+ ";" in the decoded continuation -> token indices of the digits.
std::vector<std::vector<std::size_t>> find_answers(const tokenizer& tok, int prev, const std::vector<int>& cont);

// Reads the sequences of a data file's contents. `name` names the input in messages. Throws
// data_error (a bad line, or no sequence at all).
std::vector<sample> read_set(std::istream& in, const std::string& name, const read_options& opt);
std::vector<sample> read_set_text(const std::string& text, const std::string& name, const read_options& opt);
// The same from a file; throws data_error if it is missing, not a regular file or unreadable.
std::vector<sample> read_set_file(const std::string& path, const read_options& opt);

}  // namespace eval_data
}  // namespace minillama
