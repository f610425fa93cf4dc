// generate: prompt -> text with the minillama engine, pruning the KV cache at the end of the
// prefill with a depthkv policy and a per-layer allocation of a global budget.
//
//   generate --model model.bin --tokenizer tokenizer.bin --prompt "Once upon a time"
//            --policy snapkv --allocator uniform --budget 0.3 --steps 64
//   generate --model model.gguf --prompt "..." --policy h2o --allocator curve --profile profile.csv
//
// Prints the text, then tokens/s (prefill and decode) and KV memory in use against the full cache.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "minillama/evict.hpp"
#include "minillama/loaders.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: generate --model PATH [--tokenizer PATH] [--prompt TEXT] [--steps N]\n"
               "                [--temperature T] [--seed S] [--policy snapkv|h2o|tova|knorm|streaming|random|none]\n"
               "                [--allocator uniform|pyramid|proportional|curve] [--profile CSV] [--budget RATIO]\n"
               "                [--sink N] [--recent N] [--window N] [--no-dummy-prefix] [--ids] [--evict]\n"
               "  --model: llama2.c checkpoint or GGUF file (the GGUF vocabulary is used unless --tokenizer)\n"
               "  --budget: global keep ratio of the prompt's KV cache (1 = no pruning)\n"
               "  --profile: sensitivity profile CSV (needed by proportional and curve)\n"
               "  --ids: the prompt is a list of token ids (\"1 45 9\"), output ids too\n"
               "  --evict: also hold every layer at its budget during decode (policy h2o or streaming;\n"
               "           the engine's evictors, per-head lengths for h2o)\n");
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_path, tok_path, prompt = "Once upon a time", policy = "snapkv", allocator = "uniform",
                                    profile_path;
  int steps = 64;
  float temperature = 0.0f;
  std::uint64_t seed = 1;
  double budget = 0.5;
  std::size_t n_sink = 4, n_recent = 16, window = 16;
  bool dummy_prefix = true, ids = false, evict = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "generate: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--model") model_path = next();
    else if (a == "--tokenizer") tok_path = next();
    else if (a == "--prompt") prompt = next();
    else if (a == "--steps") steps = std::atoi(next().c_str());
    else if (a == "--temperature") temperature = std::strtof(next().c_str(), nullptr);
    else if (a == "--seed") seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--policy") policy = next();
    else if (a == "--allocator") allocator = next();
    else if (a == "--profile") profile_path = next();
    else if (a == "--budget") budget = std::strtod(next().c_str(), nullptr);
    else if (a == "--sink") n_sink = std::strtoul(next().c_str(), nullptr, 10);
    else if (a == "--recent") n_recent = std::strtoul(next().c_str(), nullptr, 10);
    else if (a == "--window") window = std::strtoul(next().c_str(), nullptr, 10);
    else if (a == "--no-dummy-prefix") dummy_prefix = false;
    else if (a == "--ids") ids = true;
    else if (a == "--evict") evict = true;
    else if (a == "-h" || a == "--help") {
      usage();
      return 0;
    } else {
      std::fprintf(stderr, "generate: unknown argument %s\n", a.c_str());
      usage();
      return 2;
    }
  }
  if (model_path.empty()) {
    usage();
    return 2;
  }
  try {
    minillama::loaded L = minillama::load_any(model_path);
    if (!tok_path.empty()) {
      minillama::tokenizer_options to;
      to.add_dummy_prefix = dummy_prefix;
      L.vocab = minillama::load_llama2c_tokenizer_file(tok_path, L.weights.cfg.vocab_size, to);
      L.has_vocab = true;
    }
    const minillama::config& c = L.weights.cfg;
    std::fprintf(stderr,
                 "model %s (%s): dim %d, %d layers, %d heads (%d kv), vocab %d, rope theta %g on %d of %d dims\n",
                 model_path.c_str(), L.format.c_str(), c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                 static_cast<double>(c.rope_theta), c.rotary_dim(), c.head_dim());
    std::vector<int> toks;
    if (ids || !L.has_vocab) {
      if (!ids) std::fprintf(stderr, "no vocabulary: reading the prompt as token ids\n");
      for (const char* p = prompt.c_str(); *p;) {
        char* end;
        const long v = std::strtol(p, &end, 10);
        if (end == p) break;
        toks.push_back(static_cast<int>(v));
        p = end;
      }
      ids = true;
    } else {
      toks = L.vocab.encode(prompt, true);
    }
    if (toks.empty()) throw depthkv::error("the prompt is empty");

    minillama::session s(L.weights, toks.size() + static_cast<std::size_t>(std::max(steps, 0)));
    const bool pruning = policy != "none" && budget < 1.0;
    // Per-layer keep counts from the allocator (every layer holds the whole prompt before pruning).
    std::vector<std::size_t> keep;
    if (pruning) {
      depthkv::allocation_request req;
      req.lengths.assign(s.cache().n_layers(), toks.size());
      req.minimums.assign(1, std::min(toks.size(), n_sink + n_recent));
      req.budget = depthkv::global_budget::ratio(budget);
      depthkv::sensitivity_profile prof;
      if (!profile_path.empty()) prof = depthkv::load_profile(profile_path);
      keep = depthkv::allocate(allocator, req, prof);
    }
    if (evict && !(pruning && (policy == "h2o" || policy == "streaming")))
      throw depthkv::error("--evict needs --policy h2o or streaming and --budget < 1");
    // Decode-time eviction: the evictor runs after every layer's attention, prefill included.
    minillama::h2o_evictor h2o_ev(keep, n_recent);
    minillama::streaming_evictor stream_ev(keep, n_sink);
    minillama::forward_options step;
    if (evict) {
      step.column_sums = policy == "h2o";
      step.hook = policy == "h2o" ? h2o_ev.hook() : stream_ev.hook();
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
    for (int i = 0; i < steps; ++i) {
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
