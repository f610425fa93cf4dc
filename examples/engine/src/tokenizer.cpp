// minillama::tokenizer: BPE merges by score with byte fallback.
#include "minillama/tokenizer.hpp"

#include <cstdio>
#include <queue>

#include "depthkv/error.hpp"

namespace minillama {
namespace {

// Length of the UTF-8 sequence starting at s[i] (1 for an invalid or truncated one).
std::size_t utf8_len(const std::string& s, std::size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (std::size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
  return n;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  std::size_t i = 0;
  for (std::size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size()) out += s.substr(i, j - i) + to;
  return out + s.substr(i);
}

}  // namespace

tokenizer::tokenizer(std::vector<std::string> pieces, std::vector<float> scores, tokenizer_options opt)
    : pieces_(std::move(pieces)), scores_(std::move(scores)), opt_(std::move(opt)) {
  constexpr const char* where = "minillama::tokenizer";
  DEPTHKV_CHECK(!pieces_.empty(), where, "the vocabulary is empty");
  DEPTHKV_CHECK(pieces_.size() == scores_.size(), where, pieces_.size(), " pieces but ", scores_.size(), " scores");
  DEPTHKV_CHECK(pieces_.size() <= (1u << 24), where, "vocabulary of ", pieces_.size(), " pieces is too large");
  const int n = static_cast<int>(pieces_.size());
  if (opt_.bos >= n) opt_.bos = -1;
  if (opt_.eos >= n) opt_.eos = -1;
  index_.reserve(pieces_.size());
  for (int i = 0; i < n; ++i) index_.emplace(pieces_[static_cast<std::size_t>(i)], i);  // first wins
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_token_[b] = find(name);
  }
}

const std::string& tokenizer::piece(int id) const {
  DEPTHKV_CHECK(id >= 0 && static_cast<std::size_t>(id) < pieces_.size(), "minillama::tokenizer::piece", "id ", id,
                " outside the vocabulary [0, ", pieces_.size(), ")");
  return pieces_[static_cast<std::size_t>(id)];
}

float tokenizer::score(int id) const {
  piece(id);
  return scores_[static_cast<std::size_t>(id)];
}

int tokenizer::find(const std::string& p) const {
  const auto it = index_.find(p);
  return it == index_.end() ? -1 : it->second;
}

std::vector<int> tokenizer::encode(const std::string& raw, bool add_bos, bool add_eos) const {
  constexpr const char* where = "minillama::tokenizer::encode";
  const std::string space = opt_.space_marker.empty() ? std::string(" ") : opt_.space_marker;
  std::string text = opt_.space_marker.empty() ? raw : replace_all(raw, " ", space);
  if (opt_.add_dummy_prefix && !text.empty()) text = space + text;

  // Symbols as a linked list over the text; each holds its token id.
  struct sym {
    int id;
    std::size_t start, len;
    long prev, next;
  };
  std::vector<sym> syms;
  // One symbol per code point; a code point that is not a piece keeps id -1 (it can still merge
  // into a longer piece, as in sentencepiece) and falls back to byte tokens at the end.
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_len(text, i);
    syms.push_back({find(text.substr(i, n)), i, n, 0, 0});
    i += n;
  }
  for (std::size_t i = 0; i < syms.size(); ++i) {
    syms[i].prev = static_cast<long>(i) - 1;
    syms[i].next = i + 1 < syms.size() ? static_cast<long>(i) + 1 : -1;
  }
  // Candidate merges: best score first, then leftmost. Stale entries are skipped on pop.
  struct cand {
    float score;
    long left, right;
    std::size_t llen, rlen;
    int id;
  };
  auto worse = [](const cand& a, const cand& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<cand, std::vector<cand>, decltype(worse)> pq(worse);
  auto consider = [&](long l) {
    if (l < 0 || syms[static_cast<std::size_t>(l)].next < 0) return;
    const sym& a = syms[static_cast<std::size_t>(l)];
    const sym& b = syms[static_cast<std::size_t>(a.next)];
    const int id = find(text.substr(a.start, a.len + b.len));
    if (id >= 0) pq.push({scores_[static_cast<std::size_t>(id)], l, a.next, a.len, b.len, id});
  };
  for (std::size_t i = 0; i + 1 < syms.size(); ++i) consider(static_cast<long>(i));
  while (!pq.empty()) {
    const cand c = pq.top();
    pq.pop();
    sym& a = syms[static_cast<std::size_t>(c.left)];
    if (a.len != c.llen || a.next != c.right) continue;
    sym& b = syms[static_cast<std::size_t>(c.right)];
    if (b.len != c.rlen) continue;
    a.id = c.id;
    a.len += b.len;
    a.next = b.next;
    if (b.next >= 0) syms[static_cast<std::size_t>(b.next)].prev = c.left;
    b.len = 0;  // dead
    consider(a.prev);
    consider(c.left);
  }
  std::vector<int> out;
  if (add_bos && opt_.bos >= 0) out.push_back(opt_.bos);
  for (long i = syms.empty() ? -1 : 0; i >= 0; i = syms[static_cast<std::size_t>(i)].next) {
    const sym& y = syms[static_cast<std::size_t>(i)];
    if (y.id >= 0) {
      out.push_back(y.id);
      continue;
    }
    for (std::size_t k = 0; k < y.len; ++k) {
      const auto b = static_cast<unsigned char>(text[y.start + k]);
      int bid = byte_token_[b];
      if (bid < 0) bid = find(std::string(1, static_cast<char>(b)));
      DEPTHKV_CHECK(bid >= 0, where, "byte 0x", std::hex, static_cast<int>(b), std::dec, " at offset ", y.start + k,
                    " has no piece and the vocabulary has no byte token <0x..>");
      out.push_back(bid);
    }
  }
  if (add_eos && opt_.eos >= 0) out.push_back(opt_.eos);
  return out;
}

std::string tokenizer::decode(int prev, int token) const {
  std::string p = piece(token);
  unsigned b = 0;
  char tail = 0;
  if (p.size() == 6 && std::sscanf(p.c_str(), "<0x%02X>%c", &b, &tail) == 1) return std::string(1, static_cast<char>(b));
  if (!opt_.space_marker.empty()) p = replace_all(p, opt_.space_marker, " ");
  if (prev == opt_.bos && opt_.bos >= 0 && opt_.add_dummy_prefix && !p.empty() && p[0] == ' ') p.erase(0, 1);
  return p;
}

std::string tokenizer::decode(depthkv::span<const int> ids) const {
  std::string out;
  bool first = true;
  for (int id : ids) {
    if (id == opt_.bos || id == opt_.eos) continue;
    std::string p = decode(-1, id);
    if (first && opt_.add_dummy_prefix && !p.empty() && p[0] == ' ') p.erase(0, 1);
    first = false;
    out += p;
  }
  return out;
}

}  // namespace minillama
