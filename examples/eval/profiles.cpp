#include "profiles.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "common.hpp"
#include "depthkv/budget/profiler.hpp"
#include "longgen.hpp"
#include "minillama/eval.hpp"
#include "minillama/policy_prune.hpp"

namespace eval {
namespace {

using depthkv::sensitivity_profile;

bool requested(const dcli::eval_options& o, std::string_view allocator) {
  return std::find(o.allocators.begin(), o.allocators.end(), allocator) != o.allocators.end();
}

// Reads a profile of this model's layer count; nullopt (and a warning) when it is stale: it names
// another model (a different content hash or, without hashes, a different name).
std::optional<sensitivity_profile> load_current(const run_context& c, const std::string& path, bool allow_missing) {
  depthkv::profile_read_options ro;
  ro.allow_missing_layers = allow_missing;
  sensitivity_profile pr = depthkv::load_profile(path, ro);
  DEPTHKV_CHECK(pr.n_layers() == c.n_layers, "eval", "profile '", path, "' has ", pr.n_layers(),
                " layers but the model has ", c.n_layers);
  if (dcli::profile_matches_model(pr.model, c.model_name)) return pr;
  std::fprintf(stderr, "eval: WARNING: profile '%s' was measured on model '%s', not '%s'; not using it\n",
               path.c_str(), pr.model.c_str(), c.model_name.c_str());
  return std::nullopt;
}

// Reused when every layer has every requested ratio (or, for an explicit --profile, any complete
// profile); otherwise the missing points are measured (resuming a crash).
// Every layer the profiles measure has points (a hybrid model's skipped sliding layers need none).
bool complete_for(const run_context& c, const sensitivity_profile& pr) {
  for (std::size_t l = 0; l < c.n_layers; ++l)
    if (c.profiled(l) && pr.points(l).empty()) return false;
  return true;
}

bool reusable(const run_context& c, const sensitivity_profile& pr) {
  bool all_points = complete_for(c, pr);
  for (std::size_t l = 0; all_points && l < c.n_layers; ++l)
    for (double r : c.o.ratios) all_points = all_points && (!c.profiled(l) || pr.has_point(l, r));
  return all_points || (complete_for(c, pr) && !c.o.profile.empty());
}

// Policy p's ablation profile from its file, into s.ablation (complete) or `partial` (to
// resume). A stale file sends the profile to --out instead (looked at once more).
void find_ablation(const run_context& c, const std::string& p, profile_set& s,
                   std::map<std::string, sensitivity_profile>& partial) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    const std::string path = s.ablation_path[p];
    if (!file_exists(path)) return;
    std::optional<sensitivity_profile> pr = load_current(c, path, true);
    if (!pr) {
      const std::string fresh = c.o.out + "/profile_" + p + ".csv";
      if (fresh == path) return;  // measured again into the same place
      s.ablation_path[p] = fresh;
      continue;
    }
    if (reusable(c, *pr)) {
      if (!pr->policy.empty() && pr->policy != p)
        std::fprintf(stderr, "eval: note: profile '%s' was measured with policy %s, used for %s\n", path.c_str(),
                     pr->policy.c_str(), p.c_str());
      std::fprintf(stderr, "eval: reusing ablation profile %s\n", path.c_str());
      s.ablation[p] = std::move(*pr);
    } else {
      std::fprintf(stderr, "eval: resuming ablation profile %s\n", path.c_str());
      partial[p] = std::move(*pr);
    }
    return;
  }
}

// The policies whose ablation profile must be measured (one shared --profile: the first
// policy's); the others are read into s.ablation.
std::vector<std::string> find_ablations(const run_context& c, profile_set& s,
                                        std::map<std::string, sensitivity_profile>& partial) {
  std::vector<std::string> to_measure;
  for (const auto& p : c.o.policies) {
    if (!c.o.profile.empty() && p != c.o.policies[0]) continue;
    find_ablation(c, p, s, partial);
    if (!s.ablation.count(p)) to_measure.push_back(p);
  }
  return to_measure;
}

// Reads the requested proxy profiles that exist; true when one is still missing.
bool find_proxies(const run_context& c, profile_set& s) {
  bool missing = false;
  for (const allocator_entry& a : allocator_entries) {
    if (a.profile != profile_kind::proxy) continue;
    const std::string name(a.name);
    std::string& path = s.proxy_path[name] = c.profile_dir + "/profile_" + name + ".csv";
    if (!requested(c.o, a.name)) continue;
    if (file_exists(path)) {
      std::optional<sensitivity_profile> pr = load_current(c, path, c.hybrid());
      if (pr && !complete_for(c, *pr))
        DEPTHKV_CHECK(false, "eval", "profile '", path, "' lacks points of a layer this model's profiles measure");
      if (pr) s.proxy[name] = std::move(*pr);
      else path = c.o.out + "/profile_" + name + ".csv";
    }
    missing = missing || !s.proxy.count(name);
  }
  return missing;
}

// The calibration sequences, checked against the options.
struct calibration_set {
  std::vector<std::vector<int>> seqs;
  std::size_t prefix = 0;  // one prefix length for all (minillama::kl_evaluator): the shortest context
  std::size_t tokens = 0;
};

calibration_set read_calibration(const run_context& c, const data_reader& reader) {
  const std::vector<sample> calib = reader.read("--calib", c.o.calib);
  check_against_data(c.o, calib, c.n_layers, "calibration set", "--calib", false);
  calibration_set cs;
  cs.prefix = shortest_context(calib);
  for (const auto& s : calib) {
    cs.seqs.push_back(s.tokens);
    cs.tokens += s.tokens.size();
  }
  std::fprintf(stderr, "eval: calibration set %s: %zu sequences, prefix %zu; prefilling\n", c.o.calib.c_str(),
               calib.size(), cs.prefix);
  return cs;
}

// The observation-window attention of a layer record as CAKE reads it, copied into `buf`.
depthkv::window_attention window_of(const minillama::layer_record& rec, std::vector<float>& buf) {
  const std::size_t H = rec.probs.size(), w = rec.window;
  const std::size_t keys = H ? static_cast<std::size_t>(rec.probs[0].cols()) : 0;
  buf.resize(H * w * keys);
  for (std::size_t h = 0; h < H; ++h)
    std::copy(rec.probs[h].data(), rec.probs[h].data() + w * keys, buf.begin() + static_cast<std::ptrdiff_t>(h * w * keys));
  return depthkv::window_attention{depthkv::span<const float>(buf), H, w, keys};
}

// Both proxy profiles from the calibration prefills' records, by name.
std::map<std::string, sensitivity_profile> measure_proxies(const run_context& c, const minillama::kl_evaluator& ev,
                                                           std::size_t calib_tokens) {
  depthkv::cake_profiler cake(c.n_layers);
  depthkv::squeeze_profiler squeeze(c.n_layers);
  std::vector<float> buf;
  for (std::size_t l = 0; l < c.n_layers; ++l)
    for (std::size_t i = 0; i < ev.size() && c.profiled(l); ++i) {
      const minillama::layer_record& rec = ev.prefilled(i).record(l);
      cake.add_layer(l, window_of(rec, buf));
      squeeze.add_mean_cosine(l, rec.cos_attention);  // the engine records the mean cosine itself
    }
  const depthkv::span<const depthkv::layer_attention> att(c.attention);
  std::map<std::string, sensitivity_profile> m{{"cake", cake.result(att, c.local)},
                                               {"squeeze", squeeze.result(att, c.local)}};
  for (auto& [name, pr] : m) {
    pr.model = c.model_name;
    pr.calibration_tokens = calib_tokens;
  }
  return m;
}

// Proxy profiles are always measured when the prefills exist; each is written when requested
// (and not read) or when no file is there yet: an existing file is never replaced.
void write_proxies(const run_context& c, const minillama::kl_evaluator& ev, std::size_t calib_tokens, profile_set& s) {
  std::map<std::string, sensitivity_profile> measured = measure_proxies(c, ev, calib_tokens);
  for (const allocator_entry& a : allocator_entries) {
    if (a.profile != profile_kind::proxy) continue;
    const std::string name(a.name);
    const std::string& path = s.proxy_path.at(name);
    const bool write = !s.proxy.count(name) && (requested(c.o, a.name) || !file_exists(path));
    if (!write) continue;
    depthkv::save_profile(path, measured.at(name));
    s.proxy[name] = measured.at(name);
    std::fprintf(stderr, "eval: %s proxy profile written to %s\n", std::string(a.proxy_title).c_str(), path.c_str());
  }
}

// Policy p's ablation profile with `loss`, resuming `resume` (saved after every point), written to `path`.
sensitivity_profile measure_ablation(const run_context& c, const std::function<double(depthkv::span<const double>)>& loss,
                                     const std::string& p, const std::string& path, sensitivity_profile resume,
                                     std::size_t calib_tokens) {
  depthkv::ablation_options ao;
  ao.keep_ratios = c.o.ratios;
  ao.attention = c.attention;
  ao.local = c.local;
  std::size_t profiled = 0;
  for (std::size_t l = 0; l < c.n_layers; ++l) profiled += c.profiled(l);
  if (resume.n_layers() == 0) {
    resume = sensitivity_profile(c.n_layers);
    resume.model = c.model_name;
    resume.metric = c.o.profile_generate ? "kl_generate_" + std::to_string(c.o.generate) : "kl";
    resume.policy = p;
    resume.calibration_tokens = calib_tokens;
  }
  progress_bar bar(!c.o.quiet, profiled * ao.keep_ratios.size(), "profile " + p);
  std::size_t done = 0;
  sensitivity_profile pr = depthkv::profile_ablation(
      c.n_layers, loss, ao, std::move(resume), [&](const depthkv::ablation_progress& g) {
        ++done;
        if (!g.skipped && g.partial) depthkv::save_profile(path, *g.partial);  // resumable
        bar.update(done, "layer " + std::to_string(g.layer) + " keep " + fmt(g.keep_ratio, "%.2f") + " dKL " +
                             fmt(g.delta, "%.3g"));
      });
  depthkv::save_profile(path, pr);
  std::fprintf(stderr, "eval: ablation profile (%s) written to %s\n", p.c_str(), path.c_str());
  return pr;
}

// Prefills the calibration set once; measures the proxy profiles and the ablation profiles of
// `to_measure`.
void calibrate(const run_context& c, const data_reader& reader, const std::vector<std::string>& to_measure,
               std::map<std::string, sensitivity_profile>& partial, profile_set& s) {
  const auto t0 = clock_type::now();
  calibration_set cs = read_calibration(c, reader);
  const minillama::kl_evaluator ev(c.model, std::move(cs.seqs), cs.prefix, std::max<std::size_t>(c.o.window, 2),
                                   c.need_h2o);
  write_proxies(c, ev, cs.tokens, s);
  // --profile-generate: the loss of the long-generation mode, on full-cache generations of the
  // calibration set computed once.
  std::shared_ptr<const long_calibration> cal;
  if (c.o.profile_generate && !to_measure.empty()) {
    cal = prepare_long_calibration(c, reader.read("--calib", c.o.calib));
    std::fprintf(stderr, "eval: calibration set: %zu full-cache generations of %zu tokens (%.1f s)\n",
                 ev.size(), c.o.generate, seconds_since(t0));
  }
  for (const auto& p : to_measure) {
    sensitivity_profile resume = partial.count(p) ? partial[p] : sensitivity_profile{};
    const std::function<double(depthkv::span<const double>)> loss =
        cal ? make_long_generation_loss(c, cal, p) : minillama::make_kl_loss(ev, p, c.pcfg, c.min_keep);
    s.ablation[p] = measure_ablation(c, loss, p, s.ablation_path[p], std::move(resume), cs.tokens);
  }
  std::fprintf(stderr, "eval: profiling took %.1f s\n", seconds_since(t0));
}

}  // namespace

const sensitivity_profile& profile_set::for_cell(const allocator_entry& a, const std::string& policy) const {
  static const sensitivity_profile none;
  switch (a.profile) {
    case profile_kind::proxy: return proxy.at(std::string(a.name));
    case profile_kind::ablation: return ablation.at(policy);
    case profile_kind::none: break;
  }
  return none;
}

std::set<std::string> profile_set::files_used(const dcli::eval_options& o) const {
  std::set<std::string> used;
  for (const auto& p : o.policies)
    if (ablation.count(p)) used.insert(ablation_path.at(o.profile.empty() ? p : o.policies[0]));
  for (const auto& [name, pr] : proxy)
    if (requested(o, name)) used.insert(proxy_path.at(name));
  return used;
}

profile_set prepare_profiles(const run_context& c, const data_reader& reader) {
  const dcli::eval_options& o = c.o;
  profile_set s;
  // Long-generation profiles (--profile-generate) have their own files: another loss.
  const std::string suffix = o.profile_generate ? "_generate" + std::to_string(o.generate) : "";
  for (const auto& p : o.policies)
    s.ablation_path[p] = o.profile.empty() ? c.profile_dir + "/profile_" + p + suffix + ".csv" : o.profile;
  std::map<std::string, sensitivity_profile> partial;
  std::vector<std::string> to_measure;
  if (any_needs(o.allocators, profile_kind::ablation)) to_measure = find_ablations(c, s, partial);
  const bool proxies_missing = find_proxies(c, s);
  if (!to_measure.empty() || proxies_missing) calibrate(c, reader, to_measure, partial, s);
  if (!o.profile.empty())  // one file for every policy
    for (const auto& p : o.policies)
      if (s.ablation.count(o.policies[0])) s.ablation[p] = s.ablation[o.policies[0]];
  return s;
}

void print_ablation_profiles(const profile_set& s, std::size_t n_layers) {
  for (const auto& [p, pr] : s.ablation) {
    std::fprintf(stderr, "eval: ablation profile %s: delta KL per layer at keep", p.c_str());
    for (double r : {0.1, 0.2, 0.4}) std::fprintf(stderr, " %.1f", r);
    std::fprintf(stderr, "\n");
    for (std::size_t l = 0; l < n_layers; ++l)
      if (pr.points(l).empty())
        std::fprintf(stderr, "  layer %zu: not profiled (sliding window)\n", l);
      else
        std::fprintf(stderr, "  layer %zu: %.4g %.4g %.4g\n", l, pr.delta_at(l, 0.1), pr.delta_at(l, 0.2),
                     pr.delta_at(l, 0.4));
  }
}

}  // namespace eval
