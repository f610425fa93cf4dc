// generate: prompt -> text with the minillama engine, pruning the KV cache at the end of the
// prefill with a depthkv policy and a per-layer allocation of a global budget.
//
// Shows depthkv inside an engine's generation loop: a sensitivity profile read with
// depthkv::load_profile (checked against the model), per-layer keep counts from
// depthkv::allocate, pruning at the end of the prefill with a scoring policy
// (minillama::make_policy_pruner over depthkv::prune_layer), optionally decode-time eviction
// (--evict: H2O or streaming), and the KV memory kept.
//
//   generate --model model.bin --tokenizer tokenizer.bin --prompt "Once upon a time"
//            --policy snapkv --allocator uniform --budget 0.3 --steps 64
//   generate --model model.gguf --prompt "..." --policy h2o --allocator curve --profile profile.csv
//
// Run from the repository root, after building (scripts/demo.sh or cmake; see README.md), on
// the shipped model (a character vocabulary: --no-dummy-prefix); M=models/recall-6l:
//   build/examples/generate --model $M/model.bin --tokenizer $M/tokenizer.bin --no-dummy-prefix
//       --prompt "some text" --steps 40 --policy snapkv --allocator uniform --budget 0.3
//   build/examples/generate --model $M/model.bin --tokenizer $M/tokenizer.bin --no-dummy-prefix
//       --prompt "some text" --allocator curve --profile $M/profile_snapkv.csv
// (each command is one line).
//
// Prints the text, then tokens/s (prefill and decode) and KV memory in use against the full cache.
// The command line (examples/cli/generate_args.cpp, `generate --help`): bad arguments, and files or
// a prompt that do not fit (missing model, a profile of another model, --steps past the model's
// context length, ...), exit with status 2; a failure while running exits with status 1.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "minillama/eval_data.hpp"
#include "minillama/evict.hpp"
#include "minillama/loaders.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

namespace {

// Input errors (the files named, the prompt against the model): status 2, naming the flag.
[[noreturn]] void input_error(const std::string& msg) { dcli::exit_input_error("generate", msg); }

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const dcli::generate_options o = dcli::parse_or_exit("generate", dcli::parse_generate_args, argc, argv);
  const std::string &model_path = o.model, &tok_path = o.tokenizer, &prompt = o.prompt, &policy = o.policy,
                    &allocator = o.allocator, &profile_path = o.profile;
  const std::size_t steps = o.steps, n_sink = o.sink, n_recent = o.recent;
  const float temperature = o.temperature;
  const std::uint64_t seed = o.seed;
  const double budget = o.budget;
  bool ids = o.ids;
  const bool evict = o.evict;
  try {
    dcli::check_input_file("--model", model_path);
    if (!tok_path.empty()) dcli::check_input_file("--tokenizer", tok_path);
    if (!profile_path.empty()) dcli::check_input_file("--profile", profile_path);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  }
  try {
    minillama::loaded L;
    try {
      L = minillama::load_any(model_path);
    } catch (const minillama::load_error& e) {
      input_error(std::string("--model: ") + e.what());
    }
    if (!tok_path.empty()) {
      minillama::tokenizer_options to;
      to.add_dummy_prefix = o.dummy_prefix;
      try {
        L.vocab = minillama::load_llama2c_tokenizer_file(tok_path, L.weights.cfg.vocab_size, to);
      } catch (const minillama::load_error& e) {
        input_error(std::string("--tokenizer: ") + e.what());
      }
      L.has_vocab = true;
    }
    const minillama::config& c = L.weights.cfg;
    std::fprintf(stderr,
                 "model %s (%s): dim %d, %d layers, %d heads (%d kv), vocab %d, rope theta %g on %d of %d dims\n",
                 model_path.c_str(), L.format.c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                 static_cast<double>(c.rope_theta), c.rotary_dim(), c.head_dim());
    std::fprintf(stderr, "depthkv kernels: %s (best on this CPU: %s; DEPTHKV_ISA caps it)\n",
                 depthkv::isa_name(depthkv::active_isa()), depthkv::isa_name(depthkv::detected_isa()));
    std::vector<int> toks;
    if (ids || !L.has_vocab) {
      if (!ids) std::fprintf(stderr, "no vocabulary: reading the prompt as token ids\n");
      try {
        toks = minillama::parse_token_ids(prompt, c.vocab_size);
      } catch (const minillama::token_id_error& e) {
        input_error(std::string("--prompt: ") + e.what() +
                    (ids ? "" : " (the model has no vocabulary: pass --tokenizer, or token ids)"));
      }
      ids = true;
    } else {
      toks = L.vocab.encode(prompt, true);
    }
    if (toks.empty()) input_error("--prompt: the prompt is empty");
    // Positions past the model's context length (seq_len; 0 = unknown) are refused.
    const std::size_t ctx_len = c.seq_len > 0 ? static_cast<std::size_t>(c.seq_len) : 0;
    if (ctx_len && toks.size() > ctx_len)
      input_error("--prompt: " + std::to_string(toks.size()) + " tokens exceed the model's context length (seq_len " +
                  std::to_string(ctx_len) + ")");
    if (ctx_len && toks.size() + steps > ctx_len)
      input_error("--steps: " + std::to_string(steps) + " steps after the " + std::to_string(toks.size()) +
                  "-token prompt exceed the model's context length (seq_len " + std::to_string(ctx_len) +
                  "); at most " + std::to_string(ctx_len - toks.size()));

    // The profile must have been measured on this model (eval writes its content hash).
    depthkv::sensitivity_profile prof;
    if (!profile_path.empty()) {
      try {
        prof = depthkv::load_profile(profile_path);
      } catch (const depthkv::error& e) {
        input_error(std::string("--profile: ") + e.what());
      }
      if (prof.n_layers() != static_cast<std::size_t>(c.n_layers))
        input_error("--profile: '" + profile_path + "' has " + std::to_string(prof.n_layers()) +
                    " layers but the model has " + std::to_string(c.n_layers));
      const std::string identity = dcli::model_identity(model_path);
      if (!dcli::profile_matches_model(prof.model, identity))
        input_error("--profile: '" + profile_path + "' was measured on model '" + prof.model + "', not '" +
                    identity + "'");
    }

    minillama::session s(L.weights, toks.size() + steps);
    const std::size_t protect = n_sink + n_recent, n_layers = s.cache().n_layers();
    bool pruning = o.pruning();
    if (pruning && toks.size() <= protect) {
      std::fprintf(stderr,
                   "generate: the prompt's %zu tokens are all protected rows (--sink %zu + --recent %zu = %zu): "
                   "keeping the whole cache, nothing to prune%s\n",
                   toks.size(), n_sink, n_recent, protect,
                   evict ? " (--evict holds every layer at the protected rows during decode)" : "");
      pruning = false;
    }
    // Per-layer keep counts from the allocator (every layer holds the whole prompt before pruning).
    std::vector<std::size_t> keep;
    if (pruning) {
      depthkv::allocation_request req;
      req.lengths.assign(n_layers, toks.size());
      req.minimums.assign(1, protect);
      req.attention = minillama::attention_of(c);  // a hybrid model's sliding layers keep their window
      for (std::size_t l = 0; l < req.attention.size(); ++l)
        if (req.attention[l].is_sliding()) req.lengths[l] = std::min(toks.size(), req.attention[l].window->value);
      req.budget = depthkv::global_budget::ratio(budget);
      // The allocators' rounding (depthkv::resolve); a budget below the protected rows is raised to them.
      const std::size_t want =
          static_cast<std::size_t>(std::floor(budget * static_cast<double>(n_layers * toks.size()) + 0.5));
      if (want < n_layers * protect) {
        std::fprintf(stderr,
                     "generate: --budget %g keeps %zu of %zu tokens per layer, below the protected rows (--sink %zu + "
                     "--recent %zu): keeping %zu per layer\n",
                     budget, want / n_layers, toks.size(), n_sink, n_recent, protect);
        req.budget = depthkv::global_budget::tokens(n_layers * protect);
      }
      keep = depthkv::allocate(allocator, req, prof);
    } else if (evict) {
      // A prompt within the protected rows: the evictors hold every layer at those rows.
      keep.assign(n_layers, protect);
    }
    // snapkv scores with the last --window queries of the prefill: at most the prompt.
    std::size_t window = o.window;
    if (pruning && policy == "snapkv" && window > toks.size()) {
      std::fprintf(stderr, "generate: --window %zu is longer than the %zu-token prompt: using %zu\n", window,
                   toks.size(), toks.size());
      window = toks.size();
    }
    // Decode-time eviction: the evictor runs after every layer's attention, prefill included.
    std::optional<minillama::h2o_evictor> h2o_ev;
    std::optional<minillama::streaming_evictor> stream_ev;
    minillama::forward_options step;
    if (evict) {
      step.column_sums = policy == "h2o";
      if (policy == "h2o") step.hook = h2o_ev.emplace(keep, n_recent).hook();
      else step.hook = stream_ev.emplace(keep, n_sink).hook();
    }
    minillama::forward_options pre = step;
    pre.window = window;
    pre.column_sums = policy == "h2o";
    auto t0 = std::chrono::steady_clock::now();
    minillama::vector logits = s.prefill(toks, pre);
    const double t_prefill = seconds_since(t0);

    double t_prune = 0;
    if (pruning && !evict) {
      depthkv::policy_config pc;
      pc.n_sink = n_sink;
      pc.n_recent = n_recent;
      pc.window = window;
      pc.seed = seed;
      t0 = std::chrono::steady_clock::now();
      minillama::prune_with_policy(s, keep, policy, pc);
      s.cache().shrink_to_fit();
      t_prune = seconds_since(t0);
    }
    const std::size_t kv_after_prune = s.cache().bytes_in_use();

    std::uint64_t rng = seed;
    std::string out;
    int prev = toks.back();
    int generated = 0;
    t0 = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < steps; ++i) {
      const int next = minillama::sample(logits, temperature, rng);
      if (!ids && next == L.vocab.options().eos) break;
      const std::string piece = ids ? std::to_string(next) + " " : L.vocab.decode(prev, next);
      std::fputs(piece.c_str(), stdout);
      std::fflush(stdout);
      prev = next;
      ++generated;
      if (i + 1 < steps) logits = s.decode(next, step);
    }
    const double t_decode = seconds_since(t0);
    std::printf("\n");

    const std::size_t positions = s.position();
    const std::size_t full = positions * s.cache().n_layers() * s.cache().n_kv_heads() * s.cache().row_bytes();
    std::fprintf(stderr, "prompt %zu tokens: prefill %.1f tok/s (%.3f s); prune (%s, %s, budget %.2f) %.3f s\n",
                 toks.size(), static_cast<double>(toks.size()) / t_prefill, t_prefill, policy.c_str(),
                 allocator.c_str(), budget, t_prune);
    if (!keep.empty()) {
      std::fprintf(stderr, "keep per layer:");
      for (auto k : keep) std::fprintf(stderr, " %zu", k);
      std::fprintf(stderr, " (of %zu)\n", toks.size());
    }
    std::fprintf(stderr, "decode: %d tokens, %.1f tok/s\n", generated,
                 generated > 1 ? (generated - 1) / t_decode : 0.0);
    std::fprintf(stderr, "KV memory: %.1f KiB in use after prune, %.1f KiB now; full cache would hold %.1f KiB (%.1f%%)\n",
                 kv_after_prune / 1024.0, s.cache().bytes_in_use() / 1024.0, full / 1024.0,
                 100.0 * static_cast<double>(s.cache().bytes_in_use()) / static_cast<double>(full));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "generate: %s\n", e.what());
    return 1;
  }
  return 0;
}
