// eval: does layer-dependent KV pruning win? The evaluation harness of depthkv.
//
// Setting: prefill each sequence's long context with the full cache, prune every layer at the
// end of the prefill to its share of a global budget, then score the continuation (teacher
// forcing). Per cell of the grid allocator x policy x global keep ratio, on the test set:
//   - mean next-token KL(full || pruned) over the continuation positions,
//   - NLL (and perplexity) of the continuation,
//   - retrieval accuracy: a query "?K123;" in the continuation is correct when every answer
//     digit is the model's argmax given the true prefix,
// each with a 95% confidence interval over sequences (mean +- 1.96 sd / sqrt(n)), and the KV
// bytes kept. Allocators that need a sensitivity profile (proportional, curve) use a layer
// ablation profile measured on a disjoint calibration set (depthkv::profile_ablation with the
// mean KL as loss); the CAKE and SqueezeAttention proxy profiles come from the same prefills.
// Profiles are CSV files, reused when they exist.
//
//   eval                                   # shipped model, shipped calib/test sets, full grid
//   eval --policies snapkv --budgets 0.1,0.2,0.4,0.6 --profile-dir models/recall-6l
//   eval --model m.gguf --calib c.txt --test t.txt --out out/mine
//
// Data files (minillama/eval_data.hpp): one sequence per line, `context<TAB>continuation` (text,
// or token ids separated by blanks when every field of the line starts with a digit); a line
// without a TAB is split so that its last --cont tokens are the continuation. Text gets BOS +
// tokens of the context.
//
// The command line (examples/cli/eval_args.cpp, `eval --help`): bad arguments, bad files, and
// options that do not fit the data (protected rows, budgets, window against the shortest
// context) exit with status 2 before anything runs; a failure while running exits with 1.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "cli/args.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"
#include "depthkv/budget/profiler.hpp"
#include "minillama/eval.hpp"
#include "minillama/eval_data.hpp"
#include "minillama/loaders.hpp"
#include "minillama/policy_prune.hpp"
#include "minillama/session.hpp"
#include "minillama/writers.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using minillama::eval_data::sample;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Input errors (the files named, options that do not fit the data): status 2, naming the flag.
[[noreturn]] void input_error(const std::string& msg) { dcli::exit_input_error("eval", msg); }

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "eval: %s\n", msg.c_str());
  std::exit(2);
}

bool file_exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

void make_dirs(const std::string& path) {
  std::string cur;
  for (std::size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty()) ::mkdir(cur.c_str(), 0755);
    }
    if (i < path.size()) cur += path[i];
  }
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) die("cannot create directory '" + path + "'");
}

std::string dirname_of(const std::string& p) {
  const auto k = p.find_last_of('/');
  return k == std::string::npos ? "." : (k == 0 ? "/" : p.substr(0, k));
}

// A progress bar on stderr: redrawn in place on a terminal (at most 5 times a second), one line
// per 10% otherwise (logs).
class progress_bar {
 public:
  progress_bar(bool enabled, std::size_t total, std::string title)
      : on_(enabled), tty_(::isatty(2) != 0), total_(std::max<std::size_t>(total, 1)), title_(std::move(title)),
        t0_(clock_type::now()), last_(t0_) {}
  void update(std::size_t done, const std::string& label) {
    if (!on_) return;
    const double frac = std::min(1.0, static_cast<double>(done) / static_cast<double>(total_));
    const auto now = clock_type::now();
    const double el = std::chrono::duration<double>(now - t0_).count();
    const double eta = frac > 0 ? el * (1 - frac) / frac : 0;
    if (tty_) {
      if (done < total_ && std::chrono::duration<double>(now - last_).count() < 0.2) return;
      last_ = now;
      constexpr int W = 30;
      const int fill = static_cast<int>(frac * W);
      std::string bar(static_cast<std::size_t>(fill), '#');
      bar.resize(W, '.');
      std::fprintf(stderr, "\r%s [%s] %3d%% %zu/%zu  %.0fs, eta %.0fs  %-34.34s", title_.c_str(), bar.c_str(),
                   static_cast<int>(frac * 100), done, total_, el, eta, label.c_str());
      if (done >= total_) std::fprintf(stderr, "\n");
    } else {
      const int decile = static_cast<int>(frac * 10);
      if (decile <= printed_ && done < total_) return;
      if (done >= total_ && printed_ >= 10) return;
      printed_ = done >= total_ ? 10 : decile;
      std::fprintf(stderr, "%s %3d%% %zu/%zu  %.0fs  %s\n", title_.c_str(), printed_ * 10, done, total_, el,
                   label.c_str());
    }
    std::fflush(stderr);
  }

 private:
  bool on_, tty_;
  std::size_t total_;
  std::string title_;
  clock_type::time_point t0_, last_;
  int printed_ = -1;
};

// 95% normal-approximation interval of the mean over sequences (NaNs skipped).
struct interval {
  double mean = NAN, lo = NAN, hi = NAN;
  std::size_t n = 0;
};
interval ci95(const std::vector<double>& v) {
  interval r;
  double s = 0;
  for (double x : v)
    if (std::isfinite(x)) {
      s += x;
      ++r.n;
    }
  if (r.n == 0) return r;
  r.mean = s / static_cast<double>(r.n);
  double ss = 0;
  for (double x : v)
    if (std::isfinite(x)) ss += (x - r.mean) * (x - r.mean);
  const double sd = r.n > 1 ? std::sqrt(ss / static_cast<double>(r.n - 1)) : 0.0;
  const double h = 1.96 * sd / std::sqrt(static_cast<double>(r.n));
  r.lo = r.mean - h;
  r.hi = r.mean + h;
  return r;
}
// The same clamped to the metric's range (KL >= 0, accuracy in [0, 1]).
interval clamp_to(interval r, double lo, double hi) {
  if (r.n == 0) return r;
  r.lo = std::clamp(r.lo, lo, hi);
  r.hi = std::clamp(r.hi, lo, hi);
  return r;
}

// Metrics of one continuation pass against the full-cache reference.
struct seq_metrics {
  double kl = 0, nll = 0, acc = NAN;
  std::size_t correct = 0, queries = 0;
};

struct reference {
  std::vector<std::vector<float>> logp;  // [position][vocab] full-cache log-probs
  int first_argmax = -1;                 // full-cache prediction of the first continuation token
};

seq_metrics score(const sample& s, const minillama::matrix& lg, const reference& ref) {
  seq_metrics m;
  const std::size_t V = static_cast<std::size_t>(lg.cols()), R = static_cast<std::size_t>(lg.rows());
  std::vector<int> am(R);
  double kl = 0, nll = 0;
  for (std::size_t t = 0; t < R; ++t) {
    const auto lp = minillama::log_softmax(lg.row(static_cast<Eigen::Index>(t)).data(), V);
    double k = 0;
    // Compared at the reference's f32 precision, as minillama::kl_evaluator does, so identical
    // logits give exactly 0.
    for (std::size_t v = 0; v < V; ++v) {
      const double r = ref.logp[t][v];
      k += std::exp(r) * (r - static_cast<double>(static_cast<float>(lp[v])));
    }
    kl += std::max(k, 0.0);
    if (s.prefix + t + 1 < s.tokens.size()) nll -= lp[static_cast<std::size_t>(s.tokens[s.prefix + t + 1])];
    am[t] = minillama::argmax(lg.row(static_cast<Eigen::Index>(t)).transpose());
  }
  m.kl = kl / static_cast<double>(R);
  m.nll = nll / static_cast<double>(R - 1);
  for (const auto& q : s.answers) {
    bool ok = true;
    for (std::size_t j : q) {
      const int pred = j == 0 ? ref.first_argmax : am[j - 1];
      ok = ok && pred == s.tokens[s.prefix + j];
    }
    m.correct += ok;
    ++m.queries;
  }
  if (m.queries) m.acc = static_cast<double>(m.correct) / static_cast<double>(m.queries);
  return m;
}

struct cell {
  std::string policy, allocator;
  double budget = 1;
  std::vector<double> kl, nll, acc;
  std::size_t correct = 0, queries = 0;
  double kv_bytes = 0, kv_bytes_full = 0;
  std::size_t kept = 0, total = 0;  // tokens per head summed over layers (first sequence)
  double predicted = NAN;           // additive prediction from the ablation profile (same lengths)
  std::string note;                 // why the cell was skipped
};

minillama::model random_model(const dcli::random_model_spec& r, std::size_t vocab) {
  const minillama::config c = r.config(static_cast<int>(vocab));
  c.validate("--random-model");
  return minillama::make_random_model(c, r.seed);
}

std::string fmt(double x, const char* f = "%.6g") {
  if (!std::isfinite(x)) return "";
  char b[64];
  std::snprintf(b, sizeof b, f, x);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const dcli::eval_options o = dcli::parse_or_exit("eval", dcli::parse_eval_args, argc, argv);
  const auto t_start = clock_type::now();
  bool broken = false;
  auto fail_check = [&](const std::string& msg) {
    std::fprintf(stderr, "eval: CHECK FAILED: %s\n", msg.c_str());
    broken = true;
  };

  const minillama::eval_data::read_options* read_opts = nullptr;
  auto read_data = [&](const std::string& flag, const std::string& path) {
    try {
      dcli::check_input_file(flag, path);
      return minillama::eval_data::read_set_file(path, *read_opts);
    } catch (const dcli::cli_error& e) {
      input_error(e.what());
    } catch (const minillama::eval_data::data_error& e) {
      input_error(flag + ": " + e.what());
    }
  };
  if (o.random_spec.empty()) {
    try {
      dcli::check_input_file("--model", o.model);
      if (!o.tokenizer.empty()) dcli::check_input_file("--tokenizer", o.tokenizer);
    } catch (const dcli::cli_error& e) {
      input_error(e.what());
    }
  }

  try {
    // Names were checked by the parser (policy and allocator lists).
    bool need_ablation = false, need_cake = false, need_squeeze = false;
    for (const auto& a : o.allocators) {
      if (a == "cake") need_cake = true;
      else if (a == "squeeze") need_squeeze = true;
      else if (a == "proportional" || a == "curve") need_ablation = true;
    }

    // ---- model and data
    minillama::model model;
    std::optional<minillama::tokenizer> tok;
    std::string model_name;
    if (!o.random_spec.empty()) {
      const minillama::tokenizer bytes = minillama::make_byte_vocab();
      std::vector<std::string> pieces;
      std::vector<float> scores;
      for (std::size_t i = 0; i < bytes.size(); ++i) {
        pieces.push_back(bytes.piece(static_cast<int>(i)));
        scores.push_back(bytes.score(static_cast<int>(i)));
      }
      minillama::tokenizer_options to;
      to.add_dummy_prefix = o.dummy_prefix;
      tok.emplace(pieces, scores, to);
      model = random_model(o.random, tok->size());
      model_name = "random(" + o.random_spec + ")";
    } else {
      minillama::loaded L;
      try {
        L = minillama::load_any(o.model);
      } catch (const minillama::load_error& e) {
        input_error(std::string("--model: ") + e.what());
      }
      std::string tp = o.tokenizer;
      if (tp.empty() && L.format == "llama2c" && file_exists(dirname_of(o.model) + "/tokenizer.bin"))
        tp = dirname_of(o.model) + "/tokenizer.bin";
      if (!tp.empty()) {
        minillama::tokenizer_options to;
        to.add_dummy_prefix = o.dummy_prefix;
        try {
          L.vocab = minillama::load_llama2c_tokenizer_file(tp, L.weights.cfg.vocab_size, to);
        } catch (const minillama::load_error& e) {
          input_error(std::string("--tokenizer: ") + e.what());
        }
        L.has_vocab = true;
      }
      // The profile's model field names the file and its content hash, so a profile measured
      // on another version of the weights is noticed when it is reused.
      model_name = dcli::model_identity(o.model);
      model = std::move(L.weights);
      if (L.has_vocab) tok.emplace(std::move(L.vocab));
    }
    const minillama::config& mc = model.cfg;
    const std::size_t n_layers = static_cast<std::size_t>(mc.n_layers);
    std::fprintf(stderr, "eval: model %s: dim %d, %d layers, %d heads (%d kv), vocab %d\n", model_name.c_str(), mc.dim,
                 mc.n_layers, mc.n_heads, mc.n_kv_heads, mc.vocab_size);
    std::fprintf(stderr, "eval: depthkv kernels: %s (best on this CPU: %s; DEPTHKV_ISA caps it)\n",
                 depthkv::isa_name(depthkv::active_isa()), depthkv::isa_name(depthkv::detected_isa()));
    minillama::eval_data::read_options ro;
    ro.tok = tok ? &*tok : nullptr;
    ro.vocab = mc.vocab_size;
    ro.dummy_prefix = o.dummy_prefix;
    ro.max_seqs = o.max_seqs;
    ro.max_context = o.max_context;
    ro.cont_len = o.cont;
    read_opts = &ro;
    const std::vector<sample> test = read_data("--test", o.test);
    // Options that would skip every cell or fail a policy on this data are refused now.
    auto shortest_context = [](const std::vector<sample>& set) {
      std::size_t m = set[0].prefix;
      for (const auto& s : set) m = std::min(m, s.prefix);
      return m;
    };
    try {
      dcli::check_eval_against_data(o, shortest_context(test), n_layers, "test set", "--test", true);
    } catch (const dcli::cli_error& e) {
      input_error(e.what());
    }
    if (o.window > o.recent && std::find(o.policies.begin(), o.policies.end(), "snapkv") != o.policies.end())
      std::fprintf(stderr,
                   "eval: note: --window %zu > --recent %zu: snapkv's observation window is not all protected (the "
                   "SnapKV recipe keeps --recent >= --window)\n",
                   o.window, o.recent);
    std::size_t n_queries = 0;
    for (const auto& s : test) n_queries += s.answers.size();
    std::fprintf(stderr, "eval: test set %s: %zu sequences of %zu tokens (context %zu), %zu retrieval queries\n",
                 o.test.c_str(), test.size(), test[0].tokens.size(), test[0].prefix, n_queries);

    depthkv::policy_config pcfg;
    pcfg.n_sink = o.sink;
    pcfg.n_recent = o.recent;
    pcfg.window = o.window;
    pcfg.seed = o.seed;
    const std::size_t min_keep = o.sink + o.recent;
    bool need_h2o = false;
    for (const auto& p : o.policies) need_h2o = need_h2o || p == "h2o";

    make_dirs(o.out);
    const std::string pdir = o.profile_dir.empty() ? o.out : o.profile_dir;
    if (!o.profile_dir.empty()) make_dirs(pdir);

    // ---- profiles: read the ones present, measure the rest on the calibration set
    std::map<std::string, depthkv::sensitivity_profile> ablation;  // per policy
    std::map<std::string, std::string> ablation_path;
    std::map<std::string, depthkv::sensitivity_profile> partial;
    for (const auto& p : o.policies) ablation_path[p] = o.profile.empty() ? pdir + "/profile_" + p + ".csv" : o.profile;
    // A profile is stale when it names another model: a different content hash (or, without
    // hashes, a different name). Stale profiles are not used; a fresh one goes to --out.
    auto load_checked = [&](const std::string& path, bool allow_missing, bool& stale) {
      depthkv::profile_read_options ro;
      ro.allow_missing_layers = allow_missing;
      depthkv::sensitivity_profile pr = depthkv::load_profile(path, ro);
      DEPTHKV_CHECK(pr.n_layers() == n_layers, "eval", "profile '", path, "' has ", pr.n_layers(),
                    " layers but the model has ", n_layers);
      stale = !dcli::profile_matches_model(pr.model, model_name);
      if (stale)
        std::fprintf(stderr, "eval: WARNING: profile '%s' was measured on model '%s', not '%s'; not using it\n",
                     path.c_str(), pr.model.c_str(), model_name.c_str());
      return pr;
    };
    std::vector<std::string> to_measure;
    if (need_ablation) {
      for (const auto& p : o.policies) {
        if (!o.profile.empty() && p != o.policies[0]) continue;  // one shared file: the first policy's
        for (int attempt = 0; attempt < 2; ++attempt) {
          const std::string path = ablation_path[p];
          if (!file_exists(path)) break;
          bool stale = false;
          depthkv::sensitivity_profile pr = load_checked(path, true, stale);
          if (stale) {
            const std::string fresh = o.out + "/profile_" + p + ".csv";
            if (fresh == path) break;  // measured again into the same place
            ablation_path[p] = fresh;
            continue;
          }
          // Reused when every layer has every requested ratio (or, for an explicit --profile, any
          // complete profile); otherwise the missing points are measured (resuming a crash).
          bool all_points = pr.complete();
          for (std::size_t l = 0; all_points && l < n_layers; ++l)
            for (double r : o.ratios) all_points = all_points && pr.has_point(l, r);
          if (all_points || (pr.complete() && !o.profile.empty())) {
            if (!pr.policy.empty() && pr.policy != p)
              std::fprintf(stderr, "eval: note: profile '%s' was measured with policy %s, used for %s\n",
                           path.c_str(), pr.policy.c_str(), p.c_str());
            std::fprintf(stderr, "eval: reusing ablation profile %s\n", path.c_str());
            ablation[p] = std::move(pr);
          } else {
            std::fprintf(stderr, "eval: resuming ablation profile %s\n", path.c_str());
            partial[p] = std::move(pr);
          }
          break;
        }
        if (!ablation.count(p)) to_measure.push_back(p);
      }
    }
    std::string cake_path = pdir + "/profile_cake.csv", squeeze_path = pdir + "/profile_squeeze.csv";
    std::map<std::string, depthkv::sensitivity_profile> proxy;
    auto load_proxy = [&](const std::string& name, std::string& path) {
      if (!file_exists(path)) return;
      bool stale = false;
      depthkv::sensitivity_profile pr = load_checked(path, false, stale);
      if (stale) path = o.out + "/profile_" + name + ".csv";
      else proxy[name] = std::move(pr);
    };
    if (need_cake) load_proxy("cake", cake_path);
    if (need_squeeze) load_proxy("squeeze", squeeze_path);
    const bool proxies_missing = (need_cake && !proxy.count("cake")) || (need_squeeze && !proxy.count("squeeze"));

    if (!to_measure.empty() || proxies_missing) {
      const auto t0 = clock_type::now();
      std::vector<sample> calib = read_data("--calib", o.calib);
      try {
        dcli::check_eval_against_data(o, shortest_context(calib), n_layers, "calibration set", "--calib", false);
      } catch (const dcli::cli_error& e) {
        input_error(e.what());
      }
      // One prefix length for all (minillama::kl_evaluator): the shortest context.
      std::size_t prefix = calib[0].prefix, calib_tokens = 0;
      std::vector<std::vector<int>> seqs;
      for (const auto& s : calib) prefix = std::min(prefix, s.prefix);
      for (const auto& s : calib) {
        seqs.push_back(s.tokens);
        calib_tokens += s.tokens.size();
      }
      std::fprintf(stderr, "eval: calibration set %s: %zu sequences, prefix %zu; prefilling\n", o.calib.c_str(),
                   calib.size(), prefix);
      const minillama::kl_evaluator ev(model, std::move(seqs), prefix, std::max<std::size_t>(o.window, 2), need_h2o);

      // Proxy profiles from the prefills' records (always written when the prefills exist).
      {
        depthkv::cake_profiler cake(n_layers);
        depthkv::sensitivity_profile squeeze(n_layers);
        for (std::size_t l = 0; l < n_layers; ++l) {
          double sq = 0;
          for (std::size_t i = 0; i < ev.size(); ++i) {
            const minillama::layer_record& rec = ev.prefilled(i).record(l);
            const std::size_t H = rec.probs.size(), w = rec.window;
            const std::size_t keys = H ? static_cast<std::size_t>(rec.probs[0].cols()) : 0;
            std::vector<float> buf(H * w * keys);
            for (std::size_t h = 0; h < H; ++h)
              std::copy(rec.probs[h].data(), rec.probs[h].data() + w * keys, buf.begin() + static_cast<std::ptrdiff_t>(h * w * keys));
            cake.add_layer(l, depthkv::window_attention{depthkv::span<const float>(buf), H, w, keys});
            // SqueezeAttention's 1 - cos(in, out of the attention block): the engine records the
            // per-token mean cosine (forward_options::cosine), so it is averaged here directly.
            sq += 1.0 - rec.cos_attention;
          }
          squeeze.add_point(l, 0.5, sq / static_cast<double>(ev.size()));
        }
        depthkv::sensitivity_profile cp = cake.result();
        cp.model = squeeze.model = model_name;
        squeeze.metric = "squeeze_1_minus_cos";
        cp.calibration_tokens = squeeze.calibration_tokens = calib_tokens;
        // Written when needed, or when no file is there yet; an existing file is never replaced.
        if (!proxy.count("cake") && (need_cake || !file_exists(cake_path))) {
          depthkv::save_profile(cake_path, cp);
          proxy["cake"] = cp;
          std::fprintf(stderr, "eval: CAKE proxy profile written to %s\n", cake_path.c_str());
        }
        if (!proxy.count("squeeze") && (need_squeeze || !file_exists(squeeze_path))) {
          depthkv::save_profile(squeeze_path, squeeze);
          proxy["squeeze"] = squeeze;
          std::fprintf(stderr, "eval: SqueezeAttention proxy profile written to %s\n", squeeze_path.c_str());
        }
      }

      depthkv::ablation_options ao;
      ao.keep_ratios = o.ratios;
      for (const auto& p : to_measure) {
        const std::string& path = ablation_path[p];
        depthkv::sensitivity_profile resume = partial.count(p) ? partial[p] : depthkv::sensitivity_profile{};
        if (resume.n_layers() == 0) {
          resume = depthkv::sensitivity_profile(n_layers);
          resume.model = model_name;
          resume.metric = "kl";
          resume.policy = p;
          resume.calibration_tokens = calib_tokens;
        }
        progress_bar bar(!o.quiet, n_layers * ao.keep_ratios.size(), "profile " + p);
        std::size_t done = 0;
        auto loss = minillama::make_kl_loss(ev, p, pcfg, min_keep);
        depthkv::sensitivity_profile pr = depthkv::profile_ablation(
            n_layers, loss, ao, std::move(resume), [&](const depthkv::ablation_progress& g) {
              ++done;
              if (!g.skipped && g.partial) depthkv::save_profile(path, *g.partial);  // resumable
              bar.update(done, "layer " + std::to_string(g.layer) + " keep " + fmt(g.keep_ratio, "%.2f") +
                                   " dKL " + fmt(g.delta, "%.3g"));
            });
        depthkv::save_profile(path, pr);
        std::fprintf(stderr, "eval: ablation profile (%s) written to %s\n", p.c_str(), path.c_str());
        ablation[p] = std::move(pr);
      }
      std::fprintf(stderr, "eval: profiling took %.1f s\n", seconds_since(t0));
    }
    if (!o.profile.empty())
      for (const auto& p : o.policies)
        if (ablation.count(o.policies[0])) ablation[p] = ablation[o.policies[0]];

    // Print the profiles (sensitivity per layer) so a reader sees their shape.
    for (const auto& [p, pr] : ablation) {
      std::fprintf(stderr, "eval: ablation profile %s: delta KL per layer at keep", p.c_str());
      for (double r : {0.1, 0.2, 0.4}) std::fprintf(stderr, " %.1f", r);
      std::fprintf(stderr, "\n");
      for (std::size_t l = 0; l < n_layers; ++l)
        std::fprintf(stderr, "  layer %zu: %.4g %.4g %.4g\n", l, pr.delta_at(l, 0.1), pr.delta_at(l, 0.2),
                     pr.delta_at(l, 0.4));
    }

    // ---- grid on the test set: sequences outer (one prefill each), cells inner
    std::vector<cell> cells;
    for (const auto& p : o.policies)
      for (const auto& a : o.allocators)
        for (double b : o.budgets) {
          cell c;
          c.policy = p;
          c.allocator = a;
          c.budget = b;
          cells.push_back(std::move(c));
        }
    cell full;
    full.policy = "none";
    full.allocator = "full";
    std::map<std::string, std::vector<std::size_t>> alloc_cache;
    auto allocation = [&](const cell& c, const std::vector<std::size_t>& lengths) -> const std::vector<std::size_t>& {
      std::string key = c.policy + "|" + c.allocator + "|" + fmt(c.budget, "%.17g");
      for (auto L : lengths) {  // appended piecewise: GCC 12 -Wrestrict misfires on "|" + to_string() in C++20
        key += '|';
        key += std::to_string(L);
      }
      auto it = alloc_cache.find(key);
      if (it != alloc_cache.end()) return it->second;
      depthkv::allocation_request req;
      req.lengths = lengths;
      req.minimums.assign(1, min_keep);
      req.budget = depthkv::global_budget::ratio(c.budget);
      depthkv::allocator_params ap;
      ap.pyramid_beta = o.beta;
      ap.proportional.exponent = o.exponent;
      std::vector<std::size_t> keep;
      if (c.allocator == "cake" || c.allocator == "squeeze")
        keep = depthkv::allocate("proportional", req, proxy.at(c.allocator), ap);
      else if (c.allocator == "proportional" || c.allocator == "curve")
        keep = depthkv::allocate(c.allocator, req, ablation.at(c.policy), ap);
      else
        keep = depthkv::allocate(c.allocator, req, depthkv::sensitivity_profile{}, ap);
      return alloc_cache.emplace(key, std::move(keep)).first->second;
    };

    const auto t_grid = clock_type::now();
    progress_bar bar(!o.quiet, test.size() * (cells.size() + 1), "grid");
    std::size_t done = 0;
    for (std::size_t i = 0; i < test.size(); ++i) {
      const sample& s = test[i];
      const depthkv::span<const int> ctx(s.tokens.data(), s.prefix);
      const depthkv::span<const int> cont(s.tokens.data() + s.prefix, s.tokens.size() - s.prefix);
      minillama::session pre(model, s.tokens.size());
      minillama::forward_options fo;
      fo.window = std::max<std::size_t>(o.window, 1);
      fo.column_sums = need_h2o;
      const minillama::vector last = pre.prefill(ctx, fo);
      minillama::forward_options co;
      co.all_logits = true;
      reference ref;
      ref.first_argmax = minillama::argmax(last);
      std::vector<std::size_t> lengths(n_layers);
      for (std::size_t l = 0; l < n_layers; ++l) lengths[l] = pre.cache().length(l);
      {
        minillama::session f = pre;
        const minillama::matrix lg = f.forward(cont, co);
        for (Eigen::Index t = 0; t < lg.rows(); ++t) {
          const auto lp = minillama::log_softmax(lg.row(t).data(), static_cast<std::size_t>(lg.cols()));
          ref.logp.emplace_back(lp.begin(), lp.end());
        }
        const seq_metrics m = score(s, lg, ref);
        full.kl.push_back(m.kl);
        full.nll.push_back(m.nll);
        full.acc.push_back(m.acc);
        full.correct += m.correct;
        full.queries += m.queries;
        full.kv_bytes += static_cast<double>(pre.cache().bytes_in_use());
        full.kv_bytes_full += static_cast<double>(pre.cache().bytes_in_use());
        bar.update(++done, "seq " + std::to_string(i) + " full cache");
      }
      for (cell& c : cells) {
        std::vector<std::size_t> keep;
        try {
          keep = allocation(c, lengths);
        } catch (const depthkv::error& e) {
          if (c.note.empty()) {
            c.note = e.what();
            std::fprintf(stderr, "\neval: skipping %s/%s at %.2f: %s\n", c.policy.c_str(), c.allocator.c_str(),
                         c.budget, e.what());
          }
          bar.update(++done, "");
          continue;
        }
        minillama::session ps = pre;
        const std::size_t before = ps.cache().bytes_in_use();
        ps.prune(minillama::make_policy_pruner(keep, c.policy, pcfg));
        const std::size_t after = ps.cache().bytes_in_use();
        const minillama::matrix lg = ps.forward(cont, co);
        const seq_metrics m = score(s, lg, ref);
        c.kl.push_back(m.kl);
        c.nll.push_back(m.nll);
        c.acc.push_back(m.acc);
        c.correct += m.correct;
        c.queries += m.queries;
        c.kv_bytes += static_cast<double>(after);
        c.kv_bytes_full += static_cast<double>(before);
        std::size_t kept = 0, total = 0;
        for (std::size_t l = 0; l < n_layers; ++l) {
          kept += std::min(keep[l], lengths[l]);
          total += lengths[l];
        }
        if (i == 0) {
          c.kept = kept;
          c.total = total;
          if (ablation.count(c.policy))
            c.predicted = depthkv::predicted_loss(ablation.at(c.policy), depthkv::span<const std::size_t>(lengths),
                                                  depthkv::span<const std::size_t>(keep));
        }
        if (o.check) {
          const std::size_t want = static_cast<std::size_t>(std::floor(c.budget * static_cast<double>(total) + 0.5));
          if (kept != want)
            fail_check(c.policy + "/" + c.allocator + " at " + fmt(c.budget) + ": allocation keeps " +
                       std::to_string(kept) + " tokens, budget is " + std::to_string(want));
          if (after * total != before * kept)
            fail_check(c.policy + "/" + c.allocator + ": KV bytes " + std::to_string(after) + "/" +
                       std::to_string(before) + " differ from kept tokens " + std::to_string(kept) + "/" +
                       std::to_string(total));
          if (!(std::isfinite(m.kl) && m.kl >= 0 && std::isfinite(m.nll)))
            fail_check(c.policy + "/" + c.allocator + ": non-finite or negative KL/NLL");
          const bool same_acc = m.acc == full.acc.back() || (std::isnan(m.acc) && std::isnan(full.acc.back()));
          if (c.budget == 1.0 && (m.kl != 0.0 || !same_acc || m.nll != full.nll.back()))
            fail_check(c.policy + "/" + c.allocator + " at keep 1: KL " + fmt(m.kl) + " (want exactly 0), NLL " +
                       fmt(m.nll) + " vs " + fmt(full.nll.back()));
        }
        bar.update(++done, "seq " + std::to_string(i) + " " + c.policy + "/" + c.allocator + " " +
                               fmt(c.budget, "%.2f"));
      }
    }
    std::fprintf(stderr, "eval: grid of %zu cells x %zu sequences took %.1f s\n", cells.size(), test.size(),
                 seconds_since(t_grid));

    // ---- outputs
    const std::string res_path = o.out + "/results.csv", alloc_path = o.out + "/allocations.csv";
    {
      std::ofstream f(res_path);
      if (!f) die("cannot write '" + res_path + "'");
      f << "# eval: model " << model_name << ", test " << o.test << " (" << test.size() << " sequences, context "
        << test[0].prefix << "), sink " << o.sink << ", recent " << o.recent << ", window " << o.window
        << ", seed " << o.seed << "; CIs: mean +- 1.96 sd/sqrt(n) over sequences (clamped to KL >= 0 and accuracy in [0,1])\n";
      f << "policy,allocator,keep_ratio,kept_tokens,total_tokens,kv_bytes,kv_bytes_full,kv_fraction,n_seqs,"
           "kl,kl_lo,kl_hi,nll,nll_lo,nll_hi,ppl,ppl_lo,ppl_hi,acc,acc_lo,acc_hi,correct,queries,predicted_kl,"
           "kl_minus_uniform,kl_minus_uniform_lo,kl_minus_uniform_hi,note\n";
      auto row = [&](const cell& c) {
        const interval kl = clamp_to(ci95(c.kl), 0, INFINITY), nll = ci95(c.nll), acc = clamp_to(ci95(c.acc), 0, 1);
        std::string note = c.note;
        for (char& ch : note)
          if (ch == ',' || ch == '\n' || ch == '"') ch = ';';
        f << c.policy << ',' << c.allocator << ',' << fmt(c.budget) << ',' << c.kept << ',' << c.total << ','
          << fmt(c.kv_bytes / std::max<std::size_t>(c.kl.size(), 1), "%.0f") << ','
          << fmt(c.kv_bytes_full / std::max<std::size_t>(c.kl.size(), 1), "%.0f") << ','
          << fmt(c.kv_bytes_full > 0 ? c.kv_bytes / c.kv_bytes_full : NAN) << ',' << kl.n << ',' << fmt(kl.mean)
          << ',' << fmt(kl.lo) << ',' << fmt(kl.hi) << ',' << fmt(nll.mean) << ',' << fmt(nll.lo) << ','
          << fmt(nll.hi) << ',' << fmt(std::exp(nll.mean)) << ',' << fmt(std::exp(nll.lo)) << ','
          << fmt(std::exp(nll.hi)) << ',' << fmt(acc.mean) << ',' << fmt(acc.lo) << ',' << fmt(acc.hi) << ','
          << c.correct << ',' << c.queries << ',' << fmt(c.predicted) << ',';
        // Paired over the same sequences: KL of this cell minus KL of uniform (same policy and
        // budget); its interval is much tighter than comparing the two unpaired intervals.
        interval d;
        for (const cell& u : cells)
          if (u.policy == c.policy && u.allocator == "uniform" && u.budget == c.budget && u.kl.size() == c.kl.size() &&
              !c.kl.empty()) {
            std::vector<double> diff(c.kl.size());
            for (std::size_t i = 0; i < diff.size(); ++i) diff[i] = c.kl[i] - u.kl[i];
            d = ci95(diff);
          }
        f << fmt(d.mean) << ',' << fmt(d.lo) << ',' << fmt(d.hi) << ',' << note << '\n';
      };
      full.kept = full.total = 0;
      for (std::size_t l = 0; l < n_layers; ++l) full.total += test[0].prefix;
      full.kept = full.total;
      row(full);
      for (const cell& c : cells) row(c);
      if (!f) die("write to '" + res_path + "' failed");
    }
    {
      std::ofstream f(alloc_path);
      if (!f) die("cannot write '" + alloc_path + "'");
      f << "policy,allocator,keep_ratio,layer,length,keep\n";
      std::vector<std::size_t> lengths(n_layers, test[0].prefix);
      for (const cell& c : cells) {
        if (!c.note.empty()) continue;
        const auto& keep = allocation(c, lengths);
        for (std::size_t l = 0; l < n_layers; ++l)
          f << c.policy << ',' << c.allocator << ',' << fmt(c.budget) << ',' << l << ',' << lengths[l] << ','
            << keep[l] << '\n';
      }
    }

    // ---- summary table on stdout
    const interval facc = ci95(full.acc), fnll = ci95(full.nll);
    std::printf("full cache: NLL %.4f (ppl %.3f), retrieval accuracy %s (%zu/%zu queries), %zu test sequences\n",
                fnll.mean, std::exp(fnll.mean), full.queries ? fmt(100 * facc.mean, "%.1f%%").c_str() : "n/a",
                full.correct, full.queries, test.size());
    for (const auto& p : o.policies) {
      std::printf("\npolicy %s: mean KL to the full cache [95%% CI] / retrieval accuracy, by global keep ratio\n",
                  p.c_str());
      std::printf("%-13s", "allocator");
      for (double b : o.budgets) std::printf(" | %-32s", (fmt(100 * b, "%.0f") + "% kept").c_str());
      std::printf("\n");
      for (const auto& a : o.allocators) {
        std::printf("%-13s", a.c_str());
        for (double b : o.budgets) {
          const cell* c = nullptr;
          for (const cell& x : cells)
            if (x.policy == p && x.allocator == a && x.budget == b) c = &x;
          std::string txt = "skipped";
          if (c && c->note.empty()) {
            const interval kl = clamp_to(ci95(c->kl), 0, INFINITY), acc = ci95(c->acc);
            char buf[96];
            std::snprintf(buf, sizeof buf, "%.3g [%.2g,%.2g] / %s", kl.mean, kl.lo, kl.hi,
                          c->queries ? fmt(100 * acc.mean, "%.0f%%").c_str() : "n/a");
            txt = buf;
          }
          std::printf(" | %-32s", txt.c_str());
        }
        std::printf("\n");
      }
    }
    std::set<std::string> used;
    for (const auto& p : o.policies)
      if (ablation.count(p)) used.insert(ablation_path[o.profile.empty() ? p : o.policies[0]]);
    if (proxy.count("cake") && need_cake) used.insert(cake_path);
    if (proxy.count("squeeze") && need_squeeze) used.insert(squeeze_path);
    std::string prof_list;
    for (const auto& u : used) prof_list += (prof_list.empty() ? "" : ", ") + u;
    std::printf("\nresults: %s (every cell), allocations: %s%s%s\n", res_path.c_str(), alloc_path.c_str(),
                used.empty() ? "" : ", profiles: ", prof_list.c_str());
    std::fprintf(stderr, "eval: total %.1f s\n", seconds_since(t_start));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "eval: error: %s\n", e.what());
    return 1;
  }
  return broken ? 1 : 0;
}
