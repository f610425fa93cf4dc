#!/usr/bin/env python3
"""Plots of the evaluation harness's output (examples/eval.cpp), drawn with matplotlib.

    python3 tools/plot_eval.py out/eval            # reads results.csv + allocations.csv there
    python3 tools/plot_eval.py out/eval --at 0.2   # budget of the per-layer bar chart
    python3 tools/plot_eval.py out/longgen         # eval --generate: long_kl_by_position.csv

Writes into the same directory:
  quality.png      KL to the full cache (log scale) and retrieval accuracy against the global
                   keep ratio: one line per allocator, one column of panels per policy, with the
                   95% confidence intervals as bands and the full-cache accuracy as a dashed line;
  allocations.png  per-layer keep counts of each allocator at one budget (first policy);
  long_kl.png      (eval --generate output) mean KL to the full cache per block of generated
                   positions against the position: one line per allocator, one panel per policy
                   (columns) and keep ratio (rows), 95% confidence bands.
Exits with status 3 and a note (no traceback) when matplotlib is not installed, so callers can
treat plotting as optional.
"""
import argparse
import csv
import math
import os
import sys


def read_csv(path):
    with open(path, newline="") as f:
        rows = [line for line in f if not line.startswith("#")]
    return list(csv.DictReader(rows))


def num(s):
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def plot_long(plt, out_dir):
    """long_kl.png from eval --generate's long_kl_by_position.csv."""
    rows = [r for r in read_csv(os.path.join(out_dir, "long_kl_by_position.csv")) if not math.isnan(num(r["kl"]))]
    if not rows:
        print("plot_eval: no evaluated cells in long_kl_by_position.csv", file=sys.stderr)
        return 1
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    allocators = list(dict.fromkeys(r["allocator"] for r in rows))
    # Keep ratios whose every KL is 0 (keep 1: the full cache) have nothing to draw on a log scale.
    budgets = sorted({num(r["keep_ratio"]) for r in rows if num(r["kl"]) > 0})
    if not budgets:
        print("plot_eval: every KL in long_kl_by_position.csv is 0 (nothing pruned)", file=sys.stderr)
        return 1
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(budgets), len(policies), figsize=(max(5.5, 3.4 * len(policies) + 1),
                             2.6 * len(budgets) + 0.6), squeeze=False, sharex=True)
    for i, b in enumerate(budgets):
        for j, pol in enumerate(policies):
            ax = axes[i][j]
            for k, alloc in enumerate(allocators):
                pts = sorted(((num(r["first_position"]) + num(r["last_position"])) / 2, num(r["kl"]), num(r["kl_lo"]),
                              num(r["kl_hi"])) for r in rows
                             if r["policy"] == pol and r["allocator"] == alloc and num(r["keep_ratio"]) == b)
                if not pts:
                    continue
                c = colors[k % len(colors)]
                x = [p[0] for p in pts]
                ax.plot(x, [p[1] for p in pts], marker="o", ms=2.5, color=c, label=alloc)
                ax.fill_between(x, [max(p[2], p[1] / 20) for p in pts], [p[3] for p in pts], color=c, alpha=0.15, lw=0)
            ax.set_yscale("log")
            ax.set_title(f"{pol}, {b:g} kept", fontsize=9)
            if j == 0:
                ax.set_ylabel("KL to full cache")
            if i == len(budgets) - 1:
                ax.set_xlabel("generated position")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("decode-time budgets over a long generation: KL per block of generated positions (95% CI bands)",
                 fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir, "long_kl.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot_eval: {path}", file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="output directory of eval (results.csv, allocations.csv)")
    ap.add_argument("--at", type=float, default=0.2, help="keep ratio of the allocation bar chart")
    ap.add_argument("--policy", default=None, help="policy of the allocation bar chart (default: first)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_eval: matplotlib is not installed (Debian: apt-get install python3-matplotlib); "
              "skipping the plots", file=sys.stderr)
        return 3

    if not os.path.exists(os.path.join(args.dir, "results.csv")) and \
            os.path.exists(os.path.join(args.dir, "long_kl_by_position.csv")):
        return plot_long(plt, args.dir)
    res = read_csv(os.path.join(args.dir, "results.csv"))
    full = [r for r in res if r["allocator"] == "full"]
    cells = [r for r in res if r["allocator"] != "full" and r["n_seqs"] not in ("", "0")]
    if not cells:
        print("plot_eval: no evaluated cells in results.csv", file=sys.stderr)
        return 1
    policies = list(dict.fromkeys(r["policy"] for r in cells))
    allocators = list(dict.fromkeys(r["allocator"] for r in cells))
    full_acc = num(full[0]["acc"]) if full else math.nan
    has_acc = any(not math.isnan(num(r["acc"])) for r in cells)

    rows = 2 if has_acc else 1
    fig, axes = plt.subplots(rows, len(policies), figsize=(max(5.5, 3.6 * len(policies) + 1), 3.2 * rows),
                             squeeze=False, sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    metrics = [("kl", "KL to full cache (nats/token)")] + ([("acc", "retrieval accuracy")] if has_acc else [])
    for j, pol in enumerate(policies):
        for i, (m, label) in enumerate(metrics):
            ax = axes[i][j]
            for k, alloc in enumerate(allocators):
                pts = sorted((num(r["keep_ratio"]), num(r[m]), num(r[m + "_lo"]), num(r[m + "_hi"]))
                             for r in cells if r["policy"] == pol and r["allocator"] == alloc)
                pts = [p for p in pts if not math.isnan(p[1])]
                if not pts:
                    continue
                x = [p[0] for p in pts]
                c = colors[k % len(colors)]
                ax.plot(x, [p[1] for p in pts], marker="o", ms=3, color=c, label=alloc)
                ax.fill_between(x, [p[2] for p in pts], [p[3] for p in pts], color=c, alpha=0.15, lw=0)
            if m == "kl":
                ax.set_yscale("log")
                ax.set_title(pol)
            elif not math.isnan(full_acc):
                ax.axhline(full_acc, color="k", ls="--", lw=1, label="full cache")
                ax.set_ylim(-0.02, 1.02)
            if j == 0:
                ax.set_ylabel(label)
            if i == rows - 1:
                ax.set_xlabel("global keep ratio")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    if has_acc and not math.isnan(full_acc):
        axes[1][-1].legend(fontsize=8)
    fig.suptitle("prune at end of prefill: quality vs KV budget (95% CI bands)", fontsize=10)
    fig.tight_layout()
    q = os.path.join(args.dir, "quality.png")
    fig.savefig(q, dpi=110)
    plt.close(fig)

    al = read_csv(os.path.join(args.dir, "allocations.csv"))
    pol = args.policy or policies[0]
    ratios = sorted({num(r["keep_ratio"]) for r in al if r["policy"] == pol})
    if not ratios:
        print(f"plot_eval: {q}", file=sys.stderr)
        return 0
    at = min(ratios, key=lambda v: abs(v - args.at))
    sel = [r for r in al if r["policy"] == pol and abs(num(r["keep_ratio"]) - at) < 1e-12]
    allocs = list(dict.fromkeys(r["allocator"] for r in sel))
    layers = sorted({int(r["layer"]) for r in sel})
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(layers) * max(1, len(allocs)) / 3, 3.4))
    w = 0.8 / max(1, len(allocs))
    for k, alloc in enumerate(allocs):
        keep = {int(r["layer"]): int(r["keep"]) for r in sel if r["allocator"] == alloc}
        ax.bar([l + (k - (len(allocs) - 1) / 2) * w for l in layers], [keep.get(l, 0) for l in layers], w,
               label=alloc, color=colors[k % len(colors)])
    length = max(int(r["length"]) for r in sel)
    ax.axhline(at * length, color="k", ls=":", lw=1, label=f"uniform share ({at:g} x {length})")
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("tokens kept per kv head")
    ax.set_title(f"per-layer keep counts at {at:g} kept ({pol})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    a = os.path.join(args.dir, "allocations.png")
    fig.savefig(a, dpi=110)
    plt.close(fig)
    print(f"plot_eval: {q}, {a}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
