// allocate: reads a sensitivity profile (CSV) and prints the per-layer keep counts of every
// allocator side by side, with totals and the loss each allocation predicts from the profile.
//
// Shows the budget layer on its own, without a model: depthkv::load_profile, an
// allocation_request (lengths, minimums, a global budget as a ratio or in tokens),
// depthkv::allocate by name over depthkv::allocator_names, and depthkv::predicted_loss.
//
//   allocate PROFILE.csv [--ratio R | --budget N] [--tokens N | --lengths a,b,...]
//            [--min M] [--beta B] [--exponent P] [--sweep]
//            [--local-layers a,b,... --local-window W [--budget-scope all|global]]
//
// Run from the repository root, after building (scripts/test.sh or cmake; see README.md):
//   build/examples/allocate examples/data/sample_profile.csv --ratio 0.3 --sweep
//   build/examples/allocate models/recall-6l/profile_snapkv.csv --tokens 1010 --min 20
// Defaults: --ratio 0.2 --tokens 384 --min 36 (4 sink + 32 window) --beta 20 --exponent 1.
// --sweep additionally prints the predicted loss of each allocator over a range of keep ratios.
// --local-layers/--local-window mark sliding-window layers (hybrid models: Gemma 2/3, gpt-oss):
// each keeps min(length, W), the allocators split the rest over the global layers, and the
// profile needs no points for the local layers; --budget-scope says what the budget covers.
// The command line: examples/cli/allocate_args.cpp (`allocate --help`); bad arguments, a missing
// or malformed profile, and a budget that does not fit the lengths exit with status 2.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli/args.hpp"
#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"

namespace {

// Input errors (the profile named, a budget that does not fit it): status 2, naming the flag.
[[noreturn]] void input_error(const std::string& msg) { dcli::exit_input_error("allocate", msg); }

}  // namespace

int main(int argc, char** argv) {
  using namespace depthkv;
  const dcli::allocate_options o = dcli::parse_or_exit("allocate", dcli::parse_allocate_args, argc, argv);
  const std::string& path = o.profile;
  const std::size_t minimum = o.minimum;
  std::vector<std::size_t> lengths = o.lengths;
  allocator_params params;
  params.pyramid_beta = o.beta;
  params.proportional.exponent = o.exponent;
  try {
    dcli::check_input_file("PROFILE.csv", path);
  } catch (const dcli::cli_error& e) {
    input_error(e.what());
  }

  try {
    const bool hybrid = !o.local_layers.empty();
    sensitivity_profile prof;
    try {
      profile_read_options ro;
      ro.allow_missing_layers = hybrid;  // local layers need no points (checked for the global ones below)
      prof = load_profile(path, ro);
    } catch (const error& e) {
      input_error(std::string("PROFILE.csv: ") + e.what());
    }
    const std::size_t L = prof.n_layers();
    if (lengths.empty()) lengths.assign(L, o.tokens);
    if (lengths.size() != L)
      input_error("--lengths has " + std::to_string(lengths.size()) + " entries, the profile has " +
                  std::to_string(L) + " layers");
    std::vector<bool> local(L, false);
    for (const std::size_t l : o.local_layers) {
      if (l >= L)
        input_error("--local-layers: layer " + std::to_string(l) + " is out of range (the profile has " +
                    std::to_string(L) + " layers)");
      local[l] = true;
    }
    for (std::size_t l = 0; l < L; ++l)
      if (!local[l] && prof.points(l).empty())
        input_error("PROFILE.csv: layer " + std::to_string(l) + " (a global layer) has no points");
    allocation_request req;
    req.lengths = lengths;
    req.minimums = {minimum};
    req.budget = o.have_budget ? global_budget::tokens(o.budget) : global_budget::ratio(o.ratio);
    for (std::size_t l = 0; hybrid && l < L; ++l)
      req.attention.push_back(local[l] ? layer_attention::sliding(window_tokens{o.local_window})
                                       : layer_attention::global());
    req.scope = o.scope_global ? budget_scope::global_layers : budget_scope::all_layers;
    // The budget must fit the lengths: at least the per-layer minimums, at most the total.
    std::size_t total = 0, floor_sum = 0;
    for (const auto n : lengths) {
      total += n;
      floor_sum += std::min(n, minimum);
    }
    const std::size_t want =
        o.have_budget ? o.budget : static_cast<std::size_t>(std::floor(o.ratio * static_cast<double>(total) + 0.5));
    char ratio_text[32];
    std::snprintf(ratio_text, sizeof ratio_text, "%g", o.ratio);
    const std::string what = o.have_budget ? "--budget " + std::to_string(o.budget)
                                           : "--ratio " + std::string(ratio_text) + " (" + std::to_string(want) +
                                                 " tokens)";
    if (hybrid) {  // the library's check says what the local windows take of the budget
      try {
        (void)resolve(req);
      } catch (const error& e) {
        input_error((o.have_budget ? "--budget " + std::to_string(o.budget) : "--ratio " + std::string(ratio_text)) +
                    ": " + e.what());
      }
    } else if (want > total) {
      input_error(what + " exceeds the total length of " + std::to_string(total) + " tokens");
    } else if (want < floor_sum) {
      input_error(what + " is below the per-layer minimums (--min " + std::to_string(minimum) + " over " +
                  std::to_string(L) + " layers: " + std::to_string(floor_sum) + " tokens)");
    }
    const auto r = resolve(req);
    // Predicted loss: the profile's delta at each global layer's keep ratio (a local layer keeps
    // its whole window: nothing of its own to lose, and it may have no points).
    const auto loss = [&](const std::vector<std::size_t>& c) {
      if (!hybrid) return predicted_loss(prof, lengths, c);
      double sum = 0.0;
      for (std::size_t l = 0; l < L; ++l)
        if (!local[l]) sum += prof.delta_at(l, lengths[l] == 0 ? 1.0 : double(c[l]) / double(lengths[l]));
      return sum;
    };

    std::printf("profile: %s (%zu layers, metric %s, policy %s, %llu calibration tokens)\n",
                prof.model.empty() ? "?" : prof.model.c_str(), L, prof.metric.empty() ? "?" : prof.metric.c_str(),
                prof.policy.empty() ? "?" : prof.policy.c_str(),
                static_cast<unsigned long long>(prof.calibration_tokens));
    std::printf("budget: %zu of %zu tokens (keep ratio %.4f), per-layer minimum %zu, pyramid beta %g, "
                "proportional exponent %g\n",
                r.budget, r.total, r.keep_ratio(), minimum, params.pyramid_beta, params.proportional.exponent);
    if (hybrid)
      std::printf("local layers: %zu of %zu, window %zu, keep %zu tokens (min(length, window)) outside the split; "
                  "the budget covers %s\n",
                  o.local_layers.size(), L, o.local_window, r.sliding,
                  o.scope_global ? "the global layers only (the windows on top)"
                                 : "all layers (the windows charged first)");
    std::printf("\n");

    std::vector<std::vector<std::size_t>> counts;
    for (const auto name : allocator_names) counts.push_back(allocate(name, req, prof, params));

    std::printf("%5s %8s", "layer", "length");
    if (hybrid) std::printf(" %7s", "attn");
    for (const auto name : allocator_names) std::printf(" %13.*s", int(name.size()), name.data());
    std::printf("\n");
    for (std::size_t l = 0; l < L; ++l) {
      std::printf("%5zu %8zu", l, lengths[l]);
      if (hybrid) std::printf(" %7s", local[l] ? "local" : "global");
      for (const auto& c : counts) std::printf(" %13zu", c[l]);
      std::printf("\n");
    }
    std::printf("%5s %8zu", "total", r.total);
    if (hybrid) std::printf(" %7s", "");
    for (const auto& c : counts) {
      std::size_t s = 0;
      for (const auto v : c) s += v;
      std::printf(" %13zu", s);
    }
    std::printf("\n%14s", "pred. loss");
    if (hybrid) std::printf(" %7s", "");
    for (const auto& c : counts) std::printf(" %13.6g", loss(c));
    std::printf("\n(pred. loss = sum over %slayers of the profile's delta at the layer's keep ratio)\n",
                hybrid ? "the global " : "");

    if (o.sweep) {
      std::printf("\npredicted loss by global keep ratio\n%14s", "keep ratio");
      for (const auto name : allocator_names) std::printf(" %13.*s", int(name.size()), name.data());
      std::printf("\n");
      for (const double kr : {0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8}) {
        allocation_request q = req;
        q.budget = global_budget::ratio(kr);
        std::printf("%14.2f", kr);
        for (const auto name : allocator_names) {
          try {
            std::printf(" %13.6g", loss(allocate(name, q, prof, params)));
          } catch (const error&) {
            std::printf(" %13s", "infeasible");
          }
        }
        std::printf("\n");
      }
    }
  } catch (const error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
