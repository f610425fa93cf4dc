// What eval reads before it measures anything: the model (a file or random weights), its
// tokenizer, the data sets, and the settings every later step shares (run_context).
#pragma once

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profiler.hpp"
#include "depthkv/score/policies.hpp"
#include "minillama/eval_data.hpp"
#include "minillama/model.hpp"
#include "minillama/tokenizer.hpp"

namespace eval {

using minillama::eval_data::sample;

// Checks that --model and --tokenizer name readable files (input error otherwise); nothing to
// check for --random-model.
void check_model_files(const dcli::eval_options& o);

struct loaded_model {
  minillama::model weights;
  std::optional<minillama::tokenizer> tok;
  // "random(SPEC)", or the file and its content hash (dcli::model_identity): a profile names
  // the model it was measured on, so one of another version of the weights is noticed.
  std::string name;
};
// Loads --model (and its tokenizer), or builds --random-model; bad files are input errors.
loaded_model load_model(const dcli::eval_options& o);
// The model line and the dispatched kernel path, on stderr.
void print_model(const loaded_model& m);

// Reads data sets with the model's tokenizer; bad files are input errors naming the flag.
class data_reader {
 public:
  data_reader(const dcli::eval_options& o, const loaded_model& m);
  std::vector<sample> read(const std::string& flag, const std::string& path) const;

 private:
  minillama::eval_data::read_options ro_;
};

std::size_t shortest_context(const std::vector<sample>& set);
// dcli::check_eval_against_data as an input error: options that do not fit the set `what`.
void check_against_data(const dcli::eval_options& o, const std::vector<sample>& set, std::size_t n_layers,
                        const std::string& what, const std::string& flag, bool check_budgets);
// Reads --test, checks the options against it, prints what it holds.
std::vector<sample> read_test_set(const dcli::eval_options& o, const data_reader& reader, std::size_t n_layers);

// Settings shared by the profiles and the grid.
struct run_context {
  const dcli::eval_options& o;
  const minillama::model& model;
  std::string model_name;
  std::size_t n_layers = 0;
  depthkv::policy_config pcfg;  // --sink, --recent, --window, --seed
  std::size_t min_keep = 0;     // per-layer minimum of every allocation: the protected rows
  bool need_h2o = false;        // prefills record the attention column sums H2O scores with
  std::string profile_dir;      // --profile-dir, else --out
  // Hybrid models: [layer] how it attends (empty: every layer global), what budgets cover, and
  // whether profiles measure the sliding layers.
  std::vector<depthkv::layer_attention> attention;
  depthkv::budget_scope scope = depthkv::budget_scope::all_layers;
  depthkv::local_layers local = depthkv::local_layers::skip;

  bool hybrid() const noexcept { return !attention.empty(); }
  bool is_local(std::size_t layer) const noexcept { return hybrid() && attention[layer].is_sliding(); }
  // Whether profiles have points for `layer` (not a skipped sliding layer).
  bool profiled(std::size_t layer) const noexcept { return !is_local(layer) || local == depthkv::local_layers::profile; }
  // Tokens `layer` holds after a prefill of n tokens (a sliding layer: its window).
  std::size_t length_after(std::size_t layer, std::size_t n) const noexcept {
    return is_local(layer) ? std::min(n, attention[layer].window->value) : n;
  }
};
// Also creates --out and --profile-dir.
run_context make_context(const dcli::eval_options& o, const loaded_model& m);

}  // namespace eval
