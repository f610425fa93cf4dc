// minillama evaluation data: token-id lists and line-per-sequence data files.
#include "minillama/eval_data.hpp"

#include <cstdint>
#include <fstream>
#include <istream>
#include <sstream>

#include "minillama/loaders.hpp"
#include "text.hpp"

namespace minillama {

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The blank-separated fields of a text.
std::vector<std::string> fields_of(const std::string& s) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && is_blank(s[i])) ++i;
    const std::size_t b = i;
    while (i < s.size() && !is_blank(s[i])) ++i;
    if (i > b) out.push_back(s.substr(b, i - b));
  }
  return out;
}

// A field quoted for a message, shortened when long (a fuzzer's field can be huge).
std::string quoted(const std::string& f) {
  constexpr std::size_t kMax = 100;
  return "'" + (f.size() <= kMax ? f : f.substr(0, kMax) + "...") + "'";
}

}  // namespace

std::vector<int> parse_token_ids(const std::string& text, int vocab_size, std::size_t first_position) {
  const std::uint64_t bound = static_cast<std::uint64_t>(vocab_size > 0 ? vocab_size : max_vocab_size);
  std::vector<int> ids;
  std::size_t pos = first_position;
  for (const std::string& f : fields_of(text)) {
    bool digits = true;
    for (char c : f) digits = digits && is_digit(c);
    if (!digits) {
      const bool negative = f.size() > 1 && f[0] == '-' && is_digit(f[1]);
      bool rest = negative;
      for (std::size_t i = 1; rest && i < f.size(); ++i) rest = is_digit(f[i]);
      throw token_id_error(minillama::concat("token id ", quoted(f), " at position ", pos,
                                                   negative && rest ? " is negative" : " is not a non-negative integer"),
                           pos);
    }
    std::uint64_t v = 0;
    bool over = false;
    for (char c : f) {
      v = v * 10 + static_cast<std::uint64_t>(c - '0');
      if (v >= bound) {  // stop before any overflow; the message shows the id as given
        over = true;
        break;
      }
    }
    if (over) {
      if (vocab_size > 0)
        throw token_id_error(minillama::concat("token id ", f.size() <= 100 ? f : quoted(f), " at position ", pos,
                                                     " is outside the vocabulary (", vocab_size, ")"),
                             pos);
      throw token_id_error(minillama::concat("token id ", f.size() <= 100 ? f : quoted(f), " at position ", pos,
                                                   " exceeds every vocabulary (at most ", max_vocab_size, " tokens)"),
                           pos);
    }
    ids.push_back(static_cast<int>(v));
    ++pos;
  }
  return ids;
}

bool looks_like_token_ids(const std::string& text) {
  const std::vector<std::string> fs = fields_of(text);
  if (fs.empty()) return false;
  for (const std::string& f : fs) {
    const bool sign = f[0] == '-' || f[0] == '+';
    if (!(is_digit(f[0]) || (sign && f.size() > 1 && is_digit(f[1])))) return false;
  }
  return true;
}

namespace eval_data {

data_error::data_error(const std::string& name, std::size_t line, const std::string& message)
    : depthkv::error(line ? name + ":" + std::to_string(line) + ": " + message : message), name_(name), line_(line) {}

bool only_ids(const std::string& line) { return looks_like_token_ids(line); }

std::vector<int> parse_ids(const std::string& s, int vocab, const std::string& name, std::size_t line,
                           std::size_t first_position) {
  try {
    return parse_token_ids(s, vocab, first_position);
  } catch (const token_id_error& e) {
    throw data_error(name, line, e.what());
  }
}

std::vector<std::vector<std::size_t>> find_answers(const tokenizer& tok, int prev, const std::vector<int>& cont) {
  std::string text;
  std::vector<std::size_t> owner;  // char -> token
  for (std::size_t j = 0; j < cont.size(); ++j) {
    const std::string piece = tok.decode(j == 0 ? prev : cont[j - 1], cont[j]);
    text += piece;
    owner.insert(owner.end(), piece.size(), j);
  }
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '?') continue;
    std::size_t k = i + 1;
    while (k < text.size() && text[k] >= 'A' && text[k] <= 'Z') ++k;
    if (k == i + 1) continue;
    const std::size_t d0 = k;
    while (k < text.size() && text[k] >= '0' && text[k] <= '9') ++k;
    if (k == d0 || k >= text.size() || text[k] != ';') continue;
    std::vector<std::size_t> toks;
    for (std::size_t c = d0; c < k; ++c)
      if (toks.empty() || toks.back() != owner[c]) toks.push_back(owner[c]);
    out.push_back(std::move(toks));
    i = k;
  }
  return out;
}

namespace {

sample read_line(const std::string& line, const std::string& name, std::size_t lineno, const read_options& o) {
  const auto tab = line.find('\t');
  std::vector<int> ctx, cont;
  if (only_ids(line)) {
    if (tab == std::string::npos) {
      ctx = parse_ids(line, o.vocab, name, lineno);
    } else {
      ctx = parse_ids(line.substr(0, tab), o.vocab, name, lineno);
      cont = parse_ids(line.substr(tab + 1), o.vocab, name, lineno, ctx.size() + 1);
    }
  } else {
    if (!o.tok) throw data_error(name, lineno, "text data needs a tokenizer (--tokenizer), or write token ids");
    const tokenizer& tok = *o.tok;
    // Character vocabularies must not get a dummy-prefix space in the middle of a sequence.
    if (tab == std::string::npos) {
      ctx = tok.encode(line, true);
    } else {
      ctx = tok.encode(line.substr(0, tab), true);
      const std::string c = line.substr(tab + 1);
      cont = tok.encode(c, false);
      if (o.dummy_prefix && !cont.empty() && !c.empty() && c[0] != ' ') {
        // sentencepiece put a space before the continuation; drop it (it was not in the line).
        const std::string first = tok.decode(ctx.empty() ? 1 : ctx.back(), cont[0]);
        if (first == " ") cont.erase(cont.begin());
      }
    }
  }
  if (tab == std::string::npos) {
    if (ctx.size() < o.cont_len + 2)
      throw data_error(name, lineno, "line too short for --cont " + std::to_string(o.cont_len) + " (" +
                                         std::to_string(ctx.size()) + " tokens)");
    cont.assign(ctx.end() - static_cast<std::ptrdiff_t>(o.cont_len), ctx.end());
    ctx.resize(ctx.size() - o.cont_len);
  }
  if (o.max_context && ctx.size() > o.max_context) {
    std::vector<int> t{ctx[0]};
    t.insert(t.end(), ctx.end() - static_cast<std::ptrdiff_t>(o.max_context - 1), ctx.end());
    ctx = std::move(t);
  }
  if (ctx.size() < 2 || cont.size() < 2)
    throw data_error(name, lineno, "need >= 2 context and >= 2 continuation tokens");
  sample s;
  s.prefix = ctx.size();
  s.tokens = ctx;
  s.tokens.insert(s.tokens.end(), cont.begin(), cont.end());
  for (int id : s.tokens)
    if (id < 0 || id >= o.vocab)
      throw data_error(name, lineno,
                       "token id " + std::to_string(id) + " outside the vocabulary (" + std::to_string(o.vocab) + ")");
  if (o.tok) s.answers = find_answers(*o.tok, ctx.back(), cont);
  return s;
}

}  // namespace

std::vector<sample> read_set(std::istream& in, const std::string& name, const read_options& o) {
  if (o.max_context == 1) throw data_error(name, 0, "max_context must be 0 or >= 2");
  std::vector<sample> out;
  std::string line;
  std::size_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (o.max_seqs && out.size() >= o.max_seqs) break;
    try {
      out.push_back(read_line(line, name, lineno, o));
    } catch (const data_error&) {
      throw;
    } catch (const depthkv::error& e) {  // the tokenizer's (a byte without a piece, ...)
      throw data_error(name, lineno, e.what());
    }
  }
  if (in.bad()) throw data_error(name, 0, "read error in '" + name + "'");
  if (out.empty()) throw data_error(name, 0, "no sequences in '" + name + "'");
  return out;
}

std::vector<sample> read_set_text(const std::string& text, const std::string& name, const read_options& opt) {
  std::istringstream in(text);
  return read_set(in, name, opt);
}

std::vector<sample> read_set_file(const std::string& path, const read_options& opt) {
  try {
    check_regular_file(path);
  } catch (const load_error& e) {
    throw data_error(path, 0, std::string("data file ") + e.what());
  }
  std::ifstream f(path);
  if (!f) throw data_error(path, 0, "cannot open data file '" + path + "'");
  return read_set(f, path, opt);
}

}  // namespace eval_data
}  // namespace minillama
