#!/usr/bin/env bash
# The main job: install the dependencies, build, and generate from the default model, the demo
# MoE trained here on public-domain and freely licensed text (models/demo/tandem-demo-moe:
# Qwen3-MoE, 22.6M parameters, 8 layers of 32 experts top-4, bf16; its README says how it was
# made): a text continuation and a chat answer, each with the prefill/decode tokens/s.
# Extra arguments go to both tandem-run calls (e.g. --threads 1, --temperature 0).
# The synthetic ~214M-parameter throughput model of bench/default_model.sh is made there, by
# tandem-synth, which is built here too.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target tandem-run tandem-synth

model=models/demo/tandem-demo-moe
sampling=(--max-tokens 64 --temperature 0.7 --top-p 0.9 --seed 1)
echo "== text prompt"
build/tools/tandem-run --model "$model" --prompt "And God said unto Noah," "${sampling[@]}" "$@"
echo "== chat: $(cat models/demo/chat_example.json)"
build/tools/tandem-run --model "$model" --chat models/demo/chat_example.json "${sampling[@]}" "$@"
