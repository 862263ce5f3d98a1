#!/usr/bin/env python3
"""Decode tokens/s with and without a JSON schema: the cost of structured output per token.

Runs tandem-run on the demo model in alternating pairs (plain, then under the schema, so that
drift in the machine's load hits both alike), each decoding --max-tokens tokens at
temperature 0.8 from the same chat prompt (EOS ignored; under the schema the grammar still ends
a completed object), and prints the decode rate of each run, the median of
the per-pair ratios (schema / plain) and the load average before and after. The schema holds one
free-text string, so that the model writes as many tokens under it as without it; the grammar's
work per token (the mask computed on the GrammarWorker while the model runs, applied when
sampling) is what the ratio shows.

    bench/grammar_overhead.py [--pairs 7] [--max-tokens 256] [--threads 2] [--build build]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"type": "object",
          "properties": {"title": {"type": "string", "maxLength": 40},
                         "year": {"type": "integer"},
                         "story": {"type": "string"}},
          "required": ["title", "year", "story"], "additionalProperties": False}


def decode_rate(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"decode:\s+(\d+) tokens in ([\d.]+) s = ([\d.]+) tokens/s", out)
    return int(m.group(1)), float(m.group(3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build", default=str(ROOT / "build"))
    ap.add_argument("--cpu-isa", default="")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(SCHEMA, f)
        schema_file = f.name
    base = [f"{args.build}/tools/tandem-run", "--model", str(ROOT / "models/demo/tandem-demo-moe"),
            "--chat", str(ROOT / "models/demo/chat_example.json"), "--max-tokens",
            str(args.max_tokens), "--temperature", "0.8", "--ignore-eos", "--threads",
            str(args.threads)]
    if args.cpu_isa:
        base += ["--cpu-isa", args.cpu_isa]
    load_before = os.getloadavg()[0]
    ratios = []
    for pair in range(args.pairs):
        seed = ["--seed", str(1000 + pair)]
        n_plain, plain = decode_rate(base + seed)
        n_schema, schema = decode_rate(base + seed + ["--json-schema", schema_file])
        ratios.append(schema / plain)
        print(f"pair {pair}: plain {plain:8.1f} tok/s ({n_plain} tokens)   "
              f"schema {schema:8.1f} tok/s ({n_schema} tokens)   ratio {ratios[-1]:.3f}")
    os.unlink(schema_file)
    median = statistics.median(ratios)
    print(f"median ratio schema/plain: {median:.3f} (overhead {100 * (1 - median):.1f} %), "
          f"{args.pairs} pairs; load {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
