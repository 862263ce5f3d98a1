#!/usr/bin/env bash
# Fuzzes the parsers of untrusted files with libFuzzer (clang, ASan+UBSan) for a while:
# the safetensors header parser, tokenizer.json loading and chat templates, then the GGUF reader.
#   tools/fuzz.sh [seconds per target=120]
# Corpora grow in build-fuzz/corpus* (not committed); a crash leaves crash-* files there.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-120}

tools/install-deps.sh
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
    -DCMAKE_CXX_COMPILER=clang++ -DTANDEM_FUZZ=ON -DTANDEM_CUDA=OFF -DTANDEM_BUILD_TESTS=OFF \
    -DTANDEM_BUILD_BENCH=OFF
cmake --build build-fuzz --target fuzz_safetensors fuzz_tokenizer fuzz_gguf

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
# Tokenizer seeds: byte 0 selects the harness (even: tokenizer.json, odd: chat template).
mkdir -p build-fuzz/corpus-tokenizer
python3 - build-fuzz/corpus-tokenizer <<'PY'
import sys, os, json
tok = {"version": "1.0", "added_tokens": [], "normalizer": {"type": "NFC"},
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
       "post_processor": None, "decoder": {"type": "ByteLevel"},
       "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
open(os.path.join(sys.argv[1], "seed-tokenizer"), "wb").write(b"\x00" + json.dumps(tok).encode())
tmpl = "{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
open(os.path.join(sys.argv[1], "seed-template"), "wb").write(b"\x01" + tmpl.encode())
PY
# GGUF seeds: a version-3 file with every metadata type and two tensors, and a version-2 one.
mkdir -p build-fuzz/corpus-gguf
python3 - build-fuzz/corpus-gguf <<'PY'
import os, struct, sys
def s(x): return struct.pack("<Q", len(x)) + x.encode()
def kv(key, t, v): return s(key) + struct.pack("<I", t) + v
def gguf(version, kvs, tensors, align=32):
    out = struct.pack("<IIQQ", 0x46554747, version, len(tensors), len(kvs)) + b"".join(kvs)
    data, off = b"", 0
    for name, ne, t, payload in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
        out += struct.pack("<IQ", t, off)
        data += payload + bytes(-len(payload) % align)
        off = len(data)
    return out + bytes(-len(out) % align) + data
kvs = [kv("general.architecture", 8, s("llama")), kv("u8", 0, b"\x07"), kv("i16", 3, b"\xff\xff"),
       kv("f32", 6, struct.pack("<f", 1e-5)), kv("b", 7, b"\x01"), kv("u64", 10, struct.pack("<Q", 9)),
       kv("f64", 12, struct.pack("<d", 0.5)), kv("general.alignment", 4, struct.pack("<I", 32)),
       kv("tokens", 9, struct.pack("<IQ", 8, 2) + s("a") + s("bc")),
       kv("nested", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 5, 2) + struct.pack("<ii", 1, 2))]
tensors = [("token_embd.weight", [4, 2], 0, struct.pack("<8f", *range(8))),
           ("blk.0.ffn_gate_exps.weight", [32, 1, 2], 8, bytes(68))]
open(os.path.join(sys.argv[1], "seed-v3"), "wb").write(gguf(3, kvs, tensors))
open(os.path.join(sys.argv[1], "seed-v2"), "wb").write(gguf(2, kvs[:3], tensors[:1]))
PY
cd build-fuzz
./tests/fuzz/fuzz_safetensors -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 corpus
./tests/fuzz/fuzz_tokenizer -max_total_time="$seconds" -max_len=4096 -timeout=10 -print_final_stats=1 corpus-tokenizer
./tests/fuzz/fuzz_gguf -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 corpus-gguf
