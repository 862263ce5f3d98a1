#!/usr/bin/env bash
# Decode and prefill tokens/s of the throughput model (build/default-model: tandem-synth's
# synthetic ~214M-parameter Qwen3-MoE shape, random weights, made here on first use) over several
# runs, next to the machine's memory bandwidth measured in the same invocation (read-only
# stream, from tandem-kernel-bench), and the fraction of the bandwidth bound reached. It was
# the main job's default model before the trained demo model (models/demo/tandem-demo-moe),
# which at 45 MB sits largely in cache and so cannot show the memory-bandwidth bound.
#   bench/default_model.sh [runs=5] [threads=0]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
threads=${2:-0}
model=build/default-model
[ -f "$model/model.safetensors" ] || build/tools/tandem-synth --out "$model"

# The machine line of tandem-kernel-bench (no kernel cases): read-only stream bandwidth.
bandwidth=$(build/bench/tandem-kernel-bench --json --benchmark_filter='^$' 2>/dev/null |
    python3 -c 'import json,sys; print([json.loads(l) for l in sys.stdin if "machine" in l][0]["machine"]["bandwidth_gbps"])')

for i in $(seq "$runs"); do
    build/tools/tandem-run --model "$model" --random-prompt 64 --max-tokens 64 --ignore-eos \
        --temperature 0.8 --seed "$i" --threads "$threads"
done | python3 -c '
import re, statistics, sys, json
text = sys.stdin.read()
prefill = [float(x) for x in re.findall(r"prefill: .*= ([0-9.]+) tokens/s", text)]
decode = [float(x) for x in re.findall(r"decode: .*= ([0-9.]+) tokens/s", text)]
threads = re.findall(r"threads: (\d+)", text)[0]
config = json.load(open("build/default-model/config.json"))
h, L, e = config["hidden_size"], config["num_hidden_layers"], config["moe_intermediate_size"]
q = config["num_attention_heads"] * config["head_dim"]; kv = config["num_key_value_heads"] * config["head_dim"]
per_layer = 2 * h * q + 2 * h * kv + config["num_experts"] * h + config["num_experts_per_tok"] * 3 * h * e
bytes_per_token = 2 * (L * per_layer + config["vocab_size"] * h)  # bf16 weights read per decoded token
bw = float(sys.argv[1])
bound = bw * 1e9 / bytes_per_token
print(f"threads {threads}, {len(decode)} runs, 64-token prompt, 64 generated")
print(f"prefill tokens/s median {statistics.median(prefill):.1f} (min {min(prefill):.1f}, max {max(prefill):.1f})")
print(f"decode  tokens/s median {statistics.median(decode):.1f} (min {min(decode):.1f}, max {max(decode):.1f})")
print(f"weights read per decoded token {bytes_per_token/1e6:.1f} MB; measured read bandwidth {bw:.1f} GB/s")
print(f"bandwidth bound {bound:.0f} tokens/s; decode reaches {statistics.median(decode)/bound*100:.0f}% of it")
' "$bandwidth"
