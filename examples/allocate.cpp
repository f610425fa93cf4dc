// allocate: reads a sensitivity profile (CSV) and prints the per-layer keep counts of every
// allocator side by side, with totals and the loss each allocation predicts from the profile.
//
// Shows the budget layer on its own, without a model: depthkv::load_profile, an
// allocation_request (lengths, minimums, a global budget as a ratio or in tokens),
// depthkv::allocate by name over depthkv::allocator_names, and depthkv::predicted_loss.
//
//   allocate PROFILE.csv [--ratio R | --budget N] [--tokens N | --lengths a,b,...]
//            [--min M] [--beta B] [--exponent P] [--sweep]
//
// Run from the repository root, after building (scripts/test.sh or cmake; see README.md):
//   build/examples/allocate examples/data/sample_profile.csv --ratio 0.3 --sweep
//   build/examples/allocate models/recall-6l/profile_snapkv.csv --tokens 1010 --min 20
// Defaults: --ratio 0.2 --tokens 384 --min 36 (4 sink + 32 window) --beta 20 --exponent 1.
// --sweep additionally prints the predicted loss of each allocator over a range of keep ratios.
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
    sensitivity_profile prof;
    try {
      prof = load_profile(path);
    } catch (const error& e) {
      input_error(std::string("PROFILE.csv: ") + e.what());
    }
    const std::size_t L = prof.n_layers();
    if (lengths.empty()) lengths.assign(L, o.tokens);
    if (lengths.size() != L)
      input_error("--lengths has " + std::to_string(lengths.size()) + " entries, the profile has " +
                  std::to_string(L) + " layers");
    allocation_request req;
    req.lengths = lengths;
    req.minimums = {minimum};
    req.budget = o.have_budget ? global_budget::tokens(o.budget) : global_budget::ratio(o.ratio);
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
    if (want > total)
      input_error(what + " exceeds the total length of " + std::to_string(total) + " tokens");
    if (want < floor_sum)
      input_error(what + " is below the per-layer minimums (--min " + std::to_string(minimum) + " over " +
                  std::to_string(L) + " layers: " + std::to_string(floor_sum) + " tokens)");
    const auto r = resolve(req);

    std::printf("profile: %s (%zu layers, metric %s, policy %s, %llu calibration tokens)\n",
                prof.model.empty() ? "?" : prof.model.c_str(), L, prof.metric.empty() ? "?" : prof.metric.c_str(),
                prof.policy.empty() ? "?" : prof.policy.c_str(),
                static_cast<unsigned long long>(prof.calibration_tokens));
    std::printf("budget: %zu of %zu tokens (keep ratio %.4f), per-layer minimum %zu, pyramid beta %g, "
                "proportional exponent %g\n\n",
                r.budget, r.total, r.keep_ratio(), minimum, params.pyramid_beta, params.proportional.exponent);

    std::vector<std::vector<std::size_t>> counts;
    for (const auto name : allocator_names) counts.push_back(allocate(name, req, prof, params));

    std::printf("%5s %8s", "layer", "length");
    for (const auto name : allocator_names) std::printf(" %13.*s", int(name.size()), name.data());
    std::printf("\n");
    for (std::size_t l = 0; l < L; ++l) {
      std::printf("%5zu %8zu", l, lengths[l]);
      for (const auto& c : counts) std::printf(" %13zu", c[l]);
      std::printf("\n");
    }
    std::printf("%5s %8zu", "total", r.total);
    for (const auto& c : counts) {
      std::size_t s = 0;
      for (const auto v : c) s += v;
      std::printf(" %13zu", s);
    }
    std::printf("\n%14s", "pred. loss");
    for (const auto& c : counts) std::printf(" %13.6g", predicted_loss(prof, lengths, c));
    std::printf("\n(pred. loss = sum over layers of the profile's delta at the layer's keep ratio)\n");

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
            std::printf(" %13.6g", predicted_loss(prof, lengths, allocate(name, q, prof, params)));
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
