#!/usr/bin/env bash
# Fuzzes the safetensors header parser with libFuzzer (clang, ASan+UBSan) for a while.
#   tools/fuzz.sh [seconds=120]
# The corpus grows in build-fuzz/corpus (not committed); a crash leaves crash-* files there.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}

tools/install-deps.sh
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF -DTANDEM_BUILD_TESTS=OFF \
    -DTANDEM_BUILD_BENCH=OFF
cmake --build build-fuzz --target fuzz_safetensors

corpus=build-fuzz/corpus
mkdir -p "$corpus"
# Seeds: small valid files, so mutations start from the format rather than from noise.
python3 - "$corpus" <<'PY'
import json, struct, sys, os
def write(name, header, data):
    text = json.dumps(header).encode()
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)
write("seed-two", {"__metadata__": {"format": "pt"},
                   "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                   "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}, bytes(22))
write("seed-empty", {}, b"")
write("seed-scalar", {"s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}, bytes(8))
PY
cd build-fuzz
./tests/fuzz/fuzz_safetensors -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 corpus
