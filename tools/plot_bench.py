#!/usr/bin/env python3
"""Charts from tandem-bench --json files (PNG, matplotlib from PyPI: pip install matplotlib).

    build/bench/tandem-bench --model synthetic:olmoe-1b-7b --layers 4 -b 1,4 --json run.json
    python3 tools/plot_bench.py run.json [more.json ...] --out-dir plots/

writes
  tokens_vs_gpu_ratio.png  decode and prefill tokens/s against the GPU expert ratio, one line per
                           planner and model. Rows at ratio 0 run every expert on the CPU whatever
                           the planner, so that point starts every planner's line.
  achieved_vs_bound.png    decode tokens/s of each row next to its bandwidth bound (bandwidth
                           measured in the same run / weights read per step), with the fraction.
"""

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def load_rows(paths):
    rows = []
    for path in paths:
        doc = json.loads(Path(path).read_text())
        if "rows" not in doc:
            sys.exit(f"{path}: not a tandem-bench --json file (no 'rows')")
        rows.extend(doc["rows"])
    if not rows:
        sys.exit("no rows in the given files")
    return rows


def median(stats):
    return stats["median"] if stats else None


def row_label(r):
    return (f"{r['model']} {r['layers']}L {r['weight_type']} t{r['threads']} b{r['batch']} "
            f"p{r['prompt_tokens']} n{r['gen_tokens']}")


def plot_ratio(rows, out, plt):
    # One series per configuration and planner; ratio-0 rows join every planner's series.
    series = defaultdict(dict)
    planners = sorted({r["planner"] for r in rows if r["gpu_expert_ratio"] > 0}) or ["cpu-only"]
    for r in rows:
        key = (row_label(r),)
        for planner in planners if r["gpu_expert_ratio"] == 0 else [r["planner"]]:
            series[key + (planner,)][r["gpu_expert_ratio"]] = r
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for (config, planner), points in sorted(series.items()):
        ratios = sorted(points)
        label = f"{config} {planner}"
        for ax, field in zip(axes, ("decode_tps", "prefill_tps")):
            ys = [median(points[x][field]) for x in ratios]
            if all(y is None for y in ys):
                continue
            ax.plot([100 * x for x in ratios], ys, marker="o", label=label)
    for ax, title in zip(axes, ("decode", "prefill")):
        ax.set_xlabel("GPU expert ratio (%)")
        ax.set_ylabel("tokens/s (median)")
        ax.set_title(f"{title} tokens/s vs GPU expert ratio")
        ax.set_xlim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_bound(rows, out, plt):
    decoded = [r for r in rows if r.get("decode_tps")]
    if not decoded:
        print("no decode rows: achieved_vs_bound.png not written", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(decoded) + 2), 4.8))
    xs = range(len(decoded))
    achieved = [median(r["decode_tps"]) for r in decoded]
    bound = [r["bound_tps"] for r in decoded]
    ax.bar([x - 0.2 for x in xs], bound, width=0.4, label="bandwidth bound", color="#bbbbbb")
    ax.bar([x + 0.2 for x in xs], achieved, width=0.4, label="achieved (median)",
           color="#3a7dc9")
    for x, a, b in zip(xs, achieved, bound):
        ax.annotate(f"{100 * a / b:.0f} %", (x + 0.2, a), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([row_label(r) for r in decoded], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("decode tokens/s")
    low = min(r["bandwidth_gbps"] for r in decoded)
    high = max(r["bandwidth_gbps"] for r in decoded)
    bw = f"{low:.1f} GB/s" if high - low < 0.05 else f"{low:.1f}-{high:.1f} GB/s"
    ax.set_title(f"decode: achieved vs bound (measured read bandwidth {bw})")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+", help="tandem-bench --json output files")
    parser.add_argument("--out-dir", default=".", help="where the PNG files go")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("matplotlib is missing: pip install matplotlib")
    rows = load_rows(args.json)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_ratio(rows, out_dir / "tokens_vs_gpu_ratio.png", plt)
    plot_bound(rows, out_dir / "achieved_vs_bound.png", plt)
    print(f"wrote {out_dir / 'tokens_vs_gpu_ratio.png'} and {out_dir / 'achieved_vs_bound.png'}")


if __name__ == "__main__":
    main()
