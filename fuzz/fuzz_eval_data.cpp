// libFuzzer target for the evaluation harness's data-file reader (minillama::eval_data): any
// bytes either parse into sequences that satisfy the reader's contract or throw data_error,
// with and without a tokenizer (text lines, retrieval queries), with and without the
// context / sequence limits. Never a crash, never a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "minillama/eval_data.hpp"
#include "minillama/tokenizer.hpp"

namespace {

// A small vocabulary of single characters, so text lines tokenize (byte-level pieces).
const minillama::tokenizer& vocab() {
  static const minillama::tokenizer t = [] {
    std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores = {0, 0, 0};
    for (int c = 32; c < 127; ++c) {
      pieces.emplace_back(1, static_cast<char>(c));
      scores.push_back(-1.f);
    }
    for (const char* p : {"?K", "12", ";\t", "ab"}) {
      pieces.emplace_back(p);
      scores.push_back(-0.5f);
    }
    return minillama::tokenizer(pieces, scores);
  }();
  return t;
}

void check(const std::vector<minillama::eval_data::sample>& set, const minillama::eval_data::read_options& o) {
  if (set.empty()) std::abort();  // an empty result must be an error instead
  if (o.max_seqs && set.size() > o.max_seqs) std::abort();
  for (const auto& s : set) {
    if (s.prefix < 2 || s.tokens.size() < s.prefix + 2) std::abort();
    if (o.max_context && s.prefix > o.max_context) std::abort();
    for (const int id : s.tokens)
      if (id < 0 || id >= o.vocab) std::abort();
    const std::size_t cont = s.tokens.size() - s.prefix;
    for (const auto& q : s.answers)
      for (const std::size_t j : q)
        if (j >= cont) std::abort();
  }
}

}  // namespace

// The first byte picks the reader's options (no tokenizer / tokenizer / dummy prefix and limits /
// a large vocabulary); the rest is the file's contents.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int variant = data[0] % 4;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const int vocab_size = static_cast<int>(vocab().size());
  {
    minillama::eval_data::read_options o;
    o.vocab = variant == 3 ? 70000 : vocab_size;
    o.tok = variant == 0 || variant == 3 ? nullptr : &vocab();
    o.dummy_prefix = variant == 2;
    o.max_seqs = variant == 1 ? 2 : 0;
    o.max_context = variant == 2 ? 8 : 0;
    o.cont_len = variant == 1 ? 2 : 4;
    try {
      check(minillama::eval_data::read_set_text(text, "fuzz.txt", o), o);
    } catch (const minillama::eval_data::data_error&) {
    }
  }
  // Token-id lists alone (generate --ids): the first bad field is reported, never cut.
  try {
    const auto ids = minillama::parse_token_ids(text, vocab_size);
    for (const int id : ids)
      if (id < 0 || id >= vocab_size) std::abort();
  } catch (const minillama::token_id_error& e) {
    if (e.position() == 0) std::abort();
  }
  return 0;
}
