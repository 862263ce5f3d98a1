#!/usr/bin/env python3
"""How well the gate lookahead recorded in a routing trace (tandem-run --record-lookahead)
predicts the experts: for j = 1..3, the recall of layer L+j's chosen top-k by layer L+j's router
applied to layer L's input; next to the recall of the "previous token, same layer" predictor.

    python3 tools/trace_accuracy.py models/demo/routing-trace.jsonl.gz
"""

import gzip
import json
import sys


def main(path):
    opener = gzip.open if path.endswith(".gz") else open
    hits = {}  # j -> [matched, total]
    prev_hits = [0, 0]
    last = {}  # seq -> experts of the previous token
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            if t.get("phase") == "prefill":
                continue
            experts = t["experts"]
            k = len(experts[0])
            for layer, ahead in enumerate(t.get("lookahead", [])):
                for j, predicted in enumerate(ahead, start=1):
                    if layer + j >= len(experts) or predicted[0] < 0:
                        continue
                    h = hits.setdefault(j, [0, 0])
                    h[0] += len(set(predicted) & set(experts[layer + j]))
                    h[1] += k
            previous = last.get(t["seq"])
            if previous is not None:
                for layer in range(len(experts)):
                    prev_hits[0] += len(set(previous[layer]) & set(experts[layer]))
                    prev_hits[1] += k
            last[t["seq"]] = experts
    print("| predictor | recall of the chosen top-k |")
    print("|---|---|")
    for j in sorted(hits):
        print(f"| layer L+{j}'s gate on layer L's input | {100 * hits[j][0] / hits[j][1]:.1f} % |")
    print(f"| previous token, same layer | {100 * prev_hits[0] / prev_hits[1]:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1])
