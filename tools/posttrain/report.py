"""The accuracy table (markdown) and curves (PNG) of `train.py --table --out runs.json`.

  python tools/posttrain/report.py runs.json bench/posttrain_accuracy.png
"""

import json
import sys
from collections import defaultdict

import numpy as np


def label(args):
    names = {"base": "base", "sft": "SFT", "grpo": "GRPO", "sft-grpo": "SFT->GRPO"}
    return names.get(args["method"], f"HPT (gamma {args['gamma']})")


def main(argv):
    runs = json.load(open(argv[0]))["runs"]
    curves = defaultdict(list)
    for r in runs:
        curves[label(r["args"])].append(r)
    print("| method | held-out accuracy (per seed) | mean | steps | weight sync, median |")
    print("|---|---|---|---|---|")
    for name, rs in curves.items():
        finals = [r["evals"][-1]["accuracy"] for r in rs]
        sync = [s["sync_s"] for r in rs for s in r["steps"]]
        sync_text = f"{np.median(sync) * 1e3:.0f} ms" if sync else "-"
        print(f"| {name} | {', '.join(f'{a:.3f}' for a in finals)} | {np.mean(finals):.3f} | "
              f"{rs[0]['evals'][-1]['step']} | {sync_text} |")
    if len(argv) > 1:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, rs in curves.items():
            color = None  # a method's seeds share its colour: the first solid, the others dashed
            for i, r in enumerate(rs):
                steps = [e["step"] for e in r["evals"]]
                acc = [e["accuracy"] for e in r["evals"]]
                (line,) = ax.plot(steps, acc, label=name if i == 0 else None, color=color,
                                  linestyle="-" if i == 0 else "--")
                color = line.get_color()
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("held-out accuracy (greedy, Tandem)")
        ax.set_title("Demo model, digit reversal: rollouts and evaluation by Tandem")
        ax.legend()
        fig.tight_layout()
        fig.savefig(argv[1], dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
