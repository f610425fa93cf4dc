#include "report.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "common.hpp"
#include "stats.hpp"

namespace eval {
namespace {

// Paired over the same sequences: KL of cell x minus KL of uniform (same policy and budget); its
// interval is much tighter than comparing the two unpaired intervals.
interval kl_minus_uniform(const cell& x, const std::vector<cell>& cells) {
  interval d;
  for (const cell& u : cells)
    if (u.policy == x.policy && u.allocator == "uniform" && u.budget == x.budget && u.kl.size() == x.kl.size() &&
        !x.kl.empty()) {
      std::vector<double> diff(x.kl.size());
      for (std::size_t i = 0; i < diff.size(); ++i) diff[i] = x.kl[i] - u.kl[i];
      d = ci95(diff);
    }
  return d;
}

std::string csv_safe(std::string s) {
  for (char& ch : s)
    if (ch == ',' || ch == '\n' || ch == '"') ch = ';';
  return s;
}

void write_result_row(std::ofstream& f, const cell& x, const std::vector<cell>& cells) {
  const interval kl = clamp_to(ci95(x.kl), 0, INFINITY), nll = ci95(x.nll), acc = clamp_to(ci95(x.acc), 0, 1);
  const double n = static_cast<double>(std::max<std::size_t>(x.kl.size(), 1));
  f << x.policy << ',' << x.allocator << ',' << fmt(x.budget) << ',' << x.kept << ',' << x.total << ','
    << fmt(x.kv_bytes / n, "%.0f") << ',' << fmt(x.kv_bytes_full / n, "%.0f") << ','
    << fmt(x.kv_bytes_full > 0 ? x.kv_bytes / x.kv_bytes_full : NAN) << ',' << kl.n << ',' << fmt(kl.mean) << ','
    << fmt(kl.lo) << ',' << fmt(kl.hi) << ',' << fmt(nll.mean) << ',' << fmt(nll.lo) << ',' << fmt(nll.hi) << ','
    << fmt(std::exp(nll.mean)) << ',' << fmt(std::exp(nll.lo)) << ',' << fmt(std::exp(nll.hi)) << ','
    << fmt(acc.mean) << ',' << fmt(acc.lo) << ',' << fmt(acc.hi) << ',' << x.correct << ',' << x.queries << ','
    << fmt(x.predicted) << ',';
  const interval d = kl_minus_uniform(x, cells);
  f << fmt(d.mean) << ',' << fmt(d.lo) << ',' << fmt(d.hi) << ',' << fmt(x.kv_bytes_local / n, "%.0f") << ','
    << fmt((x.kv_bytes - x.kv_bytes_local) / n, "%.0f") << ',' << csv_safe(x.note) << '\n';
}

void write_results(const std::string& path, const run_context& c, const std::vector<sample>& test,
                   const grid_result& g) {
  const dcli::eval_options& o = c.o;
  std::ofstream f(path);
  if (!f) die("cannot write '" + path + "'");
  f << "# eval: model " << c.model_name << ", test " << o.test << " (" << test.size() << " sequences, context "
    << test[0].prefix << "), sink " << o.sink << ", recent " << o.recent << ", window " << o.window << ", seed "
    << o.seed << "; CIs: mean +- 1.96 sd/sqrt(n) over sequences (clamped to KL >= 0 and accuracy in [0,1])\n";
  f << "policy,allocator,keep_ratio,kept_tokens,total_tokens,kv_bytes,kv_bytes_full,kv_fraction,n_seqs,"
       "kl,kl_lo,kl_hi,nll,nll_lo,nll_hi,ppl,ppl_lo,ppl_hi,acc,acc_lo,acc_hi,correct,queries,predicted_kl,"
       "kl_minus_uniform,kl_minus_uniform_lo,kl_minus_uniform_hi,kv_bytes_local,kv_bytes_global,note\n";
  write_result_row(f, g.full, g.cells);
  for (const cell& x : g.cells) write_result_row(f, x, g.cells);
  if (!f) die("write to '" + path + "' failed");
}

// Allocations at the first sequence's context length in every layer.
void write_allocations(const std::string& path, const run_context& c, const std::vector<sample>& test,
                       const grid_result& g, allocation_cache& alloc) {
  std::ofstream f(path);
  if (!f) die("cannot write '" + path + "'");
  f << "policy,allocator,keep_ratio,layer,length,keep\n";
  std::vector<std::size_t> lengths(c.n_layers);
  for (std::size_t l = 0; l < c.n_layers; ++l) lengths[l] = c.length_after(l, test[0].prefix);
  for (const cell& x : g.cells) {
    if (!x.note.empty()) continue;
    const auto& keep = alloc.get(x, lengths);
    for (std::size_t l = 0; l < c.n_layers; ++l)
      f << x.policy << ',' << x.allocator << ',' << fmt(x.budget) << ',' << l << ',' << lengths[l] << ',' << keep[l]
        << '\n';
  }
}

const cell* find_cell(const std::vector<cell>& cells, const std::string& p, const std::string& a, double b) {
  const cell* c = nullptr;
  for (const cell& x : cells)
    if (x.policy == p && x.allocator == a && x.budget == b) c = &x;
  return c;
}

// "KL [lo,hi] / accuracy" of a cell, or "skipped".
std::string table_entry(const cell* c) {
  if (!c || !c->note.empty()) return "skipped";
  const interval kl = clamp_to(ci95(c->kl), 0, INFINITY), acc = ci95(c->acc);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g [%.2g,%.2g] / %s", kl.mean, kl.lo, kl.hi,
                c->queries ? fmt(100 * acc.mean, "%.0f%%").c_str() : "n/a");
  return buf;
}

void print_policy_table(const dcli::eval_options& o, const std::vector<cell>& cells, const std::string& p) {
  std::printf("\npolicy %s: mean KL to the full cache [95%% CI] / retrieval accuracy, by global keep ratio\n",
              p.c_str());
  std::printf("%-13s", "allocator");
  for (double b : o.budgets) std::printf(" | %-32s", (fmt(100 * b, "%.0f") + "% kept").c_str());
  std::printf("\n");
  for (const auto& a : o.allocators) {
    std::printf("%-13s", a.c_str());
    for (double b : o.budgets) std::printf(" | %-32s", table_entry(find_cell(cells, p, a, b)).c_str());
    std::printf("\n");
  }
}

// Hybrid models: per allocator and budget, the KV bytes kept by the sliding-window (local) and
// the global layers, mean per sequence.
void print_bytes_table(const dcli::eval_options& o, const std::vector<cell>& cells, const std::string& p) {
  std::printf("\npolicy %s: KV KiB kept per sequence, sliding-window layers + global layers\n", p.c_str());
  std::printf("%-13s", "allocator");
  for (double b : o.budgets) std::printf(" | %-17s", (fmt(100 * b, "%.0f") + "% kept").c_str());
  std::printf("\n");
  for (const auto& a : o.allocators) {
    std::printf("%-13s", a.c_str());
    for (double b : o.budgets) {
      const cell* x = find_cell(cells, p, a, b);
      const double n = x ? static_cast<double>(std::max<std::size_t>(x->kl.size(), 1)) : 1.0;
      std::string e = "skipped";
      if (x && x->note.empty())
        e = fmt(x->kv_bytes_local / n / 1024, "%.1f") + " + " + fmt((x->kv_bytes - x->kv_bytes_local) / n / 1024, "%.1f");
      std::printf(" | %-17s", e.c_str());
    }
    std::printf("\n");
  }
}

}  // namespace

output_files write_outputs(const run_context& c, const std::vector<sample>& test, const grid_result& g,
                           allocation_cache& alloc) {
  const output_files files{c.o.out + "/results.csv", c.o.out + "/allocations.csv"};
  write_results(files.results, c, test, g);
  write_allocations(files.allocations, c, test, g, alloc);
  return files;
}

void print_summary(const dcli::eval_options& o, const grid_result& g, std::size_t n_test, const output_files& files,
                   const profile_set& profiles) {
  const interval facc = ci95(g.full.acc), fnll = ci95(g.full.nll);
  std::printf("full cache: NLL %.4f (ppl %.3f), retrieval accuracy %s (%zu/%zu queries), %zu test sequences\n",
              fnll.mean, std::exp(fnll.mean), g.full.queries ? fmt(100 * facc.mean, "%.1f%%").c_str() : "n/a",
              g.full.correct, g.full.queries, n_test);
  for (const auto& p : o.policies) print_policy_table(o, g.cells, p);
  const bool hybrid = std::any_of(g.cells.begin(), g.cells.end(), [](const cell& x) { return x.kv_bytes_local > 0; });
  if (hybrid)
    for (const auto& p : o.policies) print_bytes_table(o, g.cells, p);
  std::string prof_list;
  for (const auto& u : profiles.files_used(o)) prof_list += (prof_list.empty() ? "" : ", ") + u;
  std::printf("\nresults: %s (every cell), allocations: %s%s%s\n", files.results.c_str(), files.allocations.c_str(),
              prof_list.empty() ? "" : ", profiles: ", prof_list.c_str());
}

}  // namespace eval
