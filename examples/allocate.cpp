// allocate: reads a sensitivity profile (CSV) and prints the per-layer keep counts of every
// allocator side by side, with totals and the loss each allocation predicts from the profile.
//
//   allocate PROFILE.csv [--ratio R | --budget N] [--tokens N | --lengths a,b,...]
//            [--min M] [--beta B] [--exponent P] [--sweep]
// Defaults: --ratio 0.2 --tokens 384 --min 36 (4 sink + 32 window) --beta 20 --exponent 1.
// --sweep additionally prints the predicted loss of each allocator over a range of keep ratios.
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "depthkv/budget/allocate.hpp"
#include "depthkv/budget/profile.hpp"

namespace {

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "error: %s\n"
               "usage: allocate PROFILE.csv [--ratio R | --budget N] [--tokens N | --lengths a,b,...]\n"
               "                [--min M] [--beta B] [--exponent P] [--sweep]\n",
               msg);
  std::exit(2);
}

double to_double(const std::string& s, const char* what) {
  try {
    std::size_t pos = 0;
    const double v = std::stod(s, &pos);
    if (pos == s.size()) return v;
  } catch (const std::exception&) {
  }
  usage((std::string("bad number for ") + what + ": '" + s + "'").c_str());
}

std::size_t to_size(const std::string& s, const char* what) {
  try {
    std::size_t pos = 0;
    if (!s.empty() && s[0] != '-') {
      const unsigned long long v = std::stoull(s, &pos);
      if (pos == s.size()) return static_cast<std::size_t>(v);
    }
  } catch (const std::exception&) {
  }
  usage((std::string("bad count for ") + what + ": '" + s + "'").c_str());
}

}  // namespace

int main(int argc, char** argv) {
  using namespace depthkv;
  std::string path;
  double ratio = 0.2;
  bool have_budget = false;
  std::size_t budget = 0, tokens = 384, minimum = 36;
  std::vector<std::size_t> lengths;
  allocator_params params;
  bool sweep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= argc) usage((std::string(name) + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--ratio") {
      ratio = to_double(value("--ratio"), "--ratio");
      have_budget = false;
    } else if (a == "--budget") {
      budget = to_size(value("--budget"), "--budget");
      have_budget = true;
    } else if (a == "--tokens") {
      tokens = to_size(value("--tokens"), "--tokens");
    } else if (a == "--lengths") {
      std::stringstream ss(value("--lengths"));
      std::string item;
      lengths.clear();
      while (std::getline(ss, item, ',')) lengths.push_back(to_size(item, "--lengths"));
    } else if (a == "--min") {
      minimum = to_size(value("--min"), "--min");
    } else if (a == "--beta") {
      params.pyramid_beta = to_double(value("--beta"), "--beta");
    } else if (a == "--exponent") {
      params.proportional.exponent = to_double(value("--exponent"), "--exponent");
    } else if (a == "--sweep") {
      sweep = true;
    } else if (a == "-h" || a == "--help") {
      usage("help requested");
    } else if (!a.empty() && a[0] == '-') {
      usage(("unknown option " + a).c_str());
    } else if (path.empty()) {
      path = a;
    } else {
      usage("more than one profile given");
    }
  }
  if (path.empty()) usage("no profile given");

  try {
    const sensitivity_profile prof = load_profile(path);
    const std::size_t L = prof.n_layers();
    if (lengths.empty()) lengths.assign(L, tokens);
    if (lengths.size() != L)
      usage(("--lengths has " + std::to_string(lengths.size()) + " entries, the profile has " + std::to_string(L) +
             " layers")
                .c_str());
    allocation_request req;
    req.lengths = lengths;
    req.minimums = {minimum};
    req.budget = have_budget ? global_budget::tokens(budget) : global_budget::ratio(ratio);
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

    if (sweep) {
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
