#!/usr/bin/env bash
# The main job: install the dependencies, build, create the default model once (a synthetic
# Qwen3-MoE-shaped checkpoint, ~214M parameters, random weights, seeded) and generate from it,
# printing the tokens and the prefill/decode tokens/s. Extra arguments go to tandem-run.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$(nproc)" --target tandem-run tandem-synth

model=build/default-model
if [ ! -f "$model/model.safetensors" ]; then
    build/tools/tandem-synth --out "$model"
fi
build/tools/tandem-run --model "$model" --random-prompt 64 --max-tokens 64 --ignore-eos \
    --temperature 0.8 --seed 1 "$@"
