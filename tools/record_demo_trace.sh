#!/usr/bin/env bash
# Records the demo model's routing trace committed as models/demo/routing-trace.jsonl.gz: 300
# held-out documents of the demo corpus (tools/make_demo_corpus.sh writes it), the first 200
# characters of each as the prompt, 48 tokens generated at temperature 0.7 (seed 1), with the
# gate lookahead of layers L+1..L+3 and the router's full distribution over the experts
# ("probs", which MRS's top-p scoring reads). Then prints the prediction accuracies from the trace.
#
#   tools/record_demo_trace.sh [CORPUS_DIR] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${1:-build/demo-corpus}
out=${2:-models/demo/routing-trace.jsonl.gz}
[ -f "$corpus/valid.jsonl" ] || { echo "no $corpus/valid.jsonl: run tools/make_demo_corpus.sh" >&2; exit 1; }
prompts=build/demo-trace-prompts.jsonl
python3 - "$corpus/valid.jsonl" "$prompts" <<'PY'
import json, sys
docs = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8")]
with open(sys.argv[2], "w", encoding="utf-8") as out:
    n = 0
    for i, d in enumerate(docs):
        text = d["text"].strip()
        if len(text) < 200:
            continue
        source = d.get("source", "doc")
        out.write(json.dumps({"id": f"{source}/{i}", "domain": source, "prompt": text[:200]}) + "\n")
        n += 1
        if n == 300:
            break
PY
build/tools/tandem-run --model models/demo/tandem-demo-moe --prompts-file "$prompts" \
    --max-tokens 48 --temperature 0.7 --seed 1 --ignore-eos \
    --record-routing "$out" --record-lookahead 3 --record-probabilities
# The full distribution makes the file ~4x larger; the recorder's streaming gzip (level 6) is
# recompressed at level 9, without a name or time stamp, which keeps the output reproducible.
if [[ $out == *.gz ]]; then
    gzip -dc "$out" | gzip -9n > "$out.tmp"
    mv "$out.tmp" "$out"
fi
python3 tools/trace_accuracy.py "$out"
