// The example programs' input parsing that lives in the engine: token-id lists (generate --ids,
// eval data id lines), eval's data-file reader (from strings: good lines, CRLF, TAB split,
// the first bad id's line and position), and the file checks before a model is read.
#include <string>
#include <vector>

#include "catch.hpp"
#include "minillama/eval_data.hpp"
#include "minillama/loaders.hpp"
#include "minillama/writers.hpp"
#include "test_util.hpp"

using namespace minillama;
using minillama::eval_data::data_error;
using minillama::eval_data::read_options;
using minillama::eval_data::read_set_text;
using minillama::eval_data::sample;

namespace {

// Runs f, requires a token_id_error at `position` whose message contains every needle.
template <class F>
void require_id_error(F&& f, std::size_t position, std::vector<std::string> needles) {
  try {
    f();
  } catch (const token_id_error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(e.position() == position);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    return;
  }
  FAIL("expected minillama::token_id_error");
}

// Runs f, requires a data_error on `line` whose message contains every needle.
template <class F>
void require_data_error(F&& f, std::size_t line, std::vector<std::string> needles) {
  try {
    f();
  } catch (const data_error& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(e.line() == line);
    for (const auto& n : needles) CHECK(msg.find(n) != std::string::npos);
    return;
  }
  FAIL("expected minillama::eval_data::data_error");
}

read_options ids_only(int vocab = 512) {
  read_options o;
  o.vocab = vocab;
  o.cont_len = 2;
  return o;
}

tokenizer byte_tokenizer() {
  const tokenizer b = make_byte_vocab();
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (std::size_t i = 0; i < b.size(); ++i) {
    pieces.push_back(b.piece(static_cast<int>(i)));
    scores.push_back(b.score(static_cast<int>(i)));
  }
  tokenizer_options to;
  to.add_dummy_prefix = false;
  return tokenizer(pieces, scores, to);
}

}  // namespace

TEST_CASE("parse_token_ids: blank-separated decimal ids", "[cli]") {
  CHECK(parse_token_ids("1 45 9", 100) == std::vector<int>{1, 45, 9});
  CHECK(parse_token_ids("  1\t45\r\n 9  ", 100) == std::vector<int>{1, 45, 9});
  CHECK(parse_token_ids("0 99", 100) == std::vector<int>{0, 99});
  CHECK(parse_token_ids("007", 100) == std::vector<int>{7});  // decimal, not octal
  CHECK(parse_token_ids("", 100).empty());
  CHECK(parse_token_ids(" \t ", 100).empty());
  CHECK(parse_token_ids("16777215", 0) == std::vector<int>{16777215});  // unknown vocabulary: 2^24 bound
}

TEST_CASE("parse_token_ids: the first bad id, with its position, never a truncated list", "[cli]") {
  require_id_error([] { parse_token_ids("1 2 x", 100); }, 3, {"token id 'x' at position 3", "not a non-negative integer"});
  require_id_error([] { parse_token_ids("1 12abc 3", 100); }, 2, {"'12abc' at position 2"});
  require_id_error([] { parse_token_ids("5 -3", 100); }, 2, {"'-3' at position 2 is negative"});
  require_id_error([] { parse_token_ids("+5", 100); }, 1, {"'+5' at position 1"});
  require_id_error([] { parse_token_ids("1 2 70000", 512); }, 3,
                   {"token id 70000 at position 3 is outside the vocabulary (512)"});
  require_id_error([] { parse_token_ids("1 100", 100); }, 2, {"token id 100 at position 2 is outside the vocabulary (100)"});
  // Far beyond any integer type: named as given, no wrap-around.
  require_id_error([] { parse_token_ids("1 99999999999999999999999", 512); }, 2,
                   {"token id 99999999999999999999999 at position 2 is outside the vocabulary (512)"});
  require_id_error([] { parse_token_ids("16777216", 0); }, 1, {"16777216", "exceeds every vocabulary"});
  // Positions continue a list: the continuation of a data line starts after its context.
  require_id_error([] { parse_token_ids("4 x", 100, 11); }, 12, {"at position 12"});
}

TEST_CASE("looks_like_token_ids: every field starts with a digit or a signed digit", "[cli]") {
  CHECK(looks_like_token_ids("1 2 3"));
  CHECK(looks_like_token_ids("1 2\t3 4\r"));
  CHECK(looks_like_token_ids("1 12abc"));
  CHECK(looks_like_token_ids("-3 4"));
  CHECK_FALSE(looks_like_token_ids(""));
  CHECK_FALSE(looks_like_token_ids("  \t"));
  CHECK_FALSE(looks_like_token_ids("the year 2024"));
  CHECK_FALSE(looks_like_token_ids("307U; no story"));
  CHECK_FALSE(looks_like_token_ids("- 3"));
}

TEST_CASE("eval data: id lines, TAB split, CRLF, empty lines, last --cont tokens", "[cli]") {
  const read_options o = ids_only();
  const std::vector<sample> s = read_set_text("1 2 3 4\t5 6 7\r\n\n\r\n10 11 12 13 14 15\n", "mem", o);
  REQUIRE(s.size() == 2);
  CHECK(s[0].tokens == std::vector<int>{1, 2, 3, 4, 5, 6, 7});
  CHECK(s[0].prefix == 4);
  CHECK(s[0].answers.empty());
  // No TAB: the last cont_len (2) tokens are the continuation.
  CHECK(s[1].tokens == std::vector<int>{10, 11, 12, 13, 14, 15});
  CHECK(s[1].prefix == 4);

  read_options m = o;
  m.max_seqs = 1;
  CHECK(read_set_text("1 2 3\t4 5\n6 7 8\t9 10\n", "mem", m).size() == 1);
  read_options c = o;
  c.max_context = 3;  // BOS (the first token) + the last 2 context tokens
  const auto t = read_set_text("1 2 3 4 5 6\t7 8\n", "mem", c);
  REQUIRE(t.size() == 1);
  CHECK(t[0].tokens == std::vector<int>{1, 5, 6, 7, 8});
  CHECK(t[0].prefix == 3);
}

TEST_CASE("eval data: errors name the input and line, and the id's position", "[cli]") {
  const read_options o = ids_only();
  require_data_error([&] { read_set_text("1 2 3\t4 5\n1 2 -3 4\t5 6\n", "set.txt", o); }, 2,
                     {"set.txt:2:", "token id '-3' at position 3 is negative"});
  require_data_error([&] { read_set_text("1 2 3\t4 5\r\n1 2 3 12abc\t5 6\r\n", "set.txt", o); }, 2,
                     {"set.txt:2:", "'12abc' at position 4"});
  // An id dropped later by --max-context is still checked.
  read_options c = o;
  c.max_context = 2;
  require_data_error([&] { read_set_text("1 2 3\t4 5\n1 70000 3 4\t5 6\n", "set.txt", c); }, 2,
                     {"set.txt:2:", "token id 70000 at position 2 is outside the vocabulary (512)"});
  // Positions run across the TAB: the continuation's first id is at context length + 1.
  require_data_error([&] { read_set_text("1 2 3\t4 999\n", "set.txt", o); }, 1,
                     {"set.txt:1:", "token id 999 at position 5 is outside the vocabulary (512)"});
  require_data_error([&] { read_set_text("1 2 3\n", "set.txt", o); }, 1, {"set.txt:1:", "line too short for --cont 2"});
  require_data_error([&] { read_set_text("1\t2 3\n", "set.txt", o); }, 1, {"need >= 2 context"});
  require_data_error([&] { read_set_text("some words\t and more\n", "set.txt", o); }, 1,
                     {"set.txt:1:", "text data needs a tokenizer"});
  require_data_error([&] { read_set_text("\n\r\n", "set.txt", o); }, 0, {"no sequences in 'set.txt'"});
}

TEST_CASE("eval data: text lines with a tokenizer, retrieval queries", "[cli]") {
  const tokenizer tok = byte_tokenizer();
  read_options o;
  o.tok = &tok;
  o.vocab = static_cast<int>(tok.size());
  const auto s = read_set_text("ab cd\tx ?K12; y\n", "mem", o);
  REQUIRE(s.size() == 1);
  // BOS + 5 bytes of context, 9 bytes of continuation (byte tokens are 3 + byte).
  CHECK(s[0].prefix == 6);
  CHECK(s[0].tokens.size() == 15);
  CHECK(s[0].tokens[0] == tok.options().bos);
  CHECK(s[0].tokens[1] == 3 + 'a');
  REQUIRE(s[0].answers.size() == 1);
  CHECK(s[0].answers[0] == std::vector<std::size_t>{4, 5});  // the digits '1' '2' of "x ?K12; y"
}

TEST_CASE("eval data and loaders: files that cannot be read are named as such", "[cli]") {
  using depthkv_test::require_error;
  const std::string dir = DEPTHKV_TEST_DATA_DIR;
  require_data_error([&] { eval_data::read_set_file(dir, ids_only()); }, 0, {dir, "is a directory"});
  require_data_error([&] { eval_data::read_set_file(dir + "/no_such_file.txt", ids_only()); }, 0,
                     {"no_such_file.txt", "cannot open"});
  require_error([&] { check_regular_file(dir); }, {dir, "is a directory"});
  require_error([&] { (void)read_file(dir); }, {dir, "is a directory"});
  require_error([&] { (void)load_any(dir); }, {dir, "is a directory"});
  require_error([&] { (void)load_any(dir + "/no_such_model.bin"); }, {"no_such_model.bin", "cannot open"});
  require_error([] { check_regular_file("/dev/null"); }, {"/dev/null", "not a regular file"});
  require_error([] { check_regular_file(""); }, {"no path given"});
}

TEST_CASE("loaders: a header claiming huge sizes is refused before anything is allocated", "[cli]") {
  using depthkv_test::require_error;
  // llama2.c header: dim 2^20, hidden 2^20, 4096 layers, 1024 heads, vocab 2^24, seq_len 2^31 - 1.
  std::vector<std::uint8_t> b;
  auto put = [&](std::int32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(static_cast<std::uint32_t>(v) >> (8 * i)));
  };
  for (std::int32_t v : {1 << 20, 1 << 20, 4096, 1024, 1024, 1 << 24, 0x7fffffff}) put(v);
  b.resize(b.size() + 64, 0);
  require_error([&] { (void)load_llama2c(bytes_view(b.data(), b.size()), "huge.bin"); },
                {"huge.bin", "truncated", "bytes of weights but the file has 64"});
}
