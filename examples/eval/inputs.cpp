#include "inputs.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

#include "common.hpp"
#include "depthkv/isa.hpp"
#include "minillama/loaders.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/writers.hpp"

namespace eval {
namespace {

minillama::tokenizer_options tokenizer_options_of(const dcli::eval_options& o) {
  minillama::tokenizer_options to;
  to.add_dummy_prefix = o.dummy_prefix;
  return to;
}

// --random-model: random weights over a byte vocabulary.
loaded_model random_model(const dcli::eval_options& o) {
  const minillama::tokenizer bytes = minillama::make_byte_vocab();
  std::vector<std::string> pieces;
  std::vector<float> scores;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    pieces.push_back(bytes.piece(static_cast<int>(i)));
    scores.push_back(bytes.score(static_cast<int>(i)));
  }
  loaded_model m;
  m.tok.emplace(pieces, scores, tokenizer_options_of(o));
  const minillama::config c = o.random.config(static_cast<int>(m.tok->size()));
  c.validate("--random-model");
  m.weights = minillama::make_random_model(c, o.random.seed);
  m.name = "random(" + o.random_spec + ")";
  return m;
}

// --tokenizer, else the tokenizer.bin next to a llama2.c model, if there is one.
std::string tokenizer_path(const dcli::eval_options& o, const minillama::loaded& L) {
  if (!o.tokenizer.empty()) return o.tokenizer;
  const std::string next_to_model = dirname_of(o.model) + "/tokenizer.bin";
  return L.format == "llama2c" && file_exists(next_to_model) ? next_to_model : std::string();
}

loaded_model model_file(const dcli::eval_options& o) {
  minillama::loaded L;
  try {
    L = minillama::load_any(o.model);
  } catch (const minillama::load_error& e) {
    input_error(std::string("--model: ") + e.what());
  }
  const std::string tp = tokenizer_path(o, L);
  if (!tp.empty()) {
    try {
      L.vocab = minillama::load_llama2c_tokenizer_file(tp, L.weights.cfg.vocab_size, tokenizer_options_of(o));
    } catch (const minillama::load_error& e) {
      input_error(std::string("--tokenizer: ") + e.what());
    }
    L.has_vocab = true;
  }
  loaded_model m;
  m.name = dcli::model_identity(o.model);
  m.weights = std::move(L.weights);
  if (L.has_vocab) m.tok.emplace(std::move(L.vocab));
  return m;
}

}  // namespace

void check_model_files(const dcli::eval_options& o) {
  if (!o.random_spec.empty()) return;
  try {
    dcli::check_input_file("--model", o.model);
    if (!o.tokenizer.empty()) dcli::check_input_file("--tokenizer", o.tokenizer);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  }
}

loaded_model load_model(const dcli::eval_options& o) { return o.random_spec.empty() ? model_file(o) : random_model(o); }

void print_model(const loaded_model& m) {
  const minillama::config& mc = m.weights.cfg;
  std::fprintf(stderr, "eval: model %s: dim %d, %d layers, %d heads (%d kv), vocab %d\n", m.name.c_str(), mc.dim,
               mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.vocab_size);
  std::fprintf(stderr, "eval: depthkv kernels: %s (best on this CPU: %s; DEPTHKV_ISA caps it)\n",
               depthkv::isa_name(depthkv::active_isa()), depthkv::isa_name(depthkv::detected_isa()));
}

data_reader::data_reader(const dcli::eval_options& o, const loaded_model& m) {
  ro_.tok = m.tok ? &*m.tok : nullptr;
  ro_.vocab = m.weights.cfg.vocab_size;
  ro_.dummy_prefix = o.dummy_prefix;
  ro_.max_seqs = o.max_seqs;
  ro_.max_context = o.max_context;
  ro_.cont_len = o.cont;
}

std::vector<sample> data_reader::read(const std::string& flag, const std::string& path) const {
  try {
    dcli::check_input_file(flag, path);
    return minillama::eval_data::read_set_file(path, ro_);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  } catch (const minillama::eval_data::data_error& e) {
    input_error(flag + ": " + e.what());
  }
}

std::size_t shortest_context(const std::vector<sample>& set) {
  std::size_t m = set[0].prefix;
  for (const auto& s : set) m = std::min(m, s.prefix);
  return m;
}

void check_against_data(const dcli::eval_options& o, const std::vector<sample>& set, std::size_t n_layers,
                        const std::string& what, const std::string& flag, bool check_budgets) {
  try {
    dcli::check_eval_against_data(o, shortest_context(set), n_layers, what, flag, check_budgets);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  }
}

std::vector<sample> read_test_set(const dcli::eval_options& o, const data_reader& reader, std::size_t n_layers) {
  std::vector<sample> test = reader.read("--test", o.test);
  // Options that would skip every cell or fail a policy on this data are refused now.
  check_against_data(o, test, n_layers, "test set", "--test", true);
  if (o.window > o.recent && std::find(o.policies.begin(), o.policies.end(), "snapkv") != o.policies.end())
    std::fprintf(stderr,
                 "eval: note: --window %zu > --recent %zu: snapkv's observation window is not all protected (the "
                 "SnapKV recipe keeps --recent >= --window)\n",
                 o.window, o.recent);
  std::size_t n_queries = 0;
  for (const auto& s : test) n_queries += s.answers.size();
  std::fprintf(stderr, "eval: test set %s: %zu sequences of %zu tokens (context %zu), %zu retrieval queries\n",
               o.test.c_str(), test.size(), test[0].tokens.size(), test[0].prefix, n_queries);
  return test;
}

run_context make_context(const dcli::eval_options& o, const loaded_model& m) {
  depthkv::policy_config pcfg;
  pcfg.n_sink = o.sink;
  pcfg.n_recent = o.recent;
  pcfg.window = o.window;
  pcfg.seed = o.seed;
  const bool need_h2o = std::find(o.policies.begin(), o.policies.end(), "h2o") != o.policies.end();
  make_dirs(o.out);
  const std::string profile_dir = o.profile_dir.empty() ? o.out : o.profile_dir;
  if (!o.profile_dir.empty()) make_dirs(profile_dir);
  run_context c{o,    m.weights,          m.name,   static_cast<std::size_t>(m.weights.cfg.n_layers),
                pcfg, o.sink + o.recent, need_h2o, profile_dir, {}, depthkv::budget_scope::all_layers,
                depthkv::local_layers::skip};
  c.attention = minillama::attention_of(m.weights.cfg);
  c.scope = o.budget_scope == "global" ? depthkv::budget_scope::global_layers : depthkv::budget_scope::all_layers;
  c.local = o.profile_local_layers ? depthkv::local_layers::profile : depthkv::local_layers::skip;
  return c;
}

}  // namespace eval
